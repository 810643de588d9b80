"""WebSockets on a traced session: the HTTP round trip up to the 101 upgrade, and nothing after.

Go ends the round trip at the ``101 Switching Protocols`` response (it is the response, not a
1xx for ``Got1xxResponse``) and never puts an upgraded connection back in the idle pool.
aiotrace does the same: the hop ends when the upgrade completes, ``request_done`` follows
``request_end``, and the WebSocket's frames and its close fire nothing.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.resolver import AsyncResolver
from aiohttp.test_utils import TestServer
from peers import DNSServer

import aiotrace
from aiotrace.testing import capture_events

AiohttpServer = Callable[..., Awaitable[TestServer]]

HOOKS = [n for n in aiotrace.HOOK_NAMES if n != "wrote_header_field"]

UPGRADE = [
    "request_start", "get_conn", "dns_start", "dns_done", "connect_start", "connect_done",
    "got_conn", "wrote_headers", "wrote_request", "got_first_response_byte", "request_end",
    "request_done",
]  # fmt: skip
UPGRADE_TLS = [
    *UPGRADE[:6], "tls_handshake_start", "tls_handshake_done", *UPGRADE[6:],
]  # fmt: skip


def make_app() -> web.Application:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(f"echo {msg.data}")
        return ws

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/", hello)
    return app


@pytest.fixture
async def session(
    zone: DNSServer, dns_resolver: AsyncResolver, client_ssl_ctx: ssl.SSLContext
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    async with aiotrace.traced_session(connector=connector) as s:
        yield s


async def exchange(session: aiohttp.ClientSession, url: str, hold: float = 0.0) -> list[str]:
    """Open a WebSocket, send two messages, read both echoes, keep it open ``hold`` s, close."""
    got = []
    async with session.ws_connect(url) as ws:
        for text in ("one", "two"):
            await ws.send_str(text)
            got.append((await ws.receive()).data)
        await asyncio.sleep(hold)
    return got


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_websocket_upgrade_ends_the_round_trip(
    session: aiohttp.ClientSession,
    aiohttp_server: AiohttpServer,
    server_ssl_ctx: ssl.SSLContext,
    tls: bool,
) -> None:
    """ws_connect traced: DNS, connect, (TLS,) got_conn, the request written, the 101 as the
    response (no got_1xx_response), request_done right after request_end; the frames and the
    close add nothing (no response_body_done, no put_idle_conn)."""
    server = await aiohttp_server(make_app(), ssl=server_ssl_ctx if tls else None)
    scheme = "wss" if tls else "ws"
    rec = aiotrace.Recorder()
    with capture_events(HOOKS) as log, aiotrace.with_client_trace(rec.trace):
        echoes = await exchange(session, f"{scheme}://a.test:{server.port}/ws", hold=0.3)
        closed_at = time.perf_counter()
        seen = len(log)
        await asyncio.sleep(0.05)  # anything the close would still fire
    assert echoes == ["echo one", "echo two"]
    assert log.names() == (UPGRADE_TLS if tls else UPGRADE)
    assert len(log) == seen
    assert log.of("request_end")[0].status == 101
    assert log.of("request_done")[0].err is None
    [timeline] = rec.requests
    [hop] = timeline.hops
    assert hop.status == 101 and timeline.done and timeline.error is None
    assert hop.timings.receive is not None  # the 101's head, first byte to upgrade
    # The hop ended at the upgrade, not when the WebSocket closed (0.3 s later).
    assert log.of("request_done")[0].time <= closed_at - 0.29
    [conn] = rec.connections
    assert conn.close_reason == "upgraded"


async def test_a_request_after_a_websocket_opens_its_own_connection(
    session: aiohttp.ClientSession, aiohttp_server: AiohttpServer
) -> None:
    """An upgraded connection never goes back to the pool: a request while the WebSocket is open
    finds it busy; one after it closed says the last connection was upgraded."""
    server = await aiohttp_server(make_app())
    rec = aiotrace.Recorder()
    url = f"http://a.test:{server.port}"
    with aiotrace.with_client_trace(rec.trace):
        async with session.ws_connect(f"{url}/ws") as ws:
            async with session.get(f"{url}/") as resp:
                assert await resp.text() == "hello"
            await ws.send_str("x")
            assert (await ws.receive()).data == "echo x"
        async with session.get(f"{url}/") as resp:
            assert await resp.text() == "hello"
    upgrade, during, after = (t.hops[0] for t in rec.requests)
    assert upgrade.status == 101 and upgrade.reuse_miss == "first"
    assert not during.reused and during.reuse_miss == "busy"
    assert after.reused  # the connection the request during the WebSocket left in the pool
    assert len(rec.connections) == 2


async def test_websocket_handshake_refused_is_an_ordinary_response(
    session: aiohttp.ClientSession, aiohttp_server: AiohttpServer
) -> None:
    """ws_connect to a path that answers 200 (no upgrade): aiohttp raises WSServerHandshakeError
    as untraced, and the round trip is an ordinary one (its small body read and the
    connection back in the pool before the response returns)."""
    server = await aiohttp_server(make_app())
    with (
        capture_events(HOOKS) as log,
        pytest.raises(aiohttp.WSServerHandshakeError),
    ):
        await exchange(session, f"http://a.test:{server.port}/")
    names = log.names()
    assert names[-4:] == ["response_body_done", "put_idle_conn", "request_end", "request_done"]
    assert log.of("put_idle_conn")[0].err is None
    assert log.of("request_end")[0].status == 200
