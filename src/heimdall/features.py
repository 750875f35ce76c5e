"""Per-receiver features from complex baseband IQ: the one code path for training, evaluation and serving.

For each recording: a Welch log-power spectral density (Hann window, 50 % overlap, linear frequency
bins), the in-band signal power with the noise floor removed, the noise density, and the SNR in the
channel. Every value keeps the receiver's absolute power scale (dBm after its calibration): receivers
are never normalised independently of each other, since relative power is the information.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import scipy.fft

from heimdall.errors import FeatureError

SNR_FLOOR_DB = -30.0  # reported when no signal power is left after removing the noise
SCALAR_FEATURES = ("power_dbm", "noise_density_dbm_hz", "snr_db")  # the columns after the PSD bins, in this order
MAX_WINDOW_SAMPLES = 1 << 24  # bounds the work of one recording's features


@dataclass(frozen=True)
class FeatureParams:
    """Settings of the extractor; stored with every dataset and model so serving computes the same thing."""

    sample_rate_hz: float
    window_samples: int
    segment_samples: int
    psd_bins: int
    channel_bandwidth_hz: float
    noise_band_hz: tuple[float, float]
    detection_snr_db: float

    @classmethod
    def from_scenario(cls, scenario: Any) -> FeatureParams:
        """The feature parameters of a scenario's receiver chain and feature settings."""
        ch, ft = scenario.receiver_chain, scenario.features
        return cls(
            sample_rate_hz=ch.sample_rate_hz,
            window_samples=ch.window_samples,
            segment_samples=ft.segment_samples,
            psd_bins=ft.psd_bins,
            channel_bandwidth_hz=ch.channel_bandwidth_hz,
            noise_band_hz=tuple(ft.noise_band_hz),
            detection_snr_db=ch.detection_snr_db,
        )

    @property
    def n_features(self) -> int:
        """Columns of `feature_matrix`: the PSD bins, then SCALAR_FEATURES."""
        return self.psd_bins + len(SCALAR_FEATURES)

    @property
    def power_index(self) -> int:
        """Column of the in-band power (dBm) in `feature_matrix`."""
        return self.psd_bins

    @property
    def noise_index(self) -> int:
        """Column of the noise density (dBm/Hz)."""
        return self.psd_bins + 1

    @property
    def snr_index(self) -> int:
        """Column of the SNR in the channel (dB)."""
        return self.psd_bins + 2

    @property
    def feature_names(self) -> list[str]:
        """Names of the columns of `feature_matrix`, with units."""
        return [f"psd_{i}_dbm_hz" for i in range(self.psd_bins)] + list(SCALAR_FEATURES)

    def to_json(self) -> str:
        """JSON text of the parameters (keys sorted)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureParams:
        """Parameters from `to_json` text; ValueError names the first key that is missing or out of range."""
        d = json.loads(text)
        names = [f.name for f in fields(cls)]
        if not isinstance(d, dict) or sorted(d) != sorted(names):
            raise ValueError(f"expected an object with exactly the keys {', '.join(names)}")

        def number(key: str, value: Any, low: float, high: float, integer: bool = False) -> Any:
            ok = isinstance(value, int) if integer else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok or not low <= value <= high:
                raise ValueError(
                    f"{key}: {value!r:.40} is not {'an integer' if integer else 'a number'} in [{low:g}, {high:g}]"
                )
            return value

        fs = number("sample_rate_hz", d["sample_rate_hz"], 1.0, 1e10)
        window = number("window_samples", d["window_samples"], 2, MAX_WINDOW_SAMPLES, integer=True)
        segment = number("segment_samples", d["segment_samples"], 2, window, integer=True)
        bins = number("psd_bins", d["psd_bins"], 0, segment, integer=True)  # 0: power readings, no spectrum
        if bins and segment % bins:
            raise ValueError(f"psd_bins: {bins} does not divide segment_samples {segment}")
        band = d["noise_band_hz"]
        if not isinstance(band, list) or len(band) != 2:
            raise ValueError("noise_band_hz: expected [low, high] in Hz")
        low = number("noise_band_hz[0]", band[0], 0.0, fs / 2)
        high = number("noise_band_hz[1]", band[1], low, fs / 2)
        return cls(
            sample_rate_hz=float(fs),
            window_samples=window,
            segment_samples=segment,
            psd_bins=bins,
            channel_bandwidth_hz=float(number("channel_bandwidth_hz", d["channel_bandwidth_hz"], 0.0, fs)),
            noise_band_hz=(float(low), float(high)),
            detection_snr_db=float(number("detection_snr_db", d["detection_snr_db"], -1e3, 1e3)),
        )


def power_column(n_features: int) -> int:
    """The power column (FeatureParams.power_index) of a feature matrix with n_features columns."""
    return n_features - len(SCALAR_FEATURES)


class Features(NamedTuple):
    """Extractor output; leading axes are those of the IQ without its sample axis."""

    psd_dbm_hz: np.ndarray  # float32 [..., psd_bins] log-PSD, dBm/Hz, bins from -fs/2 to +fs/2
    power_dbm: np.ndarray  # float32 [...] in-band signal power, noise removed
    noise_density_dbm_hz: np.ndarray  # float32 [...] noise floor estimate
    snr_db: np.ndarray  # float32 [...] signal power / noise power in the channel bandwidth


class _Plan(NamedTuple):
    window: np.ndarray
    window_power: float
    in_band: np.ndarray
    noise_band: np.ndarray


def _plan(p: FeatureParams) -> _Plan:
    n = p.segment_samples
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)  # periodic Hann
    freqs = np.fft.fftshift(np.fft.fftfreq(n, 1.0 / p.sample_rate_hz))
    lo, hi = p.noise_band_hz
    return _Plan(
        window=window,
        window_power=float(np.sum(window.astype(np.float64) ** 2)),
        in_band=np.abs(freqs) <= p.channel_bandwidth_hz / 2,
        noise_band=(np.abs(freqs) >= lo) & (np.abs(freqs) <= hi),
    )


def welch_psd(iq: np.ndarray, p: FeatureParams) -> np.ndarray:
    """Two-sided Welch PSD, fftshifted. iq: complex [..., n ≥ window] → float32 [..., segment] in FS²/Hz."""
    plan = _plan(p)
    x = np.asarray(iq)[..., : p.window_samples].astype(np.complex64, copy=False)
    hop = p.segment_samples // 2
    segments = np.lib.stride_tricks.sliding_window_view(x, p.segment_samples, axis=-1)[..., ::hop, :]
    spectra = scipy.fft.fft(segments * plan.window, axis=-1)
    power = (spectra.real**2 + spectra.imag**2).mean(axis=-2)
    return np.fft.fftshift(power / np.float32(p.sample_rate_hz * plan.window_power), axes=-1)


def extract_features(iq: np.ndarray, p: FeatureParams, full_scale_dbm: float | np.ndarray) -> Features:
    """Features of recordings.

    Args:
        iq: complex64 [..., n_samples], full-scale units (|x|² = 1 ↔ full_scale_dbm); the first
            p.window_samples samples are used.
        p: extractor settings; the IQ must be sampled at p.sample_rate_hz.
        full_scale_dbm: dBm of a full-scale signal, scalar or broadcastable to iq.shape[:-1]
            (per-receiver calibration).

    Returns:
        Features with leading axes iq.shape[:-1].
    """
    iq = np.asarray(iq)
    if not np.iscomplexobj(iq):
        raise FeatureError(f"iq: expected complex samples, got dtype {iq.dtype}")
    if iq.shape[-1] < p.window_samples:
        raise FeatureError(f"iq: {iq.shape[-1]} samples, expected at least the window of {p.window_samples}")
    plan = _plan(p)
    psd = welch_psd(iq, p).astype(np.float64)
    df = p.sample_rate_hz / p.segment_samples
    noise = psd[..., plan.noise_band].mean(axis=-1)
    band = psd[..., plan.in_band].sum(axis=-1) * df
    noise_in_channel = noise * p.channel_bandwidth_hz
    signal = np.maximum(band - noise * plan.in_band.sum() * df, noise_in_channel * 10 ** (SNR_FLOOR_DB / 10))
    cal = np.asarray(full_scale_dbm, np.float64)
    binned = psd.reshape(*psd.shape[:-1], p.psd_bins, -1).mean(axis=-1) if p.psd_bins else psd[..., :0]
    tiny = np.finfo(np.float64).tiny
    return Features(
        psd_dbm_hz=(10 * np.log10(binned + tiny) + cal[..., None]).astype(np.float32),
        power_dbm=(10 * np.log10(signal + tiny) + cal).astype(np.float32),
        noise_density_dbm_hz=(10 * np.log10(noise + tiny) + cal).astype(np.float32),
        snr_db=(10 * np.log10(signal / (noise_in_channel + tiny) + tiny)).astype(np.float32),
    )


def feature_matrix(f: Features) -> np.ndarray:
    """Stack features into the model's input: float32 [..., psd_bins + 3] (see FeatureParams.feature_names)."""
    return np.concatenate(
        [f.psd_dbm_hz, f.power_dbm[..., None], f.noise_density_dbm_hz[..., None], f.snr_db[..., None]], axis=-1
    ).astype(np.float32, copy=False)


def heard(snr_db: np.ndarray, p: FeatureParams) -> np.ndarray:
    """Detection decision: bool [...], True where the measured SNR reaches p.detection_snr_db."""
    return np.asarray(snr_db) >= p.detection_snr_db


MIN_HEARD_STORED = 1  # stores keep every transmission at least one receiver heard
HEARD_CLASSES = ("1", "2", "3", "4+")  # how metrics group transmissions by the receivers that heard them


def receiver_reports(labels: list[str], snr_db: np.ndarray, params: FeatureParams) -> list[dict[str, Any]]:
    """The answer's `receivers`: per receiver its id, SNR (dB, 0.01 dB) and whether it heard the transmission
    (SNR ≥ the model's detection threshold); both None for a receiver that sent only its power."""
    detected = heard(snr_db, params)
    return [
        {"id": label, "snr_db": round(float(s), 2), "heard": bool(h)}
        if np.isfinite(s)
        else {"id": label, "snr_db": None, "heard": None}
        for label, s, h in zip(labels, snr_db, detected, strict=True)
    ]


def heard_class(n_heard: np.ndarray | int) -> np.ndarray:
    """The HEARD_CLASSES label (str [n]) of each count of hearing receivers ("0" for none)."""
    n = np.asarray(n_heard)
    return np.where(n >= 4, "4+", n.astype(str))
