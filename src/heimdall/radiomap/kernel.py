"""The grid posterior's compiled kernels (numba, no GIL): the per-cell log posterior, the coarse-to-fine search,
and what an answer reads from a posterior (moments, HPD levels, modes, the box a region is drawn on, the hybrid
product).

The maths is stated in heimdall.radiomap.model; this is its one implementation. Layout choices, measured
(docs/RADIOMAP.md):
- the likelihood table is held as likelihoods, not logs, scaled by a constant so that a product of up to
  `group` of them stays inside float32's range: the receivers' terms of a (cell, power, fading component) then
  multiply, and no exp is taken per term;
- it is split by the phase of the power stride (POWER_STEP_DB / STEP_DB columns of Δ per power step), so that
  one receiver's terms over a power window are contiguous and multiply as vectors;
- the per-cell window starts and table offsets are computed CHUNK cells at a time, receiver by receiver, so that
  they vectorise across cells too;
- reductions run over LANES partial results (vectorised without reassociating a sum);
- a posterior is held as weights on the bounding box of the cells it kept (zeros where it pruned), so that what an
  answer reads needs no cell indices;
- an HPD level is found by bucketing the weights on their float exponent and sorting only the bucket it falls in.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from numba import njit
from numba.core import config as numba_config

from heimdall.radiomap.likelihood import STEP_DB


def _probe() -> int:
    return 0


# numba caches the compiled kernels beside this file or in the user's cache folder (NUMBA_CACHE_DIR when set); where
# neither is writable (a read-only install, no home), it would refuse to define them: use the temporary folder
try:
    njit(cache=True)(_probe)
except RuntimeError:
    cache_dir = os.path.join(tempfile.gettempdir(), f"heimdall-numba-{os.getuid() if hasattr(os, 'getuid') else 0}")
    numba_config.CACHE_DIR = cache_dir  # type: ignore[attr-defined]  # numba sets it from NUMBA_CACHE_DIR

POWER_STEP_DB = 1.0
STRIDE = int(round(POWER_STEP_DB / STEP_DB))  # table columns of Δ per power step
INV_STEP_DB = 1.0 / STEP_DB  # exact: STEP_DB is a power of two
INV_POWER_STEP_DB = 1.0 / POWER_STEP_DB
FLOAT32_LOG_RANGE = 85.0  # |log| of what a float32 product may reach (float32 is normal within e^±87.3)
LANES = 16  # partial sums of a reduction
CHUNK = 64  # cells whose window starts and table offsets are computed together

# HPD levels: weights bucketed by their float64 bit pattern below the largest one, 2^(52 − _BUCKET_SHIFT) buckets
# per octave over _BUCKET_OCTAVES octaves (the rest share the last bucket)
_BUCKET_SHIFT = 47
_BUCKET_OCTAVES = 48
_N_BUCKETS = _BUCKET_OCTAVES << (52 - _BUCKET_SHIFT)
_HISTOGRAMS = 4


def linear_table(log_table: np.ndarray) -> tuple[np.ndarray, float, int]:
    """(exp(log_table + shift) as float32, shift, group): the likelihoods scaled by e^shift so that they lie within
    e^±h, h half the table's log range, and `group`, how many of them multiply within float32's range."""
    lo, hi = float(log_table.min()), float(log_table.max())
    shift = -(lo + hi) / 2
    half_range = max((hi - lo) / 2, 1e-3)
    likelihoods = log_table.astype(np.float64, order="C")
    likelihoods += shift
    np.exp(likelihoods, out=likelihoods)
    return (
        likelihoods.astype(np.float32),
        shift,
        max(1, int(FLOAT32_LOG_RANGE // half_range)),
    )


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def log_posterior(
    cells: np.ndarray,
    the_map: tuple,
    transmission: tuple,
    out: np.ndarray,
    power_mean: np.ndarray,
    power_var: np.ndarray,
) -> None:
    """Unnormalised log posterior of `cells` (int64 [n]) into out (float64 [n]); when power_mean/power_var have n
    entries, the transmit power's posterior mean (dBm) and variance (dB²) in each cell too.

    the_map: (table, shift, group, mean_dbm, spread_index, prior, power_start_dbm, delta_start_db, pad, n_delta) —
    table float32 [C, S, U, STRIDE, Q], the likelihoods p_c(u | Δ) by fading component, spread level and
    measured-SNR row, times e^shift (linear_table), padded by `pad` edge columns at both ends of Δ (n_delta columns
    in all, the first at delta_start_db − pad·STEP_DB), column d at [..., d % STRIDE, d // STRIDE]; `group` of them
    multiply within float32's range; mean_dbm float32 [cells, R]; spread_index uint8 [cells, R]; prior float64
    [C, K], the component weight times π(P) on POWER_STEP_DB steps from power_start_dbm.
    transmission: (rx, rows, ref_db, level_dbm, noise_dbm, strong, width) — per used receiver (r of them, int64
    rx [r]): table row, reference SNR (dB), measured level snr + noise (dBm), noise (dBm), strong (bool); `width`
    powers per cell (the whole prior when no receiver is strong)."""
    table, shift, group, mean_dbm, spread_index, prior, power_start_dbm, delta_start_db, pad, n_delta = the_map
    rx, rows, ref_db, level_dbm, noise_dbm, strong, width = transmission
    n_comp, n_spread, n_rows, _, n_q = table.shape
    flat = table.ravel()
    comp_size = n_spread * n_rows * STRIDE * n_q
    n_rx = rx.shape[0]
    k_all = prior.shape[1]
    n_groups = -(-n_rx // group)
    product = np.empty(n_comp * width, np.float32)
    weighted = np.zeros(-(-n_comp * width // LANES) * LANES)  # product × prior, float64, zeros beyond the terms
    lanes = np.empty(LANES)
    offset = np.empty((n_rx, CHUNK), np.int64)
    start = np.zeros(CHUNK, np.int64)
    implied = np.empty(CHUNK)
    strong_rx = rx[strong]
    strong_level = level_dbm[strong]
    n_strong = strong_rx.shape[0]
    last_start = float(k_all - width)
    last_base = float(n_delta - 1 - STRIDE * (width - 1))
    half = width // 2
    moments = power_mean.shape[0] == cells.shape[0]
    n = cells.shape[0]
    for i0 in range(0, n, CHUNK):
        m = min(CHUNK, n - i0)
        if n_strong > 0:  # each cell's window centred on the power the strong receivers imply there
            implied[:m] = 0.0
            for j in range(n_strong):
                r, level = strong_rx[j], strong_level[j]
                for t in range(m):
                    implied[t] += level - np.float64(mean_dbm[cells[i0 + t], r])
            for t in range(m):
                centre = np.rint((implied[t] / n_strong - power_start_dbm) * INV_POWER_STEP_DB)
                start[t] = np.int64(min(max(centre - half, 0.0), last_start))
        for j in range(n_rx):
            r, noise, ref, row = rx[j], noise_dbm[j], ref_db[j], rows[j]
            for t in range(m):
                cell = cells[i0 + t]
                power0 = power_start_dbm + POWER_STEP_DB * start[t]
                delta = (power0 + np.float64(mean_dbm[cell, r]) - noise - ref - delta_start_db) * INV_STEP_DB
                base = np.int64(min(max(np.rint(delta + pad), 0.0), last_base))
                table_row = np.int64(spread_index[cell, r]) * n_rows + row
                offset[j, t] = (table_row * STRIDE + base % STRIDE) * n_q + base // STRIDE
        for t in range(m):
            # indices are written max(·, 0): numba wraps negative indices around, and unless LLVM knows an index is
            # not negative, contiguous loads become gathers (4× slower here)
            log_scale = 0.0
            for c in range(n_comp):
                a0 = max(c * width, 0)
                for g in range(n_groups):  # the product of a group's terms in float32, two rows at a time
                    j, j_end = g * group, min((g + 1) * group, n_rx)
                    o = max(c * comp_size + offset[j, t], 0)
                    for k in range(width):
                        product[a0 + k] = flat[o + k]
                    j += 1
                    while j < j_end:
                        o = max(c * comp_size + offset[j, t], 0)
                        if j + 1 < j_end:
                            o2 = max(c * comp_size + offset[j + 1, t], 0)
                            for k in range(width):
                                product[a0 + k] *= flat[o + k] * flat[o2 + k]
                            j += 2
                        else:
                            for k in range(width):
                                product[a0 + k] *= flat[o + k]
                            j += 1
                    if n_groups > 1:  # groups multiply in float64
                        for k in range(width):
                            weighted[a0 + k] = product[a0 + k] * (weighted[a0 + k] if g else 1.0)
            if n_groups > 1:  # rescaled by the largest term (those far below it may underflow: they do not count)
                top = weighted.max()
                log_scale = np.log(top)
                for k in range(n_comp * width):
                    product[k] = weighted[k] / top
            p0 = max(start[t], 0)
            for c in range(n_comp):
                a0 = max(c * width, 0)
                for k in range(width):
                    weighted[a0 + k] = prior[c, p0 + k] * product[a0 + k]
            for k in range(LANES):
                lanes[k] = 0.0
            for k0 in range(0, weighted.shape[0], LANES):
                for k in range(LANES):
                    lanes[k] += weighted[k0 + k]
            total = lanes.sum()
            out[i0 + t] = np.log(total) + log_scale - n_rx * shift
            if moments:
                power0 = power_start_dbm + POWER_STEP_DB * start[t]
                s1 = 0.0
                s2 = 0.0
                for k in range(width):
                    w = 0.0
                    for c in range(n_comp):
                        w += weighted[c * width + k]
                    power = power0 + POWER_STEP_DB * k
                    s1 += w * power
                    s2 += w * power * power
                power_mean[i0 + t] = s1 / total
                power_var[i0 + t] = s2 / total - power_mean[i0 + t] ** 2


@njit(cache=True, nogil=True, error_model="numpy")
def hpd_levels(weights: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """For weights (float64 [n] ≥ 0, n ≥ 1) sorted in decreasing order w₀ ≥ w₁ ≥ …, and each probability p: w_k, k
    the first index with w₀ + … + w_k ≥ p (the smallest weight when none is). O(n): weights are bucketed on their
    float exponent, and only the bucket a level falls in is sorted (unless its weights are all equal)."""
    n = weights.shape[0]
    bits = weights.view(np.int64)  # non-negative floats order as their bit patterns
    top = bits.max()
    key = np.empty(n, np.int16)
    for i in range(n):  # a weight of 0 (bits 0) falls in the last bucket
        key[i] = min((top - bits[i]) >> _BUCKET_SHIFT, _N_BUCKETS)
    # _HISTOGRAMS histograms, element i in number i % _HISTOGRAMS: consecutive additions do not wait on each other
    mass = np.zeros((_N_BUCKETS + 1) * _HISTOGRAMS)
    for i0 in range(0, n, _HISTOGRAMS):
        for h in range(min(_HISTOGRAMS, n - i0)):
            mass[max(int(key[i0 + h]) * _HISTOGRAMS + h, 0)] += weights[i0 + h]
    bucket_mass = np.zeros(_N_BUCKETS + 1)  # (an explicit sum: .sum(axis=1) alone takes seconds to compile)
    for b in range(_N_BUCKETS + 1):
        for h in range(_HISTOGRAMS):
            bucket_mass[b] += mass[b * _HISTOGRAMS + h]
    levels = np.full(probabilities.shape[0], bits.min()).view(np.float64)
    for q in range(probabilities.shape[0]):
        cum = 0.0
        for b in range(_N_BUCKETS + 1):  # the sequential sum decides within the bucket (and past it, rarely)
            if cum + bucket_mass[b] < probabilities[q] and b < _N_BUCKETS:
                cum += bucket_mass[b]
                continue
            members = np.empty(n)
            m = 0
            for i in range(n):
                if key[i] == b:
                    members[m] = weights[i]
                    m += 1
            part = members[:m]
            if m and part.min() < part.max():
                part = np.sort(part)[::-1]
            t = 0
            while t < m and cum + part[t] < probabilities[q]:
                cum += part[t]
                t += 1
            if t < m:
                levels[q] = part[t]
                break
    return levels


@njit(cache=True, nogil=True)
def _kth_smallest(values: np.ndarray, k: int) -> float:
    """The k-th smallest of values (float64 [n], no NaN, 0 ≤ k < n; values is reordered): np.partition(values, k)[k]
    by quickselect (np.partition takes seconds more to compile)."""
    lo, hi = 0, values.shape[0] - 1
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return values[k]
    return values[k]


@njit(inline="always")
def _block_size(b: int, nbx: int, nx: int, ny: int, f: int) -> tuple[int, int]:
    """(rows, columns) of block b's cells inside the grid."""
    return min(f, ny - (b // nbx) * f), min(f, nx - (b % nbx) * f)


@njit(cache=True, nogil=True, error_model="numpy")
def localize(
    nx: int,
    ny: int,
    factor: int,
    representatives: np.ndarray,
    prune_mass: float,
    refined_blocks: int,
    the_map: tuple,
    transmission: tuple,
) -> tuple[np.ndarray, int, int, float]:
    """(weights float64 [h, w] summing to 1, j0, i0, log evidence) of one transmission on an nx × ny grid (the map
    and transmission arguments as log_posterior's): the weights on the bounding box of the cells kept, with a
    border of empty cells, (j0, i0) the grid row and column of its first cell; the log evidence as GridPosterior
    defines it. Blocks of factor × factor cells (row-major over
    blocks, a partial block at each far edge) are scored at their representative cell (int64 [blocks]); those
    outside the 1 − prune_mass of the mass, and not next to one inside, are dropped; the refined_blocks most
    probable of the others are scored cell by cell; the rest keep their representative's value over the block."""
    f = factor
    nby, nbx = -(-ny // f), -(-nx // f)
    n_blocks = nby * nbx
    empty = np.empty(0)
    coarse = np.empty(n_blocks)
    log_posterior(representatives, the_map, transmission, coarse, empty, empty)
    w = np.exp(coarse - coarse.max())
    w /= w.sum()
    level = hpd_levels(w, np.array([1.0 - prune_mass]))[0]
    # kept: the blocks holding 1 − prune_mass of the mass and their 8 neighbours
    keep = np.zeros(n_blocks, np.bool_)
    for bj in range(nby):
        for bi in range(nbx):
            if w[bj * nbx + bi] >= level:
                for dj in range(max(bj - 1, 0), min(bj + 2, nby)):
                    for di in range(max(bi - 1, 0), min(bi + 2, nbx)):
                        keep[dj * nbx + di] = True
    kept = np.flatnonzero(keep)
    # refined: the refined_blocks most probable kept blocks (of equal weights at the cut, the first ones)
    cut = -np.inf
    ties = 0
    if len(kept) > refined_blocks:
        cut = _kth_smallest(w[kept], len(kept) - refined_blocks)
        ties = refined_blocks - np.sum(w[kept] > cut)
    refined = np.zeros(n_blocks, np.bool_)
    n_fine = 0
    for q in range(kept.shape[0]):
        b = kept[q]
        if w[b] > cut or (w[b] == cut and ties > 0):
            ties -= w[b] == cut
            refined[b] = True
            h, wd = _block_size(b, nbx, nx, ny, f)
            n_fine += h * wd
    fine_cells = np.empty(n_fine, np.int64)
    t = 0
    for q in range(kept.shape[0]):
        b = kept[q]
        if refined[b]:
            h, wd = _block_size(b, nbx, nx, ny, f)
            for dj in range(h):
                for di in range(wd):
                    fine_cells[t] = ((b // nbx) * f + dj) * nx + (b % nbx) * f + di
                    t += 1
    fine = np.empty(n_fine)
    log_posterior(fine_cells, the_map, transmission, fine, empty, empty)
    # weights on the bounding box of the kept blocks, a border of empty cells around it
    bj0, bj1, bi0, bi1 = nby, -1, nbx, -1
    top = fine.max() if n_fine else -np.inf
    for q in range(kept.shape[0]):
        b = kept[q]
        bj0, bj1, bi0, bi1 = min(bj0, b // nbx), max(bj1, b // nbx), min(bi0, b % nbx), max(bi1, b % nbx)
        if not refined[b]:
            top = max(top, coarse[b])
    j0, i0 = bj0 * f - 1, bi0 * f - 1
    fine_w = np.exp(fine - top)  # one exp per refined cell and per tail block
    tail_w = np.zeros(n_blocks)
    total = fine_w.sum()
    for q in range(kept.shape[0]):
        b = kept[q]
        if not refined[b]:
            h, wd = _block_size(b, nbx, nx, ny, f)
            tail_w[b] = np.exp(coarse[b] - top)
            total += tail_w[b] * (h * wd)
    dense = np.zeros((min((bj1 + 1) * f, ny) - j0 + 1, min((bi1 + 1) * f, nx) - i0 + 1))
    fine_w /= total
    tail_w /= total
    t = 0
    for q in range(kept.shape[0]):
        b = kept[q]
        h, wd = _block_size(b, nbx, nx, ny, f)
        r0, c0 = max((b // nbx) * f - j0, 0), max((b % nbx) * f - i0, 0)
        if refined[b]:
            for dj in range(h):
                for di in range(wd):
                    dense[r0 + dj, c0 + di] = fine_w[t]
                    t += 1
        else:
            for dj in range(h):
                for di in range(wd):
                    dense[r0 + dj, c0 + di] = tail_w[b]
    return dense, j0, i0, np.log(total) + top - np.log(nx * ny)


@njit(cache=True, nogil=True, error_model="numpy")
def hpd_parts(dense: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The connected parts (8-neighbourhood) of the cells of `dense` (float64 [h, w] weights, empty first and last
    rows and columns) with weight ≥ level, numbered in raster order of their first cell: (mass float64 [parts],
    flat index in dense of the most probable cell int64 [parts], the first in raster order of equal ones). One
    raster pass with union-find; each provisional label sums its own cells, and the labels of a part are merged
    at the end."""
    h, wd = dense.shape
    label = np.full((h, wd), -1, np.int32)
    parent = np.empty(h * wd, np.int32)
    label_mass = np.empty(h * wd)
    label_top = np.empty(h * wd)  # its most probable cell's weight and flat index
    label_best = np.empty(h * wd, np.int64)
    n_labels = 0
    for j in range(1, h - 1):
        for i in range(1, wd - 1):
            w = dense[j, i]
            if w < level:
                continue
            mine = -1
            for other in (label[j, i - 1], label[j - 1, i - 1], label[j - 1, i], label[j - 1, i + 1]):
                if other < 0:
                    continue
                while parent[other] != other:  # find, halving the path
                    parent[other] = parent[parent[other]]
                    other = parent[other]
                if mine < 0:
                    mine = other
                elif other != mine:  # two parts meet: the later label joins the earlier one
                    if other < mine:
                        mine, other = other, mine
                    parent[other] = mine
            if mine < 0:
                mine = n_labels
                parent[mine], label_mass[mine], label_top[mine] = mine, 0.0, -1.0
                n_labels += 1
            label[j, i] = mine
            label_mass[mine] += w
            if w > label_top[mine]:
                label_top[mine], label_best[mine] = w, j * wd + i
    part = np.full(n_labels, -1, np.int64)  # root label → part, numbered in the order of the roots' first cells
    masses = np.zeros(n_labels)
    best = np.full(n_labels, -1, np.int64)
    best_w = np.full(n_labels, -1.0)
    n_parts = 0
    for q in range(n_labels):
        root = q
        while parent[root] != root:
            root = parent[root]
        if part[root] < 0:
            part[root] = n_parts
            n_parts += 1
        k = part[root]
        masses[k] += label_mass[q]
        if label_top[q] > best_w[k] or (label_top[q] == best_w[k] and label_best[q] < best[k]):
            best_w[k], best[k] = label_top[q], label_best[q]
    return masses[:n_parts], best[:n_parts]


@njit(cache=True, nogil=True, error_model="numpy")
def box_above(dense: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(first row, last row, first column, last column) of the cells of `dense` (float64 [h, w]) with weight ≥
    threshold (some must be)."""
    h, wd = dense.shape
    j0, j1, i0, i1 = h, -1, wd, -1
    for j in range(h):
        for i in range(wd):
            if dense[j, i] >= threshold:
                j0, j1, i0, i1 = min(j0, j), j, min(i0, i), max(i1, i)
    return j0, j1, i0, i1


@njit(cache=True, nogil=True, error_model="numpy")
def scatter(cells: np.ndarray, values: np.ndarray, nx: int, fill: float) -> tuple[np.ndarray, int, int]:
    """The values (float64 [n]) of cells (int64 [n], ascending, on a grid nx wide) on their bounding box with a
    border of one cell, `fill` where no cell is given: ([h, w], j0, i0), (j0, i0) the grid row and column of its first
    cell."""
    j0, j1, i0, i1 = cells[0] // nx, cells[-1] // nx, nx, -1
    row_start, j = -nx, -1
    for t in range(cells.shape[0]):
        if cells[t] >= row_start + nx:
            j = cells[t] // nx
            row_start = j * nx
        i0, i1 = min(i0, cells[t] - row_start), max(i1, cells[t] - row_start)
    box = np.full((j1 - j0 + 3, i1 - i0 + 3), fill)
    row_start = -nx
    for t in range(cells.shape[0]):
        if cells[t] >= row_start + nx:
            j = cells[t] // nx
            row_start = j * nx
        box[j - j0 + 1, cells[t] - row_start - i0 + 1] = values[t]
    return box, j0 - 1, i0 - 1


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "reassoc"})
def box_summary(box: np.ndarray) -> tuple[np.ndarray, int]:
    """What an answer reads first of the weights `box` (float64 [h, w], summing to 1), in one pass: the moments
    (mean column, mean row, var column, cov, var row) in cells of the box and the flat index of the largest weight
    (the first of equal ones in raster order)."""
    h, wd = box.shape
    column = np.arange(wd).astype(np.float64)
    s_i, s_j, s_ii, s_ij, s_jj = 0.0, 0.0, 0.0, 0.0, 0.0
    lanes = np.zeros(LANES)
    for j in range(h):
        row, row_i, row_ii = 0.0, 0.0, 0.0
        for i0 in range(0, wd, LANES):
            for lane in range(min(LANES, wd - i0)):
                w = box[j, i0 + lane]
                row += w
                row_i += w * column[i0 + lane]
                row_ii += w * column[i0 + lane] * column[i0 + lane]
                lanes[lane] = w if w > lanes[lane] else lanes[lane]
        s_i += row_i
        s_j += row * j
        s_ii += row_ii
        s_ij += row_i * j
        s_jj += row * j * j
    flat = box.reshape(-1)
    top, best = lanes.max(), 0
    while flat[best] != top:
        best += 1
    moments = np.array([s_i, s_j, s_ii - s_i * s_i, s_ij - s_i * s_j, s_jj - s_j * s_j])
    return moments, best


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def tempered(
    log_map: np.ndarray,
    east_m: np.ndarray,
    north_m: np.ndarray,
    mean_m: np.ndarray,
    inv_cov_m2: np.ndarray,
    alpha: float,
    beta: float,
) -> float:
    """In place, the log of a map posterior's weights (float64 [h, w], −inf where no mass) becomes its tempered product
    with a Gaussian: alpha·max(log_map, −700) − ½·beta·(x − μ)ᵀ Σ⁻¹ (x − μ) at the cells' centres (east_m [w], north_m
    [h]; μ mean_m [2], Σ⁻¹ inv_cov_m2 [2, 2]), −inf kept where no mass; returns its largest value."""
    h, wd = log_map.shape
    a, b, c = inv_cov_m2[0, 0], inv_cov_m2[0, 1] + inv_cov_m2[1, 0], inv_cov_m2[1, 1]
    d_east = east_m - mean_m[0]
    lanes = np.full(LANES, -np.inf)
    for j in range(h):
        dn = north_m[j] - mean_m[1]
        for i0 in range(0, wd, LANES):
            for lane in range(min(LANES, wd - i0)):
                i = i0 + lane
                de = d_east[i]
                value = alpha * max(log_map[j, i], -700.0) - 0.5 * beta * (a * de * de + b * de * dn + c * dn * dn)
                value = value if log_map[j, i] > -np.inf else -np.inf
                log_map[j, i] = value
                lanes[lane] = value if value > lanes[lane] else lanes[lane]
    return lanes.max()


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def product_log_masses(
    log_w: np.ndarray, quad: np.ndarray, at: int, alphas: np.ndarray, betas: np.ndarray
) -> np.ndarray:
    """For the cells holding a posterior's mass (log_w float64 [n]: their log weights; quad [n]: (x − μ)ᵀ Σ⁻¹ (x − μ)
    at their centres) and each pair of alphas, betas [P]: the log weight of cell `at` (an index into them; −1: none,
    −inf) in the renormalised product α·max(log_w, −700) − ½β·quad (`tempered`'s), without writing the product."""
    n, n_pairs = log_w.shape[0], alphas.shape[0]
    out = np.full(n_pairs, -np.inf)
    if at < 0:  # no cell: nothing to normalise
        return out
    values = np.empty(n)
    for p in range(n_pairs):
        a, half_b = alphas[p], 0.5 * betas[p]
        lanes = np.full(LANES, -np.inf)
        for k0 in range(0, n, LANES):
            for lane in range(min(LANES, n - k0)):
                v = a * max(log_w[k0 + lane], -700.0) - half_b * quad[k0 + lane]
                values[k0 + lane] = v
                lanes[lane] = v if v > lanes[lane] else lanes[lane]
        top = lanes.max()
        sums = np.zeros(LANES)
        for k0 in range(0, n, LANES):
            for lane in range(min(LANES, n - k0)):
                sums[lane] += np.exp(values[k0 + lane] - top)
        out[p] = values[at] - top - np.log(sums.sum())
    return out


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def tempered_log_masses(
    log_w: np.ndarray, at: int, exponents: np.ndarray, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """For the cells holding a posterior's mass (log_w float64 [n]: their log weights) and each exponent e [T] > 0
    of the posterior raised to it and renormalised (GridPosterior.tempered): the log weight of cell `at` (an index
    into them; −1: none, −inf) and the mass of the cells heavier than it by more than `margin` in log (all of it
    when `at` is −1) — (float64 [T], float64 [T]), without writing the tempered weights."""
    n, n_exp = log_w.shape[0], exponents.shape[0]
    log_at, heavier = np.full(n_exp, -np.inf), np.ones(n_exp)
    if at < 0:  # no cell: every cell is heavier
        return log_at, heavier
    top = -np.inf
    for k in range(n):
        top = log_w[k] if log_w[k] > top else top
    for t in range(n_exp):
        e = exponents[t]
        threshold = e * (log_w[at] - top) + margin
        sums, above = np.zeros(LANES), np.zeros(LANES)
        for k0 in range(0, n, LANES):
            for lane in range(min(LANES, n - k0)):
                v = e * (log_w[k0 + lane] - top)
                w = np.exp(v)
                sums[lane] += w
                above[lane] += w if v > threshold else 0.0
        total = sums.sum()
        heavier[t] = above.sum() / total
        log_at[t] = e * (log_w[at] - top) - np.log(total)
    return log_at, heavier
