"""Event-loop stalls: a monitor that notices when the loop was blocked, and which phases of a
round trip it overlapped.

Theory of operation
-------------------
The monitor is a callback the loop runs every ``interval`` seconds (``loop.call_later``): it
reads ``time.perf_counter()`` and compares it with when it was due. Run more than
``threshold`` late, the loop was blocked (a synchronous call, CPU-bound work) or busier than
it could keep up with, and the monitor records a stall from when the tick was due to when
it ran. It works the same on any loop (asyncio, uvloop): it uses only ``call_later``.

The rules this module keeps:

1. A stall shorter than ``threshold`` is never recorded; one longer than ``threshold +
   interval`` always is. A recorded stall starts when the tick was due, at most ``interval``
   after the loop really stopped: stall time is understated by at most ``interval`` per
   stall, never overstated.
2. Stalls are kept in time order and never overlap (one that begins before the last one ends
   is merged into it); at most ``max_stalls`` of them (beyond that the oldest are forgotten,
   the totals keep counting), so memory stays bounded however long the monitor runs.
3. A stall is recorded when the loop runs again: at the overdue tick, or earlier, when
   someone who just got the loop back asks (``catch_up``: a Recorder does as each request
   finishes, since the loop may run a request's completion before the tick), or at ``stop``.
4. A round trip's phases are laid end to end as its timeline has them (``timeline.py``); a
   phase's stall time is its overlap with recorded stalls. It is known only for a round trip
   the monitor watched from its start to its end (``covers``), else ``None``.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_right
from typing import TYPE_CHECKING

from .._trace.clock import now as _now
from .timeline import phase_values

if TYPE_CHECKING:
    from types import TracebackType

    from .._trace.hop import HopState

__all__ = ["LoopStallMonitor", "phase_stalls"]

_RUNS = 1024  # start-stop periods remembered, for ``covers``


class LoopStallMonitor:
    """Records when the running event loop stalled: a tick every ``interval`` s that finds
    itself more than ``threshold`` s late records a stall (see the module docstring).

    Start it with ``async with`` (or ``start()``/``stop()``, from a coroutine); starts are
    counted, so one monitor can serve several Recorders on one loop (``Recorder(loop_stalls=
    monitor)``). ``stalls`` are ``(start, end)`` pairs of ``time.perf_counter()`` seconds, the
    events' clock; at most ``max_stalls`` of the newest are kept.
    """

    __slots__ = (
        "_call_later",
        "_count",
        "_due",
        "_ends",
        "_handle",
        "_last_end",
        "_loop",
        "_runs_from",
        "_runs_to",
        "_stalled",
        "_starts",
        "_users",
        "interval",
        "max_stalls",
        "threshold",
    )

    def __init__(
        self, *, interval: float = 0.01, threshold: float = 0.02, max_stalls: int = 4096
    ) -> None:
        if not interval > 0.0:
            raise ValueError(f"interval must be above 0 s, not {interval!r}")
        if not threshold >= 0.0:
            raise ValueError(f"threshold must be at least 0 s, not {threshold!r}")
        if max_stalls < 1:
            raise ValueError(f"max_stalls must be at least 1, not {max_stalls!r}")
        self.interval = interval
        self.threshold = threshold
        self.max_stalls = max_stalls
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._count = 0
        self._stalled = 0.0
        self._last_end = -math.inf  # the end of the latest stall
        self._due = math.inf  # when the next tick is due; never while stopped
        self._runs_from: list[float] = []
        self._runs_to: list[float] = []  # math.inf while running
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._call_later = None  # the loop's call_later, while running
        self._users = 0

    def __repr__(self) -> str:
        state = "running" if self._users else "stopped"
        return (
            f"<LoopStallMonitor {state} interval={self.interval} threshold={self.threshold} "
            f"stalls={self._count} stalled_ms={self.stalled_ms:.1f}>"
        )

    # -- running ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._users > 0

    def start(self) -> None:
        """Watch the running loop (from a coroutine); each ``start`` needs its ``stop``."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "LoopStallMonitor.start() needs a running event loop: start it in a coroutine"
            ) from None
        if self._users and self._loop is not None and self._loop.is_closed():
            # Never stopped, and its loop is gone: it watched until its last tick.
            self._users = 0
            self._runs_to[-1] = self._last_tick()
        if self._users:
            if loop is not self._loop:
                raise RuntimeError("this LoopStallMonitor is already watching another loop")
            self._users += 1
            return
        self._users = 1
        self._loop = loop
        self._call_later = loop.call_later  # type: ignore[assignment]
        now = _now()
        self._runs_from.append(now)
        self._runs_to.append(math.inf)
        if len(self._runs_from) > _RUNS:
            del self._runs_from[0], self._runs_to[0]
        self._due = now + self.interval
        self._handle = loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        """Undo one ``start``; the last one stops the ticks (recording a stall in progress)."""
        if not self._users:
            return
        self._users -= 1
        if self._users:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop = self._call_later = None
        now = _now()
        self.catch_up(now)
        self._due = math.inf
        self._runs_to[-1] = now

    async def __aenter__(self) -> LoopStallMonitor:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __enter__(self) -> LoopStallMonitor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _tick(self) -> None:
        now = _now()
        due = self._due
        if now - due > self.threshold:
            self._record(due, now)
        self._due = now + self.interval
        call_later = self._call_later
        if call_later is not None:
            self._handle = call_later(self.interval, self._tick)

    def _last_tick(self) -> float:
        """When the monitor last knew the loop to be running (its last tick)."""
        return self._due - self.interval

    def catch_up(self, now: float) -> None:
        """The loop is running again at ``now`` (a ``perf_counter`` stamp just taken): if the
        tick is overdue past ``threshold``, record the stall now, not only when it runs."""
        if now - self._due > self.threshold:
            self._record(self._due, now)

    def _record(self, start: float, end: float) -> None:
        starts, ends = self._starts, self._ends
        if ends and start <= ends[-1]:  # the same stall, seen again later (rule 2)
            last = ends[-1]
            if end > last:
                ends[-1] = end
                self._stalled += end - last
        else:
            starts.append(start)
            ends.append(end)
            self._count += 1
            self._stalled += end - start
            if len(ends) > self.max_stalls + max(self.max_stalls // 4, 16):
                cut = len(ends) - self.max_stalls
                del starts[:cut], ends[:cut]
        self._last_end = ends[-1]

    # -- reading ----------------------------------------------------------------------------

    @property
    def stalls(self) -> list[tuple[float, float]]:
        """The newest stalls (at most ``max_stalls``), oldest first: ``(start, end)`` in
        ``perf_counter`` seconds."""
        keep = self.max_stalls
        return list(zip(self._starts[-keep:], self._ends[-keep:], strict=True))

    @property
    def stall_count(self) -> int:
        """Stalls recorded since the monitor was made, forgotten ones included."""
        return self._count

    @property
    def stalled_ms(self) -> float:
        """Their total length in ms, forgotten ones included."""
        return self._stalled * 1000.0

    def overlap_ms(self, start: float, end: float) -> float:
        """ms of ``[start, end]`` (``perf_counter`` seconds) the loop was stalled, as far as
        the kept stalls tell."""
        return sum(b - a for a, b in self._clipped(start, end)) * 1000.0

    def covers(self, start: float, end: float) -> bool:
        """Whether the monitor ran throughout ``[start, end]``."""
        i = bisect_right(self._runs_from, start) - 1
        return i >= 0 and self._runs_to[i] >= end

    def _clipped(self, start: float, end: float) -> list[tuple[float, float]]:
        """The kept stalls that overlap ``[start, end]``, cut to it."""
        starts, ends = self._starts, self._ends
        out = []
        i = bisect_right(ends, start)
        n = len(ends)
        while i < n and starts[i] < end:
            a, b = starts[i], ends[i]
            out.append((a if a > start else start, b if b < end else end))
            i += 1
        return out


def phase_stalls(
    monitor: LoopStallMonitor, h: HopState, *, check: bool = True, overlaps: bool = True
) -> list[float | None] | None:
    """ms of each phase of round trip ``h`` (``PHASES`` order, ``None`` where the phase did
    not happen) that overlapped a stall; ``None`` when ``check`` and the monitor did not watch
    the whole round trip (rule 4). Without ``overlaps``, zeros: it is known that none did."""
    values, total, _ = phase_values(h)
    t0 = h.t_get_conn
    t1 = t0 + total / 1000.0
    if check and not monitor.covers(t0, t1):
        return None
    spans = monitor._clipped(t0, t1) if overlaps else []
    out: list[float | None] = []
    at = t0
    for ms in values:
        if ms is None:
            out.append(None)
            continue
        stop = at + ms / 1000.0
        stalled = 0.0
        for a, b in spans:
            lo = a if a > at else at
            hi = b if b < stop else stop
            if hi > lo:
                stalled += hi - lo
        out.append(stalled * 1000.0)
        at = stop
    return out
