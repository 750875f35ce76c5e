"""ONNX Runtime vs PyTorch on CPU with equal thread counts: latency at batch 1, throughput at batch 256.

    python bench/bench_onnx.py [--checkpoint best.ckpt] [--threads 2]

Without --checkpoint a model with the default architecture and random weights is used (speed does not
depend on the weights). Target: ONNX Runtime ≥ 1.5× faster than PyTorch at batch 1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from heimdall.release.export import INPUT_NAMES, export_checkpoint, parity_inputs
from heimdall.scenario.builtin import load_scenario
from heimdall.train.task import LocalizationTask, untrained_checkpoint

TARGET_SPEEDUP_BATCH1 = 1.5


def _time(fn, min_seconds: float = 2.0) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or untrained_checkpoint(load_scenario("nw-italy"), Path(tmp) / "random.ckpt")
        onnx_path = export_checkpoint(ckpt, Path(tmp) / "model.onnx").path
        task = LocalizationTask.load_from_checkpoint(ckpt, map_location="cpu")
        net = task.net.eval()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        rx = np.random.default_rng(0).uniform(-8e4, 8e4, (7, 2))
        print(f"threads: {args.threads} (torch intra-op = ONNX Runtime intra-op)")
        for batch in (1, 256):
            x = parity_inputs(net, rx, batch, np.random.default_rng(batch))
            tx = [torch.from_numpy(x[k]) for k in INPUT_NAMES]

            def run_torch(tx=tx):
                with torch.inference_mode():
                    net.predict_m(*tx)

            t_torch = _time(run_torch)
            t_ort = _time(lambda x=x: session.run(["mean_m", "cov_m2"], x))
            if batch == 1:
                print(
                    f"batch 1 latency: PyTorch {t_torch * 1e3:.3f} ms, ONNX Runtime {t_ort * 1e3:.3f} ms, "
                    f"speed-up {t_torch / t_ort:.2f}× (target ≥ {TARGET_SPEEDUP_BATCH1}×)"
                )
            else:
                print(
                    f"batch {batch} throughput: PyTorch {batch / t_torch:.0f}/s, ONNX Runtime {batch / t_ort:.0f}/s, "
                    f"ratio {t_torch / t_ort:.2f}×"
                )


if __name__ == "__main__":
    main()
