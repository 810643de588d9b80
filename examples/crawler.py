"""A small crawler that traces itself: follow a site's links, then write the trace report.

    python examples/crawler.py                        # crawls a site it serves on loopback
    python examples/crawler.py https://example.org/ --pages 50 -o report

writes ``report.html`` (the waterfall: open it in a browser) and ``report.json``.

Every request goes through one ``traced_session`` recorded by a ``Recorder``: DNS, connects,
reuse and why-not, pool waits, per redirect hop. The crawler parses each page on the event
loop, as crawlers usually do, which is what a loop-stall monitor would show.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from html.parser import HTMLParser

from aiohttp import web
from yarl import URL

import aiotrace

# The HTML report has no public name yet: this is the module ``aiotrace crawl --html`` uses.


class LinkParser(HTMLParser):
    """Collects the ``href`` of every ``<a>``."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.extend(value for name, value in attrs if name == "href" and value)


async def crawl(start: URL, pages: int, concurrency: int, rec: aiotrace.Recorder) -> int:
    """Fetch up to ``pages`` pages of ``start``'s host, following links; returns how many."""
    seen = {start}
    queue: asyncio.Queue[URL] = asyncio.Queue()
    queue.put_nowait(start)
    fetched = 0
    connector = aiotrace.TracingConnector(limit=concurrency)
    async with aiotrace.traced_session(trace=rec, connector=connector) as session:

        async def worker() -> None:
            nonlocal fetched
            while True:
                url = await queue.get()
                try:
                    async with session.get(url) as resp:
                        body = await resp.text(errors="replace")
                        html = resp.content_type == "text/html"
                    fetched += 1
                    if html:
                        parser = LinkParser()
                        parser.feed(body)  # on the loop: a crawler's own CPU time
                        for href in parser.links:
                            link = url.join(URL(href)).with_fragment(None)
                            if link.host == start.host and link not in seen and len(seen) < pages:
                                seen.add(link)
                                queue.put_nowait(link)
                except Exception as e:  # the Recorder keeps the error with its timeline
                    print(f"failed: {url}: {type(e).__name__}")
                finally:
                    queue.task_done()

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await queue.join()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return fetched


def write_report(rec: aiotrace.Recorder, base: str) -> None:
    """``base.html``, the waterfall; ``base.json``, the same document: per-host aggregates,
    every request's timeline, every connection."""
    aiotrace.write_html_report(rec, base + ".html", title="examples/crawler.py")
    document = aiotrace.report_document(rec, title="examples/crawler.py")
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)


async def serve_site() -> tuple[web.AppRunner, URL]:
    """A loopback site of 30 linked pages (some slow, one redirecting) to crawl offline."""

    async def page(request: web.Request) -> web.Response:
        n = int(request.match_info.get("n", "0"))
        if n % 7 == 3:
            await asyncio.sleep(0.05)
        links = "".join(f'<a href="/page/{(n * 3 + i) % 30}">p</a>' for i in range(1, 4))
        return web.Response(text=f"<html><body>{links}<a href='/old'>old</a></body></html>",
                            content_type="text/html")  # fmt: skip

    async def old(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/page/29")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/page/{n}", page)
    app.router.add_get("/old", old)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, URL(f"http://localhost:{runner.addresses[0][1]}/")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="where to start (default: a loopback site)")
    parser.add_argument("--pages", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("-o", "--output", default="crawl-report", help="writes .html and .json")
    args = parser.parse_args()
    runner = None
    if args.url is None:
        runner, start = await serve_site()
    else:
        start = URL(args.url)
    rec = aiotrace.Recorder(loop_stalls=True)  # and measure the loop's own stalls
    try:
        async with rec:  # starts the stall monitor
            fetched = await crawl(start, args.pages, args.concurrency, rec)
    finally:
        if runner is not None:
            await runner.cleanup()
    write_report(rec, args.output)
    print(
        f"fetched {fetched} pages in {len(rec.requests)} requests; "
        f"report: {args.output}.html, {args.output}.json"
    )
    for host, stats in rec.stats.items():
        total = stats.phases["total"].summary()
        opened = stats.round_trips - stats.reused
        print(
            f"{host}: {stats.requests} requests, {opened} connections opened, "
            f"{stats.reused}/{stats.round_trips} round trips reused, "
            f"total p50 {total.p50:.1f} ms, p99 {total.p99:.1f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
