"""The request span's sampling decision, asked of the tracer provider's sampler directly.

A request the sampler drops needs no span, only the unsampled context it propagates; asking
for it through ``Tracer.start_span`` costs about as much again as the decision itself (the
SDK's argument handling, flags, its span-metrics hook, a ``NonRecordingSpan`` for nothing).
So, where the tracer is the SDK's, the request boundary asks the sampler itself.

Rules:

1. The decision is the SDK's, made once per request: the provider's sampler, asked with what
   ``start_span`` would give it (the caller's context, the parent's trace id or a fresh one
   from the provider's id generator, the span's name, ``CLIENT``, the start attributes).
2. A dropped request's context is built as ``start_span`` builds it: that trace id, a span id
   from the id generator, flags unsampled (plus random-trace-id where the SDK sets it: a
   random id generator at a root, the parent's flag under a parent), the trace state the
   sampler returned. Inside an unsampled trace the parent's own context goes on instead.
3. A request the sampler keeps gets its span from ``start_span``, which asks the sampler and
   the id generator again. aiotrace's tracer (the provider's ``Tracer`` for aiotrace's
   instrumentation scope, which the SDK hands to every ``OTelTrace`` on that provider) has
   both wrapped, once, so that this second asking, in the same call on the same thread,
   returns what the first gave: the same trace id and the same result, never a second draw
   of a random sampler or a second trace id for a ratio sampler. Asked about any other span,
   the wrappers pass the question on.
4. ``start_span`` does it all, as before, where the shortcut would not be exact: a tracer that
   is not the SDK's, a tracer its configurator disabled, the SDK's own span metrics on
   (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``: they count dropped spans too), and a sampler
   that keeps every span it is asked about (``ALWAYS_ON``; the default
   ``ParentBased(ALWAYS_ON)`` outside an unsampled trace, where it drops every one).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    DEFAULT_ON,
    Decision,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, Tracer
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes

try:  # the SDK's own span metrics (opentelemetry-sdk 1.39 and later)
    from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
except ImportError:  # pragma: no cover - an older SDK: it has none
    NoOpTracerMetrics = None  # type: ignore[assignment,misc]

__all__ = ["Decider"]

# The random-trace-id flag (W3C Trace Context level 2; API 1.39 and later; 0 before).
_RANDOM: int = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSAMPLED_RANDOM = TraceFlags(TraceFlags.DEFAULT | _RANDOM)


class _Preset(threading.local):
    """What the boundary's asking gave, for ``start_span``'s asking right after (rule 3)."""

    trace_id: int | None = None
    result: SamplingResult | None = None


class _PresetIds(IdGenerator):
    """The provider's id generator, but the trace id the sampler was asked with comes back
    once (rule 3)."""

    def __init__(self, ids: IdGenerator, preset: _Preset) -> None:
        self._ids = ids
        self._preset = preset

    def generate_trace_id(self) -> int:
        preset = self._preset
        trace_id = preset.trace_id
        if trace_id is None:
            return self._ids.generate_trace_id()
        preset.trace_id = None
        return trace_id

    def generate_span_id(self) -> int:
        return self._ids.generate_span_id()

    def is_trace_id_random(self) -> bool:
        random: Callable[[], bool] | None = getattr(self._ids, "is_trace_id_random", None)
        return bool(random is not None and random())


class _PresetSampler(Sampler):
    """The provider's sampler, but the result the boundary got comes back once (rule 3)."""

    def __init__(self, sampler: Sampler, preset: _Preset) -> None:
        self._sampler = sampler
        self._preset = preset

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
        preset = self._preset
        result = preset.result
        if result is None:
            return self._sampler.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        preset.result = None
        return result

    def get_description(self) -> str:
        return self._sampler.get_description()


class Decider:
    """Asks the SDK tracer's sampler at the request boundary (see the rules above);
    ``Decider.of(tracer)`` is ``None`` where ``start_span`` must do it all (rule 4)."""

    __slots__ = ("_enabled", "_ids", "_preset", "_random_ids", "_sampler", "_unsampled_only")

    def __init__(self, tracer: Any, sampler: Sampler, ids: IdGenerator) -> None:
        preset: _Preset | None = None
        if isinstance(sampler, _PresetSampler) and isinstance(ids, _PresetIds):
            # Another OTelTrace on this provider wrapped the tracer already: share its preset.
            preset, sampler, ids = sampler._preset, sampler._sampler, ids._ids
        # A tracer configurator (SDK 1.35 and later) can turn the tracer off at any time.
        self._enabled: Callable[[], bool] | None = getattr(tracer, "_is_enabled", None)
        self._sampler = sampler
        self._ids = ids
        random: Callable[[], bool] | None = getattr(ids, "is_trace_id_random", None)
        self._random_ids = bool(random is not None and random())
        # The default sampler keeps every root and every child of a sampled span: asked only
        # inside an unsampled trace, where it drops (no preset needed, nothing wrapped).
        self._unsampled_only = sampler is DEFAULT_ON
        self._preset = preset or _Preset()
        if preset is None and not self._unsampled_only:
            # The id generator first: alone, its wrapper changes nothing (see ``of``).
            tracer.id_generator = _PresetIds(ids, self._preset)
            tracer.sampler = _PresetSampler(sampler, self._preset)

    @classmethod
    def of(cls, tracer: Tracer) -> Decider | None:
        sampler = getattr(tracer, "sampler", None)
        ids = getattr(tracer, "id_generator", None)
        if not isinstance(sampler, Sampler) or not isinstance(ids, IdGenerator):
            return None  # not the SDK's tracer (the API's no-op or proxy tracer, another SDK)
        if sampler is ALWAYS_ON:
            return None  # nothing to drop: start_span alone is cheaper
        metrics = getattr(tracer, "_tracer_metrics", None)
        if metrics is not None and (
            NoOpTracerMetrics is None or not isinstance(metrics, NoOpTracerMetrics)
        ):
            return None  # the SDK's span metrics count dropped spans: start_span does
        try:
            return cls(tracer, sampler, ids)
        except AttributeError:  # a tracer whose sampler cannot be wrapped: start_span decides
            return None

    def dropped(
        self, parent: Context, current: Span, name: str, attributes: Attributes
    ) -> Span | None:
        """The span to propagate if the sampler drops the request (``current`` itself inside
        an unsampled trace); ``None`` if it keeps it (or cannot be asked here): then
        ``start_span`` makes the span, getting the same answer (rule 3)."""
        enabled = self._enabled
        if enabled is not None and not enabled():
            return None
        within = current.get_span_context()
        if within.is_valid:
            trace_id = within.trace_id
            unsampled_trace = not within.trace_flags.sampled
            if self._unsampled_only and not unsampled_trace:
                return None
            root = False
        else:
            if self._unsampled_only:
                return None
            trace_id = self._ids.generate_trace_id()
            unsampled_trace = False
            root = True
        result = self._sampler.should_sample(
            parent, trace_id, name, SpanKind.CLIENT, attributes, ()
        )
        if result.decision is Decision.DROP:
            if unsampled_trace:
                return current
            random = self._random_ids if root else within.trace_flags & _RANDOM
            return NonRecordingSpan(
                SpanContext(
                    trace_id,
                    self._ids.generate_span_id(),
                    False,
                    _UNSAMPLED_RANDOM if random else _UNSAMPLED,
                    result.trace_state,
                )
            )
        if not self._unsampled_only:
            preset = self._preset
            if root:
                preset.trace_id = trace_id
            preset.result = result
        return None

    def forget(self) -> None:
        """``start_span`` failed before taking the preset: drop it, so the next asking is
        the sampler's own."""
        preset = self._preset
        preset.trace_id = None
        preset.result = None
