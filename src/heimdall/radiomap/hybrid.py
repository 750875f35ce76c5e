"""Map and network together: a tempered product of the two posteriors on the map's cells.

    p(x) ∝ p_map(x)^α · N(x; μ_net, Σ_net)^β

The network (LocalizationNet, trained on the network's own labels or on a simulated twin and fine-tuned)
reads what the map does not model — the spectrum, the emission, sub-threshold detail — while the map knows
the site-specific shadowing and keeps the posterior's modes. Both read the same recordings, so their
evidence overlaps: α and β (each in EXPONENTS) are chosen on validation data by mean negative
log-likelihood, and α = 1, β = 0 (the map alone) is one of the choices. β ≤ α (MAX_NETWORK_WEIGHT): the network's
Gaussian is never sharpened beyond what it claims; a network whose ellipses are too wide on the validation blocks
need not be right beyond them elsewhere.

On measured data the map's noise is not the model's and its regions may be too small (or too large): a temperature
T on the log posterior (p^(1/T), i.e. both exponents divided by T; T > 1 widens, T < 1 sharpens) is then chosen on
validation so that the 95 % regions hold the truth as often as they claim (`calibrating_temperature`); the
exponents shipped are the tempered ones.

Flattening moves the posterior's mean, so an answer reads its point elsewhere (`Weights`, `answer`): from the map at
its own sharpness with the network weighed against it as chosen, p_map · N_net^(β/α) — the map alone: the map as
fitted — and its spread (covariance about the point, regions, modes, densities) from that posterior raised to α, which
is p_map^α · N_net^β. α's part below 1 (its own flattening chosen by NLL, then the temperature) only widens the
regions; it does not move the point.

Away from its training labels a network can be confidently wrong where the map, which reads the physics and the
fields, is not. Where the two answers disagree beyond both their spreads (`network_set_aside`: the squared
Mahalanobis distance of their means under Σ_map + Σ_net above DISAGREEMENT_D2), the network is set aside and the
answer is the map's alone at the shipped α — in the answers, in the choice's NLLs and in its temperature alike.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from heimdall.radiomap.batch import all_in_threads
from heimdall.radiomap.model import RadioMap
from heimdall.radiomap.posterior import (
    DISAGREEMENT_D2,
    HPD_PROBABILITIES,
    LOG_DENSITY_FLOOR,
    GridPosterior,
    TemperedPosterior,
)

EXPONENTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TEMPERATURES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.5, 8.0)  # T tried, coolest first
UNTEMPERED = TEMPERATURES.index(1.0)  # the posterior as it is
REGION95_TARGET = 0.93  # the validation coverage a widened 95 % region reaches (inside the 90–97 % band)
SHARPENED95_TARGET = 0.95  # a sharpened one (T < 1) still holds at least what it claims

MAX_NETWORK_WEIGHT = 1.0  # β/α at most, as the choice ships: the network never weighs more than its own claim
MAX_RATIO = max(EXPONENTS) / min(e for e in EXPONENTS if e > 0)  # β/α a model may carry (read; the exponents' grid)


@dataclass(frozen=True)
class Weights:
    """How an answer weighs the map and the network: the exponents α > 0, β ≥ 0 of p_map^α · N_net^β as shipped
    (tempered; α = 1, β = 0: the map alone as fitted). The point is read from p_map · N_net^(β/α), the spread from
    it raised to α; `region_masses`: the spread's mass each HPD region of HPD_PROBABILITIES is drawn at, as
    recalibrated on validation (`recalibrated_masses`; as claimed by default)."""

    alpha: float
    beta: float
    region_masses: tuple[float, ...] = HPD_PROBABILITIES

    def __post_init__(self) -> None:
        if not (self.alpha > 0.0 and self.beta >= 0.0):
            raise ValueError(f"exponents α = {self.alpha}, β = {self.beta}: expected α > 0 and β ≥ 0")
        m = self.region_masses
        increasing = all(0.0 < a <= b <= 1.0 for a, b in zip(m, (*m[1:], 1.0), strict=True))
        if len(m) != len(HPD_PROBABILITIES) or not increasing:
            raise ValueError(f"region masses {m}: expected {len(HPD_PROBABILITIES)}, increasing, in (0, 1]")

    def masses(self) -> dict[float, float]:
        """Claimed probability → the mass its HPD region is drawn at (TemperedPosterior's `masses`)."""
        return dict(zip(HPD_PROBABILITIES, self.region_masses, strict=True))

    @property
    def network_weight(self) -> float:
        """β/α: the network's exponent against the map's own (1) in the posterior the point is read from."""
        return self.beta / self.alpha

    def without_network(self) -> Weights:
        """The weights of an answer by the map alone: these for a map-only model (β = 0), else the map as fitted
        (a hybrid's calibration is the hybrid's, not its map's)."""
        return self if self.beta == 0.0 else AS_FITTED


AS_FITTED = Weights(1.0, 0.0)


def answer(post: GridPosterior, net_mean_m: np.ndarray, net_cov_m2: np.ndarray, weights: Weights) -> TemperedPosterior:
    """The answer to one transmission from its map posterior and the network's mean [2] m and covariance [2, 2] m²:
    its point from p_map · N_net^(β/α), its spread from that raised to α (heimdall.radiomap.posterior
    .TemperedPosterior)."""
    return TemperedPosterior(point_posterior(post, net_mean_m, net_cov_m2, weights), weights.alpha, weights.masses())


def point_posterior(
    post: GridPosterior, net_mean_m: np.ndarray, net_cov_m2: np.ndarray, weights: Weights
) -> GridPosterior:
    """p_map · N_net^(β/α): the posterior an answer reads its point from (the map's own when β = 0 or the network
    is set aside)."""
    if weights.beta == 0.0 or network_set_aside(post, net_mean_m, net_cov_m2) is not None:
        return post
    return post.times_gaussian(net_mean_m, net_cov_m2, 1.0, weights.network_weight)


def network_set_aside(post: GridPosterior, net_mean_m: np.ndarray, net_cov_m2: np.ndarray) -> float | None:
    """GridPosterior.disagreement_d2 of the map's posterior and the network's answer (mean [2] m, covariance [2, 2]
    m²) where the network is set aside (beyond DISAGREEMENT_D2), None where it is not."""
    d2 = post.disagreement_d2(net_mean_m, net_cov_m2)
    return d2 if d2 > DISAGREEMENT_D2 else None


def hybrid_answer(
    radio_map: RadioMap,
    snr_db: np.ndarray,
    noise_dbm: np.ndarray,
    present: np.ndarray,
    net_mean_m: np.ndarray,
    net_cov_m2: np.ndarray,
    weights: Weights,
    heard: np.ndarray | None = None,
) -> TemperedPosterior:
    """The answer of a map-carrying model to one transmission (the map's inputs [R] as RadioMap.localize reads them,
    the network's mean [2] m and covariance [2, 2] m²; `answer`)."""
    return answer(radio_map.localize(snr_db, noise_dbm, present, heard), net_mean_m, net_cov_m2, weights)


def exponent_nlls(
    posts: list[GridPosterior],
    net_mean_m: np.ndarray,
    net_cov_m2: np.ndarray,
    truth_m: np.ndarray,
    workers: int | None = None,
) -> dict[tuple[float, float], float]:
    """Mean negative log-likelihood (per km²) of the truths [n, 2] for every (α, β) with α > 0 and β/α at most
    MAX_NETWORK_WEIGHT (β = 0: the map alone, tempered by α; so is a transmission whose network is set aside,
    network_set_aside), the transmissions in `workers` threads (None: every CPU)."""
    # the network alone is judged as a network, with its own (unpruned) Gaussian: network_nll
    pairs = [(a, b) for a, b in itertools.product(EXPONENTS, EXPONENTS) if 0.0 < a and b <= MAX_NETWORK_WEIGHT * a]

    alphas, betas = np.array(pairs, np.float64).T

    def nlls(i: int) -> np.ndarray:
        post, mean, cov = posts[i], net_mean_m[i], net_cov_m2[i]
        kept = 0.0 if network_set_aside(post, mean, cov) is not None else 1.0
        return -post.products_log_density_at(truth_m[i], mean, cov, alphas, betas * kept)

    per_transmission = np.array(all_in_threads(nlls, len(posts), workers), np.float64).reshape(-1, len(pairs))
    return {pair: float(np.mean(per_transmission[:, k])) for k, pair in enumerate(pairs)}


def best_exponents(
    nlls: dict[tuple[float, float], float], beta_positive: bool | None = None
) -> tuple[float, float, float]:
    """(α, β, mean NLL) of the lowest entry of `nlls` (exponent_nlls); only those with β > 0 (the hybrid) or β = 0
    (the map alone) when `beta_positive` says so."""
    kept = {k: v for k, v in nlls.items() if beta_positive is None or (k[1] > 0) == beta_positive}
    (alpha, beta), nll = min(kept.items(), key=lambda kv: kv[1])
    return alpha, beta, nll


def choose_exponents(
    posts: list[GridPosterior],
    net_mean_m: np.ndarray,
    net_cov_m2: np.ndarray,
    truth_m: np.ndarray,
    workers: int | None = None,
) -> tuple[float, float, float]:
    """(α, β, mean NLL) with the lowest mean negative log-likelihood (per km²) of the truths [n, 2]."""
    return best_exponents(exponent_nlls(posts, net_mean_m, net_cov_m2, truth_m, workers))


def network_nll(net_mean_m: np.ndarray, net_cov_m2: np.ndarray, truth_m: np.ndarray) -> float:
    """Mean negative log-likelihood of the truths [n, 2] under the network's Gaussians (mean [n, 2] m, covariance
    [n, 2, 2] m²), on the grid posterior's footing: density per km², floored at LOG_DENSITY_FLOOR as a pruned
    cell is, so one wild answer costs the network what it costs the map."""
    cov_km2 = net_cov_m2 / 1e6
    d = (truth_m - net_mean_m) / 1e3
    log_density = -0.5 * np.einsum("ni,nij,nj->n", d, np.linalg.inv(cov_km2), d) - 0.5 * np.log(
        np.linalg.det(2 * np.pi * cov_km2)
    )
    return float(np.mean(-np.maximum(np.nan_to_num(log_density, nan=-np.inf), LOG_DENSITY_FLOOR)))


def temperature_scores(
    posts: list[GridPosterior],
    net_mean_m: np.ndarray,
    net_cov_m2: np.ndarray,
    truth_m: np.ndarray,
    alpha: float,
    beta: float,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(float64 [n, len(TEMPERATURES), 3], float64 [n]): for each truth [n, 2] and temperature T, under the answer
    with exponents α/T, β/T (β = 0: the map alone; `answer`), its NLL (per km²) and whether it lies inside the 50 %
    and the 95 % region (0 or 1); and the distance (m) of each truth from the answer's point, which the temperature
    does not move. The transmissions in `workers` threads (None: every CPU)."""
    exponents = alpha / np.array(TEMPERATURES)

    def scores(i: int) -> np.ndarray:
        point = point_posterior(posts[i], net_mean_m[i], net_cov_m2[i], Weights(alpha, beta))
        # TemperedPosterior(point, α/T)'s spread, read at the truth without building it
        log_density, inside = point.tempered_reads_at(truth_m[i], exponents, (0.5, 0.95))
        per_temperature = np.column_stack([-log_density, inside]).ravel()
        return np.concatenate([[np.hypot(*(point.mean_m - truth_m[i]))], per_temperature])

    per_transmission = np.array(all_in_threads(scores, len(posts), workers), np.float64)
    return per_transmission[:, 1:].reshape(len(posts), len(TEMPERATURES), 3), per_transmission[:, 0]


def held_masses(
    posts: list[GridPosterior],
    net_mean_m: np.ndarray,
    net_cov_m2: np.ndarray,
    truth_m: np.ndarray,
    weights: Weights,
    workers: int | None = None,
) -> np.ndarray:
    """float64 [n]: for each truth [n, 2], the mass above which the HPD regions of its answer (`answer` with
    `weights`, regions as claimed) hold it (GridPosterior.hpd_mass_at; inf where none does). The transmissions in
    `workers` threads (None: every CPU)."""
    as_claimed = Weights(weights.alpha, weights.beta)

    def held(i: int) -> float:
        q = answer(posts[i], net_mean_m[i], net_cov_m2[i], as_claimed)
        return float(q.spread.hpd_mass_at(truth_m[i][None])[0])

    return np.array(all_in_threads(held, len(posts), workers), np.float64)


def recalibrated_masses(held: np.ndarray) -> tuple[tuple[float, ...], np.ndarray]:
    """The mass each HPD region but the widest is to be drawn at so that it holds its share of the validation truths
    — the smallest mass whose regions hold at least that share of them (`held`: held_masses [n]), at most the
    widest's — and the coverage those masses reach out of sample (each half of the truths, alternate ones, judged
    with the masses of the other). The widest (95 %) keeps its own mass: the temperature calibrates it
    (calibrating_temperature), and a mass above it would draw a region of nearly every cell the posterior holds."""
    shares = HPD_PROBABILITIES[:-1]
    widest = HPD_PROBABILITIES[-1]

    def masses_of(values: np.ndarray) -> np.ndarray:
        # a region of mass m holds the truths whose held mass is below m: half-way between the k-th smallest and the
        # next larger one holds k (clear of both, whatever the rounding of the sums)
        ranked = np.sort(values)
        out = []
        for k in np.ceil(np.asarray(shares) * len(values)).astype(int):
            larger = ranked[ranked > ranked[k - 1]]
            out.append((ranked[k - 1] + min(larger[0], 1.0)) / 2 if len(larger) else 1.0)
        return np.minimum(np.maximum.accumulate(out), widest)

    def coverage(values: np.ndarray, masses: np.ndarray) -> np.ndarray:
        return np.sum(values[:, None] < masses[None], axis=0)

    if len(held) < 4:
        return HPD_PROBABILITIES, np.array([np.mean(held < q) for q in shares])
    halves = (held[0::2], held[1::2])
    crossed = coverage(halves[0], masses_of(halves[1])) + coverage(halves[1], masses_of(halves[0]))
    return (*(float(m) for m in masses_of(held)), widest), crossed / len(held)


def calibrating_temperature(coverage95: np.ndarray) -> int:
    """Index into TEMPERATURES of the coolest temperature whose 95 % regions hold enough of the validation truths
    (coverage95 [len(TEMPERATURES)]): a sharpened posterior (T < 1, regions that over-cover made smaller) at least
    SHARPENED95_TARGET, a widened one (T ≥ 1) at least REGION95_TARGET; the hottest when none does."""
    target = np.where(np.asarray(TEMPERATURES) < 1.0, SHARPENED95_TARGET, REGION95_TARGET)
    reached = np.flatnonzero(coverage95 >= target)
    return int(reached[0]) if len(reached) else len(TEMPERATURES) - 1
