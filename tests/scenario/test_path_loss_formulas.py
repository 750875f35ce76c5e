import numpy as np
import pytest

from heimdall.scenario.path_loss import (
    diffraction_loss_db,
    free_space_loss_db,
    path_loss_db,
    radio_horizon_m,
    two_ray_loss_db,
)
from heimdall.sim.noise import complex_gaussian, noise_floor_dbm

F_2M = 145e6
TOL_DB = 0.01


def test_free_space_reference_values():
    # 32.45 + 20·log10(f_MHz) + 20·log10(d_km)
    assert free_space_loss_db(1_000, F_2M) == pytest.approx(32.447 + 20 * np.log10(145), abs=TOL_DB)
    assert free_space_loss_db(100_000, 433e6) == pytest.approx(32.447 + 20 * np.log10(433) + 40, abs=TOL_DB)


def test_two_ray_breakpoint_and_slope():
    lam = 299_792_458.0 / F_2M
    h_t, h_r = 2.0, 30.0
    d_break = 4 * np.pi * h_t * h_r / lam
    # continuous at the breakpoint, free space before it
    assert two_ray_loss_db(d_break, F_2M, h_t, h_r) == pytest.approx(free_space_loss_db(d_break, F_2M), abs=TOL_DB)
    assert two_ray_loss_db(d_break / 3, F_2M, h_t, h_r) == pytest.approx(free_space_loss_db(d_break / 3, F_2M))
    # plane earth: 40·log10(d) − 20·log10(h_t·h_r), 40 dB/decade
    assert two_ray_loss_db(10_000, F_2M, h_t, h_r) == pytest.approx(160.0 - 20 * np.log10(60.0), abs=TOL_DB)
    assert two_ray_loss_db(20_000, F_2M, h_t, h_r) - two_ray_loss_db(10_000, F_2M, h_t, h_r) == pytest.approx(
        40 * np.log10(2), abs=TOL_DB
    )


def test_diffraction_hand_computed_case():
    # ITU-R P.526 first term, β = 1, a_e = 4/3·6371 km, f = 145 MHz, d = 100 km, h = 20 m and 2 m
    a_km = 6371.0 * 4 / 3
    x = 2.188 * 145 ** (1 / 3) * a_km ** (-2 / 3) * 100
    f_x = 11 + 10 * np.log10(x) - 17.6 * x
    y20 = 9.575e-3 * 145 ** (2 / 3) * a_km ** (-1 / 3) * 20
    y2 = y20 / 10
    g = [20 * np.log10(y + 0.1 * y**3) for y in (y20, y2)]  # both Y < 2
    expected = -(f_x + g[0] + g[1])
    assert 70 < expected < 80  # sanity of the hand computation itself
    assert diffraction_loss_db(100_000, F_2M, 20.0, 2.0) == pytest.approx(expected, abs=TOL_DB)


def test_diffraction_vanishes_well_inside_line_of_sight():
    assert radio_horizon_m(300.0, 300.0) / 1e3 == pytest.approx(2 * 4.122 * np.sqrt(300), rel=2e-3)
    assert diffraction_loss_db(5_000, F_2M, 300.0, 300.0) == 0.0


def test_path_loss_is_the_larger_and_monotonic():
    d = np.geomspace(1_000, 200_000, 400)
    pl = path_loss_db(d, F_2M, 3.0, 50.0)
    assert np.all(np.diff(pl) > 0)
    expected = np.maximum(
        two_ray_loss_db(d, F_2M, 3.0, 50.0), free_space_loss_db(d, F_2M) + diffraction_loss_db(d, F_2M, 3.0, 50.0)
    )
    np.testing.assert_allclose(pl, expected)
    # higher receiver antennas hear further: less loss at 100 km
    assert path_loss_db(100_000, F_2M, 3.0, 400.0) < path_loss_db(100_000, F_2M, 3.0, 30.0) - 10


def test_noise_floor_is_ktb_plus_noise_figure():
    # kT0 = -173.98 dBm/Hz; 16 kHz, NF 6 dB
    assert noise_floor_dbm(6.0, 16_000) == pytest.approx(-173.98 + 10 * np.log10(16_000) + 6.0, abs=0.01)


def test_complex_gaussian_statistics():
    z = complex_gaussian(np.random.default_rng(0), (200_000,))
    assert z.dtype == np.complex64
    assert np.mean(np.abs(z) ** 2) == pytest.approx(1.0, abs=0.01)
    assert np.var(z.real) == pytest.approx(0.5, abs=0.01) and np.var(z.imag) == pytest.approx(0.5, abs=0.01)
    assert abs(np.mean(z.real * z.imag)) < 0.01
    assert np.mean(z.real**4) / np.mean(z.real**2) ** 2 == pytest.approx(3.0, abs=0.1)  # Gaussian kurtosis


def test_okumura_hata_hand_computed_and_floored_at_free_space():
    from heimdall.scenario.path_loss import okumura_hata_loss_db

    # f = 433.5 MHz, h_b = 30 m, h_m = 1.5 m, d = 10 km: urban 153.36 dB, suburban 8.23 dB less
    assert okumura_hata_loss_db(10_000, 433.5e6, 1.5, 30.0, "urban") == pytest.approx(153.36, abs=0.01)
    assert okumura_hata_loss_db(10_000, 433.5e6, 1.5, 30.0, "suburban") == pytest.approx(153.36 - 8.23, abs=0.01)
    d = np.geomspace(10, 200_000, 50)
    loss = okumura_hata_loss_db(d, 145e6, 5.0, 30.0, "open")
    assert (loss >= free_space_loss_db(d, 145e6) - 1e-9).all() and (np.diff(loss) >= 0).all()


def test_the_scenario_chooses_the_path_loss_model(nw_italy):
    import dataclasses

    from heimdall.scenario.path_loss import median_path_loss_db, okumura_hata_loss_db

    pl = nw_italy.environment.path_loss
    assert median_path_loss_db(pl, 30_000, 145e6, 2.0, 50.0) == path_loss_db(
        30_000, 145e6, 2.0, 50.0, pl.earth_radius_factor
    )
    hata = dataclasses.replace(pl, model="okumura_hata", hata_environment="open")
    assert median_path_loss_db(hata, 30_000, 145e6, 2.0, 50.0) == okumura_hata_loss_db(30_000, 145e6, 2.0, 50.0, "open")


def test_log_distance_and_the_slope_correction(nw_italy):
    import dataclasses

    from heimdall.scenario.path_loss import log_distance_loss_db, median_path_loss_db

    assert log_distance_loss_db(10_000) == pytest.approx(120.0)  # 30 dB/decade from 0 dB at 1 m
    assert log_distance_loss_db(10) == log_distance_loss_db(100)  # held at 100 m
    plain = dataclasses.replace(nw_italy.environment.path_loss, model="log_distance")
    loss = median_path_loss_db(
        plain, np.array([[10_000.0, 100_000.0]]), 145e6, np.array([[2.0]]), np.array([40.0, 9.0])
    )
    assert loss.shape == (1, 2) and loss[0, 1] - loss[0, 0] == pytest.approx(30.0)
    for model in ("two_ray_diffraction", "log_distance"):
        pl = dataclasses.replace(nw_italy.environment.path_loss, model=model)
        steeper = dataclasses.replace(pl, slope_correction_db_per_decade=5.0)
        d = np.array([1_000.0, 10_000.0, 100_000.0])
        np.testing.assert_allclose(
            median_path_loss_db(steeper, d, 145e6, 2.0, 50.0) - median_path_loss_db(pl, d, 145e6, 2.0, 50.0),
            [-5.0, 0.0, 5.0],  # pivoting at 10 km
            atol=1e-9,
        )
