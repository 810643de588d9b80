"""Timelines: a request's stamps turned into phases, hops, redirects and curl-style marks.

Theory of operation
-------------------
A round trip's phases (``blocked``, ``dns``, ``connect``, ``tls``, ``send``, ``wait``,
``receive``) are computed by ``phases.py``, whose docstring states their rules: laid end to
end from the ``get_conn`` stamp, they always add up to ``total``. Times are milliseconds.

Loop stalls (a Recorder with ``loop_stalls``) are given per phase on the same layout: how
many of a phase's ms the event loop was stalled (``stalls.py``), as a second ``Timings``.

Marks are curl's ``--write-out`` timers: cumulative milliseconds from the hop's start to
the end of name lookup, TCP connect, TLS (``appconnect``), connection ready
(``pretransfer``), first byte (``starttransfer``) and the end (``total``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._trace.clock import now as _now
from .._trace.clock import wall_time
from .._trace.connection import proxy_label
from .phases import ms_between, phase_values
from .redact import DEFAULT_REDACTION, Redaction, without_credentials

if TYPE_CHECKING:
    from yarl import URL

    from .._trace.connection import ConnState
    from .._trace.events import ConnInfo
    from .._trace.hop import HopState
    from .._trace.request import RequestState

__all__ = [
    "ConnectionRecord",
    "Hop",
    "Marks",
    "Redirect",
    "RequestTimeline",
    "StallSource",
    "Timings",
    "hop_timings",
]

# A request no trace sampled, kept by a Recorder with ``keep_errors`` from what the request
# boundary saw: its state's ``observer_data`` (it has no round trips).
UNSAMPLED = "aiotrace.unsampled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Where a round trip's (or a request's summed) time went, in ms; ``None``: didn't happen."""

    blocked: float | None
    dns: float | None
    connect: float | None
    tls: float | None
    send: float | None
    wait: float | None
    receive: float | None
    total: float


class StallSource(Protocol):
    """Where a timeline finds its round trips' loop stalls (a Recorder's, see _recorder.py)."""

    def hop_stalls(
        self, state: RequestState, position: int, hop: HopState
    ) -> list[float | None] | None:
        """Stall ms of each phase of ``state``'s round trip ``hop`` (``PHASES`` order, ``None``
        where the phase did not happen); ``None``: not known."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Marks:
    """curl's cumulative timers in ms from the start (``None`` where the step did not happen)."""

    namelookup: float | None
    connect: float | None
    appconnect: float | None
    pretransfer: float | None
    starttransfer: float | None
    total: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """One link of a redirect chain."""

    from_url: URL
    to_url: URL
    status: int


def plain_values(obj: Any) -> dict[str, Any]:
    """A dataclass of plain values (``Timings``, ``Marks``, ``TLSInfo``) as a dict: what
    ``dataclasses.asdict`` gives, without its recursive deep copies, at a tenth of the cost
    (asdict made most of the time an export of many timelines took; exports call this three
    times a hop)."""
    names = _FIELDS.get(cls := type(obj))
    if names is None:
        names = _FIELDS[cls] = tuple(cls.__dataclass_fields__)
    return {name: getattr(obj, name) for name in names}


_FIELDS: dict[type, tuple[str, ...]] = {}


def conn_values(conn: ConnInfo) -> dict[str, Any]:
    """A connection's ``ConnInfo`` as a dict, its ``TLSInfo`` as a nested one."""
    values = plain_values(conn)
    if conn.tls is not None:
        values["tls"] = plain_values(conn.tls)
    return values


def hop_timings(h: HopState) -> tuple[Timings, Marks]:
    """The phases and marks of one round trip (rules in the module docstring)."""
    values, total, (mark_dns, mark_connect, mark_tls) = phase_values(h)
    blocked, dns, connect, tls, send, wait, receive = values
    t0 = h.t_get_conn
    timings = Timings(
        blocked=blocked,
        dns=dns,
        connect=connect,
        tls=tls,
        send=send,
        wait=wait,
        receive=receive,
        total=total,
    )
    marks = Marks(
        namelookup=ms_between(t0, mark_dns) if dns is not None else None,
        connect=ms_between(t0, mark_connect) if connect is not None else None,
        appconnect=ms_between(t0, mark_tls) if tls is not None else None,
        pretransfer=ms_between(t0, h.t_got_conn) if h.t_got_conn is not None else None,
        starttransfer=ms_between(t0, h.t_first_byte) if h.t_first_byte is not None else None,
        total=total,
    )
    return timings, marks


def _error(err: BaseException | None) -> str | None:
    """An error as ``Type: message``, with any URL's credentials taken out (aiohttp's proxy
    errors name the proxy URL whole)."""
    if err is None:
        return None
    text = without_credentials(str(err))
    name = type(err).__name__
    return f"{name}: {text}" if text else name


def _proxy(h: HopState, info: ConnInfo | None) -> str | None:
    """The proxy the round trip went through, without credentials."""
    if info is not None:
        return info.proxy
    proxy = h.proxy
    return None if proxy is None else proxy_label(proxy)


def _tunnel_ms(h: HopState) -> float | None:
    """The CONNECT tunnel's round trip (ms), where this round trip opened one."""
    start, done = h.t_tunnel_start, h.t_tunnel_done
    if start is None:
        return None
    return ms_between(start, done if done is not None else (h.t_end or start))


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    """One round trip of a request, as a timeline."""

    index: int
    attempt: int
    method: str
    url: URL
    status: int | None
    started_at: float
    connection: ConnInfo | None
    reused: bool
    was_idle: bool
    idle_time: float
    reuse_miss: str | None
    dns_addrs: tuple[str, ...]
    dns_cached: bool
    dns_coalesced: bool
    proxy: str | None
    tunnel: float | None
    proxy_status: int | None
    timings: Timings
    marks: Marks
    error: str | None
    stalls: Timings | None = None
    """ms of each phase (and of the total) the event loop was stalled, as ``timings`` lays
    them out; ``None`` unless a Recorder's ``loop_stalls`` monitor watched the round trip."""

    @classmethod
    def of(cls, h: HopState, stalls: list[float | None] | None = None) -> Hop:
        timings, marks = hop_timings(h)
        conn = h.conn
        info = conn.info if conn is not None else None
        return cls(
            index=h.index,
            attempt=h.attempt,
            method=h.method,
            url=h.url,
            status=h.status,
            started_at=wall_time(h.t_get_conn),
            connection=info,
            reused=h.reused,
            was_idle=h.reused,
            idle_time=h.idle_time,
            reuse_miss=h.reuse_miss,
            dns_addrs=h.addrs,
            dns_cached=h.dns_cached,
            dns_coalesced=h.dns_coalesced,
            proxy=_proxy(h, info),
            tunnel=_tunnel_ms(h),
            proxy_status=h.tunnel_status,
            timings=timings,
            marks=marks,
            error=_error(h.err),
            stalls=None if stalls is None else _stall_timings(stalls),
        )

    def to_dict(self, redaction: Redaction = DEFAULT_REDACTION) -> dict[str, Any]:
        """A JSON-ready dict (URLs redacted)."""
        conn = self.connection
        return {
            "index": self.index,
            "attempt": self.attempt,
            "method": self.method,
            "url": redaction.url(self.url),
            "status": self.status,
            "started_at": self.started_at,
            "connection": conn_values(conn) if conn is not None else None,
            "reused": self.reused,
            "was_idle": self.was_idle,
            "idle_time_ms": self.idle_time * 1000.0,
            "reuse_miss": self.reuse_miss,
            "dns": {
                "addrs": list(self.dns_addrs),
                "cached": self.dns_cached,
                "coalesced": self.dns_coalesced,
            },
            "proxy": None
            if self.proxy is None
            else {
                "url": redaction.url(self.proxy),
                "tunnel_ms": self.tunnel,
                "status": self.proxy_status,
            },
            "timings": plain_values(self.timings),
            "marks": plain_values(self.marks),
            "error": self.error,
            "stalls": plain_values(self.stalls) if self.stalls is not None else None,
        }


def _stall_timings(values: list[float | None]) -> Timings:
    blocked, dns, connect, tls, send, wait, receive = values
    return Timings(
        blocked=blocked,
        dns=dns,
        connect=connect,
        tls=tls,
        send=send,
        wait=wait,
        receive=receive,
        total=sum(v for v in values if v is not None),
    )


def _sum(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _summed(ts: list[Timings]) -> Timings:
    """Each phase summed over ``ts`` (``None`` where it is ``None`` in all)."""
    if not ts:
        return Timings(
            blocked=None, dns=None, connect=None, tls=None,
            send=None, wait=None, receive=None, total=0.0,
        )  # fmt: skip
    return Timings(
        blocked=_sum([t.blocked for t in ts]),
        dns=_sum([t.dns for t in ts]),
        connect=_sum([t.connect for t in ts]),
        tls=_sum([t.tls for t in ts]),
        send=_sum([t.send for t in ts]),
        wait=_sum([t.wait for t in ts]),
        receive=_sum([t.receive for t in ts]),
        total=sum(t.total for t in ts),
    )


class RequestTimeline:
    """One request: its hops, redirect chain, retries and summed timings (a live view)."""

    __slots__ = ("_hops", "_stalls", "_state")

    def __init__(self, state: RequestState, stalls: StallSource | None = None) -> None:
        self._state = state
        self._stalls = stalls
        self._hops: list[Hop] | None = None

    def __repr__(self) -> str:
        s = self._state
        return (
            f"<RequestTimeline #{s.id} {s.method} {DEFAULT_REDACTION.url(s.url)} "
            f"status={s.status} hops={len(s.hops)}{' done' if s.done else ''}>"
        )

    @property
    def id(self) -> int:
        """The request's id (the ``RoundTrip.id`` its events carried)."""
        return self._state.id

    @property
    def method(self) -> str:
        return self._state.method

    @property
    def url(self) -> URL:
        return self._state.url

    @property
    def final_url(self) -> URL | None:
        s = self._state
        if s.final_url is not None:
            return s.final_url
        return s.hops[-1].url if s.hops else None

    @property
    def status(self) -> int | None:
        return self._state.status

    @property
    def error(self) -> str | None:
        """The exception type and message, or ``None``."""
        return _error(self._state.err)

    @property
    def done(self) -> bool:
        return self._state.done

    @property
    def started_at(self) -> float:
        """Wall-clock start (``time.time()`` scale)."""
        return self._state.started_at

    @property
    def hops(self) -> list[Hop]:
        hops = self._hops
        if hops is not None:
            return hops
        source = self._stalls
        if source is None:
            hops = [Hop.of(h) for h in self._state.hops]
        else:
            state = self._state
            hops = [Hop.of(h, source.hop_stalls(state, i, h)) for i, h in enumerate(state.hops)]
        if self._state.done:
            self._hops = hops
        return hops

    @property
    def redirects(self) -> list[Redirect]:
        """The chain: one link per redirect followed."""
        chain = []
        prev = None
        for hop in self._state.hops:
            if prev is not None and hop.index != prev.index and prev.status is not None:
                chain.append(Redirect(from_url=prev.url, to_url=hop.url, status=prev.status))
            prev = hop
        return chain

    @property
    def retries(self) -> int:
        return sum(1 for h in self._state.hops if h.attempt > 0)

    @property
    def timings(self) -> Timings:
        """Each phase summed over the hops (``None`` where it happened in none)."""
        hops = self.hops
        if not hops:
            s = self._state  # unsampled and kept: the boundary's time to the response or error
            total = (
                ms_between(s.t_start, s.t_done or s.t_start)
                if s.observer_data is UNSAMPLED
                else 0.0
            )
            return Timings(
                blocked=None, dns=None, connect=None, tls=None,
                send=None, wait=None, receive=None, total=total,
            )  # fmt: skip
        return _summed([h.timings for h in hops])

    @property
    def stalls(self) -> Timings | None:
        """Each phase's loop-stall ms summed over the hops (see ``Hop.stalls``); ``None`` when
        they are not known for every hop."""
        ts = [h.stalls for h in self.hops]
        if not ts or None in ts:
            return None
        return _summed(ts)  # type: ignore[arg-type]  # no None in it

    @property
    def redirect_time(self) -> float:
        """ms from the request's start to its final hop's start (curl's ``time_redirect``)."""
        s = self._state
        if len(s.hops) < 2:
            return 0.0
        return ms_between(s.t_start, s.hops[-1].t_get_conn)

    @property
    def marks(self) -> Marks:
        """curl's timers for the request: the final hop's, shifted by the redirect time."""
        hops = self.hops
        if not hops:
            end = self._state.t_done or _now()
            return Marks(
                namelookup=None, connect=None, appconnect=None, pretransfer=None,
                starttransfer=None, total=ms_between(self._state.t_start, end),
            )  # fmt: skip
        m = hops[-1].marks
        shift = ms_between(self._state.t_start, self._state.hops[-1].t_get_conn)

        def at(v: float | None) -> float | None:
            return None if v is None else v + shift

        return Marks(
            namelookup=at(m.namelookup),
            connect=at(m.connect),
            appconnect=at(m.appconnect),
            pretransfer=at(m.pretransfer),
            starttransfer=at(m.starttransfer),
            total=m.total + shift,
        )

    def to_dict(self, redaction: Redaction = DEFAULT_REDACTION) -> dict[str, Any]:
        """A JSON-ready dict of the whole timeline (URLs redacted)."""
        return {
            "id": self.id,
            "method": self.method,
            "url": redaction.url(self.url),
            "final_url": redaction.url(self.final_url),
            "status": self.status,
            "error": self.error,
            "started_at": self.started_at,
            "done": self.done,
            "retries": self.retries,
            "redirects": [
                {
                    "from": redaction.url(r.from_url),
                    "to": redaction.url(r.to_url),
                    "status": r.status,
                }
                for r in self.redirects
            ],
            "timings": plain_values(self.timings),
            "marks": plain_values(self.marks),
            "redirect_time": self.redirect_time,
            "stalls": plain_values(stalls) if (stalls := self.stalls) is not None else None,
            "hops": [h.to_dict(redaction) for h in self.hops],
            **({} if self.sampled else {"sampled": False}),
        }

    @property
    def sampled(self) -> bool:
        """``False`` for a request kept although not sampled (``Recorder(keep_errors=True)``):
        only what the request boundary saw, no round trips."""
        return self._state.observer_data is not UNSAMPLED


class ConnectionRecord:
    """One connection as the reuse detector saw it, and the requests it served."""

    __slots__ = ("_cs", "served")

    def __init__(self, cs: ConnState) -> None:
        self._cs = cs
        self.served: list[tuple[int, int, float]] = []
        """``(request id, hop index, idle ms before it)`` for each traced round trip served."""

    def __repr__(self) -> str:
        cs = self._cs
        return f"<ConnectionRecord #{cs.id} {self.remote_addr} served={len(self.served)}>"

    @property
    def id(self) -> int:
        return self._cs.id

    @property
    def remote_addr(self) -> str | None:
        info = self._cs.info
        return info.remote_addr if info else None

    @property
    def local_addr(self) -> str | None:
        info = self._cs.info
        return info.local_addr if info else None

    @property
    def proxy(self) -> str | None:
        """The proxy it goes through (its URL without credentials), if any."""
        info = self._cs.info
        return info.proxy if info else None

    @property
    def opened_at(self) -> float:
        return wall_time(self._cs.opened_at)

    @property
    def closed_at(self) -> float | None:
        t = self._cs.closed_at
        return wall_time(t) if t is not None else None

    @property
    def close_reason(self) -> str | None:
        """``server_closed``, ``idle_timeout``, ``keepalive_disabled``, ``error``,
        ``session_closed``, ``upgraded`` (a WebSocket's) or ``closed``; ``None`` while open."""
        return self._cs.close_reason

    def to_dict(self) -> dict[str, Any]:
        info = self._cs.info
        return {
            "id": self.id,
            "remote_addr": self.remote_addr,
            "local_addr": self.local_addr,
            "proxy": self.proxy,
            "tls": plain_values(info.tls) if info is not None and info.tls is not None else None,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "close_reason": self.close_reason,
            "requests": [{"request": r, "hop": h, "idle_ms": idle} for r, h, idle in self.served],
        }
