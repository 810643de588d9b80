"""Proof that the shared test peers and fixtures (conftest.py, peers.py) work for real."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pycares
import pytest
import trustme
import uvloop
from aiohttp import web
from aiohttp.resolver import AsyncResolver
from blockbuster import BlockingError
from peers import (
    TIMER_SLACK,
    DNSServer,
    RawServer,
    blackhole_listener,
    close_before_response,
    closed_port,
    content_length_too_long,
    continue_100,
    early_hints,
    raw_server,
    reset_mid_body,
    reset_mid_headers,
    respond,
    server_ssl_context,
    silent,
    slow_headers,
    truncated_chunked,
)
from pytest_aiohttp import AiohttpClient, AiohttpServer

RawPeer = Callable[..., Awaitable[RawServer]]
MakeResolver = Callable[..., AsyncResolver]


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _hello)
    return app


async def _read_all(host: str, port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(-1)
    finally:
        writer.close()


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


# -- loops ------------------------------------------------------------------------------------


async def test_runs_on_the_loop_named_in_the_test_id(request: pytest.FixtureRequest) -> None:
    """The running loop is uvloop exactly when the test id (or a lone ``--loops``) says so."""
    loop_id = request.node.callspec.id if hasattr(request.node, "callspec") else ""
    if not loop_id:  # one --loops choice: pytest-asyncio then leaves the id out
        loop_id = str(request.config.getoption("loops"))
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop) == (loop_id == "uvloop")


async def test_aiohttp_server_and_client_fixtures(aiohttp_client: AiohttpClient) -> None:
    """pytest-aiohttp's ``aiohttp_client`` serves and fetches an app on this loop."""
    client = await aiohttp_client(_app())
    async with client.get("/") as resp:
        assert resp.status == 200
        assert await resp.text() == "hello"


async def test_blockbuster_catches_blocking_calls_in_the_loop() -> None:
    """A ``time.sleep`` on the running loop raises ``BlockingError``."""
    with pytest.raises(BlockingError):
        time.sleep(0)  # noqa: ASYNC251 - the blocking call under test


async def test_peer_setup_inside_the_loop_passes_blockbuster(tls_ca: trustme.CA) -> None:
    """Building a DNS server, a cert, a black hole and a closed port on the loop is allowed."""
    with DNSServer() as server:
        server.add("a.test", "127.0.0.1")
    server_ssl_context(tls_ca, "a.test")
    with blackhole_listener(), closed_port():
        pass


# -- DNS --------------------------------------------------------------------------------------


async def test_dns_resolves_a_name_only_the_test_server_knows(
    dns_server: DNSServer, dns_resolver: AsyncResolver
) -> None:
    """AsyncResolver gets A and AAAA for ``a.test`` from the test server: one query each."""
    dns_server.add("a.test", "127.0.0.1", "::1")
    infos = await dns_resolver.resolve("a.test", 80, socket.AF_UNSPEC)
    assert {info["host"] for info in infos} == {"127.0.0.1", "::1"}
    assert dns_server.count("a.test", "A") == 1
    assert dns_server.count("a.test", "AAAA") == 1


async def test_dns_nxdomain_and_servfail_raise(
    dns_server: DNSServer, dns_resolver: AsyncResolver
) -> None:
    """NXDOMAIN, SERVFAIL and unknown names fail with OSError after exactly one query."""
    dns_server.nxdomain("gone.test")
    dns_server.servfail("broken.test")
    for name in ("gone.test", "broken.test", "unknown.test"):
        with pytest.raises(OSError, match=r"not found|failure"):
            await dns_resolver.resolve(name, 80, socket.AF_INET)
        assert dns_server.count(name) == 1


async def test_dns_injected_delay(dns_server: DNSServer, dns_resolver: AsyncResolver) -> None:
    """A 150 ms injected delay makes the lookup take at least 150 ms."""
    dns_server.add("slow.test", "127.0.0.2", delay=0.15)
    start = time.monotonic()
    infos = await dns_resolver.resolve("slow.test", 80, socket.AF_INET)
    assert time.monotonic() - start >= 0.15 - TIMER_SLACK
    assert [info["host"] for info in infos] == ["127.0.0.2"]


async def test_dns_drop_times_out(dns_server: DNSServer, make_resolver: MakeResolver) -> None:
    """A dropped query times out after the resolver's timeout, having reached the server."""
    dns_server.drop("void.test")
    resolver = make_resolver(timeout=0.3, tries=1)
    start = time.monotonic()
    with pytest.raises(OSError, match="Timeout"):
        await resolver.resolve("void.test", 80, socket.AF_INET)
    assert 0.25 <= time.monotonic() - start < 2
    assert dns_server.count("void.test") == 1


async def test_dns_asks_the_exact_name_without_search_domains(
    dns_server: DNSServer, dns_resolver: AsyncResolver
) -> None:
    """A single-label name is asked as is, once, with no search-domain suffixes."""
    dns_server.add("gateway", "127.0.0.9")
    infos = await dns_resolver.resolve("gateway", 80, socket.AF_INET)
    assert [info["host"] for info in infos] == ["127.0.0.9"]
    assert dns_server.log == [("gateway", "A", "udp")]


async def test_dns_ttl_controls_the_c_ares_cache(
    dns_server: DNSServer, dns_resolver: AsyncResolver
) -> None:
    """TTL 0 (the default) reaches the server every time; TTL 60 is cached by c-ares."""
    dns_server.add("fresh.test", "127.0.0.1")
    dns_server.add("cached.test", "127.0.0.1", ttl=60)
    for _ in range(2):
        await dns_resolver.resolve("fresh.test", 80, socket.AF_INET)
        await dns_resolver.resolve("cached.test", 80, socket.AF_INET)
    assert dns_server.count("fresh.test") == 2
    assert dns_server.count("cached.test") == 1


async def test_dns_over_tcp(dns_server: DNSServer, make_resolver: MakeResolver) -> None:
    """With ARES_FLAG_USEVC the query goes over TCP to the same port."""
    dns_server.add("tcp.test", "127.0.0.3")
    flags = pycares.ARES_FLAG_NOSEARCH | pycares.ARES_FLAG_NOALIASES | pycares.ARES_FLAG_USEVC
    infos = await make_resolver(flags=flags).resolve("tcp.test", 80, socket.AF_INET)
    assert [info["host"] for info in infos] == ["127.0.0.3"]
    assert dns_server.log == [("tcp.test", "A", "tcp")]


async def test_aiohttp_session_uses_the_test_dns(
    aiohttp_server: AiohttpServer, dns_server: DNSServer, dns_resolver: AsyncResolver
) -> None:
    """A ClientSession with the test resolver reaches ``http://a.test:PORT/``."""
    server = await aiohttp_server(_app())
    dns_server.add("a.test", "127.0.0.1")
    connector = aiohttp.TCPConnector(resolver=dns_resolver, use_dns_cache=False)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://a.test:{server.port}/") as resp,
    ):
        assert await resp.text() == "hello"
    assert dns_server.count("a.test", "A") == 1


def test_dns_server_stops_by_itself() -> None:
    """The DNS server thread ends on its own once its lifetime is over."""
    server = DNSServer(lifetime=0.2).start()
    try:
        time.sleep(0.4)
        assert not server.running
    finally:
        server.stop()


# -- TLS --------------------------------------------------------------------------------------


async def test_tls_trusting_context_succeeds_and_default_trust_fails(
    aiohttp_server: AiohttpServer,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
) -> None:
    """The handshake succeeds with the CA-trusting context and fails with default trust."""
    server = await aiohttp_server(_app(), ssl=server_ssl_ctx)
    url = f"https://127.0.0.1:{server.port}/"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=client_ssl_ctx) as resp:
            assert await resp.text() == "hello"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(url)


@pytest.mark.parametrize(("bad", "reason"), [("wrong-host", "mismatch"), ("expired", "expired")])
async def test_tls_bad_certificates_fail(
    aiohttp_server: AiohttpServer,
    client_ssl_ctx: ssl.SSLContext,
    wrong_host_ssl_ctx: ssl.SSLContext,
    expired_ssl_ctx: ssl.SSLContext,
    bad: str,
    reason: str,
) -> None:
    """A wrong-host or expired certificate fails verification even with the trusting context."""
    server_ctx = wrong_host_ssl_ctx if bad == "wrong-host" else expired_ssl_ctx
    server = await aiohttp_server(_app(), ssl=server_ctx)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError, match=reason):
            await session.get(f"https://127.0.0.1:{server.port}/", ssl=client_ssl_ctx)


async def test_tls_with_a_test_name_via_dns(
    aiohttp_server: AiohttpServer,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
    dns_server: DNSServer,
    dns_resolver: AsyncResolver,
) -> None:
    """``https://b.test:PORT/`` resolves via the test DNS and verifies against the test CA."""
    server = await aiohttp_server(_app(), ssl=server_ssl_ctx)
    dns_server.add("b.test", "127.0.0.1")
    connector = aiohttp.TCPConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"https://b.test:{server.port}/") as resp,
    ):
        assert await resp.text() == "hello"


async def test_tls_silent_server_never_finishes_the_handshake(
    raw_peer: RawPeer, client_ssl_ctx: ssl.SSLContext
) -> None:
    """A TCP peer that never sends a ServerHello makes the TLS handshake hang."""
    host, port = await raw_peer(silent())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await asyncio.open_connection(host, port, ssl=client_ssl_ctx, server_hostname="a.test")


async def test_raw_server_over_tls(
    raw_peer: RawPeer, server_ssl_ctx: ssl.SSLContext, client_ssl_ctx: ssl.SSLContext
) -> None:
    """A raw handler can sit behind TLS; ``srv.url`` is then ``https``."""
    srv = await raw_peer(
        respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), tls=server_ssl_ctx
    )
    assert srv.url.startswith("https://127.0.0.1:")
    async with aiohttp.ClientSession() as session, session.get(srv.url, ssl=client_ssl_ctx) as resp:
        assert await resp.text() == "ok"


# -- raw peers --------------------------------------------------------------------------------


async def test_raw_early_hints_sequence() -> None:
    """A plain socket read sees ``103 Early Hints`` with its Link header, then ``200 OK``."""
    async with raw_server(early_hints(delay=0.1)) as (host, port):
        data = await _read_all(host, port, GET)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>")
    assert data.index(b"HTTP/1.1 103") < data.index(b"HTTP/1.1 200 OK")
    assert data.endswith(b"\r\n\r\nhello")


async def test_raw_100_continue_sequence(raw_peer: RawPeer) -> None:
    """``100 Continue`` arrives before the body is sent; ``200 OK`` after."""
    host, port = await raw_peer(continue_100())
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"data")
    assert (await reader.read(-1)).startswith(b"HTTP/1.1 200 OK")
    writer.close()


async def test_raw_reset_mid_body(raw_peer: RawPeer) -> None:
    """After the partial body the client sees a TCP reset, not a clean EOF."""
    host, port = await raw_peer(reset_mid_body())
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(GET)
    received = bytearray()

    async def drain() -> None:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    with pytest.raises(ConnectionResetError):
        await drain()
    assert received.endswith(b"\r\n\r\n0123456789")
    writer.close()


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (close_before_response(), aiohttp.ServerDisconnectedError),
        (truncated_chunked(), aiohttp.ClientPayloadError),
        (content_length_too_long(), aiohttp.ClientPayloadError),
        (reset_mid_body(), aiohttp.ClientPayloadError),
        (reset_mid_headers(), aiohttp.ClientOSError),
    ],
    ids=[
        "close-before-response",
        "truncated-chunked",
        "short-body",
        "reset-mid-body",
        "reset-mid-headers",
    ],
)
async def test_raw_broken_responses_fail_in_aiohttp(
    raw_peer: RawPeer, handler: Callable[..., Awaitable[None]], error: type[Exception]
) -> None:
    """Each broken response makes an aiohttp client request fail with the expected error."""
    srv = await raw_peer(handler)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(error):
            async with session.get(srv.url) as resp:
                await resp.read()


async def test_raw_slow_headers_trip_a_total_timeout(raw_peer: RawPeer) -> None:
    """Headers trickling at one byte per 100 ms trip a 500 ms total timeout, not ``sock_read``."""
    srv = await raw_peer(slow_headers(interval=0.1))
    timeout = aiohttp.ClientTimeout(total=0.5, sock_read=0.3)
    start = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.get(srv.url)
    assert 0.5 - TIMER_SLACK <= time.monotonic() - start < 3


async def test_raw_server_bounds(raw_peer: RawPeer) -> None:
    """A raw server stops listening after ``max_connections`` and drops clients at ``lifetime``."""
    srv = await raw_peer(silent(), max_connections=1, lifetime=0.3)
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    await asyncio.sleep(0.1)  # let the server accept it and close its listener
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(srv.host, srv.port)
    async with asyncio.timeout(2):
        try:
            assert await reader.read(1) == b""
        except ConnectionResetError:
            pass  # aborted: also an end
    writer.close()


async def test_raw_keep_alive_answers_each_request(raw_peer: RawPeer) -> None:
    """``respond(keep_alive=True)`` answers two requests on one connection."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    srv = await raw_peer(respond(ok, keep_alive=True))
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(srv.url) as resp:
                assert await resp.text() == "ok"
    assert srv.connections == 1


# -- ports ------------------------------------------------------------------------------------


async def test_refused_port_refuses_at_once(refused_port: int) -> None:
    """Connecting to the held, non-listening port is refused at once."""
    start = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", refused_port)
    assert time.monotonic() - start < 1


async def test_blackhole_connect_hangs(blackhole: tuple[str, int]) -> None:
    """Connecting to the full-backlog listener hangs until the caller's timeout."""
    host, port = blackhole
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await asyncio.open_connection(host, port)
    assert time.monotonic() - start >= 0.3 - TIMER_SLACK
