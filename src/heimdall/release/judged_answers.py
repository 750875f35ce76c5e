"""A published model's own answers on an evaluation set, as the champion rule judges them: the network's Gaussian,
or, for a model that carries a radio map, the mean and covariance of the hybrid answer the service gives
(heimdall.radiomap.hybrid; the network's answer where the map reads no receiver, as the service does) and whether
the truth lies in its 50 % and 95 % regions — the calibration a non-Gaussian answer is judged by. The map is the
one the model carries (`carried_map`), never a refitted one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.budget import Progress
from heimdall.errors import ModelLoadError, RadioMapFormatError
from heimdall.evaluation.evaluate import onnx_predictions
from heimdall.evaluation.grid_estimators import PROGRESS_EVERY, CarriedMap, map_usable, measured
from heimdall.evaluation.test_set import TestSet
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.radiomap import io as map_io
from heimdall.radiomap.batch import Unanswered, in_threads
from heimdall.radiomap.hybrid import hybrid_answer
from heimdall.radiomap.model import RadioMap
from heimdall.radiomap.posterior import HPD_PROBABILITIES
from heimdall.release.map_metadata import FIT_KEY, read_weights

log = logging.getLogger(__name__)


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


def carried_map(onnx_bytes: bytes, where: str) -> CarriedMap | None:
    """The map the model carries, with its exponents and FIT_KEY entry; None for a network model; ModelLoadError
    naming `where` when the map or the entry cannot be read."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    if not map_io.has_map(proto):
        return None
    radio_map = read_map(proto, where)
    meta = {p.key: p.value for p in proto.metadata_props}
    return CarriedMap(radio_map, read_weights(meta, where, ModelLoadError), json.loads(meta[FIT_KEY]))


def model_answers(
    onnx_bytes: bytes, test: TestSet, where: str, on_progress: Progress | None = None, workers: int | None = None
) -> Answers:
    """What the model answers the test set with; ModelLoadError naming `where` when its map cannot be read or has
    other receivers than the test set. The regions are the hybrid posterior's HPD regions where the map is used,
    else the network's Gaussian ellipses of the same probability. The map's posteriors in `workers` threads (None:
    every CPU); on_progress("map answers", done, total)."""
    mean_m, cov_m2 = onnx_predictions(onnx_bytes, test)
    carried = carried_map(onnx_bytes, where)
    if carried is None:
        return Answers(mean_m, cov_m2)
    carried.check_receivers(test, where)
    radio_map, weights = carried.radio_map, carried.weights
    m = measured(test)
    usable = map_usable(m, mean_m, cov_m2)
    truth = test.target_m
    in50, in95 = (mahalanobis_sq(mean_m, cov_m2, truth) <= -2 * np.log(1 - q) for q in HPD_PROBABILITIES)
    mean_m, cov_m2 = mean_m.copy(), cov_m2.copy()
    rows = np.flatnonzero(usable)

    def answer(k: int) -> None:
        i = rows[k]
        post = hybrid_answer(
            radio_map, m.snr_db[i], m.noise_dbm[i], m.present[i], mean_m[i], cov_m2[i], weights, m.heard[i]
        )
        in50[i], in95[i] = (post.in_hpd(truth[i][None], q)[0] for q in HPD_PROBABILITIES)
        mean_m[i], cov_m2[i] = post.mean_m, post.cov_m2

    # the network's answer stays where the map cannot read
    for done, result in enumerate(in_threads(answer, len(rows), workers), 1):
        if isinstance(result, Unanswered):
            log.warning(
                "%s: transmission %d answered by the network alone: %s", where, rows[result.index], result.reason
            )
        if on_progress and (done % PROGRESS_EVERY == 0 or done == len(rows)):
            on_progress("map answers", done, len(rows))
    return Answers(mean_m, cov_m2, in50, in95)


def read_map(proto: Any, where: str) -> RadioMap:  # noqa: ANN401  (onnx.ModelProto)
    """The radio map of a model that carries one, checked and its tables built (ModelLoadError naming the field)."""
    try:
        return map_io.from_onnx(proto)
    except RadioMapFormatError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None


def carried_map_of_file(model_path: Path) -> CarriedMap | None:
    """The map an exported model file carries (carried_map), the file's size and self-containment checked first;
    None for a checkpoint or a network-only model."""
    if model_path.suffix != ".onnx" or not model_path.is_file():
        return None
    check_model_size(model_path.stat().st_size, str(model_path))
    data = model_path.read_bytes()
    require_self_contained(data, str(model_path))
    return carried_map(data, str(model_path))


def mahalanobis_sq(mean_m: np.ndarray, cov_m2: np.ndarray, truth_m: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance [n] of the truths [n, 2] from Gaussians (mean [n, 2] m, covariance [n, 2, 2] m²);
    NaN where an answer is not finite."""
    d = truth_m - mean_m
    with np.errstate(invalid="ignore"):
        return np.einsum("ni,nij,nj->n", d, np.linalg.pinv(np.nan_to_num(cov_m2)), d)
