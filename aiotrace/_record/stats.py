"""Aggregates in fixed memory: per-host counts and log-bucket histograms of each phase.

A histogram's buckets grow by 2% from 1 µs, so any quantile it reports is within 2% of the
true sample quantile, in about 1,100 counters per phase whatever the number of requests.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .timeline import PHASES, chained_phase_columns, pooled_phase_columns, pooled_phases

__all__ = [
    "BATCH",
    "OPENED_LIMIT",
    "OPENED_ROW",
    "ROWS_LIMIT",
    "TOTAL",
    "HostStats",
    "HostTable",
    "LatencyHistogram",
    "Quantiles",
]

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


def _bucket(ms: float) -> int:
    """The bucket of a value: 0 under _MIN_MS, then 2% wide, the last one open-ended."""
    if ms < _MIN_MS:
        return 0
    i = int(_log(ms) * _SCALE + _OFFSET)
    return i if i < _BUCKETS else _BUCKETS


BATCH = 4096  # values left pending across a Recorder's hosts (~1,000 pooled requests' worth)
# A row of HostTable.rows: host label, status, t_get_conn, t_wrote_request, t_first_byte,
# t_body_done of one request on a pooled connection; folded ROWS_LIMIT // _ROW at a time.
_ROW = 6
ROWS_LIMIT = BATCH // 4 * _ROW
# A row of HostTable.opened: host label, status, reused, t_get_conn, the end stamps of the
# blocked, DNS, connect and TLS phases (None where the phase did not happen), t_wrote_request,
# t_first_byte, t_body_done: the only round trip of a request with no error that opened a
# connection or waited for the pool. Folded OPENED_LIMIT // OPENED_ROW at a time.
OPENED_ROW = 11
OPENED_LIMIT = 256 * OPENED_ROW
_COLUMNS_FROM = 16  # rows of one host and phase set folded as columns; fewer, row by row
# HostStats.by_phase, by position: the seven phases (the timeline's PHASES), then the total.
_PHASE_NAMES = (*PHASES, "total")
SEND = PHASES.index("send")  # send, wait and receive follow each other
TOTAL = len(PHASES)


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
    """Counts of millisecond values in log buckets; quantiles within 2%.

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

    def quantile(self, q: float) -> float:
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


class HostStats:
    """One host's requests: counts, statuses, errors, reuse and each phase's histogram."""

    __slots__ = (
        "by_phase",
        "dirty",
        "errors",
        "phases",
        "requests",
        "reused",
        "round_trips",
        "statuses",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.round_trips = 0
        self.reused = 0
        self.errors: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.phases: dict[str, LatencyHistogram] = {}
        # The fold appends to the histograms' pending lists directly (see HostTable): here
        # they are, by position, the seven phases in PHASES order then the total, each put in
        # the first time a value comes for it (pending_list), so that a phase that never
        # happened has no histogram.
        self.by_phase: list[list[float] | None] = [None] * 8
        self.dirty = False  # has pending values; listed in its HostTable's ``dirty``

    def pending_list(self, i: int) -> list[float]:
        """The pending list of phase ``i`` (``TOTAL``: the total), made on first use."""
        hist = self.histogram(_PHASE_NAMES[i])
        self.by_phase[i] = hist.pending
        return hist.pending

    def flush(self) -> None:
        """Bucket every histogram's pending values."""
        self.dirty = False
        for hist in self.phases.values():
            hist.flush()

    def copy(self) -> HostStats:
        new = HostStats()
        new.requests, new.round_trips, new.reused = self.requests, self.round_trips, self.reused
        new.errors = dict(self.errors)
        new.statuses = dict(self.statuses)
        for name, hist in self.phases.items():
            h = new.phases[name] = LatencyHistogram()
            h.merge(hist)
        return new

    def histogram(self, name: str) -> LatencyHistogram:
        """The phase's histogram, made empty the first time it is asked for."""
        hist = self.phases.get(name)
        if hist is None:
            hist = self.phases[name] = LatencyHistogram()
        return hist

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "round_trips": self.round_trips,
            "reused": self.reused,
            "errors": dict(self.errors),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "phases": {name: _as_dict(h.summary()) for name, h in self.phases.items()},
        }


def _as_dict(q: Quantiles) -> dict[str, float]:
    return {f: getattr(q, f) for f in Quantiles.__slots__}


def _count(stats: HostStats, n: int, reused: int, statuses: list[int | None]) -> None:
    """Count ``n`` requests of one round trip each (``reused`` on a pooled connection) and
    their ``statuses`` (``None``: no response)."""
    stats.requests += n
    stats.round_trips += n
    stats.reused += reused
    counts = stats.statuses
    for status, count in Counter(statuses).items():
        if status is not None:
            counts[status] = counts.get(status, 0) + count


class HostTable(dict[str, HostStats]):
    """Per-host stats with one budget for the values not yet bucketed.

    The usual request (one round trip on a pooled connection that did not wait for it, no
    error) reaches the table as a row of six plain values appended to ``rows`` (the
    Recorder's fold); ``fold_rows`` folds them a batch at a time, column by column. A
    request whose one round trip opened a connection or waited for the pool, with no error,
    is a row of ``opened`` (``fold_opened``: by host and the phases taken, column by
    column). Every other request is folded at once, its values left pending. The table
    counts the values left pending and lists the hosts it touched; at ``BATCH`` values
    every listed host is flushed. So pending values stay under ``BATCH`` (and rows under
    their limits), however many hosts there are (a crawl touches thousands, each a few
    times) and however many values a request brings (4 on a pooled connection, up to 9 per
    round trip on a new one), and batches stay large where it matters (many requests to
    few hosts).
    """

    __slots__ = ("dirty", "opened", "pending", "rows")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending = 0
        self.dirty: list[HostStats] = []
        self.rows: list[Any] = []  # _ROW values a request, see _ROW
        self.opened: list[Any] = []  # OPENED_ROW values a request, see OPENED_ROW

    def host(self, label: str) -> HostStats:
        """The stats of host ``label`` (``host:port``), made empty the first time."""
        stats = self.get(label)
        if stats is None:
            stats = self[label] = HostStats()
        return stats

    def touched(self, stats: HostStats) -> None:
        """``stats`` has values pending: list it for the next flush."""
        if not stats.dirty:
            stats.dirty = True
            self.dirty.append(stats)

    def leave(self, stats: HostStats, values: Any, total: float | None) -> None:
        """Leave one round trip's phase ``values`` (``PHASES`` order, ``None``: did not
        happen; may be empty) and, at a request's end, its ``total`` pending in ``stats``; at
        ``BATCH`` values, after a request, bucket them all."""
        pending = stats.by_phase
        n = 0
        for i, ms in enumerate(values):
            if ms is not None:
                (pending[i] or stats.pending_list(i)).append(ms)
                n += 1
        self.touched(stats)
        if total is None:
            self.pending += n
        else:
            (pending[TOTAL] or stats.pending_list(TOTAL)).append(total)
            self.folded(n + 1)

    def folded(self, values: int) -> None:
        """A request left ``values`` more values pending; at ``BATCH``, bucket them all."""
        self.pending += values
        if self.pending >= BATCH:
            self.flush()

    def fold_opened(self) -> None:
        """Fold the pending rows of round trips that opened a connection (see ``opened``),
        grouped by host and by the phases they took: a large group (requests to one service)
        column by column (``chained_phase_columns``), a small one (a crawl: each host a few
        times) row by row, where columns of a few values would cost more than they save."""
        rows = self.opened
        if not rows:
            return
        R = OPENED_ROW
        labels = rows[0::R]
        n = len(labels)
        stops = [rows[4 + i :: R] for i in range(4)]
        groups: dict[tuple[Any, ...], list[Any]]
        if labels.count(labels[0]) == n and all(c.count(None) in (0, n) for c in stops):
            groups = {(labels[0], *(c[0] is None for c in stops)): rows}  # the usual batch
        else:
            groups = {}
            for i in range(0, len(rows), R):
                row = rows[i : i + R]
                key = (row[0], row[4] is None, row[5] is None, row[6] is None, row[7] is None)
                group = groups.get(key)
                if group is None:
                    groups[key] = row
                else:
                    group += row
        for (label, *absent), group in groups.items():
            stats = self.host(label)
            if len(group) < _COLUMNS_FROM * R:
                for i in range(0, len(group), R):
                    self._leave_opened(stats, group, i)
                continue
            n = len(group) // R
            _count(stats, n, sum(group[2::R]), group[1::R])
            taken = [i for i in range(4) if not absent[i]] + [SEND, SEND + 1, SEND + 2]
            # The row holds each phase's end stamp at 4 + its position in PHASES.
            columns, totals = chained_phase_columns(group[3::R], [group[4 + i :: R] for i in taken])
            pending = stats.by_phase
            for i, values in zip(taken, columns, strict=True):
                (pending[i] or stats.pending_list(i)).extend(values)
            (pending[TOTAL] or stats.pending_list(TOTAL)).extend(totals)
            self.touched(stats)
            self.pending += (len(taken) + 1) * n
        rows.clear()

    def _leave_opened(self, stats: HostStats, rows: list[Any], i: int) -> None:
        """Fold the row at ``rows[i]`` alone: what ``chained_phase_columns`` gives it."""
        stats.requests += 1
        stats.round_trips += 1
        if rows[i + 2]:
            stats.reused += 1
        status = rows[i + 1]
        if status is not None:
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
        pending = stats.by_phase
        t0 = at = rows[i + 3]
        n = 1  # the total
        for phase, stop in enumerate(rows[i + 4 : i + OPENED_ROW]):
            if stop is None:
                continue
            if stop > at:
                ms = (stop - at) * 1000.0
                at = stop
            else:
                ms = 0.0
            (pending[phase] or stats.pending_list(phase)).append(ms)
            n += 1
        (pending[TOTAL] or stats.pending_list(TOTAL)).append((at - t0) * 1000.0)
        self.touched(stats)
        self.pending += n

    def fold_rows(self) -> None:
        """Fold the pending rows: their counts, and their phases left pending (see ``rows``).

        Slices and C-level maps do the per-request work (``pooled_phase_columns``), so a
        request costs no Python frame here; only rows for more than one host are split by a
        Python loop first, and a host with few rows in the batch (a crawl) is folded row by
        row, where columns of a few values would cost more than they save.
        """
        rows = self.rows
        if not rows:
            return
        labels = rows[0::_ROW]
        groups: Any
        if labels.count(labels[0]) == len(labels):  # one host: the usual batch
            groups = ((labels[0], rows),)
        else:
            by_host: dict[str, list[Any]] = {}
            for i in range(0, len(rows), _ROW):
                group = by_host.get(rows[i])
                if group is None:
                    group = by_host[rows[i]] = []
                group += rows[i : i + _ROW]
            groups = by_host.items()
        for label, group in groups:
            stats = self.host(label)
            if len(group) < _COLUMNS_FROM * _ROW:
                for i in range(0, len(group), _ROW):
                    self._leave_pooled(stats, group, i)
                continue
            n = len(group) // _ROW
            _count(stats, n, n, group[1::_ROW])
            pending = stats.by_phase
            send = pending[SEND] or stats.pending_list(SEND)
            wait = pending[SEND + 1] or stats.pending_list(SEND + 1)
            receive = pending[SEND + 2] or stats.pending_list(SEND + 2)
            total = pending[TOTAL] or stats.pending_list(TOTAL)
            s, w, r, t = pooled_phase_columns(
                group[2::_ROW], group[3::_ROW], group[4::_ROW], group[5::_ROW]
            )
            send += s
            wait += w
            receive += r
            total += t
            self.touched(stats)
            self.pending += 4 * n
        rows.clear()

    def _leave_pooled(self, stats: HostStats, rows: list[Any], i: int) -> None:
        """Fold the row at ``rows[i]`` alone: what ``pooled_phase_columns`` gives it."""
        stats.requests += 1
        stats.round_trips += 1
        stats.reused += 1
        status = rows[i + 1]
        if status is not None:
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
        send, wait, receive = pooled_phases(*rows[i + 2 : i + _ROW])
        pending = stats.by_phase
        (pending[SEND] or stats.pending_list(SEND)).append(send)
        (pending[SEND + 1] or stats.pending_list(SEND + 1)).append(wait)
        (pending[SEND + 2] or stats.pending_list(SEND + 2)).append(receive)
        (pending[TOTAL] or stats.pending_list(TOTAL)).append(send + wait + receive)
        self.touched(stats)
        self.pending += 4

    def flush(self) -> None:
        """Fold the pending rows and bucket every pending value."""
        self.fold_rows()
        self.fold_opened()
        for stats in self.dirty:
            stats.flush()
        self.dirty.clear()
        self.pending = 0

    def clear(self) -> None:
        super().clear()
        self.dirty.clear()
        self.rows.clear()
        self.opened.clear()
        self.pending = 0
