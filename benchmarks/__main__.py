"""Measure the CPU cost of aiotrace relative to a plain aiohttp client: ``python -m benchmarks``.

Theory of operation
-------------------
Whole-run comparisons (all of plain, then all of traced) swing by +-20% on a small shared machine,
because the machine's speed drifts over seconds. So nothing here compares whole runs:

1. A fixed-response keep-alive server runs in a separate process (``server.py``), so the client's
   CPU clock (``time.process_time()``, every thread of this process) holds only client work.
2. For one scenario, every configuration's session is opened once and warmed up (pool filled,
   TLS done, code paths taken), then kept open.
3. Each round runs one short block of requests per configuration, in a fresh random order, and
   records CPU time and wall time per request for each block.
4. A configuration's figure is the median over rounds of its block divided by the ``plain`` block
   of the same round. Drift moves both blocks of a round alike, so it cancels in the ratio.
   ``plain2``, a second plain session, is the control: it should read 1.00, and how far it strays
   is the noise floor of the run.

A configuration that cannot be built (the library is not ready, an optional package is missing),
or that fails during warm-up, is skipped with a one-line message rather than failing the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fnmatch
import gc
import importlib
import importlib.metadata
import inspect
import itertools
import json
import os
import platform
import random
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

# --------------------------------------------------------------------------------------------
# Scenarios

SMALL = "/small"
BIG = "/big"


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    """One request pattern: what to fetch, over what, how many at once, and on what connection."""

    name: str
    scheme: str  # "http" or "https"
    path: str  # SMALL or BIG
    concurrency: int  # 1: one request after another; N: N concurrent workers
    new_connection: bool  # force_close=True and no DNS cache: DNS, connect (and TLS) per request
    block_requests: int  # requests in one timed block


# Block sizes keep one plain block at roughly 50-150 ms on the 2-core reference machine: long
# enough to swamp timer and scheduler granularity, short enough that drift is shared by the
# blocks of one round. Concurrent blocks are whole multiples of the worker count.
SCENARIOS = [
    #        name                       scheme   path  conc  new-conn  block
    Scenario("seq-small-http",          "http",  SMALL,  1,  False,    200),
    Scenario("seq-big-http",            "http",  BIG,    1,  False,     32),
    Scenario("c64-small-http",          "http",  SMALL, 64,  False,    256),
    Scenario("c64-big-http",            "http",  BIG,   64,  False,     64),
    Scenario("newconn-seq-small-http",  "http",  SMALL,  1,  True,      64),
    Scenario("seq-small-https",         "https", SMALL,  1,  False,    200),
    Scenario("seq-big-https",           "https", BIG,    1,  False,     16),
    Scenario("c64-small-https",         "https", SMALL, 64,  False,    256),
    Scenario("c64-big-https",           "https", BIG,   64,  False,     64),
    Scenario("newconn-seq-small-https", "https", SMALL,  1,  True,      24),
]  # fmt: skip


def _select(scenarios: list[Scenario], patterns: list[str]) -> list[Scenario]:
    """Keep the scenarios named by any pattern: an exact name, or a glob such as ``'*-https'``."""
    if not patterns:
        return scenarios
    return [s for s in scenarios if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


# --------------------------------------------------------------------------------------------
# Configurations: each builds one session for a scenario's connector options

ConnectorOptions = dict[str, Any]
# Makes the context manager (sync or async) that activates a scoped trace; called per block,
# because a context manager such as one from @contextmanager can be entered only once.
TraceScope = Callable[
    [], contextlib.AbstractContextManager[Any] | contextlib.AbstractAsyncContextManager[Any]
]
Built = aiohttp.ClientSession | tuple[aiohttp.ClientSession, TraceScope]
SessionFactory = Callable[[ConnectorOptions], Built | Awaitable[Built]]


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """A named way to build a client session for a scenario's connector options.

    The factory returns a session, or a (session, scope) pair for traces activated by a context
    manager rather than bound to the session: ``scope()`` makes the context manager entered
    around each block, e.g. ``lambda: aiotrace.with_client_trace(trace)``.
    """

    name: str
    factory: SessionFactory


def _noop(event: object) -> None:
    """A hook that does nothing."""


def _drop_spans_provider(ratio: float = 1.0) -> Any:
    """An OTel SDK TracerProvider that creates real spans and drops them when they end.

    Span creation and attribute setting are measured; export is not. ``ratio`` < 1 samples
    with ``ParentBased(TraceIdRatioBased(ratio))``, as a service sampling at its root would.
    """
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    class DropSpans(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            return None

        def on_end(self, span: Any) -> None:
            return None

    sampler = ALWAYS_ON if ratio >= 1.0 else ParentBased(TraceIdRatioBased(ratio))
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    provider.add_span_processor(DropSpans())
    return provider


def _unread_meter_provider() -> Any:
    """An OTel SDK MeterProvider whose reader is never collected: recording is measured,
    exporting is not."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    return MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)


def _aiotrace() -> Any:
    return importlib.import_module("aiotrace")


def _traced(options: ConnectorOptions, **session_kwargs: Any) -> aiohttp.ClientSession:
    lib = _aiotrace()
    session: aiohttp.ClientSession = lib.traced_session(
        connector=lib.TracingConnector(**options), **session_kwargs
    )
    return session


def _plain(options: ConnectorOptions) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(**options))


def _idle(options: ConnectorOptions) -> aiohttp.ClientSession:
    return _traced(options)


def _empty_trace(options: ConnectorOptions) -> aiohttp.ClientSession:
    # No hook, no observer: the traced round trip's own cost, which every trace pays first.
    return _traced(options, trace=_aiotrace().ClientTrace())


def _noop_hooks(options: ConnectorOptions) -> aiohttp.ClientSession:
    lib = _aiotrace()
    # Hook fields are the public ones defaulting to None (not propagate_errors, not private
    # state, not the sampling settings).
    hooks = {
        f.name: _noop
        for f in dataclasses.fields(lib.ClientTrace)
        if f.init
        and not f.name.startswith("_")
        and f.default is None
        and f.name not in ("sample", "sample_seed")
    }
    return _traced(options, trace=lib.ClientTrace(**hooks))


def _recorder(options: ConnectorOptions) -> aiohttp.ClientSession:
    return _traced(options, trace=_aiotrace().Recorder().trace)


def _recorder_aggregate(options: ConnectorOptions) -> aiohttp.ClientSession:
    return _traced(options, trace=_aiotrace().Recorder(aggregate_only=True).trace)


def _recorder_stalls(options: ConnectorOptions) -> Built:
    # The Recorder on the session, as "recorder", plus its loop-stall monitor running for the
    # block (entered per block, so its ticks are timed with the requests they share the loop
    # with): the per-request check at each request's end and the ticks.
    rec = _aiotrace().Recorder(loop_stalls=True)
    return _traced(options, trace=rec.trace), lambda: rec.stall_monitor


def _recorder_sampled(rate: float) -> SessionFactory:
    def build(options: ConnectorOptions) -> aiohttp.ClientSession:
        return _traced(options, trace=_aiotrace().Recorder(sample=rate, sample_seed=0).trace)

    return build


def _need(provider: Any) -> Any:
    if provider is None:  # never fall back to the global no-op provider: that measures nothing
        raise ImportError("opentelemetry-sdk is not installed")
    return provider


def _otel_export(provider: Any) -> SessionFactory:
    def build(options: ConnectorOptions) -> aiohttp.ClientSession:
        provider_ = _need(provider)
        otel = importlib.import_module("aiotrace.otel")
        return _traced(options, trace=otel.OTelTrace(tracer_provider=provider_).trace)

    return build


def _otel_official(provider: Any) -> SessionFactory:
    def build(options: ConnectorOptions) -> aiohttp.ClientSession:
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config
        from opentelemetry.metrics import NoOpMeterProvider

        config = create_trace_config(
            tracer_provider=_need(provider), meter_provider=NoOpMeterProvider()
        )
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(**options), trace_configs=[config]
        )

    return build


def _otel_instrument(
    provider: Any, phases: str = "attributes", meter_provider: Any = None
) -> SessionFactory:
    """A session as ``aiotrace.otel.instrument()`` sets up a plain
    ``ClientSession(connector=TCPConnector(...))``: the same two calls its
    ``ClientSession.__init__`` wrapper makes (``wire`` before, ``attach`` after), here per
    session, so that several settings can run side by side (``instrument()`` is one per
    process)."""

    def build(options: ConnectorOptions) -> aiohttp.ClientSession:
        from opentelemetry.metrics import NoOpMeterProvider

        otel = importlib.import_module("aiotrace.otel")
        instrumented = importlib.import_module("aiotrace._adapter.instrumented")
        trace = otel.OTelTrace(
            tracer_provider=_need(provider),
            meter_provider=meter_provider or NoOpMeterProvider(),
            phases=phases,
        ).trace
        kwargs: dict[str, Any] = {"connector": aiohttp.TCPConnector(**options)}
        wiring = instrumented.wire(kwargs, trace)
        session = aiohttp.ClientSession(**kwargs)
        instrumented.attach(session, wiring, trace)
        return session

    return build


def _configs() -> list[Config]:
    try:
        provider = _drop_spans_provider()
        provider_10 = _drop_spans_provider(0.1)
        provider_0 = _drop_spans_provider(0.0)
        meter_provider = _unread_meter_provider()
    except ImportError:
        # Every OTel config then fails to build and is skipped (_need).
        provider = provider_10 = provider_0 = meter_provider = None
    return [
        Config("plain", _plain),
        Config("plain2", _plain),
        Config("idle", _idle),
        Config("empty-trace", _empty_trace),
        Config("noop-hooks", _noop_hooks),
        Config("recorder", _recorder),
        Config("recorder-aggregate", _recorder_aggregate),
        Config("recorder-stalls", _recorder_stalls),
        Config("recorder-sample-10", _recorder_sampled(0.1)),
        Config("recorder-sample-1", _recorder_sampled(0.01)),
        Config("otel-export", _otel_export(provider)),
        Config("otel-official", _otel_official(provider)),
        Config("otel-instrument", _otel_instrument(provider)),
        Config("otel-instrument-10pct", _otel_instrument(provider_10)),
        Config("otel-instrument-0pct", _otel_instrument(provider_0)),
        Config("otel-instrument-spans", _otel_instrument(provider, phases="spans")),
        Config(
            "otel-instrument-metrics", _otel_instrument(provider, meter_provider=meter_provider)
        ),
    ]


def _one_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # a failed concurrent block: report the first worker's error
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# The fixture server and the client's TLS trust


class Fixture:
    """The server process, its ports, and an SSLContext factory that trusts its certificate."""

    def __init__(self) -> None:
        import trustme

        self._ca = trustme.CA()
        cert = self._ca.issue_cert("localhost", "127.0.0.1")
        self._tmp = tempfile.TemporaryDirectory(prefix="aiotrace-bench-")
        certfile = Path(self._tmp.name, "server.pem")
        keyfile = Path(self._tmp.name, "server.key")
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        for blob in cert.cert_chain_pems[1:]:
            blob.write_to_path(str(certfile), append=True)
        cert.private_key_pem.write_to_path(str(keyfile))
        server = Path(__file__).with_name("server.py")
        self.process = subprocess.Popen(
            [sys.executable, str(server), "--certfile", str(certfile), "--keyfile", str(keyfile)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("benchmark server exited before listening")
        self.ports: dict[str, int] = json.loads(line)

    def ssl_context(self) -> ssl.SSLContext:
        """A fresh client context per session, so no configuration can alter another's."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._ca.configure_trust(ctx)
        return ctx

    def url(self, scenario: Scenario) -> str:
        host = "localhost" if scenario.new_connection else "127.0.0.1"
        return f"{scenario.scheme}://{host}:{self.ports[scenario.scheme]}{scenario.path}"

    def connector_options(self, scenario: Scenario) -> ConnectorOptions:
        options: ConnectorOptions = {}
        if scenario.scheme == "https":
            options["ssl"] = self.ssl_context()
        if scenario.new_connection:
            # A new connection per request, and a real lookup of "localhost" each time. The
            # server listens on 127.0.0.1 only, so ask for IPv4 and skip a refused ::1 attempt.
            options.update(force_close=True, use_dns_cache=False, family=socket.AF_INET)
        return options

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the server stops on end of file
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._tmp.cleanup()


# --------------------------------------------------------------------------------------------
# Requests


async def _fetch(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status}")


async def run_requests(session: aiohttp.ClientSession, url: str, n: int, concurrency: int) -> None:
    """Make ``n`` GETs, one after another or from ``concurrency`` workers sharing the count."""
    if concurrency == 1:
        for _ in range(n):
            await _fetch(session, url)
        return
    tickets = iter(range(n))  # shared: each worker takes the next request until none are left

    async def worker() -> None:
        for _ in tickets:
            await _fetch(session, url)

    # A TaskGroup is asyncio.gather that also cancels the other workers when one fails, so no
    # stray request from a failed block runs into the next block's timing.
    async with asyncio.TaskGroup() as workers:
        for _ in range(concurrency):
            workers.create_task(worker())


@dataclasses.dataclass(slots=True)
class Client:
    """An open session of one configuration, with its optional per-block trace scope."""

    config: str
    session: aiohttp.ClientSession
    scope: TraceScope | None


async def _open(config: Config, options: ConnectorOptions) -> Client:
    built: Any = config.factory(options)
    if inspect.isawaitable(built):
        built = await built
    if isinstance(built, tuple):
        session, scope = built
        return Client(config.name, session, scope)
    return Client(config.name, built, None)


async def run_block(client: Client, url: str, n: int, concurrency: int) -> None:
    """Run one block of requests, inside the client's trace scope if it has one."""
    if client.scope is None:
        await run_requests(client.session, url, n, concurrency)
        return
    scope = client.scope()
    if isinstance(scope, contextlib.AbstractAsyncContextManager):
        async with scope:
            await run_requests(client.session, url, n, concurrency)
    else:
        with scope:
            await run_requests(client.session, url, n, concurrency)


async def timed_block(client: Client, url: str, n: int, concurrency: int) -> tuple[float, float]:
    """Run one block; return (CPU seconds, wall seconds) per request."""
    gc.collect()  # start each block without the previous block's garbage
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await run_block(client, url, n, concurrency)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return cpu / n, wall / n


# --------------------------------------------------------------------------------------------
# One scenario: warm up, then rounds of randomly ordered blocks


@dataclasses.dataclass(slots=True)
class Samples:
    """Per-round CPU and wall seconds per request of one configuration in one scenario."""

    cpu: list[float] = dataclasses.field(default_factory=list)
    wall: list[float] = dataclasses.field(default_factory=list)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_scenario(
    scenario: Scenario,
    configs: list[Config],
    fixture: Fixture,
    rounds: int,
    warmup_blocks: int,
    rng: random.Random,
    skipped: dict[str, str],
) -> dict[str, Samples]:
    """Measure every buildable configuration in one scenario; plain is required."""
    url = fixture.url(scenario)
    n, concurrency = scenario.block_requests, scenario.concurrency
    clients: list[Client] = []
    async with contextlib.AsyncExitStack() as stack:
        for config in configs:
            if config.name in skipped:
                continue
            try:
                client = await _open(config, fixture.connector_options(scenario))
            except Exception as exc:
                skipped[config.name] = f"cannot be built: {_one_line(exc)}"
                _log(f"  skip {config.name}: {skipped[config.name]}")
                continue
            stack.push_async_callback(client.session.close)
            clients.append(client)

        samples = {client.config: Samples() for client in clients}

        def drop(client: Client, stage: str, exc: Exception) -> None:
            """Leave a configuration out of this scenario only; plain's failure ends the run."""
            if client.config == "plain":
                raise exc
            key = f"{client.config} in {scenario.name}"
            skipped[key] = f"failed in {stage}: {_one_line(exc)}"
            _log(f"  skip {key}: {skipped[key]}")
            clients.remove(client)
            del samples[client.config]

        for _ in range(warmup_blocks):
            for client in clients[:]:
                try:
                    await run_block(client, url, n, concurrency)
                except Exception as exc:
                    drop(client, "warm-up", exc)

        for round_ in range(rounds):
            order = clients[:]
            rng.shuffle(order)
            for client in order:
                try:
                    cpu, wall = await timed_block(client, url, n, concurrency)
                except Exception as exc:
                    drop(client, f"round {round_ + 1}", exc)
                    continue
                samples[client.config].cpu.append(cpu)
                samples[client.config].wall.append(wall)
    return samples


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """One configuration's figures in one scenario."""

    cpu_ratio: float  # median over rounds of cpu/plain_cpu in the same round
    cpu_ratio_q1: float
    cpu_ratio_q3: float
    wall_ratio: float
    cpu_us: float  # median CPU microseconds per request
    wall_us: float


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summarize(samples: dict[str, Samples]) -> dict[str, Summary]:
    """Per-round ratios to plain, reduced to medians and quartiles."""
    base = samples["plain"]
    out: dict[str, Summary] = {}
    for name, s in samples.items():
        cpu_ratios = [c / b for c, b in zip(s.cpu, base.cpu, strict=True)]
        wall_ratios = [w / b for w, b in zip(s.wall, base.wall, strict=True)]
        q1, median, q3 = _quartiles(cpu_ratios)
        out[name] = Summary(
            cpu_ratio=median,
            cpu_ratio_q1=q1,
            cpu_ratio_q3=q3,
            wall_ratio=statistics.median(wall_ratios),
            cpu_us=statistics.median(s.cpu) * 1e6,
            wall_us=statistics.median(s.wall) * 1e6,
        )
    return out


# --------------------------------------------------------------------------------------------
# Memory


def _rss_bytes() -> int:
    """Resident set size now, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm", "rb") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _slope(xs: list[float], ys: list[float]) -> float:
    """Theil-Sen slope of ys over xs: the median of the slopes between every pair of points.

    RSS moves in steps (a new allocator arena, a page), and a least-squares line through a
    single late step reads as steady growth; the median of pairwise slopes ignores a lone step
    and still reports a steady leak at its full rate.
    """
    pairs = itertools.combinations(zip(xs, ys, strict=True), 2)
    return statistics.median((y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in pairs)


MEMORY_CONCURRENCY = 64


def rss_tolerance(requests: int) -> float:
    """What "zero" RSS growth allows, in bytes per 1,000 requests, over a ``requests`` window.

    About one byte a request (a leak of even one pointer per request is 8x that), but never
    less than 64 KiB across the whole window: RSS moves in 4 KiB pages and allocator arenas, and
    a short window (``--quick``) would otherwise fail on a handful of pages.
    """
    return max(1024.0, 64 * 1024 / (requests / 1000))


async def bytes_per_timeline(fixture: Fixture, requests: int) -> dict[str, Any]:
    """Retained bytes per RequestTimeline held by ``Recorder(max_requests=...)``.

    After a warm-up on the same session, tracemalloc traces two equal segments of ``requests``
    requests, measured after a full collection at each end. Only the second segment counts: the
    first absorbs one-time growth (free lists, per-connection state, first resizes) that would
    otherwise be charged to the timelines, while the second still pays its share of the recorder's
    own container growth. The recorder is sized for all of it, so it evicts nothing.
    """
    lib = _aiotrace()
    warmup = 200
    url = f"http://127.0.0.1:{fixture.ports['http']}{SMALL}"
    recorder = lib.Recorder(max_requests=warmup + 2 * requests)
    session = lib.traced_session(connector=lib.TracingConnector(), trace=recorder.trace)
    try:
        await run_requests(session, url, warmup, MEMORY_CONCURRENCY)
        gc.collect()
        tracemalloc.start()
        try:
            marks = [tracemalloc.get_traced_memory()[0]]
            for _ in range(2):
                await run_requests(session, url, requests, MEMORY_CONCURRENCY)
                gc.collect()
                marks.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
    finally:
        await session.close()
    return {
        "requests": requests,
        "bytes_per_timeline": (marks[2] - marks[1]) / requests,
        "first_segment_bytes_per_request": (marks[1] - marks[0]) / requests,
    }


RSS_WARMUP_REQUESTS = 20_000  # RSS settled after about 15,000 requests here, plain or traced


async def rss_slope(session: aiohttp.ClientSession, url: str, requests: int) -> dict[str, Any]:
    """RSS growth, in bytes per 1,000 requests, fitted over ``requests`` after a warm-up.

    The warm-up (``RSS_WARMUP_REQUESTS``, or a tenth of ``requests`` if more) takes the one-time
    growth of a fresh process; RSS is then sampled after a full collection every tenth of
    ``requests``, eleven samples in all.
    """
    interval = max(1, requests // 10)
    await run_requests(session, url, max(RSS_WARMUP_REQUESTS, interval), MEMORY_CONCURRENCY)
    done, xs, ys = 0, [], []
    while True:
        gc.collect()
        xs.append(float(done))
        ys.append(float(_rss_bytes()))
        if done >= requests:
            break
        await run_requests(session, url, interval, MEMORY_CONCURRENCY)
        done += interval
    return {
        "requests": done,
        "slope_bytes_per_1k_requests": _slope(xs, ys) * 1000.0,
        "rss_first": int(ys[0]),
        "rss_last": int(ys[-1]),
        "rss_samples": [int(y) for y in ys],
    }


async def run_memory(fixture: Fixture, requests: int) -> dict[str, Any]:
    """Both memory measurements, each skipped with a message if the library is not ready."""
    out: dict[str, Any] = {}
    url = f"http://127.0.0.1:{fixture.ports['http']}{SMALL}"

    # RSS first: the timeline measurement frees megabytes that a leak could then reuse unseen.
    out["rss_recorder-aggregate"] = await _measure_rss(
        "recorder-aggregate", lambda: _recorder_aggregate({}), url, requests
    )
    slope = out["rss_recorder-aggregate"].get("slope_bytes_per_1k_requests")
    if slope is not None and slope > rss_tolerance(requests):
        # Only then is it worth the time to ask whether aiohttp itself grows here.
        out["rss_plain"] = await _measure_rss("plain", lambda: _plain({}), url, requests)

    n_timelines = max(1000, requests // 20)
    _log(f"memory: bytes per retained timeline over 2 x {n_timelines} requests")
    try:
        out["timeline"] = await bytes_per_timeline(fixture, n_timelines)
    except Exception as exc:
        out["timeline"] = {"skipped": _one_line(exc)}
        _log(f"  skip: {_one_line(exc)}")
    return out


async def _measure_rss(
    name: str, build: Callable[[], aiohttp.ClientSession], url: str, requests: int
) -> dict[str, Any]:
    _log(f"memory: RSS slope of {name} over {requests} requests")
    try:
        session = build()
    except Exception as exc:
        _log(f"  skip: {_one_line(exc)}")
        return {"skipped": _one_line(exc)}
    try:
        return await rss_slope(session, url, requests)
    except Exception as exc:
        _log(f"  skip: {_one_line(exc)}")
        return {"skipped": _one_line(exc)}
    finally:
        await session.close()


# --------------------------------------------------------------------------------------------
# Targets


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """One target, what was measured against it, and whether it held."""

    target: str
    measured: str
    status: str  # PASS, FAIL or SKIP


def _worst(results: dict[str, dict[str, Summary]], config: str) -> tuple[float, str] | None:
    cells = [(r[config].cpu_ratio, s) for s, r in results.items() if config in r]
    return max(cells) if cells else None


def judge(results: dict[str, dict[str, Summary]], memory: dict[str, Any]) -> list[Verdict]:
    """Check each target against the worst scenario measured for it."""
    verdicts: list[Verdict] = []
    for config, limit in (
        ("idle", 1.03),
        ("recorder", 1.10),
        ("recorder-aggregate", 1.08),
        ("recorder-sample-10", 1.03),
        ("recorder-sample-1", 1.02),
    ):
        target = f"{config} CPU ratio <= {limit:.2f} in every scenario"
        worst = _worst(results, config)
        if worst is None:
            verdicts.append(Verdict(target, "not measured", "SKIP"))
        else:
            ok = worst[0] <= limit
            verdicts.append(
                Verdict(target, f"worst {worst[0]:.3f} ({worst[1]})", "PASS" if ok else "FAIL")
            )

    for config in ("otel-export", "otel-instrument", "otel-instrument-spans"):
        target = f"{config} overhead <= half of otel-official's, in every scenario"
        pairs = [
            (r[config].cpu_ratio - 1.0, r["otel-official"].cpu_ratio - 1.0, s)
            for s, r in results.items()
            if config in r and "otel-official" in r
        ]
        if not pairs:
            verdicts.append(Verdict(target, "not measured", "SKIP"))
        else:
            # The worst scenario: where its overhead is largest next to official's.
            exp, off, where = max(pairs, key=lambda p: p[0] - 0.5 * p[1])
            ok = exp <= 0.5 * off
            verdicts.append(
                Verdict(target, f"{exp:+.1%} vs {off:+.1%} ({where})", "PASS" if ok else "FAIL")
            )
    target = "otel-instrument-10pct CPU ratio <= 1.05 in every scenario"
    worst = _worst(results, "otel-instrument-10pct")
    if worst is None:
        verdicts.append(Verdict(target, "not measured", "SKIP"))
    else:
        verdicts.append(
            Verdict(
                target, f"worst {worst[0]:.3f} ({worst[1]})", "PASS" if worst[0] <= 1.05 else "FAIL"
            )
        )

    target = "<= 2 KiB per retained RequestTimeline"
    timeline = memory.get("timeline", {})
    if "bytes_per_timeline" in timeline:
        per = timeline["bytes_per_timeline"]
        verdicts.append(Verdict(target, f"{per:,.0f} B", "PASS" if per <= 2048 else "FAIL"))
    else:
        verdicts.append(Verdict(target, "not measured", "SKIP"))

    target = "zero RSS growth, recorder-aggregate"
    rss = memory.get("rss_recorder-aggregate", {})
    if "slope_bytes_per_1k_requests" in rss:
        slope, limit = rss["slope_bytes_per_1k_requests"], rss_tolerance(rss["requests"])
        ok = slope <= limit
        measured = f"{slope:,.0f} B/1k req (tolerance {limit:,.0f})"
        verdicts.append(Verdict(target, measured, "PASS" if ok else "FAIL"))
    else:
        verdicts.append(Verdict(target, "not measured", "SKIP"))
    return verdicts


# --------------------------------------------------------------------------------------------
# Report


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(loop_name: str) -> dict[str, str]:
    """What the numbers were measured on."""
    try:
        usable = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        usable = "?"
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} cores, {usable} usable",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "aiohttp": aiohttp.__version__,
        "uvloop": _version("uvloop"),
        "aiotrace": _version("aiohttp-httptrace"),
        "opentelemetry-sdk": _version("opentelemetry-sdk"),
        "opentelemetry-instrumentation-aiohttp-client": _version(
            "opentelemetry-instrumentation-aiohttp-client"
        ),
        "loop": loop_name,
    }


def _row(cells: list[str], widths: list[int]) -> str:
    first, *rest = cells
    return "  ".join(
        [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
    )


def render(
    machine: dict[str, str],
    run: dict[str, Any],
    scenarios: list[Scenario],
    results: dict[str, dict[str, Summary]],
    memory: dict[str, Any],
    verdicts: list[Verdict],
    skipped: dict[str, str],
) -> str:
    """The plain-text report."""
    m = machine
    lines = [
        "aiotrace benchmark: CPU cost of tracing relative to plain aiohttp",
        "",
        f"machine   {m['platform']}; {m['cpu']}; {m['cores']}",
        f"python    {m['python']}; aiohttp {m['aiohttp']}; uvloop {m['uvloop']}; loop: {m['loop']}",
        f"packages  aiohttp-httptrace {m['aiotrace']}; opentelemetry-sdk {m['opentelemetry-sdk']};"
        f" opentelemetry-instrumentation-aiohttp-client"
        f" {m['opentelemetry-instrumentation-aiohttp-client']}",
        f"run       {run['rounds']} rounds after {run['warmup_blocks']} warm-up block(s) per"
        f" config; seed {run['seed']}; {run['seconds']:.0f} s",
        "",
        "cpu x, wall x: median over rounds of (this config's block / plain's block in the same"
        " round);",
        "q1-q3: quartiles of the per-round cpu ratio; us/req: median per block, absolute",
    ]
    widths = [22, 7, 11, 7, 10, 11]
    lines.append(_row(["config", "cpu x", "q1-q3", "wall x", "cpu us/req", "wall us/req"], widths))
    for scenario in scenarios:
        if scenario.name not in results:
            continue
        mode = "new connection per request" if scenario.new_connection else "keep-alive"
        flow = "sequential" if scenario.concurrency == 1 else f"{scenario.concurrency} concurrent"
        lines.append(
            f"{scenario.name}: {scenario.scheme.upper()} GET {scenario.path}, {flow}, {mode},"
            f" {scenario.block_requests} requests/block"
        )
        for name, s in results[scenario.name].items():
            cells = [
                f"  {name}",
                f"{s.cpu_ratio:.3f}",
                f"{s.cpu_ratio_q1:.2f}-{s.cpu_ratio_q3:.2f}",
                f"{s.wall_ratio:.3f}",
                f"{s.cpu_us:.1f}",
                f"{s.wall_us:.1f}",
            ]
            lines.append(_row(cells, widths))
    for name, reason in skipped.items():
        lines.append(f"skipped {name}: {reason}")

    lines += ["", "memory"]
    timeline = memory.get("timeline", {})
    if "bytes_per_timeline" in timeline:
        lines.append(
            f"  retained per RequestTimeline: {timeline['bytes_per_timeline']:,.0f} B"
            f" (tracemalloc, second of 2 x {timeline['requests']} requests; the first, with"
            f" one-time growth: {timeline['first_segment_bytes_per_request']:,.0f} B)"
        )
    elif timeline:
        lines.append(f"  retained per RequestTimeline: skipped ({timeline['skipped']})")
    for key in ("rss_recorder-aggregate", "rss_plain"):
        rss = memory.get(key)
        if rss is None:
            continue
        name = key.removeprefix("rss_")
        if "slope_bytes_per_1k_requests" in rss:
            lines.append(
                f"  RSS slope, {name}: {rss['slope_bytes_per_1k_requests']:,.0f} B per 1k requests"
                f" ({rss['requests']} requests, RSS {rss['rss_first'] / 2**20:.1f}"
                f" -> {rss['rss_last'] / 2**20:.1f} MiB)"
            )
        else:
            lines.append(f"  RSS slope, {name}: skipped ({rss['skipped']})")
    if not memory:
        lines.append("  not run (--memory-requests 0)")

    lines += ["", "targets"]
    for v in verdicts:
        lines.append(f"  {v.status:4}  {v.target}: {v.measured}")

    control = [(abs(r["plain2"].cpu_ratio - 1.0), s) for s, r in results.items() if "plain2" in r]
    if control:
        off, where = max(control)
        lines += [
            "",
            f"noise floor: plain2 strays {off:.1%} from 1.00 at most ({where});"
            " differences smaller than that are not findings",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="CPU cost of aiotrace relative to plain aiohttp, by randomized block design.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 5 rounds, 1 warm-up, 20,000 memory reqs"
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 20; quick 5)")
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only this scenario, or those matching a glob ('c64-*'); repeatable; see --list",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these configurations (plain is always run); repeatable",
    )
    parser.add_argument("--list", action="store_true", help="list scenarios and configs, exit")
    parser.add_argument(
        "--memory-requests",
        type=int,
        help="requests for the RSS slope (default 100,000; quick 20,000; 0 skips memory)",
    )
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument("--seed", type=int, help="seed for the block order (default: random)")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).with_name("results.json"),
        metavar="PATH",
        help="write results here (default: benchmarks/results.json)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 5 if args.quick else 20
    if args.memory_requests is None:
        args.memory_requests = 20_000 if args.quick else 100_000
    if args.seed is None:
        args.seed = random.randrange(2**32)
    return args


async def _main(args: argparse.Namespace, loop_name: str) -> int:
    scenarios = _select(SCENARIOS, args.scenario)
    if not scenarios:
        _log(f"no scenario matches {args.scenario}; see --list")
        return 2
    configs = _configs()
    unknown = set(args.config) - {c.name for c in configs}
    if unknown:
        _log(f"unknown config(s): {', '.join(sorted(unknown))}; see --list")
        return 2
    configs = [c for c in configs if not args.config or c.name in {"plain", *args.config}]
    rng = random.Random(args.seed)
    skipped: dict[str, str] = {}
    results: dict[str, dict[str, Summary]] = {}
    raw: dict[str, dict[str, Samples]] = {}
    started = time.perf_counter()

    fixture = Fixture()
    try:
        # Memory first, while the heap is small: after the scenarios (1 MiB bodies, thousands of
        # recorded timelines) the process holds freed memory that a leak would reuse unseen.
        memory = await run_memory(fixture, args.memory_requests) if args.memory_requests else {}
        for scenario in scenarios:
            t0 = time.perf_counter()
            _log(f"{scenario.name}: {scenario.block_requests} requests/block, {args.rounds} rounds")
            samples = await run_scenario(
                scenario,
                configs,
                fixture,
                args.rounds,
                1 if args.quick else 2,
                rng,
                skipped,
            )
            raw[scenario.name] = samples
            results[scenario.name] = summarize(samples)
            _log(f"  {time.perf_counter() - t0:.1f} s")
    finally:
        fixture.close()

    verdicts = judge(results, memory)
    machine = machine_info(loop_name)
    run = {
        "rounds": args.rounds,
        "warmup_blocks": 1 if args.quick else 2,
        "seed": args.seed,
        "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "argv": sys.argv[1:],
    }
    print(render(machine, run, scenarios, results, memory, verdicts, skipped))

    document = {
        "machine": machine,
        "run": run,
        "scenarios": {
            s.name: {
                "scenario": dataclasses.asdict(s),
                "configs": {
                    name: {
                        **dataclasses.asdict(summary),
                        "cpu_s_per_request": raw[s.name][name].cpu,
                        "wall_s_per_request": raw[s.name][name].wall,
                    }
                    for name, summary in results[s.name].items()
                },
            }
            for s in scenarios
            if s.name in results
        },
        "skipped": skipped,
        "memory": memory,
        "targets": [dataclasses.asdict(v) for v in verdicts],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    _log(f"wrote {args.json}")
    return 0


def _list() -> None:
    for s in SCENARIOS:
        mode = "new connection per request" if s.new_connection else "keep-alive"
        print(
            f"{s.name:26} {s.scheme:5} {s.path:6} concurrency {s.concurrency:<3} {mode},"
            f" {s.block_requests} requests/block"
        )
    print()
    print("configs:", ", ".join(c.name for c in _configs()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    args = _parse(argv)
    if args.list:
        _list()
        return 0
    if args.uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_main(args, f"uvloop {_version('uvloop')}"))
    return asyncio.run(_main(args, "asyncio"))


if __name__ == "__main__":
    sys.exit(main())
