"""Complex baseband waveforms of common amateur VHF/UHF emissions, normalised to unit mean power.

Every synthesiser maps (rng, n, n_samples, sample_rate_hz) → complex [n, n_samples] with
mean |s|² = 1 over the window, before the carrier offset is applied.
  * nbfm: voice-like audio (three harmonic-ish tones, 300–3000 Hz) frequency-modulated, 2–3 kHz deviation.
  * cw:   an on/off keyed carrier (Morse at 12–30 wpm) with soft 5 ms edges.
  * afsk: Bell-202 packet (APRS): 1200 Bd continuous-phase 1200/2200 Hz audio on FM, 3 kHz deviation.
  * fsk4: 4-level FSK as in C4FM/DMR: 4800 Bd, ±600/±1800 Hz, symbol transitions smoothed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Synth = Callable[[np.random.Generator, int, int, float], np.ndarray]


def _unit_phasor(phase_rad: np.ndarray) -> np.ndarray:
    """exp(j·phase) as complex64; the phase is wrapped in float64 first so float32 keeps its precision."""
    wrapped = np.mod(phase_rad, 2 * np.pi).astype(np.float32)
    out = np.empty(wrapped.shape, np.complex64)
    np.cos(wrapped, out=out.real)
    np.sin(wrapped, out=out.imag)
    return out


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Causal moving average over `width` samples along the last axis, edge-padded: same shape as x."""
    c = np.cumsum(np.pad(x, ((0, 0), (width, 0)), mode="edge"), axis=1)
    return (c[:, width:] - c[:, :-width]) / width


def _fm(instantaneous_hz: np.ndarray, sample_rate_hz: float) -> np.ndarray:
    return _unit_phasor((2 * np.pi / sample_rate_hz) * np.cumsum(instantaneous_hz, axis=-1))


def nbfm(rng: np.random.Generator, n: int, n_samples: int, sample_rate_hz: float) -> np.ndarray:
    """Narrow-band FM voice-like waveforms: complex64 [n, n_samples] (three tones, random levels)."""
    t = (np.arange(n_samples) / sample_rate_hz).astype(np.float32)
    f = rng.uniform(300, 3000, (n, 3, 1))
    a = rng.uniform(0.2, 1.0, (n, 3, 1))
    a /= a.sum(axis=1, keepdims=True)
    phi = rng.uniform(0, 2 * np.pi, (n, 3, 1))
    deviation = rng.uniform(2000, 3000, (n, 1))
    # closed-form integral of the audio: phase = 2π·dev·∫Σ a·sin(2πft+φ) = -dev·Σ a/f·cos(2πft+φ)
    # float32 is ample here: tone phases stay below ~10³ rad inside a window (error < 10⁻⁴ rad)
    tone_phase = (2 * np.pi * f).astype(np.float32) * t + phi.astype(np.float32)
    phase = -(deviation * (a / f * np.cos(tone_phase)).sum(axis=1))
    return _unit_phasor(phase)


def cw(rng: np.random.Generator, n: int, n_samples: int, sample_rate_hz: float) -> np.ndarray:
    """CW Morse keying: complex64 [n, n_samples] on/off carrier at 12–30 words per minute."""
    dot_s = 1.2 / rng.uniform(12, 30, (n, 1))  # PARIS timing
    t = np.arange(n_samples) / sample_rate_hz + rng.uniform(0, 10, (n, 1))
    unit = np.floor(t / dot_s).astype(np.int64)
    # random keying per Morse unit, biased to key-down so most windows carry signal
    n_units = int((unit[:, -1] - unit[:, 0]).max()) + 1
    keyed = rng.random((n, n_units)) < 0.7
    key = np.take_along_axis(keyed, unit - unit[:, :1], axis=1).astype(float)
    key[key.mean(axis=1) < 0.25] = 1.0  # a silent window is no transmission; keep the carrier on
    # soft keying: two passes of a 2.5 ms moving average give 5 ms edges (limits key clicks)
    width = max(1, int(0.0025 * sample_rate_hz))
    return _moving_average(_moving_average(key, width), width).astype(np.complex64)


def afsk(rng: np.random.Generator, n: int, n_samples: int, sample_rate_hz: float) -> np.ndarray:
    """1200-baud AFSK (1200/2200 Hz tones on FM): complex64 [n, n_samples]."""
    baud = 1200.0
    t0 = rng.uniform(0, 1 / baud, (n, 1))
    symbol = np.floor((np.arange(n_samples) / sample_rate_hz + t0) * baud).astype(np.int64)
    bits = rng.integers(0, 2, (n, int(symbol.max()) + 1))
    tone_hz = np.where(np.take_along_axis(bits, symbol, axis=1) == 1, 1200.0, 2200.0)
    audio = np.sin(2 * np.pi / sample_rate_hz * np.cumsum(tone_hz, axis=1) + rng.uniform(0, 2 * np.pi, (n, 1)))
    return _fm(3000.0 * audio, sample_rate_hz)


def fsk4(rng: np.random.Generator, n: int, n_samples: int, sample_rate_hz: float) -> np.ndarray:
    """4800-baud 4-level FSK: complex64 [n, n_samples]."""
    baud = 4800.0
    t0 = rng.uniform(0, 1 / baud, (n, 1))
    symbol = np.floor((np.arange(n_samples) / sample_rate_hz + t0) * baud).astype(np.int64)
    levels = np.array([-1800.0, -600.0, 600.0, 1800.0])[rng.integers(0, 4, (n, int(symbol.max()) + 1))]
    freq = np.take_along_axis(levels, symbol, axis=1)
    smooth = _moving_average(freq, max(1, int(sample_rate_hz / baud / 2)))  # over half a symbol
    return _fm(smooth, sample_rate_hz)


SYNTHESISERS: dict[str, Synth] = {"nbfm": nbfm, "cw": cw, "afsk": afsk, "fsk4": fsk4}
EMISSION_CODES = {name: i for i, name in enumerate(SYNTHESISERS)}
CONSTANT_ENVELOPE = frozenset({"nbfm", "afsk", "fsk4"})  # angle-modulated: |s| = 1 at every sample


def synthesise(
    rng: np.random.Generator,
    emission: np.ndarray,
    n_samples: int,
    sample_rate_hz: float,
    carrier_offset_hz: np.ndarray,
) -> np.ndarray:
    """Waveforms of a batch of transmissions.

    Args:
        rng: the generator the waveforms are drawn from.
        emission: int [n] codes from EMISSION_CODES.
        n_samples: samples of each waveform.
        sample_rate_hz: sample rate of the waveforms.
        carrier_offset_hz: float [n] frequency offset of each carrier from the channel centre.

    Returns:
        complex64 [n, n_samples], mean |s|² = 1 per row.
    """
    out = np.empty((len(emission), n_samples), np.complex64)
    names = list(SYNTHESISERS)
    for code in np.unique(emission):
        rows = np.flatnonzero(emission == code)
        out[rows] = SYNTHESISERS[names[code]](rng, len(rows), n_samples, sample_rate_hz)
    out /= np.sqrt(np.mean(np.abs(out) ** 2, axis=1, keepdims=True))
    if np.any(carrier_offset_hz):  # (zero offsets: a phasor of ones, which changes nothing)
        t = np.arange(n_samples) / sample_rate_hz
        out *= _unit_phasor(2 * np.pi * np.asarray(carrier_offset_hz)[:, None] * t)
    return out


def envelope_power(rng: np.random.Generator, emission: np.ndarray, n_samples: int, sample_rate_hz: float) -> np.ndarray:
    """|s|² of a batch of waveforms (mean 1 per row): float32 [n, n_samples]. Only the emissions whose envelope
    varies are synthesised; an angle-modulated one is 1 at every sample."""
    power = np.ones((len(emission), n_samples), np.float32)
    varying = np.flatnonzero(~np.isin(emission, [EMISSION_CODES[name] for name in CONSTANT_ENVELOPE]))
    if len(varying):
        s = synthesise(rng, emission[varying], n_samples, sample_rate_hz, np.zeros(len(varying)))
        power[varying] = np.abs(s) ** 2
    return power
