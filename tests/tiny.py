"""The tiny training the tests share: a one-block, 32-wide network on at most 2 threads, the test process's share
of the cores (seconds per epoch on the test stores), and the `heimdall train` argument list that runs it."""

import os
from pathlib import Path

from heimdall.radiomap.batch import cpu_count


def cores_per_worker() -> int:
    """The cores one test process may use: all of them, or its share among pytest-xdist's workers (`make test`)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, cpu_count() // workers)


TINY_NETWORK = ("--d-model", "32", "--n-layers", "1", "--threads", str(min(2, cores_per_worker())))


def tiny_train_args(
    store: Path, run_dir: Path | None = None, uri: str | None = None, *extra: str, epochs: int = 1
) -> list[str]:
    """`train` of the tiny network for `epochs` on `store`, into `run_dir` and tracked at `uri` (when given, else
    the workspace's defaults), then `extra` flags."""
    args = ["train", "--data-dir", str(store), "--epochs", str(epochs), *TINY_NETWORK]
    if run_dir is not None:
        args += ["--checkpoint-dir", str(run_dir)]
    if uri is not None:
        args += ["--tracking-uri", uri]
    return [*args, *extra]
