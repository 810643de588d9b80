"""``instrument()`` and ``uninstrument()``: every ``aiohttp.ClientSession`` built in between
is traced, as ``AioHttpClientInstrumentor().instrument()`` does for the official one.

Like the official instrumentation, it wraps ``ClientSession.__init__`` (with ``wrapt``, as a
``BaseInstrumentor``); unlike it, the session gets aiotrace's traced connector and request
boundary rather than a ``TraceConfig`` wherever its connector allows (see
``aiotrace._adapter.instrumented`` for which sessions get what).

Rules:

1. ``instrument()`` twice is ``instrument()`` once (the second call's arguments are ignored
   with a warning, as every ``BaseInstrumentor`` does); ``uninstrument()`` turns it off.
2. ``uninstrument()`` also stops tracing the sessions it set up: each keeps an idle request
   boundary (or loses its TraceConfig), and costs what an idle ``traced_session`` costs.
3. When the official instrumentation is on too, aiotrace wins on the sessions it sets up:
   the official ``TraceConfig`` is taken out of them (so there is one ``traceparent`` and
   one span per request, aiotrace's), once the session is built. Sessions aiotrace did not
   set up keep whatever they have.
4. If another wrapper was put over ``ClientSession.__init__`` after aiotrace's,
   ``uninstrument()`` leaves aiotrace's in place, inert, and a later ``instrument()`` uses
   it again instead of adding a second.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import aiohttp
import wrapt
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from .._adapter.instrumented import Wiring, attach, detach, wire
from .._adapter.private import trace_config_list
from .._record.redact import DEFAULT_REDACTION
from .._trace.hooks import log
from .spans import PHASE_MODES, OTelTrace

if TYPE_CHECKING:
    from aiohttp import TraceConfig

__all__ = ["AiotraceInstrumentor", "is_official_trace_config"]

_OFFICIAL_MODULE = "opentelemetry.instrumentation.aiohttp_client"


def is_official_trace_config(config: TraceConfig) -> bool:
    """Whether ``config`` is the official aiohttp instrumentation's (``create_trace_config``,
    marked by its instrumentor, or recognized by its signal handlers' module)."""
    if getattr(config, "_is_instrumented_by_opentelemetry", False):
        return True
    return any(
        getattr(handler, "__module__", "") == _OFFICIAL_MODULE
        for handler in config.on_request_start
    )


class _Active:
    """The instrumentation while it is on: its trace, and the sessions it set up."""

    def __init__(self, otel: OTelTrace) -> None:
        self.otel = otel
        self.sessions: weakref.WeakKeyDictionary[aiohttp.ClientSession, Wiring] = (
            weakref.WeakKeyDictionary()
        )
        self.told = False  # the official instrumentation was found and taken out (logged once)


_active: _Active | None = None


def _traced_init(
    wrapped: Any, instance: aiohttp.ClientSession, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    active = _active
    if active is None:  # off; left in place only under another wrapper (rule 4)
        return wrapped(*args, **kwargs)  # type: ignore[no-any-return]
    trace = active.otel.trace
    try:
        wired = dict(kwargs)
        wiring = wire(wired, trace)
    except Exception:
        log.exception("aiotrace: a ClientSession could not be wired for tracing; left as is")
        return wrapped(*args, **kwargs)  # type: ignore[no-any-return]
    wrapped(*args, **wired)
    try:
        configs = trace_config_list(instance)
        official = [c for c in configs if is_official_trace_config(c)]
        for config in official:
            configs.remove(config)
        if official and not active.told:
            active.told = True
            log.info(
                "aiotrace: the official aiohttp OpenTelemetry instrumentation is on too; "
                "aiotrace traces the sessions it sets up and took the official TraceConfig out"
            )
        attach(instance, wiring, trace)
        active.sessions[instance] = wiring
        if wiring.connector is not None:
            active.otel.metrics.watch(wiring.connector)
    except Exception:
        log.exception("aiotrace: a ClientSession could not be traced; it works untraced")
    return None


def _ours(fn: object) -> bool:
    """Whether ``fn`` is aiotrace's wrapper: as installed, or as the class-bound proxy of it
    that ``unwrap`` puts back when another wrapper over it is taken off (``wrapt`` keeps the
    wrapper function as ``_self_wrapper`` on both)."""
    return getattr(fn, "_self_wrapper", None) is _traced_init


def _installed() -> bool:
    """Whether aiotrace's wrapper is anywhere in ``ClientSession.__init__``'s chain."""
    fn: Any = aiohttp.ClientSession.__dict__.get("__init__")
    while fn is not None:
        if _ours(fn):
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False


class AiotraceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """The ``BaseInstrumentor`` behind :func:`aiotrace.otel.instrument`."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("aiohttp >= 3.12, < 3.15",)

    def _instrument(self, **kwargs: Any) -> None:
        global _active
        phases = kwargs.get("phases", "attributes")
        if phases not in PHASE_MODES:
            raise ValueError(f"phases= takes 'attributes' or 'spans', not {phases!r}")
        otel = OTelTrace(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            propagate=kwargs.get("propagate", True),
            phases=phases,
            redaction=kwargs.get("redaction", DEFAULT_REDACTION),
        )
        _active = _Active(otel)
        if not _installed():
            wrapt.wrap_function_wrapper(aiohttp.ClientSession, "__init__", _traced_init)

    def _uninstrument(self, **kwargs: Any) -> None:
        global _active
        active, _active = _active, None
        current: Any = aiohttp.ClientSession.__dict__.get("__init__")
        if _ours(current):
            aiohttp.ClientSession.__init__ = current.__wrapped__  # type: ignore[method-assign]
        if active is None:
            return
        for session, wiring in list(active.sessions.items()):
            detach(session, wiring, active.otel.trace)
        active.sessions.clear()


def active_trace() -> OTelTrace | None:
    """The instrumentation's ``OTelTrace`` while it is on."""
    return None if _active is None else _active.otel
