"""Configuration fields that are also command-line flags: `option()` puts a field's help text and, where it differs
from the field's name, its flag spelling into the field's metadata (heimdall.commands.flags turns them into argparse
flags), and the parsers of values that are not a plain int, float or string. Nothing heavy: the CLI imports the
configuration dataclasses to build `--help`."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

MEBIBYTE = 1024**2


def option(
    default: Any,
    help: str,  # noqa: A002 - argparse's name for it
    *,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    short: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[Any, ...] | None = None,
    metavar: str | None = None,
    default_text: str | None = None,
) -> Any:
    """A dataclass field with default `default` whose flag says `help`.

    flag: the long flag (default `--` and the name with dashes); aliases: older spellings, accepted and not shown;
    parse: the value parser (default from the field's type); default_text: how --help shows the default ("" hides
    it; default: the value itself)."""
    metadata = {"help": help, "flag": flag, "aliases": aliases, "short": short, "parse": parse}
    metadata |= {"choices": choices, "metavar": metavar, "default_text": default_text}
    return dataclasses.field(default=default, metadata={k: v for k, v in metadata.items() if v not in (None, ())})


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = 0.0
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def parse_fractions(text: str) -> tuple[float, float, float]:
    """Three non-negative fractions train,val,test (not all zero), e.g. 0.8,0.1,0.1."""
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative fractions train,val,test, got {text!r}")
    return parts


def parse_shard(text: str) -> tuple[int, int]:
    """Shard i of N, written i/N with 0 ≤ i < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"expected 0 ≤ i < N, got {text!r}")
    return (i, n)


def parse_sha256(text: str) -> str:
    """64 hex digits, lower-cased."""
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text.lower()):
        raise argparse.ArgumentTypeError(f"expected 64 hex digits (a sha256), got {text[:80]!r}")
    return text.lower()


def mebibytes(text: str) -> int:
    """A size given in MB (MiB, may be fractional), in bytes."""
    try:
        return int(float(text) * MEBIBYTE)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a size in MB, got {text!r}") from None
