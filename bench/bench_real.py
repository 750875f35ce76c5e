"""Localizers on a real, measured network: the POWDER FRS campus data (bench/data/powder_frs, converted from the
public data set by bench/convert_powder.py; nothing is downloaded).

    python bench/bench_real.py [--labels 100 400 all 0] [--splits random spatial] [--spacing-m 20]
                               [--time-budget-s 1200] [--max-test 400] [--json OUT]

For a random and a spatial split (test places at least a gap — heimdall.datasets.place_split, a few hundred metres
here — from every label) and each number of labels (drawn from the training places; 0: no positions at all), it
reports the weighted centroid, kNN fingerprinting (k tuned on a validation split), log-distance maximum likelihood,
the radio map (fitted on the labels, self-calibrated on the recordings without them) and the shipped choice (the
map with its regions recalibrated on validation — heimdall.radiomap.hybrid.calibrating_temperature — unless it is
worse than the weighted centroid there, as heimdall.release.choice rules): median and mean error (m), 95 % region
coverage and mean area, and the ratios to the targets of the shipped localizer (≤ 0.6 × centroid and ≤ 0.9 × the
best of kNN / log-distance on the spatial split with all labels and with 400; ≤ 1.0 × centroid with none; 95 %
regions holding the truth 90–97 %). The network (and with it the hybrid) is not trained here.

The table is read by `read_table`, a small reader of the power-table columns this data set uses; the map's grid
spacing is given explicitly (--spacing-m) until the grid follows the network's geometry. Receivers at one site
are kept when the scenario accepts them, else the one with fewer readings is left out (printed).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heimdall.baselines import Grid, fit_log_distance, log_distance_model, rss_ml, weighted_centroid
from heimdall.datasets.place_split import distance_to_nearest_m, place_scales_m, split_by_place
from heimdall.geo import LocalFrame
from heimdall.metrics import error_m
from heimdall.radiomap.fit import Labelled, MapOptions, Measured, fit_radio_map
from heimdall.radiomap.hybrid import (
    TEMPERATURES,
    UNTEMPERED,
    best_exponents,
    calibrating_temperature,
    exponent_nlls,
    temperature_scores,
)
from heimdall.release.choice import worse_than
from heimdall.scenario.schema import scenario_from_dict

DATA = Path(__file__).parent / "data/powder_frs/single_tx.csv.gz"
TARGET_CENTROID, TARGET_CLASSICAL, TARGET_UNLABELLED = 0.6, 0.9, 1.0
COVERAGE_BAND = (0.90, 0.97)
K_CHOICES = (1, 2, 3, 5, 8, 12, 20, 30)
SIGMA_SPREAD_DB = 8.0  # the scenario's shadowing prior for a campus (until it follows the geometry)


@dataclass
class Network:
    """The table as arrays: power [n, R] dB (NaN: not recording), labels [n, 2] m, receivers [R, 2] m."""

    power_db: np.ndarray
    position_m: np.ndarray
    rx_position_m: np.ndarray
    rx_ids: list[str]
    rx_lat_lon: np.ndarray
    frame: LocalFrame

    @property
    def heard(self) -> np.ndarray:
        return np.isfinite(self.power_db)

    def rows(self, idx: np.ndarray) -> Network:
        return Network(
            self.power_db[idx], self.position_m[idx], self.rx_position_m, self.rx_ids, self.rx_lat_lon, self.frame
        )


def read_table(path: Path) -> Network:
    """The power table (transmission, receiver, receiver_lat/lon, power_db, lat, lon) as arrays; swapped for
    `heimdall import` once the importer reads power tables."""
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    tx_ids = list(dict.fromkeys(r["transmission"] for r in rows))
    rx_ids = list(dict.fromkeys(r["receiver"] for r in rows))
    t_index, r_index = {t: i for i, t in enumerate(tx_ids)}, {r: i for i, r in enumerate(rx_ids)}
    power = np.full((len(tx_ids), len(rx_ids)), np.nan)
    label = np.zeros((len(tx_ids), 2))
    rx_ll = np.zeros((len(rx_ids), 2))
    for r in rows:
        t, k = t_index[r["transmission"]], r_index[r["receiver"]]
        power[t, k] = float(r["power_db"])
        label[t] = float(r["lat"]), float(r["lon"])
        rx_ll[k] = float(r["receiver_lat"]), float(r["receiver_lon"])
    frame = LocalFrame(float(rx_ll[:, 0].mean()), float(rx_ll[:, 1].mean()))
    return Network(
        power, frame.to_local(label[:, 0], label[:, 1]), frame.to_local(rx_ll[:, 0], rx_ll[:, 1]), rx_ids, rx_ll, frame
    )


def one_per_site(net: Network, min_apart_m: float = 100.0) -> Network:
    """Receivers closer than min_apart_m to one with more readings left out (the scenario refuses them today)."""
    order = np.argsort(-net.heard.sum(axis=0))
    kept: list[int] = []
    for k in order:
        if all(np.hypot(*(net.rx_position_m[k] - net.rx_position_m[j])) >= min_apart_m for j in kept):
            kept.append(int(k))
    kept.sort()
    dropped = [net.rx_ids[k] for k in range(len(net.rx_ids)) if k not in kept]
    if dropped:
        print(f"left out (same site as a receiver with more readings): {', '.join(dropped)}", file=sys.stderr)
    return Network(
        net.power_db[:, kept],
        net.position_m,
        net.rx_position_m[kept],
        [net.rx_ids[k] for k in kept],
        net.rx_lat_lon[kept],
        net.frame,
    )


def scenario_of(net: Network, margin_m: float):  # noqa: ANN201  (heimdall.scenario.domain.Scenario)
    """A campus scenario: the receivers (no calibration known), a margin around them, campus-scale shadowing."""
    receivers = [
        {"id": rid, "lat": float(ll[0]), "lon": float(ll[1]), "antenna_height_m": 15, "noise_figure_db": 6}
        for rid, ll in zip(net.rx_ids, net.rx_lat_lon, strict=True)
    ]
    return scenario_from_dict(
        {
            "name": "powder-frs",
            "description": "POWDER FRS campus network (University of Utah), fixed receivers",
            "frequency_hz": 462.7e6,
            "receivers": receivers,
            "area": {"margin_m": margin_m},
            "transmitter": {"power_dbm": [20, 33], "antenna_height_m": [1, 3], "mobile_fraction": 1.0},
            "environment": {
                "shadowing": {
                    "mode": "fixed",
                    "components": [
                        {"sigma_db": SIGMA_SPREAD_DB, "correlation_m": 300},
                        {"sigma_db": 4.0, "correlation_m": 60},
                    ],
                }
            },
            "receiver_chain": {"min_receivers": 1},
        }
    )


def measured(net: Network, noise_db: np.ndarray) -> Measured:
    """The map's inputs: each receiver's lowest reading stands for its noise (the data give no floor)."""
    present = net.heard
    power = np.where(present, net.power_db, noise_db)
    noise = np.broadcast_to(noise_db, power.shape).copy()
    return Measured(power - noise, noise, present)


def knn(train: Network, query: Network, k: int, floor_db: np.ndarray) -> np.ndarray:
    """kNN fingerprinting: the mean label of the k training fingerprints nearest in dB (unrecorded → floor)."""
    from scipy.spatial import cKDTree

    a = np.where(train.heard, train.power_db, floor_db)
    b = np.where(query.heard, query.power_db, floor_db)
    _, idx = cKDTree(a).query(b, k=min(k, len(a)))
    idx = idx.reshape(len(b), -1)
    return train.position_m[idx].mean(axis=1)


def tuned_knn(train: Network, val: Network, floor_db: np.ndarray) -> int:
    """The k of K_CHOICES with the lowest median validation error."""
    return min(K_CHOICES, key=lambda k: float(np.median(error_m(knn(train, val, k, floor_db), val.position_m))))


def map_answers(radio_map, net: Network, noise_db: np.ndarray, alpha: float) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Mean [n, 2], whether the truth is in the 95 % region [n], its area km² [n], of the map tempered by α."""
    from heimdall.radiomap.hybrid import combine

    m = measured(net, noise_db)
    mean, inside, area = np.full((len(m), 2), np.nan), np.zeros(len(m), bool), np.full(len(m), np.nan)
    zero, eye = np.zeros(2), np.eye(2)
    for i, p in enumerate(radio_map.posteriors(m.snr_db, m.noise_dbm, m.present)):
        if not hasattr(p, "mean_m"):
            continue
        q = combine(p, zero, eye, alpha, 0.0) if alpha != 1.0 else p
        mean[i], inside[i], area[i] = q.mean_m, q.in_hpd(net.position_m[i][None], 0.95)[0], q.hpd_area_km2(0.95)
    return {"mean": mean, "inside": inside, "area": area}


def recalibrated_alpha(radio_map, val: Network, noise_db: np.ndarray) -> tuple[float, float, float]:  # noqa: ANN001
    """(α tempered, temperature, untempered 95 % coverage) of the map on validation, as the choice picks them."""
    m = measured(val, noise_db)
    answered = [(i, p) for i, p in enumerate(radio_map.posteriors(m.snr_db, m.noise_dbm, m.present))]
    posts = [p for _, p in answered if hasattr(p, "mean_m")]
    truth = val.position_m[[i for i, p in answered if hasattr(p, "mean_m")]]
    zero, eye = np.zeros((len(posts), 2)), np.tile(np.eye(2), (len(posts), 1, 1))
    alpha, _, _ = best_exponents(exponent_nlls(posts, zero, eye, truth), beta_positive=False)
    scores = temperature_scores(posts, zero, eye, truth, alpha, 0.0)
    k = calibrating_temperature(scores[:, :, 2].mean(axis=0))
    return alpha / TEMPERATURES[k], TEMPERATURES[k], float(scores[:, UNTEMPERED, 2].mean())


def summary(pred_m: np.ndarray, truth_m: np.ndarray, extra: dict | None = None) -> dict:
    err = error_m(pred_m, truth_m)
    err = err[np.isfinite(err)]
    return {"median_m": float(np.median(err)), "mean_m": float(np.mean(err)), **(extra or {})}


def run_case(
    net: Network, split: str, n_labels: int | None, args: argparse.Namespace, deadline: float, rng: np.random.Generator
) -> dict:
    """Every localizer on one split and number of labels (None: all)."""
    block, gap = place_scales_m(net.rx_position_m)
    if split == "spatial":
        outer = split_by_place(net.position_m, 0.15, block, gap, seed=args.seed)
        pool, test = outer.train, outer.val
    else:
        perm = rng.permutation(len(net.position_m))
        test, pool = perm[: len(perm) // 4], perm[len(perm) // 4 :]
    test = rng.permutation(test)[: args.max_test]
    # validation for k and the temperature: split the training places the same way
    if split == "spatial":
        inner = split_by_place(net.position_m[pool], 0.15, block, gap, seed=args.seed + 1)
        train_pool, val = pool[inner.train], pool[inner.val]
    else:
        perm = rng.permutation(pool)
        val, train_pool = perm[: len(perm) // 6], perm[len(perm) // 6 :]
    val = val[: args.max_test]
    labels = train_pool if n_labels is None else rng.permutation(train_pool)[:n_labels]
    tr, va, te = net.rows(labels), net.rows(val), net.rows(test)
    floor_db = np.nanmin(net.power_db, axis=0)
    case = {
        "split": split,
        "labels": len(labels) if n_labels != 0 else 0,
        "n_test": len(test),
        "test_gap_m": float(distance_to_nearest_m(te.position_m, tr.position_m).min()) if n_labels != 0 else None,
    }
    out: dict[str, dict] = {}
    out["weighted_centroid"] = summary(weighted_centroid(te.power_db, te.heard, net.rx_position_m), te.position_m)
    centroid_val = summary(weighted_centroid(va.power_db, va.heard, net.rx_position_m), va.position_m)
    bounds = scenario_of(net, args.margin_m).area_bounds_m()
    grid = Grid(bounds, args.spacing_m * 2)
    if n_labels != 0:
        k = tuned_knn(tr, va, floor_db)
        out["knn"] = summary(knn(tr, te, k, floor_db), te.position_m, {"k": k})
        fit = fit_log_distance(tr.power_db, tr.heard, tr.position_m, net.rx_position_m)
        model = log_distance_model(net.rx_position_m, fit.exponent, fit.offsets_db)
    else:
        fit, model = None, log_distance_model(net.rx_position_m, 3.0)
    pos, _ = rss_ml(np.nan_to_num(te.power_db), te.heard, model, grid, fit.sigma_db if fit else 8.0)
    out["log_distance_ml"] = summary(pos, te.position_m, {"exponent": fit.exponent if fit else 3.0})
    if time.monotonic() > deadline:
        return case | {"results": out, "cut": "time budget spent before the map"}
    scenario = scenario_of(net, args.margin_m)
    budget = max(deadline - time.monotonic(), 30.0)
    options = MapOptions(spacing_m=args.spacing_m, time_budget_s=min(budget * 0.6, args.fit_budget_s))
    t0 = time.monotonic()
    noise_db = floor_db
    if n_labels != 0:
        m = measured(tr, noise_db)
        radio_map = fit_radio_map(scenario, Labelled(m.snr_db, m.noise_dbm, m.present, tr.position_m), options=options)
    else:  # self-calibrated on the recordings (test and validation), positions unused
        radio_map = fit_radio_map(scenario, None, measured(net.rows(np.concatenate([val, test])), noise_db), options)
    fit_s = time.monotonic() - t0
    answers = map_answers(radio_map, te, noise_db, 1.0)
    out["radio_map"] = summary(
        answers["mean"],
        te.position_m,
        {
            "coverage95": float(answers["inside"].mean()),
            "area95_km2": float(np.nanmean(answers["area"])),
            "fit_s": fit_s,
        },
    )
    alpha, temperature, untempered = recalibrated_alpha(radio_map, va, noise_db)
    shipped = map_answers(radio_map, te, noise_db, alpha)
    val_map = map_answers(radio_map, va, noise_db, alpha)
    val_medians = {"median_error_m": float(np.nanmedian(error_m(val_map["mean"], va.position_m)))}
    flagged = worse_than(val_medians, {"median_error_m": centroid_val["median_m"]})
    out["shipped"] = summary(
        shipped["mean"],
        te.position_m,
        {
            "localizer": "map (worse than the centroid on validation: flagged)" if flagged else "map",
            "val_median_m": val_medians["median_error_m"],
            "centroid_val_median_m": centroid_val["median_m"],
            "alpha": alpha,
            "temperature": temperature,
            "val_coverage95_untempered": untempered,
            "coverage95": float(shipped["inside"].mean()),
            "area95_km2": float(np.nanmean(shipped["area"])),
        },
    )
    return case | {"results": out, "ratios": ratios(out, n_labels)}


def ratios(out: dict, n_labels: int | None) -> dict:
    shipped = out["shipped"]["median_m"]
    r = {"shipped/centroid": shipped / out["weighted_centroid"]["median_m"]}
    best = min(out[k]["median_m"] for k in ("knn", "log_distance_ml") if k in out)
    r["shipped/best classical"] = shipped / best
    target = TARGET_UNLABELLED if n_labels == 0 else TARGET_CENTROID
    r["centroid target"] = target
    r["coverage95 in band"] = COVERAGE_BAND[0] <= out["shipped"]["coverage95"] <= COVERAGE_BAND[1]
    return r


def print_case(case: dict) -> None:
    gap = "no labels" if case["test_gap_m"] is None else f"closest test place to a label: {case['test_gap_m']:.0f} m"
    print(f"\n{case['split']} split, {case['labels']} labels, {case['n_test']} test ({gap})")
    print(f"  {'localizer':20s} {'median m':>9s} {'mean m':>9s} {'cover95':>8s} {'area95 km²':>11s}")
    for name, s in case["results"].items():
        cov = f"{s['coverage95']:.0%}" if "coverage95" in s else ""
        area = f"{s['area95_km2']:.3f}" if "area95_km2" in s else ""
        note = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items() if k not in
                ("median_m", "mean_m", "coverage95", "area95_km2")}  # fmt: skip
        print(f"  {name:20s} {s['median_m']:9.0f} {s['mean_m']:9.0f} {cov:>8s} {area:>11s}  {note or ''}")
    if "ratios" in case:
        print("  ratios: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in case["ratios"].items()))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--labels", nargs="+", default=["all", "400", "100", "0"])
    parser.add_argument("--splits", nargs="+", default=["spatial", "random"])
    parser.add_argument("--spacing-m", type=float, default=20.0)
    parser.add_argument("--margin-m", type=float, default=600.0)
    parser.add_argument("--max-test", type=int, default=400, help="test (and validation) transmissions at most")
    parser.add_argument("--time-budget-s", type=float, default=1200.0)
    parser.add_argument("--fit-budget-s", type=float, default=240.0, help="each map fit's time budget at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    start = time.monotonic()
    deadline = start + args.time_budget_s
    net = one_per_site(read_table(args.data))
    block, gap = place_scales_m(net.rx_position_m)
    print(f"{len(net.position_m)} transmissions, {len(net.rx_ids)} receivers; spatial blocks {block:.0f} m, "
          f"gap {gap:.0f} m; map grid {args.spacing_m:g} m", file=sys.stderr)  # fmt: skip
    cases = []
    for split in args.splits:
        for labels in args.labels:
            if time.monotonic() > deadline:
                print(f"time budget spent: {split} with {labels} labels not run", file=sys.stderr)
                continue
            n = None if labels == "all" else int(labels)
            print(f"[{time.monotonic() - start:6.0f} s] {split} split, {labels} labels …", file=sys.stderr)
            case = run_case(net, split, n, args, deadline, np.random.default_rng(args.seed))
            print_case(case)
            cases.append(case)
    if args.json:
        args.json.write_text(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()
