"""Which receiver of a table a recording or a request comes from: the one resolver of `import`, `predict` and the
service.

A receiver is claimed by id and/or by position (metres in the table's frame). A known id is that receiver (a
position given with it must lie within the tolerance of its table position); an id the table does not know is
refused or ignored (matched by position), as the caller asks; a position alone is the table receiver within the
tolerance, else a receiver the table does not hold (-1: ad hoc, or new to the table on import). One receiver
claimed twice — the same table row, or two other positions within the tolerance — is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heimdall.datasets.sigmf_files import Recording
from heimdall.errors import ReceiverError, RecordingError
from heimdall.geo import LocalFrame

GEOLOCATION_FIELD = "captures[0].core:geolocation or global.core:geolocation"
RECEIVER_ID_FIELD = "global.heimdall:receiver_id"


@dataclass(frozen=True)
class ReceiverClaim:
    """What a recording or request says of its receiver; `field` names where (for errors), `name` how another
    claim refers to it ("also …"), `id_field` where its id is."""

    field: str
    name: str
    id: str | None = None
    position_m: np.ndarray | None = None  # [2] east/north in the table's frame
    id_field: str | None = None


def nearest_receivers(en_m: np.ndarray, positions_m: np.ndarray, tolerance_m: float) -> np.ndarray:
    """For each position of en_m [N, 2], the index of the nearest table position (positions_m [R, 2]) if within
    tolerance_m, else -1: int [N]."""
    if len(positions_m) == 0 or len(en_m) == 0:
        return np.full(len(en_m), -1)
    d = np.linalg.norm(np.asarray(en_m)[:, None] - np.asarray(positions_m)[None], axis=-1)  # [N, R]
    k = d.argmin(axis=1)
    return np.where(d[np.arange(len(d)), k] <= tolerance_m, k, -1)


def resolve_receivers(
    claims: list[ReceiverClaim], ids: list[str], positions_m: np.ndarray, tolerance_m: float, refuse_unknown_ids: bool
) -> np.ndarray:
    """Row of the table (ids, positions_m [R, 2]) of each claim, -1 for a receiver the table does not hold: int [n].

    refuse_unknown_ids: an id the table does not know is an error (else the claim is matched by its position).
    Raises ReceiverError naming the field of the first claim at fault.
    """
    given = [i for i, c in enumerate(claims) if c.position_m is not None]
    en = np.asarray([claims[i].position_m for i in given], float).reshape(-1, 2)
    nearest = dict(zip(given, nearest_receivers(en, positions_m, tolerance_m).tolist(), strict=True))
    rows = np.full(len(claims), -1)
    for i, claim in enumerate(claims):
        if claim.id is not None and claim.id in ids:
            k = ids.index(claim.id)
            if claim.position_m is not None:
                dist = float(np.linalg.norm(np.asarray(claim.position_m) - positions_m[k]))
                if dist > tolerance_m:
                    raise ReceiverError(
                        claim.field,
                        f"receiver {claim.id!r} is {dist:.0f} m from its position in the receiver "
                        f"table (tolerance {tolerance_m:g} m)",
                        i,
                    )
            rows[i] = k
        elif claim.id is not None and refuse_unknown_ids:
            raise ReceiverError(
                claim.id_field or claim.field,
                f"unknown receiver {claim.id!r}; the table knows {', '.join(ids)} (or give lat/lon alone)",
                i,
            )
        elif claim.position_m is not None:
            rows[i] = nearest[i]
        else:
            raise ReceiverError(claim.field, "neither a known receiver id nor a position", i)
    _check_unique(claims, rows, ids, tolerance_m)
    return rows


def _check_unique(claims: list[ReceiverClaim], rows: np.ndarray, ids: list[str], tolerance_m: float) -> None:
    """ReceiverError at the second claim of a receiver: the same table row, or ad-hoc positions within tolerance."""
    first_of: dict[int, int] = {}
    for i, k in enumerate(rows.tolist()):
        if k >= 0 and k in first_of:
            raise ReceiverError(
                claims[i].field, f"receiver {ids[k]!r} appears twice (also {claims[first_of[k]].name})", i
            )
        first_of.setdefault(k, i)
    ad_hoc = np.flatnonzero(rows < 0)
    if len(ad_hoc) < 2:
        return
    en = np.asarray([claims[i].position_m for i in ad_hoc], float)  # [A, 2], one vectorised comparison
    near = np.triu(np.linalg.norm(en[:, None] - en[None], axis=-1) <= tolerance_m, k=1)  # [A, A]: earlier, later
    if near.any():
        later = int(np.flatnonzero(near.any(axis=0))[0])
        earlier = int(np.flatnonzero(near[:, later])[0])
        raise ReceiverError(
            claims[ad_hoc[later]].field,
            f"the same receiver appears twice (also {claims[ad_hoc[earlier]].name}, within {tolerance_m:g} m)",
            int(ad_hoc[later]),
        )


def resolve_recordings(
    recordings: tuple[Recording, ...], frame: LocalFrame, ids: list[str], positions_m: np.ndarray, tolerance_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """`resolve_receivers` for the recordings of a SigMF collection (by heimdall:receiver_id, else by position; an
    id the table does not know is matched by position): rows int [k] (-1: not in the table) and the recordings'
    positions float64 [k, 2] in `frame`. RecordingError names the recording's file and field."""
    en = frame.to_local([r.lat for r in recordings], [r.lon for r in recordings]).reshape(-1, 2)
    claims = [
        ReceiverClaim(
            field=GEOLOCATION_FIELD if r.receiver_id is None else RECEIVER_ID_FIELD,
            name=r.meta_path.name,
            id=r.receiver_id,
            position_m=p,
            id_field=RECEIVER_ID_FIELD,
        )
        for r, p in zip(recordings, en, strict=True)
    ]
    try:
        return resolve_receivers(claims, ids, positions_m, tolerance_m, refuse_unknown_ids=False), en
    except ReceiverError as exc:
        raise RecordingError(recordings[exc.claim].meta_path, exc.field, exc.message) from None
