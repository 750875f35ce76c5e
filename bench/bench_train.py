"""Training throughput (samples/s) and the fraction of step time spent waiting for data.

    python bench/bench_train.py [--data_dir DIR] [--steps 300] [--num_workers 0] [--loader_memory_mb 1024]

Uses the same DataModule, LocalizationTask and optimiser as `heimdall train`; without --data_dir it
simulates 20,000 transmissions of the default scenario into a temporary folder. Target: < 10 % waiting.
--loader_memory_mb 0 measures the reads from disk used for store files beyond the loader's memory budget.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.spec import DatasetSpec
from heimdall.scenario.builtin import load_scenario
from heimdall.train.config import TrainConfig
from heimdall.train.datamodule import StoreDataModule
from heimdall.train.task import LocalizationTask

TARGET_WAIT_FRACTION = 0.10


def measure(data_dir: Path, steps: int, num_workers: int, cfg: TrainConfig) -> None:
    dm = StoreDataModule(
        data_dir, cfg.batch_size, num_workers, cfg.validation_split, cfg.seed, cfg.loader_memory_mb * 1024**2
    )
    dm.setup()
    mean, std, scale = dm.normalisation()
    net = {
        "n_features": dm.train.infos[0].n_features,
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "n_layers": cfg.n_layers,
        "n_components": cfg.n_components,
    }
    task = LocalizationTask(net, cfg.learning_rate, cfg.weight_decay, cfg.receiver_dropout)
    task.net.set_normalisation(mean, std, scale)
    opt = task.configure_optimizers()["optimizer"]
    loader = dm.train_dataloader()
    wait = compute = 0.0
    done = 0
    while done < steps:
        it = iter(loader)
        while done < steps:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            loss, _ = task._loss(batch, training=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if done >= 10:  # skip warm-up
                wait += t1 - t0
                compute += t2 - t1
            done += 1
    total = wait + compute
    samples = (steps - 10) * cfg.batch_size
    print(
        f"batch {cfg.batch_size}, d_model {cfg.d_model}, layers {cfg.n_layers}, torch threads "
        f"{torch.get_num_threads()}, num_workers {num_workers}, train files read from disk "
        f"{len(dm.train.files_on_disk)} of {len(dm.train.infos)} (loader_memory_mb {cfg.loader_memory_mb:g})"
    )
    print(f"training throughput: {samples / total:.0f} samples/s ({total / (steps - 10) * 1e3:.1f} ms/step)")
    print(
        f"waiting for data: {wait / total:.1%} of step time (target < {TARGET_WAIT_FRACTION:.0%}: "
        f"ratio {TARGET_WAIT_FRACTION / max(wait / total, 1e-9):.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", type=Path)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--num_workers", type=int, default=0)
    ap.add_argument("--loader_memory_mb", type=float, default=TrainConfig.loader_memory_mb)
    args = ap.parse_args()
    cfg = TrainConfig(loader_memory_mb=args.loader_memory_mb)
    if args.data_dir:
        measure(args.data_dir, args.steps, args.num_workers, cfg)
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(load_scenario("nw-italy"), tmp, DatasetSpec(n_transmissions=20_000, iq_per_split=0), workers=2)
        measure(Path(tmp), args.steps, args.num_workers, cfg)


if __name__ == "__main__":
    main()
