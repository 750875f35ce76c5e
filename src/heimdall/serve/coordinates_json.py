"""GeoJSON coordinate arrays written as JSON text by a compiled kernel (numba, no GIL).

A map answer's regions hold about a thousand points; made into Python lists and serialised, they cost a few tenths
of a millisecond under the GIL per answer and thousands of objects for the garbage collector. Here the points go
from an array straight to text: each value v is written as the decimal rint(v·10^d)/10^d (d = `decimals`), the
digits of exactly the float that np.round(v, d) gives, so a reader parses the same values as from
json.dumps(np.round(v, d).tolist()) (a value that is not finite, or beyond MAX_ABS, is written null).
"""

from __future__ import annotations

import numpy as np
from numba import njit

import heimdall.radiomap.kernel  # noqa: F401  (first: where numba cannot cache, its kernels fall back uncached)

MAX_DECIMALS = 9
MAX_ABS = 1e9  # larger values (not coordinates in degrees) are written null
_POINT_BYTES = 2 * (1 + 10 + 1 + MAX_DECIMALS) + 4  # two numbers, brackets and commas: an upper bound


@njit(cache=True, nogil=True, inline="always")
def _digits(buf: np.ndarray, at: int, value: np.int64, width: int) -> int:
    """Write the non-negative `value` in decimal at buf[at:], at least `width` digits (zeros in front); the end."""
    n, power = 1, 10
    while value >= power:
        n, power = n + 1, power * 10
    n = max(n, width)
    for k in range(n - 1, -1, -1):
        buf[at + k] = 48 + value % 10
        value //= 10
    return at + n


@njit(cache=True, nogil=True)
def _number(buf: np.ndarray, at: int, v: float, scale: float, decimals: int) -> int:
    """Write v rounded to `decimals` places (null when not finite or beyond MAX_ABS) at buf[at:]; the end."""
    if not np.isfinite(v) or abs(v) > MAX_ABS:
        for c in b"null":
            buf[at] = c
            at += 1
        return at
    n = np.rint(v * scale)
    if n < 0 or (n == 0 and np.signbit(v)):
        buf[at] = 45  # '-'
        at += 1
    a = np.int64(abs(n))
    whole, fraction = a // np.int64(scale), a % np.int64(scale)
    at = _digits(buf, at, whole, 1)
    buf[at] = 46  # '.'
    at += 1
    if fraction == 0:
        buf[at] = 48
        return at + 1
    width = decimals
    while fraction % 10 == 0:  # trailing zeros dropped
        fraction //= 10
        width -= 1
    return _digits(buf, at, fraction, width)


@njit(cache=True, nogil=True)
def _rings(lat_lon: np.ndarray, ends: np.ndarray, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    buf = np.empty(lat_lon.shape[0] * _POINT_BYTES + 2 * ends.shape[0], np.uint8)
    out_ends = np.empty(ends.shape[0], np.int64)
    scale = 10.0**decimals
    at, start = 0, 0
    for r in range(ends.shape[0]):
        buf[at] = 91  # '['
        at += 1
        for p in range(start, ends[r]):
            if p > start:
                buf[at] = 44  # ','
                at += 1
            buf[at] = 91
            at = _number(buf, at + 1, lat_lon[p, 1], scale, decimals)
            buf[at] = 44
            at = _number(buf, at + 1, lat_lon[p, 0], scale, decimals)
            buf[at] = 93  # ']'
            at += 1
        buf[at] = 93
        at += 1
        out_ends[r] = at
        start = ends[r]
    return buf[:at], out_ends


def rings_json(lat_lon: np.ndarray, ends: np.ndarray, decimals: int) -> list[bytes]:
    """Each ring of points lat_lon (float64 [n, 2] degrees; ring k ends before ends[k], int [k] ascending, the last
    n) as a GeoJSON position array, `[[lon,lat],…]`, the values rounded to `decimals` (≤ MAX_DECIMALS) places."""
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ValueError(f"decimals: expected 0 to {MAX_DECIMALS}, got {decimals}")
    text, text_ends = _rings(np.ascontiguousarray(lat_lon, np.float64), np.asarray(ends, np.int64), decimals)
    whole, bounds = text.tobytes(), [0, *text_ends.tolist()]
    return [whole[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
