"""The OpenTelemetry spans: one CLIENT span per request, a child per round trip when there are
several, phases as attributes or as child spans; names, kinds, attributes and times checked
against the Recorder's timeline of the same requests."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.resolver import AsyncResolver
from aiohttp.test_utils import TestServer
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from otel_spans import (
    Memory,
    assert_nested_and_disjoint,
    attrs,
    end,
    memory,
    recording_app,
    start,
    wall_ns,
)
from peers import DNSServer, RawServer, connect_proxy, stale_then_fresh

import aiotrace
from aiotrace.otel import OTelTrace

PHASES = ("blocked", "dns", "connect", "tls", "send", "wait", "receive")
TIMEOUT = aiohttp.ClientTimeout(total=10)
ServerFactory = Callable[..., Awaitable[TestServer]]
RawPeer = Callable[..., Awaitable[RawServer]]


@pytest.fixture
def mem() -> Memory:
    """SDK providers exporting to memory (built outside the loop)."""
    return memory()


@pytest.fixture
async def server(aiohttp_server: ServerFactory) -> TestServer:
    """The recording app (``/start`` redirects to ``/end``; ``/ok``, ``/missing``, ``/slow``)."""
    return await aiohttp_server(recording_app([]))


@pytest.fixture
async def tls_server(aiohttp_server: ServerFactory, server_ssl_ctx: ssl.SSLContext) -> TestServer:
    """The recording app over TLS (certificate for a.test)."""
    return await aiohttp_server(recording_app([]), ssl=server_ssl_ctx)


@pytest.fixture
def make_session(
    zone: DNSServer, dns_resolver: AsyncResolver, client_ssl_ctx: ssl.SSLContext
) -> Callable[..., aiohttp.ClientSession]:
    """``make_session(trace)``: a traced session on the test DNS, trusting the test CA."""

    def make(trace: Any) -> aiohttp.ClientSession:
        connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
        return aiotrace.traced_session(connector=connector, trace=trace)

    return make


@pytest.fixture
async def otel_session(
    make_session: Callable[..., aiohttp.ClientSession], mem: Memory
) -> AsyncIterator[aiohttp.ClientSession]:
    """A traced session exporting to ``mem`` (phases as attributes)."""
    otel = OTelTrace(tracer_provider=mem.tracer_provider, meter_provider=mem.meter_provider)
    async with make_session(otel) as session:
        yield session


async def fetch(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url, timeout=TIMEOUT) as resp:
        await resp.read()
        return resp.status


def assert_round_trip(span: ReadableSpan, hop: aiotrace.Hop, *, own_start: bool = True) -> None:
    """The span carries the hop's phases exactly, its connection, and (``own_start``: a hop
    span) starts when the hop did and lasts as long."""
    a = attrs(span)
    for phase in PHASES:
        value = getattr(hop.timings, phase)
        if value is None:
            assert f"aiotrace.{phase}_ms" not in a, (phase, a)
        else:
            assert a[f"aiotrace.{phase}_ms"] == pytest.approx(value, rel=1e-9, abs=1e-9), phase
    assert a["aiotrace.reused"] is hop.reused
    if hop.reuse_miss is not None:
        assert a["aiotrace.reuse_miss"] == hop.reuse_miss
    if hop.connection is not None and hop.connection.remote_addr:
        host, _, port = hop.connection.remote_addr.rpartition(":")
        assert (a["network.peer.address"], a["network.peer.port"]) == (host, int(port))
        assert a["network.protocol.version"] == "1.1"
    if own_start:
        assert abs(start(span) - wall_ns(hop.started_at)) <= 2_000
        assert abs((end(span) - start(span)) / 1e6 - hop.timings.total) <= 0.002


def assert_request_start(span: ReadableSpan, timeline: aiotrace.RequestTimeline) -> None:
    """The request span starts when the boundary asked the sampler: just before the request
    state (the Recorder's start) was made, by the sampler's own time (generous: loaded CI)."""
    assert 0 <= wall_ns(timeline.started_at) - start(span) <= 50_000_000


# --------------------------------------------------------------------------------------------
# The span tree, request by request
# --------------------------------------------------------------------------------------------


async def test_fresh_then_reused_request_are_single_spans_matching_the_timeline(
    otel_session: aiohttp.ClientSession, server: TestServer, mem: Memory
) -> None:
    """A request on a new connection and one on the pooled connection are one CLIENT span
    each, under the caller's span, with the semantic conventions' attributes and the hop's
    phases, reuse and peer exactly as the Recorder has them, starting when the request did."""
    url = f"http://127.0.0.1:{server.port}/ok"
    tracer = mem.tracer_provider.get_tracer("test")
    async with aiotrace.Recorder() as rec:
        with tracer.start_as_current_span("caller") as caller:
            assert await fetch(otel_session, url) == 200
            assert await fetch(otel_session, url) == 200
    tree = mem.tree()
    (caller_span,) = tree.roots("caller")
    fresh, reused = tree.children(caller_span)
    assert caller_span.context.span_id == caller.get_span_context().span_id
    for span, timeline in zip((fresh, reused), rec.requests, strict=True):
        assert (span.name, span.kind) == ("GET", SpanKind.CLIENT)
        assert span.status.status_code is StatusCode.UNSET
        assert tree.children(span) == []
        a = attrs(span)
        assert a["http.request.method"] == "GET" and a["url.full"] == url
        assert (a["server.address"], a["server.port"]) == ("127.0.0.1", server.port)
        assert a["http.response.status_code"] == 200
        assert "error.type" not in a and "http.request.resend_count" not in a
        (hop,) = timeline.hops
        assert_round_trip(span, hop, own_start=False)
        assert_request_start(span, timeline)
        assert start(span) <= wall_ns(hop.started_at) + 2_000
        assert end(span) >= wall_ns(hop.started_at + hop.timings.total / 1000) - 2_000
    assert attrs(fresh)["aiotrace.reuse_miss"] == "first" and "aiotrace.connect_ms" in attrs(fresh)
    assert attrs(reused)["aiotrace.reused"] is True and "aiotrace.connect_ms" not in attrs(reused)
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


async def test_redirect_is_a_request_span_with_a_child_per_hop(
    otel_session: aiohttp.ClientSession, server: TestServer, mem: Memory
) -> None:
    """A redirected request is a CLIENT span with two CLIENT children, one per round trip,
    each starting and lasting as its Recorder hop, the second with http.request.resend_count."""
    url = f"http://127.0.0.1:{server.port}/start?token=secret"
    async with aiotrace.Recorder() as rec:
        assert await fetch(otel_session, url) == 200
    tree = mem.tree()
    (request,) = tree.roots()
    (timeline,) = rec.requests
    a = attrs(request)
    assert (request.name, request.kind, a["aiotrace.hops"]) == ("GET", SpanKind.CLIENT, 2)
    assert a["url.full"] == f"http://127.0.0.1:{server.port}/start?token=REDACTED"
    assert a["http.response.status_code"] == 200 and "error.type" not in a
    hops = tree.children(request)
    assert [(s.name, s.kind) for s in hops] == [
        ("GET hop 0", SpanKind.CLIENT),
        ("GET hop 1", SpanKind.CLIENT),
    ]
    assert_nested_and_disjoint(request, hops)
    for span, hop in zip(hops, timeline.hops, strict=True):
        assert_round_trip(span, hop)
    first, second = (attrs(s) for s in hops)
    assert first["http.response.status_code"] == 302 and "http.request.resend_count" not in first
    assert second["http.response.status_code"] == 200 and second["http.request.resend_count"] == 1
    assert second["url.full"] == f"http://127.0.0.1:{server.port}/end"
    assert (first["aiotrace.hop"], second["aiotrace.hop"]) == (0, 1)
    assert_request_start(request, timeline)


async def test_retry_on_a_stale_connection_is_a_child_per_attempt(
    otel_session: aiohttp.ClientSession, raw_peer: RawPeer, mem: Memory
) -> None:
    """aiohttp's silent retry is a second child span (attempt 1, resend count 1, a new
    connection) after the failed attempt's, which carries its error; the request succeeds."""
    peer = await raw_peer(stale_then_fresh([]))
    url = f"http://127.0.0.1:{peer.port}/"
    assert await fetch(otel_session, url) == 200
    async with aiotrace.Recorder() as rec:
        assert await fetch(otel_session, url) == 200
    tree = mem.tree()
    _, request = tree.roots()
    (timeline,) = rec.requests
    assert attrs(request)["aiotrace.hops"] == 2 and "error.type" not in attrs(request)
    assert request.status.status_code is StatusCode.UNSET
    stale, fresh = tree.children(request)
    assert (stale.name, fresh.name) == ("GET hop 0", "GET hop 0 attempt 1")
    assert_nested_and_disjoint(request, [stale, fresh])
    for span, hop in zip((stale, fresh), timeline.hops, strict=True):
        assert_round_trip(span, hop)
    assert attrs(stale)["error.type"] == "ServerDisconnectedError"
    assert stale.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in attrs(stale)
    a = attrs(fresh)
    assert a["http.request.resend_count"] == 1 and a["aiotrace.attempt"] == 1
    assert a["aiotrace.reuse_miss"] == "stale_retry" and a["http.response.status_code"] == 200


async def silent_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):
        pass


@pytest.mark.parametrize("failure", ["dns", "refused", "tls"])
async def test_failed_request_is_an_error_span_with_the_phases_it_reached(
    failure: str,
    otel_session: aiohttp.ClientSession,
    mem: Memory,
    zone: DNSServer,
    refused_port: int,
    raw_peer: RawPeer,
    wrong_host_ssl_ctx: ssl.SSLContext,
) -> None:
    """A request failing in DNS (NXDOMAIN), in connect (refused) or in TLS (a certificate for
    another name) is one CLIENT span with ERROR status, error.type the exception's class, an
    exception event, and the phases it reached as the Recorder has them."""
    if failure == "dns":
        zone.nxdomain("gone.test")
        url, error, phase = "http://gone.test/", aiohttp.ClientConnectorDNSError, "dns"
    elif failure == "refused":
        url, error, phase = (
            f"http://127.0.0.1:{refused_port}/",
            aiohttp.ClientConnectorError,
            "connect",
        )
    else:
        peer = await raw_peer(silent_reader, tls=wrong_host_ssl_ctx)
        url, error, phase = (
            f"https://a.test:{peer.port}/",
            aiohttp.ClientConnectorCertificateError,
            "tls",
        )
    async with aiotrace.Recorder() as rec:
        with pytest.raises(error) as caught:
            await fetch(otel_session, url)
    (span,) = mem.tree().roots()
    (timeline,) = rec.requests
    (hop,) = timeline.hops
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a["error.type"] == type(caught.value).__qualname__
    assert "http.response.status_code" not in a
    assert f"aiotrace.{phase}_ms" in a and "aiotrace.wait_ms" not in a
    assert_round_trip(span, hop, own_start=False)
    assert [e.name for e in span.events] == ["exception"]
    assert_request_start(span, timeline)


async def test_cancelled_request_ends_its_span_when_cancelled(
    otel_session: aiohttp.ClientSession, server: TestServer, mem: Memory
) -> None:
    """A request cancelled 150 ms into a 300 ms wait is an error span (CancelledError) that
    ends at the cancellation, its wait phase cut there, as in the Recorder."""
    url = f"http://127.0.0.1:{server.port}/slow"
    async with aiotrace.Recorder() as rec:
        task = asyncio.create_task(fetch(otel_session, url))
        await asyncio.sleep(0.15)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (span,) = mem.tree().roots()
    (timeline,) = rec.requests
    a = attrs(span)
    assert a["error.type"] == "CancelledError" and span.status.status_code is StatusCode.ERROR
    assert 0.12 <= (end(span) - start(span)) / 1e9 <= 0.28
    assert_round_trip(span, timeline.hops[0], own_start=False)
    assert "aiotrace.wait_ms" in a and "aiotrace.receive_ms" not in a


async def test_error_status_marks_the_span(
    otel_session: aiohttp.ClientSession, server: TestServer, mem: Memory
) -> None:
    """A 404 is an error on a client span: status ERROR, error.type "404", status code 404."""
    assert await fetch(otel_session, f"http://127.0.0.1:{server.port}/missing") == 404
    (span,) = mem.tree().roots()
    assert attrs(span)["http.response.status_code"] == 404 and attrs(span)["error.type"] == "404"
    assert span.status.status_code is StatusCode.ERROR and span.events == ()


# --------------------------------------------------------------------------------------------
# Phases as spans
# --------------------------------------------------------------------------------------------


async def test_phase_spans_nest_in_their_round_trip_and_do_not_overlap(
    make_session: Callable[..., aiohttp.ClientSession],
    tls_server: TestServer,
    mem: Memory,
) -> None:
    """With phases="spans", each round trip's span has an INTERNAL child per phase it took,
    in order, inside it, end to end, each as long as the Recorder's phase: a new HTTPS
    connection (dns, connect, tls, send, wait, receive), a pooled one (send, wait, receive),
    and each hop of a redirect."""
    otel = OTelTrace(tracer_provider=mem.tracer_provider, phases="spans")
    base = f"https://a.test:{tls_server.port}"
    async with make_session(otel) as session, aiotrace.Recorder() as rec:
        for path in ("/ok", "/ok", "/start"):
            assert await fetch(session, base + path) == 200
    tree = mem.tree()
    fresh, pooled, redirected = tree.roots()
    fresh_t, pooled_t, redirected_t = rec.requests
    pairs = [(fresh, fresh_t.hops[0]), (pooled, pooled_t.hops[0])]
    pairs += zip(tree.children(redirected), redirected_t.hops, strict=True)
    expected = [
        ["dns", "connect", "tls", "send", "wait", "receive"],
        ["send", "wait", "receive"],
        ["send", "wait", "receive"],
        ["send", "wait", "receive"],
    ]
    for (span, hop), names in zip(pairs, expected, strict=True):
        phases = tree.children(span)
        assert [p.name for p in phases] == names
        assert all(p.kind is SpanKind.INTERNAL for p in phases)
        assert [attrs(p)["aiotrace.phase"] for p in phases] == names
        assert_nested_and_disjoint(span, phases)
        assert abs(start(phases[0]) - wall_ns(hop.started_at)) <= 2_000
        for p in phases:
            assert abs((end(p) - start(p)) / 1e6 - getattr(hop.timings, p.name)) <= 0.002
        assert_round_trip(span, hop, own_start=span is not fresh and span is not pooled)
    assert [s.name for s in tree.children(redirected)] == ["GET hop 0", "GET hop 1"]


def test_phases_takes_attributes_or_spans() -> None:
    """Any other phases= is a one-line ValueError naming what it takes."""
    with pytest.raises(ValueError, match=r"phases= takes 'attributes' or 'spans', not 'all'"):
        OTelTrace(phases="all")


async def test_span_export_failure_never_reaches_the_request(
    make_session: Callable[..., aiohttp.ClientSession],
    server: TestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tracer provider whose tracer raises leaves the request untouched: the error is
    logged on the aiotrace logger."""

    class Broken(otel_trace.TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> otel_trace.Tracer:
            return BrokenTracer()

    class BrokenTracer(otel_trace.NoOpTracer):
        def start_span(self, *args: Any, **kwargs: Any) -> otel_trace.Span:
            raise RuntimeError("broken tracer")

    otel = OTelTrace(tracer_provider=Broken())
    async with make_session(otel) as session:
        assert await fetch(session, f"http://127.0.0.1:{server.port}/ok") == 200
    assert "the OTel span could not be started" in caplog.text


async def test_suppressed_instrumentation_makes_no_span_and_sends_no_header(
    make_session: Callable[..., aiohttp.ClientSession],
    aiohttp_server: ServerFactory,
    mem: Memory,
) -> None:
    """Inside suppress_http_instrumentation() (how exporters keep their own requests out of
    traces) a request makes no span and carries no traceparent."""
    from opentelemetry.instrumentation.utils import suppress_http_instrumentation

    seen: list[dict[str, Any]] = []
    srv = await aiohttp_server(recording_app(seen))
    otel = OTelTrace(tracer_provider=mem.tracer_provider)
    async with make_session(otel) as session:
        with suppress_http_instrumentation():
            assert await fetch(session, f"http://127.0.0.1:{srv.port}/ok") == 200
    assert mem.tree().spans == () and seen[0]["traceparent"] == []


async def test_a_proxy_error_span_names_the_proxy_without_credentials(
    raw_peer: RawPeer, mem: Memory
) -> None:
    """A 407 from a proxy whose URL carries credentials: the span's error status and its
    exception event keep aiohttp's message but not the password it quotes."""
    refusing = await raw_peer(
        connect_proxy(
            "reply",
            reply=b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
        )
    )
    otel = OTelTrace(tracer_provider=mem.tracer_provider)
    async with aiotrace.traced_session(trace=otel) as session:
        with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
            async with session.get(
                "https://127.0.0.1:1/", proxy=f"http://user:hunter2@127.0.0.1:{refusing.port}"
            ):
                pass
    assert "hunter2" in str(refused.value)  # aiohttp's own message quotes the proxy URL whole
    (span,) = mem.tree().spans
    assert span.status.status_code is StatusCode.ERROR
    description = span.status.description or ""
    assert "407" in description and "hunter2" not in description and "user@" not in description
    (event,) = span.events
    message = str((event.attributes or {})["exception.message"])
    assert "407" in message and "hunter2" not in message
