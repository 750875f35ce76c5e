"""Atomic file writes: readers see the old complete file or the new complete file, never a partial one.

A file is written beside its target, flushed and fsynced, renamed over the target, and the folder is
fsynced so the rename itself survives a power loss. New files get the permissions `open()` would give
them (0o666 less the umask); a replaced file keeps its permissions.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_TEMPORARY_NAME_TRIES = 100


def _linux_syncfs() -> Callable[[int], int] | None:
    """syncfs(2) from the C library on Linux (flushes one file system, waits, and reports write-back errors since
    Linux 5.8); None elsewhere."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _linux_syncfs()


def fsync_dir(folder: str | Path) -> None:
    """Make renames and deletions in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Flush a file that another library wrote and closed (e.g. HDF5) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(folder: str | Path) -> None:
    """Make every file written in `folder` (and its entries) durable before the folder is published by a rename: on
    Linux one syncfs of its file system (a folder of thousands of files costs one flush, not one fsync each; OSError
    when the write-back failed), elsewhere an fsync of each file and of the folder."""
    if _syncfs is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"syncfs: {os.strerror(errno)}", str(folder))
        finally:
            os.close(fd)
        return
    for path in Path(folder).rglob("*"):
        if path.is_file():
            fsync_file(path)
    fsync_dir(folder)


def replace_durably(source: str | Path, target: str | Path) -> None:
    """Rename `source` over `target` (same folder) and fsync the folder."""
    os.replace(source, target)
    fsync_dir(Path(target).parent)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file beside `path`: (descriptor, name). Mode 0o666 lets the umask apply as for open()."""
    for _ in range(_TEMPORARY_NAME_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path`; flush, fsync and rename over `path` on success.

    On any exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8", newline=None if "b" in mode else "") as f:
            if path.exists():
                os.chmod(f.fileno(), stat.S_IMODE(path.stat().st_mode))
            yield f
            f.flush()
            os.fsync(f.fileno())
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a reader sees the old bytes or the new, never a part)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)
