"""ClientTrace hooks end to end: whole event sequences against real loopback servers."""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.resolver import AsyncResolver
from aiohttp.test_utils import TestServer
from peers import (
    DNSServer,
    RawServer,
    continue_100,
    early_hints,
    respond,
    stale_after_first_response,
)

import aiotrace
from aiotrace._trace.context import scoped_trace
from aiotrace._trace.hop import HopState
from aiotrace._trace.request import RequestState, current_request
from aiotrace.testing import EventLog, capture_events

# wrote_header_field fires once per header; the sequences below leave it out.
HOOKS = [n for n in aiotrace.HOOK_NAMES if n != "wrote_header_field"]

FRESH_HTTP = [
    "request_start", "get_conn", "dns_start", "dns_done", "connect_start", "connect_done",
    "got_conn", "wrote_headers", "wrote_request", "got_first_response_byte",
    "response_body_done", "put_idle_conn", "request_end", "request_done",
]  # fmt: skip
REUSED_HTTP = [
    "request_start", "get_conn", "got_conn", "wrote_headers", "wrote_request",
    "got_first_response_byte", "response_body_done", "put_idle_conn", "request_end",
    "request_done",
]  # fmt: skip
FRESH_HTTPS = [
    "request_start", "get_conn", "dns_start", "dns_done", "connect_start", "connect_done",
    "tls_handshake_start", "tls_handshake_done", "got_conn", "wrote_headers", "wrote_request",
    "got_first_response_byte", "response_body_done", "put_idle_conn", "request_end",
    "request_done",
]  # fmt: skip


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)

    async def redirect_n(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound("/" if n <= 1 else f"/redirect/{n - 1}")

    app.router.add_get("/redirect/{n}", redirect_n)
    return app


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


@pytest.fixture
async def server(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(make_app())


@pytest.fixture
async def session(
    zone: DNSServer, dns_resolver: AsyncResolver
) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiotrace.traced_session(
        connector=aiotrace.TracingConnector(resolver=dns_resolver)
    ) as s:
        yield s


async def fetch(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, bytes]:
    async with session.get(url, **kw) as resp:
        return resp.status, await resp.read()


async def test_fresh_http_request_fires_go_order(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A first request to a host name fires DNS, one connect, got_conn(new) and the rest in Go's order."""
    with capture_events(HOOKS) as log:
        assert await fetch(session, f"http://a.test:{server.port}/") == (200, b"hello")
    assert log.names() == FRESH_HTTP
    dns = log.of("dns_done")[0]
    assert (dns.host, dns.addrs, dns.err, dns.coalesced, dns.cached) == (
        "a.test", ("127.0.0.1",), None, False, False,
    )  # fmt: skip
    start, done = log.of("connect_start")[0], log.of("connect_done")[0]
    assert (start.network, start.addr) == ("tcp4", f"127.0.0.1:{server.port}")
    assert (done.addr, done.err) == (start.addr, None)
    got = log.of("got_conn")[0]
    assert (got.reused, got.was_idle, got.idle_time) == (False, False, 0.0)
    assert got.conn.remote_addr == f"127.0.0.1:{server.port}"
    assert got.conn.local_addr is not None and got.conn.tls is None
    assert log.of("put_idle_conn")[0].err is None
    assert log.of("request_end")[0].status == 200
    times = [e.time for _, e in log.events]
    assert times == sorted(times)


async def test_reused_connection_reports_idle_time(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A second request reuses the pooled connection and reports how long it sat idle."""
    url = f"http://a.test:{server.port}/"
    await fetch(session, url)
    await asyncio.sleep(0.1)
    with capture_events(HOOKS) as log:
        await fetch(session, url)
    assert log.names() == REUSED_HTTP
    got = log.of("got_conn")[0]
    assert got.reused and got.was_idle
    assert 0.09 <= got.idle_time < 5.0


async def test_ip_literal_has_no_dns_events(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """An IP literal URL skips DNS: no dns_start/dns_done."""
    with capture_events(HOOKS) as log:
        await fetch(session, f"http://127.0.0.1:{server.port}/")
    assert log.names() == [n for n in FRESH_HTTP if not n.startswith("dns_")]


async def test_cached_dns_is_reported_as_cached(
    session: aiohttp.ClientSession, server: TestServer, zone: DNSServer
) -> None:
    """A second connection to the same name is served from aiohttp's DNS cache: cached=True."""
    await fetch(session, f"http://a.test:{server.port}/", headers={"Connection": "close"})
    queries = zone.count("a.test")
    with capture_events(HOOKS) as log:
        await fetch(session, f"http://a.test:{server.port}/")
    dns = log.of("dns_done")[0]
    assert (dns.cached, dns.coalesced, dns.addrs) == (True, False, ("127.0.0.1",))
    assert zone.count("a.test") == queries


async def test_redirect_hops_are_separate_round_trips(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Each redirect hop is its own round trip, with a redirect event between hops."""
    with capture_events(HOOKS) as log:
        assert (await fetch(session, f"http://a.test:{server.port}/redirect/2"))[0] == 200
    names = log.names()
    hop = [
        "get_conn", "got_conn", "wrote_headers", "wrote_request", "got_first_response_byte",
        "response_body_done", "put_idle_conn",
    ]  # fmt: skip
    first = FRESH_HTTP[1:-2]
    assert names == [
        "request_start", *first, "redirect", *hop, "redirect", *hop, "request_end", "request_done",
    ]  # fmt: skip
    redirects = log.of("redirect")
    assert [(r.status, r.from_url.path, r.to_url.path) for r in redirects] == [
        (302, "/redirect/2", "/redirect/1"),
        (302, "/redirect/1", "/"),
    ]
    assert [e.request.hop for e in log.of("get_conn")] == [0, 1, 2]
    assert [e.request.url.path for e in log.of("get_conn")] == ["/redirect/2", "/redirect/1", "/"]
    assert [e.reused for e in log.of("got_conn")] == [False, True, True]
    assert len({e.request.id for _, e in log.events}) == 1


async def test_post_body_is_written_by_the_body_task(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A request with a body reports wrote_headers before, and wrote_request after, the body."""
    with capture_events(HOOKS) as log:
        async with session.post(f"http://a.test:{server.port}/echo", data=b"x" * 200_000) as r:
            assert len(await r.read()) == 200_000
    names = log.names()
    assert names.index("got_conn") < names.index("wrote_headers") < names.index("wrote_request")
    assert names.index("wrote_request") < names.index("request_end")
    assert log.of("wrote_request")[0].err is None


async def test_wrote_header_field_lists_every_header(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """wrote_header_field fires once per header name, with all its values, before wrote_headers."""
    with capture_events() as log:
        await fetch(session, f"http://a.test:{server.port}/", headers={"X-Test": "1"})
    fields = {e.key: e.values for e in log.of("wrote_header_field")}
    assert fields["X-Test"] == ("1",)
    assert fields["Host"] == (f"a.test:{server.port}",)
    names = log.names()
    last_field = max(i for i, n in enumerate(names) if n == "wrote_header_field")
    assert last_field < names.index("wrote_headers")


async def test_https_fresh_connection_brackets_the_handshake(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
) -> None:
    """Fresh HTTPS with the user's own SSLContext: TLS start/done between connect and got_conn."""
    srv = await aiohttp_server(make_app(), ssl=server_ssl_ctx)
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    async with aiotrace.traced_session(connector=connector) as session:
        with capture_events(HOOKS) as log:
            assert await fetch(session, f"https://a.test:{srv.port}/") == (200, b"hello")
    assert log.names() == FRESH_HTTPS
    done = log.of("tls_handshake_done")[0]
    assert done.err is None
    assert done.version in ("TLSv1.2", "TLSv1.3") and done.cipher
    assert done.alpn is None  # neither side of this pair offers ALPN
    assert done.session_reused is False
    assert done.peer_issuer is not None and done.peer_not_after is not None
    assert log.of("tls_handshake_start")[0].server_name == "a.test"
    tls = log.of("got_conn")[0].conn.tls
    assert tls is not None and tls.version == done.version
    assert client_ssl_ctx.verify_mode == ssl.CERT_REQUIRED and client_ssl_ctx.check_hostname
    # The certificate's names are remembered per certificate and verify mode: a connection
    # made without verification (ssl=False) reports none, a verified one after it does.
    issuers = []
    for verify in (False, True):
        connector = aiotrace.TracingConnector(
            resolver=dns_resolver, ssl=client_ssl_ctx if verify else False
        )
        async with aiotrace.traced_session(connector=connector) as session:
            with capture_events(HOOKS) as log:
                assert await fetch(session, f"https://a.test:{srv.port}/") == (200, b"hello")
        issuers.append(log.of("tls_handshake_done")[0].peer_issuer)
    assert issuers == [None, done.peer_issuer]


async def test_https_per_request_context_and_verification_failure(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
) -> None:
    """With aiohttp's default verification an untrusted cert fails exactly as untraced; a
    per-request trusting context succeeds. TLS hooks fire both times."""
    srv = await aiohttp_server(make_app(), ssl=server_ssl_ctx)
    url = f"https://a.test:{srv.port}/"
    async with aiotrace.traced_session(
        connector=aiotrace.TracingConnector(resolver=dns_resolver)
    ) as session:
        with capture_events(HOOKS) as log:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as traced:
                await fetch(session, url)
            assert await fetch(session, url, ssl=client_ssl_ctx) == (200, b"hello")
    failed, ok = log.request_ids()
    fail_names = log.names(failed)
    assert fail_names[-2:] == ["request_exception", "request_done"]
    tls_errors = [e.err for e in log.of("tls_handshake_done", failed)]
    assert tls_errors and all(isinstance(e, ssl.SSLCertVerificationError) for e in tls_errors)
    assert log.of("request_exception", failed)[0].err is traced.value
    assert "tls_handshake_done" in log.names(ok)
    assert log.of("tls_handshake_done", ok)[0].err is None
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=dns_resolver)
    ) as plain:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as untraced:
            await fetch(plain, url)
    assert type(untraced.value) is type(traced.value)


async def test_connection_refused_ends_connect_with_error(
    session: aiohttp.ClientSession, refused_port: int
) -> None:
    """A refused connect ends in connect_done(err) then request_exception with aiohttp's error."""
    with capture_events(HOOKS) as log, pytest.raises(aiohttp.ClientConnectorError) as exc_info:
        await fetch(session, f"http://127.0.0.1:{refused_port}/")
    names = log.names()
    assert names[:4] == ["request_start", "get_conn", "connect_start", "connect_done"]
    assert names[-2:] == ["request_exception", "request_done"]
    assert "got_conn" not in names
    assert all(isinstance(e.err, ConnectionRefusedError) for e in log.of("connect_done"))
    assert log.of("request_exception")[0].err is exc_info.value
    assert log.of("request_done")[0].err is exc_info.value


async def test_nxdomain_ends_dns_with_error(
    session: aiohttp.ClientSession, zone: DNSServer
) -> None:
    """NXDOMAIN ends in dns_done(err) then request_exception(ClientConnectorDNSError)."""
    zone.nxdomain("gone.test")
    with capture_events(HOOKS) as log, pytest.raises(aiohttp.ClientConnectorDNSError) as exc_info:
        await fetch(session, "http://gone.test:80/")
    assert log.names() == [
        "request_start", "get_conn", "dns_start", "dns_done", "request_exception", "request_done",
    ]  # fmt: skip
    dns = log.of("dns_done")[0]
    assert isinstance(dns.err, OSError) and dns.addrs == ()
    assert log.of("request_exception")[0].err is exc_info.value


async def test_coalesced_dns_lookups_are_marked_on_followers(
    session: aiohttp.ClientSession, server: TestServer, zone: DNSServer
) -> None:
    """Concurrent first requests to one name share one lookup; the followers say coalesced."""
    zone.add("slow.test", "127.0.0.1", delay=0.15)
    url = f"http://slow.test:{server.port}/"
    with capture_events(HOOKS) as log:
        await asyncio.gather(*(fetch(session, url) for _ in range(5)))
    dns = log.of("dns_done")
    assert len(dns) == 5
    assert sorted(e.coalesced for e in dns) == [False, True, True, True, True]
    assert all(e.addrs == ("127.0.0.1",) and not e.cached for e in dns)
    assert zone.count("slow.test", "A") == 1
    leader = next(e for e in dns if not e.coalesced)
    lookup = leader.time - log.of("dns_start", leader.request.id)[0].time
    assert lookup >= 0.14


async def test_pool_wait_is_reported_when_limit_per_host_is_full(
    zone: DNSServer, dns_resolver: AsyncResolver, aiohttp_server: Any
) -> None:
    """With limit_per_host=1, a second concurrent request waits for the pool and then reuses."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.15)
        return web.Response(text="slow")

    app = web.Application()
    app.router.add_get("/", slow)
    srv = await aiohttp_server(app)
    connector = aiotrace.TracingConnector(resolver=dns_resolver, limit_per_host=1)
    async with aiotrace.traced_session(connector=connector) as session:
        with capture_events(HOOKS) as log:
            await asyncio.gather(*(fetch(session, f"http://a.test:{srv.port}/") for _ in range(2)))
    waited = [rid for rid in log.request_ids() if "pool_wait_start" in log.names(rid)]
    assert len(waited) == 1
    names = log.names(waited[0])
    assert names[:5] == [
        "request_start",
        "get_conn",
        "pool_wait_start",
        "pool_wait_done",
        "got_conn",
    ]
    wait = log.of("pool_wait_done", waited[0])[0]
    assert wait.err is None
    assert wait.time - log.of("pool_wait_start", waited[0])[0].time >= 0.1
    assert log.of("got_conn", waited[0])[0].reused


async def test_early_hints_and_100_continue_reach_1xx_hooks(
    session: aiohttp.ClientSession, raw_peer: Any
) -> None:
    """A 103 Early Hints and a 100 Continue both reach got_1xx_response; 100 also got_100_continue."""
    hints = await raw_peer(early_hints())
    with capture_events(HOOKS) as log:
        status, _ = await fetch(session, hints.url + "/")
    assert status == 200
    got = log.of("got_1xx_response")
    assert [e.status for e in got] == [103]
    assert "Link" in got[0].headers
    names = log.names()
    assert names.index("got_first_response_byte") < names.index("got_1xx_response")

    cont = await raw_peer(continue_100())
    with capture_events(HOOKS) as log:
        async with session.post(cont.url + "/", data=b"payload", expect100=True) as resp:
            assert resp.status == 200
            await resp.read()
    names = log.names()
    assert [e.status for e in log.of("got_1xx_response")] == [100]
    assert names.index("wrote_headers") < names.index("wait_100_continue")
    assert names.index("wait_100_continue") < names.index("got_100_continue")
    assert names.index("got_100_continue") < names.index("wrote_request")


async def test_stale_pooled_connection_retry_is_a_new_attempt(
    session: aiohttp.ClientSession, raw_peer: Any
) -> None:
    """aiohttp's silent retry on a stale pooled connection shows as retry + a new attempt."""
    peer = await raw_peer(stale_after_first_response())
    await fetch(session, peer.url + "/")
    with capture_events(HOOKS) as log:
        assert await fetch(session, peer.url + "/") == (200, b"ok")
    names = log.names()
    assert names[:4] == ["request_start", "get_conn", "got_conn", "wrote_headers"]
    retry_at = names.index("retry")
    assert names[retry_at + 1 : retry_at + 3] == ["get_conn", "connect_start"]
    retry = log.of("retry")[0]
    assert retry.reason == "stale pooled connection"
    assert isinstance(retry.err, aiohttp.ServerDisconnectedError)
    gets = log.of("get_conn")
    assert [(e.request.hop, e.request.attempt) for e in gets] == [(0, 0), (0, 1)]
    assert [e.reused for e in log.of("got_conn")] == [True, False]
    assert names[-2:] == ["request_end", "request_done"]


async def test_signal_adapter_feeds_hooks_on_a_plain_session(
    server: TestServer, zone: DNSServer, dns_resolver: AsyncResolver
) -> None:
    """trace_config() alone on a plain ClientSession fires what aiohttp's signals can feed."""
    log = EventLog(HOOKS)
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=dns_resolver),
            trace_configs=[aiotrace.trace_config()],
        ) as plain,
        plain.get(f"http://a.test:{server.port}/redirect/1", trace_request_ctx=log.trace) as resp,
    ):
        await resp.read()
    assert log.names() == [
        "request_start", "get_conn", "dns_start", "dns_done", "got_conn", "wrote_headers",
        "wrote_request", "redirect", "get_conn", "got_conn", "wrote_headers", "wrote_request",
        "request_end", "response_body_done", "request_done",
    ]  # fmt: skip
    assert [e.reused for e in log.of("got_conn")] == [False, True]
    assert log.of("redirect")[0].to_url.path == "/"


async def test_per_request_trace_composes_with_scoped_and_session_traces(
    server: TestServer, zone: DNSServer, dns_resolver: AsyncResolver
) -> None:
    """Per-request, scoped and session traces compose innermost first; nesting runs inner first."""
    calls: list[str] = []

    def tag(name: str) -> aiotrace.ClientTrace:
        return aiotrace.ClientTrace(request_start=lambda e: calls.append(name))

    outer, inner, per_request, whole = tag("outer"), tag("inner"), tag("request"), tag("session")
    connector = aiotrace.TracingConnector(resolver=dns_resolver)
    async with aiotrace.traced_session(connector=connector, trace=whole) as session:
        with aiotrace.with_client_trace(outer), aiotrace.with_client_trace(inner):
            composed = aiotrace.context_client_trace()
            assert composed is not None
            await fetch(session, f"http://a.test:{server.port}/", trace_request_ctx=per_request)
        assert aiotrace.context_client_trace() is None
    assert calls == ["request", "inner", "outer", "session"]


async def test_same_trace_twice_calls_each_hook_once(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Attaching the same trace in nested blocks and per request calls its hooks once, no recursion."""
    calls: list[int] = []
    trace = aiotrace.ClientTrace(got_conn=lambda e: calls.append(e.request.id))
    with aiotrace.with_client_trace(trace), aiotrace.with_client_trace(trace):
        await fetch(session, f"http://a.test:{server.port}/", trace_request_ctx=trace)
    assert len(calls) == 1


async def test_thousand_concurrent_requests_keep_their_own_events(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """1,000 concurrent requests over three hosts, each with its own trace: no cross-talk."""
    logs = [EventLog(HOOKS) for _ in range(1000)]
    hosts = ("a.test", "b.test", "c.test")

    async def one(i: int) -> None:
        url = f"http://{hosts[i % 3]}:{server.port}/?i={i}"
        assert await fetch(session, url, trace_request_ctx=logs[i].trace) == (200, b"hello")

    await asyncio.gather(*(one(i) for i in range(1000)))
    ids = set()
    for i, log in enumerate(logs):
        assert len(log.request_ids()) == 1
        ids.add(log.request_ids()[0])
        names = log.names()
        assert names[0] == "request_start" and names[-1] == "request_done"
        assert names.count("got_conn") == 1 and names.count("request_end") == 1
        assert all(e.request.url.query["i"] == str(i) for _, e in log.events)
        assert all(e.request.url.host == hosts[i % 3] for _, e in log.events)
    assert len(ids) == 1000
    assert current_request.get() is None and scoped_trace.get() is None


async def test_request_made_inside_a_middleware_is_its_own(
    zone: DNSServer, dns_resolver: AsyncResolver, server: TestServer
) -> None:
    """A client middleware that makes a request of its own on the same session (in the same
    task, inside the outer request): each request gets its own round trips, and the outer
    one goes on being traced after the inner one returns."""
    rec = aiotrace.Recorder()
    base = f"http://a.test:{server.port}"

    async def fetch_token_first(req: aiohttp.ClientRequest, handler: Any) -> Any:
        if req.url.path == "/redirect/1":
            assert await fetch(session, f"{base}/") == (200, b"hello")
        return await handler(req)

    connector = aiotrace.TracingConnector(resolver=dns_resolver)
    async with aiotrace.traced_session(
        connector=connector, trace=rec, middlewares=(fetch_token_first,)
    ) as session:
        assert await fetch(session, f"{base}/redirect/1") == (200, b"hello")
    outer, inner = sorted(rec.requests, key=lambda t: len(t.hops), reverse=True)
    assert [h.url.path for h in outer.hops] == ["/redirect/1", "/"]
    assert [h.status for h in outer.hops] == [302, 200]
    assert [h.url.path for h in inner.hops] == ["/"] and inner.hops[0].status == 200
    assert outer.started_at < inner.started_at and outer.done and inner.done
    assert current_request.get() is None


async def test_tasks_created_inside_the_block_are_traced(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A request in a task created inside with_client_trace is traced; one outside is not."""
    log = EventLog(HOOKS)
    url = f"http://a.test:{server.port}/"
    with aiotrace.with_client_trace(log.trace):
        task = asyncio.ensure_future(fetch(session, url))
    await task
    await fetch(session, url)
    assert len(log.request_ids()) == 1


async def test_no_contextvar_leaks_into_the_caller(
    session: aiohttp.ClientSession, server: TestServer, refused_port: int
) -> None:
    """After a request returns or raises, the caller's context holds no aiotrace value."""
    with capture_events():
        await fetch(session, f"http://a.test:{server.port}/")
        assert current_request.get() is None
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(session, f"http://127.0.0.1:{refused_port}/")
        assert current_request.get() is None
    assert scoped_trace.get() is None


@pytest.mark.parametrize("kind", ["hooks", "aggregate_only", "recorder"])
async def test_finished_state_is_freed_without_the_garbage_collector(
    session: aiohttp.ClientSession, server: TestServer, kind: str
) -> None:
    """A finished request's state and round trips form no reference cycle unless an observer
    keeps them whole (a full Recorder, for a redirected request; it freezes the others into
    plain values): with the collector off, none is left behind. (A failed request's exception
    holds its traceback's frames, a cycle Python makes for any error.)"""
    hooks = aiotrace.ClientTrace(got_conn=lambda event: None, request_done=lambda event: None)
    rec = aiotrace.Recorder()
    trace = {
        "hooks": hooks,
        "aggregate_only": aiotrace.Recorder(aggregate_only=True).trace,
        "recorder": rec.trace,
    }[kind]
    gc.collect()
    gc.disable()
    try:
        with aiotrace.with_client_trace(trace):
            await fetch(session, f"http://a.test:{server.port}/")
            await fetch(session, f"http://a.test:{server.port}/redirect/2")
        states = [o for o in gc.get_objects() if isinstance(o, (RequestState, HopState))]
    finally:
        gc.enable()
    if kind == "recorder":
        # Kept whole: the redirected request and its 3 hops; the first request is frozen.
        assert len(rec.requests) == 2 and len(states) == 1 + 3
    else:
        assert states == []


async def test_raising_hook_is_logged_and_the_request_goes_on(
    session: aiohttp.ClientSession, server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """By default a raising hook is logged on the aiotrace logger and the request completes."""

    def boom(event: Any) -> None:
        raise RuntimeError("hook bug")

    trace = aiotrace.ClientTrace(got_conn=boom, got_first_response_byte=boom, request_end=boom)
    with caplog.at_level(logging.ERROR, logger="aiotrace"):
        status, body = await fetch(
            session, f"http://a.test:{server.port}/", trace_request_ctx=trace
        )
    assert (status, body) == (200, b"hello")
    raised = [r for r in caplog.records if r.name == "aiotrace"]
    assert len(raised) == 3
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in raised)


async def test_propagate_errors_fails_the_request_with_the_hook_error(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """With propagate_errors=True the hook's exception fails the request; the pool stays sane."""

    class HookError(Exception):
        pass

    def boom(event: Any) -> None:
        raise HookError

    url = f"http://a.test:{server.port}/"
    with pytest.raises(HookError):
        await fetch(
            session,
            url,
            trace_request_ctx=aiotrace.ClientTrace(got_conn=boom, propagate_errors=True),
        )
    with pytest.raises(HookError):
        await fetch(
            session, url,
            trace_request_ctx=aiotrace.ClientTrace(got_first_response_byte=boom, propagate_errors=True),
        )  # fmt: skip
    assert await fetch(session, url) == (200, b"hello")


async def test_coroutine_hooks_run_later_in_event_order(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Coroutine hooks are scheduled, not awaited inline, and run one at a time in event order."""
    seen: list[str] = []
    running = 0

    def async_hook(name: str) -> Any:
        async def hook(event: Any) -> None:
            nonlocal running
            running += 1
            assert running == 1
            await asyncio.sleep(0.01)
            seen.append(name)
            running -= 1

        return hook

    trace = aiotrace.ClientTrace(**{n: async_hook(n) for n in HOOKS})
    await fetch(session, f"http://a.test:{server.port}/", trace_request_ctx=trace)
    assert seen != REUSED_HTTP and len(seen) < len(FRESH_HTTP)  # not awaited inline
    for _ in range(100):
        if len(seen) == len(FRESH_HTTP):
            break
        await asyncio.sleep(0.02)
    assert seen == FRESH_HTTP


async def test_untraced_requests_fire_nothing(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A traced_session with no trace active fires no hook and leaves aiohttp's result as is."""
    log = EventLog(HOOKS)
    with aiotrace.with_client_trace(log.trace):
        pass
    assert await fetch(session, f"http://a.test:{server.port}/") == (200, b"hello")
    assert len(log) == 0


async def test_traced_session_rejects_a_plain_connector() -> None:
    """traced_session() needs a TracingConnector and says so in one line."""
    connector = aiohttp.TCPConnector()
    with pytest.raises(TypeError, match="TracingConnector"):
        aiotrace.traced_session(connector=connector)  # type: ignore[arg-type]
    await connector.close()


def test_with_client_trace_rejects_non_traces() -> None:
    """with_client_trace() with something that is not a trace fails with a clear TypeError."""
    with pytest.raises(TypeError, match="ClientTrace"), aiotrace.with_client_trace(42):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize("hooks", [HOOKS, ("response_body_done", "request_done")])
@pytest.mark.parametrize("force_close", [False, True])
async def test_connections_not_pooled_say_why(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    hooks: Any,
    force_close: bool,
) -> None:
    """A response released before its body came closes its connection: the body was cut short
    ("closed"),
    unless keep-alive is disabled, where every connection goes back closed: put_idle_conn's err
    says so ("keepalive_disabled") and the body has no error. The same with no put_idle_conn
    hook, where aiotrace makes that error only where the body needs it."""
    released = asyncio.Event()

    async def unfinished(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 10
        await resp.prepare(request)
        await resp.write(b"hello")
        await released.wait()  # the rest would come after the client let go of the response
        return resp

    app = make_app()
    app.router.add_get("/unfinished", unfinished)
    server = await aiohttp_server(app)
    async with aiotrace.traced_session(
        connector=aiotrace.TracingConnector(resolver=dns_resolver, force_close=force_close)
    ) as s:
        with capture_events(hooks) as log:
            assert await fetch(s, f"http://a.test:{server.port}/") == (200, b"hello")
            async with s.get(f"http://a.test:{server.port}/unfinished") as resp:
                resp.release()  # half of its body still to come
        released.set()
    first, second = log.request_ids()
    assert [e.err for e in log.of("response_body_done", first)] == [None]
    [cut] = log.of("response_body_done", second)
    if force_close:
        assert cut.err is None
    else:
        assert isinstance(cut.err, aiotrace.ConnectionNotPooled) and cut.err.reason == "closed"
    if "put_idle_conn" in hooks:
        put = log.of("put_idle_conn")
        reasons = [e.err.reason if e.err is not None else None for e in put]
        assert reasons == (["keepalive_disabled"] * 2 if force_close else [None, "closed"])
        assert all(e.err is None or isinstance(e.err, aiotrace.ConnectionNotPooled) for e in put)
    assert [e.err for e in log.of("request_done")] == [None, None]


async def test_ipv6_connect_reports_tcp6_and_bracketed_addresses(
    session: aiohttp.ClientSession, raw_peer: Callable[..., Awaitable[RawServer]]
) -> None:
    """A connect to ::1: connect_start/done say tcp6 and ``[::1]:port``; got_conn's remote
    address is the same."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    try:
        peer = await raw_peer(respond(reply), host="::1")
    except OSError as e:  # no IPv6 loopback here: nothing to check
        pytest.skip(f"no ::1 on this machine: {e}")
    with capture_events(HOOKS) as log:
        assert await fetch(session, peer.url) == (200, b"ok")
    addr = f"[::1]:{peer.port}"
    assert [(e.network, e.addr) for e in log.of("connect_start")] == [("tcp6", addr)]
    assert [(e.network, e.addr, e.err) for e in log.of("connect_done")] == [("tcp6", addr, None)]
    assert log.of("got_conn")[0].conn.remote_addr == addr


def test_events_made_by_new_equal_the_dataclass_constructors() -> None:
    """Every event type's ``_new`` (what aiotrace's emitters call) makes the value its
    dataclass constructor makes: equal, same repr, frozen; wrong arguments are a TypeError."""
    import dataclasses

    import aiotrace._trace.events as events

    types = [getattr(events, name) for name in events.__all__]
    for cls in types:
        kw = {f.name: f"v-{f.name}" for f in dataclasses.fields(cls)}
        made, built = cls._new(**kw), cls(**kw)
        assert type(made) is cls and made == built and repr(made) == repr(built), cls
        assert all(getattr(made, k) == v for k, v in kw.items()), cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, next(iter(kw)), None)
        with pytest.raises(TypeError):
            cls._new(**kw, unknown=1)
        with pytest.raises(TypeError):
            cls._new(**dict(list(kw.items())[1:]))
