import numpy as np
import pytest

from heimdall.sim.fading import rician_fading
from heimdall.sim.shadowing import build_fields, exponential_field


def _lag_correlation(field, lag_cells):
    a, b = field[:, :-lag_cells], field[:, lag_cells:]
    c = np.mean(a * b) - a.mean() * b.mean()
    return c / np.sqrt(a.var() * b.var())


def test_field_sigma_and_correlation_distance():
    spacing, sigma, d = 250.0, 8.0, 2_000.0
    sig, rho = [], []
    for seed in range(4):
        f = exponential_field(np.random.default_rng(seed), (400, 400), spacing, sigma, d)
        sig.append(f.std())
        rho.append(_lag_correlation(f, int(d / spacing)))
    assert np.mean(sig) == pytest.approx(sigma, rel=0.10)
    # exponential correlation: ρ(d) = e⁻¹; the fitted correlation distance -d/ln ρ within 15 %
    fitted = -d / np.log(np.mean(rho))
    assert fitted == pytest.approx(d, rel=0.15)
    # and it decays: twice the distance is clearly less correlated
    f = exponential_field(np.random.default_rng(9), (400, 400), spacing, sigma, d)
    assert _lag_correlation(f, int(2 * d / spacing)) < _lag_correlation(f, int(d / spacing)) - 0.1


def test_fields_are_fixed_and_keyed_by_receiver_id():
    bounds = (-50_000.0, -40_000.0, 50_000.0, 40_000.0)
    comps = [(6.0, 10_000.0), (4.0, 2_000.0)]
    a = build_fields(["a", "b"], bounds, comps, seed=3)
    b = build_fields(["c", "b", "a"], bounds, comps, seed=3)
    pos = np.random.default_rng(0).uniform((-50e3, -40e3), (50e3, 40e3), (500, 2))
    sa, sb = a.sample(pos), b.sample(pos)
    np.testing.assert_array_equal(sa[:, 0], sb[:, 2])  # receiver "a" has the same terrain in both
    np.testing.assert_array_equal(sa[:, 1], sb[:, 1])
    np.testing.assert_array_equal(a.sample(pos), sa)  # same place, same shadowing
    assert not np.allclose(sa[:, 0], sa[:, 1])  # receivers see different terrain
    assert sa.std() == pytest.approx(np.hypot(6, 4), rel=0.25)
    other_seed = build_fields(["a"], bounds, comps, seed=4).sample(pos)[:, 0]
    assert abs(np.corrcoef(other_seed, sa[:, 0])[0, 1]) < 0.3


def test_sampling_interpolates_between_grid_points():
    bounds = (0.0, 0.0, 10_000.0, 10_000.0)
    f = build_fields(["x"], bounds, [(5.0, 2_000.0)], seed=1)
    p = np.array([[f.east0_m + 3 * f.spacing_m, f.north0_m + 4 * f.spacing_m]])
    assert f.sample(p)[0, 0] == pytest.approx(f.values_db[0, 4, 3], abs=1e-5)
    mid = p + [[f.spacing_m / 2, 0.0]]
    assert f.sample(mid)[0, 0] == pytest.approx(f.values_db[0, 4, 3:5].mean(), abs=1e-4)


@pytest.mark.parametrize("k_db", [-40.0, 0.0, 10.0])
def test_rician_power_statistics(k_db):
    n = 4000
    h = rician_fading(np.random.default_rng(5), 2, 64, 48_000.0, np.full(n, k_db), np.zeros(n), 16)
    p = np.abs(h[..., 0]) ** 2
    k = 10 ** (k_db / 10)
    assert p.mean() == pytest.approx(1.0, abs=0.05)
    # var(|h|²) of a Rician channel with E|h|² = 1 is (1 + 2K) / (1 + K)²
    assert p.var() == pytest.approx((1 + 2 * k) / (1 + k) ** 2, rel=0.15, abs=0.01)


def test_doppler_makes_fading_vary_inside_the_window():
    still = rician_fading(np.random.default_rng(1), 3, 2048, 48_000.0, np.full(50, -40.0), np.zeros(50), 8)
    moving = rician_fading(np.random.default_rng(1), 3, 2048, 48_000.0, np.full(50, -40.0), np.full(50, 60.0), 8)

    def spread(h):
        return np.std(np.abs(h), axis=-1).mean()

    assert spread(still) < 1e-4 < 0.05 < spread(moving)
