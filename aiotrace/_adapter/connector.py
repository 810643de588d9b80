"""``TracingConnector`` and ``TracingUnixConnector``: the round trip's connection events,
and the reuse detector.

Theory of operation
-------------------
``connect()`` is where a round trip begins (once per hop and per retry: aiohttp calls it
again for each). With no traced request running it returns aiohttp's own coroutine and adds
nothing else. With one, it opens a round trip (``get_conn``, naming the proxy if the request
has one, as Go's GetConn does; a ``redirect`` or ``retry`` first when it is not the request's
first), lets aiohttp get the connection, and fires ``got_conn``. Everything aiohttp does
inside ``connect()`` runs in the caller's task, so the narrow overrides below find the round
trip through the ``current_request`` ContextVar:

* ``_wait_for_available_connection`` — pool_wait_start / pool_wait_done;
* ``_resolve_host`` — dns_start / dns_done (cache hits and coalesced lookups included; through
  a proxy, the proxy's name);
* the socket factory (``sockets.py``) — connect_start / connect_done per address; over a Unix
  socket, ``_create_connection`` — one connect to the path;
* ``_warn_about_tls_in_tls`` / ``_start_tls_connection`` / ``_create_proxy_connection`` —
  proxy_connect_start / proxy_connect_done, the CONNECT tunnel of HTTPS through a proxy;
* ``_get_ssl_context`` — the context whose ``SSLObject`` reports the handshake (``tls.py``);
  through a tunnel, the origin's handshake inside it.

From ``got_conn`` on, the connection's protocol points at the round trip, and ``_release``
(the connection leaving the request) ends it: ``response_body_done``, then ``put_idle_conn``
where Go would call PutIdleConn: the connection went back to the pool (``err`` None), or was
live and reusable but the pool refused it (aiohttp's only refusal: its connector has closed).
A connection that is dead or not reusable (reset, ``Connection: close``, body unread,
keep-alive disabled) fires none; the protocol records why it closed on its ``ConnState``. A
``101`` response detaches the connection at ``request_end`` (``request.py``): it is the
caller's from then on, and its close is recorded as ``upgraded``.

The reuse detector: every connection carries a ``ConnState`` (id, opened, served, released).
A round trip reused a connection when it got one that was released before (every pooled
connection was); otherwise it opened it. The idle time is from the connection's last
release. When it opened one, ``reuse_miss`` says why no pooled one served:
``keepalive_disabled``, ``stale_retry``, ``first``, ``busy`` (every live connection to the
host was in use, a WebSocket's included), or how the last one to the host ended
(``server_closed``, ``idle_timeout``, ``error``, ``closed``, ``upgraded``). The pool key is
aiohttp's: host, port, TLS and the proxy, so a tunnel is reused only for its proxy and origin.
A connection learns its pool key and joins its host's history when a traced round trip opens
it, or else at its first release: a connection an untraced request opened and still holds is
not seen as busy.

Private aiohttp methods overridden here (signatures identical in 3.12.15 and 3.14.5, checked
against both sources and by the test suite on both): ``_wait_for_available_connection``,
``_resolve_host``, ``_get_ssl_context``, ``_release``, ``_create_proxy_connection``,
``_warn_about_tls_in_tls``, ``_start_tls_connection`` (``TCPConnector``) and
``_create_connection`` (``UnixConnector``). The tunnel's three are called only on the proxied
path: a direct request pays nothing for them. Private state read goes through
``_adapter/private.py``.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import BaseConnector, ClientHttpProxyError, TCPConnector, UnixConnector
from aiohttp.helpers import is_ip_address

from .._trace.clock import now as _now
from .._trace.connection import HostHistory
from .._trace.request import current_request, running_request
from .messages import _response_classes, traced_response_class
from .private import (
    connector_unused,
    dns_cache_state,
    install_protocol_factory,
    set_socket_factory,
    socket_factory,
)
from .protocol import TracingResponseHandler
from .sockets import make_socket_factory
from .tls import tls_info, traceable

if TYPE_CHECKING:
    import ssl

    from aiohttp import ClientRequest, ClientTimeout
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.connector import Connection

    from .._trace.connection import ConnState
    from .._trace.hop import HopState

__all__ = ["ConnectionNotPooled", "TracingConnector", "TracingUnixConnector"]


_NOT_POOLED = {
    "session_closed": "the session's connector is closed",
    "keepalive_disabled": "keep-alive disabled (force_close)",
    "server_closed": "the server asked to close (Connection: close)",
    "closed": "closed before the response was fully read, or after an error",
}


class ConnectionNotPooled(ConnectionError):
    """Why a connection was not pooled: ``put_idle_conn``'s ``err`` where the pool refused it,
    and ``response_body_done``'s where the body was left unread (``reason``: a close reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def got_conn(hop: HopState, conn: Connection, connector: _PoolTracing, req: ClientRequest) -> None:
    """Fire ``got_conn``: the reuse detector's verdict on the connection the hop was given,
    as a traced ``connect()`` returns it. (Stamps and fields are set here, not through
    ``HopState.got_conn``: one Python call fewer on every traced round trip.)"""
    proto: Any = conn.protocol
    cs: ConnState | None = getattr(proto, "aiotrace_conn", None)
    if cs is None:  # not a TracingConnector's connection: nothing to report
        return
    hop.t_got_conn = now = _now()
    if cs.released_at is None:  # never released, so never pooled: this hop opened it
        connector._opened(hop, cs, req.connection_key)
        if hop.attempts:
            hop.connect_settled(None)
    else:
        hop.reused = True
        hop.conn = cs
        released = cs.released_at
        hop.idle_time = now - released if released is not None else 0.0
    if cs.raw is None:
        _capture(proto, cs, hop)
    cs.released_at = None
    cs.served += 1
    proto.aiotrace_hop = hop  # attach (see TracingResponseHandler.traced_feed_data)
    hop.proto = proto
    if not cs.observed:
        # Once per connection, and kept: traced_feed_data does nothing while no traced
        # round trip is attached. A plain attribute store, never through ``__dict__``:
        # reading an instance's __dict__ turns its inline attribute values into a real
        # dict, and every attribute access aiohttp makes on that protocol afterwards misses
        # CPython's fast paths (~11k instructions per traced request, measured).
        cs.observed = True
        proto.feed_data = proto.traced_feed_data
    h = hop.state.d.got_conn
    if h is not None:
        hop.fire_got_conn(h, now)


def _capture(proto: ResponseHandler, cs: ConnState, hop: HopState) -> None:
    """Keep the connection's addresses and TLS details (formatted only when read)."""
    transport = proto.transport
    tls = hop.tls
    local = remote = None
    if transport is not None:
        local = transport.get_extra_info("sockname")
        remote = transport.get_extra_info("peername")
        if tls is None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                tls = tls_info(ssl_object)
    cs.raw = (local, remote, tls)


# Hot paths call the base methods directly: a zero-argument super() costs a lookup per call.
_base_connect = BaseConnector.connect
_base_release = BaseConnector._release
_base_resolve = TCPConnector._resolve_host
_base_ssl_context = TCPConnector._get_ssl_context
_base_proxy_connection = TCPConnector._create_proxy_connection
_base_warn_tls_in_tls = TCPConnector._warn_about_tls_in_tls
_base_start_tls = TCPConnector._start_tls_connection
_base_unix_connection = UnixConnector._create_connection
_entry_host = operator.itemgetter("host")  # of aiohttp's resolved-host entries


class _PoolTracing(BaseConnector):
    """What every tracing connector shares: the round trip, the pool and the reuse detector.

    A mixin in front of an aiohttp connector class (``TCPConnector``, ``UnixConnector``);
    every protocol such a connector makes is a ``TracingResponseHandler``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._aiotrace_setup()

    def _aiotrace_setup(self) -> None:
        install_protocol_factory(
            self, functools.partial(TracingResponseHandler, keepalive_disabled=self._force_close)
        )
        self._aiotrace_hosts: dict[Any, HostHistory] = {}

    @staticmethod
    def adopt(connector: object) -> bool:
        """Make ``connector`` a tracing connector in place, if it is a plain ``TCPConnector``
        or ``UnixConnector`` (not a subclass: its overrides would be bypassed) that is open
        and has never held a connection (a tracing connector's connections all carry its
        protocol class). Returns whether it did. Its settings stay; only its class, its
        protocol factory and (TCP) its socket factory, wrapped around its own, change."""
        kind = type(connector)
        if kind is TCPConnector:
            traced: type[_PoolTracing] = TracingConnector
        elif kind is UnixConnector:
            traced = TracingUnixConnector
        else:
            return False
        if not connector_unused(connector):  # type: ignore[arg-type]
            return False
        connector.__class__ = traced  # the same instance layout: the mixin adds no slots
        assert isinstance(connector, _PoolTracing)
        if isinstance(connector, TCPConnector):
            set_socket_factory(connector, make_socket_factory(socket_factory(connector)))
        connector._aiotrace_setup()
        return True

    # -- the round trip -----------------------------------------------------------------------

    def connect(self, req: ClientRequest, traces: Any, timeout: ClientTimeout) -> Any:
        cell = current_request.get()
        if cell is None or (state := cell.state) is None:
            return _base_connect(self, req, traces, timeout)  # untraced: aiohttp's own coroutine
        hop = state.begin_hop(req.method, req.url, req.proxy)
        senders = state.d.senders
        if senders:  # the request is not sent yet: an observer may add headers (traceparent)
            for send in senders:
                send(state, req.headers, req.version)
        # The response reports the request written (messages.py); only traced requests get it.
        base = req.response_class
        req.response_class = _response_classes.get(base) or traced_response_class(base)
        return self._traced_connect(hop, req, traces, timeout)

    async def _traced_connect(
        self, hop: HopState, req: ClientRequest, traces: Any, timeout: ClientTimeout
    ) -> Connection:
        # A failure inside ends the round trip through the request boundary (hop.fail).
        conn = await _base_connect(self, req, traces, timeout)
        try:
            state = hop.state
            if state.deferred is not None:
                # A hook failed during connect (TLS, in the transport's callbacks): fail
                # here, in the caller's task, before anything is sent.
                state.raise_deferred()
            got_conn(hop, conn, self, req)  # a propagate_errors got_conn hook may raise
        except BaseException:
            conn.close()  # not handed to aiohttp: ours to close
            raise
        return conn

    def _opened(self, hop: HopState, cs: ConnState, key: Any) -> None:
        """``hop`` opened ``cs``: why no pooled connection served it, then adopt ``cs``."""
        hop.conn = cs
        hop.reuse_miss = self._miss_reason(hop, key, self._aiotrace_hosts.get(key))
        self._adopt(cs, key)

    def _adopt(self, cs: ConnState, key: Any) -> None:
        """Give the connection its pool key and its host's history (made for the first)."""
        history = self._aiotrace_hosts.get(key)
        if history is None:
            history = self._aiotrace_hosts[key] = HostHistory()
        cs.key = key
        cs.history = history
        if cs.close_reason is not None:  # closed before its first release
            history.last_close = cs.close_reason

    def _miss_reason(self, hop: HopState, key: Any, history: HostHistory | None) -> str:
        """Why the round trip had to open a connection (the pool state as it was just now)."""
        if self.force_close:
            return "keepalive_disabled"
        hops = hop.state.hops
        if len(hops) > 1:
            prev = hops[-2]
            if prev.index == hop.index and prev.reused:
                return "stale_retry"
        if history is None:
            return "first"
        for proto in self._acquired:
            other = getattr(proto, "aiotrace_conn", None)
            if other is not None and other.key == key and other.closed_at is None:
                return "busy"
        return history.last_close or "closed"

    # -- private aiohttp methods (3.12.15 and 3.14.5) --------------------------------------

    async def _wait_for_available_connection(self, key: Any, traces: Any) -> None:
        state = running_request()
        hop = state.hop if state is not None else None
        if hop is None:
            return await super()._wait_for_available_connection(key, traces)
        hop.pool_wait_start()
        try:
            await super()._wait_for_available_connection(key, traces)
        except BaseException as e:
            hop.pool_wait_done(e)
            raise
        hop.pool_wait_done(None)
        return None

    def _release(self, key: Any, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        # Every protocol here is a TracingResponseHandler (install_protocol_factory).
        p: Any = protocol
        hop: HopState | None = p.aiotrace_hop
        cs: ConnState = p.aiotrace_conn
        cs.released_at = now = _now()
        if cs.history is None:  # opened by an untraced request: adopt it now
            self._adopt(cs, key)
        if hop is None:  # an untraced request's: if aiohttp closes it now, close() asks why
            cs.releasing = True
            try:
                _base_release(self, key, protocol, should_close=should_close)
            finally:
                cs.releasing = False
            return
        connector_closed = self._closed
        failure = p.exception()  # closing clears it
        # Go's PutIdleConn fires for a live, reusable connection offered to the pool. aiohttp
        # pools every such one unless its connector has closed (the only refusal it has): so
        # that is asked only then, before aiohttp's _release (a no-op by then) runs.
        refused = connector_closed and not (
            should_close or self._force_close or p.should_close or cs.server_said_close
        )
        # Still attached: if aiohttp closes the connection now, the protocol records why.
        _base_release(self, key, protocol, should_close=should_close)
        p.aiotrace_hop = None  # detach
        if p.transport is not None and not connector_closed:
            if hop.state.d.sampling is not None:
                # Under sampling most requests on this connection will be untraced: give
                # them aiohttp's own feed_data back, not a frame that does nothing (got_conn
                # shadows it again for the next traced round trip).
                cs.observed = False
                del p.feed_data
            hop.released(None, None, now)  # back in the pool: put_idle_conn(None)
            return
        reason = cs.close_reason or "closed"
        if connector_closed:
            reason = "session_closed"
        if failure is None and reason == "closed":
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the caller cancelled the read
                failure = asyncio.CancelledError()
        if failure is None and hop.err is not None:  # the protocol saw the connection fail
            failure = hop.err
        failed = hop.status is None or failure is not None
        offered = refused and not failed
        # Why it was not pooled, as an error: the body's error where the round trip failed
        # with no other or the response was released unread, and put_idle_conn's where the
        # pool refused it. (Not made when nothing will see it: a keep-alive-disabled
        # connection closing after each request is the usual case.)
        err = None
        if (failed and failure is None) or reason == "closed" or offered:
            err = ConnectionNotPooled(reason, _NOT_POOLED.get(reason, reason))
        if failed:
            if hop.err is None and failure is not None:
                hop.err = failure
            hop.released(failure or err, err, offered=False)
        else:  # done, or released unread: not an error of the request
            hop.released(err if reason == "closed" else None, err, offered=offered)

    def close(self, *args: Any, **kwargs: Any) -> Any:
        for conns in list(self._conns.values()):
            for proto, _ in conns:
                cs = getattr(proto, "aiotrace_conn", None)
                if cs is not None:
                    cs.closing("session_closed")
        return super().close(*args, **kwargs)


class TracingConnector(_PoolTracing, TCPConnector):
    """A ``TCPConnector`` (same arguments) that reports connection events of traced requests."""

    def __init__(self, *args: Any, socket_factory: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, socket_factory=make_socket_factory(socket_factory), **kwargs)

    # -- private aiohttp methods (3.12.15 and 3.14.5) --------------------------------------

    def _resolve_host(self, host: str, port: int, traces: Any = None) -> Any:
        state = running_request()
        if state is None or state.hop is None or is_ip_address(host):
            return _base_resolve(self, host, port, traces)
        return self._traced_resolve(state.hop, host, port, traces)

    async def _traced_resolve(self, hop: HopState, host: str, port: int, traces: Any) -> Any:
        cached, coalesced = dns_cache_state(self, host, port)
        hop.dns_start(host)
        try:
            hosts = await _base_resolve(self, host, port, traces)
        except BaseException as e:
            hop.dns_done((), e, coalesced, cached)
            raise
        hop.dns_done(tuple(map(_entry_host, hosts)), None, coalesced, cached)
        return hosts

    def _get_ssl_context(self, req: ClientRequest) -> ssl.SSLContext | None:
        ctx = _base_ssl_context(self, req)
        return None if ctx is None else traceable(ctx)

    # The CONNECT tunnel, HTTPS through a proxy (aiohttp 3.12.15 and 3.14.5). Inside
    # ``_create_proxy_connection``: the connection to the proxy is made (DNS and connect are
    # the proxy's, seen by the overrides above), ``_warn_about_tls_in_tls`` is called on it
    # (the CONNECT goes out next), the proxy's answer is read, and on a 200
    # ``_start_tls_connection`` runs the origin's handshake in the tunnel; any other status
    # raises ``ClientHttpProxyError``. Only the proxied path calls these three.

    async def _create_proxy_connection(
        self, req: ClientRequest, traces: Any, timeout: ClientTimeout
    ) -> Any:
        state = running_request()
        hop = state.hop if state is not None else None
        try:
            return await _base_proxy_connection(self, req, traces, timeout)
        except ClientHttpProxyError as e:  # the proxy refused the CONNECT
            if hop is not None:
                hop.proxy_connect_done(e.status, e)
            raise

    def _warn_about_tls_in_tls(self, underlying_transport: Any, req: ClientRequest) -> None:
        _base_warn_tls_in_tls(self, underlying_transport, req)
        state = running_request()
        hop = state.hop if state is not None else None
        if hop is not None:
            host = req.url.raw_host or ""
            hop.proxy_connect_start(f"[{host}]:{req.port}" if ":" in host else f"{host}:{req.port}")

    async def _start_tls_connection(
        self,
        underlying_transport: Any,
        req: ClientRequest,
        timeout: ClientTimeout,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        state = running_request()
        hop = state.hop if state is not None else None
        if hop is not None and hop.proxy is not None:
            hop.proxy_connect_done(200, None)  # aiohttp goes on only after a 200
        return await _base_start_tls(self, underlying_transport, req, timeout, *args, **kwargs)


class TracingUnixConnector(_PoolTracing, UnixConnector):
    """A ``UnixConnector`` (same arguments: the socket's ``path`` first) that reports
    connection events of traced requests: one connect to the path, no DNS, no TLS."""

    async def _create_connection(
        self, req: ClientRequest, traces: Any, timeout: ClientTimeout
    ) -> ResponseHandler:
        state = running_request()
        hop = state.hop if state is not None else None
        if hop is None:
            return await _base_unix_connection(self, req, traces, timeout)
        attempt = hop.connect_start(socket.AF_UNIX, self.path)
        try:
            proto = await _base_unix_connection(self, req, traces, timeout)
        except BaseException as e:
            # aiohttp wraps the socket's error: the attempt ends with the socket's own.
            cause = e.__cause__
            hop.connect_done(attempt, cause if isinstance(cause, OSError) else e)
            raise
        hop.connect_done(attempt, None)
        return proto
