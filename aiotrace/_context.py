"""Which trace is active: the scoped trace (``with_client_trace``) and the running request.

Two ContextVars. ``_scoped`` holds the composed trace of the enclosing ``with`` blocks; tasks
created inside a block copy it, so their requests are traced too. ``current_request`` holds
the :class:`~aiotrace._state.RequestState` while ``session.request()`` runs; it is set and
reset by the request boundary in the caller's own task, so no value outlives the request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from ._hooks import ClientTrace, compose

if TYPE_CHECKING:
    from ._state import RequestState

__all__ = [
    "RequestCell",
    "context_client_trace",
    "current_request",
    "running_request",
    "scoped_trace",
    "with_client_trace",
]


class RequestCell:
    """What ``current_request`` holds while a request runs; emptied when ``request()`` returns.

    Callbacks and tasks aiohttp schedules during a request (keep-alive timers, the DNS task)
    capture the context, and may outlive the request: they keep only this emptied cell.
    No ``__init__``: the boundary sets ``state`` (one Python call fewer per request).
    """

    __slots__ = ("state",)

    state: RequestState | None


scoped_trace: ContextVar[ClientTrace | None] = ContextVar("aiotrace_scoped_trace", default=None)
current_request: ContextVar[RequestCell | None] = ContextVar(
    "aiotrace_current_request", default=None
)


def running_request() -> RequestState | None:
    """The traced request running in this context, if any."""
    cell = current_request.get()
    return None if cell is None else cell.state


@contextmanager
def with_client_trace(trace: ClientTrace) -> Iterator[ClientTrace]:
    """Trace every request started inside the block, including in tasks created inside it.

    Blocks nest as Go's ``WithClientTrace`` composes: the inner trace's hook runs first, then
    the outer's. Yields the composed trace now in effect.
    """
    if not isinstance(trace, ClientTrace):
        trace = getattr(trace, "trace", trace)
        if not isinstance(trace, ClientTrace):
            raise TypeError(f"with_client_trace() takes a ClientTrace, not {type(trace).__name__}")
    composed = compose(trace, scoped_trace.get())
    assert composed is not None
    token = scoped_trace.set(composed)
    try:
        yield composed
    finally:
        scoped_trace.reset(token)


def context_client_trace() -> ClientTrace | None:
    """The trace ``with_client_trace`` blocks put in effect here, composed; ``None`` outside."""
    return scoped_trace.get()
