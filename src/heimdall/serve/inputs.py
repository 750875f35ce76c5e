"""Turning validated requests into model inputs, with errors that name the offending field."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from heimdall.features import extract_features, feature_matrix
from heimdall.interchange.conform import ConformError, conform
from heimdall.interchange.receivers import nearest_receivers
from heimdall.serve.errors import InputError
from heimdall.serve.runtime import ServedModel
from heimdall.serve.schemas import IQRecording, LocalizeRequest, ReceiverRef

MAX_ABS_FEATURE_DB = 1000.0
# conform.py names SigMF fields; a request names its own
REQUEST_FIELD = {"captures[0].core:frequency": "center_frequency_hz", "global.core:sample_rate": "sample_rate_hz",
                 "data": "samples_base64"}


def decode_iq(b64: str, datatype: str, field: str, max_samples: int) -> np.ndarray:
    """base64 ci16_le / cf32_le → complex64 [n] in full-scale units."""
    width = 4 if datatype == "ci16_le" else 8
    if len(b64) // 4 * 3 > (max_samples + 1) * width:  # refuse before decoding
        raise InputError(field, f"more than the limit of {max_samples} samples")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "not valid base64") from None
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


def receivers(items: list[ReceiverRef], kind: str, model: ServedModel, tolerance_m: float
              ) -> tuple[np.ndarray, list[str]]:
    """Positions float32 [R', 2] m and labels of a request's receivers.

    By id: the model's table position (a position given as well must lie within tolerance_m of it). By lat/lon:
    the table receiver within tolerance_m if there is one (labelled by its id), else ad hoc. The same receiver
    twice (same table receiver, or two ad-hoc positions within tolerance_m) is refused.
    """
    given = [i for i, item in enumerate(items) if item.lat is not None]
    en = model.frame.to_local([items[i].lat for i in given], [items[i].lon for i in given])  # [G, 2], one PROJ call
    row = {i: n for n, i in enumerate(given)}
    in_table = nearest_receivers(en, model.rx_position_m, tolerance_m)  # [G]
    near = np.linalg.norm(en[:, None] - en[None], axis=-1) <= tolerance_m  # [G, G]
    ad_hoc = np.zeros(len(given), bool)  # rows taken as ad-hoc receivers so far
    positions, labels, table = [], [], {}
    for i, item in enumerate(items):
        field = f"{kind}[{i}]"
        if item.id is not None:
            if item.id not in model.receiver_ids:
                raise InputError(f"{field}.id", f"unknown receiver {item.id!r}; the model knows "
                                                f"{', '.join(model.receiver_ids)} (or give lat/lon alone)")
            k = model.receiver_ids.index(item.id)
            if i in row:
                dist = float(np.linalg.norm(en[row[i]] - model.rx_position_m[k]))
                if dist > tolerance_m:
                    raise InputError(field, f"receiver {item.id!r} is {dist:.0f} m from its position in the model's "
                                            f"table (tolerance {tolerance_m:g} m); give the id alone, or lat/lon "
                                            "alone for another receiver")
        else:
            k = int(in_table[row[i]])
        if k >= 0:
            if k in table:
                raise InputError(field, f"receiver {model.receiver_ids[k]!r} appears twice "
                                        f"(also {kind}[{table[k]}])")
            table[k] = i
            positions.append(model.rx_position_m[k])
            labels.append(model.receiver_ids[k])
        else:
            twins = np.flatnonzero(near[row[i]] & ad_hoc)
            if len(twins):
                raise InputError(field, f"the same receiver appears twice (also {kind}[{given[twins[0]]}], within "
                                        f"{tolerance_m:g} m)")
            ad_hoc[row[i]] = True
            positions.append(en[row[i]])
            labels.append(f"{item.lat:.5f},{item.lon:.5f}")
    return np.asarray(positions, np.float32), labels


def _iq_window(item: IQRecording, field: str, model: ServedModel, max_samples: int) -> np.ndarray:
    """One recording → complex64 [window] at the model's rate, its channel moved to 0 Hz (as on SigMF import)."""
    p = model.params
    if abs(item.sample_rate_hz - p.sample_rate_hz) > 1e-6 * p.sample_rate_hz:
        raise InputError(f"{field}.sample_rate_hz", f"{item.sample_rate_hz:g} Hz, the model expects "
                                                    f"{p.sample_rate_hz:g} Hz")
    x = decode_iq(item.samples_base64, item.datatype, f"{field}.samples_base64", max_samples)
    if len(x) < p.window_samples:
        raise InputError(f"{field}.samples_base64", f"{len(x)} samples, the model needs at least {p.window_samples}")
    try:
        return conform(x, p.sample_rate_hz, item.center_frequency_hz, model.frequency_hz, p)
    except ConformError as exc:
        raise InputError(f"{field}.{REQUEST_FIELD.get(exc.field, exc.field)}", exc.message) from None


def to_model_inputs(req: LocalizeRequest, model: ServedModel, max_samples: int, tolerance_m: float
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features [R', F] float32, rx positions [R', 2] float32, receiver labels) of one request."""
    items = req.iq if req.iq is not None else req.features
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
                row[p.feature_names.index("power_dbm")] = item.power_dbm
                rows.append(row)
                continue
            if len(item.features) != p.n_features:
                raise InputError(f"features[{i}].features", f"{len(item.features)} values, the model expects "
                                                            f"{p.n_features} ({', '.join(p.feature_names[-3:])}, …)")
            rows.append(item.features)
        feats = np.asarray(rows, np.float32)
    else:
        windows = [_iq_window(item, f"iq[{i}]", model, max_samples) for i, item in enumerate(req.iq)]
        calibration = [model.full_scale_dbm if item.full_scale_dbm is None else item.full_scale_dbm for item in req.iq]
        feats = feature_matrix(extract_features(np.stack(windows), p, np.asarray(calibration)))
    given = feats[~np.isnan(feats)] if req.features is not None else feats  # NaN only where power-only
    if not np.isfinite(given).all() or np.abs(given).max() > MAX_ABS_FEATURE_DB:
        raise InputError(kind, f"feature values must be finite dBm/dB within ±{MAX_ABS_FEATURE_DB:g}")
    return feats, positions, labels
