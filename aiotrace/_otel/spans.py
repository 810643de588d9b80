"""``OTelTrace``: a request's spans, its ``traceparent`` on every round trip, and its metrics.

Theory of operation
-------------------
``OTelTrace.trace`` samples (``ClientTrace(sample=...)``): at the request boundary, once per
request, ``sample`` asks the tracer provider's sampler about the request span, under the span
current in the caller's context, with the attributes the semantic conventions give a sampler
(``http.request.method``, ``url.full``, ``server.address``, ``server.port``): with the SDK's
tracer it asks the sampler itself (``decision.py``: a dropped request then costs no span),
else it starts the span and the sampler decides inside ``start_span``. ``at_boundary``, a
moment later in the same call, sees the outcome:

* sampled: the span goes to the request's state and the request runs traced;
* not sampled: the unsampled context (flags ``00``) is injected into the request's headers
  (a copy) there, and the request runs untraced, as in an idle session; ``count_unsampled``
  records its duration when it ends (with a meter: a no-op one counts nothing).

A session traced through aiohttp's signals (``trace_config()``: no boundary) starts the span
in ``on_start`` instead; there an unsampled request runs traced but exports nothing.

Each round trip of a sampled request, before it is sent (``on_send``), gets the context of
the span that stands for it, injected through the global propagator (W3C ``traceparent`` and
``baggage`` by default), replacing any such header already there:

* the first round trip carries the request span's context (no one knows yet whether a
  redirect or retry will follow);
* every later one (a redirect hop, a retry) carries its own hop span's, started then as a
  child of the request span.

Everything else is made when the request is done, from the stamps aiotrace took anyway, with
their real times: the attributes, the first round trip's span when there was more than one
(a request with one round trip is one span with that round trip's details), and with
``phases="spans"`` one INTERNAL child per phase of each round trip, laid end to end as the
Recorder's timings are, so they nest in their round trip and never overlap. Nothing here
raises into the request: an error is logged on the ``aiotrace`` logger.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.context import (  # the keys is_http_instrumentation_enabled() reads
    _SUPPRESS_HTTP_INSTRUMENTATION_KEY,
    _SUPPRESS_INSTRUMENTATION_KEY,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from yarl import URL

from .._record.phases import PHASES, phase_values
from .._record.redact import DEFAULT_REDACTION, Redaction, without_credentials
from .._trace.clock import now as _now
from .._trace.clock import wall_time
from .._trace.hooks import ClientTrace, log
from .._version import __version__
from .decision import Decider
from .metrics import SCHEMA_URL, RequestMetrics, error_type

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span

    from .._trace.events import ConnInfo
    from .._trace.hop import HopState
    from .._trace.request import RequestState

__all__ = ["PHASE_MODES", "OTelTrace"]

PHASE_MODES = ("attributes", "spans")

_PHASE_KEYS = tuple(f"aiotrace.{name}_ms" for name in PHASES)
_PHASE_SPAN_ATTRIBUTES = tuple({"aiotrace.phase": name} for name in PHASES)
# The methods the semantic conventions know; any other is reported as _OTHER.
_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)

_URL_CACHE = 1024  # URLs whose start attributes are kept
_CONN_CACHE = 1024  # connections whose attributes are kept (ids only grow: oldest dropped)


# perf_counter seconds -> epoch nanoseconds, exact to the nanosecond: the offset is added as
# an integer (an epoch time in float nanoseconds has a resolution of 256 ns).
_OFFSET_NS = int(wall_time(0.0) * 1e9)


def _ns(perf: float) -> int:
    return int(perf * 1e9) + _OFFSET_NS


def _suppressed(ctx: otel_context.Context) -> bool:
    """``not is_http_instrumentation_enabled()`` (opentelemetry-instrumentation: how exporters
    keep their own requests out of traces), read from a context already in hand: the same
    three keys, one context lookup instead of three."""
    return bool(
        ctx.get(_SUPPRESS_HTTP_INSTRUMENTATION_KEY)
        or ctx.get(_SUPPRESS_INSTRUMENTATION_KEY)
        or ctx.get("suppress_instrumentation")
    )


def _parsed(url: Any) -> URL:
    """The caller's URL as a ``yarl.URL`` (one aiohttp rejects reads as an empty URL: aiohttp
    reports the error)."""
    if isinstance(url, URL):
        return url
    try:
        return URL(url)
    except (TypeError, ValueError):
        return URL()


def _connection_attributes(info: ConnInfo) -> dict[str, Any]:
    attrs: dict[str, Any] = {"aiotrace.connection.id": info.id}
    remote = info.remote_addr
    if remote:
        host, colon, port = remote.rpartition(":")
        if colon and port.isdigit():
            attrs["network.peer.address"] = host.strip("[]")
            attrs["network.peer.port"] = int(port)
        else:  # a Unix socket: its path
            attrs["network.peer.address"] = remote
            attrs["network.transport"] = "unix"
    if info.tls is not None and info.tls.version:
        attrs["tls.protocol.version"] = info.tls.version
    return attrs


class _Start:
    """What a request's span starts with, per method and URL (kept: a service calls the
    same few)."""

    __slots__ = ("attributes", "host", "method", "name", "port")

    def __init__(self, method: str, url: Any, redaction: Redaction) -> None:
        known = method in _METHODS
        self.method = method if known else "_OTHER"
        self.name = method if known else "HTTP"
        self.host: str = url.host or ""
        self.port: int | None = url.port
        attrs: dict[str, Any] = {
            "http.request.method": self.method,
            "url.full": redaction.url(url) or "",
            "server.address": self.host,
        }
        if not known:
            attrs["http.request.method_original"] = method
        if self.port is not None:
            attrs["server.port"] = self.port
        self.attributes = attrs


class _Flight:
    """One request's OTel state, from its start to its end (``RequestState.observer_data``)."""

    __slots__ = ("ctx", "hop_spans", "parent", "recording", "span", "start", "version")

    def __init__(
        self, parent: otel_context.Context, span: Span, start: _Start, recording: bool
    ) -> None:
        self.parent = parent
        self.span = span
        self.start = start
        # span.is_recording(), asked once: it holds until the span ends, in _finish.
        self.recording = recording
        self.ctx: otel_context.Context | None = None  # the request span's context
        self.hop_spans: dict[HopState, Span] | None = None  # started as their requests went
        self.version: Any = None  # the HTTP version the last round trip was sent with


class OTelTrace:
    """Turns traced requests into OpenTelemetry spans and metrics; ``.trace`` is the
    ClientTrace to use.

    ``propagate`` injects the trace context into each round trip's request (through the
    global propagator); ``phases="spans"`` adds a child span per phase, ``"attributes"``
    only puts the phase timings on the round trip's span.
    """

    def __init__(
        self,
        *,
        tracer_provider: otel_trace.TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagate: bool = True,
        phases: str = "attributes",
        redaction: Redaction = DEFAULT_REDACTION,
    ) -> None:
        if phases not in PHASE_MODES:
            raise ValueError(f"phases= takes 'attributes' or 'spans', not {phases!r}")
        self._tracer = otel_trace.get_tracer(
            "aiotrace", __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        # Asks the SDK tracer's sampler at the boundary itself (see decision.py); None for
        # another API implementation, or where start_span alone is exact and cheaper.
        self._decider = Decider.of(self._tracer)
        self.metrics = RequestMetrics(meter_provider)
        self._redaction = redaction
        self._phase_spans = phases == "spans"
        self.propagate = propagate
        # Observer protocol (see ClientTrace._observers).
        self.on_start = self.request_started
        self.on_finish = self.request_finished
        self.on_send = self.sending if propagate else None
        # A request the sampler dropped is only counted in the duration metric: with no
        # meter (a no-op provider) there is nothing to count, and the boundary need not wrap
        # the request to time it (what an idle session costs instead of ~10k more).
        self.on_unsampled = self.count_unsampled if self.metrics.enabled else None
        # What ``sample`` decided, for ``at_boundary`` a moment later in the same call (per
        # thread: each thread's event loop has its own boundary calls).
        self._decided = threading.local()
        self.trace = ClientTrace(sample=self.sample, _observers=(self,))
        self._starts: dict[Any, _Start] = {}
        self._conn_attributes: dict[int, dict[str, Any]] = {}

    # -- the request starts: the sampler decides --------------------------------------------

    def _start_for(self, method: str, url: Any) -> _Start:
        """The span's start for ``method`` and ``url`` as the caller gave it (cached)."""
        key = (method, url)
        cache = self._starts
        try:
            hit = cache.get(key)
        except TypeError:  # an unhashable URL-like object: not cached
            return _Start(method, _parsed(url), self._redaction)
        if hit is None:
            hit = _Start(method, _parsed(url), self._redaction)
            if len(cache) >= _URL_CACHE:
                cache.clear()
            cache[key] = hit
        return hit

    def _begin(self, method: str, url: Any, perf: float) -> _Flight | None:
        """Start the request's span, the tracer provider's sampler deciding (``None``:
        instrumentation suppressed here, as exporters do for their own requests)."""
        parent = otel_context.get_current()
        if _suppressed(parent):
            return None
        start = self._start_for(method, url)
        decider = self._decider
        if decider is not None:
            current = otel_trace.get_current_span(parent)
            dropped = decider.dropped(parent, current, start.name, start.attributes)
            if dropped is not None:  # its unsampled context goes on, and no span is made
                flight = _Flight(parent, dropped, start, False)
                if dropped is current:  # inside an unsampled trace: the parent's own
                    flight.ctx = parent
                return flight
        try:
            span = self._tracer.start_span(
                start.name,
                context=parent,
                kind=SpanKind.CLIENT,
                attributes=start.attributes,
                start_time=_ns(perf),
            )
        except BaseException:
            if decider is not None:
                decider.forget()
            raise
        return _Flight(parent, span, start, span.is_recording())

    def sample(self, method: str, url: Any) -> bool:
        """The ClientTrace's sampler, asked at the request boundary: start the request's span
        and say whether it records; ``at_boundary`` takes the span right after."""
        try:
            flight = self._begin(method.upper(), url, _now())
        except Exception:
            log.exception("aiotrace: the OTel span could not be started; the request goes on")
            flight = None
        self._decided.flight = flight
        return flight is not None and flight.recording

    def at_boundary(self, chosen: ClientTrace | None, kw: dict[str, Any]) -> _Flight | None:
        """Right after ``sample``, at the boundary: a sampled request's span goes to its
        state (``observer_data``); an unsampled one's context goes into its headers now
        (it runs untraced: no round trip will ask)."""
        decided = self._decided
        flight: _Flight | None = getattr(decided, "flight", None)  # None in a thread new to it
        if flight is None:
            return None
        decided.flight = None
        trace = self.trace
        if chosen is not None and (chosen is trace or trace in chosen._parts):
            return flight
        if self.propagate:
            try:
                headers = CIMultiDict(kw.get("headers") or ())  # a copy: the caller's stays
                ctx = flight.ctx or otel_trace.set_span_in_context(flight.span, flight.parent)
                propagate.get_global_textmap().inject(headers, ctx)
                kw["headers"] = headers
            except Exception:
                log.exception("aiotrace: the trace context could not be injected")
        return None

    def count_unsampled(
        self,
        method: str,
        url: Any,
        status: int | None,
        err: BaseException | None,
        t0: float,
        t1: float,
    ) -> None:
        """A request the sampler dropped, as the boundary saw it end: its duration metric."""
        if not self.metrics.enabled:
            return
        try:
            if not _suppressed(otel_context.get_current()):
                start = self._start_for(method.upper(), url)
                self.metrics.request(
                    t1 - t0, start.method, start.host, start.port, status, error_type(err, status)
                )
        except Exception:
            log.exception("aiotrace: an OTel metric could not be recorded")

    def request_started(self, state: RequestState) -> None:
        """``on_start``: nothing if the boundary's sampler started the span; else (a session
        traced through aiohttp's signals) start it here, the sampler deciding now."""
        if state.observer_data is not None:
            return
        try:
            state.observer_data = self._begin(state.method, state._url, state.t_start)
        except Exception:
            log.exception("aiotrace: the OTel span could not be started; the request goes on")

    # -- each round trip is sent: propagation -------------------------------------------------

    def sending(self, state: RequestState, headers: Any, version: Any) -> None:
        """Inject the context of the span standing for this round trip (``on_send``)."""
        flight: _Flight | None = state.observer_data
        if flight is None:
            return
        try:
            if version is not None:
                flight.version = version
            ctx = flight.ctx
            if ctx is None:
                ctx = flight.ctx = otel_trace.set_span_in_context(flight.span, flight.parent)
            hop = state.hop
            if hop is not None and (hop.index or hop.attempt) and flight.recording:
                span = self._tracer.start_span(
                    _hop_name(hop),
                    context=ctx,
                    kind=SpanKind.CLIENT,
                    start_time=_ns(hop.t_get_conn),
                )
                if flight.hop_spans is None:
                    flight.hop_spans = {}
                flight.hop_spans[hop] = span
                ctx = otel_trace.set_span_in_context(span, ctx)
            # The global propagator (what propagate.inject calls, one frame fewer).
            propagate.get_global_textmap().inject(headers, ctx)
        except Exception:
            log.exception("aiotrace: the trace context could not be injected; the request goes on")

    # -- the request is done: attributes, spans and metrics -----------------------------------

    def request_finished(self, state: RequestState) -> None:
        """Record the request's metrics and end its spans (``on_finish``)."""
        flight: _Flight | None = state.observer_data
        if flight is None:
            return
        state.observer_data = None
        try:
            self._finish(state, flight)
        except Exception:
            log.exception("aiotrace: the OTel export of a request failed")

    def _finish(self, state: RequestState, flight: _Flight) -> None:
        start = flight.start
        status = state.status
        err = state.err
        etype = error_type(err, status)
        t_end = state.t_end or state.t_done or state.t_start
        metrics = self.metrics
        if metrics.enabled:
            metrics.request(
                t_end - state.t_start, start.method, start.host, start.port, status, etype
            )
        span = flight.span
        recording = flight.recording
        if not (recording or metrics.enabled):
            return
        hops = state.hops
        phases = [phase_values(hop)[0] for hop in hops]
        if metrics.enabled:
            for values in phases:
                metrics.phases(values, start.method, start.host, start.port)
        if not recording:
            return
        single = len(hops) == 1
        attrs: dict[str, Any] = (
            self._hop_attributes(hops[0], phases[0], flight)
            if single
            else {"aiotrace.hops": len(hops)}
        )
        final = state.final_url
        if final is not None and not single:
            attrs["server.address"] = final.host or ""
            if final.port is not None:
                attrs["server.port"] = final.port
        if status is not None:
            attrs["http.response.status_code"] = status
        if etype is not None:
            attrs["error.type"] = etype
        span.set_attributes(attrs)
        if err is not None:
            _failed(span, err)
        elif etype is not None:
            span.set_status(Status(StatusCode.ERROR))
        if single:
            if self._phase_spans:
                ctx = flight.ctx or otel_trace.set_span_in_context(span, flight.parent)
                self._phase_children(hops[0], phases[0], ctx)
        elif hops:
            ctx = flight.ctx or otel_trace.set_span_in_context(span, flight.parent)
            started = flight.hop_spans or {}
            for resent, (hop, values) in enumerate(zip(hops, phases, strict=True)):
                self._hop_span(hop, values, resent, ctx, started.get(hop), flight)
        span.end(end_time=_ns(state.t_done or t_end))

    def _hop_attributes(
        self, hop: HopState, values: list[float | None], flight: _Flight
    ) -> dict[str, Any]:
        """What a round trip adds: phases, reuse (or why not), peer, protocol, TLS version."""
        attrs: dict[str, Any] = {"aiotrace.reused": hop.reused}
        if hop.reused:
            attrs["aiotrace.idle_ms"] = hop.idle_time * 1000.0
        elif hop.reuse_miss is not None:
            attrs["aiotrace.reuse_miss"] = hop.reuse_miss
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
        if hop.t_got_conn is not None:
            version = flight.version
            attrs["network.protocol.version"] = (
                "1.1" if version is None else f"{version[0]}.{version[1]}"
            )
        return attrs

    def _hop_span(
        self,
        hop: HopState,
        values: list[float | None],
        resent: int,
        ctx: otel_context.Context,
        span: Span | None,
        flight: _Flight,
    ) -> None:
        attrs = self._hop_attributes(hop, values, flight)
        attrs["http.request.method"] = flight.start.method
        attrs["url.full"] = self._redaction.url(hop.url) or ""
        attrs["server.address"] = hop.url.host or ""
        if hop.url.port is not None:
            attrs["server.port"] = hop.url.port
        attrs["aiotrace.hop"] = hop.index
        attrs["aiotrace.attempt"] = hop.attempt
        if resent:
            attrs["http.request.resend_count"] = resent
        if hop.status is not None:
            attrs["http.response.status_code"] = hop.status
        etype = error_type(hop.err, hop.status)
        if etype is not None:
            attrs["error.type"] = etype
        if span is None:  # the first round trip: its span is made only now
            span = self._tracer.start_span(
                _hop_name(hop),
                context=ctx,
                kind=SpanKind.CLIENT,
                attributes=attrs,
                start_time=_ns(hop.t_get_conn),
            )
        else:
            span.set_attributes(attrs)
        if hop.err is not None:
            _failed(span, hop.err)
        elif etype is not None:
            span.set_status(Status(StatusCode.ERROR))
        if self._phase_spans:
            self._phase_children(hop, values, otel_trace.set_span_in_context(span, ctx))
        span.end(end_time=_ns(hop.t_body_done or hop.t_end or hop.t_get_conn))

    def _phase_children(
        self, hop: HopState, values: list[float | None], ctx: otel_context.Context
    ) -> None:
        """One INTERNAL span per phase the round trip took, end to end from its start."""
        start_span = self._tracer.start_span
        at = hop.t_get_conn
        last = hop.t_body_done or hop.t_end or at  # where the round trip's span ends
        for i, ms in enumerate(values):
            if ms is None:
                continue
            end = min(at + ms / 1000.0, last) if ms else at
            start_span(
                PHASES[i],
                context=ctx,
                kind=SpanKind.INTERNAL,
                attributes=_PHASE_SPAN_ATTRIBUTES[i],
                start_time=_ns(at),
            ).end(end_time=_ns(end))
            at = end


def _failed(span: Span, err: BaseException) -> None:
    """ERROR status and the semantic conventions' exception event, with no URL credentials
    in either (aiohttp's messages quote a proxy's URL whole). Not ``record_exception``: it
    would put ``str(err)`` as it is, and format the traceback on every failure."""
    kind = type(err).__qualname__
    message = without_credentials(str(err))
    span.add_event("exception", {"exception.type": kind, "exception.message": message})
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}" if message else kind))


def _hop_name(hop: HopState) -> str:
    return f"{hop.method} hop {hop.index}" + (f" attempt {hop.attempt}" if hop.attempt else "")
