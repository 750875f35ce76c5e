"""What the choice of localizer adds to `heimdall train`: the map's fit, the comparison on the validation split and the
map-carrying model's writing and evaluation for the champion rule, as a share of the training time.

    python bench/bench_choice.py --data-dir STORE [--epochs 2] [--work DIR] [-- more train flags]

Trains on STORE (a training store: train.h5, val.h5, test.h5) with `heimdall train --json` in a fresh workspace
(DIR, else a temporary folder) and prints the seconds of every phase the run reports, then the choice's seconds
(phases "map fit", "choice", "evaluation") against the two targets: at most 15 % of the training time on the
default run, at most 30 s on a 3,000-transmission store (`heimdall simulate -n 3000 --out STORE`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from heimdall.cli import main as heimdall
from heimdall.commands.train import CHOICE_PHASES

TARGET_SHARE = 0.15  # of the training time, on the default run
TARGET_SMALL_S = 30.0  # on a 3,000-transmission store
SMALL_STORE = 3_000


def run(data_dir: Path, work: Path, epochs: int | None, extra: list[str]) -> dict:
    """The `train --json` summary of one run on `data_dir` in the workspace `work`."""
    argv = ["train", "--data-dir", str(data_dir), "--checkpoint-dir", str(work / "run")]
    argv += ["--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--store", str(work / "models"), "--json"]
    argv += ["--epochs", str(epochs)] if epochs else []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = heimdall([*argv, *extra])
    if code != 0:
        raise SystemExit(f"heimdall train ended with {code}")
    return json.loads(out.getvalue())


def store_size(data_dir: Path) -> int:
    """Transmissions of the store's train, val and test splits."""
    import h5py

    total = 0
    for name in ("train.h5", "val.h5", "test.h5"):
        if (data_dir / name).is_file():
            with h5py.File(data_dir / name) as f:
                total += len(f["features"])
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--epochs", type=int, help="default: the training's own (its time budget ends it)")
    ap.add_argument("--work", type=Path, help="the run's workspace (default: a temporary folder)")
    ap.add_argument("extra", nargs="*", help="more flags of `heimdall train` (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-choice-") as tmp:
        summary = run(args.data_dir, args.work or Path(tmp), args.epochs, args.extra)
    phases = summary["phases_s"]
    for name, seconds in phases.items():
        print(f"{name:20s} {seconds:7.1f} s")
    choice = (summary["model"] or {}).get("localizer") or {}
    print(f"shipped: {choice.get('localizer')} ({choice.get('reason')})")
    registry = (summary["model"] or {}).get("registry") or {}
    print(f"registry: {registry.get('alias')} ({registry.get('reason')})")
    added = sum(phases.get(name, 0.0) for name in CHOICE_PHASES)
    share = added / phases["train"]
    n = store_size(args.data_dir)
    what = " + ".join(CHOICE_PHASES)
    print(f"the choice ({what}): {added:.1f} s = {share:.1%} of the training's {phases['train']:.0f} s")
    ratio = share / TARGET_SHARE
    print(f"ratio to the default run's target ({TARGET_SHARE:.0%} of the training): {ratio:.2f} (≤ 1 meets it)")
    print(
        f"ratio to the {SMALL_STORE:,}-transmission store's target ({TARGET_SMALL_S:.0f} s; this store: {n:,}): "
        f"{added / TARGET_SMALL_S:.2f} (≤ 1 meets it)"
    )


if __name__ == "__main__":
    main()
