"""Fault injection: each way a request can fail, traced and untraced, against real loopback peers.

Every case runs the same request twice: through a plain ``aiohttp.ClientSession`` with an
identical ``TCPConnector``, then through ``aiotrace.traced_session`` (both event loops, see
conftest). Then it checks four promises:

1. the caller gets what aiohttp gives without aiotrace: the same exception type and message;
2. the trace ends as ``_trace/hop.py`` says: the phase that failed gets its ``*_done`` carrying the
   error, then ``request_exception``, then ``request_done`` (once, last). A body cut short after
   ``request_end`` gets ``response_body_done(err)``, then ``request_done``, last;
3. the Recorder's timeline is whole: the error is set, a phase is ``None`` exactly when it never
   started, none is negative, and the phases add up to the total (within 2 ms);
4. nothing is left behind: no new task, no acquired connection, no ``current_request`` in the
   caller's context, and no ``RequestState`` alive beyond the one the test's Recorder holds.

The checks of a case are collected and reported together, so one failure names every broken
promise. Private reads, test-only: ``TracingConnector._acquired`` (aiohttp's set of connections
handed out and not yet released) and the type name ``RequestState`` when scanning the heap.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import socket
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.resolver import AsyncResolver
from aiohttp.test_utils import TestServer
from peers import (
    DNSServer,
    RawServer,
    close_before_response,
    content_length_too_long,
    read_request_head,
    reset_mid_body,
    reset_mid_headers,
    respond,
    silent,
    slow_headers,
    truncated_chunked,
)

import aiotrace
from aiotrace._trace.request import current_request
from aiotrace.testing import EventLog, capture_events

RawPeer = Callable[..., Awaitable[RawServer]]
MakeResolver = Callable[..., AsyncResolver]
AiohttpServer = Callable[..., Awaitable[TestServer]]

# wrote_header_field fires once per header; the sequences below leave it out.
HOOKS = [n for n in aiotrace.HOOK_NAMES if n != "wrote_header_field"]
PHASES = ("blocked", "dns", "connect", "tls", "send", "wait", "receive")
# The event that starts each timeline phase: a phase is None exactly when it is absent.
PHASE_STARTED_BY = {
    "blocked": "pool_wait_start",
    "dns": "dns_start",
    "connect": "connect_start",
    "tls": "tls_handshake_start",
    "send": "got_conn",
    "wait": "wrote_request",
    "receive": "got_first_response_byte",
}
PAIRS = (
    ("pool_wait_start", "pool_wait_done"),
    ("dns_start", "dns_done"),
    ("connect_start", "connect_done"),
    ("tls_handshake_start", "tls_handshake_done"),
)
ONCE_PER_ROUND_TRIP = (
    "get_conn", "pool_wait_start", "pool_wait_done", "dns_start", "dns_done",
    "tls_handshake_start", "tls_handshake_done", "got_conn", "wrote_headers", "wrote_request",
    "got_first_response_byte", "response_body_done", "put_idle_conn",
)  # fmt: skip
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
SHORT = 0.3  # every injected timeout, in seconds


# --------------------------------------------------------------------------------------------
# Peers and servers made here
# --------------------------------------------------------------------------------------------


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def redirect_to_self(request: web.Request) -> web.Response:
    raise web.HTTPFound("/loop")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/loop", redirect_to_self)
    return app


@pytest.fixture
async def server(aiohttp_server: AiohttpServer) -> TestServer:
    """An aiohttp server on 127.0.0.1: ``/`` says hello, ``/loop`` redirects to itself."""
    return await aiohttp_server(make_app())


@pytest.fixture
async def tls_server(aiohttp_server: AiohttpServer, server_ssl_ctx: ssl.SSLContext) -> TestServer:
    """The hello app over TLS (cert valid for a.test)."""
    return await aiohttp_server(make_app(), ssl=server_ssl_ctx)


async def fetch(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, bytes]:
    async with session.get(url, **kw) as resp:
        return resp.status, await resp.read()


@pytest.fixture
def zone(dns_server: DNSServer) -> DNSServer:
    """``a.test`` -> 127.0.0.1; the fault names are added by each test."""
    dns_server.add("a.test", "127.0.0.1")
    return dns_server


def closed_udp_port() -> int:
    """A UDP port on 127.0.0.1 where nothing listens (a query there gets ICMP unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def close_mid_handshake() -> Any:
    """Accept TCP, read the start of the ClientHello, then close (FIN) without answering."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    return handler


def informational_storm(count: int = 50) -> Any:
    """``count`` 103 Early Hints responses, then ``200 OK``: bounded, one write each."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        for i in range(count):
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s%d.css>; rel=preload\r\n\r\n" % i)
        writer.write(OK)
        await writer.drain()

    return handler


def dripping_body(size: int = 40, interval: float = 0.05) -> Any:
    """Headers at once, then a ``size``-byte body one byte every ``interval`` s (2 s at most)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size):
            await writer.drain()
            await asyncio.sleep(interval)
            if writer.is_closing():  # the client left (cancelled): uvloop raises on a write
                return
            writer.write(b"x")
        await writer.drain()

    return handler


# --------------------------------------------------------------------------------------------
# Running one case, traced and untraced
# --------------------------------------------------------------------------------------------


@dataclass
class Traced:
    """What the traced run left: outcome, events, timeline, and what was left behind."""

    exc: BaseException | None
    result: tuple[int, bytes] | None
    log: EventLog
    rec: aiotrace.Recorder
    acquired: int  # connections still acquired right after the request returned or raised
    acquired_after_close: int
    context_after: object  # current_request in the caller's context after the request
    leftover: list[asyncio.Task[Any]]
    states: list[int]  # ids of the RequestStates made by this run and still alive
    retainers: list[str]  # what else, outside the caller's objects, still points at them


@dataclass
class Case:
    traced: Traced
    plain_exc: BaseException | None
    plain_result: tuple[int, bytes] | None


def _request_states() -> list[Any]:
    return [o for o in gc.get_objects() if type(o).__name__ == "RequestState"]


def _drop_tracebacks(*roots: object) -> None:
    """Clear the tracebacks of these exceptions and of those they chain to.

    A kept exception keeps its frames, and they keep whatever they referenced (tasks, their
    contexts): that is the caller's own doing, so clear it before looking for retention.
    """
    todo = [r for r in roots if isinstance(r, BaseException)]
    seen: list[BaseException] = []
    while todo:
        e = todo.pop()
        if any(e is x for x in seen):
            continue
        seen.append(e)
        e.__traceback__ = None
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        todo.extend(x for x in vars(e).values() if isinstance(x, BaseException))


def retainers_of(ids: set[int]) -> list[str]:
    """Objects outside the caller's that still reference the finished requests ``ids``.

    A context copied while ``current_request`` was set (a timer or a transport's handle
    scheduled during the request) keeps the RequestState; so does a socket or SSL object
    still pointing at the round trip that opened it.
    """
    found = []
    for o in gc.get_objects():
        if isinstance(o, contextvars.Context):
            value = o.get(current_request)
            state = getattr(value, "state", value)  # the RequestState, or a cell holding it
            if state is not None and state.id in ids:
                holders = sorted(
                    {type(r).__name__ for r in gc.get_referrers(o) if type(r).__name__ != "list"}
                )
                found.append(f"a Context with current_request=#{state.id}, held by {holders}")
        elif type(o).__name__ in ("_AttemptSocket", "TracingSSLObject"):
            hop = getattr(o, "_aiotrace_hop", None)
            if hop is not None and hop.state.id in ids:
                found.append(f"a {type(o).__name__} pointing at request #{hop.state.id}")
    return found


def _client_side(task: asyncio.Task[Any]) -> bool:
    """False for the test servers' own tasks (raw peers, aiohttp's web handlers)."""
    code = getattr(task.get_coro(), "cr_code", None)
    filename = code.co_filename if code is not None else ""
    return not (filename.endswith("peers.py") or "/aiohttp/web_" in filename)


async def _settle(before: set[asyncio.Task[Any]], grace: float = 2.0) -> list[asyncio.Task[Any]]:
    """Client-side tasks made since ``before`` and still running after up to ``grace`` s."""
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while True:
        left = [
            t for t in asyncio.all_tasks() if t not in before and t is not me and _client_side(t)
        ]
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(0.02)


async def _attempt(
    session: aiohttp.ClientSession,
    url: str,
    request_kw: dict[str, Any],
    cancel_after: float | None,
    context_after: list[object],
) -> tuple[int, bytes]:
    async def call() -> tuple[int, bytes]:
        try:
            async with session.get(url, **request_kw) as resp:
                return resp.status, await resp.read()
        finally:
            context_after.append(current_request.get())

    if cancel_after is None:
        return await call()
    task = asyncio.create_task(call())
    await asyncio.sleep(cancel_after)
    assert not task.done(), f"the request ended before it could be cancelled: {task!r}"
    task.cancel()
    try:
        return await task
    finally:
        del task  # the traceback keeps this frame: let it not keep the task's context


async def run_case(
    url: str,
    resolver: AsyncResolver,
    *,
    connector_kw: dict[str, Any] | None = None,
    session_kw: dict[str, Any] | None = None,
    request_kw: dict[str, Any] | None = None,
    cancel_after: float | None = None,
) -> Case:
    """The same GET (body read) untraced, then traced with an EventLog and a Recorder."""
    connector_kw = connector_kw or {}
    session_kw = session_kw or {}
    request_kw = request_kw or {}
    me = asyncio.current_task()
    assert me is not None

    plain_exc: BaseException | None = None
    plain_result = None
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=resolver, **connector_kw), **session_kw
    ) as plain:
        try:
            plain_result = await _attempt(plain, url, request_kw, cancel_after, [])
        except AssertionError:
            raise
        except BaseException as e:
            plain_exc = e
    assert me.cancelling() == 0

    before_tasks = set(asyncio.all_tasks())
    before_states = _request_states()
    before_ids = {id(s) for s in before_states}
    context_after: list[object] = []
    exc: BaseException | None = None
    result = None
    connector = aiotrace.TracingConnector(resolver=resolver, **connector_kw)
    with capture_events(HOOKS) as log, aiotrace.Recorder() as rec:
        async with aiotrace.traced_session(connector=connector, **session_kw) as session:
            try:
                result = await _attempt(session, url, request_kw, cancel_after, context_after)
            except AssertionError:
                raise
            except BaseException as e:
                exc = e
            acquired = len(connector._acquired)
    assert me.cancelling() == 0
    acquired_after_close = len(connector._acquired)
    leftover = await _settle(before_tasks)
    _drop_tracebacks(exc, plain_exc, *(getattr(e, "err", None) for _, e in log.events))
    gc.collect()
    states = [s.id for s in _request_states() if id(s) not in before_ids]
    del before_states
    retainers = retainers_of(set(states))
    return Case(
        traced=Traced(
            exc=exc,
            result=result,
            log=log,
            rec=rec,
            acquired=acquired,
            acquired_after_close=acquired_after_close,
            context_after=context_after[0] if context_after else "not recorded",
            leftover=leftover,
            states=states,
            retainers=retainers,
        ),
        plain_exc=plain_exc,
        plain_result=plain_result,
    )


# --------------------------------------------------------------------------------------------
# Checking a case
# --------------------------------------------------------------------------------------------


@dataclass
class Checks:
    """Collects failed expectations so that a case reports all of them at once."""

    problems: list[str] = field(default_factory=list)

    def __call__(self, ok: object, what: str) -> None:
        if not ok:
            self.problems.append(what)

    def verify(self) -> None:
        assert not self.problems, "\n  - ".join(["broken promises:", *self.problems])


@contextmanager
def checking() -> Iterator[Checks]:
    checks = Checks()
    yield checks
    checks.verify()


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, what it was raised from, and the OS/TLS error aiohttp wrapped in it."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and not any(e is c for c in chain):
        chain.append(e)
        e = e.__cause__ or e.__context__
    for attr in ("os_error", "certificate_error"):
        inner = getattr(exc, attr, None)
        if isinstance(inner, BaseException):
            chain.append(inner)
    return chain


def is_the_error(err: BaseException | None, exc: BaseException | None) -> bool:
    """``err`` is the request's error: the same object, or the same type as one of its causes."""
    if err is None or exc is None:
        return False
    return any(err is c or type(err) is type(c) for c in _causes(exc))


def round_trips(log: EventLog) -> dict[tuple[int, int], list[str]]:
    """Event names per (hop, attempt), in order."""
    out: dict[tuple[int, int], list[str]] = {}
    for name, e in log.events:
        out.setdefault((e.request.hop, e.request.attempt), []).append(name)
    return out


def common_checks(case: Case, check: Checks) -> None:
    """Promises 1-4 that hold for every case, failing or not."""
    t = case.traced
    log = t.log
    names = log.names()

    # 1. What the caller gets.
    check(
        type(t.exc) is type(case.plain_exc),
        f"traced raised {t.exc!r}; plain aiohttp raised {case.plain_exc!r}",
    )
    check(
        str(t.exc) == str(case.plain_exc),
        f"messages differ: traced {t.exc!s:.200}; plain {case.plain_exc!s:.200}",
    )
    check(t.result == case.plain_result, f"results differ: {t.result} vs {case.plain_result}")

    # 2. The trace's shape.
    ids = log.request_ids()
    check(len(ids) == 1, f"events of {len(ids)} requests: {ids}")
    check(names[:1] == ["request_start"], f"first event is not request_start: {names[:3]}")
    check(names.count("request_start") == 1, f"request_start x{names.count('request_start')}")
    check(
        names.count("request_done") == 1 and names[-1:] == ["request_done"],
        f"request_done is not last exactly once; the trace ends {names[-4:]}",
    )
    for (hop, attempt), trip in round_trips(log).items():
        where = f"hop {hop} attempt {attempt}"
        for start, done in PAIRS:
            check(
                trip.count(start) == trip.count(done),
                f"{where}: {trip.count(start)} {start} but {trip.count(done)} {done}",
            )
        for name in ONCE_PER_ROUND_TRIP:
            check(trip.count(name) <= 1, f"{where}: {name} fired {trip.count(name)} times")
        if "got_conn" in trip:
            check("response_body_done" in trip, f"{where}: got_conn but no response_body_done")
        if "wrote_headers" in trip:
            check("wrote_request" in trip, f"{where}: wrote_headers but no wrote_request")
    if t.exc is not None and "request_end" not in names:  # failed before a response
        check(
            names[-2:] == ["request_exception", "request_done"],
            f"a failed request must end request_exception, request_done: {names[-4:]}",
        )
        exceptions = log.of("request_exception")
        check(
            len(exceptions) == 1 and exceptions[0].err is t.exc,
            "request_exception does not carry the caller's exception",
        )
        check(
            log.of("request_done")[-1:] and log.of("request_done")[-1].err is t.exc,
            "request_done does not carry the caller's exception",
        )
        for name in ("request_end",):
            check(name not in names, f"{name} fired for a request that failed")

    # 3. The timeline.
    timelines = t.rec.requests
    check(len(timelines) == 1, f"the recorder holds {len(timelines)} timelines")
    if timelines:
        tl = timelines[0]
        check(tl.done, "the timeline is not done")
        check(ids == [tl.id], f"timeline id {tl.id} vs event ids {ids}")
        trips = round_trips(log)
        check(
            [(h.index, h.attempt) for h in tl.hops] == list(trips),
            f"hops {[(h.index, h.attempt) for h in tl.hops]} vs round trips {list(trips)}",
        )
        for hop in tl.hops:
            trip = trips.get((hop.index, hop.attempt), [])
            where = f"hop {hop.index} attempt {hop.attempt}"
            timings = hop.timings
            for phase in PHASES:
                value = getattr(timings, phase)
                started = PHASE_STARTED_BY[phase] in trip
                check(
                    (value is not None) == started,
                    f"{where}: {phase}={value} but {PHASE_STARTED_BY[phase]} "
                    f"{'fired' if started else 'did not fire'}",
                )
                check(value is None or value >= 0, f"{where}: {phase} is negative ({value})")
            parts = sum(v for v in (getattr(timings, p) for p in PHASES) if v is not None)
            check(
                abs(timings.total - parts) <= 2.0,
                f"{where}: phases add up to {parts:.3f} ms, total is {timings.total:.3f} ms",
            )
        summed = tl.timings.total
        check(
            abs(summed - sum(h.timings.total for h in tl.hops)) <= 1e-6,
            "the request's total is not the sum of its hops' totals",
        )
        if t.exc is not None and "request_end" not in names:
            check(
                tl.error is not None and tl.error.startswith(type(t.exc).__name__),
                f"timeline error {tl.error!r} for {t.exc!r}",
            )
            check(tl.hops and tl.hops[-1].error is not None, "the last hop has no error")

    # 4. Nothing left behind.
    check(t.acquired == 0, f"{t.acquired} connection(s) still acquired after the request")
    check(t.acquired_after_close == 0, "connections still acquired after the session closed")
    check(t.context_after is None, f"current_request after the request: {t.context_after!r}")
    check(not t.leftover, f"tasks left running: {[x.get_coro() for x in t.leftover]}")
    expected = [tl.id for tl in timelines]
    check(
        sorted(t.states) == expected,
        f"RequestStates alive after gc: {sorted(t.states)}; the recorder holds {expected}",
    )
    check(not t.retainers, f"the finished request is still referenced by {t.retainers}")


def check_failed_in(case: Case, check: Checks, done: str, tail: list[str]) -> None:
    """A request that failed before a response: ``done`` ends the phase, with the error."""
    log = case.traced.log
    names = log.names()
    check(case.traced.exc is not None, "the traced request did not fail")
    check(names[-len(tail) :] == tail, f"the trace ends {names[-len(tail) - 2 :]}, not …{tail}")
    events = log.of(done)
    check(events, f"no {done} event")
    if events:
        err = events[-1].err
        check(
            is_the_error(err, case.traced.exc),
            f"{done} ends the failed phase with {err!r}, not the request's error "
            f"{case.traced.exc!r} (or what it wraps)",
        )


def check_not_pooled_after_error(case: Case, check: Checks, *, server_closed: bool) -> None:
    """Every connection released after an error says why it was not pooled; ``server_closed``
    only where the server did close it (a reset is an ``error``, a client timeout is not the
    server's doing)."""
    for e in case.traced.log.of("put_idle_conn"):
        reason = getattr(e.err, "reason", None)
        check(reason is not None, f"put_idle_conn(err={e.err!r}) after a failed exchange")
        if not server_closed:
            check(
                reason != "server_closed",
                f"put_idle_conn says {reason!r} ({e.err}), but the server did not close; the "
                "client gave up or the connection was reset",
            )


def check_body_cut(case: Case, check: Checks, *, cancelled: bool = False) -> None:
    """A body cut short after request_end: response_body_done(err), request_done last."""
    t = case.traced
    log = t.log
    names = log.names()
    check(t.exc is not None, "the traced body read did not fail")
    check("request_end" in names, "no request_end: the failure was not in the body")
    check("request_exception" not in names, "request_exception after request_end")
    bodies = log.of("response_body_done")
    check(len(bodies) == 1 and bodies[0].err is not None, "response_body_done has no error")
    if "request_end" in names and "response_body_done" in names:
        check(
            names.index("request_end") < names.index("response_body_done"),
            "the body ended before request_end",
        )
    done = log.of("request_done")
    if done:
        if cancelled:  # the tracer cannot see the caller's cancellation of its read
            check(
                done[-1].err is None or isinstance(done[-1].err, asyncio.CancelledError),
                f"request_done err {done[-1].err!r}",
            )
        else:
            check(
                done[-1].err is not None,
                "request_done(err=None) although the response body failed "
                f"({bodies[0].err if bodies else '?'!r})",
            )
    timelines = t.rec.requests
    if timelines:
        tl = timelines[0]
        if not cancelled:
            check(tl.error is not None, "the timeline's error is None although the body failed")
        check(
            tl.hops and tl.hops[-1].error is not None,
            "the last hop's error is None although its body was cut short",
        )


# --------------------------------------------------------------------------------------------
# DNS
# --------------------------------------------------------------------------------------------

DNS_TAIL = ["dns_start", "dns_done", "request_exception", "request_done"]


async def test_dns_nxdomain(zone: DNSServer, dns_resolver: AsyncResolver) -> None:
    """NXDOMAIN: ClientConnectorDNSError as untraced; dns_done(err) ends the trace's phases."""
    zone.nxdomain("gone.test")
    case = await run_case("http://gone.test:80/", dns_resolver)
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ClientConnectorDNSError), "not a DNS error")
        check_failed_in(case, check, "dns_done", DNS_TAIL)


async def test_dns_servfail(zone: DNSServer, dns_resolver: AsyncResolver) -> None:
    """SERVFAIL: ClientConnectorDNSError as untraced, dns_done(err), then the request's end."""
    zone.servfail("broken.test")
    case = await run_case("http://broken.test:80/", dns_resolver)
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ClientConnectorDNSError), "not a DNS error")
        check_failed_in(case, check, "dns_done", DNS_TAIL)


async def test_dns_no_answer_within_the_timeout(
    zone: DNSServer, make_resolver: MakeResolver
) -> None:
    """A DNS server that never answers: the resolver's timeout fails it, dns_done(err) after."""
    zone.drop("void.test")
    case = await run_case("http://void.test:80/", make_resolver(timeout=SHORT))
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ClientConnectorDNSError), "not a DNS error")
        check_failed_in(case, check, "dns_done", DNS_TAIL)
        dns = case.traced.rec.requests[0].hops[0].timings.dns
        check(dns is not None and dns >= SHORT * 1000 * 0.8, f"dns phase {dns} ms: no timeout?")


async def test_dns_resolver_server_down(zone: DNSServer, make_resolver: MakeResolver) -> None:
    """A resolver pointed at a closed UDP port fails the lookup as untraced, dns_done(err)."""
    down = make_resolver(nameservers=[f"127.0.0.1:{closed_udp_port()}"], timeout=SHORT)
    case = await run_case("http://a.test:80/", down)
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ClientConnectorDNSError), "not a DNS error")
        check_failed_in(case, check, "dns_done", DNS_TAIL)


# --------------------------------------------------------------------------------------------
# TCP connect
# --------------------------------------------------------------------------------------------

CONNECT_TAIL = ["connect_start", "connect_done", "request_exception", "request_done"]


async def test_connect_refused(
    zone: DNSServer, dns_resolver: AsyncResolver, refused_port: int
) -> None:
    """A refused connect: ClientConnectorError as untraced, connect_done(ECONNREFUSED) last."""
    case = await run_case(f"http://a.test:{refused_port}/", dns_resolver)
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ClientConnectorError), "not a connect error")
        check_failed_in(case, check, "connect_done", CONNECT_TAIL)


async def test_connect_timeout(
    zone: DNSServer, dns_resolver: AsyncResolver, blackhole: tuple[str, int]
) -> None:
    """A connect that hangs hits sock_connect: ConnectionTimeoutError, connect_done(timeout)."""
    case = await run_case(
        f"http://a.test:{blackhole[1]}/",
        dns_resolver,
        session_kw={"timeout": aiohttp.ClientTimeout(sock_connect=SHORT)},
    )
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ConnectionTimeoutError), "not a connect timeout")
        check_failed_in(case, check, "connect_done", CONNECT_TAIL)


async def test_happy_eyeballs_first_address_dead(
    zone: DNSServer, dns_resolver: AsyncResolver, server: TestServer
) -> None:
    """Two addresses, the first refused: connect_start/done(err) for it, then the live one wins."""
    try:  # precondition: nothing listens on 127.0.0.2 (the server is bound to 127.0.0.1)
        _, writer = await asyncio.open_connection("127.0.0.2", server.port)
    except ConnectionRefusedError:
        pass
    else:
        writer.close()
        pytest.fail("127.0.0.2 accepts connections on this machine: no dead address to test")
    zone.add("two.test", "127.0.0.2", "127.0.0.1")
    case = await run_case(f"http://two.test:{server.port}/", dns_resolver)
    log = case.traced.log
    port = server.port
    with checking() as check:
        common_checks(case, check)
        check(case.traced.result == (200, b"hello"), f"result {case.traced.result}")
        dns = log.of("dns_done")
        check(dns and dns[0].addrs == ("127.0.0.2", "127.0.0.1"), f"addrs {dns[0].addrs}")
        starts = [e.addr for e in log.of("connect_start")]
        dones = [(e.addr, type(e.err).__name__ if e.err else None) for e in log.of("connect_done")]
        check(starts == [f"127.0.0.2:{port}", f"127.0.0.1:{port}"], f"attempts {starts}")
        check(
            dones == [(f"127.0.0.2:{port}", "ConnectionRefusedError"), (f"127.0.0.1:{port}", None)],
            f"attempt outcomes {dones}",
        )
        names = log.names()
        check(
            names[names.index("dns_done") + 1 : names.index("got_conn") + 1]
            == ["connect_start", "connect_done", "connect_start", "connect_done", "got_conn"],
            f"connect sequence {names}",
        )
        got = log.of("got_conn")
        check(got and got[0].conn.remote_addr == f"127.0.0.1:{port}", "got_conn remote addr")


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------

TLS_TAIL = ["tls_handshake_start", "tls_handshake_done", "request_exception", "request_done"]


async def _tls_case(
    raw_peer: RawPeer, server_ctx: ssl.SSLContext, resolver: AsyncResolver, **connector_kw: Any
) -> Case:
    peer = await raw_peer(respond(OK), tls=server_ctx)
    return await run_case(f"https://a.test:{peer.port}/", resolver, connector_kw=connector_kw)


async def test_tls_untrusted_ca(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer, server_ssl_ctx: ssl.SSLContext
) -> None:
    """A certificate from an unknown CA fails as untraced; tls_handshake_done carries why."""
    case = await _tls_case(raw_peer, server_ssl_ctx, dns_resolver)
    with checking() as check:
        common_checks(case, check)
        check(
            isinstance(case.traced.exc, aiohttp.ClientConnectorCertificateError), "not a cert error"
        )
        check_failed_in(case, check, "tls_handshake_done", TLS_TAIL)


@pytest.mark.parametrize(
    ("server_ctx_fixture", "message"),
    [
        pytest.param("wrong_host_ssl_ctx", "Hostname mismatch", id="wrong host name"),
        pytest.param("expired_ssl_ctx", "expired", id="expired certificate"),
    ],
)
async def test_tls_certificate_rejected(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    raw_peer: RawPeer,
    client_ssl_ctx: ssl.SSLContext,
    request: pytest.FixtureRequest,
    server_ctx_fixture: str,
    message: str,
) -> None:
    """A trusted CA's certificate for another name, or expired, fails as untraced, with
    tls_handshake_done(err) then the end."""
    server_ctx: ssl.SSLContext = request.getfixturevalue(server_ctx_fixture)
    case = await _tls_case(raw_peer, server_ctx, dns_resolver, ssl=client_ssl_ctx)
    with checking() as check:
        common_checks(case, check)
        check(
            isinstance(case.traced.exc, aiohttp.ClientConnectorCertificateError), "not a cert error"
        )
        check(message in str(case.traced.exc), f"{case.traced.exc}")
        check_failed_in(case, check, "tls_handshake_done", TLS_TAIL)


async def test_tls_handshake_timeout(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer, client_ssl_ctx: ssl.SSLContext
) -> None:
    """A peer that never sends a ServerHello hits sock_connect; tls_handshake_done(timeout)."""
    peer = await raw_peer(silent())
    case = await run_case(
        f"https://a.test:{peer.port}/",
        dns_resolver,
        connector_kw={"ssl": client_ssl_ctx},
        session_kw={"timeout": aiohttp.ClientTimeout(sock_connect=SHORT)},
    )
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ConnectionTimeoutError), "not a timeout")
        check_failed_in(case, check, "tls_handshake_done", TLS_TAIL)


async def test_tls_peer_closes_mid_handshake(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer, client_ssl_ctx: ssl.SSLContext
) -> None:
    """A peer that reads the ClientHello and closes fails as untraced, tls_handshake_done(err)."""
    peer = await raw_peer(close_mid_handshake())
    case = await run_case(
        f"https://a.test:{peer.port}/", dns_resolver, connector_kw={"ssl": client_ssl_ctx}
    )
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ClientConnectorError), "not a connector error")
        check_failed_in(case, check, "tls_handshake_done", TLS_TAIL)


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

HTTP_TAIL = ["response_body_done", "put_idle_conn", "request_exception", "request_done"]


async def _http_case(
    raw_peer: RawPeer, handler: Any, resolver: AsyncResolver, **run_kw: Any
) -> Case:
    peer = await raw_peer(handler)
    return await run_case(f"http://a.test:{peer.port}/", resolver, **run_kw)


def check_retried_once(case: Case, check: Checks) -> None:
    """aiohttp retries an idempotent request once on a fresh connection: two round trips."""
    trips = list(round_trips(case.traced.log))
    check(trips == [(0, 0), (0, 1)], f"round trips {trips}")
    retry = case.traced.log.of("retry")
    check(len(retry) == 1 and retry[0].reason == "connection failed", f"retry {retry}")


async def test_server_closes_before_any_response(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer
) -> None:
    """A server that closes without a byte: ServerDisconnectedError as untraced, after a retry."""
    case = await _http_case(raw_peer, close_before_response(), dns_resolver)
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ServerDisconnectedError), "not a disconnect")
        check_retried_once(case, check)
        check_failed_in(case, check, "response_body_done", HTTP_TAIL)
        check_not_pooled_after_error(case, check, server_closed=True)


async def test_reset_mid_headers(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer
) -> None:
    """A reset half-way through the response head: ClientOSError as untraced, after a retry."""
    case = await _http_case(raw_peer, reset_mid_headers(), dns_resolver)
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ClientOSError), "not a ClientOSError")
        check_retried_once(case, check)
        check_failed_in(case, check, "response_body_done", HTTP_TAIL)
        check_not_pooled_after_error(case, check, server_closed=False)


async def test_slow_loris_headers_hit_the_read_timeout(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer
) -> None:
    """A head dribbled slower than sock_read: SocketTimeoutError, response_body_done(timeout)."""
    case = await _http_case(
        raw_peer,
        slow_headers(interval=2 * SHORT),
        dns_resolver,
        session_kw={"timeout": aiohttp.ClientTimeout(sock_read=SHORT)},
    )
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.SocketTimeoutError), "not a read timeout")
        check_failed_in(case, check, "response_body_done", HTTP_TAIL)
        check_not_pooled_after_error(case, check, server_closed=False)


@pytest.mark.parametrize(
    ("handler", "server_closed"),
    [
        pytest.param(reset_mid_body, False, id="reset mid-body"),
        pytest.param(truncated_chunked, True, id="chunked body closed before its last chunk"),
        pytest.param(content_length_too_long, True, id="Content-Length past the bytes, then FIN"),
    ],
)
async def test_body_cut_short(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    raw_peer: RawPeer,
    handler: Callable[[], Any],
    server_closed: bool,
) -> None:
    """A body cut short (reset, truncated chunked, Content-Length too long): ClientPayloadError
    from read() as untraced; the body ends with the error and the connection is not pooled."""
    case = await _http_case(raw_peer, handler(), dns_resolver)
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.ClientPayloadError), "not a payload error")
        check_body_cut(case, check)
        check_not_pooled_after_error(case, check, server_closed=server_closed)


async def test_informational_storm(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer
) -> None:
    """Fifty 103 responses before the 200: each is one got_1xx_response, the request succeeds."""
    case = await _http_case(raw_peer, informational_storm(50), dns_resolver)
    log = case.traced.log
    with checking() as check:
        common_checks(case, check)
        check(case.traced.result == (200, b"ok"), f"result {case.traced.result}")
        hints = log.of("got_1xx_response")
        check([e.status for e in hints] == [103] * 50, f"{len(hints)} got_1xx_response")
        check(
            [e.headers.get("Link") for e in hints[:2]]
            == ["</s0.css>; rel=preload", "</s1.css>; rel=preload"],
            "1xx headers",
        )
        names = log.names()
        check(
            names.index("got_first_response_byte") < names.index("got_1xx_response")
            and max(i for i, n in enumerate(names) if n == "got_1xx_response")
            < names.index("response_body_done"),
            "1xx events outside first byte .. body done",
        )
        check(log.of("request_end")[0].status == 200, "final status")


async def test_redirect_loop_hits_max_redirects(
    zone: DNSServer, dns_resolver: AsyncResolver, server: TestServer
) -> None:
    """A self-redirect stops at max_redirects with TooManyRedirects; every hop is whole."""
    case = await run_case(
        f"http://a.test:{server.port}/loop", dns_resolver, request_kw={"max_redirects": 3}
    )
    log = case.traced.log
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, aiohttp.TooManyRedirects), "not TooManyRedirects")
        hops = (
            len(case.plain_exc.history)
            if isinstance(case.plain_exc, aiohttp.TooManyRedirects)
            else -1
        )
        trips = list(round_trips(log))
        check(trips == [(i, 0) for i in range(hops)], f"round trips {trips}, aiohttp saw {hops}")
        check(len(log.of("redirect")) == hops - 1, f"{len(log.of('redirect'))} redirect events")
        check(all(e.status == 302 for e in log.of("redirect")), "redirect status")
        check(all(e.err is None for e in log.of("response_body_done")), "a hop body failed")
        check(log.names()[-4:] == HTTP_TAIL, f"trace ends {log.names()[-4:]}")
        tl = case.traced.rec.requests[0]
        check(len(tl.redirects) == hops - 1, f"timeline redirects {tl.redirects}")


# --------------------------------------------------------------------------------------------
# Cancellation by the caller
# --------------------------------------------------------------------------------------------


def check_cancelled_in(case: Case, check: Checks, done: str, tail: list[str]) -> None:
    check(isinstance(case.traced.exc, asyncio.CancelledError), f"traced raised {case.traced.exc!r}")
    check_failed_in(case, check, done, tail)


async def test_cancel_during_dns(zone: DNSServer, dns_resolver: AsyncResolver) -> None:
    """Cancelled while the DNS answer is delayed: dns_done(CancelledError), then the end."""
    zone.add("slow.test", "127.0.0.1", delay=0.2)
    case = await run_case("http://slow.test:80/", dns_resolver, cancel_after=0.1)
    with checking() as check:
        common_checks(case, check)
        check_cancelled_in(case, check, "dns_done", DNS_TAIL)


async def test_cancel_during_connect(
    zone: DNSServer, dns_resolver: AsyncResolver, blackhole: tuple[str, int]
) -> None:
    """Cancelled while the connect hangs: connect_done(CancelledError), then the end."""
    case = await run_case(f"http://a.test:{blackhole[1]}/", dns_resolver, cancel_after=0.2)
    with checking() as check:
        common_checks(case, check)
        check_cancelled_in(case, check, "connect_done", CONNECT_TAIL)


async def test_cancel_during_tls(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer, client_ssl_ctx: ssl.SSLContext
) -> None:
    """Cancelled while the TLS peer is silent: tls_handshake_done(CancelledError), the end."""
    peer = await raw_peer(silent())
    case = await run_case(
        f"https://a.test:{peer.port}/",
        dns_resolver,
        connector_kw={"ssl": client_ssl_ctx},
        cancel_after=0.2,
    )
    with checking() as check:
        common_checks(case, check)
        check_cancelled_in(case, check, "tls_handshake_done", TLS_TAIL)


async def test_cancel_while_waiting_for_the_first_byte(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer
) -> None:
    """Cancelled while the server says nothing: the round trip ends with the cancellation."""
    case = await _http_case(raw_peer, silent(), dns_resolver, cancel_after=0.2)
    with checking() as check:
        common_checks(case, check)
        check_cancelled_in(case, check, "response_body_done", HTTP_TAIL)
        check("got_first_response_byte" not in case.traced.log.names(), "a byte arrived?")


async def test_cancel_during_the_body_read(
    zone: DNSServer, dns_resolver: AsyncResolver, raw_peer: RawPeer
) -> None:
    """Cancelled while the body drips in: response_body_done(err), then request_done, last."""
    case = await _http_case(raw_peer, dripping_body(), dns_resolver, cancel_after=0.3)
    with checking() as check:
        common_checks(case, check)
        check(isinstance(case.traced.exc, asyncio.CancelledError), f"{case.traced.exc!r}")
        check_body_cut(case, check, cancelled=True)


async def test_finished_requests_leave_nothing_pointing_at_them(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    server: TestServer,
    tls_server: TestServer,
    client_ssl_ctx: ssl.SSLContext,
) -> None:
    """Keep-alive HTTP and HTTPS requests that succeeded: with the caller keeping nothing of
    them, no pooled connection, socket, SSL object or loop timer still holds their state."""
    ids: list[int] = []
    trace = aiotrace.ClientTrace(request_start=lambda e: ids.append(e.request.id))
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    async with aiotrace.traced_session(connector=connector) as session:
        for url in (f"http://a.test:{server.port}/", f"https://a.test:{tls_server.port}/"):
            assert await fetch(session, url, trace_request_ctx=trace) == (200, b"hello")
        await asyncio.sleep(0.05)
        assert sum(len(c) for c in connector._conns.values()) == 2  # both are pooled
        gc.collect()
        alive = sorted(s.id for s in _request_states() if s.id in ids)
        retainers = retainers_of(set(ids))
    assert len(ids) == 2
    assert alive == [] and retainers == [], f"requests {alive} kept alive by {retainers}"


async def test_a_dropped_per_request_recorder_is_freed(
    zone: DNSServer, dns_resolver: AsyncResolver, server: TestServer
) -> None:
    """A Recorder passed per request to a session that has its own trace, then dropped, is freed
    by the next collection together with every request it recorded."""
    session_log = EventLog(HOOKS)
    connector = aiotrace.TracingConnector(resolver=dns_resolver, force_close=True)
    async with aiotrace.traced_session(connector=connector, trace=session_log.trace) as session:
        rec = aiotrace.Recorder()
        for _ in range(3):
            assert await fetch(session, f"http://a.test:{server.port}/", trace_request_ctx=rec) == (
                200,
                b"hello",
            )
        ids = {tl.id for tl in rec.requests}
        dropped = weakref.ref(rec)
        del rec
        session_log.clear()  # the session's own log holds the events, and they the requests
        await asyncio.sleep(0.05)
        gc.collect()
        alive = sorted(s.id for s in _request_states() if s.id in ids)
        holders = _referrer_types(dropped())
    assert len(ids) == 3
    assert alive == [] and not holders, f"requests {alive} alive; the Recorder held by {holders}"


async def test_a_dropped_scoped_recorder_is_freed_while_connections_stay_pooled(
    zone: DNSServer, dns_resolver: AsyncResolver, server: TestServer
) -> None:
    """A Recorder used as a scope for a few keep-alive requests, then dropped while their
    connection stays pooled, is freed by the next collection with what it recorded."""
    connector = aiotrace.TracingConnector(resolver=dns_resolver)
    async with aiotrace.traced_session(connector=connector) as session:
        rec = aiotrace.Recorder()
        with rec:
            for _ in range(3):
                assert await fetch(session, f"http://a.test:{server.port}/") == (200, b"hello")
        ids = {tl.id for tl in rec.requests}
        dropped = weakref.ref(rec)
        del rec
        gc.collect()
        alive = sorted(s.id for s in _request_states() if s.id in ids)
        holders = _referrer_types(dropped())
        assert sum(len(c) for c in connector._conns.values()) == 1  # still pooled
    assert len(ids) == 3
    assert alive == [] and not holders, f"requests {alive} alive; the Recorder held by {holders}"


def _referrer_types(o: object) -> list[str]:
    """What still refers to ``o`` (``[]`` once it is freed); names a Context's holder too."""
    if o is None:
        return []
    out = set()
    for r in gc.get_referrers(o):
        if isinstance(r, tuple):  # a composed trace's _observers, or a cache entry
            out.update(f"tuple <- {type(rr).__name__}" for rr in gc.get_referrers(r))
        else:
            out.add(type(r).__name__)
    return sorted(out)


# --------------------------------------------------------------------------------------------
# Hooks that misbehave
# --------------------------------------------------------------------------------------------


class HookError(Exception):
    """Raised by the misbehaving hooks below."""


def boom(event: Any) -> None:
    raise HookError(type(event).__name__)


@pytest.fixture
async def tls_session(
    zone: DNSServer, dns_resolver: AsyncResolver, client_ssl_ctx: ssl.SSLContext
) -> AsyncIterator[aiohttp.ClientSession]:
    """A traced session trusting the test CA; keep-alive off, so each request dials and
    shakes hands; a 2 s connect timeout bounds any hang."""
    connector = aiotrace.TracingConnector(
        resolver=dns_resolver, ssl=client_ssl_ctx, force_close=True
    )
    async with aiotrace.traced_session(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10, sock_connect=2)
    ) as s:
        yield s


async def _ok_then_refused(
    session: aiohttp.ClientSession,
    tls_server: TestServer,
    refused_port: int,
    trace: aiotrace.ClientTrace,
) -> None:
    """One request that succeeds and one refused, both traced with ``trace``: each ends as
    it would untraced."""
    async with asyncio.timeout(10):
        ok = await fetch(session, f"https://a.test:{tls_server.port}/", trace_request_ctx=trace)
        with pytest.raises(aiohttp.ClientConnectorError) as failed:
            await fetch(session, f"https://a.test:{refused_port}/", trace_request_ctx=trace)
    assert ok == (200, b"hello")
    assert isinstance(failed.value.os_error, ConnectionRefusedError)


async def test_every_hook_raising_is_logged_and_requests_go_on(
    tls_session: aiohttp.ClientSession,
    tls_server: TestServer,
    refused_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every hook raising: each raise is logged on "aiotrace" and the requests go on untouched."""
    raising = aiotrace.ClientTrace(**dict.fromkeys(aiotrace.HOOK_NAMES, boom))
    with caplog.at_level(logging.ERROR, logger="aiotrace"), capture_events() as log:
        await _ok_then_refused(tls_session, tls_server, refused_port, raising)
    raised = [r for r in caplog.records if r.name == "aiotrace"]
    assert len(raised) == len(log.events)
    assert all(r.exc_info and isinstance(r.exc_info[1], HookError) for r in raised)
    names = log.names()
    assert "tls_handshake_done" in names and "response_body_done" in names
    assert names.count("request_done") == 2 and names[-1] == "request_done"
    assert len(tls_session.connector._acquired) == 0


async def test_a_trace_alone_raising_from_every_hook_is_logged_and_requests_go_on(
    tls_session: aiohttp.ClientSession,
    tls_server: TestServer,
    refused_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same with the raising trace the only one setting hooks (its functions are called
    with no wrapper: the emitters log their errors): one log record per event, with the
    hook's error and name, and the requests go on untouched."""
    fired: list[str] = []

    def boom_counted(event: Any) -> None:
        fired.append(type(event).__name__)
        raise HookError(type(event).__name__)

    raising = aiotrace.ClientTrace(**dict.fromkeys(aiotrace.HOOK_NAMES, boom_counted))
    with caplog.at_level(logging.ERROR, logger="aiotrace"), aiotrace.Recorder() as rec:
        await _ok_then_refused(tls_session, tls_server, refused_port, raising)
    raised = [r for r in caplog.records if r.name == "aiotrace"]
    assert len(raised) == len(fired) > 20
    assert all(r.exc_info and isinstance(r.exc_info[1], HookError) for r in raised)
    assert all(
        "boom_counted" in r.getMessage() or "request_exception" in r.getMessage() for r in raised
    )
    assert {"TLSHandshakeDoneInfo", "ResponseBodyDoneInfo", "GotConnInfo"} <= set(fired)
    assert fired.count("RequestDoneInfo") == 2 and fired[-1] == "RequestDoneInfo"
    assert [t.done for t in rec.requests] == [True, True]
    assert len(tls_session.connector._acquired) == 0


# Hooks that fire before request_end on a fresh HTTPS request with a small body. (request_done
# is left out: the README says its error is only logged once the request is over.)
PRE_END_HOOKS = [
    "request_start", "get_conn", "dns_start", "dns_done", "connect_start", "connect_done",
    "tls_handshake_start", "tls_handshake_done", "got_conn", "wrote_header_field",
    "wrote_headers", "wrote_request", "got_first_response_byte", "response_body_done",
    "put_idle_conn", "request_end",
]  # fmt: skip


@pytest.mark.parametrize("hook", PRE_END_HOOKS)
async def test_propagate_errors_fails_the_request_with_the_hook_error(
    hook: str, tls_session: aiohttp.ClientSession, tls_server: TestServer
) -> None:
    """propagate_errors=True: a raising hook fails the request with its error, at once; the
    other traces still see request_done once, the timeline ends, and the pool stays usable."""
    url = f"https://a.test:{tls_server.port}/"
    trace = aiotrace.ClientTrace(propagate_errors=True, **{hook: boom})
    with capture_events() as log, aiotrace.Recorder() as rec:
        started = time.perf_counter()
        raised: Exception | None = None
        try:
            async with asyncio.timeout(10):
                await fetch(tls_session, url, trace_request_ctx=trace)
        except Exception as e:
            raised = e
        elapsed = time.perf_counter() - started
    with checking() as check:
        check(isinstance(raised, HookError), f"the caller got {raised!r}, not HookError")
        check(elapsed < 1.0, f"the hook error took {elapsed:.2f} s to surface")
        names = log.names()
        check(
            names.count("request_done") == 1 and names[-1:] == ["request_done"],
            f"the composed EventLog saw request_done x{names.count('request_done')}; "
            f"its trace ends {names[-3:]}",
        )
        check(
            [tl.done for tl in rec.requests] == [True],
            f"recorder timelines done: {[tl.done for tl in rec.requests]}",
        )
        check(len(tls_session.connector._acquired) == 0, "a connection is still acquired")
        check(current_request.get() is None, "current_request leaked")
    async with asyncio.timeout(5):
        assert await fetch(tls_session, url) == (200, b"hello")


@pytest.mark.parametrize("hook", PRE_END_HOOKS)
async def test_a_propagating_trace_alone_fails_the_request_with_the_hook_error(
    hook: str, tls_session: aiohttp.ClientSession, tls_server: TestServer
) -> None:
    """The same with the propagating trace the only one setting hooks (its function called
    with no wrapper): the caller gets the hook's error at once, the request is done, and the
    pool stays usable."""
    url = f"https://a.test:{tls_server.port}/"
    trace = aiotrace.ClientTrace(propagate_errors=True, **{hook: boom})
    with aiotrace.Recorder() as rec:
        started = time.perf_counter()
        with pytest.raises(HookError):
            async with asyncio.timeout(10):
                await fetch(tls_session, url, trace_request_ctx=trace)
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert [tl.done for tl in rec.requests] == [True]
    assert len(tls_session.connector._acquired) == 0
    async with asyncio.timeout(5):
        assert await fetch(tls_session, url) == (200, b"hello")


@pytest.mark.parametrize("hook", ["got_conn", "got_first_response_byte", "request_done"])
async def test_propagating_hook_error_hides_nothing_from_other_traces(
    hook: str, tls_session: aiohttp.ClientSession, tls_server: TestServer
) -> None:
    """A propagate_errors hook that raises: the other traces composed with it still get that
    event, and request_done once, last."""
    trace = aiotrace.ClientTrace(propagate_errors=True, **{hook: boom})
    with capture_events() as log:
        try:
            async with asyncio.timeout(10):
                await fetch(
                    tls_session, f"https://a.test:{tls_server.port}/", trace_request_ctx=trace
                )
        except HookError:
            pass
    names = log.names()
    with checking() as check:
        check(hook in names, f"the scoped EventLog never saw {hook}: {names}")
        check(
            names.count("request_done") == 1 and names[-1:] == ["request_done"],
            f"the scoped EventLog saw request_done x{names.count('request_done')}: {names[-3:]}",
        )


async def test_propagating_request_exception_hook_leaves_aiohttps_error(
    tls_session: aiohttp.ClientSession, refused_port: int
) -> None:
    """A raising request_exception hook, even propagating, leaves the caller aiohttp's error."""
    trace = aiotrace.ClientTrace(propagate_errors=True, request_exception=boom)
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(tls_session, f"https://a.test:{refused_port}/", trace_request_ctx=trace)


async def test_slow_coroutine_hook_does_not_delay_the_request(
    zone: DNSServer, dns_resolver: AsyncResolver, server: TestServer, refused_port: int
) -> None:
    """Coroutine hooks sleeping 0.5 s delay neither a request nor its failure; they drain later."""
    ran: list[tuple[int, str]] = []
    all_ran = asyncio.Event()

    def slow(name: str) -> Any:
        async def hook(event: Any) -> None:
            await asyncio.sleep(0.5)
            ran.append((event.request.id, name))
            if len(ran) == 7:
                all_ran.set()

        return hook

    trace = aiotrace.ClientTrace(
        request_start=slow("request_start"), got_conn=slow("got_conn"),
        connect_done=slow("connect_done"), request_done=slow("request_done"),
    )  # fmt: skip
    before = set(asyncio.all_tasks())
    connector = aiotrace.TracingConnector(resolver=dns_resolver)
    async with aiotrace.traced_session(connector=connector) as session:
        started = time.perf_counter()
        assert await fetch(session, f"http://a.test:{server.port}/", trace_request_ctx=trace) == (
            200,
            b"hello",
        )
        ok_elapsed = time.perf_counter() - started
        assert ran == []
        started = time.perf_counter()
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(session, f"http://a.test:{refused_port}/", trace_request_ctx=trace)
        failed_elapsed = time.perf_counter() - started
        assert ok_elapsed < 0.4 and failed_elapsed < 0.4, (ok_elapsed, failed_elapsed)
        async with asyncio.timeout(5):
            await all_ran.wait()
    ok_id, failed_id = dict.fromkeys(rid for rid, _ in ran)
    assert [n for rid, n in ran if rid == ok_id] == [
        "request_start", "connect_done", "got_conn", "request_done",
    ]  # fmt: skip
    assert [n for rid, n in ran if rid == failed_id] == [
        "request_start", "connect_done", "request_done",
    ]  # fmt: skip
    assert await _settle(before) == []


@pytest.mark.allow_blocking
async def test_blocking_hook_does_not_disable_aiohttps_timeout(
    zone: DNSServer, dns_resolver: AsyncResolver, server: TestServer
) -> None:
    """A sync hook blocking the loop 0.5 s: the 0.3 s total timeout still fails the request, as
    it does untraced with the same block in an aiohttp trace callback."""

    def block(event: Any) -> None:
        time.sleep(0.5)

    async def block_signal(session: Any, ctx: Any, params: Any) -> None:
        time.sleep(0.5)  # noqa: ASYNC251 - the point: block the loop as the hook does

    url = f"http://a.test:{server.port}/"
    timeout = aiohttp.ClientTimeout(total=SHORT)
    plain_trace = aiohttp.TraceConfig()
    plain_trace.on_connection_create_end.append(block_signal)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=dns_resolver),
        timeout=timeout,
        trace_configs=[plain_trace],
    ) as plain:
        with pytest.raises(BaseException) as untraced:
            await fetch(plain, url)
    connector = aiotrace.TracingConnector(resolver=dns_resolver)
    async with aiotrace.traced_session(connector=connector, timeout=timeout) as session:
        with capture_events(HOOKS) as log:
            started = time.perf_counter()
            with pytest.raises(BaseException) as traced:
                await fetch(session, url, trace_request_ctx=aiotrace.ClientTrace(got_conn=block))
            elapsed = time.perf_counter() - started
        assert len(connector._acquired) == 0
    assert type(traced.value) is type(untraced.value)
    assert isinstance(traced.value, asyncio.TimeoutError)
    assert 0.5 <= elapsed < 2.0
    names = log.names()
    assert names[-2:] == ["request_exception", "request_done"]
    assert log.of("request_done")[0].err is traced.value


async def test_coroutine_hook_making_a_request_on_the_same_session(
    zone: DNSServer, dns_resolver: AsyncResolver, server: TestServer
) -> None:
    """A coroutine hook of a scoped trace awaits its own request on the same one-connection
    session: no deadlock, all bounded; the hook's request is untraced (README: hooks run
    outside any trace) and adds nothing to the observed request."""
    base = f"http://a.test:{server.port}/"
    results: list[tuple[int, bytes]] = []
    finished = asyncio.Event()
    connector = aiotrace.TracingConnector(resolver=dns_resolver, limit_per_host=1)
    async with aiotrace.traced_session(connector=connector) as session:

        async def nested(event: Any) -> None:
            results.append(await fetch(session, base + "?n=inner"))
            finished.set()

        with capture_events(HOOKS) as log, aiotrace.Recorder() as rec:
            async with asyncio.timeout(5):
                with aiotrace.with_client_trace(aiotrace.ClientTrace(got_conn=nested)):
                    assert await fetch(session, base + "?n=outer") == (200, b"hello")
                await finished.wait()
                await asyncio.sleep(0.05)
        assert results == [(200, b"hello")]
        assert len(connector._acquired) == 0
    (outer,) = log.request_ids()
    names = log.names(outer)
    assert names[0] == "request_start" and names[-1] == "request_done"
    assert names.count("request_done") == 1 and names.count("get_conn") == 1
    assert {e.request.url.query["n"] for _, e in log.events} == {"outer"}
    assert [(tl.url.query["n"], len(tl.hops)) for tl in rec.requests] == [("outer", 1)]


async def test_untraced_request_from_a_coroutine_hook_stays_out_of_its_request(
    zone: DNSServer, dns_resolver: AsyncResolver, server: TestServer
) -> None:
    """A per-request trace's coroutine hook makes an untraced request on the same session: the
    traced request's events and timeline get nothing of it, and nothing after request_done."""
    base = f"http://a.test:{server.port}/"
    done = asyncio.Event()
    log = EventLog(HOOKS)
    rec = aiotrace.Recorder()
    connector = aiotrace.TracingConnector(resolver=dns_resolver)
    async with aiotrace.traced_session(connector=connector) as session:

        async def nested(event: Any) -> None:
            try:
                await fetch(session, base + "?n=inner")
            finally:
                done.set()

        # Compose through the public API, then use it per request only (no scope is active
        # while the request runs, so the hook's own request is untraced).
        with (
            aiotrace.with_client_trace(rec.trace),
            aiotrace.with_client_trace(log.trace),
            aiotrace.with_client_trace(aiotrace.ClientTrace(request_done=nested)) as trace,
        ):
            pass
        async with asyncio.timeout(5):
            assert await fetch(session, base + "?n=outer", trace_request_ctx=trace) == (
                200,
                b"hello",
            )
            await done.wait()
            await asyncio.sleep(0.05)
        assert len(connector._acquired) == 0
    with checking() as check:
        names = log.names()
        after = names[names.index("request_done") + 1 :]
        check(after == [], f"events after request_done: {after}")
        urls = sorted({str(e.request.url) for _, e in log.events})
        check(urls == [base + "?n=outer"], f"event URLs {urls}")
        timelines = rec.requests
        check(len(timelines) == 1, f"{len(timelines)} timelines")
        hops = [str(h.url) for tl in timelines for h in tl.hops]
        check(hops == [base + "?n=outer"], f"the traced request's timeline has hops {hops}")
