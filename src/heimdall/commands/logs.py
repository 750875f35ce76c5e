"""Python logging for commands: messages at --log-level on stderr, and a log file (a run's train.log) that keeps
INFO and above, and the traceback of an unexpected error (TRACEBACKS, never shown on stderr below DEBUG)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRACEBACKS = logging.getLogger("heimdall.traceback")  # DEBUG records only the log file keeps
TRACEBACKS.setLevel(logging.DEBUG)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (tests and tools replace it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


_stderr: logging.Handler | None = None


def configure_logging(level: str = "info") -> None:
    """Send log records at `level` and above to stderr (once per process: calling again changes the level)."""
    global _stderr
    root = logging.getLogger()
    if _stderr is None:
        _stderr = _CurrentStderr()
        _stderr.setFormatter(logging.Formatter("heimdall: %(levelname)s: %(message)s"))
        root.addHandler(_stderr)
    _stderr.setLevel(level.upper())
    root.setLevel(min(logging.INFO, _stderr.level))


@contextmanager
def log_file(path: Path) -> Iterator[None]:
    """Also write log records (INFO and above, and TRACEBACKS) to `path` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
