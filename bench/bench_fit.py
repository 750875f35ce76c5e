"""The radio map's speed: fit time against the number of labels, and self-calibration.

    python bench/bench_fit.py [--work DIR] [--labels 1500,20000,100000] [--unlabelled 10000]
                              [--baseline REF] [--baseline-max-labels 20000] [--cores 2]

The time `fit_radio_map` takes on --cores cores against the number of labels, and self-calibration (no
labels) on --unlabelled recordings, each with its ratio to the target and to the fit of --baseline (a git
ref: its src/ imported by a child process on the same data in the same run; up to --baseline-max-labels
labels, as that fit is slow), and the fitted map's median error and mean NLL on TEST_TRANSMISSIONS held-out
transmissions, so that a faster fit is seen not to cost accuracy. Each fit runs in a fresh process pinned to
--cores cores (wall and CPU seconds). The data: bench_labels' truth (the randstad-70cm receivers,
Okumura–Hata urban path loss, shadowing fields of another seed; features only), simulated in process once
and kept in --work; the map assumes the built-in scenario's two-ray physics.

Targets (2 cores): 20,000 labels ≤ 30 s (1,500 too), 100,000 ≤ 180 s; self-calibration on 10,000 recordings ≤ 60 s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from heimdall.features import FeatureParams
from heimdall.radiomap.fit import Labelled, Measured
from heimdall.scenario.builtin import load_scenario
from heimdall.scenario.domain import Scenario
from heimdall.scenario.schema import scenario_from_dict

sys.path.insert(0, str(Path(__file__).parent))
from bench_labels import MAP_SCENARIO, truth_scenario_yaml  # noqa: E402

TEST_TRANSMISSIONS = 400
SIMULATE_BLOCK = 4096
BASELINE_REF = "f717e9c"  # the last commit whose fit is the slow one (explicit inverses, serial receivers)
FIT_TARGET_S = {1_500: 30.0, 20_000: 30.0, 100_000: 180.0}
SELF_CALIBRATION_TARGET_S = 60.0
SELF_CALIBRATION_TARGET_N = 10_000


def truth_scenario() -> Scenario:
    """bench_labels' truth: the map's scenario with Okumura–Hata urban path loss and other shadowing fields."""
    from heimdall.cli import main as heimdall

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        heimdall(["scenario", "show", MAP_SCENARIO])
    return scenario_from_dict(yaml.safe_load(truth_scenario_yaml(out.getvalue())))


def simulated(work: Path, n: int, seed: int) -> tuple[Labelled, Labelled]:
    """(n labelled training transmissions, TEST_TRANSMISSIONS held out) of the truth, features only; simulated
    once (in process) and kept in `work`. The map reads every receiver's measurement (all present)."""
    path = work / f"truth-{n}-seed{seed}.npz"
    if not path.exists():
        from heimdall.sim.generator import build_world, simulate_block

        world = build_world(truth_scenario())
        rng = np.random.default_rng(seed)
        feats, pos, total, t0 = [], [], 0, time.perf_counter()
        while total < n + TEST_TRANSMISSIONS:
            b = simulate_block(world, rng, SIMULATE_BLOCK)
            feats.append(b["features"])
            pos.append(b["tx_position_m"])
            total += len(pos[-1])
            print(f"  simulated {total:,} / {n + TEST_TRANSMISSIONS:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
        work.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, features=np.concatenate(feats), position_m=np.concatenate(pos))
        partial.rename(path)
    with np.load(path) as f:
        features, position_m = f["features"], f["position_m"]
    params = FeatureParams.from_scenario(load_scenario(MAP_SCENARIO))
    everything = Labelled.from_features(features, np.ones(features.shape[:2], bool), params, position_m)
    train, test = np.arange(n), np.arange(len(features) - TEST_TRANSMISSIONS, len(features))
    return _rows(everything, train), _rows(everything, test)


def _rows(lab: Labelled, rows: np.ndarray) -> Labelled:
    m = lab.subset(rows)
    return Labelled(m.snr_db, m.noise_dbm, m.present, lab.position_m[rows])


def fit_once(work: Path, n_data: int, n: int, labelled: bool, seed: int, fit_seed: int) -> dict[str, float]:
    """Fit the map (its draws seeded by fit_seed) on the first n training transmissions (labelled, or as
    unlabelled recordings) of the n_data-transmission store and answer the test transmissions: wall and CPU
    seconds of the fit, median error (km) and mean NLL of the answers, the fitted parameters. Whatever
    `heimdall` is importable is the one measured."""
    from heimdall.radiomap.answer_arrays import answers_of
    from heimdall.radiomap.fit import MapOptions, fit_radio_map

    train, test = simulated(work, n_data, seed)
    data = _rows(train, np.arange(n))
    scenario = load_scenario(MAP_SCENARIO)
    options = MapOptions(500.0, seed=fit_seed)
    t0, c0 = time.perf_counter(), time.process_time()
    if labelled:
        m = fit_radio_map(scenario, data, options=options)
    else:
        m = fit_radio_map(scenario, None, Measured(data.snr_db, data.noise_dbm, data.present), options)
    wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    a = answers_of(m, test.snr_db, test.noise_dbm, test.present, test.position_m)
    assert a.log_density_at_truth is not None  # answers_of was given the truth
    fields = m.info.get("fields", {}).values()
    return {
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "median_km": float(np.median(np.linalg.norm(a.mean_m - test.position_m, axis=1))) / 1e3,
        "nll": float(-a.log_density_at_truth.mean()),
        # each receiver's field hyper-parameters [σ_1, σ_2 dB, ℓ_1, ℓ_2 m, τ dB]; the self-calibrated spread
        "hyper": [[*f["sigma_db"], *f["correlation_m"], f["nugget_db"]] for f in fields if "sigma_db" in f],
        "spread_db": float(m.info["spread_db"]) if not labelled else float("nan"),
    }


def moved(now: dict, before: dict) -> str:
    """How far the map's fitted parameters moved from the baseline's: the median and largest factor by which a
    receiver's field σ (both scales) and correlation lengths differ, or the self-calibrated spread."""
    if now["hyper"] and len(now["hyper"]) == len(before["hyper"]):
        ratio = np.exp(np.abs(np.log(np.array(now["hyper"]) / np.array(before["hyper"]))))
        return (
            f"σ × {np.median(ratio[:, :2]):.2f} (at most {ratio[:, :2].max():.2f}), "
            f"ℓ × {np.median(ratio[:, 2:4]):.2f} (at most {ratio[:, 2:4].max():.2f})"
        )
    return f"spread {before['spread_db']:.2f} → {now['spread_db']:.2f} dB"


def fit_in_child(args: argparse.Namespace, n: int, labelled: bool, src: Path) -> dict[str, float]:
    """fit_once in a fresh process importing heimdall from `src`, pinned to --cores cores."""
    cmd = [sys.executable, __file__, "--child", f"{n},{int(labelled)}", "--work", str(args.work)]
    cmd += ["--store-size", str(args.store_size), "--seed", str(args.seed), "--fit-seed", str(args.fit_seed)]
    cmd += ["--cores", str(args.cores)]
    # one BLAS thread, as the fit now holds it: the baseline's default of one per core is many times slower on a
    # busy machine (its small matrices stall), and a comparison against that would flatter the new fit
    env = {**os.environ, "PYTHONPATH": str(src), "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"the fit of {n} ({src}) failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _baseline_src(ref: str, into: Path) -> Path:
    """src/ of the git ref `ref` of this repository, extracted into `into`."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def _fit_target_s(n: int) -> float:
    """The target of a fit on n labels: that of the smallest target size at or above n (fewer labels may not take
    longer), the largest's beyond it."""
    return FIT_TARGET_S[min((size for size in FIT_TARGET_S if size >= n), default=max(FIT_TARGET_S))]


def fit_section(args: argparse.Namespace) -> None:
    """Fit time against labels and self-calibration, against the targets and the baseline (module docstring)."""
    if max([*_sizes(args.labels), args.unlabelled]) > args.store_size:
        raise SystemExit(f"--labels and --unlabelled: at most --store-size ({args.store_size:,}) transmissions")
    simulated(args.work, args.store_size, args.seed)  # once, before anything is timed
    ours = Path(__file__).resolve().parent.parent / "src"
    runs: list[tuple[str, int, bool, float]] = [
        (f"labels {n:>7,}", n, True, _fit_target_s(n)) for n in _sizes(args.labels)
    ]
    if args.unlabelled:
        runs.append((f"self-cal {args.unlabelled:>5,}", args.unlabelled, False, SELF_CALIBRATION_TARGET_S))
    print(
        f"fit time on {args.cores} cores (wall; CPU in brackets), the map's median error and NLL on "
        f"{TEST_TRANSMISSIONS} held-out transmissions; before: {args.baseline or '(not measured)'}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        before_src = _baseline_src(args.baseline, Path(tmp)) if args.baseline else None
        for name, n, labelled, target_s in runs:
            now = fit_in_child(args, n, labelled, ours)
            rows.append({"n": n, "labelled": labelled, "target_s": target_s, "now": now})
            line = (
                f"  {name}: {now['wall_s']:6.1f} s ({now['cpu_s']:5.1f})  {now['wall_s'] / target_s:.2f} × target "
                f"{target_s:g} s;  median {now['median_km']:.2f} km, NLL {now['nll']:.3f}"
            )
            if before_src is not None and (not labelled or n <= args.baseline_max_labels):
                before = fit_in_child(args, n, labelled, before_src)
                rows[-1]["before"] = before
                line += (
                    f";  before {before['wall_s']:6.1f} s ({before['cpu_s']:5.1f}): "
                    f"{now['wall_s'] / before['wall_s']:.3f} × before, its median {before['median_km']:.2f} km, "
                    f"NLL {before['nll']:.3f}; moved: {moved(now, before)}"
                )
            elif before_src is not None:
                line += f";  before: not measured (over --baseline-max-labels {args.baseline_max_labels:,})"
            print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"fit_seed": args.fit_seed, "baseline": args.baseline, "rows": rows}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("workspace/bench-fit"), help="data folder (reused)")
    ap.add_argument("--labels", default="1500,20000,100000", help="label counts of the fit-time rows")
    ap.add_argument("--unlabelled", type=int, default=SELF_CALIBRATION_TARGET_N, help="self-calibration (0 skips)")
    ap.add_argument("--baseline", default=BASELINE_REF, help="git ref of the fit to compare with ('' skips)")
    ap.add_argument("--baseline-max-labels", type=int, default=20_000, help="largest label count for the baseline")
    ap.add_argument("--cores", type=int, default=2, help="cores each fit is pinned to")
    ap.add_argument("--store-size", type=int, default=100_000, help="training transmissions simulated")
    ap.add_argument("--seed", type=int, default=0, help="seed of the simulated data")
    ap.add_argument("--fit-seed", type=int, default=0, help="seed of the fits' draws")
    ap.add_argument("--json", type=Path, help="also write every fit's figures here")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # "n,labelled": one fit_once, as JSON on stdout
    args = ap.parse_args()
    if args.child:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
        n, labelled = (int(x) for x in args.child.split(","))
        print(json.dumps(fit_once(args.work, args.store_size, n, bool(labelled), args.seed, args.fit_seed)))
        return
    fit_section(args)


if __name__ == "__main__":
    main()
