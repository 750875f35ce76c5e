"""Simulation of blocks of transmissions: geometry → received powers → IQ → features.

`World` holds everything derived from a scenario once (receiver geometry, noise, shadowing fields);
`simulate_block` turns one random generator into a block of accepted transmissions. A block's output
depends only on its generator, which is what makes datasets reproducible whatever the worker count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from heimdall.features import MIN_HEARD_STORED, FeatureParams, extract_features, feature_matrix, heard
from heimdall.scenario.domain import Scenario
from heimdall.scenario.path_loss import median_path_loss_db
from heimdall.sim.fading import rician_fading
from heimdall.sim.noise import complex_gaussian, noise_density_dbm_hz
from heimdall.sim.shadowing import ShadowingFields, build_fields
from heimdall.sim.signals import EMISSION_CODES, synthesise

# Candidates are pre-screened on the mean SNR before any IQ is made; fading inside a window rarely lifts
# the power by more than this, so the screen discards (almost) nothing the final detection would keep.
PRESCREEN_MARGIN_DB = 10.0
Keep = Callable[[np.ndarray], np.ndarray]  # positions [m, 2] m → bool [m]: which may transmit
IQ_CHUNK = 64  # transmissions synthesised at once (bounds memory: 64·R·N complex64)


@dataclass(frozen=True)
class World:
    """Scenario quantities computed once.

    rx_position_m: float64 [n_rx, 2] receivers east/north; bounds_m: transmitter area
    (east_min, north_min, east_max, north_max); fields: fixed shadowing (None in i.i.d. mode).
    """

    scenario: Scenario
    params: FeatureParams
    rx_position_m: np.ndarray
    rx_height_m: np.ndarray
    noise_density_dbm_hz: np.ndarray
    gain_offset_db: np.ndarray
    bounds_m: tuple[float, float, float, float]
    fields: ShadowingFields | None

    @property
    def n_rx(self) -> int:
        """Receivers in the network."""
        return len(self.rx_position_m)


def build_world(scenario: Scenario) -> World:
    """The fixed part of a scenario's simulation: receiver positions, heights, noise, gains and shadowing fields."""
    rx = scenario.receivers
    bounds = scenario.area_bounds_m()
    sh = scenario.environment.shadowing
    fields = None
    if sh.mode == "fixed":
        fields = build_fields(
            [r.id for r in rx], bounds, [(c.sigma_db, c.correlation_m) for c in sh.components], sh.seed
        )
    return World(
        scenario=scenario,
        params=FeatureParams.from_scenario(scenario),
        rx_position_m=scenario.receiver_positions_m(),
        rx_height_m=np.array([r.antenna_height_m for r in rx]),
        noise_density_dbm_hz=noise_density_dbm_hz([r.noise_figure_db for r in rx]),
        gain_offset_db=np.array([r.gain_offset_db for r in rx]),
        bounds_m=bounds,
        fields=fields,
    )


def sample_positions(rng: np.random.Generator, n: int, world: World, keep: Keep | None = None) -> np.ndarray:
    """Uniform transmitter positions in the area, float64 [n, 2]; `keep(pos) -> bool [m]` restricts them."""
    e0, n0, e1, n1 = world.bounds_m
    out = np.empty((0, 2))
    while len(out) < n:
        pos = rng.uniform((e0, n0), (e1, n1), size=(max(n, 64), 2))
        if keep is not None:
            pos = pos[keep(pos)]
        out = np.concatenate([out, pos])
    return out[:n]


def simulate_block(
    world: World, rng: np.random.Generator, n_candidates: int, max_iq: int = 0, keep: Keep | None = None
) -> dict[str, np.ndarray]:
    """Simulate `n_candidates` transmissions and return those heard by at least one receiver (MIN_HEARD_STORED).

    Returns arrays over the m accepted transmissions (R receivers, F features, N window samples):
        features float32 [m, R, F]; mask bool [m, R]; tx_position_m float64 [m, 2];
        tx_power_dbm, tx_height_m, speed_mps, carrier_offset_hz float [m]; mobile bool [m]; emission uint8 [m];
        path_loss_db, shadowing_db, mean_rx_power_dbm (at the antenna, before fading),
        rx_power_dbm (what a calibrated receiver with its gain offset measures in the window),
        true_snr_db float32 [m, R]; and iq complex64 [min(m, max_iq), R, N] (full-scale units).
    """
    sc, p = world.scenario, world.params
    tx, ch = sc.transmitter, sc.receiver_chain
    n = n_candidates
    pos = sample_positions(rng, n, world, keep)
    tx_power = rng.uniform(*tx.power_dbm, n)
    tx_height = rng.uniform(*tx.antenna_height_m, n)
    mobile = rng.random(n) < tx.mobile_fraction
    speed = np.where(mobile, rng.uniform(*tx.speed_mps, n), 0.0)
    names, weights = zip(*sc.signals.mix, strict=False)
    emission = np.array([EMISSION_CODES[e] for e in names], np.uint8)[
        rng.choice(len(names), n, p=np.array(weights) / sum(weights))
    ]
    carrier = rng.uniform(-sc.signals.carrier_offset_hz, sc.signals.carrier_offset_hz, n)

    distance = np.linalg.norm(pos[:, None, :] - world.rx_position_m[None, :, :], axis=-1)
    loss = median_path_loss_db(
        sc.environment.path_loss, distance, sc.frequency_hz, tx_height[:, None], world.rx_height_m[None, :]
    )
    if world.fields is not None:
        shadow = world.fields.sample(pos).astype(np.float64)
    else:
        shadow = rng.normal(0.0, sc.environment.shadowing.sigma_db, (n, world.n_rx))
    mean_rx = tx_power[:, None] - loss + shadow
    noise_channel_dbm = world.noise_density_dbm_hz + 10 * np.log10(ch.channel_bandwidth_hz)
    screened = ((mean_rx - noise_channel_dbm) >= ch.detection_snr_db - PRESCREEN_MARGIN_DB).sum(1) >= MIN_HEARD_STORED
    idx = np.flatnonzero(screened)

    fad = sc.environment.fading
    k_db = np.where(mobile[idx], fad.rician_k_db_mobile, fad.rician_k_db_fixed)
    doppler = np.where(mobile[idx], speed[idx] / sc.wavelength_m, fad.fixed_doppler_hz)
    feat_parts: list[np.ndarray] = []
    gain_parts: list[np.ndarray] = []
    iq_kept: list[np.ndarray] = []
    for s in range(0, len(idx), IQ_CHUNK):
        part = slice(s, s + IQ_CHUNK)
        f, g, iq = _synthesise_chunk(
            world, rng, mean_rx[idx[part]], emission[idx[part]], carrier[idx[part]], k_db[part], doppler[part]
        )
        feat_parts.append(f)
        gain_parts.append(g)
        room = max_iq - sum(len(q) for q in iq_kept)
        if room > 0:
            iq_kept.append(iq[_accepted(f, p)][:room])
    feats = np.concatenate(feat_parts) if feat_parts else np.zeros((0, world.n_rx, p.n_features), np.float32)
    window_gain_db = np.concatenate(gain_parts) if gain_parts else np.zeros((0, world.n_rx))
    mask = heard(feats[..., p.snr_index], p)
    ok = _accepted(feats, p)
    sel = idx[ok]
    rx_power = mean_rx[sel] + world.gain_offset_db + window_gain_db[ok]
    out = {
        "features": feats[ok],
        "mask": mask[ok],
        "tx_position_m": pos[sel],
        "tx_power_dbm": tx_power[sel],
        "tx_height_m": tx_height[sel],
        "mobile": mobile[sel],
        "speed_mps": speed[sel],
        "emission": emission[sel],
        "carrier_offset_hz": carrier[sel],
        "path_loss_db": loss[sel].astype(np.float32),
        "shadowing_db": shadow[sel].astype(np.float32),
        "mean_rx_power_dbm": mean_rx[sel].astype(np.float32),
        "rx_power_dbm": rx_power.astype(np.float32),
        "true_snr_db": (mean_rx[sel] + window_gain_db[ok] - noise_channel_dbm).astype(np.float32),
    }
    if max_iq:
        out["iq"] = np.concatenate(iq_kept) if iq_kept else np.zeros((0, world.n_rx, p.window_samples), np.complex64)
    return out


def _accepted(features: np.ndarray, p: FeatureParams) -> np.ndarray:
    """Bool [m]: transmissions whose measured SNR reaches detection at ≥ MIN_HEARD_STORED receivers."""
    return heard(features[..., p.snr_index], p).sum(axis=1) >= MIN_HEARD_STORED


def _synthesise_chunk(
    world: World,
    rng: np.random.Generator,
    mean_rx_dbm: np.ndarray,
    emission: np.ndarray,
    carrier_hz: np.ndarray,
    k_db: np.ndarray,
    doppler_hz: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQ and features of one chunk. Returns (features [m,R,F], window fading gain dB [m,R], iq [m,R,N])."""
    sc, p = world.scenario, world.params
    ch = sc.receiver_chain
    m, n_rx, n_samples = len(emission), world.n_rx, p.window_samples
    s = synthesise(rng, emission, n_samples, ch.sample_rate_hz, carrier_hz)
    amplitude = 10 ** ((mean_rx_dbm + world.gain_offset_db - ch.full_scale_dbm) / 20)
    iq = rician_fading(
        rng, n_rx, n_samples, ch.sample_rate_hz, k_db, doppler_hz, sc.environment.fading.n_paths, amplitude
    )
    iq *= s[:, None, :]
    window_power = np.mean(iq.real**2 + iq.imag**2, axis=-1, dtype=np.float64)
    window_gain_db = 10 * np.log10(window_power / amplitude**2)
    noise_std = np.sqrt(
        10
        ** (
            (world.noise_density_dbm_hz + world.gain_offset_db + 10 * np.log10(ch.sample_rate_hz) - ch.full_scale_dbm)
            / 10
        )
    ).astype(np.float32)
    noise = complex_gaussian(rng, (m, n_rx, n_samples))
    noise *= noise_std[None, :, None]
    iq += noise
    feats = feature_matrix(extract_features(iq, p, ch.full_scale_dbm))
    return feats, window_gain_db, iq
