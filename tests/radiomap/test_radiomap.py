"""The radio-map localizer: noise model, likelihood, grid posterior, fitting, the oracle, the ONNX container."""

import dataclasses

import h5py
import numpy as np
import pytest
import yaml

from heimdall.baselines import weighted_centroid
from heimdall.features import FeatureParams, extract_features
from heimdall.radiomap.answer_arrays import answers_of
from heimdall.radiomap.fading_kernel import FadingKernel
from heimdall.radiomap.fit import (
    PHYSICS_MODEL_SD_DB,
    SPREAD_BISECTIONS,
    Labelled,
    MapOptions,
    Measured,
    fit_radio_map,
    physics_map,
)
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.likelihood import build_table
from heimdall.radiomap.measurement_noise import power_noise_for
from heimdall.scenario.schema import scenario_from_dict
from heimdall.sim.noise import complex_gaussian

COARSE = MapOptions(spacing_m=2000.0, coarse_factor=2)


@pytest.fixture(scope="module")
def split(tiny_store):
    """(scenario, params, train Labelled, test Labelled) of the tiny simulated store."""
    with h5py.File(tiny_store / "train.h5") as f:
        scenario = scenario_from_dict(yaml.safe_load(f.attrs["scenario_yaml"]))
        params = FeatureParams.from_scenario(scenario)
        train = Labelled.from_features(
            f["features"][...], np.ones(f["mask"].shape, bool), params, f["tx_position_m"][...]
        )
    with h5py.File(tiny_store / "test.h5") as f:
        test = Labelled.from_features(
            f["features"][...], np.ones(f["mask"].shape, bool), params, f["tx_position_m"][...]
        )
        mask = f["mask"][...]
    return scenario, params, train, test, mask


@pytest.fixture(scope="module")
def physics(split):
    return physics_map(split[0], COARSE)


def test_power_noise_predicts_the_extractor_spread(nw_italy):
    """The spread PowerNoise claims for the measured SNR matches fresh extractor runs on a carrier in noise."""
    p = FeatureParams.from_scenario(nw_italy)
    model = power_noise_for(p, seed=1)
    rng = np.random.default_rng(7)
    n = np.arange(p.window_samples) / p.sample_rate_hz
    for t in (0.3, 1.0, 10.0):
        noise = complex_gaussian(rng, (3000, p.window_samples)) * np.float32(
            np.sqrt(p.sample_rate_hz / p.channel_bandwidth_hz)
        )
        carrier = np.exp(2j * np.pi * (rng.uniform(-3e3, 3e3, (3000, 1)) * n + rng.random((3000, 1))))
        u = 10 ** (extract_features((carrier * np.sqrt(t)).astype(np.complex64) + noise, p, 0.0).snr_db / 10)
        assert np.std(u) == pytest.approx(model.sd(t), rel=0.2)
        assert np.mean(u) == pytest.approx(t, rel=0.05)


def test_likelihood_is_sharp_above_the_noise_and_soft_below(nw_italy):
    """A strong measurement pins the expected level near it; one at the floor only says 'weak', and a power
    measured at 2 dB SNR still rules out levels far from it (no hard censoring)."""
    p = FeatureParams.from_scenario(nw_italy)
    noise = power_noise_for(p)
    table = build_table(noise, [FadingKernel.gaussian(3.0)], spread_levels_db=(0.0,))
    delta = table.delta_start_db + 0.25 * np.arange(table.values.shape[-1])
    rows, _ = table.rows(np.array([25.0, 2.0, -30.0]))
    strong, weak, floor = (table.values[0, 0, r] for r in rows)
    assert abs(delta[np.argmax(strong)]) <= 0.5  # Δ = z − u: peaks where the level equals the measurement
    assert strong[np.searchsorted(delta, 12.0)] < strong.max() - 5  # 12 dB off: 4σ of fading, much less likely
    assert weak[np.searchsorted(delta, 15.0)] < weak.max() - 5 and weak[np.searchsorted(delta, -15.0)] < weak.max() - 3
    lvl = floor[np.searchsorted(delta, [-40.0, 0.0, 20.0, 40.0])]
    assert lvl[0] > lvl[1] > lvl[2] > lvl[3] - 1e-6  # the floor says "weaker is likelier", monotonically
    assert np.isfinite(table.values).all()


def test_posterior_summaries_are_consistent(split, physics):
    scenario, params, _, test, _ = split
    post = physics.localize(test.snr_db[0], test.noise_dbm[0], test.present[0])
    assert post.weights.sum() == pytest.approx(1.0) and (post.weights >= 0).all()
    assert np.all(np.linalg.eigvalsh(post.cov_m2) > 0)
    modes = post.modes(0.95)
    assert 1 <= len(modes) and sum(m.mass for m in modes) <= 1.0 + 1e-9
    assert np.allclose(sorted([m.mass for m in modes], reverse=True), [m.mass for m in modes])
    assert post.in_hpd(post.map_m[None], 0.5)[0] and post.in_hpd(post.map_m[None], 0.95)[0]
    region = post.region(0.95)
    from matplotlib.path import Path as PolyPath

    assert any(PolyPath(poly[0]).contains_point(post.map_m) for poly in region)
    far = post.mean_m + 10 * np.sqrt(np.trace(post.cov_m2))
    assert not post.in_hpd(far[None], 0.95)[0]


def test_the_mass_held_at_a_point_says_which_hpd_regions_hold_it(split, physics):
    """A point lies in the HPD region of probability q exactly when q exceeds the mass of the cells heavier than
    its own (ties included: a posterior a few cells wide, where whole cells decide)."""
    _, _, _, test, _ = split
    rng = np.random.default_rng(4)
    for i, exponent in ((0, 1.0), (1, 1.0), (2, 6.0)):  # exponent 6: a posterior a few cells wide
        post = physics.localize(test.snr_db[i], test.noise_dbm[i], test.present[i]).tempered(exponent)
        spread_m = np.sqrt(np.trace(post.cov_m2))
        points = post.mean_m + rng.normal(0.0, spread_m, (80, 2))
        held = post.hpd_mass_at(points)
        finite = np.isfinite(held)
        assert finite.sum() > 40 and (held[finite] >= 0).all() and (held[finite] < 1.0).all()
        assert post.hpd_mass_at(post.map_m[None])[0] == 0.0  # the most probable cell: in every region
        distinct = np.unique(held[finite])
        for q in ((distinct[:-1] + distinct[1:]) / 2)[::3]:  # between two points' masses: one side holds, not the other
            np.testing.assert_array_equal(post.in_hpd(points, float(q)), held < q)
    far = post.mean_m + 1000 * spread_m
    assert post.hpd_mass_at(far[None])[0] == np.inf  # no region holds a point where the posterior holds nothing


def test_regions_drawn_at_recalibrated_masses_hold_their_share_of_the_truths():
    """A posterior whose 50 % regions hold the truth 80 % of the time: its 50 % region is drawn at the smaller mass
    that holds half of the validation truths; the widest keeps its own (the temperature calibrates it)."""
    from heimdall.radiomap.hybrid import Weights, recalibrated_masses

    rng = np.random.default_rng(5)
    held = np.concatenate([rng.uniform(0, 1, 400) ** 2.3, [np.inf] * 10])  # P(held < 0.5) = 0.5^(1/2.3) ≈ 0.74
    masses, (coverage50,) = recalibrated_masses(held)
    assert masses[1] == 0.95 and 0.15 < masses[0] < 0.35
    assert np.sum(held < masses[0]) == np.ceil(0.5 * len(held))  # the smallest mass holding half
    assert abs(coverage50 - 0.5) < 0.06  # out of sample, by halves
    tied = np.repeat([0.0, 0.1, 0.3, 0.6], 50)  # posteriors a few cells wide: held masses come in few values
    masses, (coverage50,) = recalibrated_masses(tied)
    assert np.mean(tied < masses[0]) == 0.5 and coverage50 == 0.5
    assert Weights(1.0, 0.0, masses).masses() == {0.5: masses[0], 0.95: 0.95}
    for wrong in ((0.6, 0.5), (0.5,), (0.0, 0.95), (0.5, 1.2)):
        with pytest.raises(ValueError, match="region masses"):
            Weights(1.0, 0.0, wrong)


def test_a_tempered_answer_draws_its_regions_at_the_masses_it_is_given(split, physics):
    from heimdall.radiomap.posterior import TemperedPosterior

    _, _, _, test, _ = split
    post = physics.localize(test.snr_db[1], test.noise_dbm[1], test.present[1])
    answer = TemperedPosterior(post, 0.5, {0.5: 0.2, 0.95: 0.95})
    plain = TemperedPosterior(post, 0.5)
    assert answer.hpd_area_km2(0.5) == plain.spread.hpd_area_km2(0.2) < plain.hpd_area_km2(0.5)
    assert answer.hpd_area_km2(0.95) == plain.hpd_area_km2(0.95)
    drawn = answer.regions((0.5, 0.95))
    assert set(drawn) == {0.5, 0.95}
    assert [len(p) for p in drawn[0.5]] == [len(p) for p in plain.spread.region(0.2)]
    points = post.mean_m + np.random.default_rng(6).normal(0, np.sqrt(np.trace(post.cov_m2)), (40, 2))
    np.testing.assert_array_equal(answer.in_hpd(points, 0.5), plain.spread.in_hpd(points, 0.2))
    assert answer.modes(0.95) == plain.modes(0.95) and answer.mean_m is plain.mean_m


def test_physics_map_beats_the_centroid_and_its_regions_hold_the_truth(split, physics):
    scenario, params, _, test, mask = split
    a = answers_of(physics, test.snr_db, test.noise_dbm, test.present, test.position_m)
    err = np.linalg.norm(a.mean_m - test.position_m, axis=1)
    wc = weighted_centroid(test.power_dbm, mask, physics.rx_position_m)
    assert np.median(err) < 0.7 * np.median(np.linalg.norm(wc - test.position_m, axis=1))
    assert 0.85 <= a.in_hpd95.mean() <= 1.0
    assert 0.35 <= a.in_hpd50.mean() <= 0.7


def test_labels_improve_the_map(split, physics):
    scenario, params, train, test, _ = split
    events = []
    fitted = fit_radio_map(scenario, train, options=COARSE, on_progress=lambda *e: events.append(e))
    assert fitted.n_labels == len(train) and fitted.info["kind"] == "fitted"
    assert all("sigma_db" in f for f in fitted.info["fields"].values())
    assert "time_budget" not in fitted.info  # no budget, nothing cut
    steps = 2 * fitted.n_receivers  # each receiver's field, two passes
    assert [e for e in events if e[0] == "field"] == [("field", k, steps) for k in range(1, steps + 1)]
    nll = {}
    for name, m in (("physics", physics), ("fitted", fitted)):
        a = answers_of(m, test.snr_db, test.noise_dbm, test.present, test.position_m)
        nll[name] = -a.log_density_at_truth.mean()
    assert nll["fitted"] < nll["physics"]


def test_too_few_labels_warn_and_leave_the_physics(split, caplog):
    scenario, _, train, _, _ = split
    few = Labelled(train.snr_db[:5], train.noise_dbm[:5], train.present[:5], train.position_m[:5])
    m = fit_radio_map(scenario, few, options=COARSE)
    assert m.info["kind"] == "physics" and m.n_labels == 0
    assert "5 labelled transmissions are too few" in caplog.text


@pytest.fixture(scope="module")
def hata_store(nw_italy, tmp_path_factory):
    """nw-italy simulated with Okumura-Hata (suburban) path loss: physics the scenario's map does not assume."""
    from heimdall.datasets.generate import generate_dataset
    from heimdall.datasets.spec import DatasetSpec

    pl = dataclasses.replace(nw_italy.environment.path_loss, model="okumura_hata", hata_environment="suburban")
    hata = dataclasses.replace(nw_italy, environment=dataclasses.replace(nw_italy.environment, path_loss=pl))
    out = tmp_path_factory.mktemp("hata")
    generate_dataset(hata, out, DatasetSpec(n_transmissions=1500, seed=5, iq_per_split=0))
    return out


def test_unlabelled_recordings_calibrate_a_wrong_physics(nw_italy, hata_store):
    """Data made with Okumura-Hata, a map that assumes the two-ray model: without a single label,
    self-calibration on the recordings raises the evidence, the accuracy and the regions' coverage."""
    p = FeatureParams.from_scenario(nw_italy)
    with h5py.File(hata_store / "train.h5") as f:
        unlabelled = Measured.from_features(f["features"][...], np.ones(f["mask"].shape, bool), p)
    with h5py.File(hata_store / "test.h5") as f:
        test = Labelled.from_features(f["features"][...], np.ones(f["mask"].shape, bool), p, f["tx_position_m"][...])
    base = physics_map(nw_italy, COARSE)
    events = []
    calibrated = fit_radio_map(nw_italy, unlabelled=unlabelled, options=COARSE, on_progress=lambda *e: events.append(e))
    assert calibrated.info["kind"] == "self-calibrated"
    calibrate = [e for e in events if e[0] == "calibrate"]
    assert len(calibrate) >= 10 and calibrate[-1][1] == calibrate[-1][2]  # often enough for a bar, and finished
    assert [e for e in events if e[0] == "spread"][-1] == ("spread", SPREAD_BISECTIONS, SPREAD_BISECTIONS)
    history = calibrated.info["calibration"]
    assert max(h["mean_log_evidence"] for h in history) > history[0]["mean_log_evidence"]
    a0 = answers_of(base, test.snr_db, test.noise_dbm, test.present, test.position_m)
    a1 = answers_of(calibrated, test.snr_db, test.noise_dbm, test.present, test.position_m)
    assert -a1.log_density_at_truth.mean() < -a0.log_density_at_truth.mean()
    err = [np.median(np.linalg.norm(a.mean_m - test.position_m, axis=1)) for a in (a0, a1)]
    assert err[1] < err[0]
    assert a0.in_hpd95.mean() < 0.6 and a1.in_hpd95.mean() >= 0.85


def test_a_spent_time_budget_still_gives_a_complete_map_and_says_what_it_cut(split, physics, caplog):
    """A budget spent before the fields: no first pass, the scenario's shadowing as every field's
    hyper-parameters (not fitted), yet every receiver's field is kriged from the labels — a complete map that
    still beats the physics — and a warning and the map's info say what was cut."""
    from heimdall.radiomap.field import FieldHyper

    scenario, _, train, test, _ = split
    m = fit_radio_map(scenario, train, options=dataclasses.replace(COARSE, time_budget_s=0.0))
    assert m.info["kind"] == "fitted" and m.info["time_budget"]["budget_s"] == 0.0
    cut = m.info["time_budget"]["cut"]
    assert sum("first field pass skipped" in c for c in cut) == m.n_receivers
    assert sum("not refitted (scenario's kept)" in c for c in cut) == m.n_receivers
    assert "time budget of 0 s ran out" in caplog.text
    shadowing = scenario.environment.shadowing.components
    scenario_hyper = FieldHyper.initial([(c.sigma_db, c.correlation_m) for c in shadowing])
    assert all(f["sigma_db"] == list(scenario_hyper.sigma_db) for f in m.info["fields"].values())
    assert len(m.info["fields"]) == m.n_receivers
    nll = {
        name: -answers_of(x, test.snr_db, test.noise_dbm, test.present, test.position_m).log_density_at_truth.mean()
        for name, x in (("physics", physics), ("budget", m))
    }
    assert nll["budget"] < nll["physics"]


def test_self_calibration_past_its_budget_keeps_the_physics_and_calibrates_its_spread(nw_italy, hata_store, caplog):
    p = FeatureParams.from_scenario(nw_italy)
    with h5py.File(hata_store / "train.h5") as f:
        unlabelled = Measured.from_features(f["features"][...], np.ones(f["mask"].shape, bool), p)
    m = fit_radio_map(nw_italy, unlabelled=unlabelled, options=dataclasses.replace(COARSE, time_budget_s=0.0))
    assert m.info["calibration"] == [] and m.info["kind"] == "physics"
    assert m.info["time_budget"]["cut"] == [
        "self-calibration stopped before round 0 of shape scenario",
        "self-calibration stopped before round 0 of shape log_distance",
    ]
    assert "time budget of 0 s ran out" in caplog.text
    assert np.all(m.spread_db == np.float32(m.info["spread_db"]))  # the spread is calibrated all the same
    assert m.info["spread_db"] != np.hypot(nw_italy.environment.shadowing.sigma_db, PHYSICS_MODEL_SD_DB)


@pytest.mark.system  # the oracle on 16 height bins, long: the second tier
def test_oracle_is_a_floor(split, physics, tiny_store):
    from heimdall.radiomap.oracle import oracle_answers

    scenario, params, train, test, _ = split
    with h5py.File(tiny_store / "test.h5") as f:
        gains, heights = f["oracle/gain_offset_db"][...], f["oracle/tx_height_m"][...]
    oracle = oracle_answers(
        scenario, gains, heights, test.snr_db, test.noise_dbm, test.present, test.position_m, COARSE.spacing_m
    )
    fitted = answers_of(
        fit_radio_map(scenario, train, options=COARSE), test.snr_db, test.noise_dbm, test.present, test.position_m
    )
    phys = answers_of(physics, test.snr_db, test.noise_dbm, test.present, test.position_m)
    assert -oracle.log_density_at_truth.mean() < -fitted.log_density_at_truth.mean() < -phys.log_density_at_truth.mean()
    finest = int(np.argmin([c.correlation_m for c in scenario.environment.shadowing.components]))
    partial = oracle_answers(
        scenario, gains, heights, test.snr_db, test.noise_dbm, test.present, test.position_m, COARSE.spacing_m,
        hidden=(finest,),
    )  # fmt: skip
    assert -oracle.log_density_at_truth.mean() < -partial.log_density_at_truth.mean()
    assert partial.in_hpd95.mean() >= 0.85  # the hidden component's σ is in its spread: still calibrated
    # not told the heights (marginalised over the bins like the power): still a floor, its regions as the told one's
    # (on this 2 km grid both hold the truth ~83 % of the time)
    marginal = oracle_answers(
        scenario, gains, heights, test.snr_db, test.noise_dbm, test.present, test.position_m, COARSE.spacing_m,
        height_known=False,
    )  # fmt: skip
    assert -marginal.log_density_at_truth.mean() < -fitted.log_density_at_truth.mean()
    assert abs(marginal.in_hpd95.mean() - oracle.in_hpd95.mean()) <= 0.05
    with pytest.raises(ValueError, match="hidden shadowing components"):
        oracle_answers(
            scenario, gains, heights, test.snr_db, test.noise_dbm, test.present, test.position_m, COARSE.spacing_m,
            hidden=(7,),
        )  # fmt: skip


@pytest.mark.system  # the oracle on 16 height bins, long: the second tier
def test_oracle_with_fields_known_only_at_labels(split, tiny_store):
    """The fields kriged from their exact values: at every cell they are the true maps; from the training labels
    a floor between the oracle and three labels' worth of knowledge, its kriging variance in the spread, that the
    map fitted on those labels does not beat."""
    from heimdall.radiomap.oracle import oracle_answers, oracle_maps

    scenario, _, train, test, _ = split
    with h5py.File(tiny_store / "test.h5") as f:
        gains, heights = f["oracle/gain_offset_db"][...], f["oracle/tx_height_m"][...]
    exact = oracle_maps(scenario, gains, COARSE.spacing_m)
    everywhere = oracle_maps(scenario, gains, COARSE.spacing_m, known_at_m=exact[0].grid.centres())
    np.testing.assert_allclose(everywhere[3].mean_dbm, exact[3].mean_dbm, atol=0.05)
    np.testing.assert_allclose(everywhere[3].spread_db, exact[3].spread_db, atol=0.15)
    three = oracle_maps(scenario, gains, COARSE.spacing_m, known_at_m=train.position_m[:3])
    field_sd_db = np.sqrt(sum(c.sigma_db**2 for c in scenario.environment.shadowing.components))
    grid = exact[0].grid
    far = np.argmax(np.min(np.linalg.norm(grid.centres()[:, None] - train.position_m[None, :3], axis=-1), 1))
    # the spread without the field: across the height bin and across the cell (of each map's own mean)
    base_var = (
        exact[3].spread_db.astype(float) ** 2
        - grid.within_cell_sd_db(exact[3].mean_dbm) ** 2
        + grid.within_cell_sd_db(three[3].mean_dbm) ** 2
    )
    np.testing.assert_allclose(three[3].spread_db[far], np.sqrt(base_var[far] + field_sd_db**2), rtol=0.03)

    def nll(known_at_m=None):
        a = oracle_answers(
            scenario, gains, heights, test.snr_db, test.noise_dbm, test.present, test.position_m, COARSE.spacing_m,
            known_at_m=known_at_m,
        )  # fmt: skip
        return -a.log_density_at_truth.mean()

    floor = nll(train.position_m)
    assert nll() < floor < nll(train.position_m[:3])
    # a map learned from those labels (measured through fading, powers unknown) does not beat their floor
    fitted = answers_of(
        fit_radio_map(scenario, train, options=COARSE), test.snr_db, test.noise_dbm, test.present, test.position_m
    )
    assert -fitted.log_density_at_truth.mean() > floor


def test_onnx_container_round_trip(split, physics):
    import onnx
    import onnxruntime as ort

    from heimdall.radiomap.io import RadioMapFormatError, from_onnx, has_map, to_onnx

    scenario, params, _, test, _ = split
    model = to_onnx(physics, {"format": "heimdall-radiomap/1"})
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    ort.InferenceSession(data, providers=["CPUExecutionProvider"])  # a loadable model on its own
    back = from_onnx(onnx.load_from_string(data))
    assert has_map(model) and back.grid == physics.grid and back.receiver_ids == physics.receiver_ids
    for i in range(3):
        a = physics.localize(test.snr_db[i], test.noise_dbm[i], test.present[i])
        b = back.localize(test.snr_db[i], test.noise_dbm[i], test.present[i])
        assert np.array_equal(a.mean_m, b.mean_m)
    broken = onnx.load_from_string(data)
    broken.graph.initializer[0].dims[0] = 3  # a tensor whose shape no longer fits the grid
    broken.graph.initializer[0].raw_data = broken.graph.initializer[0].raw_data[: 3 * 4 * len(physics.receiver_ids)]
    with pytest.raises(RadioMapFormatError, match="radiomap.mean_dbm"):
        from_onnx(broken)


def test_hybrid_keeps_the_map_when_the_network_knows_nothing(split, physics):
    from heimdall.radiomap.hybrid import choose_exponents

    scenario, params, _, test, _ = split
    posts = [physics.localize(test.snr_db[i], test.noise_dbm[i], test.present[i]) for i in range(40)]
    rng = np.random.default_rng(0)
    far_mean = test.position_m[:40] + rng.normal(0, 60_000, (40, 2))
    alpha, beta, _ = choose_exponents(
        posts, far_mean, np.broadcast_to(np.eye(2) * 1e6, (40, 2, 2)), test.position_m[:40]
    )
    assert beta == 0.0 and alpha > 0
    good = test.position_m[:40] + rng.normal(0, 1000, (40, 2))
    alpha, beta, _ = choose_exponents(posts, good, np.broadcast_to(np.eye(2) * 1e6, (40, 2, 2)), test.position_m[:40])
    assert beta > 0


def test_exponent_nlls_score_each_pair_as_its_combined_posterior(split, physics):
    """Each (α, β) is scored as p_map^α · N^β, and as p_map^α where the network is set aside (here a third of the
    network's answers, moved far beyond both spreads)."""
    from heimdall.radiomap.hybrid import exponent_nlls, network_set_aside

    _, _, _, test, _ = split
    posts = [physics.localize(test.snr_db[i], test.noise_dbm[i], test.present[i]) for i in range(12)]
    rng = np.random.default_rng(1)
    mean, truth = test.position_m[:12] + rng.normal(0, 20_000, (12, 2)), test.position_m[:12]
    mean[::3] += 400_000.0
    cov = np.broadcast_to(np.eye(2) * 4e8, (12, 2, 2))
    aside = [network_set_aside(p, mean[i], cov[i]) is not None for i, p in enumerate(posts)]
    assert aside == [i % 3 == 0 for i in range(12)]
    nlls = exponent_nlls(posts, mean, cov, truth)
    assert len(nlls) == 14 and all(0 < alpha and beta <= alpha for alpha, beta in nlls)  # β ≤ α, never sharper
    for (alpha, beta), nll in nlls.items():
        each = [
            p.times_gaussian(mean[i], cov[i], alpha, 0.0 if aside[i] else beta).log_density_at(truth[i][None])[0]
            for i, p in enumerate(posts)
        ]
        assert nll == pytest.approx(-np.mean(each), rel=1e-12, abs=1e-12)


def test_a_network_set_aside_leaves_the_maps_answer_at_the_shipped_alpha(split, physics):
    """Where map and network disagree beyond both their spreads (d² > DISAGREEMENT_D2 under Σ_map + Σ_net), the
    answer and the choice's temperature scores are the map's tempered by α, whatever β; within them, the hybrid's."""
    from heimdall.radiomap.hybrid import (
        DISAGREEMENT_D2,
        UNTEMPERED,
        Weights,
        answer,
        temperature_scores,
    )

    _, _, _, test, _ = split
    post = physics.localize(test.snr_db[0], test.noise_dbm[0], test.present[0])
    sigma_m = np.sqrt(np.linalg.eigvalsh(post.cov_m2).max())
    cov = np.eye(2) * sigma_m**2
    near, far = post.mean_m + [sigma_m, 0.0], post.mean_m + [10 * sigma_m, 0.0]
    assert post.disagreement_d2(near, cov) < DISAGREEMENT_D2 < post.disagreement_d2(far, cov)
    weights, map_only = Weights(0.5, 0.5), Weights(0.5, 0.0)
    set_aside, alone = answer(post, far, cov, weights), answer(post, far, cov, map_only)
    np.testing.assert_array_equal(set_aside.mean_m, post.mean_m)
    assert set_aside.hpd_area_km2(0.95) == alone.hpd_area_km2(0.95) > post.hpd_area_km2(0.95)
    assert np.hypot(*(answer(post, near, cov, weights).mean_m - post.mean_m)) > 0.1 * sigma_m
    truth = test.position_m[:1]
    # the choice scores each as it answers: the near one as the hybrid, the far one as the map alone at α
    for mean, expected in ((near, answer(post, near, cov, weights)), (far, answer(post, far, cov, map_only))):
        scores, error = temperature_scores([post], mean[None], cov[None], truth, 0.5, 0.5)
        assert error[0] == pytest.approx(np.hypot(*(expected.mean_m - truth[0])), rel=1e-12)
        assert scores[0, UNTEMPERED, 0] == pytest.approx(-expected.log_density_at(truth)[0], rel=1e-9)
    near_scores, _ = temperature_scores([post], near[None], cov[None], truth, 0.5, 0.5)
    alone_scores, _ = temperature_scores([post], near[None], cov[None], truth, 0.5, 0.0)
    assert near_scores[0, UNTEMPERED, 0] != pytest.approx(alone_scores[0, UNTEMPERED, 0], rel=1e-6)


def test_a_tempered_answer_keeps_the_untempered_point_and_widens_its_regions(split, physics):
    """A map (or hybrid) shipped with temperature T > 1 (exponents α/T, β/T) answers with the point of T = 1 — the map
    as fitted, or p_map · N^(β/α) — and with regions, covariance and densities of the tempered posterior."""
    from heimdall.radiomap.hybrid import AS_FITTED, Weights, answer

    _, _, _, test, _ = split
    rng = np.random.default_rng(3)
    mean, cov = test.position_m[:8] + rng.normal(0, 20_000, (8, 2)), np.broadcast_to(np.eye(2) * 4e8, (8, 2, 2))
    truth = test.position_m[:8]
    for i in range(8):
        post = physics.localize(test.snr_db[i], test.noise_dbm[i], test.present[i])
        for chosen in (AS_FITTED, Weights(0.5, 0.25)):
            t1 = answer(post, mean[i], cov[i], chosen)
            hot = answer(post, mean[i], cov[i], Weights(chosen.alpha / 4, chosen.beta / 4))
            untempered = post.times_gaussian(mean[i], cov[i], 1.0, chosen.beta / chosen.alpha)
            np.testing.assert_allclose(hot.mean_m, untempered.mean_m, rtol=0, atol=1e-6)
            np.testing.assert_allclose(hot.mean_m, t1.mean_m, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(hot.map_m, t1.map_m)
            # the regions and the density are the tempered posterior's, p_map^(α/T) · N^(β/T)
            tempered = post.times_gaussian(mean[i], cov[i], chosen.alpha / 4, chosen.beta / 4)
            assert hot.hpd_area_km2(0.95) == tempered.hpd_area_km2(0.95) > t1.hpd_area_km2(0.95)
            np.testing.assert_allclose(
                hot.log_density_at(truth[i]), tempered.log_density_at(truth[i]), rtol=1e-9, atol=1e-9
            )
            assert np.trace(hot.cov_m2) > np.trace(t1.cov_m2) and np.trace(hot.cov_m2) >= np.trace(tempered.cov_m2)
        assert np.array_equal(answer(post, mean[i], cov[i], AS_FITTED).mean_m, post.mean_m)


def test_within_cell_spread_follows_the_field_gradient():
    grid = MapGrid.over((0.0, 0.0, 10_000.0, 6_000.0), 500.0)
    east_m = grid.centres()[:, 0]
    ramp_db = np.stack([0.002 * east_m, np.full_like(east_m, 7.0)], axis=1)  # 1 dB per cell eastwards; flat
    sd_db = grid.within_cell_sd_db(ramp_db)
    assert sd_db.shape == (grid.n_cells, 2)
    np.testing.assert_allclose(sd_db[:, 0], 1.0 / np.sqrt(12.0), rtol=1e-9)
    np.testing.assert_allclose(sd_db[:, 1], 0.0, atol=1e-12)


def test_mixture_weighs_each_part_by_its_prior_and_evidence():
    from heimdall.radiomap.posterior import GridPosterior, mixture

    grid = MapGrid.over((0.0, 0.0, 10_000.0, 10_000.0), 1000.0)
    a = GridPosterior(grid, np.array([0, 1]), np.log([1.0, 3.0]))  # evidence ∝ 4, mass 1/4, 3/4
    b = GridPosterior(grid, np.array([1, 5]), np.log([2.0, 2.0]) + 1.0)  # evidence ∝ 4·e
    log_prior = np.log([0.7, 0.3])
    mixed = mixture([a, b], log_prior)
    ev = np.array([a.log_evidence, b.log_evidence])
    share = np.exp(log_prior + ev) / np.exp(log_prior + ev).sum()
    np.testing.assert_allclose(share, [0.7 / (0.7 + 0.3 * np.e), 0.3 * np.e / (0.7 + 0.3 * np.e)])
    np.testing.assert_array_equal(mixed.cells, [0, 1, 5])
    expected = [share[0] * 0.25, share[0] * 0.75 + share[1] * 0.5, share[1] * 0.5]
    np.testing.assert_allclose(mixed.weights, expected)
    np.testing.assert_allclose(mixed.log_evidence, np.log(np.exp(log_prior + ev).sum()))


def test_field_hyper_parameters_find_both_scales():
    """Exact Gaussian-process draws with a coarse (5 dB, 6 km) and a fine (3 dB, 800 m) exponential component at
    1,500 points with 1 dB noise, the fit started from one 20 km component: on every draw it reaches a composite
    likelihood at least as high as the truth's, and across draws it finds both scales."""
    from scipy.spatial.distance import cdist

    from heimdall.radiomap import field

    truth = field.FieldHyper((5.0, 3.0), (6000.0, 800.0), 0.1)
    fitted = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        pts = rng.uniform(0, 30_000.0, (1500, 2))
        noise_var = np.full(len(pts), 1.0)
        obs = np.linalg.cholesky(truth.covariance(cdist(pts, pts)) + np.diag(noise_var)) @ rng.standard_normal(1500)
        h = field.fit_hyper(pts, obs, noise_var, np.random.default_rng(seed), field.FieldHyper.initial([(5.8, 20e3)]))
        blocks = field._hyper_blocks(pts, obs, noise_var, np.random.default_rng(seed))  # the blocks fit_hyper used
        nll = {
            name: field._negative_log_likelihood(np.log([*x.sigma_db, *x.correlation_m, x.nugget_db]), blocks)[0]
            for name, x in (("fit", h), ("truth", truth))
        }
        assert nll["fit"] <= nll["truth"] + 0.5, (seed, h, nll)
        fitted.append(h)
    coarse, fine = np.median([h.correlation_m for h in fitted], axis=0)
    assert 3000 < coarse < 12_000 and 400 < fine < 1600, fitted
    assert 2.0 < np.median([h.sigma_db[1] for h in fitted]) < 4.0, fitted


def test_hyper_likelihood_gradient_matches_finite_differences():
    """The composite likelihood's analytic gradient (from K's Cholesky factor) against central differences, with
    several blocks and with one block of all points."""
    from heimdall.radiomap import field

    rng = np.random.default_rng(3)
    theta = np.log([5.0, 3.0, 7000.0, 900.0, 0.8])
    for n in (200, 1000):
        pts = rng.uniform(0, 30_000.0, (n, 2))
        blocks = field._hyper_blocks(pts, rng.normal(0, 5, n), rng.uniform(0.5, 3.0, n), rng)
        _, grad = field._negative_log_likelihood(theta, blocks)
        for i in range(len(theta)):
            step = np.zeros_like(theta)
            step[i] = 1e-5
            up, down = (field._negative_log_likelihood(theta + s, blocks)[0] for s in (step, -step))
            assert grad[i] == pytest.approx((up - down) / 2e-5, rel=1e-4, abs=1e-4), (n, i)


def test_a_point_s_own_measurement_joined_to_its_leave_one_out_prediction_is_kriging_with_it():
    """With fewer points than the kriging neighbourhood every point sees all others: its leave-one-out prediction
    joined to its own measurement (with_own_measurement) equals kriging at it from all points, itself included."""
    from heimdall.radiomap import field

    rng = np.random.default_rng(5)
    pts = rng.uniform(0, 10_000.0, (field.NEIGHBOURS - 2, 2))
    e, nv = rng.normal(0, 4, len(pts)), rng.uniform(0.5, 4.0, len(pts))
    h = field.FieldHyper((4.0, 2.0), (5000.0, 700.0), 0.5)
    loo_mean, loo_var = field.krige(pts, pts, e, nv, h, exclude_self=True)
    with_all, _ = field.krige(pts, pts, e, nv, h)
    np.testing.assert_allclose(field.with_own_measurement(loo_mean, loo_var, e, nv, h), with_all, rtol=1e-9)
    assert not np.allclose(loo_mean, with_all)  # each point's own measurement does move it


def test_kriging_on_a_grid_equals_each_place_solved_from_its_own_neighbours():
    """Places that share their neighbours share one system (field.krige): each place's mean and variance equal simple
    kriging solved for it alone from its NEIGHBOURS nearest points; one point left out of itself gives the prior."""
    from scipy.spatial import cKDTree

    from heimdall.radiomap import field

    rng = np.random.default_rng(8)
    pts = rng.uniform(0, 20_000.0, (120, 2))
    e, nv = rng.normal(0, 4, len(pts)), rng.uniform(0.5, 4.0, len(pts))
    h = field.FieldHyper((4.0, 2.0), (5000.0, 700.0), 0.5)
    east, north = np.meshgrid(np.arange(0, 20_000.0, 250.0), np.arange(0, 20_000.0, 350.0))  # two chunks
    at = np.stack([east.ravel(), north.ravel()], -1)
    mean, var = field.krige(at, pts, e, nv, h)
    dist, idx = cKDTree(pts).query(at, field.NEIGHBOURS)
    assert len({tuple(sorted(row)) for row in idx}) < len(at) / 2  # the sharing is exercised
    for q in rng.choice(len(at), 40, replace=False):
        near = idx[q]
        k = h.covariance(np.linalg.norm(pts[near][:, None] - pts[near][None], axis=-1))
        k += np.diag(nv[near] + h.nugget_db**2)
        kx = h.covariance(dist[q])
        assert mean[q] == pytest.approx(kx @ np.linalg.solve(k, e[near]), rel=1e-9, abs=1e-12)
        assert var[q] == pytest.approx(h.variance_db2 - kx @ np.linalg.solve(k, kx), rel=1e-9)
    alone_mean, alone_var = field.krige(pts[:1], pts[:1], e[:1], nv[:1], h, exclude_self=True)
    assert alone_mean[0] == 0.0 and alone_var[0] == pytest.approx(h.variance_db2)
