"""The clock every stamp is read from: ``time.perf_counter()``, and its wall-clock twin."""

from __future__ import annotations

import time

__all__ = ["now", "wall_time"]

now = time.perf_counter

_WALL_OFFSET = time.time() - time.perf_counter()


def wall_time(perf: float) -> float:
    """A ``perf_counter`` stamp on the ``time.time()`` scale."""
    return perf + _WALL_OFFSET
