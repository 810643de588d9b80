"""The request and response classes: got_conn, and when the request is written.

``ClientRequest.send(conn)`` is the first code aiohttp runs after ``connect()`` returns the
connection: ``got_conn`` fires there. ``send()`` writes the headers into the stream writer's
buffer; a request with no body goes out whole inside ``send()``, and aiohttp then calls
``response.start(conn)``: wrote_headers and wrote_request fire there. A request with
a body (or waiting for ``100 Continue``, or meeting a paused transport) is finished by
``write_bytes()`` in a task of its own, which reports them instead. Every override is a plain
function that hands back aiohttp's own coroutine when no traced round trip is running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import ClientRequest, ClientResponse

from ._connector import got_conn
from ._context import current_request

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp.connector import Connection

    from ._state import HopState

__all__ = [
    "TracingRequestMixin",
    "TracingResponseMixin",
    "traced_request_class",
    "traced_response_class",
]


def _hop_of(conn: Connection) -> HopState | None:
    return getattr(conn.protocol, "aiotrace_hop", None)


class TracingRequestMixin:
    """Reports got_conn, and wait_100_continue / wrote_request for a body written by a task.

    ``_aiotrace_send`` is the base class's ``send``, bound when the class is made (see
    ``_traced``): cheaper on every request than ``super().send``.
    """

    _aiotrace_send: Callable[..., Any]

    def send(self, conn: Connection) -> Any:
        cell = current_request.get()
        if cell is not None and (state := cell.state) is not None:
            if state.deferred is not None:
                # A hook failed during connect (TLS, in the transport's callbacks): fail here,
                # in the caller's task, before anything is sent; aiohttp closes the connection.
                state.raise_deferred()
            hop = state.hop
            if hop is not None and hop.t_got_conn is None:
                got_conn(hop, conn)
        return self._aiotrace_send(conn)

    def write_bytes(self, writer: Any, conn: Connection, *args: Any, **kwargs: Any) -> Any:
        hop = _hop_of(conn)
        if hop is None:
            return super().write_bytes(writer, conn, *args, **kwargs)  # type: ignore[misc]
        hop.body_task = True
        return self._aiotrace_write_bytes(hop, writer, conn, args, kwargs)

    async def _aiotrace_write_bytes(
        self, hop: HopState, writer: Any, conn: Connection, args: Any, kwargs: Any
    ) -> None:
        hop.wrote_headers(self.headers)  # type: ignore[attr-defined]
        if self._continue is not None:  # type: ignore[attr-defined]
            hop.wait_100_continue()
        protocol = conn.protocol
        try:
            await super().write_bytes(writer, conn, *args, **kwargs)  # type: ignore[misc]
        except BaseException as e:
            hop.wrote_request(e)
            raise
        # aiohttp hands a write error to the protocol rather than raising it here.
        hop.wrote_request(protocol.exception() if protocol is not None else None)


class TracingResponseMixin:
    """Reports wrote_headers / wrote_request for a request written whole inside ``send()``.

    aiohttp calls ``response.start(conn)`` straight after ``send()`` returns, with no
    suspension in between; with no body task the request was written by then.
    """

    _aiotrace_start: Callable[..., Any]

    def start(self, connection: Connection) -> Any:
        hop = getattr(connection.protocol, "aiotrace_hop", None)
        if hop is not None and not hop.body_task and hop.t_wrote_request is None:
            hop.wrote_whole_request(self)
        return self._aiotrace_start(connection)


_classes: dict[type, type] = {}


def _traced(mixin: type, base: type, hot: str) -> Any:
    if issubclass(base, mixin):
        return base
    cls = _classes.get(base)
    if cls is None:
        namespace = {f"_aiotrace_{hot}": getattr(base, hot)}
        cls = _classes[base] = type(f"Tracing{base.__name__}", (mixin, base), namespace)
    return cls


def traced_request_class(base: type[ClientRequest] = ClientRequest) -> type[ClientRequest]:
    """``base`` with the tracing mixin in front (made once per base class)."""
    cls: type[ClientRequest] = _traced(TracingRequestMixin, base, "send")
    return cls


def traced_response_class(base: type[ClientResponse] = ClientResponse) -> type[ClientResponse]:
    """``base`` with the tracing mixin in front (made once per base class)."""
    cls: type[ClientResponse] = _traced(TracingResponseMixin, base, "start")
    return cls
