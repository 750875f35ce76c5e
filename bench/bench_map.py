"""Radio-map speed: the grid posterior and what an answer reads from it, one core and batched.

    python bench/bench_map.py [--only posterior,batch] [-n 40] [--batch 400]

Sections (--only picks some, comma-separated; default all):

posterior  Per transmission on one core (the process pinned to one CPU, BLAS to one thread; CPU time of the
           measuring thread): the posterior (RadioMap.localize), the answer read from it (mean, covariance, MAP,
           the 50 %/95 % HPD levels and the truth's membership, modes) and its 50 %/95 % regions (contourpy's
           polygons, both drawn on one grid of weights where the kernels are used), against grid cells
           (nw-italy's physics map at 1,000 / 500 / 250 m) and receivers (3, 7 and 14 — the seven twice — on the
           500 m grid). Each row against the numpy baseline measured in the same run (NumpyBaseline below: the
           numpy code the kernels replaced, kept in this file only) and its ratio to the target, 10 × faster.
batch      Transmissions per second on every CPU (the posterior, answer and regions of each in threads, as
           heimdall.radiomap.answer_arrays and the service do), against the baseline's one-by-one loop in the same run;
           target 10 × the baseline.

Timings depend on the machine's load: rerun the baseline in the same run (it always is) and read the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable
from typing import cast

import numpy as np
from scipy.ndimage import binary_dilation, label
from threadpoolctl import threadpool_limits

from heimdall.features import FeatureParams
from heimdall.radiomap.batch import all_in_threads, cpu_count
from heimdall.radiomap.fit import MapOptions, Measured, physics_map
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.kernel import POWER_STEP_DB
from heimdall.radiomap.likelihood import STEP_DB
from heimdall.radiomap.model import POWER_WINDOW, PRUNE_MASS, REFINED_BLOCKS, STRONG_SNR_DB, RadioMap
from heimdall.radiomap.posterior import HPD_PROBABILITIES
from heimdall.scenario.builtin import load_scenario
from heimdall.sim.generator import build_world, simulate_block

TARGET_SPEEDUP = 10.0
SCENARIO = "nw-italy"
SPACINGS_M = (1000.0, 500.0, 250.0)
RECEIVER_COUNTS = (3, 7, 14)


class NumpyBaseline:
    """The numpy grid posterior and answer the compiled kernels replaced (heimdall before them), for comparison only:
    the same maths, pruning and answers, one transmission at a time."""

    def __init__(self, m: RadioMap) -> None:
        self.m = m
        pad = int(round(POWER_STEP_DB / STEP_DB)) * len(m.power_log_prior)
        self.padded = np.pad(m.table.values, ((0, 0), (0, 0), (0, 0), (pad, pad)), mode="edge"), pad
        self.spread_index = m.table.spread_index(m.spread_db)
        self.blocks = m.grid.block_representatives()

    def log_posterior(self, cells: np.ndarray, snr: np.ndarray, noise_dbm: np.ndarray, use: np.ndarray) -> np.ndarray:
        m, table = self.m, self.m.table
        values, pad = self.padded
        n_comp, n_spread, n_rows, n_delta = values.shape
        flat = values.reshape(-1)
        rx = np.flatnonzero(use)
        rows, ref = table.rows(snr[rx])
        mu = m.mean_dbm[cells][:, rx].astype(np.float64)
        spread = self.spread_index[cells][:, rx].astype(np.int64)
        k_all = len(m.power_log_prior)
        strong = snr[rx] >= STRONG_SNR_DB
        if strong.any():
            width = min(POWER_WINDOW, k_all)
            p_star = ((snr[rx] + noise_dbm[rx])[strong] - mu[:, strong]).mean(axis=1)
            start = np.clip(np.round((p_star - m.power_start_dbm) / POWER_STEP_DB) - width // 2, 0, k_all - width)
            start = start.astype(np.int64)
        else:
            width, start = k_all, np.zeros(len(cells), np.int64)
        k = np.arange(width)
        stride = int(round(POWER_STEP_DB / STEP_DB))
        power0 = m.power_start_dbm + POWER_STEP_DB * start
        delta = (power0[:, None] + mu - noise_dbm[rx] - ref - table.delta_start_db) / STEP_DB + pad
        base = np.clip(np.round(delta).astype(np.int64), 0, n_delta - 1 - stride * (width - 1))
        prior = m.power_log_prior[start[:, None] + k[None, :]].astype(np.float32)
        joint = None
        for c in range(n_comp):
            acc = prior + np.float32(m.component_log_weight[c])
            for j in range(len(rx)):
                off = ((c * n_spread + spread[:, j]) * n_rows + rows[j]) * n_delta + base[:, j]
                acc += flat[off[:, None] + stride * k[None, :]]
            joint = acc if joint is None else np.logaddexp(joint, acc)
        assert joint is not None
        top = joint.max(axis=1, keepdims=True)
        return np.log(np.exp(joint - top).sum(axis=1, dtype=np.float64)) + top[:, 0]

    def localize(self, snr_db: np.ndarray, noise_dbm: np.ndarray, present: np.ndarray) -> BaselinePosterior:
        g = self.m.grid
        snr, noise = np.asarray(snr_db, np.float64), np.asarray(noise_dbm, np.float64)
        use = np.asarray(present, bool) & np.isfinite(snr) & np.isfinite(noise)
        coarse = self.log_posterior(self.blocks, snr, noise, use)
        w = np.exp(coarse - coarse.max())
        w /= w.sum()
        order = np.argsort(-w)
        n_keep = int(np.searchsorted(np.cumsum(w[order]), 1.0 - PRUNE_MASS)) + 1
        keep = np.zeros(len(w), bool)
        keep[order[:n_keep]] = True
        keep = binary_dilation(keep.reshape(g.block_shape()), np.ones((3, 3), bool)).ravel()
        kept = np.flatnonzero(keep)
        kept = kept[np.argsort(-w[kept])]
        refined, rest = kept[:REFINED_BLOCKS], kept[REFINED_BLOCKS:]
        fine = _cells_of_blocks(g, refined)
        cell_parts, log_post_parts = [fine], [self.log_posterior(fine, snr, noise, use)]
        if len(rest):
            tail = _cells_of_blocks(g, rest)
            cell_parts.append(tail)
            log_post_parts.append(coarse[_block_of(g, tail)])
        cells, log_post = np.concatenate(cell_parts), np.concatenate(log_post_parts)
        order = np.argsort(cells)
        return BaselinePosterior(g, cells[order], log_post[order])


def _block_of(g: MapGrid, cells: np.ndarray) -> np.ndarray:
    f = g.coarse_factor
    return (cells // g.nx) // f * (-(-g.nx // f)) + (cells % g.nx) // f


def _cells_of_blocks(g: MapGrid, blocks: np.ndarray) -> np.ndarray:
    f = g.coarse_factor
    nbx = -(-g.nx // f)
    dj, di = np.meshgrid(np.arange(f), np.arange(f), indexing="ij")
    j = (blocks // nbx)[:, None] * f + dj.ravel()[None, :]
    i = (blocks % nbx)[:, None] * f + di.ravel()[None, :]
    ok = (j < g.ny) & (i < g.nx)
    return (j * g.nx + i)[ok]


class BaselinePosterior:
    """The numpy GridPosterior the compiled kernels replaced: what an answer reads."""

    def __init__(self, grid: MapGrid, cells: np.ndarray, log_posterior: np.ndarray) -> None:
        self.grid, self.cells = grid, cells
        w = np.exp(log_posterior - log_posterior.max())
        self.weights = w / w.sum()
        self.centres = grid.centres(cells)

    def answer(self, truth_m: np.ndarray) -> None:
        mean = self.weights @ self.centres
        d = self.centres - mean
        _ = (self.weights[:, None] * d).T @ d
        _ = self.centres[int(np.argmax(self.weights))]
        for p in HPD_PROBABILITIES:
            self.in_hpd(truth_m, p)
        self.modes(0.95)

    def regions(self) -> None:
        self.region(0.5)
        self.region(0.95)

    def hpd_level(self, probability: float) -> float:
        w = np.sort(self.weights)[::-1]
        return float(w[min(int(np.searchsorted(np.cumsum(w), probability)), len(w) - 1)])

    def in_hpd(self, point_m: np.ndarray, probability: float) -> bool:
        cell = self.grid.cell_of(point_m[None])[0]
        pos = min(int(np.searchsorted(self.cells, cell)), len(self.cells) - 1)
        return bool(self.cells[pos] == cell and self.weights[pos] >= self.hpd_level(probability))

    def dense(self) -> tuple[np.ndarray, int, int]:
        j, i = self.cells // self.grid.nx, self.cells % self.grid.nx
        j0, i0 = int(j.min()) - 1, int(i.min()) - 1
        dense = np.zeros((int(j.max()) - j0 + 2, int(i.max()) - i0 + 2))
        dense[j - j0, i - i0] = self.weights
        return dense, j0, i0

    def modes(self, probability: float) -> list:
        dense, j0, i0 = self.dense()
        parts, n = label(dense >= self.hpd_level(probability), structure=np.ones((3, 3), bool))
        out = []
        for k in range(1, n + 1):
            sel = parts == k
            jj, ii = np.unravel_index(int(np.argmax(np.where(sel, dense, -1.0))), dense.shape)
            out.append((float(dense[sel].sum()), jj + j0, ii + i0))
        return sorted(out, key=lambda m: -m[0])

    def region(self, probability: float) -> list:
        import contourpy

        dense, j0, i0 = self.dense()
        g = self.grid
        x = g.east0_m + (i0 + np.arange(dense.shape[1])) * g.spacing_m
        y = g.north0_m + (j0 + np.arange(dense.shape[0])) * g.spacing_m
        gen = contourpy.contour_generator(x, y, dense, fill_type=contourpy.FillType.OuterOffset)
        return cast(list, gen.filled(self.hpd_level(probability) * 0.5, np.inf))


def answer(post, truth_m: np.ndarray) -> None:  # noqa: ANN001 (a GridPosterior)
    """What an answer reads of a posterior besides its regions: moments, MAP, HPD levels and membership, modes."""
    _ = post.mean_m, post.cov_m2, post.map_m
    for p in HPD_PROBABILITIES:
        post.in_hpd(truth_m[None], p)
    post.modes(0.95)


def with_receivers(m: RadioMap, n: int) -> RadioMap:
    """The map with its first n receivers, or its receivers repeated up to n."""
    take = np.arange(n) % m.n_receivers
    return dataclasses.replace(
        m,
        receiver_ids=tuple(f"{m.receiver_ids[k]}-{t}" for t, k in enumerate(take)),
        rx_position_m=m.rx_position_m[take],
        mean_dbm=np.ascontiguousarray(m.mean_dbm[:, take]),
        spread_db=np.ascontiguousarray(m.spread_db[:, take]),
    )


def transmissions(n: int, seed: int = 7) -> tuple[Measured, np.ndarray]:
    """n simulated transmissions of the scenario as the map reads them (every receiver recorded, as the service
    reads a full request) and their positions [n, 2] m."""
    scenario = load_scenario(SCENARIO)
    block = simulate_block(build_world(scenario), np.random.default_rng(seed), 2 * n)
    recorded = np.ones(block["mask"].shape, bool)
    measured = Measured.from_features(block["features"], recorded, FeatureParams.from_scenario(scenario))
    return measured.subset(np.arange(n)), block["tx_position_m"][:n]


def per_transmission_ms(fn: Callable[[int, list], object], n: int, fresh: Callable[[], list] = list) -> float:
    """CPU time of this thread per call of fn(i, objects), i < n, ms: the best of two passes, each given new
    `fresh()` objects (posteriors keep what they computed)."""
    best = np.inf
    for _ in range(2):
        objects = fresh()
        t0 = time.thread_time()
        for i in range(n):
            fn(i, objects)
        best = min(best, (time.thread_time() - t0) / n * 1e3)
    return best


def ratio(value: float, target: float) -> str:
    return f"(target ≥ {target:g}×: ratio {value / target:.2f})"


def posterior_row(m: RadioMap, data: Measured, truth: np.ndarray) -> None:
    """One row of posterior_rows: the map `m` against its numpy baseline, on the transmissions `data`."""
    m.prepare()
    baseline = NumpyBaseline(m)
    r, n = m.n_receivers, len(data)
    snr, noise = (np.tile(a, -(-r // a.shape[1]))[:, :r] for a in (data.snr_db, data.noise_dbm))
    present = np.tile(data.present, -(-r // data.present.shape[1]))[:, :r]
    baseline.localize(snr[0], noise[0], present[0]).answer(truth[0])  # first use: the table

    def posteriors(localize: Callable) -> list:
        return [localize(snr[i], noise[i], present[i]) for i in range(n)]

    old_post = per_transmission_ms(lambda i, _: baseline.localize(snr[i], noise[i], present[i]), n)
    new_post = per_transmission_ms(lambda i, _: m.localize(snr[i], noise[i], present[i]), n)
    old_answer = per_transmission_ms(
        lambda i, posts: posts[i].answer(truth[i]), n, lambda: posteriors(baseline.localize)
    )
    new_answer = per_transmission_ms(lambda i, posts: answer(posts[i], truth[i]), n, lambda: posteriors(m.localize))
    old_regions = per_transmission_ms(lambda i, posts: posts[i].regions(), n, lambda: posteriors(baseline.localize))
    new_regions = per_transmission_ms(
        lambda i, posts: posts[i].regions(HPD_PROBABILITIES), n, lambda: posteriors(m.localize)
    )
    cells = f"{m.grid.n_cells:8d} {r:3d} |"
    columns = ((old_post, new_post), (old_answer, new_answer), (old_regions, new_regions))
    print(cells + " |".join(f" {old:7.2f} {new:6.2f} {old / new:5.1f}×" for old, new in columns))
    old_total, new_total = (sum(times) for times in zip(*columns, strict=True))
    print(f"{'':13s}posterior: {ratio(old_post / new_post, TARGET_SPEEDUP)}")
    print(
        f"{'':13s}whole answer (posterior, answer, regions) {old_total:.2f} → {new_total:.2f} ms: "
        f"{ratio(old_total / new_total, TARGET_SPEEDUP)}"
    )


def posterior_rows(args: argparse.Namespace) -> None:
    """Per-transmission ms on one core against grid cells and receivers."""
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        one_core_rows(args)
    finally:
        os.sched_setaffinity(0, cpus)


def one_core_rows(args: argparse.Namespace) -> None:
    """posterior_rows, the process on one CPU."""
    scenario = load_scenario(SCENARIO)
    data, truth = transmissions(args.n)
    print(f"== posterior and answer per transmission, one core (CPU time; {args.n} simulated {SCENARIO} transmissions)")
    print(
        f"{'cells':>8s} {'rx':>3s} | {'posterior: numpy, kernel ms':>27s} | {'answer: numpy, kernel ms':>24s} | "
        f"{'regions: numpy, new ms':>22s}"
    )
    maps = {s: physics_map(scenario, MapOptions(spacing_m=s)) for s in SPACINGS_M}
    with threadpool_limits(1):
        for spacing_m in SPACINGS_M:
            posterior_row(maps[spacing_m], data, truth)
        for n_rx in RECEIVER_COUNTS:
            if n_rx != maps[500.0].n_receivers:
                posterior_row(with_receivers(maps[500.0], n_rx), data, truth)


def batch_rows(args: argparse.Namespace) -> None:
    """Transmissions per second on every CPU, against the baseline's one-by-one loop."""
    scenario = load_scenario(SCENARIO)
    data, truth = transmissions(args.batch, seed=11)
    m = physics_map(scenario, MapOptions()).prepare()
    baseline = NumpyBaseline(m)
    baseline.localize(data.snr_db[0], data.noise_dbm[0], data.present[0])
    n_old = min(args.batch, 60)
    t0 = time.perf_counter()
    for i in range(n_old):
        post = baseline.localize(data.snr_db[i], data.noise_dbm[i], data.present[i])
        post.answer(truth[i])
        post.regions()
    old_rate = n_old / (time.perf_counter() - t0)
    workers = cpu_count()

    def one(i: int) -> None:
        post = m.localize(data.snr_db[i], data.noise_dbm[i], data.present[i])
        answer(post, truth[i])
        post.regions(HPD_PROBABILITIES)

    t0 = time.perf_counter()
    all_in_threads(one, args.batch, workers)
    new_rate = args.batch / (time.perf_counter() - t0)
    print(f"== batched posteriors and answers ({SCENARIO}, 500 m, {m.grid.n_cells} cells, wall clock)")
    print(
        f"numpy one by one: {old_rate:.1f} transmissions/s ({n_old}); kernels, {workers} threads: {new_rate:.1f} "
        f"transmissions/s ({args.batch}): {new_rate / old_rate:.1f}× {ratio(new_rate / old_rate, TARGET_SPEEDUP)}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {"posterior": posterior_rows, "batch": batch_rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated ({', '.join(SECTIONS)})")
    ap.add_argument("-n", type=int, default=40, help="transmissions per one-core row")
    ap.add_argument("--batch", type=int, default=400, help="transmissions of the batched row")
    args = ap.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        ap.error(f"--only: unknown sections {sorted(unknown)}; expected some of {list(SECTIONS)}")
    for name in chosen:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
