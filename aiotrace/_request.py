"""The request class: got_conn, and when the request is written.

``ClientRequest.send(conn)`` is the first code aiohttp runs after ``connect()`` returns the
connection: ``got_conn`` fires there. ``send()`` writes the headers; a request with no body
goes out whole inside ``send()``, so when a traced ``send()`` returns, wrote_headers and
wrote_request fire. A request with a body (or waiting for ``100 Continue``, or meeting a
paused transport) is finished by ``write_bytes()`` in a task of its own, which reports them
instead. Untraced, every override hands back aiohttp's own coroutine and adds nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import ClientRequest

from ._connector import got_conn
from ._context import current_request

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp import ClientResponse
    from aiohttp.connector import Connection

    from ._state import HopState

__all__ = ["TracingRequestMixin", "traced_request_class"]


class TracingRequestMixin:
    """Reports got_conn, the request written, and wait_100_continue for a body task.

    ``_aiotrace_send`` is the base class's ``send``, bound when the class is made (see
    ``traced_request_class``): cheaper on every request than ``super().send``.
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
                return self._aiotrace_sent(hop, conn)
        return self._aiotrace_send(conn)

    async def _aiotrace_sent(self, hop: HopState, conn: Connection) -> ClientResponse:
        response: ClientResponse = await self._aiotrace_send(conn)
        if not hop.body_task and hop.t_wrote_request is None:
            hop.wrote_whole_request(self.headers)  # type: ignore[attr-defined]
        return response

    def write_bytes(self, writer: Any, conn: Connection, *args: Any, **kwargs: Any) -> Any:
        hop = getattr(conn.protocol, "aiotrace_hop", None)
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


_classes: dict[type, type] = {}


def traced_request_class(base: type[ClientRequest] = ClientRequest) -> type[ClientRequest]:
    """``base`` with the tracing mixin in front (made once per base class)."""
    if issubclass(base, TracingRequestMixin):
        return base
    cls = _classes.get(base)
    if cls is None:
        namespace = {"_aiotrace_send": base.send}
        cls = _classes[base] = type(
            f"Tracing{base.__name__}", (TracingRequestMixin, base), namespace
        )
    return cls
