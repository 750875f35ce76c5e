"""A simulated twin of an imported store: a scenario with the store's receivers, channel and recording chain,
calibrated from what its recordings measured (`heimdall simulate --like STORE`).

* Receivers, channel, feature settings and detection rule: the store's scenario (the store's feature parameters
  must be the scenario's).
* Noise: each receiver's noise figure is set so that the simulated noise density is the median the receiver
  measured (features' noise column) over the store's recordings (splits RECORDING_SPLITS).
* Propagation, when the training split holds at least MIN_LABELLED labels: the path-loss shape, per-receiver
  offsets and one common slope correction of heimdall.radiomap.fit.fit_propagation (transmit power unknown),
  the shadowing σ scaled to the fit's residual less the fading; corrected once so that the same fit on the twin's
  own transmissions gives the store's values (`_calibrate`). The offsets become receivers' gain offsets; their
  common part (which the unknown powers cannot tell from the offsets) shifts the transmit power range instead, so
  gain offsets and noise figures stay in their physical ranges. Without labels: the scenario's physics.

Everything else (area, transmitters, fading, emissions) is the scenario's. The report records the source store
(path, sha256 of its files), the measured and fitted values, and what the twin was made of.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.datasets.generate import dataset_fingerprint
from heimdall.datasets.loader import StoreDataset
from heimdall.datasets.store import split_files
from heimdall.errors import DatasetError
from heimdall.features import FeatureParams
from heimdall.radiomap.fit import MIN_LABELLED, Labelled, MapOptions, ShapeFit, fit_propagation
from heimdall.scenario.domain import Scenario, ShadowingComponent
from heimdall.scenario.schema import scenario_from_text
from heimdall.sim.generator import build_world, simulate_block
from heimdall.sim.noise import THERMAL_NOISE_DBM_HZ

RECORDING_SPLITS = ("train", "val", "unlabelled")  # the test split is left for evaluation
LABEL_SPLIT = "train"
CALIBRATION_ROUNDS = 2
SIMULATED_BLOCK = 1024  # candidate transmissions per block of the twin's own labels
SIMULATED_BLOCKS_MAX = 16
SIMULATED_LABELS_MIN = 2000  # the bias check needs its own fit to be precise, however few labels the store has
RECEIVER_TOLERANCE_M = 1.0


@dataclass(frozen=True)
class Twin:
    """The twin's scenario (validated like any scenario file) and its JSON-ready calibration report."""

    scenario: Scenario
    report: dict[str, Any]


def build_twin(store: str | Path, given: Scenario | None = None, options: MapOptions | None = None) -> Twin:
    """The twin of `store` (module docstring). `given`: a scenario to take the physics from instead of the store's;
    its receivers, channel and feature settings must be the store's. DatasetError naming the store and what is
    missing or in conflict; ScenarioError when the calibrated values leave a scenario's ranges."""
    store = Path(store)
    if not store.is_dir():
        raise DatasetError(f"{store}: not a store folder")
    files = {s: split_files(store, s) for s in RECORDING_SPLITS}
    used = [f for s in RECORDING_SPLITS for f in files[s]]
    if not used:
        raise DatasetError(
            f"{store}: no recordings to take a twin of (no {', '.join(s + '.h5' for s in RECORDING_SPLITS)}; "
            "the test split is left for evaluation)"
        )
    recordings = StoreDataset(used)
    if len(recordings) == 0:
        raise DatasetError(f"{store}: its {', '.join(f.name for f in used)} hold no transmissions")
    scenario = _store_scenario(recordings, used[0])
    params = recordings.meta.params
    if FeatureParams.from_scenario(scenario) != params:
        raise DatasetError(f"{used[0]}: attribute feature_params differs from its scenario's receiver chain")
    if given is not None:
        _check_same_network(given, scenario, store)
        scenario = given
    arrays = recordings.read_split()
    noise_dbm_hz = _median_noise(arrays.features[..., params.noise_index], arrays.present > 0)
    labelled = _labels(files[LABEL_SPLIT], params)
    if labelled is not None and len(labelled) >= MIN_LABELLED:
        twin, calibration = _calibrate(scenario, noise_dbm_hz, labelled, options or MapOptions())
        labels_used = len(labelled)
    else:
        twin, shift_db = _with_propagation(scenario, noise_dbm_hz, None)
        labels_used = 0
        calibration = {
            "how": f"no propagation fit ({0 if labelled is None else len(labelled)} labels in {LABEL_SPLIT}, at "
            f"least {MIN_LABELLED} needed): the scenario's physics with the measured noise",
            "power_shift_db": shift_db,
            "propagation": {"fitted": False},
        }
    fingerprint = dataset_fingerprint(used)
    twin = dataclasses.replace(
        twin,
        name=f"{scenario.name}-twin",
        description=f"simulated twin of the store {store.resolve().name} (sha256 {fingerprint} over "
        f"{', '.join(f.name for f in used)}); {calibration['how']}",
    )
    twin = scenario_from_text(twin.to_yaml(), f"the twin of {store}")
    heard = arrays.heard.mean(0)
    report = {
        "source": {
            "store": store.resolve().name,
            "store_sha256": fingerprint,
            "store_files": [f.name for f in used],
            "scenario": scenario.name,
            "scenario_sha256": scenario.sha256,
            "transmissions": len(recordings),
            "labels_used": labels_used,
        },
        "twin_scenario": twin.name,
        "twin_scenario_sha256": twin.sha256,
        "detection_snr_db": params.detection_snr_db,
        **calibration,
        "receivers": [
            {
                "id": r.id,
                "measured_noise_dbm_hz": None if np.isnan(noise_dbm_hz[k]) else float(noise_dbm_hz[k]),
                "heard_fraction": float(heard[k]),
                "noise_figure_db": r.noise_figure_db,
                "gain_offset_db": r.gain_offset_db,
            }
            for k, r in enumerate(twin.receivers)
        ],
    }
    return Twin(twin, report)


def _store_scenario(recordings: StoreDataset, first: Path) -> Scenario:
    if not recordings.meta.scenario_yaml:
        raise DatasetError(
            f"{first}: no scenario_yaml attribute; a twin needs the store's scenario (import with --scenario, or "
            "without it to build one from the recordings)"
        )
    scenario = scenario_from_text(recordings.meta.scenario_yaml, f"{first}: attribute scenario_yaml")
    if [r.id for r in scenario.receivers] != list(recordings.meta.receivers["id"]):
        raise DatasetError(f"{first}: the receivers of attribute scenario_yaml differ from the receiver table")
    return scenario


def _check_same_network(given: Scenario, scenario: Scenario, store: Path) -> None:
    """Refuse a scenario whose receivers (ids, order, places, heights), channel or feature settings are not the
    store's, naming what differs."""
    differ = []
    ids, expected = [r.id for r in given.receivers], [r.id for r in scenario.receivers]
    if ids != expected:
        differ.append(f"receivers {ids} (the store has {expected})")
    else:
        moved = np.linalg.norm(given.receiver_positions_m() - scenario.receiver_positions_m(), axis=-1)
        differ += [
            f"receiver {i} is {d:.0f} m away" for i, d in zip(ids, moved, strict=True) if d > RECEIVER_TOLERANCE_M
        ]
        differ += [
            f"receiver {a.id} antenna_height_m {a.antenna_height_m:g} (the store's {b.antenna_height_m:g})"
            for a, b in zip(given.receivers, scenario.receivers, strict=True)
            if a.antenna_height_m != b.antenna_height_m
        ]
    if given.frequency_hz != scenario.frequency_hz:
        differ.append(f"frequency_hz {given.frequency_hz:g} (the store's {scenario.frequency_hz:g})")
    mine, theirs = FeatureParams.from_scenario(given), FeatureParams.from_scenario(scenario)
    differ += [
        f"{f.name} {getattr(mine, f.name)} (the store's {getattr(theirs, f.name)})"
        for f in dataclasses.fields(FeatureParams)
        if getattr(mine, f.name) != getattr(theirs, f.name)
    ]
    if differ:
        raise DatasetError(
            f"--scenario {given.name}: not the network of {store} ({'; '.join(differ)}); leave --scenario out to "
            "use the store's"
        )


def _median_noise(noise_dbm_hz: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Float [R]: the median noise density each receiver measured over its recordings (NaN: it recorded none)."""
    values = np.where(present & np.isfinite(noise_dbm_hz), noise_dbm_hz, np.nan)
    out = np.full(values.shape[1], np.nan)
    some = ~np.all(np.isnan(values), axis=0)
    out[some] = np.nanmedian(values[:, some], axis=0)
    return out


def _labels(files: list[Path], params: FeatureParams) -> Labelled | None:
    """The labelled transmissions of the training split (None: no training split)."""
    if not files:
        return None
    arrays = StoreDataset(files).read_split()
    rows = np.all(np.isfinite(arrays.target_m), axis=1)
    return Labelled.from_features(arrays.features[rows], arrays.present[rows] > 0, params, arrays.target_m[rows])


@dataclass(frozen=True)
class _Propagation:
    """What the twin simulates beyond the scenario's physics: the shape, gains, slope and shadowing σ."""

    shape: str
    gain_db: np.ndarray  # float [R]
    slope_db_per_decade: float
    sigma_db: float


def _calibrate(
    scenario: Scenario, noise_dbm_hz: np.ndarray, labelled: Labelled, options: MapOptions
) -> tuple[Scenario, dict[str, Any]]:
    """The scenario with the measured noise and the propagation fitted on `labelled`, and what was set.

    The fit sees the recordings through the detection threshold, the fading and transmitter heights it does not
    model, so its values are not the simulator's: a first twin takes them as they are; then, CALIBRATION_ROUNDS
    times, the same fit on a block of the twin's own transmissions shows how far its values come out from the
    store's, and the twin is moved by that difference, so the fit gives (nearly) the same values on the twin as on
    the store.
    """
    source, base = fit_propagation(scenario, labelled, options)
    fading_mean_db = float(base.info["fading_mean_db"])
    first = _Propagation(
        source.shape,
        source.offset_db - fading_mean_db,
        10.0 * float(source.slope_correction[0]),
        float(np.sqrt(max(source.rms_db**2 - base.fading_var_db2, 0.0))),
    )
    current, history = first, []
    for _ in range(CALIBRATION_ROUNDS):
        twin, _ = _with_propagation(scenario, noise_dbm_hz, current)
        again, _ = fit_propagation(
            scenario, _simulated_labels(twin, len(labelled), options.seed), options, (source.shape,)
        )
        history.append(_fit_values(again))
        current = _Propagation(
            source.shape,
            current.gain_db + source.offset_db - again.offset_db,
            current.slope_db_per_decade + 10.0 * float(source.slope_correction[0] - again.slope_correction[0]),
            float(np.sqrt(max(current.sigma_db**2 + source.rms_db**2 - again.rms_db**2, 0.0))),
        )
    twin, shift_db = _with_propagation(scenario, noise_dbm_hz, current)
    how = (
        f"propagation fitted on {len(labelled)} labels of {LABEL_SPLIT} ({source.shape} shape, slope "
        f"{current.slope_db_per_decade:+.2f} dB/decade, shadowing σ {current.sigma_db:.1f} dB)"
    )
    return twin, {
        "how": how,
        "power_shift_db": shift_db,
        "propagation": {
            "fitted": True,
            "shape": source.shape,
            "path_loss_model": twin.environment.path_loss.model,
            "slope_correction_db_per_decade": current.slope_db_per_decade,
            "shadowing_sigma_db": current.sigma_db,
            "fit_on_store": _fit_values(source),
            "fit_on_twins": history,
        },
    }


def _fit_values(fit: ShapeFit) -> dict[str, Any]:
    return {
        "offset_db": fit.offset_db.tolist(),
        "slope_correction_db_per_decade": 10.0 * float(fit.slope_correction[0]),
        "residual_rms_db": fit.rms_db,
    }


def _simulated_labels(scenario: Scenario, n: int, seed: int) -> Labelled:
    """At least `n` (at most SIMULATED_LABELS_MAX) transmissions simulated from `scenario`, labelled."""
    world = build_world(scenario)
    rng = np.random.default_rng(seed)
    blocks, accepted = [], 0
    for _ in range(SIMULATED_BLOCKS_MAX):
        blocks.append(simulate_block(world, rng, SIMULATED_BLOCK))
        accepted += len(blocks[-1]["features"])
        if accepted >= max(n, SIMULATED_LABELS_MIN):
            break
    features = np.concatenate([b["features"] for b in blocks])
    position_m = np.concatenate([b["tx_position_m"] for b in blocks])
    return Labelled.from_features(features, np.ones(features.shape[:2], bool), world.params, position_m)


def _with_propagation(scenario: Scenario, noise_dbm_hz: np.ndarray, p: _Propagation | None) -> tuple[Scenario, float]:
    """The scenario with receivers whose simulated noise density is the measured one, and the propagation `p` (None:
    the scenario's own); and the transmit power shift (dB) that took the gains' common part."""
    env = scenario.environment
    gain_db = np.zeros(len(scenario.receivers)) if p is None else p.gain_db
    path_loss, shadowing = env.path_loss, env.shadowing
    if p is not None:
        if p.shape == "scenario":
            correction = env.path_loss.slope_correction_db_per_decade + p.slope_db_per_decade
            path_loss = dataclasses.replace(env.path_loss, slope_correction_db_per_decade=correction)
        else:
            path_loss = dataclasses.replace(
                env.path_loss, model="log_distance", slope_correction_db_per_decade=p.slope_db_per_decade
            )
        scale = p.sigma_db / env.shadowing.sigma_db if env.shadowing.sigma_db > 0 else 0.0
        components = tuple(ShadowingComponent(c.sigma_db * scale, c.correlation_m) for c in env.shadowing.components)
        shadowing = dataclasses.replace(env.shadowing, components=components)
    nominal = np.array([THERMAL_NOISE_DBM_HZ + r.noise_figure_db for r in scenario.receivers])
    excess_db = np.where(np.isnan(noise_dbm_hz), nominal, noise_dbm_hz) - THERMAL_NOISE_DBM_HZ
    # The unknown transmit powers cannot tell a gain common to all receivers from a power shift: the common part
    # moves the power range instead, enough that no noise figure is negative.
    shift_db = max(float(np.mean(gain_db)), float(np.max(gain_db - excess_db)))
    receivers = tuple(
        dataclasses.replace(
            r, noise_figure_db=round(float(e - g + shift_db), 3), gain_offset_db=round(float(g - shift_db), 3)
        )
        for r, e, g in zip(scenario.receivers, excess_db, gain_db, strict=True)
    )
    lo, hi = scenario.transmitter.power_dbm
    twin = dataclasses.replace(
        scenario,
        receivers=receivers,
        transmitter=dataclasses.replace(scenario.transmitter, power_dbm=(lo + shift_db, hi + shift_db)),
        environment=dataclasses.replace(env, path_loss=path_loss, shadowing=shadowing),
    )
    return twin, shift_db
