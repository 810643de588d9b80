"""The Go blog's second program, the aiotrace way: was the connection reused, per redirect hop?

In Go the hooks don't know which redirect hop they belong to, so the blog wraps the
RoundTripper to remember the current request. In aiotrace every event carries its round trip
(``event.request.url``, ``.hop``), so the hook alone is enough.

    python examples/redirect_reuse.py           # loopback: localhost -> 127.0.0.1 redirect
    python examples/redirect_reuse.py URL       # e.g. https://google.com

Output (loopback; Go's google.com run printed the same two 'false' lines)::

    Connection reused for http://localhost:PORT/? False
    Connection reused for http://127.0.0.1:PORT/? False
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

import aiotrace


def got_conn(event: aiotrace.GotConnInfo) -> None:
    print(f"Connection reused for {event.request.url}? {event.reused}")


async def main(url: str | None) -> None:
    runner = None
    if url is None:  # like google.com -> www.google.com: a redirect to another host

        async def to_other_host(request: web.Request) -> web.Response:
            if request.host.startswith("localhost"):
                raise web.HTTPFound(f"http://127.0.0.1:{request.url.port}/")
            return web.Response(text="hello")

        app = web.Application()
        app.router.add_get("/", to_other_host)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://localhost:{runner.addresses[0][1]}/"
    try:
        trace = aiotrace.ClientTrace(got_conn=got_conn)
        async with aiotrace.traced_session(trace=trace) as s, s.get(url) as resp:
            await resp.read()
    finally:
        if runner is not None:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
