"""The connection's protocol: first response byte, 1xx responses, status, and close reasons.

``TracingResponseHandler`` is aiohttp's ``ResponseHandler`` with a pointer to the round trip
currently using the connection (set at ``got_conn``, cleared when the connection is released)
and the connection's :class:`~aiotrace._state.ConnState`. Loop callbacks run in the context
of whoever created the transport, which is stale on a reused connection, so nothing here
reads a ContextVar: the round trip is always this explicit pointer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp.client_proto import ResponseHandler

from .._trace.clock import now as _now
from .._trace.connection import ConnState
from .private import asked_to_close

if TYPE_CHECKING:
    import asyncio

    from .._trace.hop import HopState

__all__ = ["TracingResponseHandler"]


# The base methods, called directly on the hot path: a zero-argument super() costs a lookup.
_init = ResponseHandler.__init__
_data_received = ResponseHandler.data_received
_feed_data = ResponseHandler.feed_data
_close = ResponseHandler.close
_connection_lost = ResponseHandler.connection_lost


class TracingResponseHandler(ResponseHandler):
    """aiohttp's client protocol, observed: stamps first byte, sees 1xx, records close."""

    __slots__ = ("aiotrace_conn", "aiotrace_hop")

    def __init__(self, loop: asyncio.AbstractEventLoop, keepalive_disabled: bool = False) -> None:
        _init(self, loop)
        self.aiotrace_hop: HopState | None = None
        self.aiotrace_conn = ConnState()
        self.aiotrace_conn.keepalive_disabled = keepalive_disabled

    def data_received(self, data: bytes) -> None:
        hop = self.aiotrace_hop
        if hop is not None and hop.t_first_byte is None and data:
            hop.t_first_byte = now = _now()
            if hop.state.d.got_first_response_byte is not None:
                hop.first_byte(now)
        _data_received(self, data)

    def traced_feed_data(self, data: Any, size: int = 0) -> None:
        """``feed_data`` while a traced round trip owns the connection: sees each message.

        The parser hands every response message (1xx ones too) to ``self.feed_data`` from
        ``data_received``. ``got_conn()`` shadows that method with this one on the instance the
        first time a traced round trip gets the connection, so connections no traced request
        used pay nothing for it.
        """
        hop = self.aiotrace_hop
        if hop is not None:
            message = data[0]
            code = message.code
            if 100 <= code < 200 and code != 101:
                hop.got_1xx(code, message.headers)
            elif hop.status is None:
                hop.status = code
                if message.should_close:  # Connection: close, or HTTP/1.0 without keep-alive
                    self.aiotrace_conn.server_said_close = True
        _feed_data(self, data, size)

    def close(self) -> None:
        if self.transport is not None:
            conn = self.aiotrace_conn
            if self.aiotrace_hop is None and not conn.releasing:
                # Idle, only the connector closes it: past keepalive_timeout, or found dead
                # when taken from the pool.
                conn.closing("idle_timeout")
            elif conn.keepalive_disabled:
                conn.closing("keepalive_disabled")
            elif conn.server_said_close or (
                # An untraced request's: no traced_feed_data saw its response.
                self.aiotrace_hop is None and asked_to_close(self) and self.exception() is None
            ):
                conn.closing("server_closed")
            else:  # the response was cut short: released unread, or an error
                conn.closing("closed")
        _close(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        conn = self.aiotrace_conn
        if conn.closed_at is None:
            conn.closed_at = _now()
            conn.closing("error" if exc is not None else "server_closed")
        hop = self.aiotrace_hop
        payload = self._payload if hop is not None else None
        _connection_lost(self, exc)
        if hop is not None and hop.t_body_done is None:
            # Lost mid-round-trip: before the response (a stale pooled connection, which
            # aiohttp may retry) or mid-body. aiohttp put the error it will raise on us, or
            # on the body's stream.
            err = self.exception() or (payload.exception() if payload is not None else None) or exc
            if hop.status is None or err is not None:
                hop.fail(err or ConnectionResetError("connection lost"))

    def __repr__(self) -> str:
        return f"<TracingResponseHandler {self.aiotrace_conn!r}>"
