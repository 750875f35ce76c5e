"""The grid posterior's compiled kernels against references written from the formula, and the batched entry point."""

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import label

from heimdall.radiomap import kernel
from heimdall.radiomap.batch import MapInputError, Unanswered
from heimdall.radiomap.fit import MapOptions, Measured, physics_map
from heimdall.radiomap.kernel import POWER_STEP_DB, STRIDE
from heimdall.radiomap.likelihood import STEP_DB
from heimdall.radiomap.model import POWER_WINDOW, STRONG_SNR_DB, RadioMap
from heimdall.radiomap.posterior import GridPosterior

LOG_POSTERIOR_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def radio_map(nw_italy):
    return physics_map(nw_italy, MapOptions(spacing_m=2000.0, coarse_factor=2))


@pytest.fixture(scope="module")
def measured(nw_italy, world):
    """Simulated transmissions as the map reads them (Measured [n, R])."""
    from heimdall.features import FeatureParams
    from heimdall.sim.generator import simulate_block

    block = simulate_block(world, np.random.default_rng(5), 96)
    return Measured.from_features(block["features"], block["mask"] > 0, FeatureParams.from_scenario(nw_italy))


def reference_log_posterior(
    m: RadioMap, cells: np.ndarray, snr: np.ndarray, noise: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The log posterior of each cell from the formula (model.py's docstring), cell by cell: Σ over fading components
    and powers of w_c·π(P)·Π_r p_c(u_r | Δ), Δ on the table's STEP_DB columns (edge values beyond them), P on a
    window of POWER_WINDOW steps centred on the power the strong receivers imply (the whole prior when none is
    strong); and the power's posterior mean and variance."""
    table = m.table
    use = present & np.isfinite(snr) & np.isfinite(noise)
    rx = np.flatnonzero(use)
    rows, ref = table.rows(snr[rx])
    strong = snr[rx] >= STRONG_SNR_DB
    n_prior = len(m.power_log_prior)
    width = min(POWER_WINDOW, n_prior) if strong.any() else n_prior
    n_delta = table.values.shape[-1]
    out, mean, var = (np.empty(len(cells)) for _ in range(3))
    for n, cell in enumerate(cells):
        mu = m.mean_dbm[cell, rx].astype(np.float64)
        spread = table.spread_index(m.spread_db[cell, rx])
        start = 0
        if strong.any():
            implied = np.mean((snr[rx] + noise[rx] - mu)[strong])
            start = int(
                np.clip(np.round((implied - m.power_start_dbm) / POWER_STEP_DB) - width // 2, 0, n_prior - width)
            )
        power = m.power_start_dbm + POWER_STEP_DB * (start + np.arange(width))
        # Δ = P + μ − N − u in table columns; a power step is STRIDE columns
        first = np.round((power[0] + mu - noise[rx] - ref - table.delta_start_db) / STEP_DB).astype(np.int64)
        column = np.clip(first[:, None] + STRIDE * np.arange(width)[None, :], 0, n_delta - 1)
        terms = np.array(
            [
                m.component_log_weight[c]
                + m.power_log_prior[start : start + width]
                + table.values[c, spread[:, None], rows[:, None], column].astype(np.float64).sum(axis=0)
                for c in range(len(m.kernels))
            ]
        )
        top = terms.max()
        w = np.exp(terms - top).sum(axis=0)
        out[n] = np.log(w.sum()) + top
        mean[n] = w @ power / w.sum()
        var[n] = w @ power**2 / w.sum() - mean[n] ** 2
    return out, mean, var


def _cases(measured: Measured) -> list[int]:
    """Transmissions heard strongly by none, one, and several receivers."""
    n_strong = (measured.present & (measured.snr_db >= STRONG_SNR_DB)).sum(axis=1)
    return [int(np.flatnonzero(n_strong == k)[0]) for k in (0, 1) if (n_strong == k).any()] + list(
        np.flatnonzero(n_strong >= 2)[:6]
    )


def _assert_matches_reference(m: RadioMap, measured: Measured, rows: list[int], rng: np.random.Generator) -> None:
    for i in rows:
        cells = np.concatenate([m.grid.block_representatives()[:50], rng.choice(m.grid.n_cells, 300, replace=False)])
        args = measured.snr_db[i], measured.noise_dbm[i], measured.present[i]
        got, got_mean, got_var = m.log_posterior_at(cells, *args)
        want, want_mean, want_var = reference_log_posterior(m, cells, *args)
        np.testing.assert_allclose(got, want, rtol=0, atol=LOG_POSTERIOR_TOLERANCE, err_msg=f"transmission {i}")
        np.testing.assert_allclose(got_mean, want_mean, rtol=0, atol=1e-4, err_msg=f"transmission {i}")
        np.testing.assert_allclose(got_var, want_var, rtol=1e-4, atol=1e-4, err_msg=f"transmission {i}")


def test_kernel_log_posterior_matches_the_formula(radio_map, measured):
    _assert_matches_reference(radio_map, measured, _cases(measured), np.random.default_rng(0))


def test_kernel_log_posterior_matches_the_formula_beyond_one_float32_product(radio_map, measured):
    """28 receivers (the map's seven, four times): more likelihoods than one float32 product holds, in float64
    groups; a learned power prior spanning hundreds of nats."""
    tiled = dataclasses.replace(
        radio_map,
        receiver_ids=tuple(f"{r}-{k}" for k in range(4) for r in radio_map.receiver_ids),
        rx_position_m=np.tile(radio_map.rx_position_m, (4, 1)),
        mean_dbm=np.tile(radio_map.mean_dbm, 4),
        spread_db=np.tile(radio_map.spread_db, 4),
        power_log_prior=np.log(
            np.maximum(np.exp(-0.5 * ((np.arange(len(radio_map.power_log_prior)) - 40) / 3) ** 2), 1e-300)
        ),
    )
    assert tiled._kernel_table[2] < tiled.n_receivers  # the float32 group is smaller than the receivers
    data = Measured(*(np.tile(a, 4) for a in (measured.snr_db, measured.noise_dbm, measured.present)))
    _assert_matches_reference(tiled, data, _cases(measured)[:4], np.random.default_rng(1))


def test_batched_posteriors_equal_one_by_one_and_a_malformed_row_is_named(radio_map, measured):
    n = 12
    snr, noise, present = measured.snr_db[:n].copy(), measured.noise_dbm[:n].copy(), measured.present[:n].copy()
    snr[3] = np.nan  # no receiver measured
    present[7] = False  # no receiver present
    batch = list(radio_map.posteriors(snr, noise, present, workers=2))
    assert [i for i, p in enumerate(batch) if isinstance(p, Unanswered)] == [3, 7]
    assert all(p.index == i and "no receiver" in p.reason for i, p in enumerate(batch) if isinstance(p, Unanswered))
    for i, post in enumerate(batch):
        if isinstance(post, Unanswered):
            with pytest.raises(MapInputError, match="no receiver"):
                radio_map.localize(snr[i], noise[i], present[i])
            continue
        alone = radio_map.localize(snr[i], noise[i], present[i])
        np.testing.assert_array_equal(post.box, alone.box)
        assert (post.j0, post.i0, post.log_evidence) == (alone.j0, alone.i0, alone.log_evidence)
        np.testing.assert_allclose(post.mean_m, alone.mean_m, rtol=1e-12)  # BLAS may sum in another order on a thread
        assert post.modes() == alone.modes()


def test_a_row_of_the_wrong_length_is_named(radio_map, measured):
    rows = [measured.snr_db[0], measured.snr_db[1][:-1], measured.snr_db[2]]
    noise = [measured.noise_dbm[k] for k in range(3)]
    present = [measured.present[k] for k in range(3)]
    batch = list(radio_map.posteriors(rows, noise, present, workers=2))
    assert isinstance(batch[1], Unanswered) and batch[1].index == 1 and "expected [7]" in batch[1].reason
    assert all(isinstance(batch[k], GridPosterior) for k in (0, 2))


def test_hpd_levels_equal_those_of_a_full_sort():
    rng = np.random.default_rng(3)
    for trial in range(200):
        w = np.exp(rng.normal(0, rng.uniform(0.01, 30), rng.integers(1, 3000)))
        if trial % 3 == 0:
            w = np.round(w, 1)  # ties
        if trial % 5 == 0:
            w[rng.random(len(w)) < 0.3] = 0.0
        if not w.sum():
            continue
        w /= w.sum()
        probabilities = np.array([0.5, 0.95, 1 - 1e-4, 0.3])
        ordered = np.sort(w)[::-1]
        at = np.minimum(np.searchsorted(np.cumsum(ordered), probabilities), len(w) - 1)
        np.testing.assert_array_equal(kernel.hpd_levels(w, probabilities), ordered[at])


def test_the_refined_blocks_cut_equals_a_partition():
    """The k-th smallest weight the posterior cuts its refined blocks at (quickselect) is np.partition's, with
    ties, one value, and k at either end."""
    rng = np.random.default_rng(4)
    for trial in range(500):
        values = rng.exponential(1.0, rng.integers(1, 400))
        if trial % 3 == 0:
            values = np.round(values, 1)  # ties
        if trial % 7 == 0:
            values[:] = 0.25
        for k in {0, len(values) - 1, int(rng.integers(len(values)))}:
            assert kernel._kth_smallest(values.copy(), k) == np.partition(values, k)[k]


def test_modes_and_regions_equal_those_drawn_on_the_whole_grid(radio_map, measured):
    """Modes against scipy's labels, regions against contourpy's own entry point, both on the whole grid."""
    import contourpy

    g = radio_map.grid
    for i in _cases(measured)[:5]:
        post = radio_map.localize(measured.snr_db[i], measured.noise_dbm[i], measured.present[i])
        dense = np.zeros((g.ny + 2, g.nx + 2))  # every cell, and a border
        dense[1:-1, 1:-1].flat[post.cells] = post.weights
        level = post.hpd_level(0.95)
        parts, n = label(dense >= level, structure=np.ones((3, 3), bool))
        masses = [dense[parts == k].sum() for k in range(1, n + 1)]
        assert [m.mass for m in post.modes(0.95, max_modes=n)] == pytest.approx(sorted(masses, reverse=True))
        east = g.east0_m + np.arange(-1, g.nx + 1) * g.spacing_m
        north = g.north0_m + np.arange(-1, g.ny + 1) * g.spacing_m
        whole = contourpy.contour_generator(east, north, dense, fill_type=contourpy.FillType.OuterOffset)
        for p in (0.5, 0.95):
            points, offsets = whole.filled(post.hpd_level(p) * 0.5, np.inf)
            rings = [
                pts[a:b]
                for pts, offs in zip(points, offsets, strict=True)
                for a, b in zip(offs[:-1], offs[1:], strict=True)
            ]
            got = [ring for polygon in post.region(p) for ring in polygon]
            assert len(got) == len(rings) > 0
            for a, b in zip(got, rings, strict=True):
                np.testing.assert_array_equal(a[: len(b)], b)  # region() closes a ring contourpy left open


def test_reads_at_a_point_of_tempered_posteriors_and_products_equal_those_of_the_built_ones(radio_map, measured):
    """What the choice reads of each temperature and each pair of exponents at the truth — the log density and
    whether a region holds it — equals what the tempered posterior or the product, built, gives: at points in the
    posterior's cells, on the edge of its regions, where it holds no mass and off the grid."""
    rng = np.random.default_rng(7)
    exponents = np.array([0.1, 0.5, 1.0, 1.7, 4.0])
    alphas, betas = np.array([0.25, 0.5, 1.0, 1.0, 0.75]), np.array([0.0, 0.25, 0.0, 1.0, 0.5])
    g = radio_map.grid
    for i in _cases(measured)[:5]:
        post = radio_map.localize(measured.snr_db[i], measured.noise_dbm[i], measured.present[i])
        held = g.centres(post.cells)
        ordered = post.cells[np.argsort(-post.weights)]
        at_edge = g.centres(ordered[np.searchsorted(np.cumsum(np.sort(post.weights)[::-1]), [0.5, 0.95])])
        empty = g.centres(np.setdiff1d(np.arange(g.n_cells), post.cells)[:1])
        points = [*held[rng.choice(len(held), 6)], *at_edge, *empty, post.mean_m + 1e9]
        mean_m = post.mean_m + rng.normal(0, 20e3, 2)
        cov_m2 = np.array([[4e8, 1e8], [1e8, 2.5e8]])
        for point in points:
            log_density, inside = post.tempered_reads_at(point, exponents, (0.5, 0.95))
            for t, e in enumerate(exponents):
                built = post.tempered(e)
                assert log_density[t] == pytest.approx(built.log_density_at(point)[0], abs=1e-9)
                assert list(inside[t]) == [bool(built.in_hpd(point, p)[0]) for p in (0.5, 0.95)]
            products = post.products_log_density_at(point, mean_m, cov_m2, alphas, betas)
            for k, (a, b) in enumerate(zip(alphas, betas, strict=True)):
                built = post.times_gaussian(mean_m, cov_m2, a, b).log_density_at(point)[0]
                assert products[k] == pytest.approx(built, abs=1e-9)


@pytest.mark.system  # two processes, each compiling a kernel (the second tier)
def test_kernels_compile_and_cache_where_the_package_is_read_only(tmp_path):
    """A read-only install with no writable home: numba cannot cache beside the source nor in the user's folder;
    the kernels still load, cached in the temporary folder (a second process reads them from there)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import heimdall

    package = tmp_path / "site" / "heimdall"
    shutil.copytree(Path(heimdall.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "radiomap" / "__pycache__").write_text("not a folder: nothing can be cached beside the source")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path / "site"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(blocked / "home"),
        "XDG_CACHE_HOME": str(blocked / "cache"),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir()
    script = (
        "import numpy as np; from heimdall.radiomap import kernel; "
        "print(kernel.hpd_levels(np.array([0.5, 0.3, 0.2]), np.array([0.6]))[0])"
    )
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "0.3"
    assert any((tmp_path / "tmp").glob("heimdall-numba-*/**/*.nbi"))
