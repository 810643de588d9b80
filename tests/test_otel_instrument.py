"""``aiotrace.otel.instrument()``: every ``ClientSession`` built afterwards is traced, whoever
builds it; ``uninstrument()``; the official instrumentation beside it; the metrics."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint
from otel_spans import Memory, Traceparent, attrs, histogram_count, memory, points, recording_app

import aiotrace
import aiotrace.otel

TIMEOUT = aiohttp.ClientTimeout(total=10)
ServerFactory = Callable[..., Awaitable[TestServer]]
ORIGINAL_INIT = aiohttp.ClientSession.__dict__["__init__"]


# A library that knows nothing of aiotrace or OpenTelemetry.
async def library_get(url: str, **session_kw: Any) -> int:
    async with (
        aiohttp.ClientSession(**session_kw) as session,
        session.get(url, timeout=TIMEOUT) as resp,
    ):
        await resp.read()
        return resp.status


async def fetch(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url, timeout=TIMEOUT) as resp:
        await resp.read()
        return resp.status


@pytest.fixture
def mem() -> Memory:
    """SDK providers exporting to memory."""
    return memory()


@pytest.fixture
def instrumented(mem: Memory) -> Iterator[Memory]:
    """aiotrace.otel.instrument() with ``mem``'s providers, turned off afterwards."""
    aiotrace.otel.instrument(tracer_provider=mem.tracer_provider, meter_provider=mem.meter_provider)
    yield mem
    aiotrace.otel.uninstrument()
    assert aiohttp.ClientSession.__dict__["__init__"] is ORIGINAL_INIT


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    """What the recording app received."""
    return []


@pytest.fixture
async def server(aiohttp_server: ServerFactory, seen: list[dict[str, Any]]) -> TestServer:
    """The recording app."""
    return await aiohttp_server(recording_app(seen))


async def test_instrument_traces_a_session_built_by_code_unaware_of_it(
    server: TestServer, seen: list[dict[str, Any]], instrumented: Memory
) -> None:
    """A session a library builds with plain aiohttp gets the traced connector: its
    redirected request is a span with a child per hop, each hop's traceparent naming its span,
    and the request's connection details are there."""
    assert await library_get(f"http://127.0.0.1:{server.port}/start") == 200
    tree = instrumented.tree()
    (request,) = tree.roots()
    hop0, hop1 = tree.children(request)
    assert request.instrumentation_scope is not None
    assert request.instrumentation_scope.name == "aiotrace"
    assert attrs(hop0)["aiotrace.reuse_miss"] == "first" and "aiotrace.connect_ms" in attrs(hop0)
    assert attrs(hop1)["aiotrace.reused"] is True
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen]
    assert [t.parent_id for t in sent] == [request.context.span_id, hop1.context.span_id]


async def test_uninstrument_stops_new_and_instrumented_sessions(
    server: TestServer, seen: list[dict[str, Any]], mem: Memory
) -> None:
    """After uninstrument(), a session instrument() set up makes no span and sends no
    traceparent, and a new session is plain aiohttp again."""
    url = f"http://127.0.0.1:{server.port}/ok"
    aiotrace.otel.instrument(tracer_provider=mem.tracer_provider)
    try:
        session = aiohttp.ClientSession()
        assert isinstance(session.connector, aiotrace.TracingConnector)
        assert await fetch(session, url) == 200
    finally:
        aiotrace.otel.uninstrument()
    assert aiohttp.ClientSession.__dict__["__init__"] is ORIGINAL_INIT
    try:
        assert await fetch(session, url) == 200
    finally:
        await session.close()
    assert await library_get(url) == 200
    async with aiohttp.ClientSession() as plain:
        assert type(plain.connector) is aiohttp.TCPConnector
    assert len(mem.tree().spans) == 1
    assert [len(s["traceparent"]) for s in seen] == [1, 0, 0]


async def test_instrument_twice_is_instrument_once(
    server: TestServer, seen: list[dict[str, Any]], instrumented: Memory
) -> None:
    """A second instrument() changes nothing: one span and one traceparent per request."""
    aiotrace.otel.instrument(tracer_provider=instrumented.tracer_provider)
    assert await library_get(f"http://127.0.0.1:{server.port}/ok") == 200
    assert len(instrumented.tree().spans) == 1 and len(seen[0]["traceparent"]) == 1


async def test_a_plain_tcp_connector_of_the_caller_is_adopted(
    server: TestServer, instrumented: Memory
) -> None:
    """A session given its own unused TCPConnector keeps it, with its settings, made a
    TracingConnector in place: every hook, connection details included."""
    connector = aiohttp.TCPConnector(limit=3, keepalive_timeout=7)
    async with aiohttp.ClientSession(connector=connector) as session:
        assert session.connector is connector and type(connector) is aiotrace.TracingConnector
        assert (connector.limit, connector._keepalive_timeout) == (3, 7)
        assert await fetch(session, f"http://127.0.0.1:{server.port}/ok") == 200
    (span,) = instrumented.tree().roots()
    assert attrs(span)["network.peer.address"] == "127.0.0.1"
    assert "aiotrace.connect_ms" in attrs(span)


async def test_a_foreign_connector_falls_back_to_aiohttp_signals(
    server: TestServer, seen: list[dict[str, Any]], instrumented: Memory
) -> None:
    """A session with a connector aiotrace cannot adopt (a TCPConnector subclass) is traced
    through aiohttp's signals: a span per request with a child per hop, one traceparent per
    request (injected once, so both hops carry the request span's), and its TraceConfig is
    removed on uninstrument()."""

    class OwnConnector(aiohttp.TCPConnector):
        pass

    connector = OwnConnector()
    async with aiohttp.ClientSession(connector=connector) as session:
        assert type(session.connector) is OwnConnector
        assert len(session.trace_configs) == 1
        assert await fetch(session, f"http://127.0.0.1:{server.port}/start") == 200
        aiotrace.otel.uninstrument()
        assert session.trace_configs == []
        assert await fetch(session, f"http://127.0.0.1:{server.port}/ok") == 200
    tree = instrumented.tree()
    (request,) = tree.roots()
    assert [s.name for s in tree.children(request)] == ["GET hop 0", "GET hop 1"]
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen[:2]]
    assert {t.parent_id for t in sent} == {request.context.span_id}
    assert seen[2]["traceparent"] == []


async def test_a_used_shared_connector_falls_back_too(
    server: TestServer, instrumented: Memory
) -> None:
    """A plain TCPConnector that already holds a connection (shared with another session) is
    not changed: the new session is traced through signals."""
    url = f"http://127.0.0.1:{server.port}/ok"
    aiotrace.otel.uninstrument()
    connector = aiohttp.TCPConnector()
    async with aiohttp.ClientSession(connector=connector, connector_owner=False) as first:
        assert await fetch(first, url) == 200
    aiotrace.otel.instrument(tracer_provider=instrumented.tracer_provider)
    async with aiohttp.ClientSession(connector=connector) as second:
        assert type(connector) is aiohttp.TCPConnector and len(second.trace_configs) == 1
        assert await fetch(second, url) == 200
    (span,) = instrumented.tree().roots()
    assert attrs(span)["http.response.status_code"] == 200


async def test_traced_session_built_while_instrumented_composes(
    server: TestServer, seen: list[dict[str, Any]], instrumented: Memory
) -> None:
    """A traced_session with its own Recorder, built while instrumented, traces each request
    once for both: one timeline, one span, one traceparent."""
    rec = aiotrace.Recorder()
    async with aiotrace.traced_session(trace=rec) as session:
        assert await fetch(session, f"http://127.0.0.1:{server.port}/ok") == 200
    assert len(rec.requests) == 1 and len(instrumented.tree().spans) == 1
    assert len(seen[0]["traceparent"]) == 1


@pytest.fixture(params=["official-first", "aiotrace-first"])
def both(request: pytest.FixtureRequest, mem: Memory) -> Iterator[Memory]:
    """The official instrumentation and aiotrace's both on, in either order, turned off in
    reverse order."""
    official = AioHttpClientInstrumentor()
    steps = [
        lambda: official.instrument(
            tracer_provider=mem.tracer_provider, meter_provider=mem.meter_provider
        ),
        lambda: aiotrace.otel.instrument(
            tracer_provider=mem.tracer_provider, meter_provider=mem.meter_provider
        ),
    ]
    undo = [official.uninstrument, aiotrace.otel.uninstrument]
    if request.param == "aiotrace-first":
        steps.reverse()
        undo.reverse()
    for step in steps:
        step()
    yield mem
    for step in reversed(undo):
        step()
    assert aiohttp.ClientSession.__dict__["__init__"] is ORIGINAL_INIT


async def test_with_the_official_instrumentation_aiotrace_wins(
    server: TestServer, seen: list[dict[str, Any]], both: Memory
) -> None:
    """With both instrumentations on, a session gets one traceparent per round trip and one
    set of spans, aiotrace's; the official TraceConfig is taken out of the session."""
    async with aiohttp.ClientSession() as session:
        assert session.trace_configs == []
        assert await fetch(session, f"http://127.0.0.1:{server.port}/start") == 200
    tree = both.tree()
    scopes = {s.instrumentation_scope.name for s in tree.spans if s.instrumentation_scope}
    assert scopes == {"aiotrace"}
    (request,) = tree.roots()
    assert len(tree.children(request)) == 2
    assert [len(s["traceparent"]) for s in seen] == [1, 1]
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen]
    assert {t.trace_id for t in sent} == {request.context.trace_id}


async def test_an_explicit_official_trace_config_is_taken_out_too(
    server: TestServer, seen: list[dict[str, Any]], instrumented: Memory
) -> None:
    """A session built with the official create_trace_config() while aiotrace instruments gets
    aiotrace's spans only, and one traceparent."""
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    official = create_trace_config(tracer_provider=instrumented.tracer_provider)
    assert await library_get(f"http://127.0.0.1:{server.port}/ok", trace_configs=[official]) == 200
    (span,) = instrumented.tree().spans
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "aiotrace"
    assert len(seen[0]["traceparent"]) == 1


def test_bad_phases_is_a_one_line_error() -> None:
    """instrument(phases=...) with anything but attributes or spans raises a ValueError and
    leaves aiohttp alone."""
    with pytest.raises(ValueError, match="phases= takes 'attributes' or 'spans'"):
        aiotrace.otel.instrument(phases="waterfall")
    assert aiohttp.ClientSession.__dict__["__init__"] is ORIGINAL_INIT


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


async def test_request_duration_histogram_counts_every_request_with_low_cardinality(
    server: TestServer, refused_port: int, instrumented: Memory
) -> None:
    """http.client.request.duration (s, the recommended buckets) counts each request once
    with method, server address and port, status code or error type, and never a URL."""
    url = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        for path in ("/ok?id=1", "/ok?id=2", "/ok?id=3", "/missing"):
            await fetch(session, url + path)
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(session, f"http://127.0.0.1:{refused_port}/")
    reader = instrumented.metrics
    data = points(reader, "http.client.request.duration")
    keys = {frozenset(dict(p.attributes or {})) for p in data}
    assert keys <= {
        frozenset(
            {"http.request.method", "server.address", "server.port", "http.response.status_code"}
        ),
        frozenset(
            {
                "http.request.method",
                "server.address",
                "server.port",
                "http.response.status_code",
                "error.type",
            }
        ),
        frozenset({"http.request.method", "server.address", "server.port", "error.type"}),
    }
    ok = {"http.response.status_code": 200, "server.port": server.port}
    assert histogram_count(reader, "http.client.request.duration", **ok) == 3
    assert histogram_count(reader, "http.client.request.duration", **{"error.type": "404"}) == 1
    refused = {"error.type": "ClientConnectorError", "server.port": refused_port}
    assert histogram_count(reader, "http.client.request.duration", **refused) == 1
    (p,) = [p for p in data if dict(p.attributes or {}).get("http.response.status_code") == 200]
    assert isinstance(p, HistogramDataPoint)
    assert tuple(p.explicit_bounds) == aiotrace.otel.DURATION_BUCKETS
    assert 0 < p.sum < 3.0


async def test_phase_histogram_counts_each_phase_of_each_round_trip(
    server: TestServer, instrumented: Memory
) -> None:
    """aiotrace.http.client.phase.duration records each phase each round trip took, with a
    phase attribute: a redirect on a new connection is one connect, two sends/waits/receives."""
    assert await library_get(f"http://127.0.0.1:{server.port}/start") == 200
    reader = instrumented.metrics
    counts = {
        phase: histogram_count(reader, "aiotrace.http.client.phase.duration", phase=phase)
        for phase in ("blocked", "dns", "connect", "tls", "send", "wait", "receive")
    }
    assert counts == {
        "blocked": 0,
        "dns": 0,
        "connect": 1,
        "tls": 0,
        "send": 2,
        "wait": 2,
        "receive": 2,
    }
    (p, *_) = points(reader, "aiotrace.http.client.phase.duration")
    assert tuple(p.explicit_bounds) == aiotrace.otel.PHASE_BUCKETS


async def test_open_connections_counts_active_and_idle_from_the_pool(
    aiohttp_server: ServerFactory, instrumented: Memory
) -> None:
    """http.client.open_connections reads the pool when collected: one active connection
    while the server handles the request, then one idle, then none once the session closes."""
    reader = instrumented.metrics
    port = 0
    during: list[dict[str, int]] = []

    def states() -> dict[str, int]:
        return {
            dict(p.attributes or {})["http.connection.state"]: p.value
            for p in points(reader, "http.client.open_connections")
            if isinstance(p, NumberDataPoint)
            and dict(p.attributes or {}).get("server.port") == port
        }

    async def handler(request: web.Request) -> web.Response:
        during.append(states())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    port = (await aiohttp_server(app)).port
    async with aiohttp.ClientSession() as session:
        assert await fetch(session, f"http://127.0.0.1:{port}/") == 200
        assert during == [{"active": 1}]
        assert states() == {"active": 0, "idle": 1}
    assert states() == {"active": 0, "idle": 0}


async def test_sessions_are_freed_once_closed(server: TestServer, instrumented: Memory) -> None:
    """Nothing aiotrace keeps refers to a session it set up (or to a traced_session): once
    closed and dropped, each is collected."""
    refs = []
    for make in (aiohttp.ClientSession, aiotrace.traced_session):
        session = make()
        assert await fetch(session, f"http://127.0.0.1:{server.port}/ok") == 200
        await session.close()
        refs.append(weakref.ref(session))
        del session
    gc.collect()
    assert [r() for r in refs] == [None, None]


@pytest.fixture
def socket_path() -> Iterator[str]:
    """A path for a Unix socket, short enough for ``sun_path``."""
    directory = tempfile.mkdtemp(prefix="aiotrace-")
    try:
        yield os.path.join(directory, "http.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_a_plain_unix_connector_of_the_caller_is_adopted(
    socket_path: str, instrumented: Memory
) -> None:
    """A session given an unused UnixConnector gets a TracingUnixConnector in place: its
    request is a span with the connect to the socket's path among its phases."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, socket_path).start()
    try:
        connector = aiohttp.UnixConnector(socket_path)
        async with aiohttp.ClientSession(connector=connector) as session:
            assert type(connector) is aiotrace.TracingUnixConnector
            assert await fetch(session, "http://unix.local/") == 200
    finally:
        await runner.cleanup()
    (span,) = instrumented.tree().roots()
    a = attrs(span)
    assert a["http.response.status_code"] == 200 and "aiotrace.connect_ms" in a
    assert (a["network.peer.address"], a["network.transport"]) == (socket_path, "unix")
    assert "network.peer.port" not in a
