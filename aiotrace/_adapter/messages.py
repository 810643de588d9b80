"""The request and response classes: when the request is written.

A request with no body goes out whole inside ``ClientRequest.send()``, and aiohttp then calls
``response.start(conn)`` at once: wrote_headers and wrote_request fire there. Only traced
requests get that response class: a traced ``connect()`` sets it on the request (see
``TracingConnector.connect``), so untraced requests never run this code. A request with a
body (or waiting for ``100 Continue``, or meeting a paused transport) is finished by
``write_bytes()`` in a task of its own, which reports them instead; that override is on the
session's request class and hands back aiohttp's own coroutine when nothing is traced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import ClientRequest, ClientResponse

from .._trace.clock import now as _now

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp.connector import Connection

    from .._trace.hop import HopState

__all__ = [
    "TracingRequestMixin",
    "TracingResponseMixin",
    "traced_request_class",
    "traced_response_class",
]


class TracingRequestMixin:
    """Reports wrote_headers, wait_100_continue and wrote_request for a body task."""

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


class TracingResponseMixin:
    """Reports wrote_headers / wrote_request for a request written whole inside ``send()``.

    ``_aiotrace_start`` is the base class's ``start``, bound when the class is made:
    cheaper on every traced request than ``super().start``.
    """

    _aiotrace_start: Callable[..., Any]

    def start(self, connection: Connection) -> Any:
        hop = getattr(connection.protocol, "aiotrace_hop", None)
        if hop is not None and not hop.body_task and hop.t_wrote_request is None:
            if hop.state.d.writes:
                hop.wrote_whole_request(self.request_info.headers)  # type: ignore[attr-defined]
            else:
                hop.t_wrote_headers = hop.t_wrote_request = _now()
        return self._aiotrace_start(connection)


# Base class -> its traced class (and a traced class -> itself): one lookup per call, which
# matters for the response class, looked up on every traced round trip.
_request_classes: dict[type, type] = {}
_response_classes: dict[type, type] = {}


def _traced(cache: dict[type, type], mixin: type, base: type, bound: str | None = None) -> Any:
    """``base`` with ``mixin`` in front; ``bound`` names a base method the mixin calls as
    ``_aiotrace_<name>`` (cheaper than ``super()``)."""
    cls = cache.get(base)
    if cls is None:
        if issubclass(base, mixin):
            cls = base
        else:
            namespace = {f"_aiotrace_{bound}": getattr(base, bound)} if bound else {}
            cls = type(f"Tracing{base.__name__}", (mixin, base), namespace)
        cache[base] = cache[cls] = cls
    return cls


def traced_request_class(base: type[ClientRequest] = ClientRequest) -> type[ClientRequest]:
    """``base`` with the tracing mixin in front (made once per base class)."""
    cls: type[ClientRequest] = _traced(_request_classes, TracingRequestMixin, base)
    return cls


def traced_response_class(base: type[ClientResponse] = ClientResponse) -> type[ClientResponse]:
    """``base`` with the tracing mixin in front (made once per base class; called on every
    traced round trip, so a hit is one dictionary lookup)."""
    cls = _response_classes.get(base)
    if cls is None:
        cls = _traced(_response_classes, TracingResponseMixin, base, "start")
    return cls
