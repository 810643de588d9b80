"""Load: 10,000 traced requests, 500 at a time, over 20 host names, with faults mixed in.

All traffic stays on 127.0.0.1: one aiohttp server (``/`` answers, ``/slow`` answers after
5 s) and one raw peer that resets mid-headers, both in a bounded child process (so they run on
the other core and stay out of the client's tracemalloc), and one refused port. The connector keeps aiohttp's
default pool of 100 connections, so of the 500 requests in flight most wait for the pool
(``blocked``). A seeded ``random.Random`` decides each request's fate, so every run sends the
same mix:

* ``ok``      (~88%) ``GET /`` -> 200 "hello" (a fresh connection reset by the kernel while
  connections pile up is retried by aiohttp: then the first round trip failed, the second won);
* ``refused`` (~4%)  a port that refuses -> ``ClientConnectorError``;
* ``reset``   (~4%)  the raw peer resets mid-headers -> ``ClientOSError`` (after aiohttp's own
  retry, so two round trips);
* ``timeout`` (~4%)  ``GET /slow`` with ``sock_read=0.1`` -> ``SocketTimeoutError``.

Both tests are bounded in count (``N``) and in time (``asyncio.timeout``) and run on both
loops. Private read, test-only: ``TracingConnector._acquired`` (connections handed out).
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.resolver import AsyncResolver
from peers import DNSServer

import aiotrace
from aiotrace._record.fold import BATCH
from aiotrace._trace.request import current_request
from aiotrace.testing import EventLog

pytestmark = [
    pytest.mark.slow,
    # Seen once in CI on asyncio: an attempt socket reported unclosed when garbage collected
    # after a kernel reset under this load. asyncio closes a failed transport's socket in a
    # later callback; whether that races the test's teardown is an open question (issue 4's
    # note). Only this warning is let through, only here; every other check stands.
    pytest.mark.filterwarnings(
        "ignore:unclosed <aiotrace._adapter.sockets._AttemptSocket:ResourceWarning"
    ),
]

N = 10_000
CONCURRENCY = 500
HOSTS = tuple(f"h{i}.test" for i in range(20))
SEED = 20_251_125
SLOW = 5.0  # how long /slow takes to answer (in the child: no client loop stall outlasts it)
READ_TIMEOUT = aiohttp.ClientTimeout(sock_read=0.1)
EXPECTED_ERROR = {
    "ok": None,
    "refused": aiohttp.ClientConnectorError,
    "reset": aiohttp.ClientOSError,
    "timeout": aiohttp.SocketTimeoutError,
}
# wrote_header_field fires once per header; leave it out to keep 10,000 logs small.
HOOKS = [n for n in aiotrace.HOOK_NAMES if n != "wrote_header_field"]


@dataclass(frozen=True)
class Planned:
    """One request of the run: what it asks for and how it must end."""

    index: int
    kind: str
    url: str
    timeout: aiohttp.ClientTimeout | None


@dataclass
class Outcome:
    result: tuple[int, bytes] | None = None
    exc: BaseException | None = None


def plan(n: int, seed: int, http_port: int, reset_port: int, refused_port: int) -> list[Planned]:
    """The same mix of fates on every run (seeded)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        host = HOSTS[rng.randrange(len(HOSTS))]
        roll = rng.random()
        if roll < 0.04:
            kind, url, timeout = "refused", f"http://{host}:{refused_port}/?i={i}", None
        elif roll < 0.08:
            kind, url, timeout = "reset", f"http://{host}:{reset_port}/?i={i}", None
        elif roll < 0.12:
            kind, url, timeout = "timeout", f"http://{host}:{http_port}/slow?i={i}", READ_TIMEOUT
        else:
            kind, url, timeout = "ok", f"http://{host}:{http_port}/?i={i}", None
        out.append(Planned(i, kind, url, timeout))
    return out


async def run_all(
    session: aiohttp.ClientSession,
    planned: list[Planned],
    on_done: Callable[[Planned, Outcome], None],
    traces: dict[int, Any] | None = None,
) -> None:
    """Send ``planned`` with CONCURRENCY workers; hand each outcome to ``on_done``."""
    queue: Iterator[Planned] = iter(planned)

    async def one(p: Planned) -> None:
        kw: dict[str, Any] = {}
        if p.timeout is not None:
            kw["timeout"] = p.timeout
        if traces is not None:
            kw["trace_request_ctx"] = traces[p.index]
        out = Outcome()
        try:
            async with session.get(p.url, **kw) as resp:
                out.result = (resp.status, await resp.read())
        except (TimeoutError, aiohttp.ClientError) as e:
            out.exc = e
        on_done(p, out)

    async def worker() -> None:
        for p in queue:
            await one(p)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


@pytest.fixture
def zone(dns_server: DNSServer) -> DNSServer:
    """h0.test .. h19.test -> 127.0.0.1."""
    for host in HOSTS:
        dns_server.add(host, "127.0.0.1")
    return dns_server


# The servers run in a child process: on the other core, and outside the client's tracemalloc.
# It serves for at most LIFETIME seconds and exits as soon as its stdin closes (the test ends).
SERVER_PROCESS = """
import asyncio, socket, struct, sys
from aiohttp import web

LIFETIME = 150

async def hello(request):
    return web.Response(text="hello")

async def slow(request):
    await asyncio.sleep(float(sys.argv[1]))
    return web.Response(text="late")

async def reset_mid_headers(reader, writer):
    try:
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Le")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    writer.transport.abort()

async def main():
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    http_port = site._server.sockets[0].getsockname()[1]
    reset = await asyncio.start_server(reset_mid_headers, "127.0.0.1", 0, backlog=1024)
    reset_port = reset.sockets[0].getsockname()[1]
    print(http_port, reset_port, flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        await asyncio.wait_for(stdin.read(), LIFETIME)
    except TimeoutError:
        pass
    # No graceful shutdown: it would wait out the pending /slow handlers. Leaving main()
    # closes the sockets and asyncio.run() cancels every handler.

asyncio.run(main())
"""


@dataclass(frozen=True)
class Servers:
    http_port: int
    reset_port: int


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """The load's servers in a child process (aiohttp on ``/`` and ``/slow``, a raw peer that
    resets mid-headers); bounded: it exits when the test ends, or after 150 s."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVER_PROCESS,
        str(SLOW),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            http_port, reset_port = map(int, (await proc.stdout.readline()).split())
        yield Servers(http_port, reset_port)
    finally:
        proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, proc.returncode


def _client_side(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    filename = code.co_filename if code is not None else ""
    return not (filename.endswith("peers.py") or "/aiohttp/web_" in filename)


def check_outcome(p: Planned, out: Outcome) -> None:
    expected = EXPECTED_ERROR[p.kind]
    if expected is None:
        assert out.exc is None and out.result == (200, b"hello"), (p, out)
    else:
        assert type(out.exc) is expected, (p, out)


@pytest.fixture
async def load_resolver(
    zone: DNSServer, make_resolver: Callable[..., AsyncResolver]
) -> AsyncResolver:
    """The zone's resolver with room to answer under load. The DNS server is a thread of this
    process: with 500 requests on the loop it can answer later than c-ares' 250 ms floor (seen
    once in CI: "Timeout while contacting DNS servers" for a planned refusal; with 4 tries,
    about 4 s, still seen with six busy processes beside the test). DNS is not what these tests
    plant faults in, so c-ares gets 6 tries (its timeout doubles each: about 16 s) and answers
    are cached."""
    return make_resolver(tries=6)


async def test_ten_thousand_requests_each_accounted_for_once(
    zone: DNSServer,
    load_resolver: AsyncResolver,
    servers: Servers,
    refused_port: int,
) -> None:
    """10,000 requests, 500 at once, 20 host names, faults mixed in: each request is in the
    Recorder once and in its own EventLog only, with its own id and URL, and ends right."""
    planned = plan(N, SEED, servers.http_port, servers.reset_port, refused_port)
    logs = {p.index: EventLog(HOOKS) for p in planned}
    outcomes: dict[int, Outcome] = {}
    rec = aiotrace.Recorder(max_requests=N)
    before = set(asyncio.all_tasks())
    connector = aiotrace.TracingConnector(resolver=load_resolver, ttl_dns_cache=None)
    started = time.perf_counter()
    async with aiotrace.traced_session(connector=connector, trace=rec) as session:
        async with asyncio.timeout(120):
            await run_all(
                session,
                planned,
                lambda p, out: outcomes.__setitem__(p.index, out),
                {i: log.trace for i, log in logs.items()},
            )
        acquired = len(connector._acquired)
    elapsed = time.perf_counter() - started
    print(f"\n{N} traced requests in {elapsed:.1f} s ({N / elapsed:.0f}/s)", end="")

    kinds = [p.kind for p in planned]
    assert all(kinds.count(k) > 200 for k in EXPECTED_ERROR), {
        k: kinds.count(k) for k in EXPECTED_ERROR
    }
    assert sorted(outcomes) == list(range(N))
    timelines = rec.requests
    assert len(timelines) == N and rec.dropped == 0
    by_id = {tl.id: tl for tl in timelines}
    assert len(by_id) == N
    seen_ids: set[int] = set()
    retried = 0
    for p in planned:
        out = outcomes[p.index]
        check_outcome(p, out)
        log = logs[p.index]
        ids = log.request_ids()
        assert len(ids) == 1, (p, ids)
        rid = ids[0]
        assert rid not in seen_ids, (p, rid)
        seen_ids.add(rid)
        assert all(str(e.request.url) == p.url for _, e in log.events), p
        names = log.names()
        assert names[0] == "request_start" and names[-1] == "request_done", (p, names)
        assert names.count("request_start") == 1 and names.count("request_done") == 1, p
        tl = by_id[rid]
        assert str(tl.url) == p.url and tl.done, (p, tl)
        if out.exc is None:
            assert tl.status == 200 and tl.error is None, (p, tl.error)
            assert names.count("request_end") == 1 and "request_exception" not in names, p
        else:
            assert log.of("request_exception")[0].err is out.exc, p
            assert log.of("request_done")[0].err is out.exc, p
            assert tl.error is not None and tl.error.startswith(type(out.exc).__name__), p
        hops = tl.hops
        if p.kind == "reset":
            assert len(hops) == 2 and tl.retries == 1, (p, len(hops))
        elif len(hops) == 2:  # aiohttp's own retry of a connection reset under the pile-up
            assert p.kind == "ok" and tl.retries == 1 and hops[0].error is not None, f"{p}: " + (
                ", ".join(f"{n}({getattr(e, 'err', '')!r})" for n, e in log.events)
            )
            retried += 1
        else:
            assert len(hops) == 1, (p, len(hops))
    assert seen_ids == set(by_id)
    print(f"; {retried} ok requests retried by aiohttp")
    assert retried < N // 100
    assert acquired == 0 and len(connector._acquired) == 0
    assert current_request.get() is None
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while True:
        left = [t for t in asyncio.all_tasks() - before if t is not me and _client_side(t)]
        if not left or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert left == []
    stats = rec.stats
    assert sum(s.requests for s in stats.values()) == N
    assert sum(sum(s.errors.values()) for s in stats.values()) == sum(
        1 for o in outcomes.values() if o.exc is not None
    )


# Aggregate-only memory, between 2,000 and 10,000 requests. Each block of 2,000 requests runs
# in its own session, closed before measuring, so aiohttp's pool (a few KB per live connection,
# client and server side) is not in the numbers: what persists from block to block is the
# Recorder and whatever else outlives a request. Two parts:
#
# * The latency histograms (allocations in aiotrace/_record/histogram.py) grow by design, not by request
#   count: each (host:port, phase) series fills log-spaced 2% buckets it had not used yet as the
#   tails widen, at most ~1,100 per series, ~70 B each (a dict slot and a count). Measured here:
#   ~2,000 new buckets per 2,000 requests at first, fewer each block after. Bound: the bytes
#   they add stay within HISTOGRAM_BYTES_PER_BUCKET per new bucket.
# * Everything else must stay flat: OTHER_GROWTH_BOUND over the 8,000 requests, i.e. 32 B per
#   request, under the smallest object a leak would keep per request (a RequestState with its
#   hop is ~1 KB: 8 MB). Measured: ~140 KiB, aiohttp's and yarl's bounded caches.
OTHER_GROWTH_BOUND = 256 * 1024
HISTOGRAM_BYTES_PER_BUCKET = 160
BLOCK = 2000


@dataclass
class MemoryMark:
    traced: int  # every byte tracemalloc holds
    histograms: int  # bytes of the histograms' buckets (allocated in histogram.py or a Counter)
    buckets: int  # buckets in use across the recorder's histograms


def memory_mark(rec: aiotrace.Recorder) -> MemoryMark:
    # Values the fold left unbucketed are bounded by design (private, test-only: the
    # histograms' pending lists hold fewer than BATCH values across all hosts), then
    # bucketed, so that what is measured is what stays.
    pending = sum(len(h.pending) for st in rec._stats.values() for h in st.phases.values())
    assert pending < BATCH, pending
    rec._stats.flush()
    gc.collect()
    # The buckets' int keys are allocated where they are computed: in histogram.py (or the
    # fold, fold.py, which buckets a batch's columns itself), or by the
    # Counter that LatencyHistogram.flush counts a batch's bucket indexes with.
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(True, "*/aiotrace/_record/histogram.py"),
            tracemalloc.Filter(True, "*/aiotrace/_record/fold.py"),
            tracemalloc.Filter(True, "*/collections/__init__.py"),
        ]
    )
    return MemoryMark(
        traced=tracemalloc.get_traced_memory()[0],
        histograms=sum(stat.size for stat in snapshot.statistics("filename")),
        # private, test-only: LatencyHistogram._counts is the bucket -> count dict
        buckets=sum(len(h._counts) for st in rec.stats.values() for h in st.phases.values()),
    )


async def test_aggregate_only_recorder_memory_stays_flat(
    zone: DNSServer,
    load_resolver: AsyncResolver,
    servers: Servers,
    refused_port: int,
) -> None:
    """Recorder(aggregate_only=True) over 10,000 mixed requests: from 2,000 to 10,000 nothing
    grows but the histograms' buckets, which are bounded by design."""
    planned = plan(N, SEED + 1, servers.http_port, servers.reset_port, refused_port)
    # Outcomes are counted, not kept: a kept result or exception per request is itself growth.
    tally: Counter[tuple[str, bool]] = Counter()

    def count(p: Planned, out: Outcome) -> None:
        expected = EXPECTED_ERROR[p.kind]
        if expected is None:
            tally[p.kind, out.exc is None and out.result == (200, b"hello")] += 1
        else:
            tally[p.kind, type(out.exc) is expected] += 1

    rec = aiotrace.Recorder(aggregate_only=True)
    marks: list[MemoryMark] = []
    tracemalloc.start()
    try:
        started = time.perf_counter()
        async with asyncio.timeout(150):
            for at in range(0, N, BLOCK):
                connector = aiotrace.TracingConnector(resolver=load_resolver, ttl_dns_cache=None)
                async with aiotrace.traced_session(connector=connector, trace=rec) as session:
                    await run_all(session, planned[at : at + BLOCK], count)
                if at in (0, N - BLOCK):
                    await asyncio.sleep(0.2)  # the closed session's sockets finish closing
                    marks.append(memory_mark(rec))
        elapsed = time.perf_counter() - started
    finally:
        tracemalloc.stop()
    first, last = marks
    total = last.traced - first.traced
    histograms = last.histograms - first.histograms
    other = total - histograms
    new_buckets = last.buckets - first.buckets
    print(
        f"\naggregate-only: {N} requests in {elapsed:.1f} s under tracemalloc; traced "
        f"{first.traced // 1024} KiB after {BLOCK}, {last.traced // 1024} KiB after {N}: "
        f"+{total // 1024} KiB = histograms +{histograms // 1024} KiB ({first.buckets} -> "
        f"{last.buckets} buckets) + the rest +{other // 1024} KiB "
        f"({other / (N - BLOCK):.1f} B/request)"
    )
    assert all(ok for _, ok in tally), tally
    assert sum(tally.values()) == N
    assert rec.requests == [] and rec.connections == []
    assert sum(s.requests for s in rec.stats.values()) == N
    assert other < OTHER_GROWTH_BOUND, f"grew {other} B outside the histograms"
    assert histograms <= max(new_buckets, 1) * HISTOGRAM_BYTES_PER_BUCKET, (
        f"histograms grew {histograms} B for {new_buckets} new buckets"
    )
