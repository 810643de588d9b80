"""One round trip (:class:`HopState`): where every hook but the request's own is fired from.

Theory of operation
-------------------
A traced request is one :class:`~aiotrace._trace.request.RequestState`, made when
``session.request()`` begins (``request.py``). Each round trip (the first, each redirect hop,
each retry) is one :class:`HopState`, made by the request's ``begin_hop``. Emitters in the
connector, the protocol, the TLS object and the request/response classes call the methods
below; each method stamps ``time.perf_counter()`` into a slot, then fires the hook if someone
set it. The stamps are the timeline, so a :class:`~aiotrace.Recorder` reads them and needs no
hooks of its own beyond the request's start and end.

The rules this module and ``request.py`` keep together (rule 4 and the order between round
trips are the request's):

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

This module is over 500 lines on purpose: it is one idea, a round trip's phases in Go's order,
each a stamp and a hook, and it reads best whole, top to bottom in that order.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Protocol

from yarl import URL

from .clock import now as _now
from .connection import sockaddr
from .events import (
    ConnectDoneInfo,
    ConnectStartInfo,
    DNSDoneInfo,
    DNSStartInfo,
    Got1xxResponseInfo,
    Got100ContinueInfo,
    GotConnInfo,
    GotFirstResponseByteInfo,
    PoolWaitDoneInfo,
    PoolWaitStartInfo,
    PutIdleConnInfo,
    ResponseBodyDoneInfo,
    RoundTrip,
    TLSHandshakeDoneInfo,
    TLSHandshakeStartInfo,
    TLSInfo,
    Wait100ContinueInfo,
    WroteHeaderFieldInfo,
    WroteHeadersInfo,
    WroteRequestInfo,
)
from .hooks import Dispatch, log

if TYPE_CHECKING:
    from collections.abc import Callable

    from multidict import CIMultiDictProxy

    from .connection import ConnState

__all__ = ["AbandonedAttempt", "HopState", "RequestLike"]


class AbandonedAttempt(ConnectionAbortedError):
    """A Happy Eyeballs attempt dropped because another address connected first."""


class RequestLike(Protocol):
    """What a round trip reads and sets of its request (``request.RequestState``, one layer
    up: a round trip never imports it)."""

    id: int
    d: Dispatch
    hop: HopState | None
    t_end: float | None
    done: bool
    err: BaseException | None
    deferred: BaseException | None

    @property
    def hops(self) -> list[HopState]: ...

    def finish(self, err: BaseException | None, now: float | None = None) -> None: ...

    def raise_deferred(self) -> None: ...


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
        return sockaddr(self.sockaddr) or ""


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

    def __init__(self, state: RequestLike, method: str, url: URL, index: int, attempt: int) -> None:
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
