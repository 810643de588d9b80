"""Tracing a ``ClientSession`` that someone else builds: what ``aiotrace.otel.instrument()``
does to every session made while it is on.

Theory of operation
-------------------
``wire(kwargs, trace)`` runs just before ``ClientSession.__init__(**kwargs)``, ``attach``
right after it, and ``detach`` when the instrumentation is turned off. Which hooks the
session gets depends on its connector (the README's table names them):

1. No connector given (aiohttp would make a default ``TCPConnector``): the session gets a
   :class:`TracingConnector` made the same way (the same loop, and ``ssl_shutdown_timeout``
   if given) and the traced request class: every hook, as in ``traced_session()``.
2. A plain ``TCPConnector`` or ``UnixConnector`` that has never held a connection, or a
   ``TracingConnector``/``TracingUnixConnector``: the same, the former made a tracing
   connector in place (``TracingConnector.adopt``).
3. Any other connector (a subclass, a proxy library's, a shared one already in use): the
   session gets ``trace_config(trace)`` added to its ``trace_configs``, and
   with it what aiohttp's signals can feed.

A session of kind 1 or 2 gets the request boundary with ``trace`` composed after any session
trace it already has (``traced_session(trace=...)`` puts its own before it); ``detach``
takes ``trace`` out again and leaves an idle boundary (or removes the TraceConfig). A
failure to build the connector leaves the arguments as they were, so the caller sees
aiohttp's own error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import ClientRequest, TraceConfig

from .._trace.hooks import ClientTrace, compose
from .connector import TracingConnector, TracingUnixConnector
from .messages import traced_request_class
from .private import acquired_key, pool_contents, trace_config_list
from .session import session_trace_of, set_session_trace
from .signals import trace_config

if TYPE_CHECKING:
    from aiohttp import BaseConnector, ClientSession

__all__ = ["Wiring", "attach", "detach", "pool_counts", "wire"]

_TRACING = (TracingConnector, TracingUnixConnector)


class Wiring:
    """How one session is traced: through its connector, or a TraceConfig (``signals``)."""

    __slots__ = ("connector", "signals")

    def __init__(self, connector: BaseConnector | None, signals: TraceConfig | None) -> None:
        self.connector = connector
        self.signals = signals


def wire(kwargs: dict[str, Any], trace: ClientTrace) -> Wiring:
    """Change ``ClientSession.__init__``'s keyword arguments so the session can be traced."""
    connector = kwargs.get("connector")
    if connector is None:
        options = {k: kwargs[k] for k in ("loop", "ssl_shutdown_timeout") if k in kwargs}
        try:
            connector = TracingConnector(**options)
        except Exception:  # no running loop, a bad argument: aiohttp will say so itself
            return Wiring(None, None)
        kwargs["connector"] = connector
    elif not isinstance(connector, _TRACING) and not TracingConnector.adopt(connector):
        signals = trace_config(trace)
        kwargs["trace_configs"] = [*(kwargs.get("trace_configs") or ()), signals]
        return Wiring(connector, signals)
    kwargs["request_class"] = traced_request_class(kwargs.get("request_class", ClientRequest))
    return Wiring(connector, None)


def attach(session: ClientSession, wiring: Wiring, trace: ClientTrace) -> None:
    """Give the session built with ``wire``'s arguments the request boundary with ``trace``."""
    if wiring.signals is None and isinstance(wiring.connector, _TRACING):
        set_session_trace(session, compose(session_trace_of(session), trace))


def detach(session: ClientSession, wiring: Wiring, trace: ClientTrace) -> None:
    """Stop tracing ``session`` with ``trace`` (requests already started finish traced)."""
    if wiring.signals is not None:
        configs = trace_config_list(session)
        if wiring.signals in configs:
            configs.remove(wiring.signals)
        return
    current = session_trace_of(session)
    if current is None:
        return
    rest = [part for part in current._parts or (current,) if part is not trace]
    set_session_trace(session, compose(*rest))


def pool_counts(connector: BaseConnector) -> list[tuple[str, int | None, int, int]]:
    """``(host, port, in use, idle)`` per server the connector holds connections to. A
    connection in use is placed by its pool key (known to aiotrace's protocol once a traced
    round trip opened it or it was released once, or to aiohttp with ``limit_per_host``),
    else by its peer's address."""
    active, idle = pool_contents(connector)
    counts: dict[tuple[str, int | None], list[int]] = {}
    for proto in active:
        cs = getattr(proto, "aiotrace_conn", None)
        key = cs.key if cs is not None else None
        if key is None:
            key = acquired_key(connector, proto)
        if key is not None:
            where = (key.host, key.port)
        else:
            peer = proto.transport.get_extra_info("peername") if proto.transport else None
            where = (str(peer[0]), int(peer[1])) if peer else ("", None)
        counts.setdefault(where, [0, 0])[0] += 1
    for key, n in idle:
        counts.setdefault((key.host, key.port), [0, 0])[1] += n
    return [(host, port, a, i) for (host, port), (a, i) in counts.items()]
