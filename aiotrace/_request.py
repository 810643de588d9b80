"""The request class: when headers and body are written (wrote_headers, wrote_request).

aiohttp writes the headers into the stream writer's buffer in ``ClientRequest.send()``. A
request with no body goes out whole inside ``send()``; one with a body (or waiting for
``100 Continue``, or when the transport is paused) is finished by ``write_bytes()`` in a task
of its own. ``write_bytes`` is called synchronously when that task is made, so by the time
``send()`` returns it is known which way the request goes. Both methods are plain functions
that hand back aiohttp's own coroutine when the connection carries no traced round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import ClientRequest

if TYPE_CHECKING:
    from aiohttp.client_reqrep import Connection

    from ._state import HopState

__all__ = ["TracingRequestMixin", "traced_request_class"]


def _hop_of(conn: Connection) -> HopState | None:
    return getattr(conn.protocol, "aiotrace_hop", None)


class TracingRequestMixin:
    """Reports wrote_headers / wait_100_continue / wrote_request for a traced round trip."""

    _aiotrace_body_task = False

    def send(self, conn: Connection) -> Any:
        hop = _hop_of(conn)
        if hop is None:
            return super().send(conn)  # type: ignore[misc]
        return self._aiotrace_send(conn, hop)

    async def _aiotrace_send(self, conn: Connection, hop: HopState) -> Any:
        try:
            response = await super().send(conn)  # type: ignore[misc]
        except BaseException as e:
            hop.fail(e)
            raise
        if not self._aiotrace_body_task:
            hop.wrote_headers(self.headers)  # type: ignore[attr-defined]
            hop.wrote_request(None)
        return response

    def write_bytes(self, writer: Any, conn: Connection, *args: Any, **kwargs: Any) -> Any:
        hop = _hop_of(conn)
        if hop is None:
            return super().write_bytes(writer, conn, *args, **kwargs)  # type: ignore[misc]
        self._aiotrace_body_task = True
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


_classes: dict[type[ClientRequest], type[ClientRequest]] = {}


def traced_request_class(base: type[ClientRequest] = ClientRequest) -> type[ClientRequest]:
    """``base`` with the tracing mixin in front (made once per base class)."""
    if issubclass(base, TracingRequestMixin):
        return base
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = type(f"Tracing{base.__name__}", (TracingRequestMixin, base), {})
    return cls
