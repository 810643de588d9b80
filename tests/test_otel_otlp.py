"""Over the wire: the OTLP/HTTP exporters send what ``instrument()`` made to a loopback
receiver, which decodes the protobuf and finds the spans (phases included) and the metrics."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from otel_spans import Traceparent

import aiotrace.otel

ServerFactory = Callable[..., Awaitable[TestServer]]
TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class Received:
    """What the loopback OTLP receiver decoded, and what the app was sent."""

    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    traceparents: list[str] = field(default_factory=list)


def receiver_app(received: Received) -> web.Application:
    """OTLP/HTTP (protobuf) at ``/v1/traces`` and ``/v1/metrics``; ``/start`` redirects to
    ``/end``, which answers 200, each recording the traceparent it got."""

    async def body(request: web.Request) -> bytes:
        data = await request.read()
        return gzip.decompress(data) if request.headers.get("Content-Encoding") == "gzip" else data

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await body(request))
        received.traces.append(message)
        reply = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    async def metrics(request: web.Request) -> web.Response:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await body(request))
        received.metrics.append(message)
        reply = ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    async def page(request: web.Request) -> web.Response:
        received.traceparents.append(request.headers.get("traceparent", ""))
        if request.path == "/start":
            raise web.HTTPFound("/end")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/metrics", metrics)
    app.router.add_get("/start", page)
    app.router.add_get("/end", page)
    return app


def exporting_providers(port: int) -> tuple[TracerProvider, MeterProvider]:
    """SDK providers exporting OTLP/HTTP to 127.0.0.1:``port`` (run in a thread: they start
    threads and detect the resource)."""
    base = f"http://127.0.0.1:{port}"
    resource = Resource.create({"service.name": "otlp-test"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=5))
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=5),
        export_interval_millis=3_600_000,  # exported on force_flush only
    )
    return tracer_provider, MeterProvider(resource=resource, metric_readers=[reader])


async def test_otlp_http_export_reaches_a_loopback_receiver(
    aiohttp_server: ServerFactory,
) -> None:
    """A redirected request made by a plain ClientSession under instrument(phases="spans")
    arrives at the OTLP receiver as the request span, its two hop spans and their phase
    spans (scope aiotrace, the hop's traceparent naming its span), and the three metrics,
    the duration histogram counting one request."""
    received = Received()
    server = await aiohttp_server(receiver_app(received))
    tracer_provider, meter_provider = await asyncio.to_thread(exporting_providers, server.port)
    aiotrace.otel.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, phases="spans"
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{server.port}/start", timeout=TIMEOUT) as r:
                assert r.status == 200
                await r.read()
            # Exported while the session is open: its pooled connection is counted.
            assert await asyncio.to_thread(tracer_provider.force_flush, 10_000)
            assert await asyncio.to_thread(meter_provider.force_flush, 10_000)
    finally:
        aiotrace.otel.uninstrument()
        await asyncio.to_thread(tracer_provider.shutdown)
        await asyncio.to_thread(meter_provider.shutdown)

    spans: list[Any] = []
    for message in received.traces:
        for resource_spans in message.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert service["service.name"] == "otlp-test"
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.scope.name == "aiotrace"
                spans.extend(scope_spans.spans)
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert sorted(by_name) == [
        "GET",
        "GET hop 0",
        "GET hop 1",
        "connect",
        "receive",
        "send",
        "wait",
    ]
    (request,) = by_name["GET"]
    (hop1,) = by_name["GET hop 1"]
    assert hop1.parent_span_id == request.span_id
    attributes = {a.key: a.value for a in request.attributes}
    assert attributes["url.full"].string_value == f"http://127.0.0.1:{server.port}/start"
    assert attributes["http.response.status_code"].int_value == 200
    first, second = (Traceparent.parse(tp) for tp in received.traceparents)
    assert first.trace_id.to_bytes(16, "big") == request.trace_id
    assert first.parent_id.to_bytes(8, "big") == request.span_id
    assert second.parent_id.to_bytes(8, "big") == hop1.span_id

    metrics: dict[str, Any] = {}
    for message in received.metrics:
        for resource_metrics in message.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    metrics.setdefault(metric.name, metric)  # the first export
    assert {
        "http.client.request.duration",
        "aiotrace.http.client.phase.duration",
        "http.client.open_connections",
    } <= set(metrics)
    duration = metrics["http.client.request.duration"]
    assert duration.unit == "s"
    assert sum(p.count for p in duration.histogram.data_points) == 1
    phases = metrics["aiotrace.http.client.phase.duration"].histogram.data_points
    seen_phases = {a.value.string_value for p in phases for a in p.attributes if a.key == "phase"}
    assert seen_phases == {"connect", "send", "wait", "receive"}
    (idle,) = metrics["http.client.open_connections"].sum.data_points
    state = {a.key: a.value for a in idle.attributes}
    assert state["http.connection.state"].string_value == "idle" and idle.as_int == 1
