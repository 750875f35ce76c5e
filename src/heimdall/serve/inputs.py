"""Turning validated requests into model inputs, with errors that name the offending field."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from heimdall.features import extract_features, feature_matrix
from heimdall.serve.runtime import ServedModel
from heimdall.serve.schemas import LocalizeRequest


MAX_ABS_FEATURE_DB = 1000.0


class InputError(ValueError):
    """Bad input; `field` names where (e.g. iq[2].samples_base64); answered with 422."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def decode_iq(b64: str, datatype: str, field: str, max_samples: int) -> np.ndarray:
    """base64 ci16_le / cf32_le → complex64 [n] in full-scale units."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "not valid base64") from None
    width = 4 if datatype == "ci16_le" else 8
    if len(raw) % width:
        raise InputError(field, f"{len(raw)} bytes is not a whole number of {datatype} samples ({width} bytes each)")
    n = len(raw) // width
    if n > max_samples:
        raise InputError(field, f"{n} samples, more than the limit of {max_samples}")
    if datatype == "ci16_le":
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    else:
        x = np.frombuffer(raw, "<f4").astype(np.float32)
        if not np.isfinite(x).all():
            raise InputError(field, "samples contain NaN or Inf")
    return x.view(np.complex64)


def to_model_inputs(req: LocalizeRequest, model: ServedModel, max_samples: int
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features [R', F] float32, rx positions [R', 2] float32, receiver labels) of one request."""
    items = req.iq if req.iq is not None else req.features
    kind = "iq" if req.iq is not None else "features"
    if len(items) < model.min_receivers:
        raise InputError(kind, f"{len(items)} receivers, the model needs at least {model.min_receivers}")
    positions, labels = [], []
    for i, item in enumerate(items):
        if item.id is not None:
            if item.id not in model.receiver_ids:
                raise InputError(f"{kind}[{i}].id", f"unknown receiver {item.id!r}; the model knows "
                                                    f"{', '.join(model.receiver_ids)} (or give lat/lon)")
            positions.append(model.rx_position_m[model.receiver_ids.index(item.id)])
            labels.append(item.id)
        else:
            positions.append(model.frame.to_local(item.lat, item.lon).astype(np.float32))
            labels.append(f"{item.lat:.5f},{item.lon:.5f}")
    if len(set(labels)) != len(labels):
        raise InputError(kind, "the same receiver appears twice")
    p = model.params
    if req.features is not None:
        rows = []
        for i, item in enumerate(req.features):
            if item.power_dbm is not None:  # power only: the other features are missing (NaN) for the model
                row = [float("nan")] * p.n_features
                row[p.feature_names.index("power_dbm")] = item.power_dbm
                rows.append(row)
                continue
            if len(item.features) != p.n_features:
                raise InputError(f"features[{i}].features", f"{len(item.features)} values, the model expects "
                                                            f"{p.n_features} ({', '.join(p.feature_names[-3:])}, …)")
            rows.append(item.features)
        feats = np.asarray(rows, np.float32)
    else:
        signals, calibration = [], []
        for i, item in enumerate(req.iq):
            f = f"iq[{i}]"
            if abs(item.sample_rate_hz - p.sample_rate_hz) > 1e-6 * p.sample_rate_hz:
                raise InputError(f"{f}.sample_rate_hz", f"{item.sample_rate_hz:g} Hz, the model expects "
                                                        f"{p.sample_rate_hz:g} Hz")
            x = decode_iq(item.samples_base64, item.datatype, f"{f}.samples_base64", max_samples)
            if len(x) < p.window_samples:
                raise InputError(f"{f}.samples_base64", f"{len(x)} samples, the model needs at least "
                                                        f"{p.window_samples}")
            signals.append(x[: p.window_samples])
            calibration.append(model.full_scale_dbm if item.full_scale_dbm is None else item.full_scale_dbm)
        feats = feature_matrix(extract_features(np.stack(signals), p, np.asarray(calibration)))
    given = feats[~np.isnan(feats)] if req.features is not None else feats  # NaN only where power-only
    if not np.isfinite(given).all() or np.abs(given).max() > MAX_ABS_FEATURE_DB:
        raise InputError(kind, f"feature values must be finite dBm/dB within ±{MAX_ABS_FEATURE_DB:g}")
    return feats, np.stack(positions).astype(np.float32), labels
