"""``trace_config()``: ClientTrace hooks fed from aiohttp's own TraceConfig signals alone.

For a ``ClientSession`` you build yourself (``trace_configs=[aiotrace.trace_config()]``). It
fires every hook aiohttp's 16 signals can feed; the README's table lists which hooks need the
connector instead (per-address connects, TLS, first byte, 1xx, idle times, put_idle_conn).
aiohttp builds these signals' parameters and awaits them for every request, traced or not,
which costs 10-20% per request: ``traced_session()`` does not use them.

Round trips are inferred from the connection signals: each ``connection_queued_start``,
``connection_create_start`` or ``connection_reuseconn`` that is not part of a round trip
already connecting begins one. In a ``traced_session`` the request is traced by the session
itself, and this adapter stays silent for it (no event is reported twice).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from aiohttp import TraceConfig
from yarl import URL

from .._trace.connection import ConnState
from .._trace.context import scoped_trace
from .._trace.events import ConnInfo
from .._trace.hooks import ClientTrace, compose
from .._trace.hop import HopState
from .._trace.request import RequestState, running_request

__all__ = ["trace_config"]


class _Ctx(SimpleNamespace):
    state: RequestState | None
    trace: ClientTrace | None
    connecting: bool
    next_url: URL | None


def _hop(ctx: _Ctx, *, begin: bool = False) -> HopState | None:
    state = ctx.state
    if state is None:
        return None
    if begin and not ctx.connecting:
        ctx.connecting = True
        url = ctx.next_url or state.url
        ctx.next_url = None
        return state.begin_hop(state.method, url)
    return state.hop


def trace_config(trace: ClientTrace | None = None) -> TraceConfig:
    """An ``aiohttp.TraceConfig`` that feeds ClientTrace hooks from aiohttp's signals.

    ``trace`` applies to every request of the session; per-request traces come in through
    ``trace_request_ctx=`` and scoped ones through ``with_client_trace``.
    """

    def factory(trace_request_ctx: object = None, **_: Any) -> _Ctx:
        per_request = trace_request_ctx if isinstance(trace_request_ctx, ClientTrace) else None
        if per_request is None:
            inner = getattr(trace_request_ctx, "trace", None)
            per_request = inner if isinstance(inner, ClientTrace) else None
        composed = None
        if running_request() is None:  # a traced_session already traces this request
            composed = compose(per_request, scoped_trace.get(), trace)
        return _Ctx(state=None, trace=composed, connecting=False, next_url=None)

    tc = TraceConfig(trace_config_ctx_factory=cast(Any, factory))

    async def on_request_start(_s: Any, ctx: _Ctx, p: Any) -> None:
        if ctx.trace is not None:
            state = ctx.state = RequestState(ctx.trace, p.method, p.url)
            state.start()
            # The request's own headers, copied into each round trip's request: one chance,
            # before the first (no signal comes before a later round trip's is built).
            for send in state.d.senders:
                send(state, p.headers, None)

    async def on_queued_start(_s: Any, ctx: _Ctx, _p: Any) -> None:
        hop = _hop(ctx, begin=True)
        if hop is not None:
            hop.pool_wait_start()

    async def on_queued_end(_s: Any, ctx: _Ctx, _p: Any) -> None:
        hop = _hop(ctx)
        if hop is not None:
            hop.pool_wait_done(None)

    async def on_create_start(_s: Any, ctx: _Ctx, _p: Any) -> None:
        _hop(ctx, begin=True)

    async def on_create_end(_s: Any, ctx: _Ctx, _p: Any) -> None:
        _got_conn(ctx, reused=False)

    async def on_reuseconn(_s: Any, ctx: _Ctx, _p: Any) -> None:
        _hop(ctx, begin=True)
        _got_conn(ctx, reused=True)

    async def on_dns_start(_s: Any, ctx: _Ctx, p: Any) -> None:
        hop = _hop(ctx)
        if hop is not None:
            hop.dns_start(p.host)

    async def on_dns_end(_s: Any, ctx: _Ctx, _p: Any) -> None:
        hop = _hop(ctx)
        if hop is not None:
            hop.dns_done((), None, False, False)

    async def on_dns_cache_hit(_s: Any, ctx: _Ctx, p: Any) -> None:
        hop = _hop(ctx)
        if hop is not None:
            hop.dns_start(p.host)
            hop.dns_done((), None, False, True)

    async def on_headers_sent(_s: Any, ctx: _Ctx, p: Any) -> None:
        hop = _hop(ctx)
        if hop is not None:
            hop.wrote_headers(p.headers)

    async def on_redirect(_s: Any, ctx: _Ctx, p: Any) -> None:
        hop = _hop(ctx)
        if hop is not None:
            hop.wrote_request(None)
            hop.got_status(p.response.status)
            location = p.response.headers.get("Location")
            if location:
                ctx.next_url = p.url.join(URL(location))

    async def on_request_end(_s: Any, ctx: _Ctx, p: Any) -> None:
        state = ctx.state
        if state is None:
            return
        hop = state.hop
        if hop is not None:
            hop.wrote_request(None)
            hop.got_status(p.response.status)
        state.end(p.response)

    async def on_chunk_received(_s: Any, ctx: _Ctx, _p: Any) -> None:
        hop = _hop(ctx)
        if hop is not None:
            hop.body_done(None)
            state = hop.state
            if state.t_end is not None:
                state.finish(None)

    async def on_request_exception(_s: Any, ctx: _Ctx, p: Any) -> None:
        if ctx.state is not None:
            ctx.state.exception(p.exception)

    handlers: tuple[tuple[Any, Any], ...] = (
        (tc.on_request_start, on_request_start),
        (tc.on_connection_queued_start, on_queued_start),
        (tc.on_connection_queued_end, on_queued_end),
        (tc.on_connection_create_start, on_create_start),
        (tc.on_connection_create_end, on_create_end),
        (tc.on_connection_reuseconn, on_reuseconn),
        (tc.on_dns_resolvehost_start, on_dns_start),
        (tc.on_dns_resolvehost_end, on_dns_end),
        (tc.on_dns_cache_hit, on_dns_cache_hit),
        (tc.on_request_headers_sent, on_headers_sent),
        (tc.on_request_redirect, on_redirect),
        (tc.on_request_end, on_request_end),
        (tc.on_response_chunk_received, on_chunk_received),
        (tc.on_request_exception, on_request_exception),
    )
    for signal, handler in handlers:
        signal.append(handler)
    tc.freeze()
    return tc


def _got_conn(ctx: _Ctx, *, reused: bool) -> None:
    hop = _hop(ctx)
    if hop is None:
        return
    ctx.connecting = False
    cs = ConnState()  # signals name no connection: a stand-in without addresses
    cs.info = ConnInfo(id=cs.id, local_addr=None, remote_addr=None, tls=None, proxy=None)
    hop.got_conn(cs, reused, 0.0)
