import numpy as np
import pytest

from heimdall.baselines import (
    PRIOR_SIGMA_M,
    Grid,
    fit_log_distance,
    log_distance_crlb,
    log_distance_model,
    rss_ml,
    rss_posterior,
    weighted_centroid,
)
from heimdall.metrics import (
    COVERAGE_1SIGMA_IDEAL,
    COVERAGE_2SIGMA_IDEAL,
    accuracy_summary,
    calibration_summary,
    coverage_curve,
    mahalanobis_sq,
)

SQUARE = np.array([[-30_000.0, -30_000.0], [30_000.0, -30_000.0], [30_000.0, 30_000.0], [-30_000.0, 30_000.0]])


def test_accuracy_summary_hand_case():
    truth = np.zeros((5, 2))
    pred = np.array([[3.0, 4.0], [6.0, 8.0], [0.0, 1.0], [0.0, 2.0], [0.0, 10.0]])  # errors 5, 10, 1, 2, 10
    s = accuracy_summary(pred, truth)
    assert s["median_error_m"] == 5.0 and s["mean_error_m"] == pytest.approx(5.6)
    assert s["p90_error_m"] == pytest.approx(10.0) and s["cep50_m"] == 5.0


def test_mahalanobis_hand_case():
    cov = np.array([[[4.0, 0.0], [0.0, 1.0]]])
    assert mahalanobis_sq(np.zeros((1, 2)), cov, np.array([[2.0, 1.0]]))[0] == pytest.approx(2.0)


def test_calibrated_gaussian_has_ideal_coverage():
    rng = np.random.default_rng(0)
    n = 200_000
    a = rng.uniform(100, 5000, n)
    b = rng.uniform(100, 5000, n)
    th = rng.uniform(0, np.pi, n)
    rot = np.stack([np.stack([np.cos(th), -np.sin(th)], -1), np.stack([np.sin(th), np.cos(th)], -1)], -2)
    cov = rot @ (np.eye(2) * np.stack([a**2, b**2], -1)[:, None, :]) @ np.transpose(rot, (0, 2, 1))
    truth = rng.uniform(-1e5, 1e5, (n, 2))
    pred = truth + np.einsum("nij,nj->ni", np.linalg.cholesky(cov), rng.standard_normal((n, 2)))
    s = calibration_summary(pred, cov, truth)
    assert s["coverage_1sigma"] == pytest.approx(COVERAGE_1SIGMA_IDEAL, abs=0.005)
    assert s["coverage_2sigma"] == pytest.approx(COVERAGE_2SIGMA_IDEAL, abs=0.005)
    assert s["coverage_95"] == pytest.approx(0.95, abs=0.005)
    assert s["mean_mahalanobis_sq"] == pytest.approx(2.0, abs=0.03)
    nominal = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(coverage_curve(pred, cov, truth, nominal), nominal, atol=0.005)
    # an over-confident estimator (covariance 4× too small) is caught
    assert calibration_summary(pred, cov / 4, truth)["coverage_1sigma"] < 0.15


def test_weighted_centroid():
    rx = SQUARE
    heard = np.array([[True, True, True, True], [True, True, False, False], [False] * 4])
    power = np.array([[-90.0] * 4, [-90.0, -90.0, 0.0, 0.0], [-90.0] * 4])
    est = weighted_centroid(power, heard, rx)
    np.testing.assert_allclose(est[0], [0, 0], atol=1e-9)
    np.testing.assert_allclose(est[1], [0, -30_000], atol=1e-9)  # silent receivers do not count
    np.testing.assert_allclose(est[2], [0, 0], atol=1e-9)  # nobody heard: centroid of all
    stronger = weighted_centroid(np.array([[-60.0, -90.0, -90.0, -90.0]]), np.ones((1, 4), bool), rx)
    assert stronger[0, 0] < 0 and stronger[0, 1] < 0  # pulled towards the strong receiver


def test_ml_finds_a_noise_free_transmitter_on_a_known_grid():
    model = log_distance_model(SQUARE, 3.0)
    truth = np.array([[10_000.0, -4_000.0], [-22_000.0, 15_000.0], [3_333.0, 7_777.0]])
    power = 20.0 + model(truth)  # unknown transmit power 20 dBm, no noise
    heard = np.ones((3, 4), bool)
    grid = Grid((-50_000.0, -50_000.0, 50_000.0, 50_000.0), 2_000.0)
    pos, cov = rss_ml(power, heard, model, grid, sigma_db=6.0)
    np.testing.assert_allclose(pos, truth, atol=2_000.0 / 4**3)  # refinement resolution
    assert np.isfinite(cov).all() and (np.linalg.eigvalsh(cov) > 0).all()
    post, post_cov = rss_posterior(power, heard, model, grid, sigma_db=0.5)
    np.testing.assert_allclose(post, truth, atol=1_500.0)
    wide = rss_posterior(power, heard, model, grid, sigma_db=3.0)[1]
    assert (np.trace(wide, axis1=1, axis2=2) > np.trace(post_cov, axis1=1, axis2=2)).all()


def test_censoring_moves_the_posterior_away_from_silent_receivers():
    model = log_distance_model(SQUARE, 3.0)
    truth = np.array([[-20_000.0, -20_000.0]])
    power = 20.0 + model(truth)
    heard = np.array([[True, True, False, True]])  # the receiver at (+30 km, +30 km) stays silent
    grid = Grid((-50_000.0, -50_000.0, 50_000.0, 50_000.0), 2_000.0)
    plain, _ = rss_posterior(power, heard, model, grid, sigma_db=8.0)
    censored, _ = rss_posterior(power, heard, model, grid, sigma_db=8.0, censor_dbm=np.full(4, float(power.min())))
    far = SQUARE[2]
    assert np.linalg.norm(censored - far) > np.linalg.norm(plain - far)
    # floors given per transmission: NaN is a receiver that was not recording, read as absent, not as censored
    floors = np.full((1, 4), np.nan)
    not_recording, _ = rss_posterior(power, heard, model, grid, sigma_db=8.0, censor_dbm=floors)
    np.testing.assert_allclose(not_recording, plain, atol=1e-6)
    floors[0, 2] = float(power.min())
    per_row, _ = rss_posterior(power, heard, model, grid, sigma_db=8.0, censor_dbm=floors)
    np.testing.assert_allclose(per_row, censored, atol=1e-6)
    # three transmissions in chunks of two, each with its own floors: each as if alone
    truths = np.array([[-20_000.0, -20_000.0], [15_000.0, -5_000.0], [0.0, 20_000.0]])
    powers = 20.0 + model(truths)
    heard = np.array([[True, True, False, True], [False, True, True, True], [True, True, True, False]])
    row_floors = np.where(heard, np.nan, np.array([[-95.0], [-70.0], [np.nan]]))
    together, together_cov = rss_posterior(powers, heard, model, grid, sigma_db=8.0, censor_dbm=row_floors, chunk=2)
    for i in range(3):
        alone, alone_cov = rss_posterior(powers[i : i + 1], heard[i : i + 1], model, grid, sigma_db=8.0,
                                         censor_dbm=row_floors[i : i + 1])  # fmt: skip
        np.testing.assert_allclose(together[i], alone[0], atol=1e-6)
        np.testing.assert_allclose(together_cov[i], alone_cov[0], rtol=1e-9)
    uncensored = rss_posterior(powers[:2], heard[:2], model, grid, sigma_db=8.0)[0]
    assert np.linalg.norm(together[0] - uncensored[0]) > 100.0  # rows 0 and 1 read their floors, row 2 has none
    assert np.linalg.norm(together[1] - uncensored[1]) > 100.0


def test_the_posterior_moments_hold_far_from_the_origin():
    # the same network and transmitter 150 km east and north (the far side of a 300 km region): the covariance is
    # the same, not lost to cancellation in the second moments
    model = log_distance_model(SQUARE, 3.0)
    truth = np.array([[10_000.0, -4_000.0]])
    power = 20.0 + model(truth)
    heard = np.ones((1, 4), bool)
    grid = Grid((-50_000.0, -50_000.0, 50_000.0, 50_000.0), 500.0)
    mean, cov = rss_posterior(power, heard, model, grid, sigma_db=0.5)
    shift = np.array([150_000.0, 150_000.0])
    far = log_distance_model(SQUARE + shift, 3.0)
    e0, n0, e1, n1 = grid.bounds_m
    far_grid = Grid((e0 + shift[0], n0 + shift[1], e1 + shift[0], n1 + shift[1]), 500.0)
    far_mean, far_cov = rss_posterior(power, heard, far, far_grid, sigma_db=0.5)
    np.testing.assert_allclose(far_mean - shift, mean, atol=1e-3)
    np.testing.assert_allclose(far_cov, cov, rtol=1e-6)
    assert (np.linalg.eigvalsh(cov[0]) > 0).all()


def test_crlb_of_a_symmetric_geometry_matches_the_closed_form():
    # transmitter at the centre of a square: ḡ = 0 and J = (1/σ²)·(10n/(a·ln10))²·Σ u uᵀ = (1/σ²)·(10n/(a·ln10))²·2·I
    n_exp, sigma, a = 3.5, 8.0, np.hypot(30_000.0, 30_000.0)
    crlb = log_distance_crlb(np.zeros((1, 2)), np.ones((1, 4), bool), SQUARE, n_exp, sigma)[0]
    expected = sigma**2 * (a * np.log(10)) ** 2 / (2 * (10 * n_exp) ** 2)
    with_prior = 1 / (1 / expected + 1 / PRIOR_SIGMA_M**2)  # the weak prior that keeps bounds finite
    np.testing.assert_allclose(crlb, np.eye(2) * with_prior, rtol=1e-9, atol=1e-6)


def test_fit_log_distance_recovers_the_model():
    rng = np.random.default_rng(3)
    rx = np.concatenate([SQUARE, [[0.0, 45_000.0]]])
    truth = rng.uniform(-60_000, 60_000, (5000, 2))
    offsets = np.array([2.0, -1.0, 0.0, 3.0, -4.0])
    offsets -= offsets.mean()
    power = rng.uniform(10, 40, (5000, 1)) + log_distance_model(rx, 3.2, offsets)(truth)
    power += rng.normal(0, 4.0, power.shape)
    heard = rng.random(power.shape) < 0.8
    fit = fit_log_distance(power, heard, truth, rx)
    assert fit.exponent == pytest.approx(3.2, abs=0.05)
    np.testing.assert_allclose(fit.offsets_db, offsets, atol=0.3)
    assert fit.sigma_db == pytest.approx(4.0, abs=0.15)


def test_covariance_scale_for():
    from heimdall.metrics import covariance_scale_for

    rng = np.random.default_rng(4)
    z = rng.standard_normal((100_000, 2))
    d2 = (z**2).sum(1)
    assert covariance_scale_for(d2) == pytest.approx(1.0, abs=0.03)  # already calibrated
    assert covariance_scale_for(d2 * 3.0) == pytest.approx(3.0, rel=0.03)  # 3× over-confident
    # heavy tails (a scale mixture): matching the mean alone over-covers the 1σ ellipse; the fit does better
    heavy = d2 * rng.choice([0.7, 2.2], size=len(d2), p=[0.8, 0.2])
    s, by_mean = covariance_scale_for(heavy), heavy.mean() / 2
    assert np.mean(heavy / by_mean <= 1) - 0.393 > 0.03
    assert abs(np.mean(heavy / s <= 1) - 0.393) < np.mean(heavy / by_mean <= 1) - 0.393
    assert abs(np.mean(heavy / s <= 4) - 0.865) < 0.03 and abs(np.mean(heavy / s) - 2.0) < 0.2
