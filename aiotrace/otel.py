"""OpenTelemetry export: one CLIENT span per request, and a child span per round trip when
there is more than one (redirects, retries); a single round trip's details go on the request
span itself.

Needs the ``otel`` extra (``opentelemetry-sdk``). Spans are made when the request is done,
from the stamps aiotrace took anyway, with their real start and end times, under the span
that was current when the request started::

    otel = aiotrace.otel.OTelTrace(tracer_provider=provider)
    async with aiotrace.traced_session(trace=otel) as session: ...

Each hop's span carries what no one-span-per-request instrumentation can: the phase timings,
whether the connection was reused (or why not), its idle time, the peer address and TLS
version. aiotrace records spans; it does not inject ``traceparent`` into requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._record.redact import DEFAULT_REDACTION, Redaction
from ._record.timeline import PHASES, phase_values, pooled_phase_values
from ._trace.clock import wall_time
from ._trace.hooks import ClientTrace
from ._version import __version__

if TYPE_CHECKING:
    from ._trace.events import ConnInfo
    from ._trace.hop import HopState
    from ._trace.request import RequestState

__all__ = ["OTelTrace"]


_PHASE_KEYS = tuple(f"aiotrace.{name}_ms" for name in PHASES)


_URL_CACHE = 1024  # URLs whose url.* / server.* attributes are kept
_CONN_CACHE = 1024  # connections whose attributes are kept (ids only grow: oldest dropped)


def _ns(perf: float) -> int:
    return int(wall_time(perf) * 1e9)


def _connection_attributes(info: ConnInfo) -> dict[str, Any]:
    attrs: dict[str, Any] = {"aiotrace.connection.id": info.id}
    if info.remote_addr:
        host, _, port = info.remote_addr.rpartition(":")
        attrs["network.peer.address"] = host.strip("[]")
        attrs["network.peer.port"] = int(port)
    if info.tls is not None and info.tls.version:
        attrs["tls.protocol.version"] = info.tls.version
    return attrs


class OTelTrace:
    """Turns traced requests into OpenTelemetry spans; ``.trace`` is the ClientTrace to use."""

    def __init__(
        self,
        *,
        tracer_provider: otel_trace.TracerProvider | None = None,
        redaction: Redaction = DEFAULT_REDACTION,
    ) -> None:

        self._tracer = otel_trace.get_tracer("aiotrace", __version__, tracer_provider)
        self._redaction = redaction
        # Observer protocol (see ClientTrace._observers).
        self.on_start = self.request_started
        self.on_finish = self.request_finished
        self.trace = ClientTrace(_observers=(self,))
        self._url_cache: dict[Any, dict[str, Any]] = {}
        self._conn_attributes: dict[int, dict[str, Any]] = {}

    def request_started(self, state: RequestState) -> None:
        state.observer_data = otel_context.get_current()

    def request_finished(self, state: RequestState) -> None:
        # Every attribute goes in at start_span: the SDK validates each one as it is set, and
        # a second pass (set_attribute after the start) costs a lock and a copy per attribute.
        # The SDK's span is most of the cost (~30 us empty, ~1.6 us per attribute, measured):
        # what aiotrace adds is built from per-URL and per-connection parts made once.
        parent = state.observer_data
        state.observer_data = None
        first = state.hop
        single = first is not None and state.hop_list is None
        attrs: dict[str, Any] = (
            self._hop_attributes(first)
            if first is not None and single
            else {"aiotrace.hops": len(state.hops)}
        )
        attrs.update(self._url_attributes(state._url, state))
        attrs["http.request.method"] = state.method
        final = state.final_url
        if final is not None and final is not state._url and not single:
            url = final
            attrs["server.address"] = url.host or ""
            if url.port is not None:
                attrs["server.port"] = url.port
        status = state.status
        if status is not None:
            attrs["http.response.status_code"] = status
        err = state.err
        if err is not None:
            attrs["error.type"] = type(err).__qualname__
        elif status is not None and status >= 400:
            attrs["error.type"] = str(status)
        span = self._tracer.start_span(
            state.method,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=_ns(state.t_start),
        )
        if err is not None:
            span.set_status(Status(StatusCode.ERROR, str(err)))
        elif status is not None and status >= 400:
            span.set_status(Status(StatusCode.ERROR))
        if not single:
            ctx = otel_trace.set_span_in_context(span, parent)
            for hop in state.hops:
                self._hop_span(hop, ctx)
        span.end(end_time=_ns(state.t_done or state.t_end or state.t_start))

    def _url_attributes(self, key: Any, state: RequestState) -> dict[str, Any]:
        """``url.full`` (redacted), ``server.address`` and ``server.port`` of the URL the request
        was made with, kept for the last _URL_CACHE URLs (a service calls the same few)."""
        cache = self._url_cache
        try:
            hit = cache.get(key)
        except TypeError:  # an unhashable URL-like object: not cached
            hit = None
        if hit is not None:
            return hit
        url = state.url
        attrs: dict[str, Any] = {
            "url.full": self._redaction.url(url) or "",
            "server.address": url.host or "",
        }
        if url.port is not None:
            attrs["server.port"] = url.port
        if len(cache) >= _URL_CACHE:
            cache.clear()
        try:
            cache[key] = attrs
        except TypeError:
            pass
        return attrs

    def _hop_attributes(self, hop: HopState) -> dict[str, Any]:
        """What a round trip adds: phases, reuse (or why not), peer, TLS version."""
        attrs: dict[str, Any] = {"aiotrace.reused": hop.reused}
        if hop.reused:
            attrs["aiotrace.idle_ms"] = hop.idle_time * 1000.0
        elif hop.reuse_miss is not None:
            attrs["aiotrace.reuse_miss"] = hop.reuse_miss
        pooled = pooled_phase_values(hop)
        if pooled is not None:
            attrs["aiotrace.send_ms"], attrs["aiotrace.wait_ms"], attrs["aiotrace.receive_ms"] = (
                pooled
            )
        else:
            values, _, _ = phase_values(hop)
            for name, ms in zip(_PHASE_KEYS, values, strict=True):
                if ms is not None:
                    attrs[name] = ms
        conn = hop.conn
        if conn is not None:
            chunk = self._conn_attributes.get(conn.id)
            if chunk is None and (info := conn.info) is not None:
                chunk = self._conn_attributes[conn.id] = _connection_attributes(info)
                while len(self._conn_attributes) > _CONN_CACHE:  # oldest first
                    del self._conn_attributes[next(iter(self._conn_attributes))]
            if chunk is not None:
                attrs.update(chunk)
        return attrs

    def _hop_span(self, hop: HopState, ctx: Any) -> None:
        attrs = self._hop_attributes(hop)
        attrs["http.request.method"] = hop.method
        attrs["url.full"] = self._redaction.url(hop.url) or ""
        attrs["aiotrace.hop"] = hop.index
        attrs["aiotrace.attempt"] = hop.attempt
        if hop.status is not None:
            attrs["http.response.status_code"] = hop.status
        err = hop.err
        if err is not None:
            attrs["error.type"] = type(err).__qualname__
        span = self._tracer.start_span(
            f"{hop.method} hop {hop.index}" + (f" attempt {hop.attempt}" if hop.attempt else ""),
            context=ctx,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=_ns(hop.t_get_conn),
        )
        if err is not None:
            span.set_status(Status(StatusCode.ERROR, str(err)))
        span.end(end_time=_ns(hop.t_body_done or hop.t_end or hop.t_get_conn))
