"""``aiotrace.Stats``: per-host aggregates with a stated quantile error, mergeable, and read
back from JSON without loss; reuse, new connections by why and the pool-wait share.

Merging is checked against a Recorder that saw every request itself: counts and histogram
buckets must be equal, sums of milliseconds equal up to float rounding.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.resolver import AsyncResolver
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from peers import DNSServer

import aiotrace

ServerFactory = Callable[..., Awaitable[TestServer]]
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def hello(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "0")))
    return web.Response(text="hello")


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query["to"])


@pytest.fixture
async def server(aiohttp_server: ServerFactory) -> TestServer:
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/redirect", redirect)
    return await aiohttp_server(app)


@pytest.fixture
def make_session(
    zone: DNSServer, dns_resolver: AsyncResolver
) -> Callable[..., aiohttp.ClientSession]:
    """``make_session(**connector_kwargs)``: a traced session on the test DNS."""

    def make(**connector_kw: Any) -> aiohttp.ClientSession:
        connector = aiotrace.TracingConnector(resolver=dns_resolver, **connector_kw)
        return aiotrace.traced_session(connector=connector)

    return make


@pytest.fixture
async def session(
    make_session: Callable[..., aiohttp.ClientSession],
) -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as s:
        yield s


async def fetch(session: aiohttp.ClientSession, url: str) -> int | None:
    """GET ``url`` and read the body; ``None`` when the request fails."""
    try:
        async with session.get(url, timeout=TIMEOUT) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError:
        return None


def exact_part(stats: aiotrace.Stats) -> dict[str, Any]:
    """``stats.to_dict()`` without what float rounding may change (sums, means, shares)."""
    d = stats.to_dict()
    for host in d["hosts"].values():
        host.pop("pool_wait_share")
        host.pop("stall_ms")
        for phase in host["phases"].values():
            phase.pop("sum")
            phase.pop("mean")
    return d


def assert_same(mine: aiotrace.Stats, theirs: aiotrace.Stats) -> None:
    """Equal counts and buckets; sums equal up to float rounding."""
    assert exact_part(mine) == exact_part(theirs)
    for label, host in mine.items():
        other = theirs[label]
        for name, hist in host.phases.items():
            assert hist.total == pytest.approx(other.phases[name].total, rel=1e-9, abs=1e-9)
        assert host.pool_wait_share == pytest.approx(other.pool_wait_share, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Histograms: the stated error, and merging
# --------------------------------------------------------------------------------------------


_LATENCIES = st.lists(
    st.floats(min_value=0.001, max_value=3_600_000.0, allow_nan=False), min_size=1, max_size=2000
)


@settings(max_examples=80, deadline=None)
@given(_LATENCIES)
def test_quantiles_are_within_the_stated_relative_error(values: list[float]) -> None:
    """Every quantile a histogram reads (and its summary's p50/p90/p95/p99) is within
    ``Stats.relative_error`` (1%) of the exact quantile of the values, from 1 us to an hour."""
    assert aiotrace.Stats.relative_error == 0.01
    hist = aiotrace.LatencyHistogram()
    for ms in values:
        hist.add(ms)
    ordered = sorted(values)
    for q in (0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        exact = ordered[int(q * (len(values) - 1))]
        assert abs(hist.quantile(q) - exact) <= aiotrace.Stats.relative_error * exact, (q, exact)
    summary = hist.summary()
    assert (summary.p50, summary.p90, summary.p95, summary.p99) == tuple(
        hist.quantile(q) for q in (0.5, 0.9, 0.95, 0.99)
    )


@settings(max_examples=80, deadline=None)
@given(_LATENCIES, _LATENCIES, st.booleans())
def test_merging_histograms_equals_feeding_both(
    a: list[float], b: list[float], batched: bool
) -> None:
    """Merging a histogram fed ``a`` with one fed ``b`` gives the buckets, count, min, max and
    quantiles of one fed both (the sum up to rounding), whether values came one by one or in
    batches; and a JSON round trip of the merged one loses nothing."""
    one, two, both = (aiotrace.LatencyHistogram() for _ in range(3))
    for hist, values in ((one, a), (two, b), (both, a + b)):
        if batched:
            hist.pending.extend(values)
        else:
            for ms in values:
                hist.add(ms)
    one.merge(two)
    both.flush()  # private, test-only: _counts holds bucketed values only
    assert one._counts == both._counts
    assert (one.count, one.min, one.max) == (both.count, both.min, both.max)
    assert math.isclose(one.total, both.total, rel_tol=1e-12)
    for q in (0.5, 0.9, 0.99):
        assert one.quantile(q) == both.quantile(q)
    back = aiotrace.LatencyHistogram.from_dict(json.loads(json.dumps(one.to_dict(buckets=True))))
    assert back == one


# --------------------------------------------------------------------------------------------
# Stats from Recorders
# --------------------------------------------------------------------------------------------


async def test_merged_stats_equal_one_recorder_that_saw_everything(
    make_session: Callable[..., aiohttp.ClientSession],
    session: aiohttp.ClientSession,
    server: TestServer,
    refused_port: int,
) -> None:
    """Requests split between two aggregate-only Recorders (pooled, new connections, a pool
    wait, a redirect across hosts, a 404, a refused connection), merged, equal the Stats of a
    Recorder that saw them all; so do the Stats read back from each one's JSON."""
    every = aiotrace.Recorder(aggregate_only=True)
    halves = [aiotrace.Recorder(aggregate_only=True) for _ in range(2)]
    a, b = f"http://a.test:{server.port}", f"http://b.test:{server.port}"
    work: list[Callable[[], Awaitable[Any]]] = [
        lambda: fetch(session, f"{a}/"),
        lambda: fetch(session, f"{a}/?s=0.01"),
        lambda: fetch(session, f"{b}/"),
        lambda: fetch(session, f"{a}/missing"),
        lambda: fetch(session, f"{a}/redirect?to={b}/"),
        lambda: fetch(session, f"http://127.0.0.1:{refused_port}/"),
    ]
    async with make_session(limit=1) as narrow, make_session(force_close=True) as fresh:
        work.append(lambda: asyncio.gather(*(fetch(narrow, f"{a}/?s=0.02") for _ in range(3))))
        work.append(lambda: asyncio.gather(*(fetch(fresh, f"{b}/") for _ in range(2))))
        with aiotrace.with_client_trace(every.trace):
            for i, run in enumerate(work * 2):
                with aiotrace.with_client_trace(halves[i % 2].trace):
                    await run()
    one, two = (h.stats for h in halves)
    merged = aiotrace.Stats().merge(one).merge(two)
    assert_same(merged, every.stats)
    assert merged["127.0.0.1:" + str(refused_port)].errors == {"ClientConnectorError": 2}
    assert merged[f"a.test:{server.port}"].statuses == {200: 12, 404: 2}
    assert merged[f"b.test:{server.port}"].reuse_miss.get("keepalive_disabled") == 4
    # Through JSON, as from other processes.
    shipped = [json.loads(json.dumps(s.to_dict())) for s in (one, two)]
    joined = aiotrace.Stats()
    for d in shipped:
        joined.merge(aiotrace.Stats.from_dict(d))
    assert_same(joined, every.stats)
    assert one.to_dict() == halves[0].stats.to_dict(), "reading stats left them as they were"


async def test_stats_round_trip_through_json_and_copies_are_separate(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """``Stats.from_dict(json.loads(json.dumps(s.to_dict())))`` equals ``s``; ``rec.stats``
    and ``s.copy()`` are snapshots: merging into them changes neither the Recorder's count
    nor the original."""
    async with aiotrace.Recorder(aggregate_only=True) as rec:
        for s in (0, 0.01, 0.02):
            await fetch(session, f"http://a.test:{server.port}/?s={s}")
    stats = rec.stats
    back = aiotrace.Stats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert back == stats and back.to_dict() == stats.to_dict()
    assert isinstance(back, aiotrace.Stats) and back is not stats
    twice = stats.copy().merge(stats)
    label = f"a.test:{server.port}"
    assert twice[label].requests == 6 and stats[label].requests == 3
    stats.merge(back)
    assert rec.stats[label].requests == 3 and rec.stats[label].phases["total"].count == 3
    assert repr(rec.stats) == "<Stats hosts=1 requests=3>"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other/1"), "format"),
        (lambda d: d["histogram"].update(growth=1.05), "histogram buckets"),
        (lambda d: d.pop("hosts"), "missing 'hosts'"),
        (lambda d: d["hosts"]["h:1"]["phases"]["total"].update(count=7), "count says 7"),
        (lambda d: d["hosts"]["h:1"]["phases"]["total"].update(buckets=[[-1, 1]]), "bucket"),
        (lambda d: d["hosts"]["h:1"].update(requests=-1), "not a count"),
        (lambda d: d["hosts"]["h:1"]["phases"].update(nap={}), "unknown phase 'nap'"),
        (lambda d: d["hosts"]["h:1"].pop("round_trips"), "host 'h:1': missing 'round_trips'"),
    ],
)
def test_from_dict_refuses_what_it_cannot_read(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    """A document that is not a Stats document, or one written with other histogram buckets,
    is refused with a one-line ValueError saying what is wrong."""
    stats = aiotrace.Stats()
    host = stats["h:1"] = aiotrace.HostStats()
    host.requests = host.round_trips = 1
    host.histogram("total").add(12.5)
    d = json.loads(json.dumps(stats.to_dict()))
    assert aiotrace.Stats.from_dict(d) == stats
    change(d)
    with pytest.raises(ValueError, match=message) as info:
        aiotrace.Stats.from_dict(d)
    assert "\n" not in str(info.value)


async def test_reuse_rate_and_new_connections_by_why(
    make_session: Callable[..., aiohttp.ClientSession], server: TestServer
) -> None:
    """A keep-alive session opens one connection (``first``) and reuses it; one with
    ``force_close`` opens one per request (``keepalive_disabled``). Every Recorder mode
    counts the same."""
    recs = [
        aiotrace.Recorder(),
        aiotrace.Recorder(max_requests=2),
        aiotrace.Recorder(aggregate_only=True),
    ]
    with (
        aiotrace.with_client_trace(recs[0].trace),
        aiotrace.with_client_trace(recs[1].trace),
        aiotrace.with_client_trace(recs[2].trace),
    ):
        async with make_session() as keep:
            for _ in range(4):
                await fetch(keep, f"http://a.test:{server.port}/")
        async with make_session(force_close=True) as fresh:
            for _ in range(3):
                await fetch(fresh, f"http://b.test:{server.port}/")
    for rec in recs:
        a = rec.stats[f"a.test:{server.port}"]
        b = rec.stats[f"b.test:{server.port}"]
        assert (a.round_trips, a.reused, a.reuse_miss, a.new_connections) == (4, 3, {"first": 1}, 1)
        assert a.reuse_rate == 0.75 and b.reuse_rate == 0.0
        assert (b.reuse_miss, b.new_connections) == ({"keepalive_disabled": 3}, 3)
        d = a.to_dict()
        assert (d["reuse_rate"], d["new_connections"], d["reuse_miss"]) == (0.75, 1, {"first": 1})
    assert_same(recs[0].stats, recs[2].stats)
    assert_same(recs[1].stats, recs[2].stats)


async def test_pool_wait_share(
    make_session: Callable[..., aiohttp.ClientSession], server: TestServer
) -> None:
    """Three 100 ms requests at once through a pool of one: the second waits ~100 ms for the
    pool and the third ~200 ms, so about half of the round trips' 600 ms is pool wait."""
    async with (
        aiotrace.Recorder(aggregate_only=True) as rec,
        make_session(limit=1) as narrow,
    ):
        await asyncio.gather(*(fetch(narrow, f"http://a.test:{server.port}/?s=0.1") for _ in "abc"))
    host = rec.stats[f"a.test:{server.port}"]
    blocked = host.phases["blocked"]
    assert blocked.count >= 2
    spent = sum(h.total for name, h in host.phases.items() if name != "total")
    assert host.pool_wait_share == pytest.approx(blocked.total / spent)
    assert 0.35 <= host.pool_wait_share <= 0.65, host.pool_wait_share
    assert host.to_dict()["pool_wait_share"] == host.pool_wait_share


async def test_overall_adds_up_the_hosts(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """``Stats.overall()`` is every host merged: requests, round trips and each phase's count."""
    async with aiotrace.Recorder(aggregate_only=True) as rec:
        for host in ("a.test", "b.test", "a.test"):
            await fetch(session, f"http://{host}:{server.port}/")
    stats = rec.stats
    overall = stats.overall()
    assert overall.requests == 3 == sum(h.requests for h in stats.values())
    assert overall.round_trips == 3 and overall.reused == 1
    assert overall.reuse_miss == {"first": 2}
    assert overall.phases["total"].count == 3
    wait = aiotrace.LatencyHistogram()
    for host_stats in stats.values():
        wait.merge(host_stats.phases["wait"])
    assert overall.phases["wait"] == wait and wait.count == 3


async def test_sampled_stats_round_trip_and_merge(
    session: aiohttp.ClientSession, server: TestServer
) -> None:
    """A sampling Recorder's Stats (``sampled`` of ``requests`` behind the phases, and every
    request's ``response`` histogram) survive JSON; merged with itself, ``sampled`` and
    ``requests`` double, and merged with unsampled stats ``sampled`` counts the other
    side's requests whole."""
    url = f"http://a.test:{server.port}/"
    async with aiotrace.Recorder(aggregate_only=True, sample=0.5, sample_seed=1) as rec:
        for _ in range(20):
            await fetch(session, url)
    stats = rec.stats
    host = stats[f"a.test:{server.port}"]
    assert host.requests == 20 and host.sampled is not None and 0 < host.sampled < 20
    assert host.phases["response"].count == 20
    back = aiotrace.Stats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert back == stats and back[f"a.test:{server.port}"].sampled == host.sampled
    twice = stats.copy().merge(stats)[f"a.test:{server.port}"]
    assert (twice.requests, twice.sampled) == (40, 2 * host.sampled)
    async with aiotrace.Recorder(aggregate_only=True) as whole:
        for _ in range(3):
            await fetch(session, url)
    mixed = stats.copy().merge(whole.stats)[f"a.test:{server.port}"]
    assert (mixed.requests, mixed.sampled) == (23, host.sampled + 3)
