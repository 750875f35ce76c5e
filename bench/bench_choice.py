"""What the choice of localizer adds to `heimdall train`: the map's fit, the comparison on the validation split, the
map-carrying model's writing and its evaluation for the champion rule.

    python bench/bench_choice.py --data-dir STORE --model RUN/model.onnx [--spacing-m 500]

STORE: a training store (train.h5, val.h5, test.h5) of the model's receivers, e.g. the default dataset
(workspace/data/nw-italy); RUN/model.onnx: a network exported from a run on it (`heimdall train`, any length).
Prints each step's seconds and the share of the default training budget (12 minutes of fit, about 15 minutes in
all on 2 cores). Target: the choice adds at most 15 % to the default run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from heimdall.evaluation.test_set import load_test_set
from heimdall.radiomap import DEFAULT_SPACING_M
from heimdall.radiomap.fit import MapOptions
from heimdall.release.choice import AUTO, choose_and_attach
from heimdall.release.publish import EVALUATION_SAMPLES, map_model_metrics

DEFAULT_RUN_S = 15 * 60
TARGET_SHARE = 0.15


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--spacing-m", type=float, default=DEFAULT_SPACING_M)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.onnx"
        shutil.copy(args.model, model)
        t0 = time.perf_counter()
        choice, attached = choose_and_attach(model, args.data_dir, AUTO, options=MapOptions(args.spacing_m))
        choose_s = time.perf_counter() - t0
        print(f"fit + comparison on {choice.n_validation} validation transmissions: {choose_s:.1f} s")
        for name, nll in choice.nll.items():
            print(f"  {name:8s} validation NLL {nll:.3f}")
        print(f"shipped: {choice.localizer} ({choice.reason})")
        judge_s = 0.0
        if attached is not None:
            t0 = time.perf_counter()
            test, metrics = map_model_metrics(
                attached.path.read_bytes(), load_test_set(args.data_dir, EVALUATION_SAMPLES), str(attached.path)
            )
            judge_s = time.perf_counter() - t0
            assert test is not None and metrics is not None
            print(
                f"champion-rule evaluation of the map model on {len(test.target_m)} test transmissions: "
                f"{judge_s:.1f} s "
                f"(median error {metrics['median_error_m'] / 1e3:.2f} km)"
            )
    added = choose_s + judge_s
    share = added / DEFAULT_RUN_S
    print(f"added to the default run: {added:.0f} s = {share:.1%} of {DEFAULT_RUN_S // 60} min")
    print(f"ratio to target ({TARGET_SHARE:.0%}): {share / TARGET_SHARE:.2f} (≤ 1 meets it)")


if __name__ == "__main__":
    main()
