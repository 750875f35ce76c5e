"""Bring a recording to what the feature extractor expects: tuned to the channel, at its rate, one window.

A recording centred `frequency_hz` away from the channel is shifted in frequency; another sample rate is
converted by polyphase resampling (scipy.signal.resample_poly, which keeps absolute power); then the first
window of `FeatureParams.window_samples` samples is kept. A recording already at the channel frequency
and rate is only cut, so its samples reach the extractor unchanged.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from heimdall.datasets.sigmf_files import Recording
from heimdall.errors import ConformError, RecordingError
from heimdall.features import FeatureParams, extract_features, feature_matrix

MAX_RATE_DENOMINATOR = 10_000
RATE_TOLERANCE = 1e-6  # relative error allowed between the exact and the rational resampling ratio


def required_half_band_hz(p: FeatureParams) -> float:
    """Bandwidth each side of the channel centre that the extractor reads (channel and noise band)."""
    return max(p.channel_bandwidth_hz / 2, p.noise_band_hz[1])


def samples_needed(p: FeatureParams, sample_rate_hz: float) -> int:
    """Input samples to read for one window at `sample_rate_hz` (with the resampling filter's margin)."""
    if sample_rate_hz == p.sample_rate_hz:
        return p.window_samples
    up, down = resampling_ratio(p, sample_rate_hz)
    return math.ceil(p.window_samples * down / up) + 2 * _pad_in(up, down)


def resampling_ratio(p: FeatureParams, sample_rate_hz: float) -> tuple[int, int]:
    """(up, down) with up/down = p.sample_rate_hz / sample_rate_hz."""
    exact = p.sample_rate_hz / sample_rate_hz
    ratio = Fraction(exact).limit_denominator(MAX_RATE_DENOMINATOR)
    if abs(float(ratio) / exact - 1) > RATE_TOLERANCE:
        raise ConformError(
            "global.core:sample_rate",
            f"cannot resample {sample_rate_hz:g} Hz to {p.sample_rate_hz:g} Hz with a ratio of "
            f"integers ≤ {MAX_RATE_DENOMINATOR}",
        )
    return ratio.numerator, ratio.denominator


def _pad_in(up: int, down: int) -> int:
    """Input samples the resampling filter needs before the window (half its length, input rate)."""
    return math.ceil(10 * max(up, down) / up) + 1


def check(n_samples: int, sample_rate_hz: float, frequency_hz: float, channel_hz: float, p: FeatureParams) -> int:
    """Raise ConformError unless a recording so described gives one window; returns the samples to read."""
    half = required_half_band_hz(p)
    if abs(channel_hz - frequency_hz) + half > sample_rate_hz / 2 * (1 + 1e-9):
        raise ConformError(
            "captures[0].core:frequency",
            f"a recording centred on {frequency_hz:.0f} Hz at {sample_rate_hz:g} samples/s covers "
            f"±{sample_rate_hz / 2:.0f} Hz; the feature extractor needs {channel_hz:.0f} Hz ± {half:.0f} Hz",
        )
    need = samples_needed(p, sample_rate_hz)
    if n_samples < need:
        raise ConformError(
            "data",
            f"{n_samples} samples at {sample_rate_hz:g} Hz; one feature window "
            f"({p.window_samples} samples at {p.sample_rate_hz:g} Hz) needs {need}",
        )
    return need


def conform(
    iq: np.ndarray, sample_rate_hz: float, frequency_hz: float, channel_hz: float, p: FeatureParams
) -> np.ndarray:
    """complex64 [≥ samples_needed] recording → complex64 [p.window_samples] at p.sample_rate_hz, channel at 0 Hz."""
    need = check(len(iq), sample_rate_hz, frequency_hz, channel_hz, p)
    offset_hz = channel_hz - frequency_hz
    x = np.asarray(iq[:need])
    if offset_hz != 0:
        t = np.arange(need) / sample_rate_hz
        x = (x * np.exp(-2j * np.pi * offset_hz * t)).astype(np.complex64)
    if sample_rate_hz != p.sample_rate_hz:
        from scipy.signal import resample_poly

        up, down = resampling_ratio(p, sample_rate_hz)
        y = resample_poly(x, up, down)
        start = math.ceil(_pad_in(up, down) * up / down)
        x = y[start : start + p.window_samples]
        if len(x) < p.window_samples:  # rounding at the very end of the slice
            raise ConformError("data", f"{len(iq)} samples at {sample_rate_hz:g} Hz give less than one feature window")
    return np.ascontiguousarray(x[: p.window_samples], dtype=np.complex64)


def check_recording(rec: Recording, p: FeatureParams, channel_hz: float) -> int:
    """`check` for a SigMF recording (from its metadata only); RecordingError names the file and field."""
    try:
        return check(rec.n_samples, rec.sample_rate_hz, rec.frequency_hz, channel_hz, p)
    except ConformError as exc:
        raise RecordingError(rec.data_path if exc.field == "data" else rec.meta_path, exc.field, exc.message) from None


def recording_features(
    recordings: list[Recording], p: FeatureParams, channel_hz: float, default_full_scale_dbm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 [k, F] and conformed windows complex64 [k, window] of k recordings.

    Each recording's full scale is its heimdall:power_calibration_dbm (else default_full_scale_dbm) minus
    its heimdall:gain_offset_db. Problems raise RecordingError naming the file and the field.
    """
    windows = []
    for rec in recordings:
        need = check_recording(rec, p, channel_hz)
        try:
            windows.append(conform(rec.samples(need), rec.sample_rate_hz, rec.frequency_hz, channel_hz, p))
        except ConformError as exc:
            raise RecordingError(rec.data_path, exc.field, exc.message) from None
    cal = np.array(
        [
            (default_full_scale_dbm if r.power_calibration_dbm is None else r.power_calibration_dbm) - r.gain_offset_db
            for r in recordings
        ]
    )
    iq = np.stack(windows)
    return feature_matrix(extract_features(iq, p, cal)), iq
