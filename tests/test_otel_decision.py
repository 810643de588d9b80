"""The sampling decision asked of the provider's sampler at the request boundary
(``aiotrace/_otel/decision.py``): a dropped request's context is the one the SDK would have
made, and a kept one's span is the one the sampler was asked about, asked once."""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from otel_spans import Memory, Traceparent, histogram_count, memory, recording_app

import aiotrace
from aiotrace.otel import OTelTrace

TIMEOUT = aiohttp.ClientTimeout(total=10)
ServerFactory = Callable[..., Awaitable[TestServer]]


class CountingIds(IdGenerator):
    """Ids in sequence (not random), each one remembered."""

    def __init__(self) -> None:
        self.trace_ids: list[int] = []
        self.span_ids: list[int] = []
        self._next = itertools.count(0x1000)

    def generate_trace_id(self) -> int:
        self.trace_ids.append(0xABC0000 + next(self._next))
        return self.trace_ids[-1]

    def generate_span_id(self) -> int:
        self.span_ids.append(0xDEF0000 + next(self._next))
        return self.span_ids[-1]


class Asked(Sampler):
    """Answers with ``answer(trace_id)``, and the ``trace_state`` given; remembers each
    trace id it was asked about."""

    def __init__(
        self, answer: Callable[[int], Decision], trace_state: TraceState | None = None
    ) -> None:
        self.answer = answer
        self.trace_state = trace_state
        self.asked: list[int] = []

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.asked.append(trace_id)
        decision = self.answer(trace_id)
        return SamplingResult(
            decision, attributes if decision.is_sampled() else None, self.trace_state
        )

    def get_description(self) -> str:
        return "Asked"


class ByName(Sampler):
    """Asks the sampler named after the span, or ``default``."""

    def __init__(self, by_name: dict[str, Sampler], default: Sampler) -> None:
        self.by_name = by_name
        self.default = default

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return self.by_name.get(name, self.default).should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "ByName"


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    """What the recording app received, request by request."""
    return []


@pytest.fixture
async def server(aiohttp_server: ServerFactory, seen: list[dict[str, Any]]) -> TestServer:
    """The recording app."""
    return await aiohttp_server(recording_app(seen))


def _setups() -> dict[str, Callable[[], tuple[Memory, Any, CountingIds]]]:
    def ratio0() -> tuple[Memory, Any, CountingIds]:
        ids = CountingIds()
        return memory(ParentBased(TraceIdRatioBased(0.0)), ids), None, ids

    def ratio0_random_ids() -> tuple[Memory, Any, CountingIds]:
        return memory(ParentBased(TraceIdRatioBased(0.0))), None, CountingIds()

    def drop_with_state() -> tuple[Memory, Any, CountingIds]:
        sampler = Asked(lambda _: Decision.DROP, TraceState([("vendor", "th:8")]))
        return memory(sampler), sampler, CountingIds()

    def bare_ratio0() -> tuple[Memory, Any, CountingIds]:
        ids = CountingIds()
        return memory(TraceIdRatioBased(0.0), ids), None, ids

    def parent_based_asked() -> tuple[Memory, Any, CountingIds]:
        root = Asked(lambda _: Decision.RECORD_AND_SAMPLE)
        ids = CountingIds()
        return memory(ParentBased(root), ids), root, ids

    def random_half() -> tuple[Memory, Any, CountingIds]:
        draw = random.Random(7).random
        sampler = Asked(lambda _: Decision.RECORD_AND_SAMPLE if draw() < 0.5 else Decision.DROP)
        ids = CountingIds()
        return memory(sampler, ids), sampler, ids

    def record_only_caller() -> tuple[Memory, Any, CountingIds]:
        sampler = Asked(lambda _: Decision.DROP)
        caller = Asked(lambda _: Decision.RECORD_ONLY)
        return memory(ByName({"caller": caller}, sampler)), sampler, CountingIds()

    def record_only() -> tuple[Memory, Any, CountingIds]:
        sampler = Asked(lambda _: Decision.RECORD_ONLY)
        return memory(sampler), sampler, CountingIds()

    return {
        f.__name__: f
        for f in (
            ratio0,
            ratio0_random_ids,
            drop_with_state,
            bare_ratio0,
            parent_based_asked,
            random_half,
            record_only,
            record_only_caller,
        )
    }


@pytest.fixture
def setup(request: pytest.FixtureRequest) -> tuple[Memory, Any, CountingIds]:
    """Providers (built outside the event loop), the test's sampler and id generator, as
    ``request.param`` names them."""
    return _setups()[request.param]()


async def fetch_all(mem: Memory, url: str, n: int, parent: str | None = None) -> None:
    """``n`` GETs of ``url`` through an OTelTrace on ``mem``, under the remote ``parent``
    traceparent if given."""
    otel = OTelTrace(tracer_provider=mem.tracer_provider, meter_provider=mem.meter_provider)
    token = None
    if parent is not None:
        token = otel_context.attach(propagate.extract({"traceparent": parent}))
    try:
        async with aiotrace.traced_session(trace=otel) as session:
            for _ in range(n):
                async with session.get(url, timeout=TIMEOUT) as resp:
                    assert resp.status == 200
                    await resp.read()
    finally:
        if token is not None:
            otel_context.detach(token)


@pytest.mark.parametrize("setup", ["ratio0"], indirect=True)
async def test_dropped_root_sends_a_fresh_unsampled_context_from_the_id_generator(
    server: TestServer, seen: list[dict[str, Any]], setup: tuple[Memory, Any, CountingIds]
) -> None:
    """A root ParentBased(TraceIdRatioBased(0)) drops sends flags 00 with a trace id and a
    span id the provider's id generator made, a new trace per request, exports no span and
    is still counted."""
    mem, _, ids = setup
    await fetch_all(mem, f"http://127.0.0.1:{server.port}/ok", 3)
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen]
    assert [t.trace_id for t in sent] == ids.trace_ids
    assert [t.parent_id for t in sent] == ids.span_ids
    assert [t.flags for t in sent] == [0, 0, 0]
    assert mem.tree().spans == ()
    assert histogram_count(mem.metrics, "http.client.request.duration") == 3


@pytest.mark.parametrize("setup", ["ratio0_random_ids"], indirect=True)
async def test_dropped_root_with_a_random_id_generator_sets_the_random_trace_id_flag_as_the_sdk_does(
    server: TestServer, seen: list[dict[str, Any]], setup: tuple[Memory, Any, CountingIds]
) -> None:
    """Under the SDK's random id generator, a dropped root's flags are what the SDK's own
    non-recording span gets (random-trace-id where the SDK sets it, never sampled)."""
    mem, _, _ = setup
    expected = mem.tracer_provider.get_tracer("test").start_span("x").get_span_context().trace_flags
    await fetch_all(mem, f"http://127.0.0.1:{server.port}/ok", 1)
    (tp,) = (Traceparent.parse(s["traceparent"][0]) for s in seen)
    assert tp.flags == expected and not tp.sampled


@pytest.mark.parametrize("setup", ["drop_with_state"], indirect=True)
async def test_a_dropping_samplers_trace_state_goes_out(
    server: TestServer, seen: list[dict[str, Any]], setup: tuple[Memory, Any, CountingIds]
) -> None:
    """The trace state a custom sampler returns with its DROP is sent as ``tracestate``
    beside the unsampled traceparent."""
    mem, _, _ = setup
    await fetch_all(mem, f"http://127.0.0.1:{server.port}/ok", 1)
    (record,) = seen
    assert record["tracestate"] == ["vendor=th:8"]
    assert not Traceparent.parse(record["traceparent"][0]).sampled
    assert mem.tree().spans == ()


@pytest.mark.parametrize("setup", ["bare_ratio0"], indirect=True)
async def test_a_request_dropped_under_a_sampled_remote_parent_keeps_its_trace(
    server: TestServer, seen: list[dict[str, Any]], setup: tuple[Memory, Any, CountingIds]
) -> None:
    """Under a sampled remote parent, a sampler that drops (a bare TraceIdRatioBased(0))
    sends the parent's trace id with a new span id from the id generator and flags 00."""
    mem, _, ids = setup
    parent = f"00-{0x5EED:032x}-{0xF00D:016x}-01"
    await fetch_all(mem, f"http://127.0.0.1:{server.port}/ok", 1, parent)
    (tp,) = (Traceparent.parse(s["traceparent"][0]) for s in seen)
    assert (tp.trace_id, tp.parent_id, tp.flags) == (0x5EED, ids.span_ids[0], 0)
    assert ids.trace_ids == []


@pytest.mark.parametrize("setup", ["parent_based_asked"], indirect=True)
async def test_an_unsampled_remote_parent_under_parent_based_never_asks_the_root_sampler(
    server: TestServer, seen: list[dict[str, Any]], setup: tuple[Memory, Any, CountingIds]
) -> None:
    """Under ParentBased, a request inside an unsampled remote trace is dropped without its
    root sampler being asked, and the parent's own context (its trace id) goes on."""
    mem, root, ids = setup
    parent = f"00-{0x5EED:032x}-{0xF00D:016x}-00"
    await fetch_all(mem, f"http://127.0.0.1:{server.port}/ok", 2, parent)
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen]
    assert {(t.trace_id, t.parent_id, t.flags) for t in sent} == {(0x5EED, 0xF00D, 0)}
    assert root.asked == [] and ids.trace_ids == [] and mem.tree().spans == ()


@pytest.mark.parametrize("setup", ["random_half"], indirect=True)
async def test_a_random_sampler_is_asked_once_per_request_and_its_trace_id_is_the_spans(
    server: TestServer, seen: list[dict[str, Any]], setup: tuple[Memory, Any, CountingIds]
) -> None:
    """A sampler drawing at random (not from the trace id) is asked exactly once per
    request; the spans it kept carry the trace ids it was asked about and are exactly the
    requests sent as sampled; the dropped ones went out under their asked trace ids too."""
    mem, sampler, ids = setup
    await fetch_all(mem, f"http://127.0.0.1:{server.port}/ok", 40)
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen]
    assert len(sampler.asked) == 40 and sampler.asked == ids.trace_ids
    assert [t.trace_id for t in sent] == sampler.asked
    kept = {(t.trace_id, t.parent_id) for t in sent if t.sampled}
    exported = {(s.context.trace_id, s.context.span_id) for s in mem.tree().spans}
    assert exported == kept and 5 <= len(kept) <= 35
    assert histogram_count(mem.metrics, "http.client.request.duration") == 40


@pytest.mark.parametrize("setup", ["record_only"], indirect=True)
async def test_record_only_runs_traced_but_is_sent_unsampled(
    server: TestServer, seen: list[dict[str, Any]], setup: tuple[Memory, Any, CountingIds]
) -> None:
    """A sampler answering RECORD_ONLY gets a recording (not exported) span, asked once,
    and the traceparent names that span, unsampled."""
    mem, sampler, _ = setup
    await fetch_all(mem, f"http://127.0.0.1:{server.port}/ok", 2)
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen]
    assert [t.trace_id for t in sent] == sampler.asked and len(sampler.asked) == 2
    assert not any(t.sampled for t in sent) and mem.tree().spans == ()


@pytest.mark.parametrize("setup", ["random_half"], indirect=True)
async def test_several_otel_traces_on_one_provider_share_one_asking(
    server: TestServer, seen: list[dict[str, Any]], setup: tuple[Memory, Any, CountingIds]
) -> None:
    """OTelTraces on one provider share its tracer (the SDK caches it): each asks the
    provider's own sampler, wrapped once however many there are, and requests through any
    of them are asked once each, exported exactly when sent sampled."""
    mem, sampler, _ = setup
    otels = [OTelTrace(tracer_provider=mem.tracer_provider) for _ in range(5)]
    assert all(o._decider is not None and o._decider._sampler is sampler for o in otels)
    url = f"http://127.0.0.1:{server.port}/ok"
    for otel in otels[:2]:
        async with aiotrace.traced_session(trace=otel) as session:
            for _ in range(10):
                async with session.get(url, timeout=TIMEOUT) as resp:
                    await resp.read()
    sent = [Traceparent.parse(s["traceparent"][0]) for s in seen]
    assert len(sampler.asked) == 20 and [t.trace_id for t in sent] == sampler.asked
    kept = {(t.trace_id, t.parent_id) for t in sent if t.sampled}
    assert {(s.context.trace_id, s.context.span_id) for s in mem.tree().spans} == kept


@pytest.mark.parametrize("setup", ["record_only_caller"], indirect=True)
async def test_a_request_dropped_inside_a_recording_unsampled_span_leaves_that_span_alone(
    server: TestServer, seen: list[dict[str, Any]], setup: tuple[Memory, Any, CountingIds]
) -> None:
    """Inside a caller's span that records but is not sampled (RECORD_ONLY), a request the
    sampler drops runs untraced: the caller's context goes out, and the caller's span is
    neither ended nor given the request's attributes."""
    mem, _, _ = setup
    tracer = mem.tracer_provider.get_tracer("test")
    otel = OTelTrace(tracer_provider=mem.tracer_provider)
    with tracer.start_as_current_span("caller") as caller:
        assert caller.is_recording() and not caller.get_span_context().trace_flags.sampled
        async with (
            aiotrace.traced_session(trace=otel) as session,
            session.get(f"http://127.0.0.1:{server.port}/ok", timeout=TIMEOUT) as r,
        ):
            await r.read()
        assert caller.is_recording()
        assert "http.request.method" not in (getattr(caller, "attributes", None) or {})
    (tp,) = (Traceparent.parse(s["traceparent"][0]) for s in seen)
    ctx = caller.get_span_context()
    assert (tp.trace_id, tp.parent_id, tp.sampled) == (ctx.trace_id, ctx.span_id, False)
