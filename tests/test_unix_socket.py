"""HTTP over a Unix socket: ``aiotrace.TracingUnixConnector``, against an aiohttp server on one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import aiotrace
from aiotrace.testing import capture_events

HOOKS = [n for n in aiotrace.HOOK_NAMES if n != "wrote_header_field"]

FRESH = [
    "request_start", "get_conn", "connect_start", "connect_done", "got_conn", "wrote_headers",
    "wrote_request", "got_first_response_byte", "response_body_done", "put_idle_conn",
    "request_end", "request_done",
]  # fmt: skip
REUSED = [
    "request_start", "get_conn", "got_conn", "wrote_headers", "wrote_request",
    "got_first_response_byte", "response_body_done", "put_idle_conn", "request_end",
    "request_done",
]  # fmt: skip


@pytest.fixture
def socket_path() -> Iterator[str]:
    """A path for a Unix socket, short enough for ``sun_path`` (pytest's tmp_path may not be)."""
    directory = tempfile.mkdtemp(prefix="aiotrace-")
    try:
        yield os.path.join(directory, "http.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def unix_server(socket_path: str) -> AsyncIterator[str]:
    """An aiohttp server on ``socket_path``: ``/`` says hello, ``/close`` answers with
    ``Connection: close``."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def close(request: web.Request) -> web.Response:
        return web.Response(text="bye", headers={"Connection": "close"})

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/close", close)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, socket_path).start()
    try:
        yield socket_path
    finally:
        await runner.cleanup()


async def fetch(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str]:
    async with session.get(url, **kw) as resp:
        return resp.status, await resp.text()


async def test_unix_socket_requests_connect_to_the_path_and_reuse(unix_server: str) -> None:
    """A request over a Unix socket: no DNS, one connect to the path (network ``unix``),
    got_conn naming the path; the next request reuses the pooled connection."""
    rec = aiotrace.Recorder()
    connector = aiotrace.TracingUnixConnector(unix_server)
    async with aiotrace.traced_session(connector=connector) as session:
        with capture_events(HOOKS) as log, aiotrace.with_client_trace(rec.trace):
            assert await fetch(session, "http://localhost/") == (200, "hello")
            assert await fetch(session, "http://localhost/") == (200, "hello")
    first, second = log.request_ids()
    assert log.names(first) == FRESH
    assert log.names(second) == REUSED
    start, done = log.of("connect_start")[0], log.of("connect_done")[0]
    assert (start.network, start.addr) == ("unix", unix_server)
    assert (done.network, done.addr, done.err) == ("unix", unix_server, None)
    new, reused = log.of("got_conn")
    assert not new.reused and reused.reused and reused.conn.id == new.conn.id
    assert new.conn.remote_addr == unix_server and new.conn.tls is None
    assert new.conn.proxy is None
    assert [e.err for e in log.of("put_idle_conn")] == [None, None]
    hops = [t.hops[0] for t in rec.requests]
    assert hops[0].timings.dns is None and hops[0].timings.connect is not None
    assert hops[0].reuse_miss == "first" and hops[1].reused


async def test_unix_socket_connection_closed_by_the_server_is_not_put_idle(
    unix_server: str,
) -> None:
    """``Connection: close`` over a Unix socket: no put_idle_conn (as Go), and the next request
    opens a new connection whose reuse_miss says the server closed the last one."""
    rec = aiotrace.Recorder()
    async with aiotrace.traced_session(
        connector=aiotrace.TracingUnixConnector(unix_server)
    ) as session:
        with capture_events(HOOKS) as log, aiotrace.with_client_trace(rec.trace):
            assert await fetch(session, "http://localhost/close") == (200, "bye")
            assert await fetch(session, "http://localhost/") == (200, "hello")
    first, second = log.request_ids()
    assert log.names(first) == [n for n in FRESH if n != "put_idle_conn"]
    assert log.names(second) == FRESH
    assert rec.requests[1].hops[0].reuse_miss == "server_closed"
    assert rec.connections[0].close_reason == "server_closed"


async def test_unix_socket_nothing_listening_fails_the_connect(socket_path: str) -> None:
    """A path nobody listens on: connect_done(err), then aiohttp's own UnixClientConnectorError."""
    async with aiotrace.traced_session(
        connector=aiotrace.TracingUnixConnector(socket_path)
    ) as session:
        with capture_events(HOOKS) as log, pytest.raises(aiohttp.ClientConnectorError) as caught:
            await fetch(session, "http://localhost/")
    assert type(caught.value).__name__ == "UnixClientConnectorError"  # not exported by aiohttp
    assert log.names() == [
        "request_start", "get_conn", "connect_start", "connect_done", "request_exception",
        "request_done",
    ]  # fmt: skip
    assert isinstance(log.of("connect_done")[0].err, OSError)
    assert log.of("request_exception")[0].err is caught.value


async def test_traced_session_names_the_unix_connector_to_use(socket_path: str) -> None:
    """traced_session(connector=aiohttp.UnixConnector(...)) fails in one line naming
    aiotrace.TracingUnixConnector."""
    connector = aiohttp.UnixConnector(socket_path)
    with pytest.raises(TypeError, match="TracingUnixConnector"):
        aiotrace.traced_session(connector=connector)  # type: ignore[arg-type]
    await connector.close()
