"""The oracle of simulated data: the radio-map posterior with the simulator's own maps and noise.

It knows the simulator's path loss (in ORACLE_HEIGHT_BINS log-spaced bins over the scenario's range of
transmitter antenna heights, with the spread of the path loss across each bin and across each grid cell as
the map's own uncertainty), the shadowing fields, the receivers' gain offsets, the fading and measurement
noise, and the transmit power range (a flat prior over exactly that range); not the position nor the transmit
power. The transmitter's height it is either told (its bin: fast, what `heimdall evaluate` reports) or
marginalises under the height's prior like the power: then it is the Bayes posterior of the generative model
(up to the height bins and the grid), the floor no estimator should beat in mean negative log-likelihood on
simulated data, and the reference for accuracy ratios (bench/bench_labels.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from heimdall.radiomap.answer_arrays import MapAnswers, localize_all
from heimdall.radiomap.fading_kernel import scenario_fading
from heimdall.radiomap.field import FieldHyper, krige_on_grid
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.kernel import POWER_STEP_DB
from heimdall.radiomap.measurement_noise import power_noise_for
from heimdall.radiomap.model import RadioMap
from heimdall.radiomap.posterior import mixture

if TYPE_CHECKING:
    from heimdall.scenario.domain import Scenario, ShadowingComponent
    from heimdall.sim.generator import World

ORACLE_HEIGHT_BINS = 16
EXACT_NUGGET_DB = 0.1  # the nugget of fields kriged from their exact values (keeps the local systems regular)


def height_edges(scenario: Scenario) -> np.ndarray:
    """Edges [B + 1] in m of the height bins, log-spaced over the scenario's transmitter antenna heights."""
    lo, hi = scenario.transmitter.antenna_height_m
    return np.geomspace(lo, max(hi, lo * 1.0001), ORACLE_HEIGHT_BINS + 1)


def height_bins(scenario: Scenario, heights_m: np.ndarray) -> np.ndarray:
    """Bin index [n] of each transmitter height."""
    edges = height_edges(scenario)
    return np.clip(np.searchsorted(edges, heights_m, side="right") - 1, 0, ORACLE_HEIGHT_BINS - 1)


def height_log_prior(scenario: Scenario) -> np.ndarray:
    """The log prior [B] of each height bin: heights are drawn uniformly over the scenario's range (heimdall.sim)."""
    widths = np.diff(height_edges(scenario))
    return np.log(widths / widths.sum())


def without_components(scenario: Scenario, hidden: tuple[int, ...]) -> tuple[Scenario, float]:
    """(the scenario with shadowing components `hidden` (indices) silenced — the others' fields unchanged —, the
    hidden components' total σ in dB)."""
    sh = scenario.environment.shadowing
    if any(not 0 <= i < len(sh.components) for i in hidden):
        raise ValueError(f"hidden shadowing components {hidden}: the scenario has {len(sh.components)}")
    kept = tuple(replace(c, sigma_db=0.0) if i in hidden else c for i, c in enumerate(sh.components))
    hidden_sd_db = float(np.sqrt(sum(sh.components[i].sigma_db ** 2 for i in hidden)))
    environment = replace(scenario.environment, shadowing=replace(sh, components=kept))
    return replace(scenario, environment=environment), hidden_sd_db


def oracle_maps(
    scenario: Scenario,
    gain_offset_db: np.ndarray,
    spacing_m: float,
    coarse_factor: int = 4,
    hidden: tuple[int, ...] = (),
    known_at_m: np.ndarray | None = None,
) -> list[RadioMap]:
    """One true map per height bin (heimdall.sim's path loss, shadowing fields and gains). A bin's map holds the
    path loss at the bin's geometric centre; its spread combines the standard deviation of a loss uniform between
    the losses at the bin's edges (heights are drawn uniformly, the loss is monotonic in height) with the field's
    variation across a cell (steep near a receiver). Shadowing components `hidden` (indices) are not known: their
    σ joins the spread (a partial oracle: what an estimator that resolves only the other components can reach).
    known_at_m [k, 2] (m): the fields are known exactly only there, kriged elsewhere with their true covariance
    and the kriging variance joins the spread (an optimistic floor of a map learned from labels at those
    positions: it knows every receiver's field at every one of them)."""
    from heimdall.features import FeatureParams
    from heimdall.scenario.path_loss import median_path_loss_db
    from heimdall.sim.generator import build_world

    known, hidden_sd_db = without_components(scenario, hidden)
    world = build_world(known)
    grid = MapGrid.over(world.bounds_m, spacing_m, coarse_factor)
    centres = grid.centres()
    d = np.linalg.norm(centres[:, None, :] - world.rx_position_m[None], axis=-1)
    shadow, kriging_var_db2 = _shadowing(world, known.environment.shadowing.components, grid, known_at_m)
    kernels, weights = scenario_fading(scenario)
    lo, hi = scenario.transmitter.power_dbm
    n_power = int(round((hi - lo) / POWER_STEP_DB)) + 1
    base = RadioMap(
        grid=grid,
        receiver_ids=tuple(r.id for r in scenario.receivers),
        rx_position_m=world.rx_position_m,
        mean_dbm=np.zeros((0, 0), np.float32),
        spread_db=np.zeros((0, 0), np.float32),
        noise=power_noise_for(FeatureParams.from_scenario(scenario)),
        kernels=tuple(kernels),
        component_log_weight=weights,
        power_start_dbm=float(lo),
        power_log_prior=np.full(n_power, -np.log(n_power)),
        info={"kind": "oracle"},
    )
    edges = height_edges(scenario)

    def loss_db(h_m: float) -> np.ndarray:
        return median_path_loss_db(
            scenario.environment.path_loss, d, scenario.frequency_hz, h_m, world.rx_height_m[None, :]
        )

    edge_loss = [loss_db(h) for h in edges]
    maps = []
    for b in range(ORACLE_HEIGHT_BINS):
        h = float(np.sqrt(edges[b] * edges[b + 1]))
        mean_dbm = -loss_db(h) + shadow + gain_offset_db
        across_bin_db = np.abs(edge_loss[b + 1] - edge_loss[b]) / np.sqrt(12.0)
        maps.append(
            replace(
                base,
                mean_dbm=mean_dbm.astype(np.float32),
                spread_db=np.sqrt(
                    across_bin_db**2 + grid.within_cell_sd_db(mean_dbm) ** 2 + hidden_sd_db**2 + kriging_var_db2
                ).astype(np.float32),
                info={"kind": "oracle", "tx_height_m": h},
            )
        )
    for m in maps[1:]:  # one table for all bins
        m.share_table(maps[0])
    return maps


def _shadowing(
    world: World, components: tuple[ShadowingComponent, ...], grid: MapGrid, known_at_m: np.ndarray | None
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(the shadowing fields at every cell [cells, R] dB, their variance there [cells, R] dB²): exact (variance
    0), or kriged from their exact values at `known_at_m` with the components' covariance."""
    if world.fields is None:
        return 0.0, 0.0
    if known_at_m is None:
        return world.fields.sample(grid.centres()).astype(np.float64), 0.0
    used = [c for c in components if c.sigma_db > 0]  # the hidden ones are silenced
    h = FieldHyper(tuple(c.sigma_db for c in used), tuple(c.correlation_m for c in used), EXACT_NUGGET_DB)
    at_labels = world.fields.sample(known_at_m).astype(np.float64)
    noise = np.zeros(len(known_at_m))
    kriged = [krige_on_grid(grid, known_at_m, at_labels[:, r], noise, h) for r in range(at_labels.shape[1])]
    return np.stack([m for m, _ in kriged], 1), np.stack([v for _, v in kriged], 1)


def oracle_answers(
    scenario: Scenario,
    gain_offset_db: np.ndarray,
    tx_height_m: np.ndarray,
    snr_db: np.ndarray,
    noise_dbm: np.ndarray,
    present: np.ndarray,
    truth_m: np.ndarray,
    spacing_m: float,
    on_progress: Callable[[int, int], None] | None = None,
    hidden: tuple[int, ...] = (),
    height_known: bool = True,
    known_at_m: np.ndarray | None = None,
    workers: int | None = None,
) -> MapAnswers:
    """The oracle's answers for simulated test transmissions (arrays [n, R]; tx_height_m [n]); `hidden`: shadowing
    components it does not know (oracle_maps). height_known: each transmission's map is its height bin's; else
    the height is marginalised like the transmit power (the posterior mixed over the bins under the height's
    prior: the Bayes posterior of the generative model, ORACLE_HEIGHT_BINS times the work). known_at_m: the
    fields are known only there (oracle_maps). The posteriors in `workers` threads (None: every CPU)."""
    maps = oracle_maps(scenario, gain_offset_db, spacing_m, hidden=hidden, known_at_m=known_at_m)
    if height_known:
        bins = height_bins(scenario, tx_height_m)
        return localize_all(
            lambda i: maps[bins[i]].localize(snr_db[i], noise_dbm[i], present[i]),
            len(snr_db),
            truth_m,
            on_progress,
            workers,
        )
    log_prior = height_log_prior(scenario)
    return localize_all(
        lambda i: mixture([m.localize(snr_db[i], noise_dbm[i], present[i]) for m in maps], log_prior),
        len(snr_db),
        truth_m,
        on_progress,
        workers,
    )
