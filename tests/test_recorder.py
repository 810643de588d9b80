"""Recorder timelines end to end: phases, hops, reuse, connections, exports and aggregates.

Every test runs real loopback peers (aiohttp test servers, raw asyncio servers, a dnslib DNS
server) on both event loops. Accuracy tests inject wall-clock delays of at least 100 ms and
require each measured phase to sit on the delay: never under it (10%/10 ms for timers), and
over it by at most 50% or 60 ms, room a loaded machine needs; a phase the delay must not land
in stays under ``FAST`` ms. Every timeline's phases must add up to its ``total`` within 2 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import math
import os
import shutil
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.resolver import AsyncResolver
from aiohttp.test_utils import TestServer
from haralyzer import HarEntry, HarPage, HarParser
from hypothesis import given, settings
from hypothesis import strategies as st
from peers import (
    DNSServer,
    RawServer,
    read_request_head,
    reset_mid_body,
    reset_now,
    stale_after_first_response,
)

import aiotrace
import aiotrace._record.fold
import aiotrace._record.har
import aiotrace._record.kept
import aiotrace._record.phases
import aiotrace._record.recorder
import aiotrace._record.stats
from aiotrace._record.phases import phase_values, pooled_phase_values

PHASES = ("blocked", "dns", "connect", "tls", "send", "wait", "receive")
MARKS = ("namelookup", "connect", "appconnect", "pretransfer", "starttransfer")
TIMEOUT = aiohttp.ClientTimeout(total=10)

RawPeer = Callable[..., Awaitable[RawServer]]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ServerFactory = Callable[..., Awaitable[TestServer]]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


# A phase an injected delay must not land in: well under every delay (>= 100 ms), with room
# for a loaded machine.
FAST = 60.0


def near(measured: float | None, expected_ms: float) -> bool:
    """``expected_ms`` is an injected delay, a floor a loaded machine can only add to: at
    least it less 10% or 10 ms (timers' granularity), at most it plus 50% or 60 ms."""
    assert measured is not None
    return (
        expected_ms - max(0.1 * expected_ms, 10.0)
        <= measured
        <= expected_ms + max(0.5 * expected_ms, 60.0)
    )


def agree(ours: float | None, theirs: float) -> bool:
    """Two measurements of the same thing, taken apart (aiotrace's and curl's): within 50% of
    the smaller or 60 ms, whichever is larger, either way."""
    assert ours is not None
    return abs(ours - theirs) <= max(0.5 * min(ours, theirs), 60.0)


def assert_adds_up(timings: aiotrace.Timings) -> None:
    """No phase is negative, and the phases that happened add up to ``total`` (2 ms)."""
    values = [getattr(timings, p) for p in PHASES]
    assert all(v is None or (v >= 0.0 and math.isfinite(v)) for v in values), timings
    assert timings.total >= 0.0
    assert abs(sum(v for v in values if v is not None) - timings.total) <= 2.0, timings


def assert_marks_ordered(marks: aiotrace.Marks) -> None:
    """curl's marks are cumulative: each present one is >= the one before, <= total."""
    present = [getattr(marks, m) for m in MARKS if getattr(marks, m) is not None]
    assert present == sorted(present), marks
    assert all(0.0 <= v <= marks.total + 1e-6 for v in present), marks


def assert_sane(timeline: aiotrace.RequestTimeline) -> None:
    """Every hop and the request's summed timings add up; marks are ordered."""
    assert timeline.hops
    for hop in timeline.hops:
        assert_adds_up(hop.timings)
        assert_marks_ordered(hop.marks)
    assert_adds_up(timeline.timings)
    assert_marks_ordered(timeline.marks)
    summed = sum(h.timings.total for h in timeline.hops)
    assert abs(timeline.timings.total - summed) <= 1e-6


async def fetch(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, bytes]:
    async with session.get(url, **{"timeout": TIMEOUT, **kw}) as resp:
        return resp.status, await resp.read()


def raw_http(
    *,
    wait: float = 0.0,
    pieces: int = 0,
    interval: float = 0.0,
    body: bytes = b"ok",
    keep_alive: bool = True,
) -> Handler:
    """A raw HTTP/1.1 peer: per request, wait ``wait`` s before the head, then send the body
    (``body``, or ``pieces`` pieces each ``interval`` s apart after the head)."""
    chunks = [b"x" * 1000] * pieces if pieces else [body]
    length = sum(len(c) for c in chunks)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request_head(reader)
            if wait:
                await asyncio.sleep(wait)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length)
            await writer.drain()
            for chunk in chunks:
                if pieces:
                    await asyncio.sleep(interval)
                writer.write(chunk)
                await writer.drain()
            if not keep_alive:
                return

    return handler


def delayed_pipe(delay: float, upstream_port: int) -> Handler:
    """Accept at once, wait ``delay`` s, then relay bytes both ways to 127.0.0.1:upstream_port.

    In front of a TLS server this stalls the handshake (the ClientHello sits unanswered) by
    ``delay`` while the TCP connect itself completes immediately.
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

        tasks = [
            asyncio.ensure_future(pipe(reader, up_writer)),
            asyncio.ensure_future(pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up_writer.transport.abort()  # before any await: this task may be cancelled here
            up_writer.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return handler


async def silent_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read until the client goes away (behind TLS: the handshake's server side only)."""
    while await reader.read(65536):
        pass


def stall_then_close(delay: float) -> Handler:
    """Accept, say nothing for ``delay`` s, then close: a TLS handshake that hangs, then fails."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)

    return handler


@contextlib.asynccontextmanager
async def two_address_peers(
    first: Handler,
    second: Handler,
    *,
    first_tls: ssl.SSLContext | None = None,
    second_tls: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """Serve ``first`` on 127.0.0.1:PORT and ``second`` on 127.0.0.2:PORT (one port, two
    loopback addresses, as behind a name with two A records); yields PORT. Bounded: every
    connection is aborted and every handler cancelled on exit."""
    for _ in range(20):
        sock1 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock1.bind(("127.0.0.1", 0))
        port = sock1.getsockname()[1]
        sock2 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock2.bind(("127.0.0.2", port))
        except OSError:
            sock1.close()
            sock2.close()
            continue
        break
    else:  # pragma: no cover
        pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")
    tasks: set[asyncio.Task[Any]] = set()
    writers: set[asyncio.StreamWriter] = set()

    def serve(handler: Handler) -> Any:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            writers.add(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.CancelledError, ssl.SSLError):
                pass
            finally:
                tasks.discard(task)
                writers.discard(writer)
                writer.transport.abort()
                writer.close()

        return on_connect

    servers = [
        await asyncio.start_server(serve(first), sock=sock1, ssl=first_tls),
        await asyncio.start_server(serve(second), sock=sock2, ssl=second_tls),
    ]
    try:
        yield port
    finally:
        for srv in servers:
            srv.close()
        for task in list(tasks):
            task.cancel()
        for writer in list(writers):
            writer.transport.abort()
        if tasks:
            await asyncio.wait(list(tasks), timeout=5)
        for srv in servers:
            await srv.wait_closed()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def redirect(request: web.Request) -> web.Response:
    kind, n = request.match_info["kind"], int(request.match_info["n"])
    if n == 0:
        return web.Response(text="done")
    if kind == "relative":  # a relative reference: resolved against /redirect/relative/
        location = str(n - 1)
    else:
        location = f"{request.scheme}://{request.host}/redirect/absolute/{n - 1}"
    raise web.HTTPFound(location)


async def to_other_host(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently(f"http://b.test:{request.url.port}/")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "0.1")))
    return web.Response(text="slow")


async def close(request: web.Request) -> web.Response:
    resp = web.Response(text="bye", headers={"Connection": "close"})
    resp.force_close()
    return resp


async def big(request: web.Request) -> web.Response:
    return web.Response(body=b"b" * 8_000_000)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/redirect/{kind}/{n}", redirect)
    app.router.add_get("/cross", to_other_host)
    app.router.add_get("/slow", slow)
    app.router.add_get("/close", close)
    app.router.add_get("/big", big)
    return app


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
async def server(aiohttp_server: ServerFactory) -> TestServer:
    return await aiohttp_server(make_app())


@pytest.fixture
def make_session(
    zone: DNSServer, dns_resolver: AsyncResolver
) -> Callable[..., aiohttp.ClientSession]:
    """``make_session(trace=..., **connector_kwargs)``: a traced session on the test DNS."""

    def make(trace: Any = None, **connector_kw: Any) -> aiohttp.ClientSession:
        connector = aiotrace.TracingConnector(resolver=dns_resolver, **connector_kw)
        return aiotrace.traced_session(connector=connector, trace=trace)

    return make


@pytest.fixture
async def session(
    make_session: Callable[..., aiohttp.ClientSession],
) -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


@pytest.fixture
def ca_file(tls_ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


# --------------------------------------------------------------------------------------------
# The API: three ways to record, and what a timeline holds
# --------------------------------------------------------------------------------------------


async def test_async_with_recorder_records_requests_started_inside_only(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """``async with Recorder() as rec`` records the requests started in the block, no others."""
    url = f"http://a.test:{server.port}/"
    async with aiotrace.Recorder() as rec:
        assert await fetch(session, url) == (200, b"hello")
    await fetch(session, url)
    assert len(rec.requests) == 1
    assert rec.requests[0].done


async def test_recorder_trace_works_per_request_scoped_and_per_session(
    make_session: Callable[..., aiohttp.ClientSession], server: TestServer
) -> None:
    """``rec.trace`` per request, in ``with_client_trace``, and ``traced_session(trace=rec)``
    each record exactly the requests they cover."""
    base = f"http://a.test:{server.port}/"
    per_request, scoped, whole = aiotrace.Recorder(), aiotrace.Recorder(), aiotrace.Recorder()
    async with make_session() as plain:
        await fetch(plain, base + "?n=1", trace_request_ctx=per_request.trace)
        with aiotrace.with_client_trace(scoped.trace):
            await fetch(plain, base + "?n=2")
        await fetch(plain, base + "?n=3")
    async with make_session(trace=whole) as traced:
        await fetch(traced, base + "?n=4")
        await fetch(traced, base + "?n=5", trace_request_ctx=per_request.trace)
    assert [t.url.query["n"] for t in per_request.requests] == ["1", "5"]
    assert [t.url.query["n"] for t in scoped.requests] == ["2"]
    assert [t.url.query["n"] for t in whole.requests] == ["4", "5"]


async def test_recorders_compose_and_dedupe(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Two recorders in effect both record a request; one recorder attached twice (scoped and
    per request) records it once."""
    url = f"http://a.test:{server.port}/"
    async with aiotrace.Recorder() as outer, aiotrace.Recorder() as inner:
        await fetch(session, url, trace_request_ctx=inner.trace)
    assert len(outer.requests) == len(inner.requests) == 1
    assert outer.requests[0].id == inner.requests[0].id
    assert len(inner.connections) == 1 and len(inner.connections[0].served) == 1
    assert inner.stats[f"a.test:{server.port}"].requests == 1


async def test_requests_are_kept_in_start_order(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Concurrent requests finishing in another order are listed in the order they started."""
    base = f"http://a.test:{server.port}/slow?s="
    delays = ["0.3", "0.1", "0.2"]
    async with aiotrace.Recorder() as rec:
        tasks = []
        for d in delays:
            tasks.append(asyncio.ensure_future(fetch(session, base + d)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
    assert [t.url.query["s"] for t in rec.requests] == delays
    assert [t.id for t in rec.requests] == sorted(t.id for t in rec.requests)
    started = [t.started_at for t in rec.requests]
    assert started == sorted(started)
    for t, d in zip(rec.requests, delays, strict=True):
        assert near(t.hops[0].timings.wait, float(d) * 1000), t.hops[0].timings
        assert_sane(t)


async def test_redaction_can_be_turned_off(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Exports redact sensitive query values by default, and keep them with
    ``Redaction(enabled=False)``; the live timeline always has the real URL."""
    url = f"http://a.test:{server.port}/redirect/absolute/1?token=s3cret"
    redacting, raw = (
        aiotrace.Recorder(),
        aiotrace.Recorder(redaction=aiotrace.Redaction(enabled=False)),
    )
    await fetch(session, url, trace_request_ctx=redacting.trace)
    await fetch(session, url, trace_request_ctx=raw.trace)
    assert redacting.requests[0].url.query["token"] == "s3cret"
    assert "s3cret" not in json.dumps(redacting.to_dicts())
    assert "s3cret" not in json.dumps(redacting.to_har())
    assert "s3cret" in json.dumps(raw.to_dicts())
    assert raw.to_har()["log"]["entries"][0]["request"]["url"] == url


async def test_fresh_http_request_timeline(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A fresh plain-HTTP request: one hop with DNS, connect, send, wait, receive; no blocked or
    TLS; a new connection (reuse_miss "first") and a connection record."""
    url = f"http://a.test:{server.port}/"
    before = time.time()
    async with aiotrace.Recorder() as rec:
        await fetch(session, url)
    after = time.time()
    (t,) = rec.requests
    assert (t.method, str(t.url), str(t.final_url), t.status, t.error) == (
        "GET", url, url, 200, None,
    )  # fmt: skip
    assert (t.redirects, t.retries, t.done) == ([], 0, True)
    assert before - 0.01 <= t.started_at <= after + 0.01
    (hop,) = t.hops
    assert (hop.index, hop.attempt, hop.method, str(hop.url), hop.status) == (0, 0, "GET", url, 200)
    assert (hop.reused, hop.was_idle, hop.idle_time, hop.reuse_miss) == (False, False, 0.0, "first")
    assert hop.error is None
    assert hop.dns_addrs == ("127.0.0.1",)
    assert t.started_at <= hop.started_at <= after + 0.01
    conn = hop.connection
    assert conn is not None and conn.tls is None
    assert conn.remote_addr == f"127.0.0.1:{server.port}"
    assert conn.local_addr is not None and conn.local_addr.startswith("127.0.0.1:")
    tm = hop.timings
    assert tm.blocked is None and tm.tls is None
    assert all(getattr(tm, p) is not None for p in ("dns", "connect", "send", "wait", "receive"))
    assert hop.marks.appconnect is None
    assert hop.marks.namelookup is not None and hop.marks.connect is not None
    assert hop.marks.total == tm.total
    assert_sane(t)
    (record,) = rec.connections
    assert record.id == conn.id and record.remote_addr == conn.remote_addr
    assert record.local_addr == conn.local_addr
    assert record.served == [(t.id, 0, 0.0)]
    assert before - 0.01 <= record.opened_at <= hop.started_at + hop.timings.total / 1000.0
    assert record.closed_at is None and record.close_reason is None


async def test_timeline_to_dict_is_json_serialisable(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """``to_dict()`` of a redirected request survives a JSON round trip with every field, and
    sensitive query values are redacted."""
    url = f"http://a.test:{server.port}/redirect/absolute/1?token=s3cret&x=1"
    async with aiotrace.Recorder() as rec:
        await fetch(session, url)
    (t,) = rec.requests
    d = json.loads(json.dumps(t.to_dict()))
    assert "s3cret" not in json.dumps(d)
    assert d["url"].endswith("token=REDACTED&x=1")
    assert (d["id"], d["method"], d["status"], d["error"], d["done"]) == (
        t.id, "GET", 200, None, True,
    )  # fmt: skip
    assert d["final_url"] == f"http://a.test:{server.port}/redirect/absolute/0"
    assert d["retries"] == 0
    assert d["redirects"] == [
        {"from": d["url"], "to": d["final_url"], "status": 302},
    ]
    assert set(d["timings"]) == {*PHASES, "total"}
    assert set(d["marks"]) == {*MARKS, "total"}
    assert d["redirect_time"] == pytest.approx(t.redirect_time)
    assert [h["index"] for h in d["hops"]] == [0, 1]
    hop0, hop1 = d["hops"]
    assert hop0["connection"]["id"] == hop1["connection"]["id"]
    assert (hop0["reused"], hop1["reused"]) == (False, True)
    assert (hop0["reuse_miss"], hop1["reuse_miss"]) == ("first", None)
    assert hop0["dns"] == {"addrs": ["127.0.0.1"], "cached": False, "coalesced": False}
    assert hop1["idle_time_ms"] >= 0.0
    assert hop0["timings"] == dataclasses.asdict(t.hops[0].timings)
    assert d["timings"] == dataclasses.asdict(t.timings)


async def test_to_jsonl_writes_one_object_per_request(
    session: aiohttp.ClientSession, server: TestServer, tmp_path: Path
) -> None:
    """``to_jsonl(path)`` writes one JSON line per kept request, equal to ``to_dict()``."""
    async with aiotrace.Recorder() as rec:
        for i in range(3):
            await fetch(session, f"http://a.test:{server.port}/?i={i}")
    path = tmp_path / "out.jsonl"
    # a file write: off the event loop, as an application would do it
    assert await asyncio.to_thread(rec.to_jsonl, path) == 3
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    lines = text.splitlines()
    assert [json.loads(line) for line in lines] == rec.to_dicts()
    assert [json.loads(line)["url"][-3:] for line in lines] == ["i=0", "i=1", "i=2"]


# --------------------------------------------------------------------------------------------
# HAR
# --------------------------------------------------------------------------------------------


def har_entries(har: dict[str, Any]) -> list[HarEntry]:
    """Parse with haralyzer (HAR 1.2 structure) and return its entries, checking each one."""
    json.dumps(har)  # serialisable
    parser = HarParser(har)
    assert parser.version == "1.2"
    assert parser.creator["name"] == "aiotrace"
    (page,) = parser.pages
    assert isinstance(page, HarPage) and page.page_id == "unknown"
    entries: list[HarEntry] = page.entries
    for entry in entries:
        assert entry.startTime is not None and entry.startTime.tzinfo is not None
        assert entry.request.method and entry.request.url and entry.request.httpVersion
        assert isinstance(entry.response.status, int)
        t = entry.timings
        assert set(t) >= {"blocked", "dns", "connect", "send", "wait", "receive", "ssl"}
        for key in ("blocked", "dns", "connect", "ssl"):
            assert t[key] == -1 or t[key] >= 0
        for key in ("send", "wait", "receive"):
            assert t[key] >= 0
        if t["ssl"] != -1:  # HAR 1.2: ssl is also counted inside connect
            assert t["connect"] >= t["ssl"]
        total = sum(v for k, v in t.items() if k != "ssl" and v != -1)
        assert entry.time == pytest.approx(total, abs=0.01)
    return entries


async def test_har_export_validates_and_carries_the_phases(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    aiohttp_server: ServerFactory,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
) -> None:
    """``to_har()``: one haralyzer-valid entry per hop; -1 for phases that did not happen, ssl
    inside connect, serverIPAddress, connection id, redirectURL and startedDateTime."""
    srv = await aiohttp_server(make_app(), ssl=server_ssl_ctx)
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    base = f"https://a.test:{srv.port}"
    async with aiotrace.traced_session(connector=connector) as session, aiotrace.Recorder() as rec:
        await fetch(session, f"{base}/redirect/relative/2")
        await fetch(session, f"{base}/")
    first, second = rec.requests
    entries = har_entries(rec.to_har())
    assert len(entries) == 4  # three hops, then one
    hops = [*first.hops, *second.hops]
    for entry, hop in zip(entries, hops, strict=True):
        assert entry.request.url == str(hop.url)
        assert entry.status == hop.status
        assert entry.serverAddress == "127.0.0.1"
        assert hop.connection is not None and entry.port == hop.connection.id
        started = entry.startTime.timestamp()
        assert started == pytest.approx(hop.started_at, abs=0.002)
        assert entry.time == pytest.approx(hop.timings.total, abs=0.01)
        assert entry.raw_entry["_aiotrace"]["request_id"] in (first.id, second.id)
    assert [e.response.redirectURL for e in entries] == [
        f"{base}/redirect/relative/1", f"{base}/redirect/relative/0", "", "",
    ]  # fmt: skip
    assert [e.status for e in entries] == [302, 302, 200, 200]
    fresh = entries[0].timings
    tm = first.hops[0].timings
    assert fresh["blocked"] == -1
    assert fresh["dns"] == pytest.approx(tm.dns, abs=0.001)
    assert tm.connect is not None and tm.tls is not None
    assert fresh["ssl"] == pytest.approx(tm.tls, abs=0.001)
    assert fresh["connect"] == pytest.approx(tm.connect + tm.tls, abs=0.002)
    assert fresh["wait"] == pytest.approx(tm.wait, abs=0.001)
    for entry in entries[1:]:  # the rest reused the connection
        t = entry.timings
        assert (t["blocked"], t["dns"], t["connect"], t["ssl"]) == (-1, -1, -1, -1)
    assert len({e.port for e in entries}) == 1
    assert entries[0].startTime <= entries[1].startTime <= entries[2].startTime


async def test_har_export_of_a_failed_request(
    session: aiohttp.ClientSession, refused_port: int
) -> None:
    """A refused request is one HAR entry with status 0, no serverIPAddress, a connect time and
    the error; still haralyzer-valid."""
    async with aiotrace.Recorder() as rec:
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(session, f"http://127.0.0.1:{refused_port}/")
    (entry,) = har_entries(rec.to_har())
    assert entry.status == 0
    assert "serverIPAddress" not in entry.raw_entry and "connection" not in entry.raw_entry
    assert entry.timings["connect"] >= 0 and entry.timings["dns"] == -1
    assert entry.raw_entry["_aiotrace"]["error"] == rec.requests[0].hops[0].error
    assert entry.raw_entry["_aiotrace"]["error"].startswith("ClientConnectorError")


# --------------------------------------------------------------------------------------------
# Accuracy against injected delays, and against curl
# --------------------------------------------------------------------------------------------


async def test_dns_wait_and_receive_match_injected_delays(
    session: aiohttp.ClientSession, zone: DNSServer, raw_peer: RawPeer
) -> None:
    """DNS answering after 200 ms, headers after 300 ms and a body dripped over 300 ms give
    dns, wait and receive on their delays (see ``near``); the marks are their running sums."""
    zone.add("slow.test", "127.0.0.1", delay=0.2)
    peer = await raw_peer(raw_http(wait=0.3, pieces=3, interval=0.1))
    async with aiotrace.Recorder() as rec:
        status, body = await fetch(session, f"http://slow.test:{peer.port}/")
    assert (status, len(body)) == (200, 3000)
    (t,) = rec.requests
    (hop,) = t.hops
    tm = hop.timings
    assert near(tm.dns, 200), tm
    assert near(tm.wait, 300), tm
    assert near(tm.receive, 300), tm
    assert tm.connect is not None and tm.connect < FAST
    assert tm.send is not None and tm.send < FAST
    assert_sane(t)
    m = hop.marks
    assert near(m.namelookup, 200)
    assert m.connect == pytest.approx(tm.dns + tm.connect, abs=0.01)
    assert near(m.starttransfer, 500)
    assert m.starttransfer == pytest.approx(tm.dns + tm.connect + tm.send + tm.wait, abs=0.01)
    assert near(m.total, 800)
    assert near(t.marks.total, 800) and t.marks.total >= m.total


async def test_tls_phase_matches_a_stalled_handshake(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    raw_peer: RawPeer,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
) -> None:
    """A TLS server whose handshake is held up 200 ms (a relay that waits before forwarding)
    gives tls of 200 ms (see ``near``), a fast connect, and appconnect at the handshake's end."""
    backend = await raw_peer(raw_http(body=b"secure", keep_alive=False), tls=server_ssl_ctx)
    front = await raw_peer(delayed_pipe(0.2, backend.port))
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    async with aiotrace.traced_session(connector=connector) as session, aiotrace.Recorder() as rec:
        assert await fetch(session, f"https://a.test:{front.port}/") == (200, b"secure")
    (t,) = rec.requests
    (hop,) = t.hops
    tm = hop.timings
    assert near(tm.tls, 200), tm
    assert tm.connect is not None and tm.connect < FAST
    assert tm.send is not None and tm.send < FAST
    assert tm.dns is not None
    assert hop.marks.appconnect == pytest.approx(tm.dns + tm.connect + tm.tls, abs=0.01)
    assert near(hop.marks.appconnect, 200)
    assert hop.connection is not None and hop.connection.tls is not None
    assert_sane(t)
    record = json.loads(json.dumps(rec.connections[0].to_dict()))
    assert record["tls"]["version"] == hop.connection.tls.version
    assert json.loads(json.dumps(t.to_dict()))["hops"][0]["connection"]["tls"] == record["tls"]


async def test_blocked_matches_the_time_the_pool_was_full(
    make_session: Callable[..., aiohttp.ClientSession], raw_peer: RawPeer
) -> None:
    """With limit_per_host=1 and a 300 ms response in the way, the waiting request's blocked
    is 300 ms (see ``near``) and it then reuses the connection."""
    peer = await raw_peer(raw_http(wait=0.3))
    url = f"http://127.0.0.1:{peer.port}/"
    async with make_session(limit_per_host=1) as session, aiotrace.Recorder() as rec:
        await asyncio.gather(fetch(session, url), fetch(session, url))
    first, second = rec.requests
    assert first.hops[0].timings.blocked is None
    assert near(second.hops[0].timings.blocked, 300), second.hops[0].timings
    assert near(second.hops[0].timings.wait, 300)
    assert second.hops[0].reused and second.hops[0].reuse_miss is None
    assert_sane(first)
    assert_sane(second)


async def test_connect_timeout_is_cut_at_the_failure(
    session: aiohttp.ClientSession, blackhole: tuple[str, int]
) -> None:
    """A connect hanging until a 300 ms sock_connect timeout: connect is 300 ms (see ``near``),
    the error is set and the phases still add up."""
    host, port = blackhole
    timeout = aiohttp.ClientTimeout(total=5, sock_connect=0.3)
    async with aiotrace.Recorder() as rec:
        with pytest.raises(aiohttp.ConnectionTimeoutError):
            async with session.get(f"http://{host}:{port}/", timeout=timeout):
                pass
    (t,) = rec.requests
    assert t.error is not None and t.error.startswith("ConnectionTimeoutError")
    assert t.status is None and t.done
    (hop,) = t.hops
    assert near(hop.timings.connect, 300), hop.timings
    assert hop.marks.connect is not None
    assert (hop.timings.send, hop.timings.wait, hop.timings.receive) == (None, None, None)
    assert hop.connection is None
    assert_sane(t)


@pytest.fixture
def curl() -> str:
    """The curl binary (looked up outside the event loop); the test is skipped without it."""
    path = shutil.which("curl")
    if path is None:
        pytest.skip("curl is not installed")
    return path


async def _curl(curl: str, url: str, *args: str) -> dict[str, float]:
    """Run curl -w on ``url`` (loopback, no proxy) and return its timers in ms."""
    fields = (
        "time_namelookup", "time_connect", "time_appconnect", "time_pretransfer",
        "time_starttransfer", "time_total",
    )  # fmt: skip
    fmt = " ".join(f"%{{{f}}}" for f in fields)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = await asyncio.create_subprocess_exec(
        curl, "-sS", "--http1.1", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null",
        "-w", fmt, *args, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    return {f: float(v) * 1000.0 for f, v in zip(fields, out.decode().split(), strict=True)}


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_marks_agree_with_curl(
    scheme: str,
    curl: str,
    raw_peer: RawPeer,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
    ca_file: Path,
) -> None:
    """Fetching one 127.0.0.1 peer (headers after 300 ms, body dripped over 300 ms, for https
    a handshake held up 200 ms) with curl -w and with aiotrace gives connect, appconnect
    (https), starttransfer and total marks that agree with curl's time_connect,
    time_appconnect, time_starttransfer and time_total and sit on the injected delays; DNS is not
    compared, since this curl has no c-ares and cannot ask the test DNS server (an IP literal
    means neither side looks anything up)."""
    if scheme == "https":
        backend = await raw_peer(
            raw_http(wait=0.3, pieces=3, interval=0.1, keep_alive=False), tls=server_ssl_ctx
        )
        peer = await raw_peer(delayed_pipe(0.2, backend.port))
        handshake = 200.0
    else:
        peer = await raw_peer(raw_http(wait=0.3, pieces=3, interval=0.1, keep_alive=False))
        handshake = 0.0
    url = f"{scheme}://127.0.0.1:{peer.port}/"
    times = await _curl(curl, url, "--cacert", str(ca_file))
    rec = aiotrace.Recorder()
    connector = aiotrace.TracingConnector(ssl=client_ssl_ctx)
    async with aiotrace.traced_session(connector=connector, trace=rec) as session:
        status, body = await fetch(session, url)
    assert (status, len(body)) == (200, 3000)
    (t,) = rec.requests
    (hop,) = t.hops
    m = t.marks
    assert_sane(t)
    assert hop.marks.namelookup is None and hop.timings.dns is None
    assert agree(m.connect, times["time_connect"]), (m, times)
    if scheme == "https":
        assert agree(m.appconnect, times["time_appconnect"]), (m, times)
        assert near(m.appconnect, handshake) and near(times["time_appconnect"], handshake)
    else:
        assert m.appconnect is None and times["time_appconnect"] == 0
    assert agree(m.starttransfer, times["time_starttransfer"]), (m, times)
    assert agree(m.total, times["time_total"]), (m, times)
    for started in (m.starttransfer, times["time_starttransfer"]):
        assert near(started, handshake + 300), (m, times)
    for total in (m.total, times["time_total"]):
        assert near(total, handshake + 600), (m, times)


# --------------------------------------------------------------------------------------------
# Redirects
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["relative", "absolute"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
async def test_redirect_chain_is_one_hop_per_round_trip(
    kind: str, n: int, session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A chain of n redirects (relative or absolute Location) is n+1 hops on one kept-alive
    connection, n redirect links, and the request's marks shifted by the redirect time."""
    base = f"http://a.test:{server.port}/redirect/{kind}"
    async with aiotrace.Recorder() as rec:
        assert await fetch(session, f"{base}/{n}") == (200, b"done")
    (t,) = rec.requests
    urls = [f"{base}/{i}" for i in range(n, -1, -1)]
    assert [str(h.url) for h in t.hops] == urls
    assert [h.index for h in t.hops] == list(range(n + 1))
    assert [h.attempt for h in t.hops] == [0] * (n + 1)
    assert [h.status for h in t.hops] == [302] * n + [200]
    assert [(str(r.from_url), str(r.to_url), r.status) for r in t.redirects] == [
        (urls[i], urls[i + 1], 302) for i in range(n)
    ]
    assert (str(t.url), str(t.final_url), t.status, t.retries) == (urls[0], urls[-1], 200, 0)
    assert [h.reused for h in t.hops] == [False] + [True] * n
    assert [h.reuse_miss for h in t.hops] == ["first"] + [None] * n
    assert len({h.connection.id for h in t.hops if h.connection}) == 1
    for hop in t.hops[1:]:
        tm = hop.timings
        assert (tm.blocked, tm.dns, tm.connect, tm.tls) == (None, None, None, None)
    assert_sane(t)
    assert t.timings.dns == t.hops[0].timings.dns
    assert t.timings.wait == pytest.approx(sum(h.timings.wait or 0 for h in t.hops))
    last = t.hops[-1].marks
    assert t.redirect_time > 0
    assert t.marks.total == pytest.approx(last.total + t.redirect_time, abs=1e-6)
    assert t.marks.starttransfer == pytest.approx(
        (last.starttransfer or 0) + t.redirect_time, abs=1e-6
    )
    assert t.marks.total <= (time.time() - t.started_at) * 1000.0
    (record,) = rec.connections
    assert record.served == [(t.id, h.index, pytest.approx(h.idle_time * 1000)) for h in t.hops]


async def test_cross_host_redirect_opens_a_connection_per_host(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """a.test -> b.test: the second hop looks b.test up, opens its own connection ("first" for
    that host) and the redirect link names both hosts."""
    async with aiotrace.Recorder() as rec:
        assert await fetch(session, f"http://a.test:{server.port}/cross") == (200, b"hello")
    (t,) = rec.requests
    hop_a, hop_b = t.hops
    assert (hop_a.url.host, hop_b.url.host) == ("a.test", "b.test")
    assert (hop_a.status, hop_b.status) == (301, 200)
    assert [(r.from_url.host, r.to_url.host, r.status) for r in t.redirects] == [
        ("a.test", "b.test", 301)
    ]
    assert (hop_a.reuse_miss, hop_b.reuse_miss) == ("first", "first")
    assert not hop_a.reused and not hop_b.reused
    assert hop_a.connection and hop_b.connection
    assert hop_a.connection.id != hop_b.connection.id
    assert hop_a.timings.dns is not None and hop_b.timings.dns is not None
    assert t.timings.dns == pytest.approx(hop_a.timings.dns + hop_b.timings.dns)
    assert t.timings.connect == pytest.approx(
        (hop_a.timings.connect or 0) + (hop_b.timings.connect or 0)
    )
    assert str(t.final_url) == f"http://b.test:{server.port}/"
    assert_sane(t)
    assert [c.id for c in rec.connections] == [hop_a.connection.id, hop_b.connection.id]


async def test_http_to_https_redirect_adds_tls_on_the_second_hop(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    aiohttp_server: ServerFactory,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
) -> None:
    """http://a.test -> https://b.test: the first hop has no TLS, the second a TLS phase and
    the connection's TLS details; HAR says ssl -1 then a real ssl time inside connect."""
    tls_srv = await aiohttp_server(make_app(), ssl=server_ssl_ctx)

    async def upgrade(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(f"https://b.test:{tls_srv.port}/")

    app = web.Application()
    app.router.add_get("/", upgrade)
    plain_srv = await aiohttp_server(app)
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    async with aiotrace.traced_session(connector=connector) as session, aiotrace.Recorder() as rec:
        assert await fetch(session, f"http://a.test:{plain_srv.port}/") == (200, b"hello")
    (t,) = rec.requests
    plain, secure = t.hops
    assert (plain.url.scheme, secure.url.scheme) == ("http", "https")
    assert plain.timings.tls is None and plain.marks.appconnect is None
    assert plain.connection is not None and plain.connection.tls is None
    assert secure.timings.tls is not None and secure.marks.appconnect is not None
    assert secure.connection is not None and secure.connection.tls is not None
    assert secure.connection.tls.version in ("TLSv1.2", "TLSv1.3")
    assert secure.reuse_miss == "first"
    assert t.redirects[0].to_url == secure.url
    assert t.timings.tls == secure.timings.tls
    assert_sane(t)
    e_plain, e_secure = har_entries(rec.to_har())
    assert e_plain.timings["ssl"] == -1
    assert e_plain.response.redirectURL == f"https://b.test:{tls_srv.port}/"
    assert e_secure.timings["ssl"] == pytest.approx(secure.timings.tls, abs=0.001)
    assert e_secure.timings["connect"] >= e_secure.timings["ssl"] > 0


# --------------------------------------------------------------------------------------------
# Connection reuse and why it did not happen
# --------------------------------------------------------------------------------------------


async def test_keep_alive_reuse_across_requests_records_idle_time(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Sequential requests share one connection: reused hops report their idle gap, and the
    connection record lists each request with the same gap in ms."""
    url = f"http://a.test:{server.port}/"
    async with aiotrace.Recorder() as rec:
        await fetch(session, url)
        await asyncio.sleep(0.15)
        await fetch(session, url)
        await fetch(session, url)
    hops = [t.hops[0] for t in rec.requests]
    assert [h.reused for h in hops] == [False, True, True]
    assert [h.was_idle for h in hops] == [False, True, True]
    assert [h.reuse_miss for h in hops] == ["first", None, None]
    assert near(hops[1].idle_time * 1000, 150)
    assert 0 <= hops[2].idle_time < 0.1
    for h in hops[1:]:
        tm = h.timings
        assert (tm.blocked, tm.dns, tm.connect, tm.tls) == (None, None, None, None)
        assert h.marks.namelookup is None and h.marks.connect is None
    (record,) = rec.connections
    assert record.served == [
        (t.id, 0, pytest.approx(t.hops[0].idle_time * 1000)) for t in rec.requests
    ]
    for t in rec.requests:
        assert_sane(t)


async def test_limit_per_host_under_load(
    make_session: Callable[..., aiohttp.ClientSession], server: TestServer
) -> None:
    """With limit_per_host=1, 8 concurrent requests share one connection: the 7 that waited
    have blocked > 0 (about 100 ms more each) and reused it; no reused hop has a reuse_miss."""
    url = f"http://a.test:{server.port}/slow?s=0.1"
    async with make_session(limit_per_host=1) as session, aiotrace.Recorder() as rec:
        results = await asyncio.gather(*(fetch(session, url) for _ in range(8)))
    assert results == [(200, b"slow")] * 8
    hops = [h for t in rec.requests for h in t.hops]
    assert len(hops) == 8
    opened = [h for h in hops if not h.reused]
    assert [h.reuse_miss for h in opened] == ["first"]
    waited = [h for h in hops if h.timings.blocked is not None]
    assert len(waited) == 7
    assert all(h.reused and h.timings.blocked > 0 for h in waited)  # type: ignore[operator]
    assert not any(h.reused and h.reuse_miss is not None for h in hops)
    blocked = sorted(h.timings.blocked for h in waited)  # type: ignore[type-var]
    assert all(near(b, 100 * i) for i, b in enumerate(blocked, 1)), blocked
    assert len({h.connection.id for h in hops if h.connection}) == 1
    for t in rec.requests:
        assert_sane(t)


async def test_limit_per_host_with_server_close_under_load(
    make_session: Callable[..., aiohttp.ClientSession], server: TestServer
) -> None:
    """With limit_per_host=1 and ``Connection: close`` answers, each waiting request is
    blocked, then opens a connection with reuse_miss "server_closed", never "busy"."""
    url = f"http://a.test:{server.port}/close"
    async with make_session(limit_per_host=1) as session, aiotrace.Recorder() as rec:
        await asyncio.gather(*(fetch(session, url) for _ in range(6)))
    hops = [t.hops[0] for t in rec.requests]
    assert not any(h.reused for h in hops)
    assert sorted(str(h.reuse_miss) for h in hops) == ["first"] + ["server_closed"] * 5
    waited = [h for h in hops if h.reuse_miss == "server_closed"]
    assert all(h.timings.blocked is not None and h.timings.blocked > 0 for h in waited)
    assert all(h.dns_cached for h in waited)
    assert [c.close_reason for c in rec.connections] == ["server_closed"] * 6
    for t in rec.requests:
        assert_sane(t)


async def test_concurrent_openers_without_a_limit_say_busy(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Five concurrent first requests to one host open five connections: the first says
    "first", the others "busy" (every connection to the host was in use)."""
    url = f"http://a.test:{server.port}/slow?s=0.15"
    async with aiotrace.Recorder() as rec:
        await asyncio.gather(*(fetch(session, url) for _ in range(5)))
    hops = [t.hops[0] for t in rec.requests]
    assert sorted(str(h.reuse_miss) for h in hops) == ["busy"] * 4 + ["first"]
    assert not any(h.reused for h in hops)
    assert len({h.connection.id for h in hops if h.connection}) == 5
    assert sum(1 for h in hops if h.dns_coalesced) == 4


async def test_server_connection_close_makes_the_next_request_miss(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """After a response with ``Connection: close`` the next request opens a new connection
    with reuse_miss "server_closed", and the old connection's record says so."""
    base = f"http://a.test:{server.port}"
    async with aiotrace.Recorder() as rec:
        await fetch(session, f"{base}/close")
        await fetch(session, f"{base}/")
    first, second = (t.hops[0] for t in rec.requests)
    assert first.reuse_miss == "first"
    assert not second.reused and second.reuse_miss == "server_closed"
    old, new = rec.connections
    assert old.close_reason == "server_closed" and old.closed_at is not None
    assert old.opened_at <= old.closed_at
    assert new.close_reason is None


async def test_untraced_requests_connections_count_for_the_next_miss(
    make_session: Callable[..., aiohttp.ClientSession], aiohttp_server: ServerFactory
) -> None:
    """A connection an untraced request used still tells a traced request why it found no
    pooled one: closed by the server ("server_closed"), or still in use ("busy")."""
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        holding.set()  # the untraced request has its connection
        await release.wait()
        return web.Response(text="held")

    app = make_app()
    app.router.add_get("/hold", hold)
    srv = await aiohttp_server(app)
    base = f"http://a.test:{srv.port}"
    async with make_session() as session:
        await fetch(session, f"{base}/close")  # untraced: no Recorder active
        async with aiotrace.Recorder() as rec:
            await fetch(session, f"{base}/")
    [hop] = rec.requests[0].hops
    assert not hop.reused and hop.reuse_miss == "server_closed"
    async with make_session() as session:
        await fetch(session, f"{base}/")  # untraced; its connection goes back to the pool
        held = asyncio.create_task(fetch(session, f"{base}/hold"))  # takes it and waits
        await holding.wait()
        async with aiotrace.Recorder() as rec:
            await fetch(session, f"{base}/")
        release.set()
        await held
    [hop] = rec.requests[0].hops
    assert not hop.reused and hop.reuse_miss == "busy"


@pytest.mark.parametrize("peer", ["aiohttp", "raw"])
async def test_force_close_disables_keep_alive(
    peer: str,
    make_session: Callable[..., aiohttp.ClientSession],
    server: TestServer,
    raw_peer: RawPeer,
) -> None:
    """With force_close=True every request opens a connection ("keepalive_disabled") and each
    connection closes for that reason, whether the server echoes the client's
    ``Connection: close`` (aiohttp) or not (a raw keep-alive peer): the client chose to close."""
    if peer == "aiohttp":
        url = f"http://a.test:{server.port}/"
    else:
        url = f"http://a.test:{(await raw_peer(raw_http())).port}/"
    async with make_session(force_close=True) as session, aiotrace.Recorder() as rec:
        for _ in range(3):
            await fetch(session, url)
    hops = [t.hops[0] for t in rec.requests]
    assert [h.reuse_miss for h in hops] == ["keepalive_disabled"] * 3
    assert not any(h.reused for h in hops)
    assert all(h.timings.connect is not None for h in hops)
    assert len(rec.connections) == 3
    assert [c.close_reason for c in rec.connections] == ["keepalive_disabled"] * 3


async def test_idle_timeout_makes_the_next_request_miss(
    make_session: Callable[..., aiohttp.ClientSession], server: TestServer
) -> None:
    """A pooled connection dropped by keepalive_timeout makes the next request open one with
    reuse_miss "idle_timeout", and its record says "idle_timeout"."""
    url = f"http://a.test:{server.port}/"
    async with make_session(keepalive_timeout=0.1) as session, aiotrace.Recorder() as rec:
        await fetch(session, url)
        await asyncio.sleep(0.4)
        await fetch(session, url)
    _, second = (t.hops[0] for t in rec.requests)
    assert not second.reused and second.reuse_miss == "idle_timeout"
    assert rec.connections[0].close_reason == "idle_timeout"
    assert rec.connections[0].closed_at is not None


async def test_connection_reset_while_idle_makes_the_next_request_miss(
    session: aiohttp.ClientSession, raw_peer: RawPeer
) -> None:
    """A server that resets the pooled connection makes the next request open a new one with
    reuse_miss "error"; the old connection's record says "error"."""
    served: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(1)
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if len(served) == 1:
            await asyncio.sleep(0.05)
            reset_now(writer)
        else:
            await reader.read()

    peer = await raw_peer(handler)
    url = f"http://127.0.0.1:{peer.port}/"
    async with aiotrace.Recorder() as rec:
        await fetch(session, url)
        await asyncio.sleep(0.2)
        await fetch(session, url)
    _, second = (t.hops[0] for t in rec.requests)
    assert not second.reused and second.reuse_miss == "error"
    assert second.error is None and rec.requests[1].status == 200
    assert rec.connections[0].close_reason == "error"


async def test_stale_pooled_connection_retry(
    session: aiohttp.ClientSession, raw_peer: RawPeer
) -> None:
    """aiohttp's silent retry on a stale pooled connection is a second hop with attempt 1 and
    reuse_miss "stale_retry"; the failed attempt keeps its error and both add up."""
    peer = await raw_peer(stale_after_first_response())
    url = f"http://127.0.0.1:{peer.port}/"
    await fetch(session, url)
    async with aiotrace.Recorder() as rec:
        assert await fetch(session, url) == (200, b"ok")
    (t,) = rec.requests
    assert (t.retries, t.status, t.error, t.redirects) == (1, 200, None, [])
    stale, fresh = t.hops
    assert (stale.index, stale.attempt, fresh.index, fresh.attempt) == (0, 0, 0, 1)
    assert stale.reused and stale.reuse_miss is None and stale.status is None
    assert stale.error is not None and stale.error.startswith("ServerDisconnectedError")
    assert not fresh.reused and fresh.reuse_miss == "stale_retry" and fresh.status == 200
    assert fresh.error is None
    assert stale.connection and fresh.connection
    assert stale.connection.id != fresh.connection.id
    assert fresh.timings.connect is not None
    assert_sane(t)
    entries = har_entries(rec.to_har())
    assert [e.raw_entry["_aiotrace"]["attempt"] for e in entries] == [0, 1]
    assert [e.response.redirectURL for e in entries] == ["", ""]
    assert [e.status for e in entries] == [0, 200]


# --------------------------------------------------------------------------------------------
# How the body is consumed
# --------------------------------------------------------------------------------------------


async def test_head_request_timeline(session: aiohttp.ClientSession, server: TestServer) -> None:
    """A HEAD request has a complete one-hop timeline (receive present, ending with the head)
    and leaves the connection to be reused."""
    url = f"http://a.test:{server.port}/"
    async with aiotrace.Recorder() as rec:
        async with session.head(url, timeout=TIMEOUT) as resp:
            assert resp.status == 200
            assert await resp.read() == b""
        await fetch(session, url)
    head, get = rec.requests
    assert head.method == "HEAD" and head.hops[0].method == "HEAD" and head.done
    assert head.status == 200 and head.hops[0].status == 200
    assert head.hops[0].timings.receive is not None
    assert head.hops[0].timings.receive < FAST
    assert_sane(head)
    assert get.hops[0].reused
    assert head.hops[0].connection == get.hops[0].connection


async def test_streamed_body_read_in_pieces(
    session: aiohttp.ClientSession, raw_peer: RawPeer
) -> None:
    """A body dripped over 300 ms and read with ``resp.content.read(n)`` has receive of 300 ms
    (see ``near``); the timeline is live (not done) mid-body and done at the end."""
    peer = await raw_peer(raw_http(pieces=3, interval=0.1))
    url = f"http://127.0.0.1:{peer.port}/"
    async with aiotrace.Recorder() as rec:
        async with session.get(url, timeout=TIMEOUT) as resp:
            first = await resp.content.read(100)
            (t,) = rec.requests
            assert not t.done
            mid = t.hops[0]
            assert mid.timings.receive is not None
            got = len(first)
            while chunk := await resp.content.read(100):
                got += len(chunk)
        assert got == 3000
        await fetch(session, url)
    assert t.done
    hop = t.hops[0]
    assert near(hop.timings.receive, 300), hop.timings
    assert hop.timings.total > mid.timings.total
    assert_sane(t)
    assert rec.requests[1].hops[0].reused


async def test_response_released_unread_closes_the_connection(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A large body released unread ends the hop at the release, closes the connection
    ("closed") and the next request misses with reuse_miss "closed"."""
    base = f"http://a.test:{server.port}"
    async with aiotrace.Recorder() as rec:
        async with session.get(f"{base}/big", timeout=TIMEOUT) as resp:
            assert resp.status == 200
            await resp.content.read(1000)
            resp.release()
        await fetch(session, f"{base}/")
    released, after = rec.requests
    assert released.done and released.status == 200 and released.error is None
    assert released.hops[0].timings.receive is not None
    assert_sane(released)
    assert rec.connections[0].close_reason == "closed"
    assert not after.hops[0].reused and after.hops[0].reuse_miss == "closed"


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------


async def test_refused_request_has_error_and_consistent_phases(
    session: aiohttp.ClientSession, refused_port: int
) -> None:
    """A refused connect: the error as "Type: message", no status, a non-negative connect
    phase and no later ones, and total equal to the sum."""
    async with aiotrace.Recorder() as rec:
        with pytest.raises(aiohttp.ClientConnectorError) as exc_info:
            await fetch(session, f"http://127.0.0.1:{refused_port}/")
    (t,) = rec.requests
    assert t.error == f"{type(exc_info.value).__name__}: {exc_info.value}"
    assert t.status is None and t.done and t.retries == 0
    (hop,) = t.hops
    assert hop.status is None and hop.connection is None and hop.error is not None
    tm = hop.timings
    assert tm.connect is not None and tm.connect >= 0
    assert (tm.dns, tm.tls, tm.send, tm.wait, tm.receive) == (None, None, None, None, None)
    assert hop.marks.connect is not None and hop.marks.starttransfer is None
    assert_sane(t)
    assert rec.connections == []
    assert json.loads(json.dumps(t.to_dict()))["error"] == t.error


async def test_nxdomain_request_has_error_and_consistent_phases(
    session: aiohttp.ClientSession, zone: DNSServer
) -> None:
    """NXDOMAIN after a 150 ms delay: dns is 150 ms (see ``near``), nothing after it, and total
    equals the sum."""
    zone.nxdomain("gone.test", delay=0.15)
    async with aiotrace.Recorder() as rec:
        with pytest.raises(aiohttp.ClientConnectorDNSError):
            await fetch(session, "http://gone.test:80/")
    (t,) = rec.requests
    assert t.error is not None and t.error.startswith("ClientConnectorDNSError")
    (hop,) = t.hops
    assert near(hop.timings.dns, 150), hop.timings
    assert hop.timings.connect is None and hop.timings.wait is None
    assert hop.dns_addrs == ()
    assert_sane(t)


async def test_read_timeout_cuts_the_wait_phase(
    session: aiohttp.ClientSession, raw_peer: RawPeer
) -> None:
    """A server silent past a 300 ms sock_read timeout: wait is cut at 300 ms (see ``near``),
    no receive, the error is set and total equals the sum."""
    peer = await raw_peer(raw_http(wait=2.0))
    timeout = aiohttp.ClientTimeout(total=5, sock_read=0.3)
    async with aiotrace.Recorder() as rec:
        with pytest.raises(aiohttp.SocketTimeoutError):
            await fetch(session, f"http://127.0.0.1:{peer.port}/", timeout=timeout)
    (t,) = rec.requests
    assert t.error is not None and t.error.startswith("SocketTimeoutError")
    (hop,) = t.hops
    assert near(hop.timings.wait, 300), hop.timings
    assert hop.timings.receive is None and hop.marks.starttransfer is None
    assert_sane(t)


async def test_tls_failure_then_a_stalled_second_address_still_adds_up(
    make_session: Callable[..., aiohttp.ClientSession],
    zone: DNSServer,
    client_ssl_ctx: ssl.SSLContext,
    wrong_host_ssl_ctx: ssl.SSLContext,
) -> None:
    """When c.test's first address fails certificate verification and aiohttp goes on to the
    second, which stalls 200 ms and closes, the hop's phases still add up to its total (the
    second attempt lies inside a phase, not in an unaccounted gap)."""
    async with two_address_peers(
        silent_reader, stall_then_close(0.2), first_tls=wrong_host_ssl_ctx
    ) as port:
        zone.add("c.test", "127.0.0.1", "127.0.0.2")
        async with make_session(ssl=client_ssl_ctx) as session, aiotrace.Recorder() as rec:
            with pytest.raises(aiohttp.ClientConnectorError):
                await fetch(session, f"https://c.test:{port}/")
    (t,) = rec.requests
    assert t.error is not None
    (hop,) = t.hops
    assert hop.dns_addrs == ("127.0.0.1", "127.0.0.2")
    assert hop.timings.total >= 190, hop.timings  # the second address's 200 ms stall
    assert_sane(t)


async def test_tls_failure_then_a_slow_handshake_on_the_second_address_is_tls_time(
    make_session: Callable[..., aiohttp.ClientSession],
    zone: DNSServer,
    raw_peer: RawPeer,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
    wrong_host_ssl_ctx: ssl.SSLContext,
) -> None:
    """c.test's first address fails certificate verification and the second completes a
    handshake held up 200 ms: that handshake is TLS time (tls and appconnect ~200 ms), not
    ``send`` (connection ready to request written stays under ``FAST``)."""
    backend = await raw_peer(raw_http(body=b"second", keep_alive=False), tls=server_ssl_ctx)
    async with two_address_peers(
        silent_reader, delayed_pipe(0.2, backend.port), first_tls=wrong_host_ssl_ctx
    ) as port:
        zone.add("c.test", "127.0.0.1", "127.0.0.2")
        async with make_session(ssl=client_ssl_ctx) as session, aiotrace.Recorder() as rec:
            assert await fetch(session, f"https://c.test:{port}/") == (200, b"second")
    (t,) = rec.requests
    (hop,) = t.hops
    assert hop.connection is not None and hop.connection.remote_addr == f"127.0.0.2:{port}"
    assert hop.connection.tls is not None
    assert_sane(t)
    tm = hop.timings
    assert tm.send is not None and tm.send < FAST, tm
    assert near(tm.tls, 200), tm
    assert near(hop.marks.appconnect, 200), hop.marks


async def test_body_reset_mid_body_marks_the_request_failed(
    session: aiohttp.ClientSession, raw_peer: RawPeer
) -> None:
    """A response whose body is cut by a reset (``resp.read()`` raises) is a failed request:
    the hop and the timeline carry an error, the phases add up, and the host's stats count an
    error rather than a clean 200."""
    peer = await raw_peer(reset_mid_body())
    async with aiotrace.Recorder() as rec:
        with pytest.raises(aiohttp.ClientPayloadError):
            await fetch(session, f"http://127.0.0.1:{peer.port}/")
    (t,) = rec.requests
    assert t.done and t.status == 200
    (hop,) = t.hops
    assert hop.error is not None
    assert hop.timings.receive is not None
    assert_sane(t)
    assert rec.connections[0].close_reason == "error"
    assert t.error is not None
    stats = rec.stats[f"127.0.0.1:{peer.port}"]
    assert sum(stats.errors.values()) == 1, (stats.errors, stats.statuses)


async def test_redirect_to_a_dead_host_records_the_link_and_the_failed_hop(
    session: aiohttp.ClientSession, aiohttp_server: ServerFactory, refused_port: int
) -> None:
    """A redirect to a refused port: two hops, the link to the dead URL, the second hop's
    error equal to the request's, no status, and everything adds up."""
    dead = f"http://127.0.0.1:{refused_port}/"

    async def go(request: web.Request) -> web.Response:
        raise web.HTTPFound(dead)

    app = web.Application()
    app.router.add_get("/", go)
    srv = await aiohttp_server(app)
    async with aiotrace.Recorder() as rec:
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(session, f"http://a.test:{srv.port}/")
    (t,) = rec.requests
    ok, failed = t.hops
    assert (ok.status, ok.error, failed.status) == (302, None, None)
    assert failed.error == t.error and t.error is not None
    assert failed.connection is None and failed.timings.connect is not None
    assert str(t.final_url) == dead and t.status is None
    assert [(str(r.to_url), r.status) for r in t.redirects] == [(dead, 302)]
    assert_sane(t)
    entries = har_entries(rec.to_har())
    assert [e.response.redirectURL for e in entries] == [dead, ""]
    assert [e.status for e in entries] == [302, 0]


async def test_too_many_redirects_is_a_failed_request(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Hitting max_redirects fails the request with TooManyRedirects after max_redirects hops,
    every one a 302, and the phases add up."""
    async with aiotrace.Recorder() as rec:
        with pytest.raises(aiohttp.TooManyRedirects):
            await fetch(
                session, f"http://a.test:{server.port}/redirect/relative/5", max_redirects=2
            )
    (t,) = rec.requests
    assert t.error is not None and t.error.startswith("TooManyRedirects")
    assert t.status is None and t.done
    assert [h.status for h in t.hops] == [302, 302]
    assert len(t.redirects) == 1
    assert_sane(t)


async def test_request_failing_before_any_round_trip(session: aiohttp.ClientSession) -> None:
    """A URL aiohttp rejects before connecting: a done timeline with the error, no hops, zero
    summed timings, and exports that still work."""
    async with aiotrace.Recorder() as rec:
        with pytest.raises(aiohttp.InvalidUrlClientError):
            await fetch(session, "http:///no-host")
    (t,) = rec.requests
    assert t.done and t.hops == [] and t.status is None
    assert t.error is not None and t.error.startswith("InvalidUrlClientError")
    assert t.timings.total == 0.0 and all(getattr(t.timings, p) is None for p in PHASES)
    assert t.final_url is None and t.redirects == [] and t.retries == 0
    assert json.loads(json.dumps(t.to_dict()))["hops"] == []
    assert rec.to_har()["log"]["entries"] == []


# --------------------------------------------------------------------------------------------
# Connections, bounded memory and aggregates
# --------------------------------------------------------------------------------------------


async def test_session_close_is_recorded_on_pooled_connections(
    make_session: Callable[..., aiohttp.ClientSession], server: TestServer
) -> None:
    """Closing the session closes the pooled connection with close_reason "session_closed"."""
    async with make_session() as session, aiotrace.Recorder() as rec:
        await fetch(session, f"http://a.test:{server.port}/")
        (record,) = rec.connections
        assert record.close_reason is None
    for _ in range(50):
        if record.closed_at is not None:
            break
        await asyncio.sleep(0.01)
    assert record.close_reason == "session_closed"
    assert record.closed_at is not None and record.closed_at >= record.opened_at
    d = json.loads(json.dumps(record.to_dict()))
    assert d["close_reason"] == "session_closed" and d["tls"] is None
    assert d["requests"] == [{"request": rec.requests[0].id, "hop": 0, "idle_ms": 0.0}]


async def test_max_requests_keeps_the_newest(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """``Recorder(max_requests=3)`` keeps the 3 newest of 5 timelines and counts 2 dropped; the
    aggregates still count all 5."""
    with pytest.raises(ValueError, match="max_requests"):
        aiotrace.Recorder(max_requests=0)
    async with aiotrace.Recorder(max_requests=3) as rec:
        for i in range(5):
            await fetch(session, f"http://a.test:{server.port}/?i={i}")
    assert [t.url.query["i"] for t in rec.requests] == ["2", "3", "4"]
    assert rec.dropped == 2
    assert rec.stats[f"a.test:{server.port}"].requests == 5
    assert len(rec.to_har()["log"]["entries"]) == 3
    rec.clear()
    assert (rec.requests, rec.connections, rec.stats, rec.dropped) == ([], [], {}, 0)


class _Originals:
    """An observer that keeps each finished RequestState itself (pinned), for comparing with
    what a Recorder that ran before it kept."""

    on_start = None

    def __init__(self) -> None:
        self.states: list[Any] = []

    def on_finish(self, state: Any) -> None:
        state.pinned = True
        self.states.append(state)


async def test_kept_requests_read_exactly_as_they_ran(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """What a Recorder keeps (the usual request frozen into plain values, others whole) reads
    back exactly as the request's own state does: timelines, HAR, connections, aggregates.
    Covers pooled requests given as strings, with params, with a fragment and as URL objects
    (frozen), and a new connection, a redirect and a 404 (kept whole)."""
    rec = aiotrace.Recorder()
    originals = _Originals()
    base = f"http://a.test:{server.port}"
    urls: list[Any] = [
        f"{base}/",  # new connection: whole
        f"{base}/?i=1",
        f"{base}/?q=caf%C3%A9&x=a+b",
        f"{base}/#frag",
        aiohttp.client.URL(f"{base}/?as=url"),
        f"{base}/missing",  # a 404 is a response, not an error: frozen
        f"{base}/redirect/relative/1",  # whole
    ]
    # The Recorder's observer runs first (inner), then the one keeping the originals.
    with (
        aiotrace.with_client_trace(aiotrace.ClientTrace(_observers=(originals,))),
        aiotrace.with_client_trace(rec.trace),
    ):
        for url in urls:
            await fetch(session, url)
        await fetch(session, f"{base}/", params={"p": "1"})
    _assert_kept_as_they_ran(rec, originals, whole=1)  # the redirect; the other seven frozen


async def test_kept_new_tls_connections_and_pool_waits_read_as_they_ran(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    aiohttp_server: ServerFactory,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
) -> None:
    """Requests that each open a TLS connection (DNS, connect and TLS phases, a reuse miss),
    and requests that wait for the pool, are frozen and read back as their states do."""
    srv = await aiohttp_server(make_app(), ssl=server_ssl_ctx)
    rec = aiotrace.Recorder()
    originals = _Originals()
    url = f"https://a.test:{srv.port}/slow?s=0.01"
    for connector in (
        aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx, force_close=True),
        aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx, limit=1),
    ):
        async with aiotrace.traced_session(connector=connector) as session:
            with (
                aiotrace.with_client_trace(aiotrace.ClientTrace(_observers=(originals,))),
                aiotrace.with_client_trace(rec.trace),
            ):
                await asyncio.gather(*(fetch(session, url) for _ in range(3)))
    timelines = rec.requests
    assert sum(h.timings.tls is not None for t in timelines for h in t.hops) == 4
    assert sum(h.timings.blocked is not None for t in timelines for h in t.hops) == 2
    _assert_kept_as_they_ran(rec, originals, whole=0)


def _kept_whole(kept: aiotrace._record.kept.KeptRequests) -> int:
    """How many rows hold a state kept whole (a frozen row holds None or a tuple there)."""
    return sum(
        r is not None and not isinstance(r, tuple)
        for r in kept.rows[1 :: aiotrace._record.kept.ROW]
    )


def _assert_kept_as_they_ran(rec: aiotrace.Recorder, originals: _Originals, whole: int) -> None:
    """What ``rec`` kept reads exactly as the states ``originals`` kept, ``whole`` of them kept
    as they were and the rest frozen."""
    kept = rec._kept
    assert kept is not None
    assert _kept_whole(kept) == whole
    theirs = [aiotrace.RequestTimeline(s) for s in sorted(originals.states, key=lambda s: s.id)]
    ours = rec.requests
    assert [t.id for t in ours] == [t.id for t in theirs]
    for mine, orig in zip(ours, theirs, strict=True):
        assert mine.to_dict() == orig.to_dict()
        assert repr(mine) == repr(orig)
        assert (mine.url, mine.final_url) == (orig.url, orig.final_url)
        assert mine.hops == orig.hops and mine.marks == orig.marks
    assert rec.to_har() == aiotrace._record.har.har_log(theirs, rec.redaction)
    served: dict[int, list[dict[str, Any]]] = {}
    for t in theirs:
        for h in t.hops:
            assert h.connection is not None
            served.setdefault(h.connection.id, []).append(
                {"request": t.id, "hop": h.index, "idle_ms": h.idle_time * 1000.0}
            )
    assert {c.id: c.to_dict()["requests"] for c in rec.connections} == served
    agg = aiotrace._record.fold.HostTable()
    for state in originals.states:
        aiotrace._record.recorder._fold(agg, state)
    agg.flush()
    assert {k: v.to_dict() for k, v in rec.stats.items()} == {
        k: v.to_dict() for k, v in agg.items()
    }


async def test_without_yarls_url_parts_requests_are_kept_whole(
    session: aiohttp.ClientSession, server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a yarl whose URL does not keep the five parts kept.py reads (yarl 1.17 keeps one
    ``_val``), every request is kept whole, and reads as the frozen ones do elsewhere."""
    monkeypatch.setattr(aiotrace._record.kept, "_URL_PARTS", False)
    rec = aiotrace.Recorder()
    with aiotrace.with_client_trace(rec.trace):
        for i in range(3):
            await fetch(session, f"http://a.test:{server.port}/?i={i}")
    kept = rec._kept
    assert kept is not None
    assert _kept_whole(kept) == 3
    assert [t.url.query["i"] for t in rec.requests] == ["0", "1", "2"]
    assert [h.reused for t in rec.requests for h in t.hops] == [False, True, True]
    assert rec.stats[f"a.test:{server.port}"].requests == 3


async def test_kept_requests_hold_nothing_the_collector_tracks(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A Recorder keeps the usual finished request as plain values: 300 more pooled requests,
    each to a URL of its own, leave no more than a handful of new GC-tracked objects (kept as
    their states, they were at least 600)."""
    base = f"http://a.test:{server.port}/?i="
    async with aiotrace.Recorder() as rec:
        for i in range(400):  # warm up: connection, caches (yarl keeps recent URLs)
            await fetch(session, f"{base}w{i}")
        gc.collect()
        before = len(gc.get_objects())
        for i in range(300):
            await fetch(session, f"{base}{i}")
        gc.collect()
        after = len(gc.get_objects())
    assert len(rec.requests) == 700
    assert after - before < 50, after - before


async def test_max_requests_ring_cuts_rows_and_keeps_counting(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A ring of 3 over 60 requests holds at most 3 + 16 frozen rows at any time, shows the
    newest 3, counts 57 dropped, and its aggregates count all 60."""
    async with aiotrace.Recorder(max_requests=3) as rec:
        for i in range(60):
            await fetch(session, f"http://a.test:{server.port}/?i={i}")
            assert rec._kept is not None and len(rec._kept.rows) <= 19 * aiotrace._record.kept.ROW
    assert [t.url.query["i"] for t in rec.requests] == ["57", "58", "59"]
    assert rec.dropped == 57
    assert rec.stats[f"a.test:{server.port}"].requests == 60
    assert [c.id for c in rec.connections] == [rec.requests[0].hops[0].connection.id]  # type: ignore[union-attr]


async def test_aggregate_only_keeps_stats_and_no_timelines(
    session: aiohttp.ClientSession, server: TestServer, refused_port: int
) -> None:
    """``aggregate_only=True`` keeps no timelines or connections, only per host:port stats:
    counts, reuse, statuses, errors and phase histograms whose p50 matches a 100 ms wait."""
    async with aiotrace.Recorder(aggregate_only=True) as rec:
        for _ in range(10):
            await fetch(session, f"http://a.test:{server.port}/slow?s=0.1")
        await fetch(session, f"http://a.test:{server.port}/redirect/relative/1")
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(session, f"http://127.0.0.1:{refused_port}/")
    assert (rec.requests, rec.connections, rec.to_har()["log"]["entries"]) == ([], [], [])
    stats = rec.stats
    assert set(stats) == {f"a.test:{server.port}", f"127.0.0.1:{refused_port}"}
    host = stats[f"a.test:{server.port}"]
    assert (host.requests, host.round_trips, host.reused) == (11, 12, 11)
    assert host.statuses == {200: 11} and host.errors == {}
    wait = host.phases["wait"].summary()
    assert wait.count == 12
    assert near(wait.p50, 100) and near(wait.p95, 100)
    assert wait.min <= wait.p50 <= wait.p95 <= wait.p99 <= wait.max
    assert host.phases["dns"].summary().count == 1
    assert host.phases["total"].summary().count == 11
    assert "blocked" not in host.phases and "tls" not in host.phases
    bad = stats[f"127.0.0.1:{refused_port}"]
    assert (bad.requests, bad.round_trips, bad.reused) == (1, 1, 0)
    assert bad.errors == {"ClientConnectorError": 1} and bad.statuses == {}
    assert json.loads(json.dumps(host.to_dict()))["statuses"] == {"200": 11}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=0.002, max_value=3_000_000.0, allow_nan=False),
        min_size=1,
        max_size=2500,
    ),
    st.integers(min_value=0, max_value=2500),
)
def test_histogram_quantiles_within_two_percent(values: list[float], read_at: int) -> None:
    """A LatencyHistogram's quantiles are within 2% of the sample's, whichever way its values
    came in: one at a time (add) or left pending for a batch, as the Recorder's fold does,
    and read part-way (which buckets what is pending)."""
    hist = aiotrace.LatencyHistogram()
    for i, ms in enumerate(values):
        if i == read_at:
            assert hist.count == i
        if i % 3:
            hist.pending.append(ms)
        else:
            hist.add(ms)
    ordered = sorted(values)
    assert (hist.count, hist.min, hist.max) == (len(values), ordered[0], ordered[-1])
    assert math.isclose(hist.total, math.fsum(values))
    for q in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
        exact = ordered[int(q * (len(values) - 1))]
        assert abs(hist.quantile(q) - exact) <= 0.02 * exact, (q, exact)


_EDGES = [0.0, 0.0005, 0.001, 0.00102, 0.001 * 1.02**7, 1.0, 3_600_000.0, 10_000_000.0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(_EDGES),
            st.floats(min_value=0.0, max_value=10_000_000.0, allow_nan=False),
        ),
        min_size=1,
        max_size=600,
    )
)
def test_histogram_batches_bucket_as_add_does(values: list[float]) -> None:
    """A batch flush (sorted, one bisection per bucket) puts every value in the bucket
    ``add`` would: under 1 us, on bucket edges and past the last bucket included."""
    one_by_one = aiotrace.LatencyHistogram()
    batched = aiotrace.LatencyHistogram()
    for ms in values:
        one_by_one.add(ms)
    batched.pending.extend(values)
    batched.flush()
    assert batched._counts == one_by_one._counts
    assert (batched.count, batched.min, batched.max) == (
        one_by_one.count,
        one_by_one.min,
        one_by_one.max,
    )


async def test_aggregates_equal_the_timelines_phases(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """The aggregate fold (with its short path for pooled round trips) counts and sums each
    phase exactly as the timelines report it: new and reused connections, a redirect, a wait."""
    full = aiotrace.Recorder()
    agg = aiotrace.Recorder(aggregate_only=True)
    with aiotrace.with_client_trace(full.trace), aiotrace.with_client_trace(agg.trace):
        for _ in range(3):
            await fetch(session, f"http://a.test:{server.port}/")
        await fetch(session, f"http://a.test:{server.port}/slow?s=0.1")
        await fetch(session, f"http://a.test:{server.port}/redirect/relative/2")
    expected: dict[str, list[float]] = {}
    for timeline in full.requests:
        for hop in timeline.hops:
            for name, ms in dataclasses.asdict(hop.timings).items():
                if ms is not None and name != "total":
                    expected.setdefault(name, []).append(ms)
        expected.setdefault("total", []).append(timeline.timings.total)
    host = agg.stats[f"a.test:{server.port}"]
    assert (host.requests, host.round_trips) == (5, 7)
    assert host.reused == sum(h.reused for t in full.requests for h in t.hops)
    assert set(host.phases) == set(expected)
    for name, values in expected.items():
        hist = host.phases[name]
        assert hist.count == len(values), name
        assert hist.total == pytest.approx(sum(values), abs=1e-6), name
        assert (hist.min, hist.max) == (pytest.approx(min(values)), pytest.approx(max(values)))
    # The short path the OTel export shares: pooled round trips only, the same three phases.
    short = [
        (pooled_phase_values(hop), phase_values(hop)[0])
        for state in full._states()
        for hop in state.hops
    ]
    assert sum(fast is not None for fast, _ in short) == 6  # all but the first round trip
    for fast, values in short:
        if fast is not None:
            assert values[:4] == [None] * 4 and tuple(values[4:]) == fast


async def test_har_started_date_time_is_the_hop_start(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """HAR startedDateTime is an ISO 8601 UTC time equal to the hop's wall-clock start (1 ms)."""
    async with aiotrace.Recorder() as rec:
        await fetch(session, f"http://a.test:{server.port}/")
    entry = rec.to_har()["log"]["entries"][0]
    started = dt.datetime.fromisoformat(entry["startedDateTime"])
    assert started.utcoffset() == dt.timedelta(0)
    assert started.timestamp() == pytest.approx(rec.requests[0].hops[0].started_at, abs=0.0015)
    assert abs(started.timestamp() - time.time()) < 5


def _pooled_hop(get_conn: float, wrote: float, first: float, body: float) -> Any:
    """The stamps of a round trip on a pooled connection that did not wait for it."""
    return SimpleNamespace(
        reused=True,
        t_pool_start=None,
        t_get_conn=get_conn,
        t_wrote_request=wrote,
        t_first_byte=first,
        t_body_done=body,
    )


@given(
    st.lists(
        st.tuples(*[st.floats(min_value=0.0, max_value=10.0, allow_nan=False)] * 4),
        min_size=1,
        max_size=50,
    )
)
def test_pooled_phase_columns_equal_pooled_phase_values(
    stamps: list[tuple[float, float, float, float]],
) -> None:
    """The aggregate fold's batch of pooled round trips gives each one the phases
    ``pooled_phase_values`` gives it alone, stamps out of order (a paused transport) included."""
    hops = [_pooled_hop(*s) for s in stamps]
    columns = aiotrace._record.phases.pooled_phase_columns(
        *(list(c) for c in zip(*stamps, strict=True))
    )
    for i, hop in enumerate(hops):
        one = pooled_phase_values(hop)  # type: ignore[arg-type]
        assert one is not None
        send, wait, receive = one
        assert (columns[0][i], columns[1][i], columns[2][i]) == pytest.approx((send, wait, receive))
        assert columns[3][i] == pytest.approx(send + wait + receive)
        assert min(columns[0][i], columns[1][i], columns[2][i]) >= 0.0


_PHASE_SPANS = (
    ("t_pool_start", "t_pool_done"),
    ("t_dns_start", "t_dns_done"),
    ("t_connect_start", "t_connect_done"),
    ("t_tls_start", "t_tls_done"),
)


def _opened_hop(
    stamps: list[float], taken: tuple[bool, ...], starts: list[float], ends: list[float]
) -> Any:
    """A finished round trip's stamps: get_conn, got_conn, wrote, first byte, body done, and
    the blocked, DNS, connect and TLS phases it ``taken`` (from ``starts`` to ``ends``)."""
    get_conn, got_conn, wrote, first, body = stamps
    hop = SimpleNamespace(
        t_get_conn=get_conn,
        t_got_conn=got_conn,
        t_wrote_request=wrote,
        t_first_byte=first,
        t_body_done=body,
        t_end=body,
    )
    for j, (start, end) in enumerate(_PHASE_SPANS):
        setattr(hop, start, starts[j] if taken[j] else None)
        setattr(hop, end, ends[j] if taken[j] else None)
    return hop


@given(
    st.tuples(*[st.booleans()] * 4),
    st.lists(
        st.lists(st.floats(min_value=1.0, max_value=11.0), min_size=14, max_size=14),
        min_size=1,
        max_size=30,
    ),
)
def test_chained_phase_columns_equal_phase_values(
    taken: tuple[bool, bool, bool, bool], stamps: list[list[float]]
) -> None:
    """The aggregate fold's batch of round trips that took the same phases (any of blocked,
    DNS, connect and TLS, then send, wait and receive) gives each one the phases and total
    ``phase_values`` gives it alone, stamps in any order included."""
    hops = [_opened_hop(row[:5], taken, row[5::2], row[6::2]) for row in stamps]
    phases = [i for i in range(4) if taken[i]]
    stops = [[getattr(h, _PHASE_SPANS[i][1]) for h in hops] for i in phases]
    stops += [[h.t_wrote_request for h in hops], [h.t_first_byte for h in hops]]
    stops.append([h.t_body_done for h in hops])
    columns, totals = aiotrace._record.phases.chained_phase_columns(
        [h.t_get_conn for h in hops], stops
    )
    for k, hop in enumerate(hops):
        values, total, _ = phase_values(hop)  # type: ignore[arg-type]
        expected = [v for v in values if v is not None]
        assert [values[i] is not None for i in range(4)] == list(taken)
        assert [c[k] for c in columns] == expected
        assert totals[k] == total


_POOLED_REQUEST = st.tuples(
    st.sampled_from(["a.test:80", "b.test:443", "c.test:80"]),
    st.sampled_from([200, 503, None]),
    st.lists(st.floats(min_value=1.0, max_value=11.0), min_size=4, max_size=4),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_POOLED_REQUEST, min_size=16, max_size=40).map(
        lambda rs: [(rs[0][0], *r[1:]) for r in rs]  # one host
    ),
    st.lists(_POOLED_REQUEST, max_size=30),
)
def test_pooled_rows_fold_as_pooled_phase_values_says(
    bulk: list[tuple[str, int | None, list[float]]],
    rest: list[tuple[str, int | None, list[float]]],
) -> None:
    """A batch of pooled rows, one host with many rows (folded as columns) mixed with hosts
    with few (row by row), leaves each host the counts and the send, wait, receive and total
    ``pooled_phase_values`` gives its round trips one by one."""
    table = aiotrace._record.fold.HostTable()
    expected: dict[str, list[list[float]]] = {}
    counts: dict[str, list[Any]] = {}
    for label, status, (g, w, f, b) in bulk + rest:
        table.rows += (label, status, g, w, f, b)
        one = pooled_phase_values(_pooled_hop(g, w, f, b))  # type: ignore[arg-type]
        assert one is not None
        mine = expected.setdefault(label, [[], [], [], []])
        for column, v in zip(mine, (*one, sum(one)), strict=True):
            column.append(v)
        c = counts.setdefault(label, [0, {}])
        c[0] += 1
        if status is not None:
            c[1][status] = c[1].get(status, 0) + 1
    table.fold_rows()
    assert not table.rows
    assert set(table) == set(expected)
    send = aiotrace._record.stats.SEND
    for label, stats in table.items():
        assert [stats.requests, stats.statuses] == counts[label]
        assert stats.round_trips == stats.reused == stats.requests
        got = [stats.by_phase[i] for i in (send, send + 1, send + 2, aiotrace._record.stats.TOTAL)]
        for values, want in zip(got, expected[label], strict=True):
            assert sorted(values or []) == pytest.approx(sorted(want))


_OPENED_REQUEST = st.tuples(
    st.sampled_from(["a.test:80", "b.test:443"]),
    st.sampled_from([(True, False, True, False), (False, True, True, True)]),
    st.booleans(),
    st.sampled_from([200, 404, None]),
    st.lists(st.floats(min_value=1.0, max_value=11.0), min_size=12, max_size=12),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_OPENED_REQUEST, min_size=16, max_size=40).map(
        lambda rs: [(rs[0][0], rs[0][1], *r[2:]) for r in rs]  # one host and phase set
    ),
    st.lists(_OPENED_REQUEST, max_size=30),
)
def test_opened_rows_fold_as_phase_values_says(
    bulk: list[tuple[str, tuple[bool, ...], bool, int | None, list[float]]],
    rest: list[tuple[str, tuple[bool, ...], bool, int | None, list[float]]],
) -> None:
    """A batch of opened-connection rows, one host and phase set with many rows (folded as
    columns) mixed with others with few (row by row), leaves each host the counts and phase
    values ``phase_values`` gives its round trips one by one."""
    requests = bulk + rest
    table = aiotrace._record.fold.HostTable()
    expected: dict[str, dict[int, list[float]]] = {}
    counts: dict[str, list[Any]] = {}
    for label, taken, reused, status, stamps in requests:
        hop = _opened_hop(stamps[:5], taken, stamps[5:9], stamps[8:12])
        ends = [getattr(hop, end) for _, end in _PHASE_SPANS]
        table.opened += (label, status, reused, hop.t_get_conn, *ends)
        table.opened += (hop.t_wrote_request, hop.t_first_byte, hop.t_body_done)
        values, total, _ = phase_values(hop)  # type: ignore[arg-type]
        mine = expected.setdefault(label, {})
        for i, v in enumerate([*values, total]):
            if v is not None:
                mine.setdefault(i, []).append(v)
        c = counts.setdefault(label, [0, 0, {}])
        c[0] += 1
        c[1] += reused
        if status is not None:
            c[2][status] = c[2].get(status, 0) + 1
    table.fold_opened()
    assert not table.opened
    assert set(table) == set(expected)
    for label, stats in table.items():
        assert [stats.requests, stats.reused, stats.statuses] == counts[label]
        assert stats.round_trips == stats.requests
        got = {i: sorted(p) for i, p in enumerate(stats.by_phase) if p}
        assert got == {i: sorted(v) for i, v in expected[label].items()}


async def test_aggregate_rows_of_new_connections_fold_as_the_timelines_say(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    aiohttp_server: ServerFactory,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
    server: TestServer,
) -> None:
    """Requests that open a connection (over TLS or not, by name or by address) or wait for
    the pool reach the aggregates as rows, several hosts and sets of phases in one batch:
    each host gets the requests, statuses, reuse and phases its timelines report."""
    tls_srv = await aiohttp_server(make_app(), ssl=server_ssl_ctx)
    full = aiotrace.Recorder()
    agg = aiotrace.Recorder(aggregate_only=True)
    runs = (
        ({"ssl": client_ssl_ctx, "force_close": True}, f"https://a.test:{tls_srv.port}/"),
        ({"ssl": client_ssl_ctx, "limit": 1}, f"https://a.test:{tls_srv.port}/slow?s=0.01"),
        ({"force_close": True}, f"http://b.test:{server.port}/"),
        ({"force_close": True}, f"http://127.0.0.1:{server.port}/missing"),
    )
    for options, url in runs:
        connector = aiotrace.TracingConnector(resolver=dns_resolver, **options)  # type: ignore[arg-type]
        async with aiotrace.traced_session(connector=connector) as session:
            with aiotrace.with_client_trace(full.trace), aiotrace.with_client_trace(agg.trace):
                await asyncio.gather(*(fetch(session, url) for _ in range(3)))
    opened = agg._stats.opened
    R = aiotrace._record.fold.OPENED_ROW
    assert len(opened) == 12 * R, "every request was left as a row"
    shapes = {tuple(opened[i + 4 + j] is None for j in range(4)) for i in range(0, len(opened), R)}
    assert len(shapes) == 4  # TLS by name, pool waits, plain by name, plain by address
    stats = agg.stats
    mine: dict[str, list[aiotrace.RequestTimeline]] = {}
    for t in full.requests:
        mine.setdefault(f"{t.url.host}:{t.url.port}", []).append(t)
    assert set(stats) == set(mine)
    for key, host in stats.items():
        timelines = mine[key]
        hops = [t.hops[0] for t in timelines]
        assert host.requests == host.round_trips == len(timelines)
        assert host.reused == sum(h.reused for h in hops)
        statuses: dict[int, int] = {}
        for t in timelines:
            assert t.status is not None
            statuses[t.status] = statuses.get(t.status, 0) + 1
        assert host.statuses == statuses
        for name in (*aiotrace._record.phases.PHASES, "total"):
            values = [getattr(h.timings, name) for h in hops]
            values = [v for v in values if v is not None]
            hist = host.phases.get(name)
            assert (hist.count if hist else 0) == len(values), (key, name)
            if values:
                assert hist is not None
                assert hist.total == pytest.approx(sum(values), abs=1e-6), (key, name)


async def test_aggregate_batches_split_by_host(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """Pooled requests to two hosts, interleaved, land in one batch of rows: each host gets its
    own requests, statuses and phases, as the full Recorder's timelines report them."""
    full = aiotrace.Recorder()
    agg = aiotrace.Recorder(aggregate_only=True)
    with aiotrace.with_client_trace(full.trace), aiotrace.with_client_trace(agg.trace):
        for i in range(6):
            host = "a.test" if i % 3 else "b.test"
            path = "/missing" if i == 4 else "/"
            async with session.get(f"http://{host}:{server.port}{path}") as resp:
                await resp.read()
    assert agg._stats.rows, "the pooled requests were left as rows, not folded one by one"
    stats = agg.stats
    assert set(stats) == {f"a.test:{server.port}", f"b.test:{server.port}"}
    for key, host in stats.items():
        mine = [t for t in full.requests if f"{t.url.host}:{t.url.port}" == key]
        assert host.requests == host.round_trips == len(mine) == (4 if key.startswith("a") else 2)
        assert host.reused == len(mine) - 1  # the first to each host opened the connection
        statuses: dict[int, int] = {}
        for t in mine:
            assert t.status is not None
            statuses[t.status] = statuses.get(t.status, 0) + 1
        assert host.statuses == statuses
        assert host.phases["total"].count == len(mine)
        assert host.phases["total"].total == pytest.approx(
            sum(t.timings.total for t in mine), abs=1e-6
        )
        assert host.phases["wait"].total == pytest.approx(
            sum(h.timings.wait or 0.0 for t in mine for h in t.hops), abs=1e-6
        )


def _reference_phase_values(h: Any) -> tuple[list[float | None], float, tuple[float, ...]]:
    """The phase rules of aiotrace/_record/phases.py written plainly: the oracle for the fast
    ``phase_values``."""
    t0 = h.t_get_conn
    end = h.t_body_done or h.t_end
    if end is None:
        stamps = (h.t_pool_done, h.t_dns_done, h.t_connect_done, h.t_tls_done, h.t_got_conn)
        end = max(t for t in (t0, *stamps, h.t_wrote_request, h.t_first_byte) if t is not None)
    cut = h.t_end if h.t_end is not None else end
    spans = (
        (h.t_pool_start, h.t_pool_done),
        (h.t_dns_start, h.t_dns_done),
        (h.t_connect_start, h.t_connect_done),
        (h.t_tls_start, h.t_tls_done),
        (h.t_got_conn, h.t_wrote_request),
        (h.t_wrote_request, h.t_first_byte),
        (h.t_first_byte, h.t_body_done),
    )
    values: list[float | None] = [None] * 7
    at, marks, last = t0, [t0, t0, t0], -1
    for i, (started, ended) in enumerate(spans):
        if started is not None:
            stop = ended if ended is not None else cut
            values[i] = max((stop - at) * 1000.0, 0.0)
            at, last = max(at, stop), i
        if 1 <= i <= 3:
            marks[i - 1] = at
    if end > at and last >= 0:
        values[last] = (values[last] or 0.0) + (end - at) * 1000.0
    return values, max((max(end, at) - t0) * 1000.0, 0.0), tuple(marks)


_STAMPS = [
    "t_pool_start",
    "t_pool_done",
    "t_dns_start",
    "t_dns_done",
    "t_connect_start",
    "t_connect_done",
    "t_tls_start",
    "t_tls_done",
    "t_got_conn",
    "t_wrote_request",
    "t_first_byte",
    "t_body_done",
    "t_end",
]


@given(st.lists(st.none() | st.floats(min_value=0.0, max_value=5.0), min_size=13, max_size=13))
def test_phase_values_keep_the_phase_rules(stamps: list[float | None]) -> None:
    """``phase_values`` (written for speed) gives what the module's rules, written plainly, give
    for any stamps: missing, out of order or cut short."""
    hop = SimpleNamespace(t_get_conn=1.0, **dict(zip(_STAMPS, stamps, strict=True)))
    values, total, marks = phase_values(hop)  # type: ignore[arg-type]
    ref_values, ref_total, ref_marks = _reference_phase_values(hop)
    assert values == pytest.approx(ref_values)
    assert total == pytest.approx(ref_total)
    assert marks == pytest.approx(ref_marks)
