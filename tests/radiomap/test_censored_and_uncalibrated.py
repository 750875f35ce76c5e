"""The map on power readings: censored readings (present, not heard) and receivers in an uncalibrated scale."""

import dataclasses
import logging

import h5py
import numpy as np
import pytest
import yaml

from heimdall.features import FeatureParams
from heimdall.radiomap.answer_arrays import answers_of
from heimdall.radiomap.fit import Labelled, MapOptions, fit_radio_map, physics_map
from heimdall.scenario.schema import scenario_from_dict

COARSE = MapOptions(spacing_m=2000.0, coarse_factor=2)
SHIFT_DB = 37.0


@pytest.fixture(scope="module")
def split(tiny_store):
    """(scenario, train Labelled, test Labelled) of the tiny simulated store, every receiver present."""
    out = []
    for name in ("train", "test"):
        with h5py.File(tiny_store / f"{name}.h5") as f:
            scenario = scenario_from_dict(yaml.safe_load(f.attrs["scenario_yaml"]))
            params = FeatureParams.from_scenario(scenario)
            out.append(
                Labelled.from_features(
                    f["features"][...], np.ones(f["mask"].shape, bool), params, f["tx_position_m"][...]
                )
            )
    return scenario, *out


@pytest.fixture(scope="module")
def physics(split):
    return physics_map(split[0], COARSE)


def _mass_within(post, centre_m: np.ndarray, radius_m: float) -> float:
    near = np.linalg.norm(post.grid.centres(post.cells) - centre_m, axis=1) <= radius_m
    return float(post.weights[near].sum())


def test_a_censored_receiver_moves_the_posterior_away_from_itself(split, physics):
    """A receiver present but not hearing (its power at or below its floor) says "not near me": the posterior puts
    less mass near it than when it is absent, more than when it is read as a value at its floor, and far from it
    stays favoured; nothing censored gives the same answer as no heard array at all."""
    _, _, test = split
    rx = physics.rx_position_m
    checked = 0
    for i in range(len(test)):
        snr, noise = test.snr_db[i], test.noise_dbm[i]
        # a transmission heard strongly by two receivers, with a third (far from the truth) to censor
        strong = np.flatnonzero(snr >= 15.0)
        far = np.argsort(-np.linalg.norm(rx - test.position_m[i], axis=1))
        r = next((int(k) for k in far if k not in strong), None)
        if len(strong) < 2 or r is None:
            continue
        present = np.ones(len(snr), bool)
        absent = present.copy()
        absent[r] = False
        heard = present.copy()
        heard[r] = False
        floor = noise.copy()
        floor[r] = snr[r] + noise[r] + 3.0  # its floor a little above what it measured: at or below the floor
        without = physics.localize(snr, noise, absent)
        censored = physics.localize(snr, floor, present, heard)
        radius = 30e3
        near_without = _mass_within(without, rx[r], radius)
        near_censored = _mass_within(censored, rx[r], radius)
        assert near_censored <= near_without + 1e-9
        assert np.linalg.norm(censored.mean_m - rx[r]) >= np.linalg.norm(without.mean_m - rx[r]) - 1e3
        if near_without > 0.02:
            assert near_censored < 0.8 * near_without
            checked += 1
        all_heard = physics.localize(snr, noise, present, present)
        plain = physics.localize(snr, noise, present)
        assert np.array_equal(all_heard.weights, plain.weights) and all_heard.log_evidence == plain.log_evidence
        if checked >= 3:
            break
    assert checked >= 3


def test_a_censored_receiver_near_the_transmitter_is_strong_evidence_against_it(physics):
    """Two receivers heard at equal power: the transmitter lies between them, and a third censored receiver on
    one side pushes the posterior to the other."""
    rx = physics.rx_position_m
    n = physics.n_receivers
    snr = np.full(n, np.nan)
    noise = np.full(n, -120.0)
    snr[[0, 2]] = 20.0  # receivers 0 and 2 (west), 3 censored: close to 0
    present = np.zeros(n, bool)
    present[[0, 2]] = True
    base = physics.localize(snr, noise, present)
    with_3 = present.copy()
    with_3[3] = True
    heard = present.copy()
    censored = physics.localize(snr, noise, with_3, heard)
    d_base = np.linalg.norm(base.grid.centres(base.cells) - rx[3], axis=1)
    d_cens = np.linalg.norm(censored.grid.centres(censored.cells) - rx[3], axis=1)
    assert censored.weights @ d_cens > base.weights @ d_base + 2e3
    assert _mass_within(censored, rx[3], 10e3) < 0.5 * _mass_within(base, rx[3], 10e3)


def test_censored_readings_are_not_fitted_as_values(split):
    """The fit reads a censored reading as "not heard", never as a power: rewriting what a censored reading holds
    leaves the fitted offsets as they are."""
    scenario, train, _ = split
    heard = train.snr_db >= 0.0
    a = dataclasses.replace(train, heard=heard)
    junk = np.where(heard, train.noise_dbm, train.noise_dbm - 40.0)
    b = dataclasses.replace(train, noise_dbm=junk, heard=heard)
    ma, mb = (fit_radio_map(scenario, x, options=dataclasses.replace(COARSE, time_budget_s=0.0)) for x in (a, b))
    assert np.allclose(ma.info["offset_db"], mb.info["offset_db"])
    assert np.allclose(ma.info["slope_correction"], mb.info["slope_correction"])


def _shifted(data: Labelled, r: int) -> Labelled:
    noise = data.noise_dbm.copy()
    noise[:, r] += SHIFT_DB
    calibrated = np.ones(data.snr_db.shape[1], bool)
    calibrated[r] = False
    return dataclasses.replace(data, noise_dbm=noise, power_calibrated=calibrated)


@pytest.mark.system  # a long map fit: the second tier
def test_an_uncalibrated_receivers_offset_is_learned_from_labels(split):
    """One receiver's readings 37 dB off in its own scale, flagged uncalibrated: the labelled fit recovers the
    shift within a few dB and the map locates as well as with the receiver calibrated."""
    scenario, train, test = split
    r = 2
    plain = fit_radio_map(scenario, train, options=COARSE)
    shifted = fit_radio_map(scenario, _shifted(train, r), options=COARSE)
    learned = shifted.info["offset_db"][r] - plain.info["offset_db"][r]
    assert learned == pytest.approx(SHIFT_DB, abs=3.0)
    t = _shifted(test, r)
    err = {}
    for name, m, data in (("plain", plain, test), ("shifted", shifted, t)):
        a = answers_of(m, data.snr_db, data.noise_dbm, data.present, test.position_m)
        err[name] = float(np.median(np.linalg.norm(a.mean_m - test.position_m, axis=1)))
    assert err["shifted"] <= 1.15 * err["plain"] + 500.0


def test_an_uncalibrated_receiver_nothing_calibrates_is_left_out(split, physics, caplog):
    """No labels, no recordings to self-calibrate on: the physics cannot place an uncalibrated receiver's readings,
    so the map leaves it out (a warning names it) and answers from the others."""
    scenario, _, test = split
    r = 2
    few = _shifted(test, r).subset(np.arange(10))  # too few to calibrate on: physics only
    with caplog.at_level(logging.WARNING):
        m = fit_radio_map(scenario, unlabelled=few, options=COARSE)
    rid = m.receiver_ids[r]
    assert m.info["left_out"] == [rid] and f"receivers {rid} read power in an uncalibrated scale" in caplog.text
    t = _shifted(test, r)
    i = 0
    present = np.ones(m.n_receivers, bool)
    absent = present.copy()
    absent[r] = False
    a = m.localize(t.snr_db[i], t.noise_dbm[i], present)
    b = physics.localize(test.snr_db[i], test.noise_dbm[i], absent)
    assert np.array_equal(a.weights, b.weights)


def test_censored_readings_carry_most_of_what_the_values_did(split, physics):
    """Over the test set, weak readings (SNR < 0 dB) read as censored at the noise rather than as values lose a
    little accuracy, and locate far better than leaving those receivers out."""
    _, _, test = split
    heard = test.snr_db >= 0.0
    nll = {
        name: -answers_of(
            physics, test.snr_db, test.noise_dbm, present, test.position_m, heard=h
        ).log_density_at_truth.mean()
        for name, present, h in (
            ("values", test.present, None),
            ("censored", test.present, heard),
            ("out", heard, None),
        )
    }
    assert nll["values"] <= nll["censored"] < nll["out"] - 0.3


@pytest.mark.system  # a long map fit: the second tier
def test_self_calibration_learns_an_uncalibrated_receivers_offset(split):
    """No labels: self-calibration on the recordings places the shifted receiver's readings within a few dB where
    it hears (its mean power near it, against the map fitted with the receiver calibrated) and locates about as
    well."""
    scenario, train, test = split
    r = 2
    plain = fit_radio_map(scenario, None, train.unlabelled(), COARSE)
    shifted = fit_radio_map(scenario, None, _shifted(train, r).unlabelled(), COARSE)
    assert shifted.info["kind"] == "self-calibrated" and "left_out" not in shifted.info
    near = np.linalg.norm(plain.grid.centres() - plain.rx_position_m[r], axis=1) < 50e3
    learned = float(np.median(shifted.mean_dbm[near, r] - plain.mean_dbm[near, r]))
    assert learned == pytest.approx(SHIFT_DB, abs=5.0)
    t = _shifted(test, r)
    err = {}
    for name, m, data in (("plain", plain, test), ("shifted", shifted, t)):
        a = answers_of(m, data.snr_db, data.noise_dbm, data.present, test.position_m)
        err[name] = float(np.median(np.linalg.norm(a.mean_m - test.position_m, axis=1)))
    assert err["shifted"] <= 1.15 * err["plain"] + 1_000.0


@pytest.mark.system  # a long map fit: the second tier
def test_self_calibration_with_every_receiver_uncalibrated(split):
    """No labels and no receiver in dBm (every one in its own scale, one of them 37 dB off): self-calibration still
    calibrates (the first posteriors read the receivers as dBm) and locates about as well as with all calibrated."""
    scenario, train, test = split
    r = 2

    def all_uncalibrated(data: Labelled) -> Labelled:
        return dataclasses.replace(_shifted(data, r), power_calibrated=np.zeros(data.snr_db.shape[1], bool))

    plain = fit_radio_map(scenario, None, train.unlabelled(), COARSE)
    shifted = fit_radio_map(scenario, None, all_uncalibrated(train).unlabelled(), COARSE)
    assert shifted.info["kind"] == "self-calibrated" and "left_out" not in shifted.info
    t = all_uncalibrated(test)
    err = {}
    for name, m, data in (("plain", plain, test), ("shifted", shifted, t)):
        a = answers_of(m, data.snr_db, data.noise_dbm, data.present, test.position_m)
        err[name] = float(np.median(np.linalg.norm(a.mean_m - test.position_m, axis=1)))
    assert err["shifted"] <= 1.15 * err["plain"] + 1_000.0
