"""What the champion rule judges on: an evaluation set known by its transmissions, and the training data it must
not share any with.

Each transmission has a digest (DIGEST_BYTES of BLAKE2b over its features as float32 and its true position as
float64 metres), so the same transmission read from any file, in any layout, has the same digest. A set's
fingerprint is the sha256 over its digests in order; `fingerprint(n)` over the first n, so a set that begins with
another one is recognised as containing it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.evaluation.test_set import TestSet, short_source

MIN_TRANSMISSIONS = 200  # the champion rule decides nothing on fewer
DIGEST_BYTES = 16
CHUNK_ROWS = 8192  # transmissions of a training store read (and hashed) at once
MAX_RECORD_CHARS = 2_000  # a recorded evaluation set read back from the registry (untrusted)


def row_digests(features: np.ndarray, target_m: np.ndarray) -> np.ndarray:
    """The digest of each transmission (features [n, R, F], true position [n, 2] m): numpy bytes array [n]."""
    f = np.ascontiguousarray(features, np.float32).reshape(len(features), -1)
    t = np.ascontiguousarray(target_m, np.float64).reshape(len(target_m), -1)
    rows = np.concatenate([f.view(np.uint8), t.view(np.uint8)], axis=1)
    return np.array(
        [hashlib.blake2b(r.tobytes(), digest_size=DIGEST_BYTES).digest() for r in rows], dtype=f"S{DIGEST_BYTES}"
    )


@dataclass(frozen=True)
class EvaluationSet:
    """A test set and the digest of each of its transmissions (bytes [n], row_digests)."""

    test: TestSet
    digests: np.ndarray

    @classmethod
    def of(cls, test: TestSet) -> EvaluationSet:
        """The set of `test`'s transmissions."""
        return cls(test, row_digests(test.features, test.target_m))

    def __len__(self) -> int:
        return len(self.digests)

    def fingerprint(self, n: int | None = None) -> str:
        """sha256 (hex) over the digests of the first `n` transmissions (all when None)."""
        return hashlib.sha256(self.digests[:n].tobytes()).hexdigest()

    def head(self, n: int) -> EvaluationSet:
        """The first n transmissions."""
        return EvaluationSet(self.test.head(n), self.digests[:n])

    def record(self) -> dict[str, Any]:
        """What a registered version keeps of the set it was judged on: sha256, n, source (folder/name of files)."""
        return {"sha256": self.fingerprint(), "n": len(self), "source": short_source(self.test.source)}

    def describe(self) -> str:
        """The set in words: its size, files and fingerprint."""
        return describe(self.record())


def describe(record: dict[str, Any]) -> str:
    """An evaluation set's record (EvaluationSet.record) in words."""
    return f"{record['n']} transmissions of {record['source']} (sha256 {record['sha256'][:12]}…)"


def read_record(text: str, where: str) -> dict[str, Any] | None:
    """A recorded evaluation set read back (untrusted text); None when it is not one."""
    if len(text) > MAX_RECORD_CHARS:
        return None
    try:
        record = json.loads(text)
        sha, n, source = record["sha256"], record["n"], record["source"]
    except (ValueError, TypeError, KeyError):
        return None
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        return None
    if not (isinstance(n, int) and n > 0 and isinstance(source, str)):
        return None
    return {"sha256": sha, "n": n, "source": source[:300] or where}


def rows_judged_with(evalset: EvaluationSet, champion: dict[str, Any]) -> EvaluationSet | None:
    """The champion's own evaluation set within `evalset` (all of it, or its first rows when it begins with the
    champion's set); None when it does not contain it."""
    n = champion["n"]
    if len(evalset) < n or evalset.fingerprint(n) != champion["sha256"]:
        return None
    return evalset if len(evalset) == n else evalset.head(n)


@dataclass(frozen=True)
class TrainingRows:
    """The transmissions a model was fitted on, as far as this machine has them: digests (bytes [n]) and where."""

    digests: np.ndarray
    source: str

    def shared_with(self, evalset: EvaluationSet) -> int:
        """How many transmissions of `evalset` are among these."""
        return int(np.isin(evalset.digests, self.digests).sum())


def training_rows(files: list[Path], also: tuple[TestSet, ...] = ()) -> TrainingRows | None:
    """The digests of every transmission of the store `files` (read CHUNK_ROWS at a time) and of the test sets
    `also`; None when there are none."""
    from heimdall.datasets.loader import StoreDataset

    parts, names = [], []
    for path in files:
        ds = StoreDataset([path])
        for start in range(0, len(ds), CHUNK_ROWS):
            rows = StoreDataset([path], np.arange(start, min(start + CHUNK_ROWS, len(ds))))
            parts.append(row_digests(rows.read_all("features"), rows.read_all("tx_position_m")))
        names.append(str(path))
    for s in also:
        parts.append(row_digests(s.features, s.target_m))
        names.append(s.source)
    if not parts:
        return None
    return TrainingRows(np.concatenate(parts), short_source(", ".join(names)))
