"""``Recorder``: keeps timelines of traced requests, or only their aggregates.

A Recorder's ``trace`` sets no hooks: it observes each request's state at its start (so that
running requests can be read) and at its end (to keep it, frozen into plain values: see
``kept.py``; or, aggregate-only, to fold it), and reads the timeline from the stamps the
state took anyway. So recording costs no event objects, whatever the number of hops.
"""

from __future__ import annotations

import functools
import json
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .._trace.context import with_client_trace
from .._trace.hooks import ClientTrace
from .har import har_log
from .kept import KeptRequests
from .redact import DEFAULT_REDACTION, Redaction
from .stats import BATCH, OPENED_LIMIT, ROWS_LIMIT, HostStats, HostTable
from .timeline import ConnectionRecord, RequestTimeline, phase_values

if TYPE_CHECKING:
    from collections.abc import Callable
    from os import PathLike
    from types import TracebackType

    from yarl import URL

    from .._trace.hop import HopState
    from .._trace.request import RequestState

__all__ = ["Recorder"]


class Recorder:
    """Records every request traced with ``rec.trace`` as a :class:`RequestTimeline`.

    ``max_requests`` keeps only the newest N finished timelines, and those still running
    (``dropped`` counts the rest);
    ``aggregate_only=True`` keeps no timelines at all, only per-host aggregates
    (``stats``), so memory stays flat however long it runs.
    """

    def __init__(
        self,
        *,
        max_requests: int | None = None,
        aggregate_only: bool = False,
        redaction: Redaction = DEFAULT_REDACTION,
    ) -> None:
        if max_requests is not None and max_requests < 1:
            raise ValueError(f"max_requests must be at least 1, not {max_requests}")
        self.max_requests = max_requests
        self.aggregate_only = aggregate_only
        self.redaction = redaction
        # Aggregates of every finished request, folded as each finishes: aggregate-only and
        # a ring (max_requests). Unbounded, a Recorder folds the requests it keeps when
        # someone reads ``stats``, and the request path pays nothing for it.
        self._stats = HostTable()
        self.trace = ClientTrace(_observers=(self,))
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
        self._scopes: list[AbstractContextManager[ClientTrace]] = []

    def __repr__(self) -> str:
        kept = self._kept
        mode = "aggregate-only" if kept is None else f"{len(kept)} kept"
        return f"<Recorder {mode}, {self.dropped} dropped>"

    # -- scoping ----------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
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
        return [RequestTimeline(state) for state in self._states()]

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
    def stats(self) -> dict[str, HostStats]:
        """Per ``host:port`` aggregates of finished requests (in every mode)."""
        if self.aggregate_only or self.max_requests is not None:  # folded as they finished
            self._stats.flush()
            return dict(self._stats)
        table = HostTable()
        for state in self._states():
            if state.done:
                _fold(table, state)
        table.flush()
        return dict(table)

    def clear(self) -> None:
        """Forget every timeline, connection and aggregate."""
        if self._kept is not None:
            self._kept.clear()
        self._stats.clear()

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
    if len(opened) >= OPENED_LIMIT:
        into.fold_opened()
        if into.pending >= BATCH:
            into.flush()
    return True


def _fold_any(into: HostTable, state: RequestState) -> None:
    """``_fold`` for any request (any number of round trips, any outcome); its values are left
    pending too, and count towards the table's batch."""
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
        values, total, _ = phase_values(hop)
        into.leave(stats, values, total)
        return
    total = 0.0
    for hop in hops:
        hop_stats = into.host(_host_of(hop))
        hop_stats.round_trips += 1
        if hop.reused:
            hop_stats.reused += 1
        values, hop_total, _ = phase_values(hop)
        into.leave(hop_stats, values, None)
        total += hop_total
    into.leave(stats, (), total)
