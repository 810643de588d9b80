"""``traced_session()`` and the request boundary: where a traced request begins and ends.

The boundary wraps the session's ``_request`` (see ``private.install_request_boundary``).
Per call it composes the per-request trace (``trace_request_ctx=``), the scoped trace
(``with_client_trace``) and the session's ``trace=``, innermost first. None active: it returns
aiohttp's own coroutine, untouched. Otherwise it makes the :class:`RequestState`, fires
``request_start``, runs the request with ``current_request`` set in the caller's task, and
fires ``request_end`` or ``request_exception`` before handing back exactly what aiohttp gave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import ClientRequest, ClientResponse, ClientSession

from .._trace.clock import now as _now
from .._trace.context import scoped_trace
from .._trace.hooks import ClientTrace, compose
from .._trace.request import RequestCell, RequestState, current_request
from .connector import TracingConnector, TracingUnixConnector
from .messages import traced_request_class
from .private import install_request_boundary

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["session_trace_of", "set_session_trace", "traced_session"]


def _as_trace(obj: object, what: str) -> ClientTrace | None:
    if obj is None or isinstance(obj, ClientTrace):
        return obj
    trace = getattr(obj, "trace", None)  # a Recorder, or anything carrying a .trace
    if isinstance(trace, ClientTrace):
        return trace
    if what == "trace=":
        raise TypeError(f"traced_session(trace=...) takes a ClientTrace, not {type(obj).__name__}")
    return None


def traced_session(
    *,
    trace: ClientTrace | Any = None,
    connector: TracingConnector | TracingUnixConnector | None = None,
    request_class: type[ClientRequest] = ClientRequest,
    response_class: type[ClientResponse] = ClientResponse,
    **kwargs: Any,
) -> ClientSession:
    """An ``aiohttp.ClientSession`` wired for tracing; takes every ``ClientSession`` argument.

    ``trace=`` (a :class:`ClientTrace` or a :class:`Recorder`) traces every request of the
    session, composing with scoped and per-request traces. ``connector`` must be a
    :class:`TracingConnector` (one with default settings is made if omitted) or, for a Unix
    socket, a :class:`TracingUnixConnector`.
    """
    session_trace = _as_trace(trace, "trace=")
    if connector is None:
        connector = TracingConnector()
    elif not isinstance(connector, (TracingConnector, TracingUnixConnector)):
        raise TypeError(
            "traced_session(connector=...) needs an aiotrace.TracingConnector (it takes every "
            "TCPConnector argument) or aiotrace.TracingUnixConnector (every UnixConnector "
            f"argument), not {type(connector).__name__}"
        )
    session = ClientSession(
        connector=connector,
        request_class=traced_request_class(request_class),
        response_class=response_class,
        **kwargs,
    )
    # A boundary may be there already (aiotrace.otel.instrument()): its trace is the outer one.
    set_session_trace(session, compose(session_trace, session_trace_of(session)))
    return session


def set_session_trace(session: ClientSession, trace: ClientTrace | None) -> None:
    """Give ``session`` the request boundary with ``trace`` as its session trace, replacing
    the boundary it has (aiotrace.otel.instrument() adds its trace to a session being built,
    traced_session() then its own, and uninstrument() takes instrument()'s out again)."""
    parts = _parts(session._request)
    aiohttp_request = session._request if parts is None else parts[0]
    install_request_boundary(session, _boundary(aiohttp_request, trace))


def session_trace_of(session: ClientSession) -> ClientTrace | None:
    """The session trace of ``session``'s request boundary (``None`` if it has none)."""
    parts = _parts(session._request)
    return None if parts is None else parts[1]


def _parts(
    request: Any,
) -> tuple[Callable[..., Coroutine[Any, Any, Any]], ClientTrace | None] | None:
    """What a boundary was made of: aiohttp's own ``_request`` and the session trace (kept on
    the boundary function itself, so nothing outside the session refers to it)."""
    parts: Any = getattr(request, "aiotrace_parts", None)
    return parts  # type: ignore[no-any-return]


def _sampled_rows(trace: ClientTrace | None) -> tuple[Any, float, ClientTrace, Any] | None:
    """For the usual sampling session, a ``Recorder(sample=ratio)`` as its only trace: the
    ratio's draw and rate, the trace a sampled request runs with, and the Recorder's
    ``BoundaryCounts``, so that the boundary decides and counts inline (what ``decide``, the
    carrier and counter lookups would cost per request: ~1.5k instructions, measured). ``None``
    for any other session trace: the general path."""
    if trace is None:
        return None
    sampling = trace.dispatch().sampling  # a ClientTrace is frozen: its dispatch never changes
    if sampling is None or sampling.carrier is not None or len(sampling.parts) != 1:
        return None
    part = sampling.parts[0]
    sampler: Any = part._sampler
    draw = getattr(sampler, "draw", None)
    counters = sampling.counters[0]
    if draw is None or len(counters) != 1 or getattr(counters[0], "rows", None) is None:
        return None
    return draw, sampler.rate, part, counters[0]


def _boundary(
    aiohttp_request: Callable[..., Coroutine[Any, Any, Any]], session_trace: ClientTrace | None
) -> Callable[..., Any]:
    inline = _sampled_rows(session_trace)
    draw, rate, sampled_trace, rows_of = inline or (None, 0.0, None, None)

    def _request(method: str, str_or_url: Any, **kw: Any) -> Any:
        trace_request_ctx = kw.get("trace_request_ctx")
        scoped = scoped_trace.get()
        if trace_request_ctx is None and scoped is None:
            if session_trace is None:
                return aiohttp_request(method, str_or_url, **kw)
            if draw is not None:  # the session's Recorder(sample=ratio), decided inline
                if draw() < rate:
                    assert sampled_trace is not None
                    return _traced(aiohttp_request, sampled_trace, False, method, str_or_url, kw)
                run = aiohttp_request(method, str_or_url, **kw)
                return _counted_rows(run, rows_of, str_or_url)
        per_request = None if trace_request_ctx is None else _as_trace(trace_request_ctx, "")
        if per_request is None and scoped is None and session_trace is None:
            return aiohttp_request(method, str_or_url, **kw)
        if per_request is None and scoped is None:
            trace = session_trace
        else:
            trace = compose(per_request, scoped, session_trace)
        assert trace is not None
        sampling = (trace._dispatch or trace.dispatch()).sampling
        if sampling is not None:  # head sampling: decided here, once for the whole request
            chosen, counters = sampling.decide(method, str_or_url)
            # An observer adding to the request here (the OTel export: the trace context of
            # a request it did not sample) may change ``kw``; what it returns goes to the
            # traced request as its ``observer_data`` (the OTel span the sampler started).
            carrier = sampling.carrier
            data = None if carrier is None else carrier(chosen, kw)
            if chosen is not None:
                run = _traced(
                    aiohttp_request, chosen, scoped is not None, method, str_or_url, kw, data
                )
                return _counted(run, counters, False, method, str_or_url) if counters else run
            if counters or scoped is not None:
                run = aiohttp_request(method, str_or_url, **kw)
                if scoped is None and len(counters) == 1:
                    counts = counters[0]
                    if getattr(counts, "rows", None) is not None:  # a BoundaryCounts
                        return _counted_rows(run, counts, str_or_url)
                return _counted(run, counters, scoped is not None, method, str_or_url)
            return aiohttp_request(method, str_or_url, **kw)
        return _traced(aiohttp_request, trace, scoped is not None, method, str_or_url, kw)

    _request.aiotrace_parts = (aiohttp_request, session_trace)  # type: ignore[attr-defined]
    return _request


async def _counted(
    run: Coroutine[Any, Any, Any],
    counters: tuple[Callable[..., None], ...],
    leave_scope: bool,
    method: str,
    str_or_url: Any,
) -> Any:
    """Run the request, then tell each counter ``(method, url, status, error, start, end)``:
    one clock read at each end, nothing per phase.

    For a request no trace sampled (``run`` is aiohttp's own coroutine), ``leave_scope``
    leaves the scoped trace while it runs, as ``_traced`` does: contexts aiohttp copies
    (timers, pooled transports) must not keep the trace, nor a Recorder behind it, alive.
    """
    token = scoped_trace.set(None) if leave_scope else None
    t0 = _now()
    try:
        response = await run
    except BaseException as e:
        t1 = _now()
        for count in counters:
            count(method, str_or_url, None, e, t0, t1)
        raise
    finally:
        if token is not None:
            scoped_trace.reset(token)
    t1 = _now()
    for count in counters:
        count(method, str_or_url, response.status, None, t0, t1)
    return response


async def _counted_rows(run: Coroutine[Any, Any, Any], counts: Any, str_or_url: Any) -> Any:
    """``_counted`` for the usual case, one Recorder's ``BoundaryCounts`` and no scope to
    leave: its row appended here, with no call (folded every ``limit`` values, or when the
    Recorder's stats are read)."""
    rows = counts.rows
    t0 = _now()
    try:
        response = await run
    except BaseException as e:
        rows += (str_or_url, None, type(e).__name__, _now() - t0)
        raise
    rows += (str_or_url, response.status, None, _now() - t0)
    if len(rows) >= counts.limit:
        counts.fold()
    return response


async def _traced(
    aiohttp_request: Callable[..., Coroutine[Any, Any, Any]],
    trace: ClientTrace,
    in_scope: bool,
    method: str,
    str_or_url: Any,
    kw: dict[str, Any],
    observer_data: Any = None,
) -> Any:
    state = RequestState(trace, method.upper(), str_or_url)
    if observer_data is not None:
        state.observer_data = observer_data
    cell = RequestCell()
    cell.state = state
    token = current_request.set(cell)
    # The scoped trace is already in the state: contexts aiohttp copies during the request
    # (timers, pooled transports) must not keep it, nor the Recorder behind it, alive.
    scoped_token = scoped_trace.set(None) if in_scope else None
    response = None
    try:
        try:
            if state.d.starts:
                state.start()
            response = await aiohttp_request(method, str_or_url, **kw)
            state.end(response)
        except BaseException as e:  # aiohttp's error, or a propagate_errors hook's
            if response is not None:
                response.close()
            hook_error = state.deferred
            if hook_error is not None and hook_error is not e:
                # A hook failed in a loop callback and aborted the request: its error wins.
                state.deferred = None
                state.exception(hook_error)
                raise hook_error from e
            state.exception(e)
            raise
        return response
    finally:
        cell.state = None
        if scoped_token is not None:
            scoped_trace.reset(scoped_token)
        current_request.reset(token)
