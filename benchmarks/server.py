"""The fixed-response server the benchmark client talks to, run in a process of its own.

Run as a script (``python benchmarks/server.py --certfile C --keyfile K``), not imported by the
client: the client's CPU clock must not include the server's work. It listens on 127.0.0.1 only,
one plain HTTP/1.1 socket and one TLS socket, both keep-alive, and serves two fixed bodies:

* ``/small``: 100 bytes
* ``/big``: 1 MiB

Once both sockets listen it prints one JSON line, ``{"http": PORT, "https": PORT}``, to stdout.
It stops by itself when its stdin reaches end of file (the client exited or closed the pipe), on
SIGTERM/SIGINT, or after ``--max-seconds``, whichever comes first.

The server uses uvloop when it is installed: it is a fixture, not the thing measured, and a faster
server keeps the client's wall-clock numbers about the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import ssl
import sys
import threading

from aiohttp import web

SMALL_BODY = b"x" * 100
BIG_BODY = b"y" * (1024 * 1024)


def make_app() -> web.Application:
    """Build the application with its two fixed-response routes."""
    small = SMALL_BODY
    big = BIG_BODY

    async def handle_small(request: web.Request) -> web.Response:
        return web.Response(body=small, content_type="application/octet-stream")

    async def handle_big(request: web.Request) -> web.Response:
        return web.Response(body=big, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/small", handle_small)
    app.router.add_get("/big", handle_big)
    return app


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Block on stdin in a daemon thread; its end of file means the client is gone."""
    try:
        sys.stdin.buffer.read()
    finally:
        loop.call_soon_threadsafe(stop.set)


async def serve(certfile: str, keyfile: str, max_seconds: float) -> None:
    """Serve until stdin closes, a stop signal arrives, or ``max_seconds`` pass."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certfile, keyfile)

    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    http_sock = _loopback_socket()
    https_sock = _loopback_socket()
    await web.SockSite(runner, http_sock).start()
    await web.SockSite(runner, https_sock, ssl_context=tls).start()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()

    ports = {"http": http_sock.getsockname()[1], "https": https_sock.getsockname()[1]}
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    try:
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    except TimeoutError:
        pass
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--certfile", required=True, help="PEM server certificate chain")
    parser.add_argument("--keyfile", required=True, help="PEM private key")
    parser.add_argument(
        "--max-seconds", type=float, default=3600.0, help="stop after this long at the latest"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.certfile, args.keyfile, args.max_seconds))
    else:
        uvloop.run(serve(args.certfile, args.keyfile, args.max_seconds))


if __name__ == "__main__":
    main()
