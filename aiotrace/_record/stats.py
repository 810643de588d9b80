"""Aggregates in fixed memory: per-host counts and log-bucket histograms of each phase.

A histogram's buckets grow by 2% from 1 µs (about 1,100 counters per phase at most, whatever
the number of requests); a quantile is read as the geometric middle of the bucket that holds
it, so it is within 1% (``RELATIVE_ERROR``; the bound is sqrt(1.02) - 1 = 0.995%) of the exact
sample quantile, for values from 1 µs to an hour. Under 1 µs a value reads as the histogram's
minimum; over an hour, as its maximum.

:class:`Stats` is the public face: per-host :class:`HostStats`, mergeable and written to and
read from JSON without loss, so that the stats of workers or processes add up to what one
Recorder seeing every request would have counted. The rest of the module is the Recorder's
fold (``HostTable``), which keeps the request path cheap: see its docstring.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .timeline import PHASES, chained_phase_columns, pooled_phase_columns, pooled_phases

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "BATCH",
    "OPENED_LIMIT",
    "OPENED_ROW",
    "RELATIVE_ERROR",
    "ROWS_LIMIT",
    "TOTAL",
    "HostStats",
    "HostTable",
    "LatencyHistogram",
    "Quantiles",
    "Stats",
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
RELATIVE_ERROR = 0.01  # a quantile's stated bound: sqrt(_GROWTH) - 1 = 0.995% (module docstring)
# What a Stats document records of the histograms, so that one with other buckets is refused.
_K = TypeVar("_K")
_N = TypeVar("_N", int, float)
_FORMAT = "aiotrace.stats/1"
_HISTOGRAM = {"growth": _GROWTH, "min_ms": _MIN_MS, "relative_error": RELATIVE_ERROR}


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
# Every histogram a HostStats may hold, in the order written: under sampling, "response" is
# every request's time to its response (or error), counted at the request boundary.
_HISTOGRAM_NAMES = (*_PHASE_NAMES, "response")
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
        d: dict[str, Any] = _as_dict(self.summary())
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


class HostStats:
    """One host's requests: counts, statuses, errors, reuse, each phase's histogram and the
    loop stalls its round trips overlapped.

    A request counts under the host it was sent to (``requests``, ``statuses``, ``errors``,
    the ``total`` phase), each round trip under the host it went to (``round_trips``,
    ``reused``, ``reuse_miss``, the other phases, ``stall_ms``): a redirect may change hosts.
    """

    __slots__ = (
        "by_phase",
        "dirty",
        "errors",
        "phases",
        "requests",
        "reuse_miss",
        "reused",
        "round_trips",
        "sampled",
        "stall_ms",
        "stalled",
        "statuses",
    )

    def __init__(self) -> None:
        self.requests = 0
        # Under sampling: how many of ``requests`` the phases come from (``None``: all).
        self.sampled: int | None = None
        self.round_trips = 0
        self.reused = 0
        self.errors: dict[str, int] = {}
        """Failed requests by exception type name."""
        self.statuses: dict[int, int] = {}
        self.reuse_miss: dict[str, int] = {}
        """Round trips that opened a connection, by why no pooled one served (``first``,
        ``busy``, ``server_closed``, ...: ``Hop.reuse_miss``)."""
        self.stall_ms: dict[str, float] = {}
        """ms of each phase (and ``total``) during which the event loop was stalled, summed
        over the round trips (a Recorder with ``loop_stalls``; empty: none seen)."""
        self.stalled = 0
        """Round trips that overlapped a loop stall."""
        self.phases: dict[str, LatencyHistogram] = {}
        # The fold appends to the histograms' pending lists directly (see HostTable): here
        # they are, by position, the seven phases in PHASES order then the total, each put in
        # the first time a value comes for it (pending_list), so that a phase that never
        # happened has no histogram.
        self.by_phase: list[list[float] | None] = [None] * 8
        self.dirty = False  # has pending values; listed in its HostTable's ``dirty``

    def __repr__(self) -> str:
        return (
            f"<HostStats requests={self.requests} round_trips={self.round_trips} "
            f"reused={self.reused} errors={sum(self.errors.values())}>"
        )

    def __eq__(self, other: object) -> bool:
        """Same counts and the same histograms."""
        if not isinstance(other, HostStats):
            return NotImplemented
        return _state(self) == _state(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    # -- derived figures --------------------------------------------------------------------

    @property
    def new_connections(self) -> int:
        """Round trips that opened a connection (the sum of ``reuse_miss``)."""
        return sum(self.reuse_miss.values())

    @property
    def reuse_rate(self) -> float:
        """The share of round trips that got a pooled connection (0.0 with none)."""
        return self.reused / self.round_trips if self.round_trips else 0.0

    @property
    def pool_wait_share(self) -> float:
        """The share of the round trips' time spent waiting for the pool (``blocked``)."""
        spent = sum(h.total for name, h in self.phases.items() if name != "total")
        blocked = self.phases.get("blocked")
        return blocked.total / spent if blocked is not None and spent > 0.0 else 0.0

    # -- the fold ---------------------------------------------------------------------------

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

    def add_stall(self, values: Iterable[float | None]) -> None:
        """Count one round trip's stall ms per phase (``PHASES`` order, ``None``: the phase
        did not happen), if any is above zero."""
        total = 0.0
        stall_ms = self.stall_ms
        for name, ms in zip(PHASES, values, strict=True):
            if ms:
                stall_ms[name] = stall_ms.get(name, 0.0) + ms
                total += ms
        if total:
            stall_ms["total"] = stall_ms.get("total", 0.0) + total
            self.stalled += 1

    # -- combining --------------------------------------------------------------------------

    def merge(self, other: HostStats) -> None:
        """Add ``other``'s counts and histograms to this one's: as if this had been fed both
        (under sampling, the phases come from the sum of both samples)."""
        if self.sampled is not None or other.sampled is not None:
            mine = self.requests if self.sampled is None else self.sampled
            theirs = other.requests if other.sampled is None else other.sampled
            self.sampled = mine + theirs
        self.requests += other.requests
        self.round_trips += other.round_trips
        self.reused += other.reused
        self.stalled += other.stalled
        _add(self.errors, other.errors)
        _add(self.statuses, other.statuses)
        _add(self.reuse_miss, other.reuse_miss)
        _add(self.stall_ms, other.stall_ms)
        for name, hist in other.phases.items():
            self.histogram(name).merge(hist)

    def copy(self) -> HostStats:
        new = HostStats()
        new.merge(self)
        return new

    def histogram(self, name: str) -> LatencyHistogram:
        """The phase's histogram, made empty the first time it is asked for."""
        hist = self.phases.get(name)
        if hist is None:
            hist = self.phases[name] = LatencyHistogram()
        return hist

    def to_dict(self, *, histograms: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: counts, derived figures and each phase's summary (ms); with
        ``histograms``, each phase's buckets too (what :meth:`from_dict` reads back).
        Under sampling, ``sampled`` says how many of ``requests`` the phases come from."""
        sampled = {} if self.sampled is None else {"sampled": self.sampled, "estimated": True}
        return {
            "requests": self.requests,
            **sampled,
            "round_trips": self.round_trips,
            "reused": self.reused,
            "reuse_rate": self.reuse_rate,
            "new_connections": self.new_connections,
            "reuse_miss": dict(sorted(self.reuse_miss.items())),
            "errors": dict(sorted(self.errors.items())),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "pool_wait_share": self.pool_wait_share,
            "stalled": self.stalled,
            "stall_ms": {k: self.stall_ms[k] for k in _PHASE_NAMES if k in self.stall_ms},
            "phases": {
                name: self.phases[name].to_dict(buckets=histograms)
                for name in _HISTOGRAM_NAMES
                if name in self.phases
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostStats:
        """The host's stats as :meth:`to_dict` wrote them with ``histograms=True``."""
        new = cls()
        new.requests = _count_of(data["requests"])
        new.round_trips = _count_of(data["round_trips"])
        new.reused = _count_of(data["reused"])
        if (sampled := data.get("sampled")) is not None:
            new.sampled = _count_of(sampled)
        new.stalled = _count_of(data.get("stalled", 0))
        new.errors = {str(k): _count_of(v) for k, v in data["errors"].items()}
        new.statuses = {int(k): _count_of(v) for k, v in data["statuses"].items()}
        new.reuse_miss = {str(k): _count_of(v) for k, v in data.get("reuse_miss", {}).items()}
        new.stall_ms = {str(k): float(v) for k, v in data.get("stall_ms", {}).items()}
        for name, hist in data["phases"].items():
            if name not in _HISTOGRAM_NAMES:
                raise ValueError(f"unknown phase {name!r}")
            new.phases[name] = LatencyHistogram.from_dict(hist)
        return new


def _add(mine: dict[_K, _N], theirs: Mapping[_K, _N]) -> None:
    for k, v in theirs.items():
        mine[k] = mine[k] + v if k in mine else v


def _count_of(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


def _state(stats: HostStats) -> tuple[Any, ...]:
    return (
        stats.requests,
        stats.sampled,
        stats.round_trips,
        stats.reused,
        stats.stalled,
        stats.errors,
        stats.statuses,
        stats.reuse_miss,
        stats.stall_ms,
        stats.phases,
    )


class Stats(dict[str, HostStats]):
    """Per-host aggregates of traced requests, in bounded memory: ``host:port`` ->
    :class:`HostStats`.

    What ``Recorder.stats`` returns (a snapshot: the Recorder goes on counting in its own),
    and what a long-running service leaves on with ``Recorder(aggregate_only=True)``. Per host
    and phase (blocked, dns, connect, tls, send, wait, receive, and each request's total) a
    log-bucket histogram reads p50/p90/p95/p99 within 1% (``relative_error``) of the exact
    quantile; beside them the counts, errors by kind, statuses, reuse rate, new connections
    by why, the pool-wait share and loop-stall ms (see :class:`HostStats`).

    Mergeable: ``a.merge(b)`` adds ``b`` into ``a`` exactly as if ``a`` had been fed ``b``'s
    requests (counts and buckets exactly; sums of ms up to float rounding), and
    ``Stats.from_dict(json.loads(json.dumps(s.to_dict())))`` equals ``s``, so stats from
    workers or processes combine. Hosts are counted apart; :meth:`overall` adds them up.
    Under sampling (``Recorder(sample=...)``) ``HostStats.sampled`` says how many requests
    the phases come from, and merging adds the samples.
    """

    relative_error: ClassVar[float] = RELATIVE_ERROR

    def __repr__(self) -> str:
        return f"<Stats hosts={len(self)} requests={sum(s.requests for s in self.values())}>"

    def merge(self, other: Mapping[str, HostStats]) -> Stats:
        """Add ``other``'s hosts into this one (``other`` is left as it was); returns self."""
        for label, theirs in other.items():
            mine = self.get(label)
            if mine is None:
                self[label] = theirs.copy()
            else:
                mine.merge(theirs)
        return self

    def copy(self) -> Stats:
        """A deep copy: merging into it leaves this one as it is."""
        return Stats().merge(self)

    def overall(self) -> HostStats:
        """Every host added up."""
        total = HostStats()
        for stats in self.values():
            total.merge(stats)
        return total

    def to_dict(self) -> dict[str, Any]:
        """The whole, JSON-ready and lossless (histogram buckets included): the summaries a
        reader wants beside what :meth:`from_dict` needs."""
        return {
            "format": _FORMAT,
            "histogram": dict(_HISTOGRAM),
            "hosts": {label: self[label].to_dict(histograms=True) for label in sorted(self)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        """The stats :meth:`to_dict` wrote (after a JSON round trip, say); ``ValueError`` with
        one line saying what is wrong when ``data`` is not such a document."""
        try:
            if data.get("format") != _FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {_FORMAT!r}")
            if data.get("histogram") != _HISTOGRAM:
                raise ValueError(
                    f"histogram buckets {data.get('histogram')!r} differ from {_HISTOGRAM!r}"
                )
            hosts = data["hosts"].items()
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not an aiotrace Stats document: {_why(exc)}") from None
        stats = cls()
        for label, host in hosts:
            try:
                stats[str(label)] = HostStats.from_dict(host)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise ValueError(f"aiotrace Stats document, host {label!r}: {_why(exc)}") from None
        return stats


def _why(exc: Exception) -> str:
    return f"missing {exc}" if isinstance(exc, KeyError) else str(exc)


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

    __slots__ = ("dirty", "misses", "opened", "pending", "rows")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending = 0
        self.dirty: list[HostStats] = []
        self.rows: list[Any] = []  # _ROW values a request, see _ROW
        self.opened: list[Any] = []  # OPENED_ROW values a request, see OPENED_ROW
        # Beside ``opened``: host label and reuse_miss of each of its rows that opened a
        # connection, folded with them.
        self.misses: list[Any] = []

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
        misses = self.misses
        for (label, why), n in Counter(zip(misses[0::2], misses[1::2], strict=True)).items():
            counts = self.host(label).reuse_miss
            counts[why] = counts.get(why, 0) + n
        misses.clear()

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
        self.misses.clear()
        self.pending = 0
