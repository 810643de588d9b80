"""The requests a Recorder keeps: finished ones frozen into plain values, thawed when read.

Theory of operation
-------------------
A finished request kept as it ran is two objects the cyclic garbage collector tracks (its
RequestState and HopState), three more when its URL is one no other request shares (the URL
and its cache dict). Each tracked object kept brings the collector's next young-generation
pass sooner, and with many requests in flight every pass walks all of them: with 64 in
flight, ~10k instructions a request for each object kept (measured with callgrind; a
RequestState and HopState kept cost 20k, as much as the whole traced round trip). Frozen into
values the collector does not track, a kept request costs it nothing.

The rules this module keeps:

1. A frozen request is one row of ``ROW`` values appended to one flat list: ints, floats,
   strings and ``None`` only (never a container, nothing the collector tracks), but for one
   tuple of such values when the request opened a connection or waited for the pool. Its
   connection is kept by id, in ``conns`` (one ConnState per connection, not per request);
   its URL as yarl's five encoded parts.
2. Only the usual request is frozen: one round trip (on a pooled connection or a new one),
   no error, URL as aiohttp sent it. Any other request (redirects, retries, errors) is kept
   whole: its row holds the state itself, pinned so that ``RequestState.finish`` leaves its
   round trips attached. A state seen by a reader while it ran is pinned too (the reader's view must
   see it finish), and kept whole.
3. Thawing a row gives a RequestState and HopState that every reader (timelines, HAR,
   connections, aggregates) reads exactly as it would have read the originals.
4. Start order is id order: rows are appended as requests finish, and readers sort by id.
   Running requests are in ``running`` until they finish.
5. With a limit, the ring keeps the newest ``limit`` finished requests: once the rows exceed
   it by a quarter, the oldest are cut in one go. A ring folds each request into its
   aggregates (``fold``) as it finishes, so a cut row is only forgotten.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from yarl import URL

from .._trace.hop import HopState
from .._trace.request import RequestState

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._trace.connection import ConnState
    from .._trace.hooks import ClientTrace

__all__ = ["ROW", "KeptRequests"]

# A row: 0 id, 1 None (a pooled round trip), the tail (below) or the state kept whole, 2 method,
# 3 the URL the caller gave if a string (None: the round trip's), 4 status, 5 t_start, 6 t_end,
# 7 t_done, 8 the round trip's method, 9-13 its URL's parts (_PARTS), 14 its status,
# 15 t_get_conn, 16 t_got_conn, 17 t_wrote_headers, 18 t_wrote_request, 19 t_first_byte,
# 20 t_body_done, 21 its t_end, 22 idle_time, 23 connection id.
# The tail, for a new connection or a wait for the pool (one tuple of plain values: the one
# object such a row keeps, beside its connection's): reused, t_pool_start, t_pool_done,
# t_dns_start, t_dns_done, dns_host, addrs (joined by commas), dns_cached, dns_coalesced,
# t_connect_start, t_connect_done, t_tls_start, t_tls_done, reuse_miss.
ROW = 24
_POOLED = (True, None, None, None, None, None, None, False, False, None, None, None, None, None)
_WHOLE_PAD = (None,) * (ROW - 2)

# yarl keeps a URL as five encoded strings, read here from its private slots (yarl 1.18.0 to
# 1.25.1; yarl 1.17 keeps one ``_val``). Checked at import: without them every request is
# kept whole, correct and only slower (tested).
_PARTS = ("_scheme", "_netloc", "_path", "_query", "_fragment")
_URL_PARTS = all(name in getattr(URL, "__slots__", ()) for name in _PARTS)


def _thaw_url(scheme: str, netloc: str, path: str, query: str, fragment: str) -> URL:
    return URL.build(
        scheme=scheme,
        authority=netloc,
        path=path,
        query_string=query,
        fragment=fragment,
        encoded=True,
    )


class KeptRequests:
    """Running requests, and finished ones as rows (see the module docstring)."""

    __slots__ = ("conns", "limit", "on_finish", "rows", "running", "trace", "trimmed")

    def __init__(
        self,
        trace: ClientTrace,
        limit: int | None,
        fold: Callable[[RequestState], None] | None,
    ) -> None:
        self.trace = trace
        self.limit = limit
        self.running: set[RequestState] = set()
        self.rows: list[Any] = []
        self.conns: dict[int, ConnState] = {}
        self.trimmed = 0
        self.on_finish = self._keeper(fold)

    def _keeper(
        self, fold: Callable[[RequestState], None] | None
    ) -> Callable[[RequestState], None]:
        """The observer's on_finish: one closure, its containers bound as defaults."""
        high = sys.maxsize if self.limit is None else (self.limit + max(self.limit // 4, 16)) * ROW
        url_parts = _URL_PARTS
        trim = self._trim

        def keep(
            state: RequestState,
            discard: Callable[[RequestState], None] = self.running.discard,
            extend: Callable[[Any], None] = self.rows.extend,
            rows: list[Any] = self.rows,
            conns: dict[int, ConnState] = self.conns,
        ) -> None:
            discard(state)
            if fold is not None:
                fold(state)
            hop = state.hop
            if (
                hop is not None
                and state.hop_list is None
                and state.err is None
                and hop.err is None
                and (cs := hop.conn) is not None
                and not state.pinned
                and state.final_url is (url := hop.url)
                and url_parts
                and ((caller := state._url) is url or type(caller) is str)
            ):
                if caller is url:
                    caller = None
                cid = cs.id
                if cid not in conns:
                    conns[cid] = cs
                tail = None
                if not hop.reused or hop.t_pool_start is not None:
                    # A new connection, or a wait for the pool: what a pooled round trip
                    # leaves unset, as one tuple of plain values (see ROW).
                    addrs = hop.addrs
                    tail = (
                        hop.reused,
                        hop.t_pool_start,
                        hop.t_pool_done,
                        hop.t_dns_start,
                        hop.t_dns_done,
                        hop.dns_host,
                        ",".join(addrs) if addrs else None,
                        hop.dns_cached,
                        hop.dns_coalesced,
                        hop.t_connect_start,
                        hop.t_connect_done,
                        hop.t_tls_start,
                        hop.t_tls_done,
                        hop.reuse_miss,
                    )
                extend(
                    (
                        state.id,
                        tail,
                        state.method,
                        caller,
                        state.status,
                        state.t_start,
                        state.t_end,
                        state.t_done,
                        hop.method,
                        url._scheme,
                        url._netloc,
                        url._path,
                        url._query,
                        url._fragment,
                        hop.status,
                        hop.t_get_conn,
                        hop.t_got_conn,
                        hop.t_wrote_headers,
                        hop.t_wrote_request,
                        hop.t_first_byte,
                        hop.t_body_done,
                        hop.t_end,
                        hop.idle_time,
                        cid,
                    )
                )
            else:
                state.pinned = True  # kept whole (rule 2)
                extend((state.id, state, *_WHOLE_PAD))
            if len(rows) >= high:
                trim()

        return keep

    # -- reading ----------------------------------------------------------------------------

    def states(self) -> list[RequestState]:
        """The kept requests, running ones included, in start order (frozen ones thawed);
        with a limit, the newest ``limit`` finished ones."""
        running = list(self.running)
        for state in running:
            state.pinned = True  # a reader may hold its view until it finishes (rule 2)
        rows = self.rows
        start = len(rows) - self._shown() * ROW
        states = [self._thaw(rows, i) for i in range(start, len(rows), ROW)]
        states.extend(running)
        states.sort(key=_by_id)
        return states

    def _shown(self) -> int:
        """Finished requests readers see: every row, or with a limit the newest ``limit``."""
        rows = len(self.rows) // ROW
        return rows if self.limit is None else min(rows, self.limit)

    def __len__(self) -> int:
        return self._shown() + len(self.running)

    @property
    def dropped(self) -> int:
        """Finished requests the ring let go of (cut, or past the limit and not cut yet)."""
        return self.trimmed + len(self.rows) // ROW - self._shown()

    def clear(self) -> None:
        self.running.clear()
        self.rows.clear()
        self.conns.clear()
        self.trimmed = 0

    def _thaw(self, rows: list[Any], i: int) -> RequestState:
        kept = rows[i + 1]
        if kept is not None and type(kept) is not tuple:
            whole: RequestState = kept
            return whole
        (
            rid, _, method, caller, status, t_start, t_end, t_done,
            hop_method, scheme, netloc, path, query, fragment, hop_status,
            t_get_conn, t_got_conn, t_wrote_headers, t_wrote_request, t_first_byte,
            t_body_done, hop_t_end, idle_time, cid,
        ) = rows[i : i + ROW]  # fmt: skip
        (
            reused, t_pool_start, t_pool_done, t_dns_start, t_dns_done, dns_host, addrs,
            dns_cached, dns_coalesced, t_connect_start, t_connect_done, t_tls_start,
            t_tls_done, reuse_miss,
        ) = kept or _POOLED  # fmt: skip
        url = _thaw_url(scheme, netloc, path, query, fragment)
        state = RequestState.__new__(RequestState)
        for name in RequestState.__slots__:
            setattr(state, name, None)
        state.id = rid
        state.trace = self.trace
        state.d = self.trace.dispatch()
        state.method = method
        state._url = url if caller is None else caller
        state.t_start = t_start
        state.final_url = url
        state.status = status
        state.t_end = t_end
        state.t_done = t_done
        state.done = True
        state.pinned = True
        hop = HopState.__new__(HopState)
        for name in HopState.__slots__:
            if name != "__dict__":
                setattr(hop, name, None)
        hop.state = state
        hop.method = hop_method
        hop.url = url
        hop.index = hop.attempt = 0
        hop.t_get_conn = t_get_conn
        hop.t_got_conn = t_got_conn
        hop.t_wrote_headers = t_wrote_headers
        hop.t_wrote_request = t_wrote_request
        hop.t_first_byte = t_first_byte
        hop.t_body_done = t_body_done
        hop.t_end = hop_t_end
        hop.conn = self.conns[cid]
        hop.reused = reused
        hop.idle_time = idle_time
        hop.t_pool_start = t_pool_start
        if not reused or t_pool_start is not None:  # HopState's class-level defaults otherwise
            hop.t_pool_done = t_pool_done
            hop.t_dns_start = t_dns_start
            hop.t_dns_done = t_dns_done
            hop.dns_host = dns_host
            hop.addrs = tuple(addrs.split(",")) if addrs else ()
            hop.dns_cached = dns_cached
            hop.dns_coalesced = dns_coalesced
            hop.t_connect_start = t_connect_start
            hop.t_connect_done = t_connect_done
            hop.t_tls_start = t_tls_start
            hop.t_tls_done = t_tls_done
            hop.reuse_miss = reuse_miss
        hop.status = hop_status
        hop.body_task = False
        state.hop = hop
        return state

    # -- the ring ---------------------------------------------------------------------------

    def _trim(self) -> None:
        """Cut the oldest rows down to ``limit`` (rule 5)."""
        assert self.limit is not None
        rows = self.rows
        n = len(rows) // ROW - self.limit
        if n <= 0:
            return
        del rows[: n * ROW]
        self.trimmed += n
        conns = self.conns
        live = set(rows[ROW - 1 :: ROW])
        for cid in [cid for cid in conns if cid not in live]:
            del conns[cid]


def _by_id(state: RequestState) -> int:
    return state.id
