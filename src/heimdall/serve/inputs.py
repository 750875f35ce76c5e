"""Turning validated requests into model inputs, with errors that name the offending field."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np

from heimdall.datasets.conform import conform
from heimdall.datasets.receivers import ReceiverClaim, resolve_receivers
from heimdall.datasets.sigmf_files import decode_samples, sample_bytes
from heimdall.errors import ConformError, InputError, ReceiverError
from heimdall.features import extract_features, feature_matrix
from heimdall.serve.runtime import ServedModel
from heimdall.serve.schemas import IQRecording, LocalizeRequest, ReceiverRef

MAX_ABS_FEATURE_DB = 1000.0
# conform.py names SigMF fields; a request names its own
REQUEST_FIELD = {
    "captures[0].core:frequency": "center_frequency_hz",
    "global.core:sample_rate": "sample_rate_hz",
    "data": "samples_base64",
}


def decode_iq(b64: str, datatype: str, field: str, max_samples: int) -> np.ndarray:
    """base64 of `datatype` samples (heimdall.datasets.sigmf_files.DATATYPES) → complex64 [n], full-scale units."""
    width = sample_bytes(datatype)
    if len(b64) // 4 * 3 > (max_samples + 1) * width:  # refuse before decoding
        raise InputError(field, f"more than the limit of {max_samples} samples")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "not valid base64") from None
    if len(raw) // width > max_samples:
        raise InputError(field, f"{len(raw) // width} samples, more than the limit of {max_samples}")
    try:
        return decode_samples(raw, datatype)
    except ValueError as exc:
        raise InputError(field, str(exc)) from None


def receivers(
    items: Sequence[ReceiverRef], kind: str, model: ServedModel, tolerance_m: float
) -> tuple[np.ndarray, list[str]]:
    """Positions float32 [R', 2] m and labels of a request's receivers (heimdall.datasets.receivers).

    By id: the model's table position (a position given as well must lie within tolerance_m of it). By lat/lon:
    the table receiver within tolerance_m if there is one (labelled by its id), else ad hoc. The same receiver
    twice (same table receiver, or two ad-hoc positions within tolerance_m) is refused.
    """
    given = [i for i, item in enumerate(items) if item.lat is not None]
    lat, lon = (np.array([getattr(items[i], k) for i in given], float) for k in ("lat", "lon"))
    en = model.frame.to_local(lat, lon)  # [G, 2], one PROJ call
    position = dict(zip(given, en, strict=True))
    claims = [
        ReceiverClaim(
            field=f"{kind}[{i}]",
            name=f"{kind}[{i}]",
            id=item.id,
            position_m=position.get(i),
            id_field=f"{kind}[{i}].id",
        )
        for i, item in enumerate(items)
    ]
    try:
        rows = resolve_receivers(claims, model.receiver_ids, model.rx_position_m, tolerance_m, refuse_unknown_ids=True)
    except ReceiverError as exc:
        raise InputError(exc.field, exc.message) from None
    positions = [model.rx_position_m[k] if k >= 0 else position[i] for i, k in enumerate(rows)]
    labels = [model.receiver_ids[k] if k >= 0 else f"{items[i].lat:.5f},{items[i].lon:.5f}" for i, k in enumerate(rows)]
    return np.asarray(positions, np.float32), labels


def _iq_window(item: IQRecording, field: str, model: ServedModel, max_samples: int) -> np.ndarray:
    """One recording → complex64 [window] at the model's rate, its channel moved to 0 Hz (as on SigMF import)."""
    p = model.params
    if abs(item.sample_rate_hz - p.sample_rate_hz) > 1e-6 * p.sample_rate_hz:
        raise InputError(
            f"{field}.sample_rate_hz", f"{item.sample_rate_hz:g} Hz, the model expects {p.sample_rate_hz:g} Hz"
        )
    x = decode_iq(item.samples_base64, item.datatype, f"{field}.samples_base64", max_samples)
    if len(x) < p.window_samples:
        raise InputError(f"{field}.samples_base64", f"{len(x)} samples, the model needs at least {p.window_samples}")
    try:
        return conform(x, p.sample_rate_hz, item.center_frequency_hz, model.frequency_hz, p)
    except ConformError as exc:
        raise InputError(f"{field}.{REQUEST_FIELD.get(exc.field, exc.field)}", exc.message) from None


def to_model_inputs(
    req: LocalizeRequest, model: ServedModel, max_samples: int, tolerance_m: float
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features [R', F] float32, rx positions [R', 2] float32, receiver labels) of one request."""
    items: Sequence[ReceiverRef] = req.iq if req.iq is not None else req.features or []  # the schema: one of them
    kind = "iq" if req.iq is not None else "features"
    if len(items) < model.min_receivers:
        raise InputError(kind, f"{len(items)} receivers, the model needs at least {model.min_receivers}")
    positions, labels = receivers(items, kind, model, tolerance_m)
    p = model.params
    if req.features is not None:
        rows = []
        for i, item in enumerate(req.features):
            if item.power_dbm is not None:  # power only: the other features are missing (NaN) for the model
                row = [float("nan")] * p.n_features
                row[p.power_index] = item.power_dbm
                rows.append(row)
                continue
            values = item.features or []  # the schema: features where there is no power_dbm
            if len(values) != p.n_features:
                raise InputError(
                    f"features[{i}].features",
                    f"{len(values)} values, the model expects "
                    f"{p.n_features} ({', '.join(p.feature_names[p.power_index :])}, …)",
                )
            rows.append(values)
        feats = np.asarray(rows, np.float32)
    else:
        recordings = req.iq or []  # the schema: iq where there are no features
        windows = [_iq_window(item, f"iq[{i}]", model, max_samples) for i, item in enumerate(recordings)]
        calibration = [model.full_scale_dbm if r.full_scale_dbm is None else r.full_scale_dbm for r in recordings]
        feats = feature_matrix(extract_features(np.stack(windows), p, np.asarray(calibration)))
    given = feats[~np.isnan(feats)] if req.features is not None else feats  # NaN only where power-only
    if not np.isfinite(given).all() or np.abs(given).max() > MAX_ABS_FEATURE_DB:
        raise InputError(kind, f"feature values must be finite dBm/dB within ±{MAX_ABS_FEATURE_DB:g}")
    return feats, positions, labels
