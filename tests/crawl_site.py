"""A loopback site for ``aiotrace crawl`` to crawl, run in a process of its own.

``python tests/crawl_site.py N`` listens on N ports of 127.0.0.1 (one aiohttp application on
each: N "hosts"), and with ``--certfile``/``--keyfile`` on one more with TLS; it prints
``{"ports": [...], "tls": PORT or null}`` as one JSON line once they listen, and stops when its
stdin reaches end of file (the test is done) or after ``--max-seconds``. Routes:

* ``/`` and ``/page/{n}``: 200, a short body;
* ``/slow?ms=300``: 200 after that many milliseconds;
* ``/hang``: answers after a minute (a request to cancel); ``/hanging``: how many ``/hang``
  requests to the same Host are waiting now, as text;
* ``/redirect``: 302 to ``/``; ``/redirect-to?port=P``: 302 to ``/`` on port P (another host);
* ``/fail``: 500; ``/close``: 200 with ``Connection: close``.

Run as a process, not in the test's loop: the command under test is another process, and the
tests' own processes must not be the bottleneck of the scale test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import threading

from aiohttp import web


def make_app() -> web.Application:
    """The site's routes (module docstring)."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("ms", "300")) / 1000)
        return web.Response(text="slow\n")

    hanging: dict[str, int] = {}  # by Host header

    async def hang(request: web.Request) -> web.Response:
        hanging[request.host] = hanging.get(request.host, 0) + 1
        try:
            await asyncio.sleep(60)
        finally:
            hanging[request.host] -= 1
        return web.Response(text="late\n")

    async def hanging_now(request: web.Request) -> web.Response:
        return web.Response(text=str(hanging.get(request.query["host"], 0)))

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/")

    async def redirect_to(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{int(request.query['port'])}/")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="no\n")

    async def close(request: web.Request) -> web.Response:
        return web.Response(text="bye\n", headers={"Connection": "close"})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/page/{n}", index)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hang", hang)
    app.router.add_get("/hanging", hanging_now)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/redirect-to", redirect_to)
    app.router.add_get("/fail", fail)
    app.router.add_get("/close", close)
    return app


async def serve(n: int, max_seconds: float, tls: ssl.SSLContext | None) -> None:
    """Serve on ``n`` ports (and one with ``tls``) until stdin closes or ``max_seconds`` pass."""
    # A stop must not wait for a /hang handler (a minute): in-flight requests get 1 s.
    runner = web.AppRunner(
        make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    for _ in range(n):
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    ports = [addr[1] for addr in runner.addresses]
    tls_port = None
    if tls is not None:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
        tls_port = runner.addresses[-1][1]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def watch_stdin() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    sys.stdout.write(json.dumps({"ports": ports, "tls": tls_port}) + "\n")
    sys.stdout.flush()
    try:
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    except TimeoutError:
        pass
    finally:
        await runner.cleanup()


def main() -> None:
    """Parse arguments and serve (uvloop when installed: the site is not what is tested)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("ports", type=int, nargs="?", default=3, help="how many ports (hosts)")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--certfile", default=None, help="PEM certificate chain: serve TLS too")
    parser.add_argument("--keyfile", default=None, help="its PEM private key")
    args = parser.parse_args()
    tls = None
    if args.certfile:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.certfile, args.keyfile)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.ports, args.max_seconds, tls))
    else:
        uvloop.run(serve(args.ports, args.max_seconds, tls))


if __name__ == "__main__":
    main()
