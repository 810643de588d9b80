"""One traced request (:class:`RequestState`) and the context it runs in.

A request is made at the request boundary (``aiotrace._adapter.session``) when
``session.request()`` begins, and lives until ``request_done``. It owns its round trips
(``hop.py``), fires the request-level hooks and keeps rule 4 of ``hop.py``: ``request_start``
first and ``request_done`` last, exactly once each; between round trips ``redirect`` (the
previous hop got a response) or ``retry`` (it did not), before the next ``get_conn``.

``current_request`` holds the running request while ``session.request()`` runs; it is set and
reset by the request boundary in the caller's own task, so no value outlives the request.
A request's coroutine hooks run one at a time, outside any trace (:class:`SerialRunner`).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

from yarl import URL

from .clock import now as _now
from .clock import wall_time
from .context import scoped_trace
from .events import (
    GetConnInfo,
    RedirectInfo,
    RequestDoneInfo,
    RequestEndInfo,
    RequestExceptionInfo,
    RequestStartInfo,
    RetryInfo,
    RoundTrip,
)
from .hooks import hook_name, log
from .hop import HopState

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from .hooks import ClientTrace

__all__ = ["RequestCell", "RequestState", "SerialRunner", "current_request", "running_request"]

_request_ids = itertools.count(1)


class RequestCell:
    """What ``current_request`` holds while a request runs; emptied when ``request()`` returns.

    Callbacks and tasks aiohttp schedules during a request (keep-alive timers, the DNS task)
    capture the context, and may outlive the request: they keep only this emptied cell.
    No ``__init__``: the boundary sets ``state`` (one Python call fewer per request).
    """

    __slots__ = ("state",)

    state: RequestState | None


current_request: ContextVar[RequestCell | None] = ContextVar(
    "aiotrace_current_request", default=None
)


def running_request() -> RequestState | None:
    """The traced request running in this context, if any."""
    cell = current_request.get()
    return None if cell is None else cell.state


class SerialRunner:
    """Runs one request's coroutine hooks one at a time, in the order their events happened."""

    __slots__ = ("_queue", "_task")
    _tasks: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(self) -> None:
        self._queue: deque[tuple[Callable[[Any], Coroutine[Any, Any, object]], object]] = deque()
        self._task: asyncio.Task[None] | None = None

    def schedule(self, fn: Callable[[Any], Coroutine[Any, Any, object]], event: object) -> None:
        self._queue.append((fn, event))
        if self._task is None:
            # Hooks run outside any trace: a request a hook makes is its own, untraced one
            # (unless the hook scopes a trace itself), never part of the request it observes.
            context = contextvars.copy_context()
            context.run(_leave_traces)
            task = asyncio.get_running_loop().create_task(self._drain(), context=context)
            self._task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        queue = self._queue
        try:
            while queue:
                fn, event = queue.popleft()
                try:
                    await fn(event)
                except Exception:
                    log.exception("aiotrace: coroutine hook %s raised", hook_name(fn))
        finally:
            self._task = None
            if queue:  # cancelled with work left: never drop events silently
                log.warning("aiotrace: %d coroutine hook call(s) dropped", len(queue))
                queue.clear()


def _leave_traces() -> None:
    scoped_trace.set(None)
    current_request.set(None)


class RequestState:
    """One traced request from ``request_start`` to ``request_done``.

    Slotted, every slot set in ``__init__``, for the same reason as :class:`HopState`. The
    URL is kept as the caller gave it and parsed only when something reads ``url``.
    """

    __slots__ = (
        "_rt0",
        "_serial",
        "_url",
        "d",
        "deferred",
        "done",
        "err",
        "final_url",
        "hop",
        "hop_list",
        "id",
        "method",
        "observer_data",
        "pinned",
        "status",
        "t_done",
        "t_end",
        "t_start",
        "trace",
    )

    def __init__(self, trace: ClientTrace, method: str, url: Any) -> None:
        self.id = next(_request_ids)
        self.trace = trace
        self.d = trace._dispatch or trace.dispatch()
        self.method = method
        self._url = url
        self.t_start = _now()
        self.hop: HopState | None = None  # the current round trip
        # Every round trip, once there is a second; None for one (the usual request: one
        # object fewer for the cyclic GC to see, per request a Recorder keeps).
        self.hop_list: list[HopState] | None = None
        self.final_url: URL | None = None
        self.status: int | None = None
        self.err: BaseException | None = None
        self.t_end: float | None = None
        self.t_done: float | None = None
        self.done = False
        self.deferred: BaseException | None = None
        self.observer_data: Any = None  # an observer's own per-request value (OTel's context)
        # Someone reads the round trips after the request finishes (a Recorder keeping the
        # state whole, or a timeline view taken while it ran): finish() leaves them attached.
        self.pinned = False
        self._rt0: RoundTrip | None = None
        self._serial: SerialRunner | None = None

    @property
    def url(self) -> URL:
        """The URL the request was made with (parsed from the caller's string when first read;
        a string aiohttp rejects reads as an empty URL: aiohttp reports the error)."""
        url = self._url
        if not isinstance(url, URL):
            try:
                url = URL(url)
            except (TypeError, ValueError):
                url = URL()
            self._url = url
        return url

    def __repr__(self) -> str:
        return f"<RequestState #{self.id} {self.method} {self.url} hops={len(self.hops)}>"

    @property
    def hops(self) -> list[HopState]:
        """Every round trip so far, in order."""
        more = self.hop_list
        if more is not None:
            return more
        hop = self.hop
        return [] if hop is None else [hop]

    @property
    def started_at(self) -> float:
        """Wall-clock start (``time.time()`` scale), derived from the monotonic stamp."""
        return wall_time(self.t_start)

    @property
    def rt(self) -> RoundTrip:
        """The round trip request-level events belong to: the current hop, else the first."""
        hop = self.hop
        if hop is not None:
            return hop.rt
        rt = self._rt0
        if rt is None:
            rt = self._rt0 = RoundTrip._new(
                id=self.id, method=self.method, url=self.url, hop=0, attempt=0, _state=self
            )
        return rt

    def serial(self) -> SerialRunner:
        runner = self._serial
        if runner is None:
            runner = self._serial = SerialRunner()
        return runner

    def call_safely(self, name: str, h: Callable[[Any], None], event: object) -> None:
        """Fire hook ``name`` after the request returned: an error can only be logged."""
        try:
            h(event)
        except Exception:
            if self.d.raised(name):  # a propagate_errors hook: nothing left to fail
                log.exception("aiotrace: hook raised after the request returned; logged only")

    def raise_deferred(self) -> None:
        err = self.deferred
        if err is not None:
            self.deferred = None
            raise err

    # -- the request ------------------------------------------------------------------------

    def start(self) -> None:
        for started in self.d.starters:
            started(self)
        h = self.d.request_start
        if h is not None:
            try:
                h(
                    RequestStartInfo._new(
                        request=self.rt, time=self.t_start, method=self.method, url=self.url
                    )
                )
            except Exception:
                if self.d.raised("request_start"):
                    raise

    def begin_hop(self, method: str, url: URL) -> HopState:
        """A new round trip: the first, a redirect hop, or a retry (rule 1)."""
        prev = self.hop
        if prev is None:
            hop = HopState(self, method, url, 0, 0)
            if self._rt0 is not None and self._rt0.url == url and self._rt0.method == method:
                hop._rt = self._rt0
        elif prev.status is not None:
            hop = HopState(self, method, url, prev.index + 1, 0)
            h = self.d.redirect
            if h is not None:
                try:
                    h(
                        RedirectInfo._new(
                            request=hop.rt,
                            time=_now(),
                            status=prev.status,
                            from_url=prev.url,
                            to_url=url,
                        )
                    )
                except Exception:
                    if self.d.raised("redirect"):
                        raise
        else:
            err = prev.err or ConnectionError("the round trip failed before a response")
            prev.fail(err)
            hop = HopState(self, method, url, prev.index, prev.attempt + 1)
            h = self.d.retry
            if h is not None:
                reason = "stale pooled connection" if prev.reused else "connection failed"
                try:
                    h(RetryInfo._new(request=hop.rt, time=_now(), reason=reason, err=err))
                except Exception:
                    if self.d.raised("retry"):
                        raise
        if prev is not None:
            more = self.hop_list
            if more is None:
                self.hop_list = [prev, hop]
            else:
                more.append(hop)
        self.hop = hop
        h = self.d.get_conn
        if h is not None:
            try:
                h(
                    GetConnInfo._new(
                        request=hop.rt, time=hop.t_get_conn, host_port=f"{url.raw_host}:{url.port}"
                    )
                )
            except Exception:
                if self.d.raised("get_conn"):
                    raise
        return hop

    def end(self, response: Any) -> None:
        self.t_end = now = _now()
        self.status = status = response.status
        hop = self.hop
        # The response's URL is its round trip's (both without the fragment): a slot read
        # instead of ClientResponse.url, a property.
        self.final_url = url = hop.url if hop is not None else response.url
        h = self.d.request_end
        if h is not None:
            try:
                h(
                    RequestEndInfo._new(
                        request=self.rt, time=now, status=status, url=url, response=response
                    )
                )
            except Exception:
                if self.d.raised("request_end"):
                    raise
        if self.deferred is not None:  # a callback hook failed: the request fails with it
            self.raise_deferred()
        if hop is None or hop.t_body_done is not None:
            self.finish(None, now)

    def exception(self, err: BaseException) -> None:
        hop = self.hop
        if hop is not None:
            hop.fail(err)
        self.err = err
        self.t_end = now = _now()
        h = self.d.request_exception
        if h is not None:
            try:
                h(RequestExceptionInfo._new(request=self.rt, time=now, err=err))
            except Exception:
                log.exception("aiotrace: request_exception hook raised; the caller sees aiohttp's")
        self.finish(err)

    def finish(self, err: BaseException | None, now: float | None = None) -> None:
        """``request_done``: at ``now`` if the caller just took the time, else now."""
        if self.done:
            return
        self.done = True
        if now is None:
            now = _now()
        self.t_done = now
        d = self.d
        h = d.request_done
        if h is not None:
            self.call_safely(
                "request_done", h, RequestDoneInfo._new(request=self.rt, time=now, err=err)
            )
        for finished in d.finishers:
            finished(self)
        if not self.pinned:
            # Nothing will read the round trips again: drop the state -> hop references, so
            # the state and its hops (which point back at it) are freed as soon as the last
            # reference goes, not by a garbage-collector pass (measured: ~4k instructions
            # a request of GC traversal). A hop may still be called after this (a connection
            # lost late); it reaches only the state's own fields.
            self.hop_list = None
            self.hop = None
            self._rt0 = None
