"""Which trace is in effect here: the scoped trace of ``with_client_trace`` blocks.

One ContextVar, ``scoped_trace``: the composed trace of the enclosing ``with`` blocks; tasks
created inside a block copy it, so their requests are traced too. The running request's own
ContextVar, ``current_request``, lives with the request (``request.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .hooks import ClientTrace, compose

__all__ = ["context_client_trace", "scoped_trace", "with_client_trace"]

scoped_trace: ContextVar[ClientTrace | None] = ContextVar("aiotrace_scoped_trace", default=None)


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
