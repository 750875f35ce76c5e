"""Localizers on a real, measured network: the POWDER FRS campus data (bench/data/powder_frs, converted from the
public data set by bench/convert_powder.py; nothing is downloaded).

    python bench/bench_real.py [--labels all 400 100 0] [--splits spatial random] [--time-budget-s 1800]
                               [--max-test 400] [--with-network [--network-budget-min 4]] [--seeds 0 1 …]
                               [--json OUT]

The table is imported as a user would (`heimdall import`: heimdall.datasets.power_import.import_table, every
receiver, co-sited ones included, each reading heard or censored at its receiver's floor, every receiver in its own
uncalibrated dB); the map's grid, the search grid, the area margin and the field's correlation prior follow the
network's geometry (heimdall.scale; nothing is set by hand). For a random and a spatial split (test places at least
a gap — heimdall.datasets.place_split, a few hundred metres here — from every label) and each number of labels (drawn
from the training places; 0: no positions at all), it reports the weighted centroid, kNN fingerprinting (k tuned on
a validation split), log-distance maximum likelihood, the radio map (fitted on the labels, self-calibrated on the
recordings without them) and the shipped localizer: median and mean error (m), 95 % region coverage and mean area,
and the ratios to the targets (≤ 0.6 × centroid and ≤ 0.9 × the best of kNN / log-distance on the spatial split with
all labels and with 400; ≤ 1.0 × centroid with none; 95 % regions holding the truth 90–97 %). With several --seeds
each split is drawn once per seed and the figures are also pooled over the draws' test transmissions (one draw of
test blocks is a rough figure: the blocks differ a lot).

The shipped localizer is what `heimdall train` would ship (heimdall.evaluation.grid_estimators.hybrid_exponents on
the validation split — the map candidate's spread floor and log-distance weight chosen there — then
heimdall.release.choice.choose, its weighted-centroid check included): with --with-network among the network, the map
and the hybrid, the network trained here (`heimdall train` on a store imported from the case's labels and validation
rows, --network-budget-min, a small network) and its and the hybrid's rows added; without it the map as `--localizer
map` ships it (its regions recalibrated on validation, flagged when worse than the centroid there). With no labels there
is no validation split: the self-calibrated map as fitted.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from heimdall.baselines import Grid, fit_log_distance, log_distance_model, rss_ml, weighted_centroid
from heimdall.datasets.place_split import distance_to_nearest_m, place_scales_m, split_by_place
from heimdall.datasets.power_import import import_table
from heimdall.datasets.spec import ImportOptions
from heimdall.evaluation.grid_estimators import as_shipped, hybrid_exponents, measured
from heimdall.evaluation.test_set import Predict, TestSet, load_test_set
from heimdall.metrics import error_m
from heimdall.radiomap.batch import Unanswered
from heimdall.radiomap.fit import MapOptions, fit_radio_map
from heimdall.radiomap.hybrid import AS_FITTED, Weights, answer
from heimdall.radiomap.posterior import HPD_PROBABILITIES
from heimdall.release.choice import AUTO, HYBRID, MAP, NETWORK, choose
from heimdall.scenario.domain import Scenario

DATA = Path(__file__).parent / "data/powder_frs/single_tx.csv.gz"
TARGET_CENTROID, TARGET_CLASSICAL, TARGET_UNLABELLED = 0.6, 0.9, 1.0
COVERAGE_BAND = (0.90, 0.97)
K_CHOICES = (1, 2, 3, 5, 8, 12, 20, 30)
CHI2_95_2D = 5.991  # the 95 % quantile of χ² with 2 degrees of freedom: the network's 95 % ellipse
CHI2_50_2D = 1.386  # its 50 % quantile (−2 ln 0.5): the network's 50 % ellipse
NETWORK_FLAGS = ("--d-model", "64", "--n-layers", "2", "--threads", "2", "--batch-size", "128", "--no-export")


def imported(data: Path, work: Path) -> tuple[TestSet, np.ndarray, Path]:
    """The table imported into one store (every transmission in train.h5): its transmissions as a TestSet, their
    ids [n] and the decompressed table (for the network's stores)."""
    table = work / "single_tx.csv"
    with gzip.open(data, "rb") if data.suffix == ".gz" else open(data, "rb") as f:
        table.write_bytes(f.read())
    store = work / "store"
    t0 = time.monotonic()
    summary, _ = import_table(table, store, None, ImportOptions(fractions=(1.0, 0.0, 0.0)))
    print(f"imported {summary.n_rows} rows, {summary.splits['train']} transmissions in {time.monotonic() - t0:.1f} s",
          file=sys.stderr)  # fmt: skip
    import h5py

    with h5py.File(store / "train.h5", "r") as f:
        ids = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in f["meta/collection"][:]])
    return load_test_set(store / "train.h5"), ids, table


def rows(t: TestSet, idx: np.ndarray) -> TestSet:
    """The transmissions idx of t."""
    return dataclasses.replace(
        t,
        features=t.features[idx],
        heard=t.heard[idx],
        present=t.present[idx],
        target_m=t.target_m[idx],
        tx_height_m=None if t.tx_height_m is None else t.tx_height_m[idx],
    )


def scenario_of(t: TestSet) -> Scenario:
    assert t.scenario is not None  # an imported store has its scenario
    return t.scenario


def fingerprints(t: TestSet, floor_db: np.ndarray) -> np.ndarray:
    """Float [n, R]: the powers, the receiver's lowest stored power where it was not recording."""
    return np.where(t.present > 0, t.power_dbm, floor_db)


def knn(train: TestSet, query: TestSet, k: int, floor_db: np.ndarray) -> np.ndarray:
    """kNN fingerprinting: the mean label of the k training fingerprints nearest in dB."""
    from scipy.spatial import cKDTree

    a, b = fingerprints(train, floor_db), fingerprints(query, floor_db)
    _, idx = cKDTree(a).query(b, k=min(k, len(a)))
    return train.target_m[idx.reshape(len(b), -1)].mean(axis=1)


def tuned_knn(train: TestSet, val: TestSet, floor_db: np.ndarray) -> int:
    """The k of K_CHOICES with the lowest median validation error."""
    return min(K_CHOICES, key=lambda k: float(np.median(error_m(knn(train, val, k, floor_db), val.target_m))))


def grid_answers(
    radio_map, t: TestSet, net_mean: np.ndarray, net_cov: np.ndarray, weights: Weights
) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Point [n, 2], truth in the 95 % and in the 50 % region [n], the 95 %'s area km² [n] of the answers with
    `weights` (heimdall.radiomap.hybrid.answer: the point from p_map · N_net^(β/α), the regions from
    p_map^α · N_net^β; NaN: unanswered)."""
    m = measured(t)
    mean, inside, area = np.full((len(m), 2), np.nan), np.zeros(len(m), bool), np.full(len(m), np.nan)
    inside50, claimed50 = np.zeros(len(m), bool), np.zeros(len(m), bool)
    for i, p in enumerate(radio_map.posteriors(m.snr_db, m.noise_dbm, m.present, None, m.heard)):
        if isinstance(p, Unanswered):
            continue
        q = answer(p, net_mean[i], net_cov[i], weights)
        mean[i], inside[i], area[i] = q.mean_m, q.in_hpd(t.target_m[i][None], 0.95)[0], q.hpd_area_km2(0.95)
        inside50[i] = q.in_hpd(t.target_m[i][None], 0.5)[0]
        claimed50[i] = q.spread.in_hpd(t.target_m[i][None], 0.5)[0]  # its mass not recalibrated
    return {"mean": mean, "inside": inside, "inside50": inside50, "claimed50": claimed50, "area": area}


def gaussian_answers(mean: np.ndarray, cov: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """The network's answers as grid_answers gives them: its 50 % and 95 % ellipses' coverage, the 95 %'s area."""
    d = truth - mean
    maha = np.einsum("ni,nij,nj->n", d, np.linalg.inv(cov), d)
    area = np.pi * CHI2_95_2D * np.sqrt(np.linalg.det(cov)) / 1e6
    return {"mean": mean, "inside": maha <= CHI2_95_2D, "inside50": maha <= CHI2_50_2D, "area": area}


def summary(pred_m: np.ndarray, truth_m: np.ndarray, extra: dict | None = None) -> dict:
    """Median and mean error (m) of the answered transmissions (`answered`: their share, when not all)."""
    err = error_m(pred_m, truth_m)
    answered = np.isfinite(err)
    if not answered.any():
        return {
            "median_m": float("nan"),
            "mean_m": float("nan"),
            "answered": 0.0,
            **(extra or {}),
            "errors_m": err.tolist(),
        }
    share = {} if answered.all() else {"answered": float(answered.mean())}
    return {
        "median_m": float(np.median(err[answered])),
        "mean_m": float(np.mean(err[answered])),
        **share,
        **(extra or {}),
        "errors_m": err.tolist(),  # per transmission (NaN: unanswered), for the figures pooled over seeds
    }


def region_summary(answers: dict[str, np.ndarray], truth_m: np.ndarray, extra: dict | None = None) -> dict:
    return summary(
        answers["mean"],
        truth_m,
        {
            "coverage95": float(answers["inside"].mean()),
            "coverage50": float(answers["inside50"].mean()),
            "inside95": answers["inside"].tolist(),
            "inside50": answers["inside50"].tolist(),
            **({"cover50_as_claimed": float(answers["claimed50"].mean())} if "claimed50" in answers else {}),
            "area95_km2": float(np.nanmean(answers["area"])) if np.isfinite(answers["area"]).any() else float("nan"),
            **(extra or {}),
        },
    )


def progress(what: str, start: float):  # noqa: ANN201  (heimdall.budget.Progress)
    """A Progress printing `what`'s stages to stderr, at most every 10 s."""
    last = [0.0]

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 10 or done == total:
            last[0] = now
            print(f"[{now - start:6.0f} s]   {what} {stage} {done}/{total}", file=sys.stderr)

    return report


def flat_network(scenario: Scenario) -> Predict:
    """Without a network: a Gaussian at the area's centre as wide as the area (the map's candidates, β = 0, do not
    read it; it only fills hybrid_exponents' network slot)."""
    e0, n0, e1, n1 = scenario.area_bounds_m()
    centre, side = np.array([(e0 + e1) / 2, (n0 + n1) / 2]), max(e1 - e0, n1 - n0)

    def predict(t: TestSet) -> tuple[np.ndarray, np.ndarray]:
        return np.tile(centre, (len(t.target_m), 1)), np.tile(np.eye(2) * side**2, (len(t.target_m), 1, 1))

    return predict


def case_store(
    table: Path, ids: np.ndarray, labels: np.ndarray, val: np.ndarray, scenario: Scenario, work: Path
) -> Path:
    """A store imported (`heimdall import`, the network's scenario) from the table's rows of the transmissions
    `labels` (train.h5) and `val` (val.h5)."""
    import pandas as pd

    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    store = work / "network-store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir()
    for split, idx, fractions in (("train", labels, (1.0, 0.0, 0.0)), ("val", val, (0.0, 1.0, 0.0))):
        part = work / f"{split}.csv"
        frame[frame["transmission"].isin(set(ids[idx]))].to_csv(part, index=False)
        import_table(part, work / f"import-{split}", scenario, ImportOptions(fractions=fractions, overwrite=True))
        shutil.move(work / f"import-{split}" / f"{split}.h5", store / f"{split}.h5")
    return store


def trained_network(store: Path, work: Path, minutes: float) -> Predict:
    """`heimdall train` of a small network (`minutes` of budget, no export) on the store; its best checkpoint's
    predictions."""
    from heimdall.evaluation.evaluate import task_predictor
    from heimdall.train.task import load_task

    run = work / "network-run"
    shutil.rmtree(run, ignore_errors=True)
    command = [sys.executable, "-m", "heimdall", "train", "--data-dir", str(store), "--checkpoint-dir", str(run),
               "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--max-time-minutes", f"{minutes:g}",
               *NETWORK_FLAGS]  # fmt: skip
    print(f"  training the network ({minutes:g} min): heimdall {' '.join(command[3:])}", file=sys.stderr)
    env = os.environ | {"PYTHONUNBUFFERED": "1", "HEIMDALL_WORKSPACE": str(work / "workspace")}  # nothing left behind
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return task_predictor(load_task(run / "best.ckpt"))


def run_case(
    net: TestSet,
    ids: np.ndarray,
    table: Path,
    split: str,
    n_labels: int | None,
    seed: int,
    args: argparse.Namespace,
    deadline: float,
    start: float,
    work: Path,
) -> dict:
    """Every localizer on one split (its places drawn with `seed`) and number of labels (None: all)."""
    rng = np.random.default_rng(seed)
    block, gap = place_scales_m(net.rx_position_m)
    if split == "spatial":
        outer = split_by_place(net.target_m, 0.15, block, gap, seed=seed)
        pool, test = outer.train, outer.val
    else:
        perm = rng.permutation(len(net.target_m))
        test, pool = perm[: len(perm) // 4], perm[len(perm) // 4 :]
    test = rng.permutation(test)[: args.max_test]
    # validation for k, the exponents and the temperature: split the training places the same way
    if split == "spatial":
        inner = split_by_place(net.target_m[pool], 0.15, block, gap, seed=seed + 1)
        train_pool, val = pool[inner.train], pool[inner.val]
    else:
        perm = rng.permutation(pool)
        val, train_pool = perm[: len(perm) // 6], perm[len(perm) // 6 :]
    val = val[: args.max_test]
    labels = train_pool if n_labels is None else rng.permutation(train_pool)[:n_labels]
    tr, va, te = rows(net, labels), rows(net, val), rows(net, test)
    scenario = scenario_of(net)
    floor_db = np.where(net.present > 0, net.power_dbm, np.inf).min(axis=0)
    e0, n0, e1, n1 = scenario.area_bounds_m()
    east, north = te.target_m.T
    case = {
        "split": split,
        "seed": seed,
        "asked": "all" if n_labels is None else n_labels,
        "labels": len(labels) if n_labels != 0 else 0,
        "n_test": len(test),
        "test_outside_area": int(((east < e0) | (east > e1) | (north < n0) | (north > n1)).sum()),
        "test_gap_m": float(distance_to_nearest_m(te.target_m, tr.target_m).min()) if n_labels != 0 else None,
    }
    out: dict[str, dict] = {}
    out["weighted_centroid"] = summary(weighted_centroid(te.power_dbm, te.heard, net.rx_position_m), te.target_m)
    grid = Grid(scenario.area_bounds_m(), scenario.scale.search_spacing_m)
    if n_labels != 0:
        k = tuned_knn(tr, va, floor_db)
        out["knn"] = summary(knn(tr, te, k, floor_db), te.target_m, {"k": k})
        fit = fit_log_distance(tr.power_dbm, tr.heard, tr.target_m, net.rx_position_m)
        model = log_distance_model(net.rx_position_m, fit.exponent, fit.offsets_db)
    else:
        fit, model = None, log_distance_model(net.rx_position_m, 3.0)
    pos, _ = rss_ml(te.power_dbm, te.heard, model, grid, fit.sigma_db if fit else 8.0)
    out["log_distance_ml"] = summary(pos, te.target_m, {"exponent": fit.exponent if fit else 3.0})
    if time.monotonic() > deadline:
        return case | {"results": out, "cut": "time budget spent before the map"}
    budget = max(deadline - time.monotonic(), 30.0)
    options = MapOptions(time_budget_s=min(budget * 0.5, args.fit_budget_s))
    t0 = time.monotonic()
    on_progress = progress("map fit", start)
    if n_labels != 0:
        radio_map = fit_radio_map(scenario, measured(tr).labelled(tr.target_m), None, options, on_progress)
    else:  # self-calibrated on the recordings (test and validation), positions unused
        radio_map = fit_radio_map(
            scenario, None, measured(rows(net, np.concatenate([val, test]))), options, on_progress
        )
    fit_s = time.monotonic() - t0
    no_net = np.zeros((len(test), 2)), np.tile(np.eye(2), (len(test), 1, 1))
    answers = grid_answers(radio_map, te, *no_net, AS_FITTED)
    out["radio_map"] = region_summary(answers, te.target_m, {"fit_s": fit_s, "spacing_m": radio_map.grid.spacing_m})
    if n_labels == 0:  # no validation split: the self-calibrated map as fitted is what ships
        out["shipped"] = out["radio_map"] | {"localizer": "map (no labels: not compared)"}
        return case | {"results": out, "ratios": ratios(out, n_labels)}
    predict, forced = flat_network(scenario), MAP
    if args.with_network and deadline - time.monotonic() > args.network_budget_min * 60 + 120:
        predict = trained_network(case_store(table, ids, labels, val, scenario, work), work, args.network_budget_min)
        forced = AUTO
    elif args.with_network:
        print("  time budget too short to train the network: not trained", file=sys.stderr)
    fit_entry = hybrid_exponents(radio_map, va, predict, progress("validation", start), None, tr.target_m)
    choice = choose(fit_entry, forced)
    net_mean, net_cov = predict(te)
    if forced == AUTO:
        out["network"] = region_summary(gaussian_answers(net_mean, net_cov, te.target_m), te.target_m)
        cand = fit_entry["candidates"][HYBRID]
        out["hybrid"] = region_summary(
            grid_answers(radio_map.with_log_distance_weight(cand["log_distance_weight"]), te, net_mean, net_cov,
                         Weights(cand["alpha"], cand["beta"], tuple(cand["region_masses"]))), te.target_m,
            {"alpha": cand["alpha"], "beta": cand["beta"], "temperature": cand["temperature"]},
        )  # fmt: skip
    if choice.localizer == NETWORK:
        shipped = gaussian_answers(net_mean, net_cov, te.target_m)
    else:
        weights = Weights(
            *choice.exponents[choice.localizer], choice.region_masses.get(choice.localizer, HPD_PROBABILITIES)
        )
        shipped = grid_answers(as_shipped(radio_map, choice.summary()), te, net_mean, net_cov, weights)
    out["shipped"] = region_summary(
        shipped,
        te.target_m,
        {
            "localizer": choice.localizer + (" (worse than the centroid on validation: flagged)"
                                             if choice.worse_than_centroid else ""),
            "temperature": choice.temperature.get(choice.localizer),
            "spread_floor_db": choice.spread_floor_db.get(choice.localizer),
            "log_distance_weight": choice.log_distance_weight.get(choice.localizer),
            "val_medians_m": choice.medians.get(choice.localizer),
            "centroid_val_medians_m": choice.centroid,
            "reason": choice.reason,
        },
    )  # fmt: skip
    return case | {"results": out, "ratios": ratios(out, n_labels)}


def ratios(out: dict, n_labels: int | None) -> dict:
    shipped = out["shipped"]["median_m"]
    r = {"shipped/centroid": shipped / out["weighted_centroid"]["median_m"]}
    best = min(out[k]["median_m"] for k in ("knn", "log_distance_ml") if k in out)
    r["shipped/best classical"] = shipped / best
    r["centroid target"] = TARGET_UNLABELLED if n_labels == 0 else TARGET_CENTROID
    r["coverage95 in band"] = COVERAGE_BAND[0] <= out["shipped"]["coverage95"] <= COVERAGE_BAND[1]
    return r


def print_case(case: dict) -> None:
    gap = "no labels" if case["test_gap_m"] is None else f"closest test place to a label: {case['test_gap_m']:.0f} m"
    outside = f"{case['test_outside_area']} outside the map's area"
    print(f"\n{case['split']} split (seed {case['seed']}), {case['labels']} labels, {case['n_test']} test ({gap}; "
          f"{outside})")  # fmt: skip
    print(f"  {'localizer':20s} {'median m':>9s} {'mean m':>9s} {'cover95':>8s} {'cover50':>8s} {'area95 km²':>11s}")
    for name, s in case["results"].items():
        cov = f"{s['coverage95']:.0%}" if "coverage95" in s else ""
        cov50 = f"{s['coverage50']:.0%}" if "coverage50" in s else ""
        area = f"{s['area95_km2']:.3f}" if "area95_km2" in s else ""
        note = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items() if k not in
                ("median_m", "mean_m", "coverage95", "coverage50", "area95_km2", "reason", "errors_m", "inside95",
                 "inside50")}  # fmt: skip
        print(f"  {name:20s} {s['median_m']:9.0f} {s['mean_m']:9.0f} {cov:>8s} {cov50:>8s} {area:>11s}  {note or ''}")
    if "ratios" in case:
        print("  ratios: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in case["ratios"].items()))  # fmt: skip
    if "reason" in case["results"].get("shipped", {}):
        print(f"  choice: {case['results']['shipped']['reason']}")


def pooled(cases: list[dict]) -> list[dict]:
    """Per split and number of labels asked for, the cases of every seed pooled: each localizer's median and mean
    error over all their test transmissions and its 95 % region's coverage (localizers present in every seed), the
    ratios of the pooled medians, and each seed's shipped ÷ centroid."""
    groups: dict[tuple[str, str | int], list[dict]] = {}
    for case in cases:
        groups.setdefault((case["split"], case["asked"]), []).append(case)
    out = []
    for (split, asked), all_cases in groups.items():
        group = [c for c in all_cases if "ratios" in c]  # those the time budget cut have no shipped localizer
        if not group:
            continue
        names = [k for k in group[0]["results"] if all(k in c["results"] for c in group)]
        results = {}
        for name in names:
            err = np.concatenate([np.asarray(c["results"][name]["errors_m"], float) for c in group])
            entry = {"median_m": float(np.nanmedian(err)), "mean_m": float(np.nanmean(err))}
            for level in ("95", "50"):
                if all(f"inside{level}" in c["results"][name] for c in group):
                    inside = np.concatenate([c["results"][name][f"inside{level}"] for c in group])
                    entry[f"coverage{level}"] = float(np.mean(inside))
            results[name] = entry
        shipped = results["shipped"]["median_m"]
        classical = [results[k]["median_m"] for k in ("knn", "log_distance_ml") if k in results]
        out.append({
            "split": split, "labels": asked, "seeds": [c["seed"] for c in group],
            "n_test": sum(c["n_test"] for c in group), "results": results,
            "ratios": {"shipped/centroid": shipped / results["weighted_centroid"]["median_m"],
                       "shipped/best classical": shipped / min(classical)},
            "shipped/centroid by seed": [c["ratios"]["shipped/centroid"] for c in group],
        })  # fmt: skip
    return out


def print_pooled(cases: list[dict]) -> None:
    """The pooled figures (`pooled`) as a table per split and number of labels."""
    for p in pooled(cases):
        print(f"\npooled: {p['split']} split, {p['labels']} labels, seeds {p['seeds']}, {p['n_test']} test")
        for name, s in p["results"].items():
            cov = " ".join(f"{s[k]:7.0%}" if k in s else " " * 7 for k in ("coverage95", "coverage50"))
            print(f"  {name:20s} {s['median_m']:9.0f} {s['mean_m']:9.0f} {cov}")
        by_seed = " ".join(f"{r:.2f}" for r in p["shipped/centroid by seed"])
        ratio_text = ", ".join(f"{k} {v:.2f}" for k, v in p["ratios"].items())
        print(f"  ratios: {ratio_text}; shipped/centroid by seed {by_seed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--labels", nargs="+", default=["all", "400", "100", "0"])
    parser.add_argument("--splits", nargs="+", default=["spatial", "random"])
    parser.add_argument("--max-test", type=int, default=400, help="test (and validation) transmissions at most")
    parser.add_argument("--time-budget-s", type=float, default=1800.0)
    parser.add_argument("--fit-budget-s", type=float, default=240.0, help="each map fit's time budget at most")
    parser.add_argument("--with-network", action="store_true", help="train the network and weigh the hybrid")
    parser.add_argument("--network-budget-min", type=float, default=4.0, help="each network's training budget")
    parser.add_argument("--seeds", "--seed", nargs="+", type=int, default=[0], help="draws of the split's places")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    start = time.monotonic()
    deadline = start + args.time_budget_s
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        work = Path(tmp)
        net, ids, table = imported(args.data, work)
        scale = scenario_of(net).scale
        block, gap = place_scales_m(net.rx_position_m)
        print(f"{len(net.target_m)} transmissions, {net.rx_position_m.shape[0]} receivers; receiver spacing "
              f"{scale.spacing_m:.0f} m, margin {scale.margin_m:.0f} m, map grid {scale.map_spacing_m:g} m, search "
              f"grid {scale.search_spacing_m:g} m; spatial blocks {block:.0f} m, gap {gap:.0f} m",
              file=sys.stderr)  # fmt: skip
        cases = []
        for seed in dict.fromkeys(args.seeds):  # a seed given twice would pool its transmissions twice
            for split in args.splits:
                for labels in args.labels:
                    if time.monotonic() > deadline:
                        print(f"time budget spent: {split} (seed {seed}) with {labels} labels not run", file=sys.stderr)
                        continue
                    n = None if labels == "all" else int(labels)
                    print(f"[{time.monotonic() - start:6.0f} s] {split} split (seed {seed}), {labels} labels …",
                          file=sys.stderr)  # fmt: skip
                    case = run_case(net, ids, table, split, n, seed, args, deadline, start, work)
                    print_case(case)
                    cases.append(case)
        if len(set(args.seeds)) > 1:
            print_pooled(cases)
    if args.json:
        args.json.write_text(json.dumps(cases, indent=1, default=float))


if __name__ == "__main__":
    main()
