"""Per-request and per-round-trip state: where every hook is fired from.

Theory of operation
-------------------
A traced request is one :class:`RequestState`, made when ``session.request()`` begins. Each
round trip (the first, each redirect hop, each retry) is one :class:`HopState`. Emitters in the
connector, the protocol, the TLS object and the request/response classes call the methods
below; each method stamps ``time.perf_counter()`` into a slot, then fires the hook if someone
set it. The stamps are the timeline, so a :class:`~aiotrace.Recorder` reads them and needs no
hooks of its own beyond the request's start and end.

The rules this module keeps:

1. Order within a round trip is Go's: get_conn, [pool_wait_start, pool_wait_done],
   [dns_start, dns_done], [connect_start, connect_done]*, [tls_handshake_start,
   tls_handshake_done], got_conn, wrote_header_field*, wrote_headers, [wait_100_continue],
   wrote_request, got_first_response_byte, [got_1xx_response*], response_body_done,
   put_idle_conn. Between round trips: ``redirect`` (the previous hop got a response) or
   ``retry`` (it did not), before the next get_conn.
2. Every phase that started ends: when a round trip fails, each started and unfinished phase
   (DNS, every connect attempt, TLS, the request write, the body) gets its ``*_done`` with the
   error, in that order, before ``request_exception``.
3. Each event fires at most once per round trip; a stamp that is set is never overwritten.
4. ``request_start`` is first and ``request_done`` is last, exactly once each. ``request_done``
   follows ``request_end`` once the final body is done, or follows ``request_exception``.
5. Hooks fired from loop callbacks (first byte, TLS, pool release, body done) never raise into
   aiohttp: with ``propagate_errors`` the error is kept and raised at the request's next step
   in the caller's task.
"""

from __future__ import annotations

import itertools
import socket
import time
from typing import TYPE_CHECKING, Any

from yarl import URL

from ._events import (
    ConnectDoneInfo,
    ConnectStartInfo,
    ConnInfo,
    DNSDoneInfo,
    DNSStartInfo,
    GetConnInfo,
    Got1xxResponseInfo,
    Got100ContinueInfo,
    GotConnInfo,
    GotFirstResponseByteInfo,
    PoolWaitDoneInfo,
    PoolWaitStartInfo,
    PutIdleConnInfo,
    RedirectInfo,
    RequestDoneInfo,
    RequestEndInfo,
    RequestExceptionInfo,
    RequestStartInfo,
    ResponseBodyDoneInfo,
    RetryInfo,
    RoundTrip,
    TLSHandshakeDoneInfo,
    TLSHandshakeStartInfo,
    TLSInfo,
    Wait100ContinueInfo,
    WroteHeaderFieldInfo,
    WroteHeadersInfo,
    WroteRequestInfo,
)
from ._hooks import SerialRunner, log

if TYPE_CHECKING:
    from collections.abc import Callable

    from multidict import CIMultiDictProxy

    from ._hooks import ClientTrace

__all__ = ["ConnState", "HopState", "RequestState"]

_now = time.perf_counter
_request_ids = itertools.count(1)
_conn_ids = itertools.count(1)


class AbandonedAttempt(ConnectionAbortedError):
    """A Happy Eyeballs attempt dropped because another address connected first."""


class HostHistory:
    """What the reuse detector remembers per pool key: how its last connection ended."""

    __slots__ = ("last_close",)

    def __init__(self) -> None:
        self.last_close: str | None = None


class ConnState:
    """One connection's life, as the reuse detector sees it (kept on the protocol)."""

    __slots__ = (
        "_info",
        "close_reason",
        "closed_at",
        "history",
        "host_label",
        "id",
        "keepalive_disabled",
        "key",
        "observed",
        "opened_at",
        "raw",
        "released_at",
        "releasing",
        "served",
        "server_said_close",
    )

    def __init__(self) -> None:
        self.id = next(_conn_ids)
        self.opened_at = _now()
        self.key: Any = None
        # What the first traced got_conn learned of the connection, as the transport gave it
        # (local and remote address, TLS details): made into a ConnInfo only when something
        # reads ``info``.
        self.raw: tuple[Any, Any, TLSInfo | None] | None = None
        self._info: ConnInfo | None = None
        self.served = 0
        self.released_at: float | None = None
        self.closed_at: float | None = None
        self.close_reason: str | None = None
        self.history: HostHistory | None = None
        self.host_label: str | None = None  # "host:port", for aggregates
        self.keepalive_disabled = False
        self.server_said_close = False
        self.observed = False  # the protocol's feed_data is shadowed (see got_conn)
        self.releasing = False  # an untraced request is releasing it (see the protocol's close)

    @property
    def info(self) -> ConnInfo | None:
        """The connection's addresses and TLS details; ``None`` until a traced round trip got it."""
        info = self._info
        if info is None and self.raw is not None:
            local, remote, tls = self.raw
            info = self._info = ConnInfo._new(
                id=self.id, local_addr=_sockaddr(local), remote_addr=_sockaddr(remote), tls=tls
            )
        return info

    @info.setter
    def info(self, info: ConnInfo | None) -> None:
        self._info = info

    def closing(self, reason: str) -> None:
        """Record why the connection is being closed (the first reason given wins)."""
        if self.close_reason is None:
            self.close_reason = reason
            if self.history is not None:
                self.history.last_close = reason

    def __repr__(self) -> str:
        state = (
            "CLOSED"
            if self.closed_at is not None
            else ("IDLE" if self.released_at is not None else "ACTIVE")
        )
        return f"<ConnState #{self.id} {state} served={self.served}>"


def _sockaddr(addr: Any) -> str | None:
    """A socket address as ``host:port`` (``[host]:port`` for IPv6), or ``None``."""
    if not addr:
        return None
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)


class _Attempt:
    """One TCP connect attempt: its address as the socket factory got it, formatted only
    for a hook that asks."""

    __slots__ = ("done", "family", "sockaddr")

    def __init__(self, family: int, sockaddr: Any) -> None:
        self.family = family
        self.sockaddr = sockaddr
        self.done = False

    @property
    def network(self) -> str:
        return "tcp6" if self.family == socket.AF_INET6 else "tcp4"

    @property
    def addr(self) -> str:
        return _sockaddr(self.sockaddr) or ""


class HopState:
    """One round trip: its stamps (``perf_counter`` seconds) and what it learned.

    Two kinds of field, for speed on the path every traced request takes:

    * slots, every one set in ``__init__``: what a round trip on a pooled connection
      reads and writes (CPython accesses a slot at a fixed offset);
    * class-level defaults, stored in the instance ``__dict__`` only when set: what only a
      new connection (pool wait, DNS, connect, TLS) or a failure fills in. A round trip
      that reuses a connection never creates the dict; reading an unset one is a dict miss
      and a type lookup, paid on those rarer paths and by readers of the timeline.
    """

    __slots__ = (
        "__dict__",
        "_rt",
        "attempt",
        "body_task",
        "conn",
        "err",
        "idle_time",
        "index",
        "method",
        "proto",
        "reused",
        "state",
        "status",
        "t_body_done",
        "t_end",
        "t_first_byte",
        "t_get_conn",
        "t_got_conn",
        "t_pool_start",
        "t_wrote_headers",
        "t_wrote_request",
        "url",
    )

    # New connections and failures only (see above).
    t_pool_done: float | None = None
    t_dns_start: float | None = None
    t_dns_done: float | None = None
    t_connect_start: float | None = None
    t_connect_done: float | None = None
    t_tls_start: float | None = None
    t_tls_done: float | None = None
    dns_host: str | None = None
    addrs: tuple[str, ...] = ()
    dns_cached = False
    dns_coalesced = False
    attempts: list[_Attempt] | None = None
    tls: TLSInfo | None = None
    tls_open = False
    reuse_miss: str | None = None

    def __init__(
        self, state: RequestState, method: str, url: URL, index: int, attempt: int
    ) -> None:
        self.state = state
        self.method = method
        self.url = url
        self.index = index
        self.attempt = attempt
        self.t_get_conn = _now()
        # Stamps; None until the step happens.
        self.t_pool_start: float | None = None  # a slot: every pooled fast path tests it
        self.t_got_conn: float | None = None
        self.t_wrote_headers: float | None = None
        self.t_wrote_request: float | None = None
        self.t_first_byte: float | None = None
        self.t_body_done: float | None = None
        self.t_end: float | None = None
        # What the round trip learned.
        self.conn: ConnState | None = None
        self.reused = False
        self.idle_time = 0.0
        self.status: int | None = None
        self.err: BaseException | None = None
        self.body_task = False
        self.proto: Any = None  # the connection's protocol, while the hop owns it
        self._rt: RoundTrip | None = None

    def __repr__(self) -> str:
        return (
            f"<HopState req={self.state.id} hop={self.index} attempt={self.attempt}"
            f" status={self.status}>"
        )

    @property
    def rt(self) -> RoundTrip:
        """The public view of this round trip, made the first time a hook needs it."""
        rt = self._rt
        if rt is None:
            rt = self._rt = RoundTrip._new(
                id=self.state.id,
                method=self.method,
                url=self.url,
                hop=self.index,
                attempt=self.attempt,
                _state=self.state,
            )
        return rt

    # -- the pool ---------------------------------------------------------------------------

    def pool_wait_start(self) -> None:
        self.t_pool_start = now = _now()
        h = self.state.d.pool_wait_start
        if h is not None:
            try:
                h(PoolWaitStartInfo._new(request=self.rt, time=now))
            except Exception:
                if self.state.d.raised("pool_wait_start"):
                    raise

    def pool_wait_done(self, err: BaseException | None) -> None:
        if self.t_pool_start is None or self.t_pool_done is not None:
            return
        self.t_pool_done = now = _now()
        h = self.state.d.pool_wait_done
        if h is not None:
            try:
                h(PoolWaitDoneInfo._new(request=self.rt, time=now, err=err))
            except Exception:
                if self.state.d.raised("pool_wait_done"):
                    raise

    # -- DNS --------------------------------------------------------------------------------

    def dns_start(self, host: str) -> None:
        self.dns_host = host
        self.t_dns_start = now = _now()
        h = self.state.d.dns_start
        if h is not None:
            try:
                h(DNSStartInfo._new(request=self.rt, time=now, host=host))
            except Exception:
                if self.state.d.raised("dns_start"):
                    raise

    def dns_done(
        self, addrs: tuple[str, ...], err: BaseException | None, coalesced: bool, cached: bool
    ) -> None:
        if self.t_dns_start is None or self.t_dns_done is not None:
            return
        self.t_dns_done = now = _now()
        self.addrs = addrs
        self.dns_coalesced = coalesced
        self.dns_cached = cached
        h = self.state.d.dns_done
        if h is not None:
            try:
                h(
                    DNSDoneInfo._new(
                        request=self.rt,
                        time=now,
                        host=self.dns_host or "",
                        addrs=addrs,
                        err=err,
                        coalesced=coalesced,
                        cached=cached,
                    )
                )
            except Exception:
                if self.state.d.raised("dns_done"):
                    raise

    # -- TCP connect (one attempt per address) ------------------------------------------------

    def connect_start(self, family: int, sockaddr: Any) -> _Attempt:
        attempt = _Attempt(family, sockaddr)
        attempts = self.attempts
        if attempts is None:
            self.attempts = [attempt]
        else:
            attempts.append(attempt)
        now = _now()
        if self.t_connect_start is None:
            self.t_connect_start = now
        h = self.state.d.connect_start
        if h is not None:
            try:
                h(
                    ConnectStartInfo._new(
                        request=self.rt, time=now, network=attempt.network, addr=attempt.addr
                    )
                )
            except Exception:
                if self.state.d.raised("connect_start"):
                    raise
        return attempt

    def connect_done(self, attempt: _Attempt, err: BaseException | None) -> None:
        if attempt.done:
            return
        attempt.done = True
        now = _now()
        if err is None and self.t_connect_done is None:
            self.t_connect_done = now
        h = self.state.d.connect_done
        if h is not None:
            try:
                h(
                    ConnectDoneInfo._new(
                        request=self.rt,
                        time=now,
                        network=attempt.network,
                        addr=attempt.addr,
                        err=err,
                    )
                )
            except Exception:
                if self.state.d.raised("connect_done"):
                    raise

    def connect_settled(self, err: BaseException | None) -> None:
        """The race is over: close out attempts still open (losers, or all on failure)."""
        for attempt in self.attempts or ():
            if not attempt.done:
                self.connect_done(attempt, err or AbandonedAttempt("another address won"))

    # -- TLS --------------------------------------------------------------------------------

    def tls_start(self, server_name: str | None) -> None:
        """A handshake began (one per connection attempt that reaches TLS)."""
        self.tls_open = True
        # The socket connected before the first handshake call, even where no per-address
        # connect_done was seen (a user's own socket_factory): settle the race here.
        if self.t_connect_start is not None and self.t_connect_done is None:
            for attempt in self.attempts or ():
                if not attempt.done:
                    self.connect_done(attempt, None)
                    break
        now = _now()
        if self.t_tls_start is None:
            self.t_tls_start = now
        h = self.state.d.tls_handshake_start
        if h is not None:
            self.call_in_callback(
                "tls_handshake_start",
                h,
                TLSHandshakeStartInfo._new(request=self.rt, time=now, server_name=server_name),
            )

    def tls_done(self, info: TLSInfo | None, err: BaseException | None) -> None:
        """A handshake ended. Only a successful one ends the TLS phase: after a failure aiohttp
        may try the next address, whose connect and handshake still belong to this phase."""
        if not self.tls_open or self.t_tls_done is not None:
            return
        self.tls_open = False
        now = _now()
        if err is None:
            self.t_tls_done = now
            self.tls = info
        h = self.state.d.tls_handshake_done
        if h is not None:
            i = info
            self.call_in_callback(
                "tls_handshake_done",
                h,
                TLSHandshakeDoneInfo._new(
                    request=self.rt,
                    time=now,
                    version=i.version if i else None,
                    cipher=i.cipher if i else None,
                    alpn=i.alpn if i else None,
                    session_reused=i.session_reused if i else False,
                    peer_subject=i.peer_subject if i else None,
                    peer_issuer=i.peer_issuer if i else None,
                    peer_not_after=i.peer_not_after if i else None,
                    err=err,
                ),
            )

    # -- the connection ---------------------------------------------------------------------

    def got_conn(self, conn: ConnState, reused: bool, idle_time: float) -> None:
        self.t_got_conn = now = _now()
        self.conn = conn
        self.reused = reused
        self.idle_time = idle_time
        if not reused:
            self.connect_settled(None)
        h = self.state.d.got_conn
        if h is not None:
            self.fire_got_conn(h, now)

    def fire_got_conn(self, h: Callable[[Any], None], now: float) -> None:
        """Call the got_conn hook ``h`` with what the round trip got (fields already set)."""
        conn = self.conn
        assert conn is not None
        assert conn.info is not None
        try:
            h(
                GotConnInfo._new(
                    request=self.rt,
                    time=now,
                    conn=conn.info,
                    reused=self.reused,
                    was_idle=self.reused,
                    idle_time=self.idle_time,
                )
            )
        except Exception:
            if self.state.d.raised("got_conn"):
                raise

    # -- writing ----------------------------------------------------------------------------

    def wrote_headers(self, headers: Any) -> None:
        if self.t_wrote_headers is not None:
            return
        d = self.state.d
        h = d.wrote_header_field
        if h is not None:
            now = _now()
            for key in dict.fromkeys(headers.keys()):
                try:
                    h(
                        WroteHeaderFieldInfo._new(
                            request=self.rt, time=now, key=key, values=tuple(headers.getall(key))
                        )
                    )
                except Exception:
                    if d.raised("wrote_header_field"):
                        raise
        self.t_wrote_headers = now = _now()
        h = d.wrote_headers
        if h is not None:
            try:
                h(WroteHeadersInfo._new(request=self.rt, time=now))
            except Exception:
                if d.raised("wrote_headers"):
                    raise

    def wrote_whole_request(self, headers: Any) -> None:
        """Headers and (empty) body went out together: wrote_headers, then wrote_request."""
        d = self.state.d
        if d.wrote_header_field is not None or d.wrote_headers is not None:
            self.wrote_headers(headers)
            self.t_wrote_request = now = _now()
        else:
            self.t_wrote_headers = self.t_wrote_request = now = _now()
        h = d.wrote_request
        if h is not None:
            try:
                h(WroteRequestInfo._new(request=self.rt, time=now, err=None))
            except Exception:
                if d.raised("wrote_request"):
                    raise

    def wait_100_continue(self) -> None:
        h = self.state.d.wait_100_continue
        if h is not None:
            try:
                h(Wait100ContinueInfo._new(request=self.rt, time=_now()))
            except Exception:
                if self.state.d.raised("wait_100_continue"):
                    raise

    def wrote_request(self, err: BaseException | None) -> None:
        if self.t_wrote_request is not None:
            return
        self.t_wrote_request = now = _now()
        h = self.state.d.wrote_request
        if h is not None:
            try:
                h(WroteRequestInfo._new(request=self.rt, time=now, err=err))
            except Exception:
                if self.state.d.raised("wrote_request"):
                    raise

    # -- reading (loop callbacks: never raise into aiohttp) -----------------------------------

    def first_byte(self, now: float) -> None:
        """The first response byte's hook (the protocol stamps ``t_first_byte`` itself)."""
        h = self.state.d.got_first_response_byte
        if h is not None:
            self.call_in_callback(
                "got_first_response_byte",
                h,
                GotFirstResponseByteInfo._new(request=self.rt, time=now),
            )

    def got_1xx(self, status: int, headers: CIMultiDictProxy[str]) -> None:
        state = self.state
        d = state.d
        now = _now()
        if status == 100:
            h = d.got_100_continue
            if h is not None:
                self.call_in_callback(
                    "got_100_continue", h, Got100ContinueInfo._new(request=self.rt, time=now)
                )
        h = d.got_1xx_response
        if h is not None:
            self.call_in_callback(
                "got_1xx_response",
                h,
                Got1xxResponseInfo._new(request=self.rt, time=now, status=status, headers=headers),
            )

    def got_status(self, status: int) -> None:
        if self.status is None:
            self.status = status

    def body_done(self, err: BaseException | None) -> None:
        """The connection left this round trip: the body is complete, or cut short by ``err``."""
        if self.t_body_done is not None or self.t_got_conn is None:
            return
        self.t_body_done = now = _now()
        if self.t_end is None:
            self.t_end = now
        state = self.state
        h = state.d.response_body_done
        if h is not None:
            self.call_in_callback(
                "response_body_done",
                h,
                ResponseBodyDoneInfo._new(request=self.rt, time=now, status=self.status, err=err),
            )

    def put_idle_conn(self, err: BaseException | None) -> None:
        h = self.state.d.put_idle_conn
        if h is not None:
            conn = self.conn
            self.call_in_callback(
                "put_idle_conn",
                h,
                PutIdleConnInfo._new(
                    request=self.rt, time=_now(), conn=conn.info if conn else None, err=err
                ),
            )

    def released(
        self,
        body_err: BaseException | None,
        put_err: BaseException | None,
        now: float | None = None,
    ) -> None:
        """The connection left the round trip (at ``now``, if the caller just took the time):
        response_body_done, then put_idle_conn, then, if the request already returned this
        hop's response, request_done (rule 4)."""
        self.proto = None
        state = self.state
        d = state.d
        if d.releases:
            self.body_done(body_err)
            if d.put_idle_conn is not None:
                self.put_idle_conn(put_err)
        elif self.t_body_done is None and self.t_got_conn is not None:
            # body_done's stamps, where no one listens for the body or the pool: one Python
            # call fewer for the usual traced round trip.
            if now is None:
                now = _now()
            self.t_body_done = now
            if self.t_end is None:
                self.t_end = now
        if state.hop is self and state.t_end is not None and not state.done:
            # A body cut by an error after the response was returned fails the request now.
            failed = self.err
            if failed is not None and state.err is None:
                state.err = failed
            state.finish(failed)

    def call_in_callback(self, name: str, h: Callable[[Any], None], event: object) -> None:
        """Fire hook ``name`` from a loop callback, where nothing may raise into aiohttp
        (rule 5).

        A ``propagate_errors`` hook's error is kept for the request boundary to raise, and
        the connection is aborted so that the request stops now rather than later.
        """
        try:
            h(event)
        except Exception as e:
            state = self.state
            if not state.d.raised(name):  # logged: the request goes on
                return
            if state.deferred is None:
                state.deferred = e
            log.debug("aiotrace: hook raised in a loop callback; the request fails with it")
            proto = self.proto
            if proto is not None and state.t_end is None:
                self.proto = None
                proto.abort()

    # -- failure ----------------------------------------------------------------------------

    def fail(self, err: BaseException) -> None:
        """End every started, unfinished phase with ``err`` (rule 2)."""
        if self.err is None:
            self.err = err
        if self.t_pool_start is not None and self.t_pool_done is None:
            self.pool_wait_done(err)
        if self.t_dns_start is not None and self.t_dns_done is None:
            self.dns_done((), err, self.dns_coalesced, False)
        if self.attempts:
            self.connect_settled(err)
        if self.tls_open:
            self.tls_done(None, err)
        if self.t_got_conn is not None:
            if self.t_wrote_headers is not None and self.t_wrote_request is None:
                self.wrote_request(err)
            if self.t_body_done is None:
                self.body_done(err)
        if self.t_end is None:
            self.t_end = _now()


class RequestState:
    """One traced request from ``request_start`` to ``request_done``.

    Slotted, every slot set in ``__init__``, for the same reason as :class:`HopState`. The
    URL is kept as the caller gave it and parsed only when something reads ``url``.
    """

    __slots__ = (
        "_rt0",
        "_serial",
        "_url",
        "d",
        "deferred",
        "done",
        "err",
        "final_url",
        "hop",
        "hop_list",
        "id",
        "method",
        "observer_data",
        "pinned",
        "status",
        "t_done",
        "t_end",
        "t_start",
        "trace",
    )

    def __init__(self, trace: ClientTrace, method: str, url: Any) -> None:
        self.id = next(_request_ids)
        self.trace = trace
        self.d = trace._dispatch or trace.dispatch()
        self.method = method
        self._url = url
        self.t_start = _now()
        self.hop: HopState | None = None  # the current round trip
        # Every round trip, once there is a second; None for one (the usual request: one
        # object fewer for the cyclic GC to see, per request a Recorder keeps).
        self.hop_list: list[HopState] | None = None
        self.final_url: URL | None = None
        self.status: int | None = None
        self.err: BaseException | None = None
        self.t_end: float | None = None
        self.t_done: float | None = None
        self.done = False
        self.deferred: BaseException | None = None
        self.observer_data: Any = None  # an observer's own per-request value (OTel's context)
        # Someone reads the round trips after the request finishes (a Recorder keeping the
        # state whole, or a timeline view taken while it ran): finish() leaves them attached.
        self.pinned = False
        self._rt0: RoundTrip | None = None
        self._serial: SerialRunner | None = None

    @property
    def url(self) -> URL:
        """The URL the request was made with (parsed from the caller's string when first read;
        a string aiohttp rejects reads as an empty URL: aiohttp reports the error)."""
        url = self._url
        if not isinstance(url, URL):
            try:
                url = URL(url)
            except (TypeError, ValueError):
                url = URL()
            self._url = url
        return url

    def __repr__(self) -> str:
        return f"<RequestState #{self.id} {self.method} {self.url} hops={len(self.hops)}>"

    @property
    def hops(self) -> list[HopState]:
        """Every round trip so far, in order."""
        more = self.hop_list
        if more is not None:
            return more
        hop = self.hop
        return [] if hop is None else [hop]

    @property
    def started_at(self) -> float:
        """Wall-clock start (``time.time()`` scale), derived from the monotonic stamp."""
        return wall_time(self.t_start)

    @property
    def rt(self) -> RoundTrip:
        """The round trip request-level events belong to: the current hop, else the first."""
        hop = self.hop
        if hop is not None:
            return hop.rt
        rt = self._rt0
        if rt is None:
            rt = self._rt0 = RoundTrip._new(
                id=self.id, method=self.method, url=self.url, hop=0, attempt=0, _state=self
            )
        return rt

    def serial(self) -> SerialRunner:
        runner = self._serial
        if runner is None:
            runner = self._serial = SerialRunner()
        return runner

    def call_safely(self, name: str, h: Callable[[Any], None], event: object) -> None:
        """Fire hook ``name`` after the request returned: an error can only be logged."""
        try:
            h(event)
        except Exception:
            if self.d.raised(name):  # a propagate_errors hook: nothing left to fail
                log.exception("aiotrace: hook raised after the request returned; logged only")

    def raise_deferred(self) -> None:
        err = self.deferred
        if err is not None:
            self.deferred = None
            raise err

    # -- the request ------------------------------------------------------------------------

    def start(self) -> None:
        for started in self.d.starters:
            started(self)
        h = self.d.request_start
        if h is not None:
            try:
                h(
                    RequestStartInfo._new(
                        request=self.rt, time=self.t_start, method=self.method, url=self.url
                    )
                )
            except Exception:
                if self.d.raised("request_start"):
                    raise

    def begin_hop(self, method: str, url: URL) -> HopState:
        """A new round trip: the first, a redirect hop, or a retry (rule 1)."""
        prev = self.hop
        if prev is None:
            hop = HopState(self, method, url, 0, 0)
            if self._rt0 is not None and self._rt0.url == url and self._rt0.method == method:
                hop._rt = self._rt0
        elif prev.status is not None:
            hop = HopState(self, method, url, prev.index + 1, 0)
            h = self.d.redirect
            if h is not None:
                try:
                    h(
                        RedirectInfo._new(
                            request=hop.rt,
                            time=_now(),
                            status=prev.status,
                            from_url=prev.url,
                            to_url=url,
                        )
                    )
                except Exception:
                    if self.d.raised("redirect"):
                        raise
        else:
            err = prev.err or ConnectionError("the round trip failed before a response")
            prev.fail(err)
            hop = HopState(self, method, url, prev.index, prev.attempt + 1)
            h = self.d.retry
            if h is not None:
                reason = "stale pooled connection" if prev.reused else "connection failed"
                try:
                    h(RetryInfo._new(request=hop.rt, time=_now(), reason=reason, err=err))
                except Exception:
                    if self.d.raised("retry"):
                        raise
        if prev is not None:
            more = self.hop_list
            if more is None:
                self.hop_list = [prev, hop]
            else:
                more.append(hop)
        self.hop = hop
        h = self.d.get_conn
        if h is not None:
            try:
                h(
                    GetConnInfo._new(
                        request=hop.rt, time=hop.t_get_conn, host_port=f"{url.raw_host}:{url.port}"
                    )
                )
            except Exception:
                if self.d.raised("get_conn"):
                    raise
        return hop

    def end(self, response: Any) -> None:
        self.t_end = now = _now()
        self.status = status = response.status
        hop = self.hop
        # The response's URL is its round trip's (both without the fragment): a slot read
        # instead of ClientResponse.url, a property.
        self.final_url = url = hop.url if hop is not None else response.url
        h = self.d.request_end
        if h is not None:
            try:
                h(
                    RequestEndInfo._new(
                        request=self.rt, time=now, status=status, url=url, response=response
                    )
                )
            except Exception:
                if self.d.raised("request_end"):
                    raise
        if self.deferred is not None:  # a callback hook failed: the request fails with it
            self.raise_deferred()
        if hop is None or hop.t_body_done is not None:
            self.finish(None, now)

    def exception(self, err: BaseException) -> None:
        hop = self.hop
        if hop is not None:
            hop.fail(err)
        self.err = err
        self.t_end = now = _now()
        h = self.d.request_exception
        if h is not None:
            try:
                h(RequestExceptionInfo._new(request=self.rt, time=now, err=err))
            except Exception:
                log.exception("aiotrace: request_exception hook raised; the caller sees aiohttp's")
        self.finish(err)

    def finish(self, err: BaseException | None, now: float | None = None) -> None:
        """``request_done``: at ``now`` if the caller just took the time, else now."""
        if self.done:
            return
        self.done = True
        if now is None:
            now = _now()
        self.t_done = now
        d = self.d
        h = d.request_done
        if h is not None:
            self.call_safely(
                "request_done", h, RequestDoneInfo._new(request=self.rt, time=now, err=err)
            )
        for finished in d.finishers:
            finished(self)
        if not self.pinned:
            # Nothing will read the round trips again: drop the state -> hop references, so
            # the state and its hops (which point back at it) are freed as soon as the last
            # reference goes, not by a garbage-collector pass (measured: ~4k instructions
            # a request of GC traversal). A hop may still be called after this (a connection
            # lost late); it reaches only the state's own fields.
            self.hop_list = None
            self.hop = None
            self._rt0 = None


_WALL_OFFSET = time.time() - time.perf_counter()


def wall_time(perf: float) -> float:
    """A ``perf_counter`` stamp on the ``time.time()`` scale."""
    return perf + _WALL_OFFSET
