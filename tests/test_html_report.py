"""The HTML waterfall report, checked in a real browser (Debian's chromium, driven by Playwright).

The page is built from a real traced crawl against loopback peers: aiohttp test servers over
plain HTTP and trustme TLS, names answered by the test DNS server, connections reused and
opened (a small pool makes requests wait for it, a server that closes after each response
makes churn), a redirect to another host, a refused port and a name that does not exist.

Playwright's sync API cannot run inside a running event loop, and while it is open it keeps
its own loop marked as running in the main thread (so blockbuster, which fails blocking calls
made while a loop runs, would fail pytest's own file calls: the module is ``allow_blocking``,
and no async test lives here; ``test_report_document.py`` has those). So the browser tests
are sync tests, and the crawl runs once per module in its own ``asyncio.run``, before the
browser starts, with the peers the conftest's fixtures wrap (``peers.DNSServer``,
``aiohttp.test_utils.TestServer``, trustme).

Chromium comes from Debian (``apt-get install chromium``; ``.ci/run`` installs it): these tests
skip, saying so, when ``/usr/bin/chromium`` is absent. Playwright's own browser download is
never used. Set ``AIOTRACE_SCREENSHOT_TO=docs/report.png`` to also write the README's picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.resolver import AsyncResolver
from aiohttp.test_utils import TestServer
from peers import (
    DNSServer,
    client_ssl_context,
    closed_port,
    resolver_kwargs,
    server_ssl_context,
)
from yarl import URL

import aiotrace
from aiotrace._report.html import document_from_recorder, render_html, write_html

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT = aiohttp.ClientTimeout(total=10)
PHASES = ("blocked", "dns", "connect", "tls", "send", "wait", "receive")
VIEWPORT = {"width": 1280, "height": 900}

pytestmark = pytest.mark.allow_blocking  # see the module docstring


# --------------------------------------------------------------------------------------------
# The crawl
# --------------------------------------------------------------------------------------------


def make_app() -> web.Application:
    """Pages, a slow page, statuses, a redirect to another host, a server that closes."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"page {request.match_info['n']}")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.15)
        return web.Response(text="slow")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def closing(request: web.Request) -> web.Response:
        return web.Response(text="bye", headers={"Connection": "close"})

    app = web.Application()
    app.router.add_get("/page/{n}", page)
    app.router.add_get("/slow", slow)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/away", away)
    app.router.add_get("/closing/{n}", closing)
    return app


async def crawl(dns: DNSServer, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> Any:
    """A small traced crawl over two hosts (TLS and plain) and two failures; its document."""
    tls_srv = TestServer(make_app())
    plain_srv = TestServer(make_app())
    await tls_srv.start_server(ssl=server_ctx)
    await plain_srv.start_server()
    resolver = AsyncResolver(**resolver_kwargs(dns))
    secure = f"https://a.test:{tls_srv.port}"
    plain = f"http://b.test:{plain_srv.port}"
    try:
        with closed_port("127.0.0.1") as refused:
            connector = aiotrace.TracingConnector(
                resolver=resolver, ssl=client_ctx, limit_per_host=2
            )
            async with (
                aiotrace.traced_session(connector=connector, timeout=TIMEOUT) as session,
                aiotrace.Recorder() as rec,
            ):

                async def get(url: str) -> None:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(url) as resp:
                            await resp.read()

                # Six at once on a pool of two per host: waits for the pool, then reuse.
                await asyncio.gather(*(get(f"{secure}/page/{i}") for i in range(6)))
                await asyncio.gather(
                    get(f"{secure}/slow"),
                    get(f"{plain}/page/1?token=secret"),
                    get(f"{plain}/status/404"),
                    get(f"{plain}/status/503"),
                )
                await get(f"{secure}/away?to={plain}/page/landed")  # a redirect across hosts
                for i in range(3):  # the server closes each: a new connection every time
                    await get(f"{plain}/closing/{i}")
                await asyncio.gather(
                    get(f"http://127.0.0.1:{refused}/refused"),
                    get(f"http://gone.test:{plain_srv.port}/nxdomain"),
                )
                await get(f"{secure}/page/last")
        return document_from_recorder(rec, title="aiotrace test crawl")
    finally:
        await resolver.close()
        await tls_srv.close()
        await plain_srv.close()


@pytest.fixture(scope="module")
def crawl_document(tls_ca: trustme.CA, _hosts_file_free_of_test_names: None) -> Any:
    """The report document of one real crawl (made once for the module)."""
    server_ctx = server_ssl_context(tls_ca)
    client_ctx = client_ssl_context(tls_ca)
    with DNSServer() as dns:
        for name in ("a.test", "b.test"):
            dns.add(name, "127.0.0.1")
        dns.nxdomain("gone.test")
        return asyncio.run(crawl(dns, server_ctx, client_ctx))


# --------------------------------------------------------------------------------------------
# What the page should show, worked out from the document in Python
# --------------------------------------------------------------------------------------------


def host_label(url: str) -> str:
    """``host:port`` of a URL, as the Recorder and the page label hosts."""
    u = URL(url)
    return f"{u.raw_host}:{u.port}"


def status_class(request: dict[str, Any]) -> str:
    """2xx .. 5xx, or ``error`` for a request that got no response."""
    status = request["status"]
    if request["error"] or status is None:
        return "error"
    return f"{status // 100}xx"


def no_connection_spans(document: dict[str, Any]) -> list[tuple[float, float]]:
    """(start, end) in ms of every round trip (or request) that got no connection."""
    t0 = min(
        [r["started_at"] for r in document["requests"]]
        + [h["started_at"] for r in document["requests"] for h in r["hops"]]
    )
    spans = []
    for r in document["requests"]:
        if not r["hops"]:
            start = (r["started_at"] - t0) * 1000.0
            spans.append((start, start + r["marks"]["total"]))
        for h in r["hops"]:
            if h["connection"] is None:
                start = (h["started_at"] - t0) * 1000.0
                spans.append((start, start + h["timings"]["total"]))
    return spans


def error_rows(document: dict[str, Any]) -> int:
    """Rows the errors lane needs: the most connection-less round trips at once."""
    events = []
    for start, end in no_connection_spans(document):
        events += [(start, 1), (max(end, start + 0.001), -1)]
    depth = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end frees a row first
        depth += step
        most = max(most, depth)
    return most


def connection_ids(document: dict[str, Any]) -> set[int]:
    """Ids of the connections the document's round trips used."""
    return {
        h["connection"]["id"]
        for r in document["requests"]
        for h in r["hops"]
        if h["connection"] is not None
    }


# --------------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(crawl_document: Any) -> Iterator[Any]:
    """Debian's chromium, headless, under Playwright (skips when it is not installed).

    Set up after the crawl: the crawl's ``asyncio.run`` cannot start once Playwright's loop
    is marked running."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A page opened from disk, with every console error, page error and request it made."""

    def __init__(self, browser: Any, path: Path, scale: float = 1.0) -> None:
        self.page = browser.new_page(viewport=VIEWPORT, device_scale_factor=scale)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        started = time.perf_counter()
        self.page.goto(self.url)
        self.page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30_000)
        self.load_seconds = time.perf_counter() - started

    def report(self, name: str) -> Any:
        """A value of the page's ``window.aiotraceReport``."""
        return self.page.evaluate(f"window.aiotraceReport.{name}")

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def open_page(browser: Any, tmp_path: Path) -> Iterator[Callable[..., Page]]:
    """Factory: ``open_page(document, name=, scale=)`` writes the report and opens it from
    disk (``scale``: the device pixel ratio)."""
    pages: list[Page] = []

    def open_(document: dict[str, Any], name: str = "report.html", scale: float = 1.0) -> Page:
        path = tmp_path / name
        write_html(document, path)
        page = Page(browser, path, scale)
        pages.append(page)
        return page

    yield open_
    for page in pages:
        page.close()


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_document_holds_the_whole_crawl(crawl_document: dict[str, Any]) -> None:
    """The crawl's document has every request, the connections they used, per-host stats, a
    redirect, reuse, waits for the pool, both failures without a connection, and no secrets."""
    doc = crawl_document
    requests = doc["requests"]
    assert len(requests) == 17
    hops = [h for r in requests for h in r["hops"]]
    assert any(len(r["redirects"]) == 1 for r in requests)
    assert any(h["reused"] for h in hops)
    assert any(h["reuse_miss"] == "first" for h in hops)
    assert any((h["timings"]["blocked"] or 0) > 0 for h in hops)
    assert sum(1 for r in requests if r["error"]) == 2
    assert len(no_connection_spans(doc)) == 2
    assert {c["id"] for c in doc["connections"]} == connection_ids(doc)
    assert {"a.test", "b.test"} <= {label.split(":")[0] for label in doc["hosts"]}
    assert "secret" not in json.dumps(doc)
    assert json.loads(json.dumps(doc)) == doc


def test_page_loads_offline_and_draws_every_request_and_lane(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """From disk the page loads with no console error and no request but its own file, and
    draws every request, one lane per connection plus the rows of the errors lane."""
    page = open_page(crawl_document)
    assert page.errors == []
    assert page.requests == [page.url]
    assert page.report("requests") == len(crawl_document["requests"])
    assert page.report("connectionLanes") == len(connection_ids(crawl_document))
    assert page.report("errorLanes") == error_rows(crawl_document) >= 1
    assert page.report("lanes") == len(connection_ids(crawl_document)) + error_rows(crawl_document)
    assert page.report("hostRows") == len(
        {host_label(r["url"]) for r in crawl_document["requests"]} | set(crawl_document["hosts"])
    )


def test_sharp_on_a_high_density_screen(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """At a device pixel ratio of 2 the canvas has twice the pixels of its CSS size, and the
    pointer still finds the request under it."""
    page = open_page(crawl_document, scale=2)
    size = page.page.evaluate(
        "() => { const c = document.getElementById('wf-canvas');"
        " return [c.width, c.height, c.clientWidth, c.clientHeight]; }"
    )
    assert size[0] == 2 * size[2] and size[1] == 2 * size[3] and size[2] > 600
    r = crawl_document["requests"][3]
    assert r["hops"][0]["url"] in tooltip_for(page, r["id"], 0)
    assert page.errors == []


def test_a_document_without_requests(open_page: Callable[..., Page]) -> None:
    """An aggregate-only document (per-host stats, no timelines) still opens: the host table
    from the stats, an empty waterfall, no error."""
    stats = {"requests": 7, "round_trips": 7, "reused": 5, "errors": {"TimeoutError": 1}}
    stats |= {"statuses": {"200": 6}, "phases": {"total": {"p50": 3.0, "p90": 5.0, "p99": 9.0}}}
    doc = {"title": "empty", "requests": [], "hosts": {"a.test:443": stats}, "sample_rate": 0.1}
    page = open_page(doc)
    assert page.errors == []
    assert "a sample of 10% of requests traced" in page.page.inner_text("#summary")
    assert (page.report("requests"), page.report("lanes"), page.report("hostRows")) == (0, 0, 1)
    row = page.page.locator("#hosts tbody tr").first.inner_text().split("\t")
    assert row[:5] == ["a.test:443", "7", "1", "0", "71%"]
    assert row[6:9] == ["3.00 ms", "5.00 ms", "9.00 ms"]


def test_a_sampled_document_says_traced_of_seen(open_page: Callable[..., Page]) -> None:
    """Under sampling the summary counts the timelines as traced of every request the
    aggregates saw, and the failures from the aggregates (every one, sampled or not)."""
    stats = {"requests": 40, "sampled": 8, "estimated": True, "round_trips": 8, "reused": 6}
    stats |= {"errors": {"ClientConnectorError": 3}, "statuses": {"200": 37}, "phases": {}}
    other = {"requests": 10, "round_trips": 2, "reused": 1, "errors": {}, "statuses": {"200": 10}}
    doc = {
        "title": "sampled",
        "requests": [],
        "hosts": {"a.test:80": stats, "b.test:80": other | {"sampled": 2, "phases": {}}},
        "sample_rate": 0.2,
    }
    page = open_page(doc)
    assert page.errors == []
    summary = page.page.inner_text("#summary")
    assert summary.startswith("0 traced of 50 requests · 0 connections · 3 failed · "), summary
    assert "a sample of 20% of requests traced" in summary


def tooltip_for(page: Page, request_id: int, hop: int) -> str:
    """Hover over the bar of one round trip; the tooltip's text."""
    at = page.page.evaluate(f"window.aiotraceReport.barPosition({request_id}, {hop})")
    assert at is not None
    page.page.mouse.move(at["x"], at["y"])
    tip = page.page.locator("#tooltip")
    tip.wait_for(state="visible")
    return str(tip.inner_text())


def test_hover_shows_that_request(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """Hovering over a round trip's bar shows its URL, status, host, connection, reuse or why
    not, and each of its phases; hovering over a failure shows its error."""
    page = open_page(crawl_document)
    requests = crawl_document["requests"]
    checked = 0
    for r in requests:
        for i, h in enumerate(r["hops"]):
            if h["connection"] is None:
                continue
            text = tooltip_for(page, r["id"], i)
            assert f"#{r['id']} GET {h['status']}" in text
            assert h["url"] in text
            assert host_label(h["url"]) in text
            assert f"connection #{h['connection']['id']}" in text
            if h["reused"]:
                assert "reused" in text
            else:
                assert f"not reused: {h['reuse_miss']}" in text
            for phase in PHASES:
                if h["timings"][phase] is not None:
                    assert re.search(rf"\b{phase}\b", text), (phase, text)
            checked += 1
    assert checked == sum(1 for r in requests for h in r["hops"] if h["connection"])
    failed = [r for r in requests if r["error"]]
    for r in failed:
        text = tooltip_for(page, r["id"], 0 if r["hops"] else -1)
        assert r["url"] in text and "no connection" in text
        assert r["error"].split(":")[0] in text
    hit = page.page.evaluate("window.aiotraceReport.requestAt(0, 0)")
    assert hit is None or hit["request"] in {r["id"] for r in failed}


def test_click_pins_the_tooltip(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """A click pins the tooltip of the request under the pointer, so moving away keeps it; a
    click on empty space lets it go."""
    page = open_page(crawl_document)
    r = next(r for r in crawl_document["requests"] if r["redirects"])
    text = tooltip_for(page, r["id"], 1)
    assert r["hops"][1]["url"] in text and "hop 2 of 2" in text
    page.page.mouse.down()
    page.page.mouse.up()
    tip = page.page.locator("#tooltip")
    assert "pinned" in str(tip.get_attribute("class"))
    box = page.page.locator("#wf-scroll").bounding_box()
    assert box is not None
    # Empty space: where the crawl's bars fall depends on its timing, so ask the page for a
    # point right of the lane labels that no round trip covers, rather than guess one.
    empty = page.page.evaluate(
        """([w, h]) => {
            for (let y = h - 24; y > 10; y -= 7)
                for (let x = w - 24; x > w / 2; x -= 11)
                    if (window.aiotraceReport.hitTest(x, y) === null) return [x, y];
            return null;
        }""",
        [box["width"], box["height"]],
    )
    assert empty is not None
    x, y = box["x"] + empty[0], box["y"] + empty[1]
    page.page.mouse.move(x, y)
    assert r["hops"][1]["url"] in tip.inner_text()
    assert "pinned" in str(tip.get_attribute("class"))
    page.page.mouse.click(x, y)
    tip.wait_for(state="hidden")


def host_column(page: Page) -> list[str]:
    """The host table's first column, top to bottom."""
    return [str(t) for t in page.page.locator("#hosts tbody td.host").all_inner_texts()]


def test_host_table_sorts_on_click(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """Clicking a header sorts the host table by that column, clicking again reverses it."""
    page = open_page(crawl_document)
    header = page.page.locator("#hosts th[data-key=host]")
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    hosts = host_column(page)
    assert hosts == sorted(hosts) and len(hosts) >= 3
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert host_column(page) == sorted(hosts, reverse=True)
    page.page.locator("#hosts th[data-key=requests]").click()
    counts = [
        int(t) for t in page.page.locator("#hosts tbody tr td:nth-child(2)").all_inner_texts()
    ]
    assert counts == sorted(counts, reverse=True)
    by_host = {label: s["requests"] for label, s in crawl_document["hosts"].items()}
    assert dict(zip(host_column(page), counts, strict=True)).items() >= by_host.items()


def test_filters_redraw_the_waterfall(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """Filtering by host or by status class draws only the matching requests, in fewer
    lanes; clicking a host in the table filters to it."""
    page = open_page(crawl_document)
    requests = crawl_document["requests"]
    total_lanes = page.report("lanes")
    plain = next(host_label(r["url"]) for r in requests if r["url"].startswith("http://b.test"))
    page.page.fill("#f-host", "b.test")
    want = sum(1 for r in requests if "b.test" in host_label(r["url"]))
    page.page.wait_for_function(f"() => window.aiotraceReport.requests === {want}")
    assert 0 < want < len(requests)
    assert page.report("lanes") < total_lanes
    page.page.fill("#f-host", "")
    page.page.wait_for_function(f"() => window.aiotraceReport.requests === {len(requests)}")
    page.page.uncheck("#f-2xx")
    not_ok = sum(1 for r in requests if status_class(r) != "2xx")
    assert page.report("requests") == not_ok and 0 < not_ok < len(requests)
    page.page.uncheck("#f-error")
    assert page.report("errorLanes") == 0
    assert page.report("requests") == sum(
        1 for r in requests if status_class(r) in {"3xx", "4xx", "5xx"}
    )
    page.page.check("#f-2xx")
    page.page.check("#f-error")
    page.page.locator("#hosts td.host", has_text=plain).first.click()
    assert page.page.input_value("#f-host") == plain
    assert page.report("requests") == sum(1 for r in requests if host_label(r["url"]) == plain)
    assert page.errors == []


def test_zoom_keeps_every_request_and_shows_ticks(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """Zooming in (button or ctrl + wheel) widens the time axis, and a bar is still found
    under the pointer afterwards; fit goes back."""
    page = open_page(crawl_document)
    page.page.click("#zoom-in")
    page.page.click("#zoom-in")
    assert page.report("zoom") == pytest.approx(4.0)
    r = crawl_document["requests"][0]
    text = tooltip_for(page, r["id"], 0)
    assert r["hops"][0]["url"] in text
    page.page.keyboard.down("Control")
    page.page.mouse.wheel(0, -300)
    page.page.keyboard.up("Control")
    page.page.wait_for_function("() => window.aiotraceReport.zoom > 4")
    page.page.click("#zoom-fit")
    assert page.report("zoom") == 1
    assert page.errors == []


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, from its header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_screenshot(
    crawl_document: dict[str, Any], open_page: Callable[..., Page], tmp_path: Path
) -> None:
    """The report renders to a screenshot (and, when asked, to the README's picture)."""
    page = open_page(crawl_document)
    # The round trip with the most phases (a new TLS connection) makes the best picture.
    r = max(
        (r for r in crawl_document["requests"] if r["hops"] and r["hops"][0]["connection"]),
        key=lambda r: sum(v is not None for v in r["hops"][0]["timings"].values()),
    )
    tooltip_for(page, r["id"], 0)
    shot = tmp_path / "report.png"
    page.page.screenshot(path=str(shot))
    assert png_size(shot) == (VIEWPORT["width"], VIEWPORT["height"])
    target = os.environ.get("AIOTRACE_SCREENSHOT_TO")
    if target:
        page.page.screenshot(path=target, clip={"x": 0, "y": 0, "width": 1280, "height": 640})


def test_markup_in_urls_cannot_break_out(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """A URL or title holding ``</script>`` or ``<!--`` stays data: nothing it says runs, the
    page still draws, and the tooltip shows the URL as it is."""
    doc = copy.deepcopy(crawl_document)
    evil = "http://b.test:1/</script><script>window.pwned=1</script><!--<script>"
    doc["title"] = "</title><script>window.pwned=2</script>"
    r = next(r for r in doc["requests"] if r["hops"] and r["hops"][0]["connection"])
    r["url"] = r["hops"][0]["url"] = evil
    html = render_html(doc)
    assert html.count("</script>") == 2  # the data's and the code's own
    page = open_page(doc)
    assert page.page.evaluate("window.pwned") is None
    assert page.page.title() == doc["title"]
    assert evil in tooltip_for(page, r["id"], 0)
    assert page.errors == []


def test_loop_stalls_are_shown(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """A round trip's ``stall`` (ms of each phase the event loop was blocked) shows in its
    tooltip and its host's row; the document's stalls show in the summary and the legend."""
    doc = copy.deepcopy(crawl_document)
    r = next(r for r in doc["requests"] if r["hops"] and r["hops"][0]["connection"])
    hop = r["hops"][0]
    hop["stall"] = {"wait": 200.0, "receive": 0.0}
    doc["stalls"] = [{"started_at": hop["started_at"], "duration_ms": 200.0}]
    page = open_page(doc)
    text = tooltip_for(page, r["id"], 0)
    assert re.search(r"wait\s+[\d.]+ ms\s+loop stalled 200 ms", text), text
    assert text.count("loop stalled") == 1
    assert "event loop stalled 1 time for 200 ms" in page.page.inner_text("#summary")
    assert "event loop stalled" in page.page.inner_text("#legend")
    page.page.locator("#hosts th[data-key=stall]").click()
    first_row = page.page.locator("#hosts tbody tr").first.inner_text()
    assert host_label(hop["url"]) in first_row and "200 ms" in first_row
    assert page.errors == []


def synthetic_document(template: dict[str, Any], n: int, hosts: int) -> dict[str, Any]:
    """``n`` requests over ``hosts`` hosts, made from one real request's dict: 10 connections a
    host, each opened once and then reused, every 100th request failing without a connection
    and every 50th redirected; times laid out as a crawl at concurrency ``hosts * 10``."""
    base = template["hops"][0]
    requests = []
    t0 = 1_700_000_000.0
    per_conn: dict[int, float] = {}
    for i in range(n):
        host = f"h{i % hosts}.test"
        conn_id = (i % hosts) * 10 + (i // hosts) % 10
        at = per_conn.get(conn_id, t0 + (conn_id % 7) * 0.003)
        url = f"https://{host}:443/page/{i}?q=x"
        hop = copy.deepcopy(base)
        first = conn_id not in per_conn
        timings = {
            "blocked": 0.4 if i % 3 == 0 else None,
            "dns": 1.5 if first else None,
            "connect": 0.8 if first else None,
            "tls": 3.0 if first else None,
            "send": 0.05,
            "wait": 2.0 + (i % 13) * 0.7,
            "receive": 0.3 + (i % 5) * 0.1,
        }
        total = sum(v for v in timings.values() if v is not None)
        hop.update(
            url=url,
            status=200,
            started_at=at,
            connection={**(base["connection"] or {}), "id": conn_id},
            reused=not first,
            was_idle=not first,
            reuse_miss="first" if first else None,
            timings={**timings, "total": total},
            error=None,
        )
        request = copy.deepcopy(template)
        request.update(
            id=i + 1, url=url, final_url=url, status=200, error=None, started_at=at, hops=[hop]
        )
        if i % 100 == 99:  # refused: no connection
            hop.update(connection=None, status=None, error="ClientConnectorError: refused")
            request.update(status=None, error="ClientConnectorError: refused")
        elif i % 50 == 49:  # a redirect, its second hop reusing the connection
            second = copy.deepcopy(hop)
            second.update(url=url + "&moved", started_at=at + total / 1000.0, reused=True)
            hop["status"] = 302
            request["hops"] = [hop, second]
            total *= 2
        per_conn[conn_id] = at + total / 1000.0 + 0.0002
        requests.append(request)
    info = base["connection"] or {}
    served: dict[int, list[dict[str, Any]]] = {}
    for r in requests:
        for i, h in enumerate(r["hops"]):
            if h["connection"] is not None:
                served.setdefault(h["connection"]["id"], []).append(
                    {"request": r["id"], "hop": i, "idle_ms": 0.2}
                )
    connections = [
        {
            **info,
            "id": conn_id,
            "opened_at": t0,
            "closed_at": per_conn[conn_id],
            "close_reason": "session_closed",
            "requests": served[conn_id],
        }
        for conn_id in sorted(served)
    ]
    return {
        "title": "synthetic",
        "generated_at": time.time(),
        "requests": requests,
        "connections": connections,
        "hosts": {},
        "dropped": 0,
        "stalls": [],
    }


def test_ten_thousand_requests_render_quickly(
    crawl_document: dict[str, Any], open_page: Callable[..., Page]
) -> None:
    """A 10,000-request report is drawn (ready) well within 5 s of navigation, as a handful
    of DOM elements, and a hover still finds the right request."""
    template = next(r for r in crawl_document["requests"] if r["hops"] and not r["error"])
    doc = synthetic_document(template, 10_000, 20)
    page = open_page(doc, "big.html")
    ready_ms = page.report("readyMs")  # from navigation start, on the browser's clock
    print(
        f"\n10,000 requests: ready {ready_ms:.0f} ms after navigation "
        f"(load seen from Python {page.load_seconds:.2f} s), first draw "
        f"{page.report('drawMs'):.1f} ms; marks {page.report('marks')}; "
        f"{page.page.evaluate('document.documentElement.outerHTML.length') / 1e6:.1f} MB"
    )
    assert page.errors == []
    assert page.report("requests") == 10_000
    assert page.report("connectionLanes") == len(connection_ids(doc)) > 150
    assert page.report("errorLanes") == error_rows(doc)
    assert 0 < ready_ms < 5000
    assert page.page.evaluate("document.getElementsByTagName('*').length") < 500
    assert "/page/4321?" in tooltip_for(page, 4322, 0)
