"""Helpers for asserting on traces in your own tests.

>>> with aiotrace.testing.capture_events() as log:
...     async with session.get(url) as resp: ...
>>> log.names()
['request_start', 'get_conn', 'dns_start', ...]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ._trace.context import with_client_trace
from ._trace.hooks import HOOK_NAMES, ClientTrace

__all__ = ["EventLog", "capture_events"]


class EventLog:
    """Every event of the traced requests, in the order the hooks were called."""

    def __init__(self, hooks: Iterable[str] = HOOK_NAMES) -> None:
        self.events: list[tuple[str, Any]] = []
        append = self.events.append

        def recorder(name: str) -> Any:
            def hook(event: Any) -> None:
                append((name, event))

            hook.__qualname__ = f"EventLog.{name}"
            return hook

        names = list(hooks)
        unknown = set(names) - set(HOOK_NAMES)
        if unknown:
            raise ValueError(f"unknown hook name(s): {', '.join(sorted(unknown))}")
        self.trace = ClientTrace(**{name: recorder(name) for name in names})

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        return f"<EventLog {len(self.events)} events>"

    def names(self, request: int | None = None) -> list[str]:
        """Hook names in order, for every request or for one request id."""
        return [n for n, e in self.events if request is None or e.request.id == request]

    def of(self, name: str, request: int | None = None) -> list[Any]:
        """The events of one hook, in order."""
        return [
            e for n, e in self.events if n == name and (request is None or e.request.id == request)
        ]

    def request_ids(self) -> list[int]:
        """The ids of the requests seen, in order of their first event."""
        return list(dict.fromkeys(e.request.id for _, e in self.events))

    def by_request(self) -> dict[int, list[str]]:
        """Each request id's hook names, in order."""
        out: dict[int, list[str]] = {}
        for n, e in self.events:
            out.setdefault(e.request.id, []).append(n)
        return out

    def clear(self) -> None:
        self.events.clear()


@contextmanager
def capture_events(hooks: Iterable[str] = HOOK_NAMES) -> Iterator[EventLog]:
    """Record every event of each request started in the block (tasks made inside it too)."""
    log = EventLog(hooks)
    with with_client_trace(log.trace):
        yield log
