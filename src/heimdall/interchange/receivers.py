"""Which receiver a recording comes from: by `heimdall:receiver_id`, else by position within a tolerance."""

from __future__ import annotations

import numpy as np

from heimdall.errors import RecordingError
from heimdall.interchange.sigmf_files import Collection, Recording

GEOLOCATION_FIELD = "captures[0].core:geolocation or global.core:geolocation"


def match_receiver(rec: Recording, en_m: np.ndarray, ids: list[str], positions_m: np.ndarray,
                   tolerance_m: float) -> int:
    """Index in the table (ids, positions_m [R, 2]) of the recording's receiver at en_m [2], or -1 if none.

    A known receiver id must lie within tolerance_m of its table position (else RecordingError).
    """
    if rec.receiver_id is not None and rec.receiver_id in ids:
        k = ids.index(rec.receiver_id)
        dist = float(np.linalg.norm(positions_m[k] - en_m))
        if dist > tolerance_m:
            raise RecordingError(rec.meta_path, "global.heimdall:receiver_id",
                                 f"receiver {rec.receiver_id!r} is {dist:.0f} m from its position in the receiver "
                                 f"table (tolerance {tolerance_m:.0f} m)")
        return k
    return int(nearest_receivers(np.reshape(en_m, (1, 2)), positions_m, tolerance_m)[0])


def nearest_receivers(en_m: np.ndarray, positions_m: np.ndarray, tolerance_m: float) -> np.ndarray:
    """For each position of en_m [N, 2], the index of the nearest table position (positions_m [R, 2]) if within
    tolerance_m, else -1: int [N]."""
    if len(positions_m) == 0:
        return np.full(len(en_m), -1)
    d = np.linalg.norm(np.asarray(en_m)[:, None] - np.asarray(positions_m)[None], axis=-1)  # [N, R]
    k = d.argmin(axis=1)
    return np.where(d[np.arange(len(d)), k] <= tolerance_m, k, -1)


def check_unique(col: Collection, keys: list) -> None:
    """RecordingError when two recordings of a collection come from the same receiver (keys[i] of recording i)."""
    seen: dict = {}
    for rec, key in zip(col.recordings, keys):
        if key in seen:
            raise RecordingError(rec.meta_path, GEOLOCATION_FIELD if rec.receiver_id is None
                                 else "global.heimdall:receiver_id",
                                 f"receiver {key!r} appears twice in {col.path.name} (also {seen[key].name})")
        seen[key] = rec.meta_path
