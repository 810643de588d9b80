"""The OpenTelemetry export: spans per request and per hop, parented, redacted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from peers import RawServer, connect_proxy

import aiotrace
from aiotrace.otel import OTelTrace


@pytest.fixture
def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """An SDK provider exporting to memory (built outside the loop: it starts threads)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
async def server(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    """``/start`` redirects to ``/end``; ``/end`` and ``/ok`` answer 200, ``/missing`` 404."""

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/start":
            raise web.HTTPFound("/end")
        return web.Response(text="ok", status=404 if request.path == "/missing" else 200)

    app = web.Application()
    for path in ("/start", "/end", "/ok", "/missing"):
        app.router.add_get(path, handler)
    return await aiohttp_server(app)


async def test_request_span_with_a_child_per_hop(
    server: TestServer,
    refused_port: int,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A redirected request is one CLIENT span under the caller's span, with a child per hop."""
    tracer_provider, exporter = provider
    otel = OTelTrace(tracer_provider=tracer_provider)
    tracer = tracer_provider.get_tracer("test")
    async with aiotrace.traced_session(trace=otel) as session:
        with tracer.start_as_current_span("caller") as caller:
            url = f"http://127.0.0.1:{server.port}/start?token=secret"
            async with session.get(url) as resp:
                await resp.read()
            try:
                async with session.get(f"http://127.0.0.1:{refused_port}/"):
                    pass
            except OSError:
                pass
    request_spans = [s for s in exporter.get_finished_spans() if s.name == "GET"]
    assert len(request_spans) == 2
    ok, failed = sorted(request_spans, key=lambda s: s.start_time or 0)
    assert ok.kind is SpanKind.CLIENT
    assert ok.parent is not None and ok.parent.span_id == caller.get_span_context().span_id
    assert ok.attributes is not None
    assert ok.attributes["url.full"] == f"http://127.0.0.1:{server.port}/start?token=REDACTED"
    assert ok.attributes["http.response.status_code"] == 200
    children = {
        s.name: s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == ok.context.span_id
    }
    assert set(children) == {"GET hop 0", "GET hop 1"}
    hop0, hop1 = children["GET hop 0"], children["GET hop 1"]
    assert hop0.parent is not None and hop0.parent.span_id == ok.context.span_id
    assert hop0.attributes is not None and hop1.attributes is not None
    assert hop0.attributes["http.response.status_code"] == 302
    assert hop0.attributes["aiotrace.reuse_miss"] == "first"
    assert hop1.attributes["aiotrace.reused"] is True
    assert "aiotrace.wait_ms" in hop1.attributes
    assert ok.start_time is not None and hop0.start_time is not None
    assert ok.start_time <= hop0.start_time <= (hop1.start_time or 0) <= (ok.end_time or 0)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "ClientConnectorError"
    assert failed.attributes["aiotrace.reused"] is False  # one round trip: no child span
    assert "aiotrace.connect_ms" in failed.attributes
    assert not [s for s in exporter.get_finished_spans() if s.parent == failed.context]
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


async def test_single_round_trip_is_one_span_with_its_details(
    server: TestServer,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A request with one round trip is a single span carrying the hop's phases, reuse and
    peer; a 4xx response marks it as an error with the status as ``error.type``."""
    tracer_provider, exporter = provider
    otel = OTelTrace(tracer_provider=tracer_provider)
    async with aiotrace.traced_session(trace=otel) as session:
        for path in ("/ok", "/missing"):
            async with session.get(f"http://127.0.0.1:{server.port}{path}") as resp:
                await resp.read()
    spans = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert [s.name for s in spans] == ["GET", "GET"]
    first, second = spans
    assert first.attributes is not None and second.attributes is not None
    a = dict(first.attributes)
    assert a["http.response.status_code"] == 200 and "error.type" not in a
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", server.port)
    assert (a["network.peer.address"], a["network.peer.port"]) == ("127.0.0.1", server.port)
    assert a["aiotrace.reused"] is False and a["aiotrace.reuse_miss"] == "first"
    assert all(f"aiotrace.{p}_ms" in a for p in ("connect", "send", "wait", "receive"))
    assert "aiotrace.hops" not in a and first.status.status_code is StatusCode.UNSET
    b = dict(second.attributes)
    assert b["aiotrace.reused"] is True and b["aiotrace.idle_ms"] >= 0.0
    assert b["aiotrace.connection.id"] == a["aiotrace.connection.id"]
    assert (a["url.full"], b["url.full"]) == (
        f"http://127.0.0.1:{server.port}/ok",
        f"http://127.0.0.1:{server.port}/missing",
    )
    assert b["http.response.status_code"] == 404 and b["error.type"] == "404"
    assert second.status.status_code is StatusCode.ERROR
    assert not [s for s in spans if s.parent is not None]


async def test_a_proxy_error_span_names_the_proxy_without_credentials(
    raw_peer: Callable[..., Awaitable[RawServer]],
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A 407 from a proxy whose URL carries credentials: the span's error status keeps
    aiohttp's message but not the password it quotes."""
    tracer_provider, exporter = provider
    refusing = await raw_peer(
        connect_proxy(
            "reply",
            reply=b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
        )
    )
    otel = OTelTrace(tracer_provider=tracer_provider)
    async with aiotrace.traced_session(trace=otel) as session:
        with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
            async with session.get(
                "https://127.0.0.1:1/", proxy=f"http://user:hunter2@127.0.0.1:{refusing.port}"
            ):
                pass
    assert "hunter2" in str(refused.value)  # aiohttp's own message quotes the proxy URL whole
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    description = span.status.description or ""
    assert "407" in description and "hunter2" not in description and "user@" not in description
