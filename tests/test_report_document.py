"""The HTML report's document and page as Python sees them: built from a Recorder after a real
traced crawl (on both event loops), and embedded in the page so that nothing in it can end its
``<script>`` element. The page in a browser is ``test_html_report.py``'s."""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.resolver import AsyncResolver
from peers import DNSServer

import aiotrace
from aiotrace._report.html import document_from_recorder, page_form, render_html, write_html

DATA = re.compile(r'<script type="application/json" id="aiotrace-data">(.*?)</script>', re.S)


def make_app() -> web.Application:
    """A page and a redirect."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="page")

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.router.add_get("/page/{n}", page)
    app.router.add_get("/away", away)
    return app


def embedded(html: str) -> Any:
    """The JSON document a page carries."""
    found = DATA.search(html)
    assert found is not None
    assert "<" not in found.group(1)
    return json.loads(found.group(1))


async def test_document_from_a_crawl_round_trips_through_the_page(
    zone: DNSServer,
    dns_resolver: AsyncResolver,
    aiohttp_server: Any,
    server_ssl_ctx: ssl.SSLContext,
    client_ssl_ctx: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    """A traced crawl's document holds every request, the connections they used and the
    per-host stats, and the page carries it unchanged; ``write_html`` writes that page."""
    srv = await aiohttp_server(make_app(), ssl=server_ssl_ctx)
    connector = aiotrace.TracingConnector(resolver=dns_resolver, ssl=client_ssl_ctx)
    base = f"https://a.test:{srv.port}"
    async with aiotrace.traced_session(connector=connector) as session, aiotrace.Recorder() as rec:
        for path in ("/page/1", "/page/2", f"/away?to={base}/page/3"):
            async with session.get(base + path) as resp:
                await resp.read()
    doc = document_from_recorder(rec, title="crawl", stalls=[(1.5, 200.0)])
    assert [len(r["hops"]) for r in doc["requests"]] == [1, 1, 2]
    assert [c["id"] for c in doc["connections"]] == [
        doc["requests"][0]["hops"][0]["connection"]["id"]
    ]
    assert list(doc["hosts"]) == [f"a.test:{srv.port}"]
    assert doc["hosts"][f"a.test:{srv.port}"]["requests"] == 3
    assert doc["stalls"] == [{"started_at": 1.5, "duration_ms": 200.0}]
    assert doc["title"] == "crawl" and doc["dropped"] == 0 and doc["sample_rate"] is None
    before = json.dumps(doc)
    html = await asyncio.to_thread(render_html, doc)  # reads files: not on the loop
    assert json.dumps(doc) == before  # left as it was
    page = embedded(html)
    # The page's form: the same document, connection details only in "connections".
    for r in doc["requests"]:
        for h in r["hops"]:
            record = next(c for c in doc["connections"] if c["id"] == h["connection"]["id"])
            assert h["connection"].items() <= record.items()
            h["connection"] = {"id": record["id"]}
    assert page == json.loads(json.dumps(doc))
    written = await asyncio.to_thread(write_html, doc, tmp_path / "r.html")
    assert written == len(html.encode())


def test_nothing_in_the_data_can_end_its_script_element() -> None:
    """``</script>``, ``<!--`` and ``<script`` in any string are written as ``\\u003c`` in
    the page and read back unchanged; the title is HTML-escaped."""
    evil = "</script><script>alert(1)</script><!--<script>"
    doc = {"title": "<b>t</b>", "requests": [], "hosts": {evil: {"requests": 1}}, "note": evil}
    html = render_html(doc)
    assert html.count("</script>") == 2
    assert "<title>&lt;b&gt;t&lt;/b&gt;</title>" in html
    assert embedded(html) == doc


def test_non_finite_numbers_become_null() -> None:
    """NaN and infinities (which JSON cannot hold) are written as null, not as invalid JSON."""
    doc = {"title": "t", "requests": [], "x": [math.nan, math.inf, 1.5], "y": {"z": -math.inf}}
    assert embedded(render_html(doc)) == {
        "title": "t", "requests": [], "x": [None, None, 1.5], "y": {"z": None},
    }  # fmt: skip


def test_page_form_keeps_connection_details_it_cannot_find() -> None:
    """A round trip keeps its connection's details unless ``connections`` lists the same ones
    under its id."""
    listed = {"id": 1, "remote_addr": "127.0.0.1:1", "tls": None}
    other = {"id": 2, "remote_addr": "127.0.0.1:2", "tls": None}
    changed = {"id": 1, "remote_addr": "127.0.0.1:9", "tls": None}
    doc = {
        "requests": [
            {"id": 1, "hops": [{"connection": c} for c in (listed, other, changed, None)]}
        ],
        "connections": [{**listed, "opened_at": 1.0}],
    }
    hops = page_form(doc)["requests"][0]["hops"]
    assert [h["connection"] for h in hops] == [{"id": 1}, other, changed, None]
    assert doc["requests"][0]["hops"][0]["connection"] is listed
    assert page_form({"requests": [], "connections": []}) == {"requests": [], "connections": []}
