"""A published model's own answers on an evaluation set, as the champion rule judges them: the network's Gaussian,
or, for a model that carries a radio map, the mean and covariance of the hybrid posterior the service answers with
(heimdall.radiomap.hybrid; the network's answer where the map reads no receiver, as the service does) and whether
the truth lies in its 50 % and 95 % regions — the calibration a non-Gaussian answer is judged by.

The map costs a few ms per transmission, so a comparison that involves a map-carrying model is made on the first
MAP_EVALUATION_SAMPLES transmissions of the evaluation set (for both models).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.errors import ModelLoadError
from heimdall.evaluation.evaluate import onnx_predictions
from heimdall.evaluation.radio_map import measured
from heimdall.evaluation.test_set import Predict, TestSet
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.radiomap import io as map_io
from heimdall.radiomap.batch import Unanswered, in_threads
from heimdall.radiomap.hybrid import hybrid_posterior
from heimdall.radiomap.model import RadioMap
from heimdall.release.map_metadata import read_exponents

log = logging.getLogger(__name__)
MAP_EVALUATION_SAMPLES = 1_000  # transmissions a map-carrying model is judged on (tens of ms of map answers each)


def carries_map(onnx_bytes: bytes) -> bool:
    """Whether the model carries a radio map (its metadata has the map's entry; nothing is loaded)."""
    import onnx

    return map_io.has_map(onnx.load_from_string(onnx_bytes))


@dataclass
class Answers:
    """A model's answers on a test set: mean [n, 2] m, covariance [n, 2, 2] m²; for a map-carrying model also
    whether each truth lies in the answer's 50 % and 95 % regions, bool [n] each (None for a network model)."""

    mean_m: np.ndarray
    cov_m2: np.ndarray
    in_region50: np.ndarray | None = None
    in_region95: np.ndarray | None = None


def model_answers(onnx_bytes: bytes, test: TestSet, where: str, workers: int | None = None) -> Answers:
    """What the model answers the test set with; ModelLoadError naming `where` when its map cannot be read or has
    other receivers than the test set. The regions are the hybrid posterior's HPD regions where the map is used,
    else the network's Gaussian ellipses of the same probability. The map's posteriors in `workers` threads (None:
    every CPU)."""
    import onnx

    mean_m, cov_m2 = onnx_predictions(onnx_bytes, test)
    proto = onnx.load_from_string(onnx_bytes)
    if not map_io.has_map(proto):
        return Answers(mean_m, cov_m2)
    radio_map = read_map(proto, where)
    alpha, beta = read_exponents({p.key: p.value for p in proto.metadata_props}, where, ModelLoadError)
    ids = [r.id for r in test.scenario.receivers] if test.scenario is not None else None
    if ids != list(radio_map.receiver_ids):
        raise ModelLoadError(
            f"{where}: its radio map's receivers {list(radio_map.receiver_ids)} are not those of the evaluation set "
            f"{test.source} ({ids if ids is not None else 'no scenario_yaml attribute'})"
        )
    m = measured(test)
    usable = (m.present & np.isfinite(m.snr_db) & np.isfinite(m.noise_dbm)).any(axis=1)
    usable &= np.isfinite(mean_m).all(axis=1) & np.isfinite(cov_m2).all(axis=(1, 2))
    truth = test.target_m
    in50, in95 = (mahalanobis_sq(mean_m, cov_m2, truth) <= -2 * np.log(1 - q) for q in (0.5, 0.95))
    mean_m, cov_m2 = mean_m.copy(), cov_m2.copy()
    rows = np.flatnonzero(usable)

    def answer(k: int) -> None:
        i = rows[k]
        post = hybrid_posterior(radio_map, m.snr_db[i], m.noise_dbm[i], m.present[i], mean_m[i], cov_m2[i], alpha, beta)
        in50[i], in95[i] = post.in_hpd(truth[i][None], 0.5)[0], post.in_hpd(truth[i][None], 0.95)[0]
        mean_m[i], cov_m2[i] = post.mean_m, post.cov_m2

    for result in in_threads(answer, len(rows), workers):  # the network's answer stays where the map cannot read
        if isinstance(result, Unanswered):
            log.warning(
                "%s: transmission %d answered by the network alone: %s", where, rows[result.index], result.reason
            )
    return Answers(mean_m, cov_m2, in50, in95)


def read_map(proto: Any, where: str) -> RadioMap:  # noqa: ANN401  (onnx.ModelProto)
    """The radio map of a model that carries one, checked and its tables built (ModelLoadError naming the field)."""
    try:
        return map_io.from_onnx(proto)
    except map_io.RadioMapFormatError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None


def served_predictor(model_path: Path) -> Predict | None:
    """What an exported model that carries a radio map serves, as a predictor (its answers' mean [n, 2] m and
    covariance [n, 2, 2] m²), the file read once; None for a checkpoint or a network-only model."""
    if model_path.suffix != ".onnx" or not model_path.is_file():
        return None
    check_model_size(model_path.stat().st_size, str(model_path))
    data = model_path.read_bytes()
    proto = require_self_contained(data, str(model_path))
    if not map_io.has_map(proto):
        return None
    read_map(proto, str(model_path))  # refused now, at load, rather than after the evaluation's other work

    def predict(test: TestSet) -> tuple[np.ndarray, np.ndarray]:
        answers = model_answers(data, test, str(model_path))
        return answers.mean_m, answers.cov_m2

    return predict


def mahalanobis_sq(mean_m: np.ndarray, cov_m2: np.ndarray, truth_m: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance [n] of the truths [n, 2] from Gaussians (mean [n, 2] m, covariance [n, 2, 2] m²);
    NaN where an answer is not finite."""
    d = truth_m - mean_m
    with np.errstate(invalid="ignore"):
        return np.einsum("ni,nij,nj->n", d, np.linalg.pinv(np.nan_to_num(cov_m2)), d)
