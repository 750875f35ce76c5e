"""A published model's own answers on an evaluation set, as the champion rule judges them: the network's Gaussian,
or, for a model that carries a radio map, the mean and covariance of the hybrid posterior the service answers with
(heimdall.radiomap.hybrid; the network's answer where the map reads no receiver, as the service does).

The map costs tens of ms per transmission, so a comparison that involves a map-carrying model is made on the first
MAP_EVALUATION_SAMPLES transmissions of the evaluation set (for both models).
"""

from __future__ import annotations

import numpy as np

from heimdall.errors import ModelLoadError
from heimdall.evaluation.evaluate import onnx_predictions
from heimdall.evaluation.radio_map import measured
from heimdall.evaluation.test_set import TestSet
from heimdall.radiomap import io as map_io
from heimdall.radiomap.hybrid import hybrid_posterior
from heimdall.release.map_metadata import read_exponents

MAP_EVALUATION_SAMPLES = 2_000  # transmissions a map-carrying model is judged on (about 40 s of map answers)


def carries_map(onnx_bytes: bytes) -> bool:
    """Whether the model carries a radio map (its metadata has the map's entry; nothing is loaded)."""
    import onnx

    return map_io.has_map(onnx.load_from_string(onnx_bytes))


def model_answers(onnx_bytes: bytes, test: TestSet, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean [n, 2] m and covariance [n, 2, 2] m² the model answers the test set with; ModelLoadError naming
    `where` when its map cannot be read or has other receivers than the test set."""
    import onnx

    mean_m, cov_m2 = onnx_predictions(onnx_bytes, test)
    proto = onnx.load_from_string(onnx_bytes)
    if not map_io.has_map(proto):
        return mean_m, cov_m2
    try:
        radio_map = map_io.from_onnx(proto)
    except map_io.RadioMapFormatError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
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
    mean_m, cov_m2 = mean_m.copy(), cov_m2.copy()
    for i in np.flatnonzero(usable):
        post = hybrid_posterior(radio_map, m.snr_db[i], m.noise_dbm[i], m.present[i], mean_m[i], cov_m2[i], alpha, beta)
        mean_m[i], cov_m2[i] = post.mean_m, post.cov_m2
    return mean_m, cov_m2
