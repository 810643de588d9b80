"""Per-host aggregates in fixed memory: :class:`HostStats` and the public :class:`Stats`.

:class:`Stats` is the public face: per-host :class:`HostStats`, mergeable and written to and
read from JSON without loss, so that the stats of workers or processes add up to what one
Recorder seeing every request would have counted. Each phase is a
:class:`~aiotrace._record.histogram.LatencyHistogram` (quantiles within 1%). The Recorder
feeds them through its fold (``fold.py``), which keeps the request path cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .histogram import HISTOGRAM_LAYOUT as _HISTOGRAM
from .histogram import RELATIVE_ERROR, LatencyHistogram
from .phases import PHASES

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["SEND", "TOTAL", "HostStats", "Stats"]

_K = TypeVar("_K")
_N = TypeVar("_N", int, float)
_FORMAT = "aiotrace.stats/1"
_PHASE_NAMES = (*PHASES, "total")
# Every histogram a HostStats may hold, in the order written: under sampling, "response" is
# every request's time to its response (or error), counted at the request boundary.
_HISTOGRAM_NAMES = (*_PHASE_NAMES, "response")
SEND = PHASES.index("send")  # send, wait and receive follow each other
TOTAL = len(PHASES)


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
