"""OpenTelemetry for aiohttp clients: spans with phase detail, ``traceparent`` on every round
trip, and the HTTP client metrics. Needs the ``otel`` extra.

For a whole service, one line, instead of the official instrumentation's::

    aiotrace.otel.instrument()          # was: AioHttpClientInstrumentor().instrument()

Every ``aiohttp.ClientSession`` built afterwards, in the service's code or in a library it
uses, is traced: one CLIENT span per request under the span current when it started (the
stable HTTP semantic conventions' attributes), a child per round trip when there is more than
one (redirects, retries), phase timings as attributes or, with ``phases="spans"``, as child
spans a trace viewer draws as a waterfall. The tracer provider's sampler decides at the start
of each request. ``uninstrument()`` turns it off.

For one session or one block of code, ``OTelTrace`` is the ClientTrace-carrying object::

    otel = aiotrace.otel.OTelTrace(tracer_provider=provider)
    async with aiotrace.traced_session(trace=otel) as session: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._otel.instrument import AiotraceInstrumentor
from ._otel.metrics import DURATION_BUCKETS, PHASE_BUCKETS
from ._otel.spans import OTelTrace
from ._record.redact import DEFAULT_REDACTION, Redaction

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "AiotraceInstrumentor",
    "DURATION_BUCKETS",
    "OTelTrace",
    "PHASE_BUCKETS",
    "instrument",
    "uninstrument",
]


def instrument(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    propagate: bool = True,
    phases: str = "attributes",
    *,
    redaction: Redaction = DEFAULT_REDACTION,
) -> None:
    """Trace every ``aiohttp.ClientSession`` built from now on (idempotent).

    ``tracer_provider``/``meter_provider``: the global ones if omitted. ``propagate=False``
    injects no ``traceparent``/``baggage``. ``phases``: ``"attributes"`` (timings on the
    round trip's span) or ``"spans"`` (a child span per phase as well).
    """
    AiotraceInstrumentor().instrument(
        # aiotrace's own requirements pin aiohttp already; the check reads package metadata
        # from disk, which must not happen on a running event loop.
        skip_dep_check=True,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        propagate=propagate,
        phases=phases,
        redaction=redaction,
    )


def uninstrument() -> None:
    """Stop tracing: new sessions are left alone, and the sessions ``instrument()`` set up
    go idle (requests already running finish traced)."""
    AiotraceInstrumentor().uninstrument()
