"""``ClientTrace``: the hooks, how traces compose, and how a trace's hooks are dispatched.

A trace is compiled once into a :class:`Dispatch`: one attribute per hook, ``None`` where no
one listens, so an emitter pays one attribute read and one ``is None`` test for a hook nobody
set, and builds no event for it. Compiling handles the three things a hook can be:

* a plain function: called inline, at the moment of the event (as in Go);
* a coroutine function: scheduled, never awaited inline; one request's coroutine hooks run one
  at a time in event order (:class:`SerialRunner`);
* a hook that raises: logged on the ``aiotrace`` logger and the request goes on, unless its
  trace was made with ``propagate_errors=True``.

Composition follows Go's ``WithClientTrace``: for a hook set in both, the inner (newer) trace's
runs first, then the outer's. A trace already in the chain is not added again, so attaching
the same trace twice calls each hook once and never recurses.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from .events import (
    ConnectDoneInfo,
    ConnectStartInfo,
    DNSDoneInfo,
    DNSStartInfo,
    GetConnInfo,
    Got1xxResponseInfo,
    Got100ContinueInfo,
    GotConnInfo,
    GotFirstResponseByteInfo,
    PoolWaitDoneInfo,
    PoolWaitStartInfo,
    ProxyConnectDoneInfo,
    ProxyConnectStartInfo,
    PutIdleConnInfo,
    RedirectInfo,
    RequestDoneInfo,
    RequestEndInfo,
    RequestExceptionInfo,
    RequestStartInfo,
    ResponseBodyDoneInfo,
    RetryInfo,
    TLSHandshakeDoneInfo,
    TLSHandshakeStartInfo,
    Wait100ContinueInfo,
    WroteHeaderFieldInfo,
    WroteHeadersInfo,
    WroteRequestInfo,
)
from .sampling import Sample, make_sampler

__all__ = ["HOOK_NAMES", "ClientTrace", "Dispatch", "Sampling", "compose", "hook_name", "log"]

log = logging.getLogger("aiotrace")

E = TypeVar("E")
_Hook: TypeAlias = Callable[[E], object] | None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, weakref_slot=True)
class ClientTrace:
    """Optional hooks called as a traced request runs; each takes one event object.

    Go's hooks in snake_case, then what an aiohttp client adds over Go's transport. A hook may
    be a plain function (called inline) or a coroutine function (scheduled, run in order).
    ``propagate_errors=True`` lets a hook's exception fail the request instead of being logged.
    """

    # Go's net/http/httptrace hooks.
    get_conn: _Hook[GetConnInfo] = None
    got_conn: _Hook[GotConnInfo] = None
    put_idle_conn: _Hook[PutIdleConnInfo] = None
    got_first_response_byte: _Hook[GotFirstResponseByteInfo] = None
    got_100_continue: _Hook[Got100ContinueInfo] = None
    got_1xx_response: _Hook[Got1xxResponseInfo] = None
    dns_start: _Hook[DNSStartInfo] = None
    dns_done: _Hook[DNSDoneInfo] = None
    connect_start: _Hook[ConnectStartInfo] = None
    connect_done: _Hook[ConnectDoneInfo] = None
    tls_handshake_start: _Hook[TLSHandshakeStartInfo] = None
    tls_handshake_done: _Hook[TLSHandshakeDoneInfo] = None
    wrote_header_field: _Hook[WroteHeaderFieldInfo] = None
    wrote_headers: _Hook[WroteHeadersInfo] = None
    wait_100_continue: _Hook[Wait100ContinueInfo] = None
    wrote_request: _Hook[WroteRequestInfo] = None
    # What an aiohttp client adds: the request around its round trips, and the pool.
    request_start: _Hook[RequestStartInfo] = None
    redirect: _Hook[RedirectInfo] = None
    retry: _Hook[RetryInfo] = None
    request_end: _Hook[RequestEndInfo] = None
    request_exception: _Hook[RequestExceptionInfo] = None
    pool_wait_start: _Hook[PoolWaitStartInfo] = None
    pool_wait_done: _Hook[PoolWaitDoneInfo] = None
    proxy_connect_start: _Hook[ProxyConnectStartInfo] = None
    proxy_connect_done: _Hook[ProxyConnectDoneInfo] = None
    response_body_done: _Hook[ResponseBodyDoneInfo] = None
    request_done: _Hook[RequestDoneInfo] = None

    propagate_errors: bool = False
    # Head sampling (see sampling.py): a ratio in (0, 1] or a callable (method, url) -> bool,
    # asked once per request at the request boundary; None traces every request.
    sample: Sample = None
    sample_seed: int | None = None

    # Internal observers (a Recorder) see the RequestState itself at start and finish,
    # so they need no per-event objects: objects with ``on_start`` and ``on_finish``, each
    # a callable taking the state or None (not wanted: nothing is called). An observer that
    # holds on to a state after on_finish sets ``state.pinned`` (a finished state no one
    # pinned is taken apart: see RequestState.finish). An observer may also have
    # ``on_send(state, headers, version)``: called as each round trip's request is about to
    # go out, with its headers still open to change (the OTel export's propagation).
    _observers: tuple[Any, ...] = field(default=(), repr=False)
    _parts: tuple[ClientTrace, ...] = field(default=(), repr=False)
    _dispatch: Dispatch | None = field(default=None, init=False, repr=False)
    _sampler: Callable[[str, Any], bool] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.sample is not None:  # checked here: a bad ratio fails where it was written
            object.__setattr__(self, "_sampler", make_sampler(self.sample, self.sample_seed))

    def dispatch(self) -> Dispatch:
        """The compiled dispatch table (built on first use, then reused)."""
        d = self._dispatch
        if d is None:
            d = Dispatch(self._parts or (self,))
            object.__setattr__(self, "_dispatch", d)
        return d


_NOT_HOOKS = (
    "propagate_errors",
    "sample",
    "sample_seed",
    "_observers",
    "_parts",
    "_dispatch",
    "_sampler",
)
HOOK_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ClientTrace) if f.name not in _NOT_HOOKS)


def hook_name(fn: object) -> str:
    return getattr(fn, "__qualname__", repr(fn))


def _compile_one(
    fn: Callable[[Any], object], propagate: bool, alone: bool = False
) -> Callable[[Any], None]:
    """What the dispatch calls for one trace's hook ``fn``. A plain function is called as it
    is where errors propagate, or where it is the hook's only function (``alone``: the
    emitter's own ``except`` logs its errors, see ``Dispatch.raised``); in a chain, a
    function whose errors are only logged gets a wrapper that logs them."""
    if inspect.iscoroutinefunction(fn):
        coro_fn = fn

        def schedule(event: Any) -> None:
            event.request._state.serial().schedule(coro_fn, event)

        return schedule
    if propagate or alone:
        return fn  # type: ignore[return-value]

    def call(event: Any) -> None:
        try:
            fn(event)
        except Exception:
            log.exception("aiotrace: hook %s raised; the request goes on", hook_name(fn))

    return call


def _chain(calls: list[Callable[[Any], None]]) -> Callable[[Any], None]:
    if len(calls) == 1:
        return calls[0]
    seq = tuple(calls)

    def chained(event: Any) -> None:
        # Every trace sees the event even if an earlier one's hook raises (propagate_errors).
        error = None
        for c in seq:
            try:
                c(event)
            except Exception as e:
                if error is None:
                    error = e
        if error is not None:
            raise error

    return chained


class Dispatch:
    """One attribute per hook: a callable taking the event, or ``None`` if no one listens.

    An emitter calls the hook inside ``try``, and in its ``except`` asks ``raised(name)``
    whether to re-raise (a ``propagate_errors`` trace's hook) or go on (the error is logged):
    a hook set by one trace is that trace's own function, called with no wrapper frame.
    """

    __slots__ = (
        *HOOK_NAMES,
        "finishers",
        "propagating",
        "releases",
        "sampling",
        "senders",
        "starters",
        "starts",
        "writes",
    )

    def __init__(self, parts: tuple[ClientTrace, ...]) -> None:
        observers = tuple(o for part in parts for o in part._observers)
        # The observers' callables, read once: a RequestState calls them directly.
        self.starters: tuple[Callable[[Any], None], ...] = tuple(
            o.on_start for o in observers if o.on_start is not None
        )
        self.finishers: tuple[Callable[[Any], None], ...] = tuple(
            o.on_finish for o in observers if o.on_finish is not None
        )
        self.senders: tuple[Callable[[Any, Any, Any], None], ...] = tuple(
            send for o in observers if (send := getattr(o, "on_send", None)) is not None
        )
        propagating = set()
        for name in HOOK_NAMES:
            setters = [part for part in parts if getattr(part, name) is not None]
            calls = [
                _compile_one(getattr(p, name), p.propagate_errors, len(setters) == 1)
                for p in setters
            ]
            setattr(self, name, _chain(calls) if calls else None)
            # What reaches the emitter's except: a chain raises only propagating errors.
            if len(setters) > 1 or any(p.propagate_errors for p in setters):
                propagating.add(name)
        self.propagating = frozenset(propagating)
        # One test each on the hot path instead of two or three (see where they are read).
        self.starts = bool(self.starters) or self.request_start is not None
        self.writes = not (
            self.wrote_header_field is None
            and self.wrote_headers is None
            and self.wrote_request is None
        )
        self.releases = not (self.response_body_done is None and self.put_idle_conn is None)
        # Head sampling: None unless a part samples (the boundary then asks ``decide``).
        self.sampling = Sampling(parts) if any(p._sampler for p in parts) else None

    def raised(self, name: str) -> bool:
        """Hook ``name`` raised (call from the emitter's ``except``): ``True`` to re-raise
        (its trace propagates errors); else the error is logged and the request goes on."""
        if name in self.propagating:
            return True
        log.exception(
            "aiotrace: hook %s raised; the request goes on", hook_name(getattr(self, name))
        )
        return False

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Callable[[Any], None] | None: ...


class Sampling:
    """A sampling trace's decision for one request, asked by the request boundary.

    ``decide(method, url)`` returns the trace to run the request with (the parts that sampled
    it, composed; ``None``: none did, so the request runs untraced) and the ``on_unsampled``
    counters of the observers whose part did not sample it. One trace (the usual case): one
    call of its sampler and no allocation.
    """

    __slots__ = ("carrier", "counters", "decide", "parts")

    def __init__(self, parts: tuple[ClientTrace, ...]) -> None:
        self.parts = parts
        # The first observer with ``at_boundary(chosen, kw)``, called by the boundary right
        # after the decision (the OTel export: it injects the trace context of a request it
        # did not sample into ``kw``, and hands the span it started to one it did).
        self.carrier: Callable[[ClientTrace | None, dict[str, Any]], Any] | None = next(
            (
                c
                for part in parts
                for o in part._observers
                if (c := getattr(o, "at_boundary", None)) is not None
            ),
            None,
        )

        def counters(part: ClientTrace) -> tuple[Callable[..., None], ...]:
            return tuple(
                c for o in part._observers if (c := getattr(o, "on_unsampled", None)) is not None
            )

        # Each part's ``on_unsampled`` counters, in the order of ``parts``.
        self.counters = tuple(counters(p) for p in parts)
        self.decide: Callable[[str, Any], tuple[ClientTrace | None, tuple[Any, ...]]]
        if len(parts) == 1:
            part = parts[0]
            sampler = part._sampler
            assert sampler is not None
            yes: tuple[ClientTrace | None, tuple[Any, ...]] = (part, ())
            no: tuple[ClientTrace | None, tuple[Any, ...]] = (None, counters(part))

            draw = getattr(sampler, "draw", None)
            if draw is not None:  # a ratio: its draw inline, one frame fewer per request
                rate: float = sampler.rate  # type: ignore[attr-defined]

                def decide_ratio(
                    method: str, url: Any
                ) -> tuple[ClientTrace | None, tuple[Any, ...]]:
                    return yes if draw() < rate else no

                self.decide = decide_ratio
                return

            def decide_one(method: str, url: Any) -> tuple[ClientTrace | None, tuple[Any, ...]]:
                return yes if sampler(method, url) else no

            self.decide = decide_one
            return
        each = tuple((p, p._sampler, counters(p)) for p in parts)

        def decide(method: str, url: Any) -> tuple[ClientTrace | None, tuple[Any, ...]]:
            chosen: list[ClientTrace] = []
            declined: list[Any] = []
            for part, sampler, part_counters in each:
                if sampler is None or sampler(method, url):
                    chosen.append(part)
                else:
                    declined.extend(part_counters)
            return compose(*chosen), tuple(declined)

        self.decide = decide


# Composed traces by their parts' ids. Weak values: a composed trace holds its parts, so a
# strong cache would keep every Recorder ever composed alive.
_compose_cache: weakref.WeakValueDictionary[tuple[int, ...], ClientTrace] = (
    weakref.WeakValueDictionary()
)


def compose(*traces: ClientTrace | None) -> ClientTrace | None:
    """Compose traces, innermost first; each trace's hooks run once however often it appears."""
    parts: list[ClientTrace] = []
    for trace in traces:
        if trace is None:
            continue
        for part in trace._parts or (trace,):
            if not any(p is part for p in parts):
                parts.append(part)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    key = tuple(id(p) for p in parts)
    hit = _compose_cache.get(key)
    if hit is not None and all(a is b for a, b in zip(hit._parts, parts, strict=True)):
        return hit
    hooks: dict[str, Any] = {}
    for name in HOOK_NAMES:
        fns = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        if fns:
            hooks[name] = _call_all(fns)
    observers = tuple(o for p in parts for o in p._observers)
    composed = ClientTrace(**hooks, _observers=observers, _parts=tuple(parts))
    _compose_cache[key] = composed
    return composed


def _call_all(fns: list[Callable[[Any], object]]) -> Callable[[Any], None]:
    """A composed hook as a user calls it directly: each part's hook in order."""

    def call(event: Any) -> None:
        for fn in fns:
            result = fn(event)
            if inspect.iscoroutine(result):
                event.request._state.serial().schedule(lambda _e, c=result: c, event)

    return call
