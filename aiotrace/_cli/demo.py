"""``aiotrace demo``: a guided tour of what aiotrace sees, on loopback servers it starts itself.

No network: an HTTP and an HTTPS server (a throwaway CA made by trustme) and a DNS server for
the ``.test`` names, so that every lookup is a real aiodns query. Eight steps, each one line
of what to notice and the trace view ``aiotrace URL`` would print: a fresh HTTPS request, the
same host again, a redirect chain across two hosts, a server that closes, a slow server
against a dripped body, a burst above ``limit_per_host``, a refused port and a TLS failure.
About two seconds; ``--json`` gives the same data as one JSON document.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from textwrap import fill
from typing import Any

from aiohttp import web
from yarl import URL

from aiotrace import Recorder, TracingConnector, traced_session

from .args import UsageError
from .exits import failure_of
from .exports import har, transfer_dict
from .fetch import Transfer, attach_timelines, perform, tracking_ids
from .loopback import Loopback, loopback

__all__ = ["demo_app", "main", "run_tour"]

SHOP, CDN, API, EVIL = "shop.test", "cdn.test", "api.test", "evil.test"
IDLE = 0.2  # seconds between the first request and the same host again
SLOW = 0.3  # the slow server's think time, and the dripped body's duration
BURST, LIMIT = 5, 2  # requests at once, and the connector's limit_per_host


def demo_app() -> web.Application:
    """The demo servers' routes (the same on HTTP and HTTPS)."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="hello from the aiotrace demo\n")

    async def to_cdn(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"https://{CDN}:{request.url.port}/hop/back")

    async def back(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"https://{SHOP}:{request.url.port}/")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(SLOW)
        return web.Response(text="thought about it\n")

    async def close(request: web.Request) -> web.Response:
        return web.Response(text="bye\n", headers={"Connection": "close"})

    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 4 * 1024
        await resp.prepare(request)
        for _ in range(4):
            await asyncio.sleep(SLOW / 4)
            await resp.write(b"x" * 1024)
        return resp

    async def busy(request: web.Request) -> web.Response:
        await asyncio.sleep(0.15)
        return web.Response(text="done\n")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/hop/cdn", to_cdn)
    app.router.add_get("/hop/back", back)
    app.router.add_get("/slow", slow)
    app.router.add_get("/close", close)
    app.router.add_get("/drip", drip)
    app.router.add_get("/busy", busy)
    return app


@dataclass(slots=True, kw_only=True)
class Step:
    """One stop of the tour: what to notice, and the requests it made."""

    title: str
    notice: str
    transfers: list[Transfer] = field(default_factory=list)
    table: bool = False  # a burst: one line per request, not one block each


async def run_tour(
    on_step: Callable[[int, Step], None] | None = None,
) -> tuple[list[Step], Recorder, Loopback | None]:
    """Start the servers, walk the tour traced, stop everything; ``on_step`` sees each step
    as it ends."""
    zone = dict.fromkeys((SHOP, CDN, API, EVIL), "127.0.0.1")
    rec = Recorder()
    steps: list[Step] = []
    async with loopback(demo_app(), zone, (SHOP, CDN, API)) as lb:
        resolver = lb.resolver()
        connector = TracingConnector(resolver=resolver, limit_per_host=LIMIT)
        https, http = f"https://{SHOP}:{lb.https_port}", f"http://{API}:{lb.http_port}"
        try:
            async with traced_session(connector=connector, trace=rec) as session:

                def get(url: str) -> Awaitable[None]:
                    t = Transfer(url=URL(url), method="GET", what=f"GET {url}")
                    steps[-1].transfers.append(t)
                    tls = lb.client_ssl if url.startswith("https:") else True
                    return perform(session, t, ssl=tls)

                async def step(title: str, notice: str, *urls: str, table: bool = False) -> None:
                    steps.append(Step(title=title, notice=notice, table=table))
                    if table:
                        await asyncio.gather(*(get(u) for u in urls))
                    else:
                        for u in urls:
                            await get(u)
                    attach_timelines(steps[-1].transfers, rec)
                    for t in steps[-1].transfers:
                        if t.error is not None:
                            t.failure = failure_of(t.error, t.timeline, ())
                    if on_step is not None:
                        on_step(len(steps), steps[-1])

                with tracking_ids():
                    await _walk(step, https, http, lb)
        finally:
            await resolver.close()
    return steps, rec, lb


async def _walk(step: Callable[..., Awaitable[None]], https: str, http: str, lb: Loopback) -> None:
    await step(
        "A fresh HTTPS request",
        f"{SHOP} is looked up (DNS, a real query to the demo's DNS server), a TCP connection "
        "opened and TLS negotiated, all before the request goes out.",
        f"{https}/",
    )
    await asyncio.sleep(IDLE)
    await step(
        "The same host again",
        f"connection #1 is reused after {IDLE * 1000:.0f} ms idle in the pool: no DNS, TCP or "
        "TLS this time, so the waterfall starts at Server Processing.",
        f"{https}/",
    )
    await step(
        "A redirect chain across two hosts",
        f"one block per hop: {CDN} needs its own DNS, TCP and TLS (connection #2), and the "
        f"third hop, back on {SHOP}, reuses #1.",
        f"{https}/hop/cdn",
    )
    await step(
        "A server that closes",
        "the first response says Connection: close, so the second request cannot reuse the "
        "connection: it opens a new one, and aiotrace says why (the server closed it).",
        f"{http}/close",
        f"{http}/",
    )
    await step(
        "A slow server, then a dripped body",
        f"both take about {SLOW * 1000:.0f} ms: the first in Server Processing (waiting for "
        "the first byte), the second in Content Transfer (the body arriving in pieces).",
        f"{http}/slow",
        f"{http}/drip",
    )
    await step(
        f"A burst of {BURST} requests with limit_per_host={LIMIT}",
        f"{LIMIT} connections serve {BURST} requests: the others wait for one in the pool "
        "(Blocked, which no other tool shows), then reuse it; below, the one that waited "
        "longest.",
        *[f"{http}/busy"] * BURST,
        table=True,
    )
    await step(
        "A refused port",
        "DNS answers, then the TCP connect is refused: the request fails in the connect "
        "phase, and aiotrace URL would exit with status 1, naming it.",
        f"http://{API}:{lb.refused_port}/",
    )
    await step(
        "A TLS failure",
        f"the certificate is not valid for {EVIL}: DNS and TCP succeed, the TLS handshake "
        "fails, and the failure is named as TLS.",
        f"https://{EVIL}:{lb.https_port}/",
    )


def _print_step(con: Any, n: int, step: Step) -> None:
    from aiotrace import Redaction

    from .render import burst_table, print_view, request_view

    con.print(_heading(n, step))
    con.print()
    shown = step.transfers
    if step.table:  # all of them in a table, then the one that waited longest in full
        con.print(burst_table(step.transfers))
        con.print()
        shown = [max(step.transfers, key=_blocked)]
    for t in shown:
        print_view(con, request_view(t, Redaction(), headers=False, title=True))


def _blocked(t: Transfer) -> float:
    hops = t.timeline.hops if t.timeline is not None else []
    return (hops[-1].timings.blocked or 0.0) if hops else 0.0


def _heading(n: int, step: Step) -> Any:
    from rich.text import Text

    text = Text()
    text.append(f"{n}/8 {step.title}: ", style="bold")
    text.append(step.notice, style="italic")
    return text


def main(argv: Sequence[str]) -> int:
    """``aiotrace demo [--json | --har FILE]``: the exit status."""
    from .args import _formatter, _Parser

    parser = _Parser(
        prog="aiotrace demo",
        description=fill(
            "A guided tour of what aiotrace sees, on servers it starts on 127.0.0.1 "
            "(HTTP, HTTPS with a throwaway CA, DNS for the .test names it uses): no network "
            "needed. Eight steps, each one line of what to notice and the trace view "
            "'aiotrace URL' prints: a fresh HTTPS request, the same host again, a redirect chain "
            "across two hosts, a server that closes, a slow server against a dripped body, a "
            "burst above limit_per_host, a refused port and a TLS failure.",
            width=88,
        ),
        formatter_class=_formatter(argv),
    )
    parser.add_argument("--json", action="store_true", help="the tour as one JSON document")
    parser.add_argument("--har", metavar="FILE", help="a HAR 1.2 file of every request")
    parser.add_argument("--format", choices=("text", "json"), help="the same as --json")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return 0 if e.code in (0, None) else 2
    except UsageError as e:
        print(f"aiotrace demo: {e}", file=sys.stderr)
        return 2
    as_json = args.json or args.format == "json"
    on_step = None
    if not as_json:
        from .render import console

        con = console()
        con.print(
            "aiotrace demo: eight requests against servers on 127.0.0.1 (HTTP, HTTPS with a "
            "throwaway CA, DNS for *.test), traced as 'aiotrace URL' shows them.",
            style="bold",
        )
        con.print()

        def on_step(n: int, step: Step) -> None:
            _print_step(con, n, step)

    steps, rec, _ = asyncio.run(run_tour(on_step))
    if as_json:
        doc = {
            "steps": [
                {
                    "step": n,
                    "title": s.title,
                    "notice": s.notice,
                    "requests": [transfer_dict(t, rec.redaction) for t in s.transfers],
                }
                for n, s in enumerate(steps, 1)
            ]
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    if args.har:
        transfers = [t for s in steps for t in s.transfers]
        try:
            with open(args.har, "w", encoding="utf-8") as f:
                json.dump(har(rec, transfers, rec.redaction), f, indent=2)
        except OSError as e:
            print(f"aiotrace demo: --har: cannot write {args.har!r}: {e.strerror}", file=sys.stderr)
            return 1
    return 0
