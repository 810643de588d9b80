"""The metrics: request duration and per-phase duration histograms, and open connections.

Names, units, buckets and attributes follow the OpenTelemetry HTTP semantic conventions
(v1.26+, stable HTTP client metrics). Attributes are low-cardinality only: method, server
address and port, status code, error type, and a phase or connection state; never a URL.

* ``http.client.request.duration`` (s): from the request's start to its response (what
  ``session.request()`` returns: headers read, the body not yet), as the official aiohttp
  instrumentation measures it; every request, sampled or not.
* ``aiotrace.http.client.phase.duration`` (s), attribute ``phase``: each phase of each round
  trip, as the Recorder's timings lay them out; from the requests that were traced (sampled).
* ``http.client.open_connections`` (``{connection}``), attribute ``http.connection.state``
  (``active`` or ``idle``): read from the connectors' pools when the metrics are collected,
  so it costs a request nothing (the connectors of sessions ``instrument()`` set up).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import (
    CallbackOptions,
    MeterProvider,
    NoOpMeter,
    Observation,
    get_meter,
)

from .._adapter.instrumented import pool_counts
from .._record.phases import PHASES
from .._version import __version__

if TYPE_CHECKING:
    from aiohttp import BaseConnector

__all__ = ["DURATION_BUCKETS", "PHASE_BUCKETS", "RequestMetrics", "SCHEMA_URL", "error_type"]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"

# The semantic conventions' advice for http.client.request.duration.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Phases are often well under the 5 ms the request buckets start at (a pooled send, a DNS
# cache hit): the same buckets with 0.1 to 2.5 ms in front.
PHASE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, *DURATION_BUCKETS)

_ATTRIBUTE_CACHE = 1024  # attribute sets kept (host x method x status x error: a few dozen)


def error_type(err: BaseException | None, status: int | None) -> str | None:
    """``error.type``: the exception's class name, else a 4xx/5xx status as text."""
    if err is not None:
        return type(err).__qualname__
    if status is not None and status >= 400:
        return str(status)
    return None


class RequestMetrics:
    """The three instruments of one meter provider, and the attribute sets they record."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        meter = get_meter("aiotrace", __version__, meter_provider, schema_url=SCHEMA_URL)
        # A no-op meter (NoOpMeterProvider) records nothing: then neither does aiotrace.
        self.enabled = not isinstance(meter, NoOpMeter)
        self.duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.phase_duration = meter.create_histogram(
            "aiotrace.http.client.phase.duration",
            unit="s",
            description="Duration of each phase of an HTTP client round trip "
            "(blocked, dns, connect, tls, send, wait, receive).",
            explicit_bucket_boundaries_advisory=list(PHASE_BUCKETS),
        )
        self._meter = meter
        self._connectors: weakref.WeakSet[BaseConnector] = weakref.WeakSet()
        self._gauge_made = False
        self._series: set[tuple[str, Any, str]] = set()
        self._request_attributes: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._phase_attributes: dict[tuple[Any, ...], tuple[dict[str, Any], ...]] = {}

    # -- per request ------------------------------------------------------------------------

    def request(
        self,
        seconds: float,
        method: str,
        host: str,
        port: int | None,
        status: int | None,
        error: str | None,
    ) -> None:
        """Record one request's duration."""
        key = (method, host, port, status, error)
        attrs = self._request_attributes.get(key)
        if attrs is None:
            attrs = {"http.request.method": method, "server.address": host}
            if port is not None:
                attrs["server.port"] = port
            if status is not None:
                attrs["http.response.status_code"] = status
            if error is not None:
                attrs["error.type"] = error
            if len(self._request_attributes) >= _ATTRIBUTE_CACHE:
                self._request_attributes.clear()
            self._request_attributes[key] = attrs
        self.duration.record(seconds if seconds > 0.0 else 0.0, attrs)

    def phases(self, values: list[float | None], method: str, host: str, port: int | None) -> None:
        """Record each phase a round trip took (``values``: ms in ``PHASES`` order, or None)."""
        key = (method, host, port)
        per_phase = self._phase_attributes.get(key)
        if per_phase is None:
            base: dict[str, Any] = {"http.request.method": method, "server.address": host}
            if port is not None:
                base["server.port"] = port
            per_phase = tuple({**base, "phase": name} for name in PHASES)
            if len(self._phase_attributes) >= _ATTRIBUTE_CACHE:
                self._phase_attributes.clear()
            self._phase_attributes[key] = per_phase
        record = self.phase_duration.record
        for ms, attrs in zip(values, per_phase, strict=True):
            if ms is not None:
                record(ms / 1000.0, attrs)

    # -- connections ------------------------------------------------------------------------

    def watch(self, connector: BaseConnector) -> None:
        """Count ``connector``'s pool in ``http.client.open_connections`` while it lives."""
        if not self.enabled:
            return
        self._connectors.add(connector)
        if not self._gauge_made:
            self._gauge_made = True
            self._meter.create_observable_up_down_counter(
                "http.client.open_connections",
                callbacks=[self._observe_connections],
                unit="{connection}",
                description="Number of outbound HTTP connections that are currently active "
                "or idle on the client.",
            )

    def _observe_connections(self, options: CallbackOptions) -> Iterable[Observation]:
        # A series seen before reads 0 when its last connection is gone, rather than
        # vanishing (its last value would otherwise stand in a backend's view).
        totals = dict.fromkeys(self._series, 0)
        for connector in list(self._connectors):
            for host, port, active, idle in pool_counts(connector):
                for state, n in (("active", active), ("idle", idle)):
                    if n:
                        k = (host, port, state)
                        totals[k] = totals.get(k, 0) + n
        self._series = set(totals)
        out = []
        for (host, port, state), n in totals.items():
            attrs: dict[str, Any] = {"http.connection.state": state, "server.address": host}
            if port is not None:
                attrs["server.port"] = port
            out.append(Observation(n, attrs))
        return out
