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

from ._state import ConnState, _now

if TYPE_CHECKING:
    import asyncio

    from ._state import HopState

__all__ = ["TracingResponseHandler"]


class TracingResponseHandler(ResponseHandler):
    """aiohttp's client protocol, observed: stamps first byte, sees 1xx, records close."""

    __slots__ = ("aiotrace_conn", "aiotrace_hop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.aiotrace_hop: HopState | None = None
        self.aiotrace_conn = ConnState()

    def data_received(self, data: bytes) -> None:
        hop = self.aiotrace_hop
        if hop is not None and hop.t_first_byte is None and data:
            hop.first_byte()
        super().data_received(data)

    def read(self) -> Any:
        hop = self.aiotrace_hop
        if hop is None:
            return super().read()
        return self._traced_read(hop)

    async def _traced_read(self, hop: HopState) -> Any:
        try:
            result = await super().read()
        except BaseException as e:
            hop.fail(e)
            raise
        message = result[0]
        code = message.code
        if 100 <= code < 200 and code != 101:
            hop.got_1xx(code, message.headers)
        else:
            hop.got_status(code)
        return result

    def close(self) -> None:
        if self.transport is not None:
            # Idle, only the connector closes it: past keepalive_timeout, or found dead when
            # taken from the pool. In use, the request was cut short.
            self.aiotrace_conn.closing("idle_timeout" if self.aiotrace_hop is None else "closed")
        super().close()

    def connection_lost(self, exc: BaseException | None) -> None:
        conn = self.aiotrace_conn
        if conn.closed_at is None:
            conn.closed_at = _now()
            conn.closing("error" if exc is not None else "server_closed")
        hop = self.aiotrace_hop
        if hop is not None and hop.t_body_done is None and exc is not None:
            hop.body_done(exc)
        super().connection_lost(exc)

    def __repr__(self) -> str:
        return f"<TracingResponseHandler {self.aiotrace_conn!r}>"
