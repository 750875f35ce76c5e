"""The tiny training the tests share: a one-block, 32-wide network on 2 threads (seconds per epoch on the test
stores), and the `heimdall train` argument list that runs it."""

from pathlib import Path

TINY_NETWORK = ("--d-model", "32", "--n-layers", "1", "--threads", "2")


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
