"""The Go blog's first httptrace program, the aiotrace way: print DNS info and whether the
connection was reused.

    python examples/dns_and_reuse.py            # against a server it starts on loopback
    python examples/dns_and_reuse.py URL        # against any URL

Go (https://go.dev/blog/http-tracing)::

    trace := &httptrace.ClientTrace{
        DNSDone: func(dnsInfo httptrace.DNSDoneInfo) { fmt.Printf("DNS Info: %+v\\n", dnsInfo) },
        GotConn: func(connInfo httptrace.GotConnInfo) { fmt.Printf("Got Conn: %+v\\n", connInfo) },
    }
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

import aiotrace


async def main(url: str | None) -> None:
    trace = aiotrace.ClientTrace(
        dns_done=lambda e: print(f"DNS Info: host={e.host} addrs={e.addrs} err={e.err}"),
        got_conn=lambda e: print(
            f"Got Conn: reused={e.reused} was_idle={e.was_idle} "
            f"idle_time={e.idle_time:.3f}s conn={e.conn}"
        ),
    )
    runner = None
    if url is None:  # no URL given: serve one on loopback
        app = web.Application()
        app.router.add_get("/", lambda request: web.Response(text="hello"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://localhost:{runner.addresses[0][1]}/"
    try:
        async with aiotrace.traced_session() as session:
            for _ in range(2):  # the second request reuses the connection
                with aiotrace.with_client_trace(trace):
                    async with session.get(url) as resp:
                        await resp.read()
    finally:
        if runner is not None:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
