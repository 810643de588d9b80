"""Latency histograms: log buckets, a stated relative error, mergeable and lossless in JSON.

A histogram's buckets grow by 2% from 1 µs (about 1,100 counters per phase at most, whatever
the number of requests); a quantile is read as the geometric middle of the bucket that holds
it, so it is within 1% (``RELATIVE_ERROR``; the bound is sqrt(1.02) - 1 = 0.995%) of the exact
sample quantile, for values from 1 µs to an hour. Under 1 µs a value reads as the histogram's
minimum; over an hour, as its maximum.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["HISTOGRAM_LAYOUT", "RELATIVE_ERROR", "LatencyHistogram", "Quantiles", "as_dict"]

_GROWTH = 1.02
_LOG_GROWTH = math.log(_GROWTH)
_MIN_MS = 0.001
_BUCKETS = int(math.log(3_600_000 / _MIN_MS) / _LOG_GROWTH) + 2  # up to an hour
# Bucket of ms > _MIN_MS: int(log(ms / _MIN_MS) / _LOG_GROWTH) + 1, as one multiply-add.
_SCALE = 1.0 / _LOG_GROWTH
_OFFSET = 1.0 - math.log(_MIN_MS) * _SCALE
_log = math.log
# Bucket i >= 1 holds [_LOWER[i], _LOWER[i + 1]); bucket 0 everything under _MIN_MS.
_LOWER = [0.0] + [_MIN_MS * _GROWTH ** (i - 1) for i in range(1, _BUCKETS + 2)]
RELATIVE_ERROR = 0.01  # a quantile's stated bound: sqrt(_GROWTH) - 1 = 0.995% (module docstring)
# What a Stats document records of the histograms, so that one with other buckets is refused.
# What a Stats document records of the buckets, so that one with other buckets is refused.
HISTOGRAM_LAYOUT = {"growth": _GROWTH, "min_ms": _MIN_MS, "relative_error": RELATIVE_ERROR}


def _bucket(ms: float) -> int:
    """The bucket of a value: 0 under _MIN_MS, then 2% wide, the last one open-ended."""
    if ms < _MIN_MS:
        return 0
    i = int(_log(ms) * _SCALE + _OFFSET)
    return i if i < _BUCKETS else _BUCKETS


@dataclass(frozen=True, slots=True, kw_only=True)
class Quantiles:
    """A phase's distribution in ms."""

    count: int
    mean: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float


class LatencyHistogram:
    """Counts of millisecond values in log buckets; quantiles within 1% (``RELATIVE_ERROR``).

    ``add`` buckets a value at once. The Recorder's fold appends to ``pending`` instead, for
    its usual request; pending values are bucketed in batches (``flush``: when the
    Recorder's table holds ``BATCH`` values, or when the histogram is read), which
    matters on the request path of an aggregate-only Recorder.
    """

    __slots__ = ("_count", "_counts", "_max", "_min", "_total", "pending")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._count = 0
        self._total = 0.0
        self._min = math.inf
        self._max = 0.0
        # Values not yet bucketed (see the class docstring and HostTable).
        self.pending: list[float] = []

    def add(self, ms: float) -> None:
        self._count += 1
        self._total += ms
        if ms < self._min:
            self._min = ms
        if ms > self._max:
            self._max = ms
        i = _bucket(ms)
        counts = self._counts
        counts[i] = counts.get(i, 0) + 1

    def flush(self) -> None:
        """Bucket the pending values: sorted, then one bisection per occupied bucket.

        A batch of latencies occupies far fewer buckets than it has values (a hundred or so
        for a thousand values), so this costs a C sort plus a few Python steps per bucket:
        about a sixth of bucketing each value (measured, 1,024 values: 0.23 against 1.37 us
        per value with a C-level map per value).
        """
        pending = self.pending
        if not pending:
            return
        values = sorted(pending)
        pending.clear()  # in place: the fold holds on to the list (HostStats.by_phase)
        n = len(values)
        self._count += n
        self._total += math.fsum(values)
        if values[0] < self._min:
            self._min = values[0]
        if values[-1] > self._max:
            self._max = values[-1]
        counts = self._counts
        pos = 0
        while pos < n:
            i = _bucket(values[pos])
            # The values of bucket i end where bucket i + 1 begins (the last bucket takes the
            # rest); at least one value is taken, whatever rounding says at the edge.
            end = bisect_left(values, _LOWER[i + 1], pos) if i < _BUCKETS else n
            if end <= pos:
                end = pos + 1
            counts[i] = counts.get(i, 0) + end - pos
            pos = end

    @property
    def count(self) -> int:
        self.flush()
        return self._count

    @property
    def total(self) -> float:
        self.flush()
        return self._total

    @property
    def min(self) -> float:
        self.flush()
        return self._min

    @property
    def max(self) -> float:
        self.flush()
        return self._max

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's counts to this one."""
        other.flush()
        self.flush()
        counts = self._counts
        for i, n in other._counts.items():
            counts[i] = counts.get(i, 0) + n
        self._count += other._count
        self._total += other._total
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def __eq__(self, other: object) -> bool:
        """Same counts in the same buckets, same sum, min and max."""
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        self.flush()
        other.flush()
        return (self._count, self._counts, self._total, self._min, self._max) == (
            other._count,
            other._counts,
            other._total,
            other._min,
            other._max,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def quantile(self, q: float) -> float:
        """The value at rank ``q * (count - 1)`` (rounded down) of the values added, within
        ``RELATIVE_ERROR`` (see the module docstring); 0.0 when empty."""
        self.flush()
        if not self._count:
            return 0.0
        rank = q * (self._count - 1)
        seen = 0
        for i in sorted(self._counts):
            seen += self._counts[i]
            if seen > rank:
                value = _MIN_MS * _GROWTH ** (i - 0.5) if i else 0.0
                return min(max(value, self._min), self._max)
        return self._max

    def summary(self) -> Quantiles:
        self.flush()
        count = self._count
        return Quantiles(
            count=count,
            mean=self._total / count if count else 0.0,
            min=self._min if count else 0.0,
            p50=self.quantile(0.50),
            p90=self.quantile(0.90),
            p95=self.quantile(0.95),
            p99=self.quantile(0.99),
            max=self._max,
        )

    def to_dict(self, *, buckets: bool = False) -> dict[str, Any]:
        """Count, mean, min, quantiles and max (ms); with ``buckets``, the sum and every
        non-empty bucket too (``[index, count]`` pairs): what :meth:`from_dict` reads back."""
        d: dict[str, Any] = as_dict(self.summary())
        if buckets:
            d["sum"] = self._total
            d["buckets"] = [[i, self._counts[i]] for i in sorted(self._counts)]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """The histogram :meth:`to_dict` wrote with ``buckets=True``."""
        hist = cls()
        counts = hist._counts
        for i, n in data["buckets"]:
            if type(i) is not int or type(n) is not int or not 0 <= i <= _BUCKETS or n < 1:
                raise ValueError(f"bad histogram bucket [{i!r}, {n!r}]")
            counts[i] = counts.get(i, 0) + n
        count = sum(counts.values())
        if count != data["count"]:
            raise ValueError(f"histogram buckets hold {count} values, count says {data['count']}")
        hist._count = count
        if count:
            hist._total = float(data["sum"])
            hist._min = float(data["min"])
            hist._max = float(data["max"])
        return hist


def as_dict(q: Quantiles) -> dict[str, float]:
    return {f: getattr(q, f) for f in Quantiles.__slots__}
