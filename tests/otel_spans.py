"""What the OTel tests share: SDK providers exporting to memory, a span tree to assert on,
the W3C ``traceparent`` parsed, and an app that records what each request carried.

The providers are built outside the event loop (an SDK provider may start threads).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Sampler

__all__ = [
    "Memory",
    "Traceparent",
    "Tree",
    "assert_nested_and_disjoint",
    "attrs",
    "end",
    "histogram_count",
    "memory",
    "points",
    "recording_app",
    "start",
    "wall_ns",
]


@dataclass
class Memory:
    """A tracer provider and a meter provider, both read back from memory."""

    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    meter_provider: MeterProvider
    metrics: InMemoryMetricReader

    def tree(self) -> Tree:
        """The spans exported so far."""
        return Tree(self.spans.get_finished_spans())


def memory(sampler: Sampler | None = None, id_generator: IdGenerator | None = None) -> Memory:
    """SDK providers exporting spans and metrics to memory (``sampler``, ``id_generator``:
    the SDK defaults)."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler, id_generator=id_generator)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return Memory(tracer_provider, exporter, MeterProvider(metric_readers=[reader]), reader)


def wall_ns(seconds: float) -> int:
    """A ``time.time()`` value in nanoseconds."""
    return round(seconds * 1e9)


@dataclass
class Tree:
    """Exported spans by parent, with the checks every OTel test makes."""

    spans: Sequence[ReadableSpan]
    by_id: dict[int, ReadableSpan] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {s.context.span_id: s for s in self.spans}
        assert len(self.by_id) == len(self.spans), "two spans share an id"

    def roots(self, name: str | None = None) -> list[ReadableSpan]:
        """Spans whose parent was not exported (the request spans), by start time."""
        found = [
            s
            for s in self.spans
            if (s.parent is None or s.parent.span_id not in self.by_id)
            and (name is None or s.name == name)
        ]
        return sorted(found, key=start)

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        """The span's children, by start time."""
        found = [
            s
            for s in self.spans
            if s.parent is not None and s.parent.span_id == span.context.span_id
        ]
        return sorted(found, key=start)

    def walk(self, span: ReadableSpan) -> Iterator[ReadableSpan]:
        """The span and everything under it."""
        yield span
        for child in self.children(span):
            yield from self.walk(child)


def start(span: ReadableSpan) -> int:
    """The span's start (ns)."""
    assert span.start_time is not None
    return span.start_time


def end(span: ReadableSpan) -> int:
    """The span's end (ns)."""
    assert span.end_time is not None
    return span.end_time


def attrs(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a plain dict."""
    return dict(span.attributes or {})


def assert_nested_and_disjoint(parent: ReadableSpan, children: Sequence[ReadableSpan]) -> None:
    """Each child lies within the parent, and no two children overlap."""
    for child in children:
        assert start(parent) <= start(child) <= end(child) <= end(parent), (parent, child)
    for a, b in itertools.pairwise(children):
        assert end(a) <= start(b), (a.name, b.name)


@dataclass(frozen=True)
class Traceparent:
    """A W3C ``traceparent`` header, parsed."""

    trace_id: int
    parent_id: int
    flags: int

    @classmethod
    def parse(cls, value: str) -> Traceparent:
        version, trace_id, parent_id, flags = value.split("-")
        assert version == "00" and len(trace_id) == 32 and len(parent_id) == 16, value
        return cls(int(trace_id, 16), int(parent_id, 16), int(flags, 16))

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def recording_app(seen: list[dict[str, Any]]) -> web.Application:
    """``/start`` redirects to ``/end``; ``/ok`` answers 200, ``/missing`` 404, ``/slow``
    after 300 ms; each request's path and tracing headers are appended to ``seen``."""

    async def handler(request: web.Request) -> web.Response:
        seen.append(
            {
                "path": request.path,
                "traceparent": request.headers.getall("traceparent", []),
                "baggage": request.headers.getall("baggage", []),
                "tracestate": request.headers.getall("tracestate", []),
            }
        )
        if request.path == "/start":
            raise web.HTTPFound("/end")
        if request.path == "/slow":
            await asyncio.sleep(0.3)
        return web.Response(text="ok", status=404 if request.path == "/missing" else 200)

    app = web.Application()
    for path in ("/start", "/end", "/ok", "/missing", "/slow"):
        app.router.add_get(path, handler)
    return app


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """Every data point of metric ``name`` collected now."""
    data = reader.get_metrics_data()
    found: list[Any] = []
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def histogram_count(reader: InMemoryMetricReader, name: str, **match: Any) -> int:
    """How many values metric ``name`` recorded with attributes including ``match``."""
    total = 0
    for p in points(reader, name):
        assert isinstance(p, HistogramDataPoint)
        if all(dict(p.attributes or {}).get(k) == v for k, v in match.items()):
            total += p.count
    return total
