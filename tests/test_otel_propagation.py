"""Context propagation: the ``traceparent`` (and ``baggage``) each round trip carries, as the
server received it, against the spans that were exported; and sampling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from opentelemetry import baggage, propagate
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from otel_spans import Memory, Traceparent, attrs, histogram_count, memory, recording_app
from peers import RawServer, stale_then_fresh

import aiotrace
from aiotrace.otel import OTelTrace

TIMEOUT = aiohttp.ClientTimeout(total=10)
ServerFactory = Callable[..., Awaitable[TestServer]]
RawPeer = Callable[..., Awaitable[RawServer]]


@pytest.fixture
def mem() -> Memory:
    """SDK providers exporting to memory, sampling every request."""
    return memory()


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    """What the recording app received, request by request."""
    return []


@pytest.fixture
async def server(aiohttp_server: ServerFactory, seen: list[dict[str, Any]]) -> TestServer:
    """The recording app."""
    return await aiohttp_server(recording_app(seen))


@pytest.fixture
def make_session() -> Callable[..., aiohttp.ClientSession]:
    """``make_session(otel)``: a traced session with ``otel``'s trace."""

    def make(otel: OTelTrace) -> aiohttp.ClientSession:
        return aiotrace.traced_session(trace=otel)

    return make


@pytest.fixture
async def session(
    make_session: Callable[..., aiohttp.ClientSession], mem: Memory
) -> AsyncIterator[aiohttp.ClientSession]:
    """A session exporting to ``mem``, propagating."""
    async with make_session(OTelTrace(tracer_provider=mem.tracer_provider)) as s:
        yield s


async def fetch(session: aiohttp.ClientSession, url: str, **kw: Any) -> int:
    async with session.get(url, timeout=TIMEOUT, **kw) as resp:
        await resp.read()
        return resp.status


async def test_each_hop_carries_its_own_span_as_parent(
    session: aiohttp.ClientSession, server: TestServer, seen: list[dict[str, Any]], mem: Memory
) -> None:
    """A redirected request sends one traceparent per round trip, in the request's trace:
    the first names the request span (no one knows yet that a redirect follows), the second
    its own hop span; both sampled; the caller's baggage goes along."""
    ctx = baggage.set_baggage("tenant", "blue")
    token = otel_context.attach(ctx)
    try:
        assert await fetch(session, f"http://127.0.0.1:{server.port}/start") == 200
    finally:
        otel_context.detach(token)
    tree = mem.tree()
    (request,) = tree.roots()
    _, hop1 = tree.children(request)
    assert [s["path"] for s in seen] == ["/start", "/end"]
    assert all(len(s["traceparent"]) == 1 for s in seen)
    first, second = (Traceparent.parse(s["traceparent"][0]) for s in seen)
    assert first.trace_id == second.trace_id == request.context.trace_id
    assert first.parent_id == request.context.span_id
    assert second.parent_id == hop1.context.span_id
    assert first.sampled and second.sampled
    assert [s["baggage"] for s in seen] == [["tenant=blue"], ["tenant=blue"]]


async def test_single_request_carries_the_request_span_under_the_caller(
    session: aiohttp.ClientSession, server: TestServer, seen: list[dict[str, Any]], mem: Memory
) -> None:
    """A one-hop request's traceparent names its (only) span, whose parent is the caller's
    span; a traceparent the caller set is replaced, not doubled."""
    tracer = mem.tracer_provider.get_tracer("test")
    stale = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    with tracer.start_as_current_span("caller") as caller:
        assert (
            await fetch(
                session, f"http://127.0.0.1:{server.port}/ok", headers={"traceparent": stale}
            )
            == 200
        )
    (request,) = mem.tree().children(mem.tree().roots("caller")[0])
    (sent,) = seen[0]["traceparent"]
    tp = Traceparent.parse(sent)
    assert (tp.trace_id, tp.parent_id) == (request.context.trace_id, request.context.span_id)
    assert request.parent is not None
    assert request.parent.span_id == caller.get_span_context().span_id


def traceparents(heads: list[bytes]) -> list[Traceparent]:
    """The traceparent of each raw request head (exactly one each)."""
    out = []
    for head in heads:
        lines = [line for line in head.split(b"\r\n") if line.lower().startswith(b"traceparent:")]
        assert len(lines) == 1, head
        out.append(Traceparent.parse(lines[0].split(b":", 1)[1].strip().decode()))
    return out


async def test_retry_carries_its_own_hop_span(
    session: aiohttp.ClientSession, raw_peer: RawPeer, mem: Memory
) -> None:
    """aiohttp's silent retry sends a new traceparent naming the retry's own span; the attempt
    that found the connection stale sent the request span's."""
    heads: list[bytes] = []
    peer = await raw_peer(stale_then_fresh(heads))
    url = f"http://127.0.0.1:{peer.port}/"
    assert await fetch(session, url) == 200
    assert await fetch(session, url) == 200
    tree = mem.tree()
    first, second = tree.roots()
    stale, retry = tree.children(second)
    assert attrs(retry)["http.request.resend_count"] == 1
    sent = traceparents(heads)
    assert [(t.trace_id, t.parent_id) for t in sent] == [
        (first.context.trace_id, first.context.span_id),
        (second.context.trace_id, second.context.span_id),
        (second.context.trace_id, retry.context.span_id),
    ]
    assert stale.context.span_id not in {t.parent_id for t in sent}


async def test_propagate_false_sends_nothing(
    make_session: Callable[..., aiohttp.ClientSession],
    server: TestServer,
    seen: list[dict[str, Any]],
    mem: Memory,
) -> None:
    """With propagate=False no round trip carries traceparent or baggage, and the spans are
    still exported."""
    token = otel_context.attach(baggage.set_baggage("tenant", "blue"))
    try:
        otel = OTelTrace(tracer_provider=mem.tracer_provider, propagate=False)
        async with make_session(otel) as session:
            assert await fetch(session, f"http://127.0.0.1:{server.port}/start") == 200
    finally:
        otel_context.detach(token)
    assert [(s["traceparent"], s["baggage"]) for s in seen] == [([], []), ([], [])]
    (request,) = mem.tree().roots()
    assert len(mem.tree().children(request)) == 2


@pytest.fixture
def dropping(request: pytest.FixtureRequest) -> tuple[str, Memory]:
    """Providers whose sampler drops what ``request.param`` says: ``ratio-miss``
    (ParentBased(TraceIdRatioBased(0))) or ``unsampled-parent`` (the default ParentBased)."""
    how: str = request.param
    return how, memory(ParentBased(TraceIdRatioBased(0.0)) if how == "ratio-miss" else None)


@pytest.fixture
def always_off() -> Memory:
    """Providers sampling nothing."""
    return memory(ALWAYS_OFF)


@pytest.mark.parametrize("dropping", ["ratio-miss", "unsampled-parent"], indirect=True)
async def test_unsampled_request_sends_flags_00_and_exports_no_span(
    dropping: tuple[str, Memory],
    make_session: Callable[..., aiohttp.ClientSession],
    server: TestServer,
    seen: list[dict[str, Any]],
) -> None:
    """A request the sampler drops (a TraceIdRatioBased(0) miss, or an unsampled remote
    parent under ParentBased) exports no span, sends a traceparent with flags 00 on every
    round trip (the parent's own context when there is one), and is still counted in the
    duration metric."""
    how, mem = dropping
    otel = OTelTrace(tracer_provider=mem.tracer_provider, meter_provider=mem.meter_provider)
    parent_trace = 0xABC
    token = None
    if how == "unsampled-parent":
        carrier = {"traceparent": f"00-{parent_trace:032x}-{0xDEF:016x}-00"}
        token = otel_context.attach(propagate.extract(carrier))
    try:
        async with make_session(otel) as session:
            assert await fetch(session, f"http://127.0.0.1:{server.port}/start") == 200
    finally:
        if token is not None:
            otel_context.detach(token)
    assert mem.tree().spans == ()
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen]
    assert len(sent) == 2 and not any(t.sampled for t in sent)
    if how == "unsampled-parent":  # the parent's own unsampled context goes on
        assert {(t.trace_id, t.parent_id) for t in sent} == {(parent_trace, 0xDEF)}
    assert histogram_count(mem.metrics, "http.client.request.duration") == 1


async def test_always_off_still_counts_and_propagates(
    make_session: Callable[..., aiohttp.ClientSession],
    server: TestServer,
    seen: list[dict[str, Any]],
    always_off: Memory,
) -> None:
    """Under ALWAYS_OFF, ten requests take the untraced path (no traced round trip ever
    touches their pooled connection), export no span, each sends an unsampled traceparent,
    and the duration histogram counts all ten."""
    mem = always_off
    otel = OTelTrace(tracer_provider=mem.tracer_provider, meter_provider=mem.meter_provider)
    async with make_session(otel) as session:
        for _ in range(10):
            assert await fetch(session, f"http://127.0.0.1:{server.port}/ok") == 200
        pooled = [proto for conns in session.connector._conns.values() for proto, _ in conns]  # type: ignore[union-attr]
        assert len(pooled) == 1 and pooled[0].aiotrace_conn.observed is False
    assert mem.tree().spans == ()
    assert [Traceparent.parse(s["traceparent"][0]).sampled for s in seen] == [False] * 10
    assert (
        histogram_count(
            mem.metrics, "http.client.request.duration", **{"http.response.status_code": 200}
        )
        == 10
    )


@pytest.fixture
def half() -> Memory:
    """Providers sampling half the traces by trace id."""
    return memory(ParentBased(TraceIdRatioBased(0.5)))


async def test_ratio_sampling_exports_exactly_the_requests_sent_as_sampled(
    make_session: Callable[..., aiohttp.ClientSession],
    server: TestServer,
    seen: list[dict[str, Any]],
    half: Memory,
) -> None:
    """Under TraceIdRatioBased(0.5), of 100 requests about half are sampled (25-75), and the
    exported spans are exactly those whose traceparent went out sampled: the decision made
    at the boundary is the one the export follows; every request is counted."""
    otel = OTelTrace(tracer_provider=half.tracer_provider, meter_provider=half.meter_provider)
    async with make_session(otel) as session:
        for _ in range(100):
            assert await fetch(session, f"http://127.0.0.1:{server.port}/ok") == 200
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen]
    sampled = {(t.trace_id, t.parent_id) for t in sent if t.sampled}
    exported = {(s.context.trace_id, s.context.span_id) for s in half.tree().spans}
    assert exported == sampled and 25 <= len(sampled) <= 75
    assert histogram_count(half.metrics, "http.client.request.duration") == 100


async def test_a_trace_shared_with_another_threads_loop(
    server: TestServer, seen: list[dict[str, Any]], mem: Memory
) -> None:
    """One OTelTrace used by sessions on two threads' event loops: each request gets its own
    span and its own traceparent (the sampler's decision never crosses threads)."""
    otel = OTelTrace(tracer_provider=mem.tracer_provider)
    url = f"http://127.0.0.1:{server.port}/ok"

    async def some() -> None:
        async with aiotrace.traced_session(trace=otel) as session:
            for _ in range(5):
                assert await fetch(session, url) == 200

    def in_thread() -> None:
        asyncio.run(some())

    await asyncio.gather(asyncio.to_thread(in_thread), some())
    spans = mem.tree().roots()
    sent = {Traceparent.parse(s["traceparent"][0]).parent_id for s in seen}
    assert len(spans) == 10 and sent == {s.context.span_id for s in spans}
