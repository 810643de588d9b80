"""``Recorder``: keeps timelines of traced requests, or only their aggregates.

A Recorder's ``trace`` sets no hooks: it observes each request's state at its start (so that
running requests can be read) and at its end (to keep it, frozen into plain values: see
``kept.py``; or, aggregate-only, to fold it), and reads the timeline from the stamps the
state took anyway. So recording costs no event objects, whatever the number of hops.

With ``loop_stalls``, a :class:`~aiotrace.LoopStallMonitor` runs while the Recorder is
entered, and each finished request is checked against it (``_StallBook``): one comparison
when no stall was recorded since the request started, the phases' overlaps otherwise, kept
(by request id, only for requests that overlapped a stall) and folded into ``stats``.
"""

from __future__ import annotations

import functools
import json
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .._trace.context import with_client_trace
from .._trace.hooks import ClientTrace
from .._trace.request import RequestState
from .._trace.sampling import Sample
from .counts import BoundaryCounts
from .har import har_log
from .kept import ROW, KeptRequests
from .redact import DEFAULT_REDACTION, Redaction
from .stalls import LoopStallMonitor, phase_stalls
from .stats import BATCH, OPENED_LIMIT, ROWS_LIMIT, HostStats, HostTable, Stats
from .timeline import UNSAMPLED, ConnectionRecord, RequestTimeline, phase_values

if TYPE_CHECKING:
    from collections.abc import Callable
    from os import PathLike
    from types import TracebackType

    from yarl import URL

    from .._trace.hop import HopState

__all__ = ["Recorder"]


class Recorder:
    """Records every request traced with ``rec.trace`` as a :class:`RequestTimeline`.

    ``max_requests`` keeps only the newest N finished timelines, and those still running
    (``dropped`` counts the rest);
    ``aggregate_only=True`` keeps no timelines at all, only per-host aggregates
    (``stats``), so memory stays flat however long it runs.

    ``sample=0.1`` (or a callable ``(method, url) -> bool``) traces a sample of requests,
    decided once per request at the request boundary; the others take the untraced path and
    are only counted there, so request, status and error counts stay exact and the phases
    are estimates from the sample (``stats`` says how many: ``HostStats.sampled``).
    ``keep_errors=True`` keeps, as a timeline with no round trips, an unsampled request that
    failed (an exception or a 5xx response) or (``keep_slower_than``, seconds) took longer
    than that to its response.

    ``loop_stalls=True`` (or a :class:`LoopStallMonitor` of your own, to share one between
    Recorders or set its ``threshold``) watches the event loop while the Recorder is entered
    (``async with``); each hop then reports the ms of each phase the loop was stalled
    (``Hop.stalls``), and ``stats`` each host's stall ms. Off by default: the monitor wakes
    the loop every 10 ms, even when idle.
    """

    def __init__(
        self,
        *,
        max_requests: int | None = None,
        aggregate_only: bool = False,
        redaction: Redaction = DEFAULT_REDACTION,
        sample: Sample = None,
        sample_seed: int | None = None,
        keep_errors: bool = False,
        keep_slower_than: float | None = None,
        loop_stalls: bool | LoopStallMonitor = False,
    ) -> None:
        if max_requests is not None and max_requests < 1:
            raise ValueError(f"max_requests must be at least 1, not {max_requests}")
        if keep_slower_than is not None and not keep_slower_than >= 0:
            raise ValueError(f"keep_slower_than must be seconds >= 0, not {keep_slower_than!r}")
        if isinstance(loop_stalls, LoopStallMonitor):
            monitor: LoopStallMonitor | None = loop_stalls
        elif loop_stalls is True:
            monitor = LoopStallMonitor()
        elif loop_stalls is False:
            monitor = None
        else:
            raise TypeError(
                f"loop_stalls takes True, False or a LoopStallMonitor, not {loop_stalls!r}"
            )
        self.stall_monitor = monitor
        """The :class:`LoopStallMonitor` (``loop_stalls``), or ``None``."""
        self.max_requests = max_requests
        self.aggregate_only = aggregate_only
        self.redaction = redaction
        # Aggregates of every finished request, folded as each finishes: aggregate-only and
        # a ring (max_requests). Unbounded, a Recorder folds the requests it keeps when
        # someone reads ``stats``, and the request path pays nothing for it.
        self._stats = HostTable()
        self.trace = ClientTrace(_observers=(self,), sample=sample, sample_seed=sample_seed)
        self.sample = sample
        # Observer protocol (see ClientTrace._observers), read once when a trace is compiled.
        fold = functools.partial(_fold, self._stats)
        self._kept: KeptRequests | None = None
        self.on_start: Callable[[RequestState], None] | None = None
        self.on_finish: Callable[[RequestState], None] = fold
        if not aggregate_only:  # keep them, compactly (see kept.py)
            kept = self._kept = KeptRequests(
                self.trace, max_requests, fold if max_requests is not None else None
            )
            self.on_start = kept.running.add  # a set's own method: no frame
            self.on_finish = kept.on_finish
        self._stalls: _StallBook | None = None
        if monitor is not None:
            folded = aggregate_only or max_requests is not None
            book = self._stalls = _StallBook(monitor, self._stats if folded else None, self._kept)
            self.on_finish = book.observer(self.on_finish)
        # Under sampling, every request is counted at the boundary too (see counts.py).
        self._counts: BoundaryCounts | None = None
        self.on_unsampled: Callable[..., None] | None = None
        if self.trace._sampler is not None:
            counts = self._counts = BoundaryCounts()
            self.on_finish = functools.partial(_count_sampled, counts.add, self.on_finish)
            self.on_unsampled = counts.add
            if keep_errors and self._kept is not None:
                self.on_unsampled = functools.partial(
                    self._keep_unsampled, counts.add, keep_slower_than
                )
        self._scopes: list[AbstractContextManager[ClientTrace]] = []

    def __repr__(self) -> str:
        kept = self._kept
        mode = "aggregate-only" if kept is None else f"{len(kept)} kept"
        return f"<Recorder {mode}, {self.dropped} dropped>"

    # -- scoping ----------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        if self.stall_monitor is not None:
            self.stall_monitor.start()  # first: it may refuse (no running loop)
        scope = with_client_trace(self.trace)
        scope.__enter__()
        self._scopes.append(scope)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._scopes.pop().__exit__(exc_type, exc, tb)
        if self.stall_monitor is not None:
            self.stall_monitor.stop()

    async def __aenter__(self) -> Recorder:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- reading ----------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Finished requests ``max_requests`` let go of (still counted in ``stats``)."""
        return 0 if self._kept is None else self._kept.dropped

    def _states(self) -> list[RequestState]:
        return [] if self._kept is None else self._kept.states()

    @property
    def requests(self) -> list[RequestTimeline]:
        """The kept timelines, in start order."""
        stalls = self._stalls
        return [RequestTimeline(state, stalls) for state in self._states()]

    @property
    def connections(self) -> list[ConnectionRecord]:
        """Every connection the kept requests used, by id, with the round trips it served."""
        records: dict[int, ConnectionRecord] = {}
        for state in self._states():
            for hop in state.hops:
                cs = hop.conn
                if cs is None or cs.info is None:
                    continue
                record = records.get(cs.id)
                if record is None:
                    record = records[cs.id] = ConnectionRecord(cs)
                record.served.append((state.id, hop.index, hop.idle_time * 1000.0))
        return [records[k] for k in sorted(records)]

    @property
    def stats(self) -> Stats:
        """Per ``host:port`` aggregates of finished requests (in every mode): a snapshot, a
        :class:`Stats` of its own (to read, merge or write out while this one goes on).

        Under sampling, ``requests``, ``statuses`` and ``errors`` count every request, the
        phases only the sampled ones (``sampled`` of them), and the ``response`` histogram
        holds every request's time to its response (or error)."""
        if self.aggregate_only or self.max_requests is not None:  # folded as they finished
            self._stats.flush()
            table = self._stats
        else:
            table = HostTable()
            book = self._stalls
            for state in self._states():
                if state.done and state.observer_data is not UNSAMPLED:
                    _fold(table, state)
                    if book is not None:
                        book.fold(table, state)
            table.flush()
        if self._counts is not None:
            return Stats(_with_counts(table, self._counts))  # copies
        return Stats().merge(table) if table is self._stats else Stats(table)

    @property
    def sample_rate(self) -> float | None:
        """The ratio of requests traced (``None``: every one, or a callable decides)."""
        sample = self.sample
        return float(sample) if isinstance(sample, int | float) else None

    def clear(self) -> None:
        """Forget every timeline, connection and aggregate (not the stall monitor's record:
        it may be shared)."""
        if self._kept is not None:
            self._kept.clear()
        self._stats.clear()
        if self._stalls is not None:
            self._stalls.by_request.clear()
        if self._counts is not None:
            self._counts.clear()

    def _keep_unsampled(
        self,
        count: Callable[..., None],
        slower_than: float | None,
        method: str,
        url: Any,
        status: int | None,
        err: BaseException | None,
        t0: float,
        t1: float,
    ) -> None:
        """``on_unsampled`` with ``keep_errors``: count the request, and keep it if it failed
        (an exception or a 5xx) or was slow, with what the boundary saw."""
        count(method, url, status, err, t0, t1)
        if (
            err is None
            and (status is None or status < 500)
            and (slower_than is None or t1 - t0 <= slower_than)
        ):
            return
        state = RequestState(self.trace, method.upper(), url)
        state.t_start = t0
        state.t_end = state.t_done = t1
        state.status = status
        state.err = err
        state.done = True
        state.observer_data = UNSAMPLED
        assert self._kept is not None
        self._kept.on_finish(state)  # kept whole: it has no round trip (see kept.py)

    # -- exports ----------------------------------------------------------------------------

    def to_dicts(self) -> list[dict[str, Any]]:
        """Every kept timeline as a JSON-ready dict (redacted)."""
        return [t.to_dict(self.redaction) for t in self.requests]

    def to_jsonl(self, path: str | PathLike[str]) -> int:
        """Write one JSON object per kept request to ``path``; returns how many."""
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for timeline in self.requests:
                f.write(json.dumps(timeline.to_dict(self.redaction), separators=(",", ":")))
                f.write("\n")
                n += 1
        return n

    def to_har(self) -> dict[str, Any]:
        """The kept requests as a HAR 1.2 document (one entry per round trip)."""
        return har_log(self.requests, self.redaction)


class _StallBook:
    """A Recorder's loop stalls: each finished request is checked against the monitor; the
    stall ms of those that overlapped a stall are kept per round trip (by request id, when
    the Recorder keeps timelines; pruned with a ring) and folded into ``table`` (when the
    Recorder folds as requests finish). Also the timelines' :class:`StallSource`."""

    __slots__ = ("by_request", "kept", "monitor", "table")

    def __init__(
        self, monitor: LoopStallMonitor, table: HostTable | None, kept: KeptRequests | None
    ) -> None:
        self.monitor = monitor
        self.table = table
        self.kept = kept
        # request id -> one entry per round trip: stall ms per phase (PHASES order, None: the
        # phase did not happen). Only requests that overlapped a stall.
        self.by_request: dict[int, tuple[list[float | None], ...]] = {}

    def observer(self, inner: Callable[[RequestState], None]) -> Callable[[RequestState], None]:
        """``inner`` (the Recorder's on_finish), then the request's stalls, if any."""
        monitor = self.monitor
        finished = self._finished

        def on_finish(state: RequestState) -> None:
            inner(state)
            done = state.t_done
            if done is not None and done - monitor._due > monitor.threshold:
                monitor.catch_up(done)  # the loop ran this before the overdue tick
            if monitor._last_end > state.t_start:  # a stall since it began
                finished(state)

        return on_finish

    def _finished(self, state: RequestState) -> None:
        monitor = self.monitor
        per_hop = tuple(phase_stalls(monitor, h, check=False) or [] for h in state.hops)
        if not any(any(v) for v in per_hop):
            return
        if self.kept is not None:
            by_request = self.by_request
            by_request[state.id] = per_hop
            limit = self.kept.limit
            if limit is not None and len(by_request) > 2 * limit + 16:
                live = set(self.kept.rows[0::ROW])  # the ring's rows (each starts with its id)
                for rid in [rid for rid in by_request if rid not in live]:
                    del by_request[rid]
        if self.table is not None:
            self._fold_into(self.table, state, per_hop)

    def fold(self, table: HostTable, state: RequestState) -> None:
        """Fold a kept request's stalls into ``table`` (an unbounded Recorder's ``stats``)."""
        per_hop = self.by_request.get(state.id)
        if per_hop is not None:
            self._fold_into(table, state, per_hop)

    @staticmethod
    def _fold_into(
        table: HostTable, state: RequestState, per_hop: tuple[list[float | None], ...]
    ) -> None:
        for hop, values in zip(state.hops, per_hop, strict=True):
            if values:
                table.host(_host_of(hop)).add_stall(values)

    def hop_stalls(
        self, state: RequestState, position: int, hop: HopState
    ) -> list[float | None] | None:
        """The timelines' view (see StallSource): for a finished request, what was found when
        it finished (zeros if it is not kept here); for a running one, what the monitor says
        now; ``None`` for a round trip the monitor did not watch throughout."""
        if not state.done:
            return phase_stalls(self.monitor, hop)
        per_hop = self.by_request.get(state.id)
        if per_hop is not None:
            return per_hop[position] or None
        return phase_stalls(self.monitor, hop, overlaps=False)


def _count_sampled(
    count: Callable[..., None], then: Callable[[RequestState], None], state: RequestState
) -> None:
    """A sampled request's ``on_finish`` under sampling: count it as the boundary would (its
    time to the response), then record it."""
    end = state.t_end
    count(state.method, state._url, state.status, state.err, state.t_start, end or state.t_start)
    then(state)


def _with_counts(table: HostTable, counts: BoundaryCounts) -> dict[str, HostStats]:
    """The sample's per-host stats, with every request's counts from the boundary."""
    counts.fold()
    out: dict[str, HostStats] = {}
    for label, c in counts.hosts.items():
        sample = table.get(label)
        stats = HostStats() if sample is None else sample.copy()
        stats.sampled = 0 if sample is None else sample.requests
        stats.requests = c.requests
        stats.statuses = dict(c.statuses)
        stats.errors = dict(c.errors)
        response = stats.histogram("response")
        response.merge(c.response)
        out[label] = stats
    for label, sample in table.items():  # round trips only (a redirect's other host)
        if label not in out:
            stats = out[label] = sample.copy()
            stats.sampled = sample.requests
    return out


def _host_label(url: URL) -> str:
    return f"{url.raw_host}:{url.port}" if url.raw_host else "?"


def _host_of(hop: HopState) -> str:
    """``host:port`` of the round trip, kept on its connection (made once per connection)."""
    cs = hop.conn
    if cs is None:
        return _host_label(hop.url)
    label = cs.host_label
    if label is None:
        label = cs.host_label = _host_label(hop.url)
    return label


def _fold(into: HostTable, state: RequestState) -> None:
    """Add one finished request to per-host aggregates: the request under the host it was
    sent to, each round trip under the host it went to (a redirect may change hosts).

    This runs once per request in aggregate-only mode, so the usual request (one round trip
    on a pooled connection, no wait for it, body read, no error) takes a short path: its
    host and stamps go to the table's rows as they are, and ``HostTable.fold_rows`` turns a
    batch of rows into counts and phases (those of
    :func:`~aiotrace._timeline.pooled_phase_values`) at once. A request whose one round trip
    opened a connection or waited for the pool (a crawl's usual request) takes the same kind
    of path through ``HostTable.opened``.
    """
    hop = state.hop
    if (
        hop is not None
        and state.hop_list is None
        and state.err is None
        and (cs := hop.conn) is not None
    ):
        wrote, first, body = hop.t_wrote_request, hop.t_first_byte, hop.t_body_done
        if wrote is not None and first is not None and body is not None:
            label = cs.host_label
            if label is None:
                label = cs.host_label = _host_label(hop.url)
            if hop.reused and hop.t_pool_start is None:
                rows = into.rows
                rows += (label, state.status, hop.t_get_conn, wrote, first, body)
                if len(rows) >= ROWS_LIMIT:
                    into.fold_rows()
                    if into.pending >= BATCH:
                        into.flush()
                return
            if _fold_opened(into, hop, label, state.status, wrote, first, body):
                return
    _fold_any(into, state)


def _fold_opened(
    into: HostTable,
    hop: HopState,
    label: str,
    status: int | None,
    wrote: float,
    first: float,
    body: float,
) -> bool:
    """``_fold``'s path for a round trip that opened a connection or waited for the pool: a
    row for ``HostTable.opened`` if every phase it began has ended (``False``: it has not)."""
    if hop.t_got_conn is None:
        return False
    ends: list[float | None] = []
    for begun, ended in (
        (hop.t_pool_start, hop.t_pool_done),
        (hop.t_dns_start, hop.t_dns_done),
        (hop.t_connect_start, hop.t_connect_done),
        (hop.t_tls_start, hop.t_tls_done),
    ):
        if begun is None:
            ends.append(None)
        elif ended is None:
            return False
        else:
            ends.append(ended)
    opened = into.opened
    opened += (label, status, hop.reused, hop.t_get_conn, *ends, wrote, first, body)
    if (miss := hop.reuse_miss) is not None:
        into.misses += (label, miss)
    if len(opened) >= OPENED_LIMIT:
        into.fold_opened()
        if into.pending >= BATCH:
            into.flush()
    return True


def _fold_any(into: HostTable, state: RequestState) -> None:
    """``_fold`` for any request (any number of round trips, any outcome); its values are left
    pending too, and count towards the table's batch."""
    if state.observer_data is UNSAMPLED:  # counted at the boundary (see counts.py)
        return
    hop = state.hop
    hops = state.hop_list or (() if hop is None else (hop,))
    stats = into.host(_host_of(hops[0]) if hops else _host_label(state.url))
    stats.requests += 1
    err = state.err
    if err is not None:
        name = type(err).__name__
        stats.errors[name] = stats.errors.get(name, 0) + 1
    elif (status := state.status) is not None:
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
    if len(hops) == 1:  # the usual case: one call
        hop = hops[0]
        stats.round_trips += 1
        if hop.reused:
            stats.reused += 1
        elif (miss := hop.reuse_miss) is not None:
            stats.reuse_miss[miss] = stats.reuse_miss.get(miss, 0) + 1
        values, total, _ = phase_values(hop)
        into.leave(stats, values, total)
        return
    total = 0.0
    for hop in hops:
        hop_stats = into.host(_host_of(hop))
        hop_stats.round_trips += 1
        if hop.reused:
            hop_stats.reused += 1
        elif (miss := hop.reuse_miss) is not None:
            hop_stats.reuse_miss[miss] = hop_stats.reuse_miss.get(miss, 0) + 1
        values, hop_total, _ = phase_values(hop)
        into.leave(hop_stats, values, None)
        total += hop_total
    into.leave(stats, (), total)
