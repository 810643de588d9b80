"""What ``aiotrace crawl`` reports: per-host summaries, the slowest requests, the JSON document.

The Recorder's aggregates (``rec.stats``, a :class:`~aiotrace.Stats`: counts, errors by kind,
each phase's histogram, connections opened by ``reuse_miss``, the pool-wait share, loop-stall
ms per phase) carry the per-host summary. :class:`CrawlTally`, an observer on the same
session, keeps what aggregates cannot: the slowest requests with their dominant phase (and
how much of it the loop was stalled), and which requests broke a ``--slo`` limit. Like an
aggregate-only Recorder it keeps no request: a crawl of any length runs in memory that grows
with the number of hosts, not of requests, unless a per-request output (``--json``,
``--jsonl``, ``--har``, ``--html``) asks the Recorder to keep every timeline.

Under ``--sample`` the Recorder counts every request at the request boundary (requests,
statuses, errors, each one's time to its response: exact) and traces the sample, which the
tally sees alone: the phases, reuse, pool wait, stalls, the slowest requests and ``--slo``
are the sample's, and each :class:`HostSummary` says how many it holds (``sampled``).
"""

from __future__ import annotations

import heapq
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .._record.phases import PHASES
from .._record.stalls import phase_stalls
from .._record.timeline import RequestTimeline
from .._trace.hooks import ClientTrace
from .._version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import IO

    from yarl import URL

    from .._record.histogram import Quantiles
    from .._record.recorder import Recorder
    from .._record.redact import Redaction
    from .._record.stalls import LoopStallMonitor
    from .._record.stats import HostStats
    from .._trace.request import RequestState

__all__ = [
    "RESPONSE",
    "SLOWEST",
    "SUMMARY_PHASES",
    "CrawlCounts",
    "CrawlReport",
    "CrawlTally",
    "HostSummary",
    "SloBreach",
    "SlowRequest",
    "crawl_document",
    "error_kind",
    "slo_value",
    "summarize",
    "write_document",
]

SLOWEST = 5  # requests listed as the slowest
SUMMARY_PHASES = (*PHASES, "total")
# Under sampling a host also has "response": every request's time to its response (exact).
RESPONSE = "response"
_JSON_PHASES = (*SUMMARY_PHASES, RESPONSE)
CANCELLED = "cancelled"


def error_kind(name: str) -> str:
    """How an error's type name is shown: a cancelled request (the crawl was interrupted) as
    ``cancelled``, every other as its exception type."""
    return CANCELLED if name == "CancelledError" else name


def _host_label(url: URL) -> str:
    # The Recorder's label for a round trip's host (recorder._host_label), so that the
    # tally's hosts are the keys of rec.stats.
    return f"{url.raw_host}:{url.port}" if url.raw_host else "?"


@dataclass(frozen=True, slots=True, kw_only=True)
class SlowRequest:
    """One of the slowest requests of a crawl, with the phase that took most of its time."""

    id: int
    method: str
    url: str
    host: str
    elapsed_ms: float
    status: int | None
    error: str | None
    hops: int
    dominant_phase: str | None
    dominant_ms: float
    # ms of the dominant phase, and of all its round trips, that the event loop was stalled
    # (``None``: not watched)
    dominant_stall_ms: float | None = None
    stall_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SloBreach:
    """How many requests went over one ``--slo`` limit, and the worst of them."""

    key: str
    limit_ms: float
    count: int
    worst_ms: float
    worst_id: int
    worst_url: str


class CrawlTally:
    """An observer keeping the slowest requests and the ``--slo`` breaches (module docstring).

    Its ``trace`` composes with the Recorder's, after it (the Recorder's stall book catches
    up with the monitor as a request finishes; under ``--sample`` the two observers share
    one sampling trace instead, in the same order); ``on_finish`` runs once per finished request,
    in the loop: a subtraction and a comparison, unless the request is among the slowest so
    far (a timeline is made of it) or ``slo`` is set (a timeline is made of each request to
    read its phases: a few microseconds).
    """

    def __init__(
        self,
        redaction: Redaction,
        slo: Mapping[str, float] | None = None,
        monitor: LoopStallMonitor | None = None,
    ) -> None:
        self.redaction = redaction
        self.slo = dict(slo or {})
        self.monitor = monitor
        self._slowest: list[tuple[float, int, SlowRequest]] = []  # a min-heap of SLOWEST
        self._breaches: dict[str, list[Any]] = {}  # key -> [count, worst ms, id, url]
        self.finished = 0
        self.on_start: Callable[[RequestState], None] | None = None
        self.on_finish: Callable[[RequestState], None] = self._finish
        self.trace = ClientTrace(_observers=(self,))

    def _finish(self, state: RequestState) -> None:
        self.finished += 1
        t_done = state.t_done if state.t_done is not None else state.t_start
        elapsed = (t_done - state.t_start) * 1000.0
        slowest = self._slowest
        if len(slowest) < SLOWEST or elapsed > slowest[0][0]:
            entry = (elapsed, state.id, self._slow_request(state, elapsed))
            if len(slowest) < SLOWEST:
                heapq.heappush(slowest, entry)
            else:
                heapq.heapreplace(slowest, entry)
        if self.slo:
            self._check_slo(state)

    def _slow_request(self, state: RequestState, elapsed: float) -> SlowRequest:
        timeline = RequestTimeline(state)
        timings = timeline.timings
        dominant, dominant_ms = None, 0.0
        for name in PHASES:
            ms = getattr(timings, name)
            if ms is not None and ms > dominant_ms:
                dominant, dominant_ms = name, ms
        hops = state.hops
        stalled: list[float] | None = None  # per phase, summed over the round trips
        if self.monitor is not None and hops:
            stalled = [0.0] * len(PHASES)
            for hop in hops:
                values = phase_stalls(self.monitor, hop)
                if values is None:  # not watched throughout
                    stalled = None
                    break
                for i, ms in enumerate(values):
                    stalled[i] += ms or 0.0
        return SlowRequest(
            id=state.id,
            method=state.method,
            url=self.redaction.url(state.url) or "",
            host=_host_label(hops[0].url if hops else state.url),
            elapsed_ms=elapsed,
            status=state.status,
            error=timeline.error,
            hops=len(hops),
            dominant_phase=dominant,
            dominant_ms=dominant_ms,
            dominant_stall_ms=(
                stalled[PHASES.index(dominant)] if stalled is not None and dominant else None
            ),
            stall_ms=sum(stalled) if stalled is not None else None,
        )

    def _check_slo(self, state: RequestState) -> None:
        timeline = RequestTimeline(state)
        for key, limit in self.slo.items():
            value = slo_value(timeline, key)
            if value is None or value <= limit:
                continue
            breach = self._breaches.get(key)
            if breach is None:
                self._breaches[key] = [1, value, state.id, self.redaction.url(state.url) or ""]
            else:
                breach[0] += 1
                if value > breach[1]:
                    breach[1:] = [value, state.id, self.redaction.url(state.url) or ""]

    @property
    def slowest(self) -> list[SlowRequest]:
        """The slowest requests so far, slowest first."""
        return [entry for _, _, entry in sorted(self._slowest, key=lambda e: (-e[0], e[1]))]

    @property
    def breaches(self) -> list[SloBreach]:
        """Each ``--slo`` limit some request went over, in the order the limits were given."""
        out = []
        for key, limit in self.slo.items():
            b = self._breaches.get(key)
            if b is not None:
                out.append(
                    SloBreach(
                        key=key,
                        limit_ms=limit,
                        count=b[0],
                        worst_ms=b[1],
                        worst_id=b[2],
                        worst_url=b[3],
                    )
                )
        return out


def slo_value(timeline: RequestTimeline, key: str) -> float | None:
    """A request's value for an ``--slo`` key, as ``aiotrace URL --slo`` reads it: ``total``
    and ``ttfb`` from the request's start (curl's marks: redirects included), a phase summed
    over the hops."""
    marks = timeline.marks
    if key == "total":
        return marks.total
    if key == "ttfb":
        return marks.starttransfer
    value: float | None = getattr(timeline.timings, key)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSummary:
    """One host's line of the crawl summary (``overall``: every host's together)."""

    host: str
    requests: int
    round_trips: int
    reused: int
    statuses: dict[int, int]
    errors: dict[str, int]  # by kind (``error_kind``)
    phases: dict[str, Quantiles]
    opened: dict[str, int]  # connections opened, by reuse_miss
    pool_wait_share: float  # of the round trips' time, spent waiting for the pool
    stall_ms: dict[str, float] | None  # loop-stall ms per phase and total; None: not watched
    stalled: int = 0  # round trips that overlapped a loop stall
    # Under --sample: how many of ``requests`` were traced. The phases, reuse, connections
    # opened, pool wait and stalls come from those (estimates); ``requests``, ``statuses``,
    # ``errors`` and the ``response`` phase (each request's time to its response) count every
    # request. ``None``: every request was traced.
    sampled: int | None = None

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def reuse_rate(self) -> float | None:
        """Round trips on a pooled connection, of all round trips (``None``: none)."""
        return self.reused / self.round_trips if self.round_trips else None

    @property
    def stall_total(self) -> float | None:
        """ms its round trips spent with the loop stalled (``None``: not watched)."""
        return None if self.stall_ms is None else self.stall_ms.get("total", 0.0)

    def to_dict(self) -> dict[str, Any]:
        sample = {} if self.sampled is None else {"sampled": self.sampled, "estimated": True}
        return {
            "host": self.host,
            "requests": self.requests,
            **sample,
            "round_trips": self.round_trips,
            "reused": self.reused,
            "reuse_rate": self.reuse_rate,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "connections_opened": sum(self.opened.values()),
            "opened_because": dict(self.opened),
            "pool_wait_share": self.pool_wait_share,
            "stall_ms": self.stall_ms,
            "stalled": self.stalled,
            "phases": {name: asdict(q) for name in _JSON_PHASES if (q := self.phases.get(name))},
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlCounts:
    """What became of every URL in the list: each one is counted exactly once."""

    urls: int  # good lines
    bad_lines: int
    ok: int  # got a response (any status)
    failed: int  # no response: an error
    cancelled: int  # in flight when the crawl was interrupted
    not_started: int  # never sent: the crawl was interrupted first


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopStalls:
    """What the loop-stall monitor saw over the whole crawl."""

    count: int
    stalled_ms: float
    threshold_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlReport:
    """A finished (or interrupted) crawl, summarized."""

    counts: CrawlCounts
    interrupted: bool
    started_at: float  # wall clock
    elapsed_s: float
    hosts: list[HostSummary]
    overall: HostSummary
    slowest: list[SlowRequest]
    breaches: list[SloBreach] = field(default_factory=list)
    loop_stalls: LoopStalls | None = None
    sample_rate: float | None = None  # --sample (None: every request traced)
    sample_seed: int | None = None

    @property
    def rate(self) -> float:
        """Requests finished per second of the crawl."""
        done = self.counts.ok + self.counts.failed + self.counts.cancelled
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _host_summary(label: str, stats: HostStats, watched: bool) -> HostSummary:
    errors: dict[str, int] = {}
    for name, n in stats.errors.items():
        kind = error_kind(name)
        errors[kind] = errors.get(kind, 0) + n
    return HostSummary(
        host=label,
        requests=stats.requests,
        round_trips=stats.round_trips,
        reused=stats.reused,
        statuses=dict(stats.statuses),
        errors=errors,
        phases={name: h.summary() for name, h in stats.phases.items() if h.count},
        opened=dict(sorted(stats.reuse_miss.items(), key=lambda kv: (-kv[1], kv[0]))),
        pool_wait_share=stats.pool_wait_share,
        stall_ms=dict(stats.stall_ms) if watched else None,
        stalled=stats.stalled,
        sampled=stats.sampled,
    )


def summarize(
    rec: Recorder,
    tally: CrawlTally,
    counts: CrawlCounts,
    *,
    interrupted: bool,
    started_at: float,
    elapsed_s: float,
    sample_rate: float | None = None,
    sample_seed: int | None = None,
) -> CrawlReport:
    """The crawl's report from its Recorder's aggregates and its tally (``sample_rate``,
    ``sample_seed``: ``--sample``, said in the report)."""
    stats = rec.stats
    monitor = rec.stall_monitor
    watched = monitor is not None
    hosts = [
        _host_summary(label, s, watched)
        for label, s in sorted(stats.items(), key=lambda kv: (-kv[1].requests, kv[0]))
    ]
    return CrawlReport(
        counts=counts,
        interrupted=interrupted,
        started_at=started_at,
        elapsed_s=elapsed_s,
        hosts=hosts,
        overall=_host_summary("overall", stats.overall(), watched),
        slowest=tally.slowest,
        breaches=tally.breaches,
        loop_stalls=None
        if monitor is None
        else LoopStalls(
            count=monitor.stall_count,
            stalled_ms=monitor.stalled_ms,
            threshold_ms=monitor.threshold * 1000.0,
        ),
        sample_rate=sample_rate,
        sample_seed=sample_seed,
    )


def crawl_document(report: CrawlReport, bad_lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The report as a JSON-ready document: counts, per-host aggregates, the slowest
    requests. (``write_document`` adds every request's timeline and every connection.)

    Under ``--sample``, ``sample_rate`` and ``sample_seed`` say so at the top, each host and
    ``overall`` carry ``sampled`` and ``estimated``, and ``slowest`` are of the sample."""
    sample: dict[str, Any] = {}
    if report.sample_rate is not None:
        sample = {"sample_rate": report.sample_rate, "sample_seed": report.sample_seed}
    return {
        "aiotrace": __version__,
        "command": "crawl",
        "started_at": report.started_at,
        "elapsed_s": report.elapsed_s,
        "interrupted": report.interrupted,
        **sample,
        "counts": asdict(report.counts),
        "bad_lines": bad_lines,
        "loop_stalls": asdict(report.loop_stalls) if report.loop_stalls else None,
        "hosts": {h.host: h.to_dict() for h in report.hosts},
        "overall": report.overall.to_dict(),
        "slowest": [asdict(s) for s in report.slowest],
        "slo_breaches": [asdict(b) for b in report.breaches],
    }


def write_document(
    out: IO[str],
    doc: Mapping[str, Any],
    timelines: Iterable[Mapping[str, Any]] | None = None,
    connections: Iterable[Mapping[str, Any]] | None = None,
) -> None:
    """Write ``doc`` as one compact JSON document, with ``requests`` and ``connections``
    written one element at a time from ``timelines`` and ``connections`` if given: the
    document's bytes are never all in memory, nor every timeline's dict at once."""
    compact = (",", ":")
    head = json.dumps(doc, separators=compact)
    if timelines is None:
        out.write(head + "\n")
        return
    out.write(head[:-1] + ',"requests":[')
    for i, timeline in enumerate(timelines):
        out.write(("," if i else "") + json.dumps(timeline, separators=compact))
    out.write('],"connections":[')
    for i, conn in enumerate(connections or ()):
        out.write(("," if i else "") + json.dumps(conn, separators=compact))
    out.write("]}\n")
