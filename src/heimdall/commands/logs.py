"""Python logging for commands: what stderr and a log file (a run's train.log) show.

At the default level stderr shows Heimdall's own messages at that level and the warnings of other libraries, but
not their INFO chatter (the ONNX optimizer, Lightning's tips, MLflow's database set-up) nor the deprecation
warnings raised inside them. The log file keeps Heimdall's messages from INFO up, every warning (Python warnings
included) and the traceback of an unexpected error (TRACEBACKS, never shown on stderr below DEBUG). At DEBUG both
show everything.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRACEBACKS = logging.getLogger("heimdall.traceback")  # DEBUG records only the log file keeps
TRACEBACKS.setLevel(logging.DEBUG)
WARNINGS = logging.getLogger("py.warnings")  # Python warnings, as logging.captureWarnings names them
# Libraries that give their loggers a handler of their own when imported (their records would bypass ours): those
# imported by then lose it and propagate to the root logger; MLflow imported later is told not to add one
# (MLFLOW_CONFIGURE_LOGGING).
OWN_HANDLERS = ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow", "alembic", "huey", "sqlalchemy.engine")
# Python warnings that are chatter when a library raises them: its own deprecations, and Lightning's
# "possible user warnings" about settings Heimdall chose (matched by name: Lightning is not imported here).
DEPENDENCY_CHATTER = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
CHATTER_NAMES = ("PossibleUserWarning",)
# Warnings of other libraries that tell a Heimdall user nothing: (logger, text in the message). Lightning's MLflow
# logger warns when it creates the experiment, and Lightning warns that the run folder (holding train.log) is not
# empty.
NOT_FOR_USERS = (
    ("lightning.pytorch.loggers.mlflow", "Experiment with name "),
    (WARNINGS.name, "Checkpoint directory "),
)
_PACKAGE = str(Path(__file__).resolve().parents[1])  # heimdall's source folder: warnings raised in it are ours


def _own(record: logging.LogRecord) -> bool:
    return record.name == "heimdall" or record.name.startswith("heimdall.")


def _chatter(record: logging.LogRecord) -> bool:
    """Whether a record of another library is chatter: below WARNING, a dependency's deprecation, or not for users."""
    if record.levelno < logging.WARNING:
        return True
    category = getattr(record, "warning_category", None)
    if category is not None and not str(getattr(record, "warning_file", "")).startswith(_PACKAGE):
        if issubclass(category, DEPENDENCY_CHATTER) or category.__name__ in CHATTER_NAMES:
            return True
    message = record.getMessage()
    return any(record.name == name and text in message for name, text in NOT_FOR_USERS)


class _Console(logging.Filter):
    """stderr: Heimdall's records at the handler's level, other libraries' when not chatter; all at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _level <= logging.DEBUG or _own(record) or not _chatter(record)


class _LogFile(logging.Filter):
    """The log file: Heimdall's records from INFO up and TRACEBACKS, every warning; all at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _level <= logging.DEBUG or record.levelno >= logging.WARNING:
            return True
        return _own(record) and (record.levelno >= logging.INFO or record.name == TRACEBACKS.name)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (tests and tools replace it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """warnings.showwarning that logs the warning on WARNINGS with its category and file (for the filters)."""
    if file is not None:  # written to a given file: not a message for the log
        file.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    extra: dict[str, Any] = {"warning_category": category, "warning_file": filename}
    WARNINGS.warning("%s", text, extra=extra)


_stderr: logging.Handler | None = None
_level = logging.INFO


def configure_logging(level: str = "info") -> None:
    """Send log records at `level` and above to stderr as the module docstring says, and Python warnings through
    logging (once per process: calling again changes the level)."""
    global _stderr, _level
    root = logging.getLogger()
    if _stderr is None:
        _stderr = _CurrentStderr()
        _stderr.setFormatter(logging.Formatter("heimdall: %(levelname)s: %(message)s"))
        _stderr.addFilter(_Console())
        root.addHandler(_stderr)
    _level = logging.getLevelName(level.upper())
    _stderr.setLevel(_level)
    root.setLevel(min(logging.INFO, _level))
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    for name in OWN_HANDLERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)  # INFO would log every SQL statement
    warnings.showwarning = _log_warning


@contextmanager
def log_file(path: Path) -> Iterator[None]:
    """Also write log records to `path` while the block runs (as the module docstring says)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_LogFile())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
