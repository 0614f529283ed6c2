"""Order statistics for the per-frame path, without numpy's general-purpose overhead."""

from __future__ import annotations

import numpy as np


def median(values: np.ndarray) -> float:
    """The median of ``values`` (any shape, read flat; no NaN), equal to ``np.median``'s:
    the middle value, or the mean of the two middle ones (in the array's dtype).

    Why: ``np.median`` spends about 25 microseconds a call on its generality (axes, NaN
    checks, a mean of the middle pair) over a partition that takes 5-15 on the few
    thousand values the registration and the cement's noise read; the per-frame path
    calls it about 20 times a frame.
    """
    flat = np.ravel(values)
    n = flat.size
    if n == 0:
        raise ValueError("median of no values")
    k = n // 2
    if n % 2:
        return float(np.partition(flat, k)[k])
    middle = np.partition(flat, (k - 1, k))
    return float((middle[k - 1] + middle[k]) / 2)


def small_median(values) -> float | None:
    """The median of a short sequence of numbers (a view's last 8 steps between frames), or None
    when empty. Pure Python: on 8 values numpy's array and median cost about 16 microseconds a
    call, this about 1, and the per-frame path asks it several times a frame."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def usual_step(times) -> float | None:
    """The median of the positive steps between successive ``times`` (s: a view's last 8 frame
    times on the per-frame path; a recording's or a logged session's, once, when opened), or None
    when there is none (:func:`small_median`)."""
    values = list(times)
    return small_median([b - a for a, b in zip(values[:-1], values[1:], strict=True) if b > a])
