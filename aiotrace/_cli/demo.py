"""``aiotrace demo``: trace a few requests against a server it starts on loopback.

No network is needed. The server answers a redirect chain, a slow endpoint, a
``Connection: close`` endpoint and a dripped body, so the output shows DNS and Happy Eyeballs
connects, per-hop redirects, reuse with idle times, pool waits, and why connections were not
reused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from aiohttp import web

from .._adapter.connector import TracingConnector
from .._adapter.session import traced_session
from .._record.recorder import Recorder

__all__ = ["demo_main", "demo_app", "run_demo"]


def demo_app() -> web.Application:
    """The demo server's routes."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="hello from the aiotrace demo\n")

    async def redirect(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound("/" if n <= 1 else f"/redirect/{n - 1}")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.12)
        return web.Response(text="slow\n")

    async def close(request: web.Request) -> web.Response:
        return web.Response(text="bye\n", headers={"Connection": "close"})

    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 4 * 1024
        await resp.prepare(request)
        for _ in range(4):
            await asyncio.sleep(0.03)
            await resp.write(b"x" * 1024)
        return resp

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/slow", slow)
    app.router.add_get("/close", close)
    app.router.add_get("/drip", drip)
    return app


async def run_demo() -> Recorder:
    """Start the server on 127.0.0.1, run the scenario traced, return the Recorder."""
    runner = web.AppRunner(demo_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://localhost:{port}"
    rec = Recorder()
    try:
        connector = TracingConnector(limit_per_host=2)
        async with traced_session(connector=connector, trace=rec) as session:

            async def get(path: str) -> None:
                async with session.get(base + path) as resp:
                    await resp.read()

            await get("/redirect/2")  # DNS, connect, then two hops on the same connection
            await get("/close")  # the server closes the connection ...
            await get("/")  # ... so this one opens a new one: reuse_miss=server_closed
            await asyncio.gather(*(get("/slow") for _ in range(4)))  # two wait for the pool
            await get("/drip")  # a body arriving in pieces: the receive phase
    finally:
        await runner.cleanup()
    return rec


def demo_main(argv: Sequence[str]) -> int:
    """``aiotrace demo [--format text|json|har]``."""
    parser = argparse.ArgumentParser(prog="aiotrace demo", description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=("text", "json", "har"), default="text")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return 2 if e.code not in (0, None) else 0
    rec = asyncio.run(run_demo())
    if args.format == "json":
        sys.stdout.write(json.dumps(rec.to_dicts(), indent=2) + "\n")
    elif args.format == "har":
        sys.stdout.write(json.dumps(rec.to_har(), indent=2) + "\n")
    else:
        from .render import render_text

        render_text(rec, repeat=False)
    return 0
