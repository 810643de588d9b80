"""Phases: a round trip's stamps laid end to end, in Go's order.

Theory of operation
-------------------
A round trip's phases are laid end to end from its ``get_conn`` stamp, in Go's order:
``blocked`` (pool wait), ``dns``, ``connect`` (TCP only), ``tls``, ``send`` (connection ready
to request written), ``wait`` (request written to first response byte) and ``receive``
(first byte to body done). Each phase that happened runs from where the previous one that
happened ended to its own end stamp, so small gaps between aiohttp's steps fall inside the
next phase and the phases always add up to ``total`` exactly. A phase that did not happen is
``None`` (HAR writes -1). A phase cut short by a failure ends when the round trip failed;
nothing is ever negative. Times are milliseconds.

The same values come three ways, all kept equal by tests: one round trip at a time
(:func:`phase_values`, for timelines and the OTel export), and column by column for the
Recorder's batch fold (:func:`pooled_phase_columns`, :func:`chained_phase_columns`), with
C-level maps and no Python frame per round trip.
"""

from __future__ import annotations

from itertools import repeat
from operator import add, mul, sub
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._trace.hop import HopState

__all__ = [
    "PHASES",
    "chained_phase_columns",
    "ms_between",
    "phase_values",
    "pooled_phase_columns",
    "pooled_phase_values",
    "pooled_phases",
]

PHASES = ("blocked", "dns", "connect", "tls", "send", "wait", "receive")


def ms_between(a: float, b: float) -> float:
    """ms from stamp ``a`` to stamp ``b``; never negative."""
    d = (b - a) * 1000.0
    return d if d > 0.0 else 0.0


def phase_values(h: HopState) -> tuple[list[float | None], float, tuple[float, float, float]]:
    """The seven phases in ``PHASES`` order (ms or None), the total, and where DNS, TCP and TLS
    ended (stamps, for the marks). Plain values: the aggregate path builds no objects.

    Written for speed (the aggregate fold and the OTel export call it per request): two flat
    tuples zipped, no tuple per phase."""
    t0 = h.t_get_conn
    got, wrote, first, body, t_end = (
        h.t_got_conn,
        h.t_wrote_request,
        h.t_first_byte,
        h.t_body_done,
        h.t_end,
    )
    end = body or t_end
    if end is None:  # still running: up to the last thing that happened
        stamps = (t0, h.t_pool_done, h.t_dns_done, h.t_connect_done, h.t_tls_done, got, wrote)
        end = max(t for t in (*stamps, first) if t is not None)
    cut = t_end if t_end is not None else end  # where a phase cut short ends
    starts = (h.t_pool_start, h.t_dns_start, h.t_connect_start, h.t_tls_start, got, wrote, first)
    stops = (h.t_pool_done, h.t_dns_done, h.t_connect_done, h.t_tls_done, wrote, first, body)
    values: list[float | None] = []
    ats = []  # where each phase ended (the marks are DNS's, TCP's and TLS's)
    at = t0
    last = -1
    for i, started in enumerate(starts):
        if started is None:
            values.append(None)
        else:
            stop = stops[i]
            if stop is None:
                stop = cut
            d = (stop - at) * 1000.0
            values.append(d if d > 0.0 else 0.0)
            if stop > at:
                at = stop
            last = i
        ats.append(at)
    if end > at and last >= 0:  # time after the last stamp belongs to the last phase
        values[last] = (values[last] or 0.0) + (end - at) * 1000.0
    total = ms_between(t0, end if end > at else at)
    return values, total, (ats[1], ats[2], ats[3])


def pooled_phase_values(h: HopState) -> tuple[float, float, float] | None:
    """send, wait and receive (ms) of a finished round trip on a pooled connection that did
    not wait for it, as :func:`phase_values` computes them; ``None`` for any other."""
    wrote, first, body = h.t_wrote_request, h.t_first_byte, h.t_body_done
    if not h.reused or h.t_pool_start is not None:
        return None
    if wrote is None or first is None or body is None:
        return None
    return pooled_phases(h.t_get_conn, wrote, first, body)


def pooled_phases(at: float, wrote: float, first: float, body: float) -> tuple[float, float, float]:
    """send, wait and receive (ms) from a pooled round trip's four stamps: each phase starts
    at the latest stamp so far (the module's rules)."""
    send = (wrote - at) * 1000.0 if wrote > at else 0.0
    if wrote > at:
        at = wrote
    wait = (first - at) * 1000.0 if first > at else 0.0
    if first > at:
        at = first
    receive = (body - at) * 1000.0 if body > at else 0.0
    return send, wait, receive


def pooled_phase_columns(
    get_conn: list[float], wrote: list[float], first_byte: list[float], body_done: list[float]
) -> tuple[list[float], list[float], list[float], list[float]]:
    """:func:`pooled_phase_values` of many such round trips at once, from their stamps column
    by column: send, wait, receive and their sum (the total), each a list; the same values,
    computed with C-level maps (no Python frame per round trip: the aggregate fold)."""
    ms = repeat(1000.0)
    send = list(map(mul, map(sub, wrote, get_conn), ms))
    wait = list(map(mul, map(sub, first_byte, wrote), ms))
    receive = list(map(mul, map(sub, body_done, first_byte), ms))
    if min(send) < 0.0 or min(wait) < 0.0 or min(receive) < 0.0:
        # Stamps out of order somewhere (the first byte before the request was written: a
        # paused transport): each phase starts at the latest stamp so far, as in
        # pooled_phase_values. (builtin max is the slow part: only when needed.)
        at_wrote = list(map(max, get_conn, wrote))
        at_first = list(map(max, at_wrote, first_byte))
        send = list(map(mul, map(sub, at_wrote, get_conn), ms))
        wait = list(map(mul, map(sub, at_first, at_wrote), ms))
        receive = list(map(mul, map(sub, map(max, at_first, body_done), at_first), ms))
    return send, wait, receive, list(map(add, map(add, send, wait), receive))


def chained_phase_columns(
    get_conn: list[float], stops: list[list[float]]
) -> tuple[list[list[float]], list[float]]:
    """:func:`phase_values` of many finished round trips that took the same phases, from
    their stamps column by column: ``stops`` holds, in ``PHASES`` order, the end stamps of
    the phases they took (the last three: request written, first byte, body done). Gives
    each phase's values and the totals, each a list: the same values as ``phase_values``,
    with C-level maps (the aggregate fold of requests that opened a connection)."""
    ms = repeat(1000.0)
    at = get_conn
    columns = []
    for stop in stops:
        d = list(map(sub, stop, at))
        if min(d) < 0.0:  # out of order somewhere: the phase starts at the latest stamp
            stop = list(map(max, at, stop))
            d = list(map(sub, stop, at))
        columns.append(list(map(mul, d, ms)))
        at = stop
    return columns, list(map(mul, map(sub, at, get_conn), ms))
