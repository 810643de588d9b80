"""Proxies: plain HTTP through a forward proxy and HTTPS through a CONNECT tunnel, as Go reports them.

Go's transport, for a request through a proxy, calls GetConn with the proxy's address, then
DNS and connect for the proxy, then (HTTPS) sends CONNECT to the proxy and runs the TLS
handshake with the origin inside the tunnel. aiotrace adds the tunnel's own round trip as
``proxy_connect_start`` / ``proxy_connect_done`` (status, or the error). The peers are real:
proxy.py (a subprocess, see ``peers.proxy_py``) and, where a failure must be forced, the small
CONNECT proxy of ``peers.connect_proxy``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.resolver import AsyncResolver
from aiohttp.test_utils import TestServer
from blockbuster import BlockBuster
from conftest import PROXY_CREDENTIALS
from peers import DNSServer, ProxyServer, RawServer, connect_proxy

import aiotrace
from aiotrace.testing import capture_events

RawPeer = Callable[..., Awaitable[RawServer]]
AiohttpServer = Callable[..., Awaitable[TestServer]]

HOOKS = [n for n in aiotrace.HOOK_NAMES if n != "wrote_header_field"]

# Through a proxy named in DNS: the lookup and the connect are the proxy's.
HTTP_VIA_PROXY = [
    "request_start", "get_conn", "dns_start", "dns_done", "connect_start", "connect_done",
    "got_conn", "wrote_headers", "wrote_request", "got_first_response_byte",
    "response_body_done", "put_idle_conn", "request_end", "request_done",
]  # fmt: skip
HTTPS_VIA_TUNNEL = [
    "request_start", "get_conn", "dns_start", "dns_done", "connect_start", "connect_done",
    "proxy_connect_start", "proxy_connect_done", "tls_handshake_start", "tls_handshake_done",
    "got_conn", "wrote_headers", "wrote_request", "got_first_response_byte",
    "response_body_done", "put_idle_conn", "request_end", "request_done",
]  # fmt: skip
REUSED = [
    "request_start", "get_conn", "got_conn", "wrote_headers", "wrote_request",
    "got_first_response_byte", "response_body_done", "put_idle_conn", "request_end",
    "request_done",
]  # fmt: skip
TUNNEL_REFUSED = [
    "request_start", "get_conn", "connect_start", "connect_done", "proxy_connect_start",
    "proxy_connect_done", "request_exception", "request_done",
]  # fmt: skip


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello via {request.headers.get('Via', '-')}")


@pytest.fixture
async def origin(aiohttp_server: AiohttpServer) -> TestServer:
    """The origin over plain HTTP on 127.0.0.1 (proxy.py resolves nothing of the test zone)."""
    app = web.Application()
    app.router.add_get("/", hello)
    return await aiohttp_server(app)


@pytest.fixture
async def tls_origin(aiohttp_server: AiohttpServer, server_ssl_ctx: ssl.SSLContext) -> TestServer:
    """The origin over TLS on 127.0.0.1 (the test certificate names 127.0.0.1)."""
    app = web.Application()
    app.router.add_get("/", hello)
    return await aiohttp_server(app, ssl=server_ssl_ctx)


@pytest.fixture
def proxy_zone(zone: DNSServer) -> DNSServer:
    """The test zone, plus ``proxy.test`` -> 127.0.0.1 (the proxies' name)."""
    zone.add("proxy.test", "127.0.0.1")
    return zone


@pytest.fixture
async def session(
    proxy_zone: DNSServer, dns_resolver: AsyncResolver, client_ssl_ctx: ssl.SSLContext
) -> AsyncIterator[aiohttp.ClientSession]:
    """A traced session resolving through the test DNS and trusting the test CA."""
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    async with aiotrace.traced_session(connector=connector) as s:
        yield s
    await tls_in_tunnels_closed()


async def tls_in_tunnels_closed() -> None:
    """Let TLS inside CONNECT tunnels finish closing after their session did (aiohttp's
    "graceful shutdown", traced or not: without it the event loop may close first and leave
    the tunnels' sockets to the garbage collector)."""
    await asyncio.sleep(0.1)


async def fetch(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str]:
    async with session.get(url, **kw) as resp:
        return resp.status, await resp.text()


def named(proxy: ProxyServer | RawServer) -> str:
    """The proxy's URL with the name ``proxy.test`` (resolved by the test DNS server)."""
    return f"http://proxy.test:{proxy.port}"


# --------------------------------------------------------------------------------------------
# Plain HTTP through a proxy
# --------------------------------------------------------------------------------------------


async def test_http_through_a_proxy_looks_up_and_connects_to_the_proxy(
    session: aiohttp.ClientSession, origin: TestServer, http_proxy: ProxyServer
) -> None:
    """Plain HTTP through a proxy: GetConn names the proxy, DNS and connect are the proxy's,
    got_conn's connection says which proxy, and the hop keeps the origin's URL."""
    url = f"http://127.0.0.1:{origin.port}/"
    rec = aiotrace.Recorder()
    with capture_events(HOOKS) as log, aiotrace.with_client_trace(rec.trace):
        status, text = await fetch(session, url, proxy=named(http_proxy))
    assert status == 200 and "via" in text
    assert log.names() == HTTP_VIA_PROXY
    assert log.of("get_conn")[0].host_port == f"proxy.test:{http_proxy.port}"
    assert log.of("dns_start")[0].host == "proxy.test"
    assert log.of("connect_start")[0].addr == f"127.0.0.1:{http_proxy.port}"
    conn = log.of("got_conn")[0].conn
    assert conn.remote_addr == f"127.0.0.1:{http_proxy.port}"
    assert conn.proxy == named(http_proxy)
    assert log.of("put_idle_conn")[0].err is None
    [hop] = rec.requests[0].hops
    assert str(hop.url) == url
    assert hop.proxy == named(http_proxy)
    assert hop.tunnel is None and hop.proxy_status is None
    assert hop.timings.connect is not None and hop.timings.tls is None


async def test_http_through_a_proxy_reuses_the_proxy_connection(
    session: aiohttp.ClientSession, origin: TestServer, http_proxy: ProxyServer
) -> None:
    """A second plain-HTTP request through the same proxy to the same origin reuses the pooled
    connection to the proxy: no DNS, no connect."""
    url = f"http://127.0.0.1:{origin.port}/"
    await fetch(session, url, proxy=named(http_proxy))
    with capture_events(HOOKS) as log:
        await fetch(session, url, proxy=named(http_proxy))
    assert log.names() == REUSED
    got = log.of("got_conn")[0]
    assert got.reused and got.conn.proxy == named(http_proxy)


# --------------------------------------------------------------------------------------------
# HTTPS through a CONNECT tunnel
# --------------------------------------------------------------------------------------------


async def test_https_through_a_tunnel_reports_the_connect_round_trip_then_the_origins_tls(
    session: aiohttp.ClientSession,
    tls_origin: TestServer,
    http_proxy: ProxyServer,
    server_ssl_ctx: ssl.SSLContext,
) -> None:
    """HTTPS through a CONNECT proxy: connect to the proxy, the CONNECT round trip (200), then
    the TLS handshake with the origin inside the tunnel (the origin's certificate), got_conn."""
    url = f"https://127.0.0.1:{tls_origin.port}/"
    rec = aiotrace.Recorder()
    with capture_events(HOOKS) as log, aiotrace.with_client_trace(rec.trace):
        assert (await fetch(session, url, proxy=named(http_proxy)))[0] == 200
    assert log.names() == HTTPS_VIA_TUNNEL
    start, done = log.of("proxy_connect_start")[0], log.of("proxy_connect_done")[0]
    assert (start.proxy, start.target) == (named(http_proxy), f"127.0.0.1:{tls_origin.port}")
    assert (done.proxy, done.target, done.status, done.err) == (
        named(http_proxy), f"127.0.0.1:{tls_origin.port}", 200, None,
    )  # fmt: skip
    assert log.of("tls_handshake_start")[0].server_name == "127.0.0.1"
    tls = log.of("tls_handshake_done")[0]
    assert tls.err is None and tls.peer_issuer is not None
    assert "trustme" in (tls.peer_issuer or "")  # the origin's certificate, not the proxy's
    conn = log.of("got_conn")[0].conn
    assert conn.remote_addr == f"127.0.0.1:{http_proxy.port}"
    assert conn.proxy == named(http_proxy)
    assert conn.tls is not None and conn.tls.server_name == "127.0.0.1"
    [hop] = rec.requests[0].hops
    assert hop.proxy == named(http_proxy) and hop.proxy_status == 200
    assert hop.tunnel is not None and hop.tunnel >= 0.0
    # The tunnel is part of getting a connection: the connect phase runs to its end.
    assert hop.timings.connect is not None and hop.timings.connect >= hop.tunnel
    assert hop.timings.tls is not None
    assert abs(hop.tunnel - (done.time - start.time) * 1000.0) < 0.01
    times = [e.time for _, e in log.events]
    assert times == sorted(times)


async def test_a_tunnelled_connection_is_reused_by_proxy_and_origin(
    session: aiohttp.ClientSession,
    tls_origin: TestServer,
    aiohttp_server: AiohttpServer,
    server_ssl_ctx: ssl.SSLContext,
    http_proxy: ProxyServer,
) -> None:
    """A tunnelled connection is pooled by proxy and origin: the same origin through the same
    proxy reuses it (no CONNECT); another origin through that proxy opens a tunnel of its own."""
    url = f"https://127.0.0.1:{tls_origin.port}/"
    await fetch(session, url, proxy=named(http_proxy))
    app = web.Application()
    app.router.add_get("/", hello)
    other = await aiohttp_server(app, ssl=server_ssl_ctx)
    rec = aiotrace.Recorder()
    with capture_events(HOOKS) as log, aiotrace.with_client_trace(rec.trace):
        await fetch(session, url, proxy=named(http_proxy))
        await fetch(session, f"https://127.0.0.1:{other.port}/", proxy=named(http_proxy))
    same, new = log.request_ids()
    assert log.names(same) == REUSED
    assert log.of("got_conn", same)[0].conn.proxy == named(http_proxy)
    assert "proxy_connect_start" in log.names(new)
    assert log.of("proxy_connect_done", new)[0].target == f"127.0.0.1:{other.port}"
    assert not log.of("got_conn", new)[0].reused
    reused, opened = (t.hops[0] for t in rec.requests)
    assert reused.reused and reused.tunnel is None and reused.proxy == named(http_proxy)
    assert opened.reuse_miss == "first" and opened.proxy_status == 200


async def test_a_slow_tunnel_is_timed_as_its_own_round_trip(
    session: aiohttp.ClientSession, tls_origin: TestServer, raw_peer: RawPeer
) -> None:
    """A proxy that takes 0.25 s to answer CONNECT: proxy_connect_done comes >= 0.25 s after
    proxy_connect_start, the hop's tunnel says so, and the TLS phase does not include it."""
    heads: list[bytes] = []
    proxy = await raw_peer(connect_proxy("tunnel", delay=0.25, heads=heads))
    rec = aiotrace.Recorder()
    with capture_events(HOOKS) as log, aiotrace.with_client_trace(rec.trace):
        url = f"https://127.0.0.1:{tls_origin.port}/"
        assert (await fetch(session, url, proxy=named(proxy)))[0] == 200
    assert log.names() == HTTPS_VIA_TUNNEL
    assert heads[0].startswith(f"CONNECT 127.0.0.1:{tls_origin.port} HTTP/1.1".encode())
    start, done = log.of("proxy_connect_start")[0], log.of("proxy_connect_done")[0]
    assert done.time - start.time >= 0.24
    [hop] = rec.requests[0].hops
    assert hop.tunnel is not None and hop.tunnel >= 240.0
    assert hop.timings.tls is not None and hop.timings.tls < hop.tunnel
    assert hop.timings.connect is not None and hop.timings.connect >= 240.0


# --------------------------------------------------------------------------------------------
# Tunnel failures: named as the proxy's
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
         b"Content-Length: 0\r\n\r\n", 407),
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", 502),
    ],
    ids=["407", "502"],
)  # fmt: skip
async def test_a_refused_tunnel_ends_in_proxy_connect_done_with_the_proxy_error(
    session: aiohttp.ClientSession,
    tls_origin: TestServer,
    raw_peer: RawPeer,
    reply: bytes,
    status: int,
) -> None:
    """A proxy answering CONNECT with 407 or 502: the caller gets aiohttp's ClientHttpProxyError,
    proxy_connect_done carries the status and that same error, and no TLS or got_conn follows."""
    proxy = await raw_peer(connect_proxy("reply", reply=reply))
    rec = aiotrace.Recorder()
    url = f"https://127.0.0.1:{tls_origin.port}/"
    with (
        capture_events(HOOKS) as log,
        aiotrace.with_client_trace(rec.trace),
        pytest.raises(aiohttp.ClientHttpProxyError) as caught,
    ):
        await fetch(session, url, proxy=proxy.url)
    assert caught.value.status == status
    assert log.names() == TUNNEL_REFUSED
    done = log.of("proxy_connect_done")[0]
    assert done.status == status and done.err is caught.value
    assert log.of("request_exception")[0].err is caught.value
    [hop] = rec.requests[0].hops
    assert hop.proxy_status == status and hop.tunnel is not None
    assert hop.error is not None and hop.error.startswith("ClientHttpProxyError")
    async with aiohttp.ClientSession() as plain:  # the same error untraced
        with pytest.raises(aiohttp.ClientHttpProxyError) as untraced:
            await fetch(plain, url, proxy=proxy.url, ssl=False)
    assert untraced.value.status == status


@pytest.mark.parametrize("behaviour", ["close_before_reply", "close_after_established"])
async def test_a_proxy_closing_mid_tunnel_fails_the_phase_it_cut(
    session: aiohttp.ClientSession, tls_origin: TestServer, raw_peer: RawPeer, behaviour: Any
) -> None:
    """A proxy that closes before answering CONNECT ends proxy_connect_done with the error; one
    that closes right after ``200 Connection established`` ends the TLS handshake with it."""
    proxy = await raw_peer(connect_proxy(behaviour))
    url = f"https://127.0.0.1:{tls_origin.port}/"
    with capture_events(HOOKS) as log, pytest.raises(aiohttp.ClientError) as caught:
        await fetch(session, url, proxy=proxy.url)
    names = log.names()
    assert names[-2:] == ["request_exception", "request_done"]
    assert "got_conn" not in names
    done = log.of("proxy_connect_done")[0]
    if behaviour == "close_before_reply":
        assert names[-3] == "proxy_connect_done"
        assert done.status is None and done.err is not None
        assert "tls_handshake_start" not in names
    else:
        assert done.status == 200 and done.err is None
        assert names[-4:-2] == ["tls_handshake_start", "tls_handshake_done"]
        assert log.of("tls_handshake_done")[0].err is not None
    async with aiohttp.ClientSession() as plain:  # the same error type untraced
        with pytest.raises(aiohttp.ClientError) as untraced:
            await fetch(plain, url, proxy=proxy.url, ssl=False)
    assert type(untraced.value) is type(caught.value)


# --------------------------------------------------------------------------------------------
# Authentication and the ways to name a proxy
# --------------------------------------------------------------------------------------------


async def test_auth_proxy_refuses_without_and_tunnels_with_credentials(
    session: aiohttp.ClientSession, tls_origin: TestServer, auth_proxy: ProxyServer
) -> None:
    """proxy.py with Basic auth: CONNECT without credentials is refused (407, a proxy error);
    with ``proxy_headers`` or credentials in the proxy URL it tunnels."""
    url = f"https://127.0.0.1:{tls_origin.port}/"
    user, password = PROXY_CREDENTIALS
    with capture_events(HOOKS) as log:
        with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
            await fetch(session, url, proxy=auth_proxy.url)
        headers = {"Proxy-Authorization": basic(user, password)}
        assert (await fetch(session, url, proxy=auth_proxy.url, proxy_headers=headers))[0] == 200
        in_url = auth_proxy.url_with_credentials(user, password)
        assert (await fetch(session, url, proxy=in_url))[0] == 200
    first, second, third = log.request_ids()
    assert refused.value.status == 407
    assert log.names(first) == TUNNEL_REFUSED
    assert log.of("proxy_connect_done", first)[0].status == 407
    for rid in (second, third):
        assert log.of("proxy_connect_done", rid)[0].status == 200
        # Credentials never reach an event: the proxy is named without them.
        assert log.of("got_conn", rid)[0].conn.proxy == auth_proxy.url


@pytest.mark.filterwarnings(
    "ignore:BasicAuth is deprecated:DeprecationWarning",  # aiohttp 3.14
    "ignore:The 'proxy_auth' parameter is deprecated:DeprecationWarning",
)
async def test_proxy_auth_argument_on_plain_http_and_tunnels(
    session: aiohttp.ClientSession,
    origin: TestServer,
    tls_origin: TestServer,
    auth_proxy: ProxyServer,
) -> None:
    """``proxy_auth=BasicAuth(...)`` works traced for plain HTTP (the header goes with the
    request) and for a tunnel (it goes with the CONNECT)."""
    auth = aiohttp.BasicAuth(*PROXY_CREDENTIALS)
    with capture_events() as log:
        status, _ = await fetch(
            session, f"http://127.0.0.1:{origin.port}/", proxy=auth_proxy.url, proxy_auth=auth
        )
        assert status == 200
        url = f"https://127.0.0.1:{tls_origin.port}/"
        assert (await fetch(session, url, proxy=auth_proxy.url, proxy_auth=auth))[0] == 200
    plain, tunnelled = log.request_ids()
    fields = {e.key: e.values for e in log.of("wrote_header_field", plain)}
    assert fields["Proxy-Authorization"] == (basic(*PROXY_CREDENTIALS),)
    assert "Proxy-Authorization" not in {e.key for e in log.of("wrote_header_field", tunnelled)}
    assert log.of("proxy_connect_done", tunnelled)[0].status == 200


async def test_session_wide_proxy(
    proxy_zone: DNSServer,
    dns_resolver: AsyncResolver,
    client_ssl_ctx: ssl.SSLContext,
    tls_origin: TestServer,
    http_proxy: ProxyServer,
) -> None:
    """``traced_session(proxy=...)`` (aiohttp's ``ClientSession(proxy=...)``) sends every request
    through the proxy, traced the same."""
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    async with aiotrace.traced_session(connector=connector, proxy=named(http_proxy)) as s:
        with capture_events(HOOKS) as log:
            assert (await fetch(s, f"https://127.0.0.1:{tls_origin.port}/"))[0] == 200
    await tls_in_tunnels_closed()
    assert log.names() == HTTPS_VIA_TUNNEL
    assert log.of("got_conn")[0].conn.proxy == named(http_proxy)


async def test_proxies_from_the_environment_and_no_proxy(
    proxy_zone: DNSServer,
    dns_resolver: AsyncResolver,
    client_ssl_ctx: ssl.SSLContext,
    origin: TestServer,
    tls_origin: TestServer,
    http_proxy: ProxyServer,
    monkeypatch: pytest.MonkeyPatch,
    blockbuster: BlockBuster,
) -> None:
    """``trust_env=True``: HTTP_PROXY and HTTPS_PROXY route requests through the proxy (a
    tunnel for HTTPS); a host in NO_PROXY goes direct, with no proxy on its connection."""
    monkeypatch.setenv("HTTP_PROXY", named(http_proxy))
    monkeypatch.setenv("HTTPS_PROXY", named(http_proxy))
    monkeypatch.setenv("NO_PROXY", "b.test")
    monkeypatch.delenv("NETRC", raising=False)
    # aiohttp 3.12 looks for ~/.netrc on the event loop when trust_env=True (aiohttp's own
    # blocking call, traced or not): let that one stat through.
    blockbuster.functions["os.stat"].can_block_in("aiohttp/helpers.py", "netrc_from_env")
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    async with aiotrace.traced_session(connector=connector, trust_env=True) as s:
        with capture_events(HOOKS) as log:
            assert (await fetch(s, f"http://127.0.0.1:{origin.port}/"))[0] == 200
            assert (await fetch(s, f"https://127.0.0.1:{tls_origin.port}/"))[0] == 200
            assert (await fetch(s, f"http://b.test:{origin.port}/"))[0] == 200
    await tls_in_tunnels_closed()
    plain, tunnelled, direct = log.request_ids()
    assert log.names(plain) == HTTP_VIA_PROXY
    assert log.names(tunnelled) == HTTPS_VIA_TUNNEL
    assert log.of("got_conn", plain)[0].conn.proxy == named(http_proxy)
    assert log.of("got_conn", direct)[0].conn.proxy is None
    assert log.of("dns_start", direct)[0].host == "b.test"
    assert log.of("get_conn", direct)[0].host_port == f"b.test:{origin.port}"


# --------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------


async def test_proxy_credentials_never_reach_an_export(
    session: aiohttp.ClientSession,
    origin: TestServer,
    tls_origin: TestServer,
    auth_proxy: ProxyServer,
    raw_peer: RawPeer,
    tmp_path: Path,
) -> None:
    """Proxy URL credentials and Proxy-Authorization values appear in no export: not in the
    timeline dicts, the JSONL, the HAR or the connection records, nor in a proxy error's text."""
    user, password = PROXY_CREDENTIALS
    secret_header = basic(user, password)
    refusing = await raw_peer(
        connect_proxy(
            "reply",
            reply=b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
        )
    )
    rec = aiotrace.Recorder()
    with aiotrace.with_client_trace(rec.trace):
        in_url = auth_proxy.url_with_credentials(user, password)
        await fetch(session, f"http://127.0.0.1:{origin.port}/", proxy=in_url)
        await fetch(session, f"https://127.0.0.1:{tls_origin.port}/", proxy=in_url)
        with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
            await fetch(
                session,
                f"https://127.0.0.1:{tls_origin.port}/",
                proxy=f"http://{user}:{password}@127.0.0.1:{refusing.port}",
            )
    assert password in str(refused.value)  # aiohttp's own message names the proxy URL whole
    path = tmp_path / "out.jsonl"
    await asyncio.to_thread(rec.to_jsonl, path)
    exports = [
        await asyncio.to_thread(path.read_text),
        json.dumps(rec.to_har()),
        json.dumps([t.to_dict() for t in rec.requests]),
        json.dumps([c.to_dict() for c in rec.connections]),
        repr(rec.requests) + repr([h for t in rec.requests for h in t.hops]),
    ]
    for text in exports:
        assert password not in text
        assert secret_header.split()[1] not in text
    hops = [t.hops[-1] for t in rec.requests]
    assert [h.proxy for h in hops] == [auth_proxy.url, auth_proxy.url, refusing.url.rstrip("/")]
    assert [c.proxy for c in rec.connections] == [auth_proxy.url, auth_proxy.url]
    assert hops[2].error is not None and "407" in hops[2].error
