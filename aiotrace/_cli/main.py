"""The ``aiotrace`` command: trace URLs like httpstat/curl -w, per hop, or run the demo.

    aiotrace https://example.org/ -n 20 -c 4       # waterfall per hop, then p50/p95 per host
    aiotrace URL --format har -o out.har            # json | jsonl | har
    aiotrace URL --slo total=300,ttfb=100           # exit 4 when a request is slower
    aiotrace demo                                   # a loopback server, no network needed

Bad input is one line on stderr and exit status 2; a failed request is shown, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .._adapter.session import traced_session
from .._record.recorder import Recorder
from .._record.redact import Redaction

if TYPE_CHECKING:
    from .._adapter.connector import TracingConnector

__all__ = ["main"]

EXIT_FAILED, EXIT_USAGE, EXIT_SLO = 1, 2, 4
_SLO_KEYS = {"total", "ttfb", "connect", "dns", "tls", "wait", "send", "receive"}


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


# -- arguments ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aiotrace",
        description="Trace HTTP requests with aiohttp: DNS, connect, TLS, reuse, first byte, "
        "per redirect hop. 'aiotrace demo' runs against a loopback server.",
    )
    p.add_argument("urls", nargs="+", metavar="URL", help="http(s) URL(s), or 'demo'")
    p.add_argument("-X", "--request", dest="method", default=None, help="method (default GET)")
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value' header")
    p.add_argument("-d", "--data", default=None, help="request body; @FILE reads a file")
    p.add_argument("-n", "--repeat", type=int, default=1, help="requests per URL (default 1)")
    p.add_argument("-c", "--concurrency", type=int, default=1, help="requests in flight")
    p.add_argument("--max-redirects", type=int, default=10, help="0 disables following")
    p.add_argument("--timeout", type=float, default=30.0, help="total seconds per request")
    p.add_argument("-k", "--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--cacert", default=None, help="PEM file of CA certificates to trust")
    p.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="HOST:PORT:ADDR",
        help="use ADDR for HOST:PORT (like curl)",
    )
    p.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, default=0)
    p.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6)
    p.add_argument(
        "--format", choices=("text", "json", "jsonl", "har"), default="text", help="output format"
    )
    p.add_argument("-o", "--output", default=None, help="write json/jsonl/har here")
    p.add_argument("--slo", default=None, help="e.g. total=500,ttfb=200 (ms); exit 4 if exceeded")
    p.add_argument(
        "--no-redact", action="store_true", help="show credentials in URLs (redacted by default)"
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return p


def _version() -> str:
    from .._version import __version__

    return __version__


def _parse_slo(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _SLO_KEYS:
            raise UsageError(f"--slo: expected NAME=MS with NAME in {sorted(_SLO_KEYS)}: {part!r}")
        try:
            out[key] = float(value)
        except ValueError:
            raise UsageError(
                f"--slo: {key} needs a number of milliseconds, not {value!r}"
            ) from None
        if out[key] <= 0:
            raise UsageError(f"--slo: {key} must be positive")
    return out


def _parse_headers(items: Sequence[str]) -> list[tuple[str, str]]:
    headers = []
    for item in items:
        name, sep, value = item.partition(":")
        name = name.strip()
        if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value:
            raise UsageError(f"-H: expected 'Name: value', got {item!r}")
        headers.append((name, value.strip()))
    return headers


def _parse_resolve(items: Sequence[str]) -> dict[tuple[str, int], str]:
    out = {}
    for item in items:
        host, _, rest = item.partition(":")
        port, _, addr = rest.partition(":")
        if not host or not port.isdigit() or not addr:
            raise UsageError(f"--resolve: expected HOST:PORT:ADDR, got {item!r}")
        addr = addr.strip("[]")
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
        except OSError:
            raise UsageError(f"--resolve: {addr!r} is not an IP address") from None
        out[(host.lower(), int(port))] = addr
    return out


def _parse_urls(items: Sequence[str]) -> list[URL]:
    urls = []
    for item in items:
        try:
            url = URL(item)
        except (ValueError, TypeError):
            raise UsageError(f"not a URL: {item!r}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise UsageError(f"not an http(s) URL: {item!r}")
        urls.append(url)
    return urls


def _read_data(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data.startswith("@"):
        try:
            with open(data[1:], "rb") as f:
                return f.read()
        except OSError as e:
            raise UsageError(f"-d: cannot read {data[1:]!r}: {e.strerror}") from None
    return data.encode()


def _ssl_setting(args: argparse.Namespace) -> ssl.SSLContext | bool:
    if args.insecure and args.cacert:
        raise UsageError("-k and --cacert do not go together")
    if args.insecure:
        return False
    if args.cacert:
        ctx = ssl.create_default_context()
        try:
            ctx.load_verify_locations(args.cacert)
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"--cacert: cannot load {args.cacert!r}: {e}") from None
        return ctx
    return True


class _OverrideResolver(AbstractResolver):
    """``--resolve``: fixed addresses for some host:port pairs, DNS for the rest."""

    def __init__(self, overrides: dict[tuple[str, int], str]) -> None:
        self._overrides = overrides
        self._fallback = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addr = self._overrides.get((host.lower(), port))
        if addr is None:
            return await self._fallback.resolve(host, port, family)
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        return [ResolveResult(hostname=host, host=addr, port=port, family=fam, proto=0, flags=0)]

    async def close(self) -> None:
        await self._fallback.close()


# -- running -----------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, urls: list[URL]) -> tuple[Recorder, list[BaseException]]:
    headers = _parse_headers(args.header)
    data = _read_data(args.data)
    ssl_setting = _ssl_setting(args)
    overrides = _parse_resolve(args.resolve)
    if args.repeat < 1 or args.concurrency < 1:
        raise UsageError("-n and -c must be at least 1")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    redaction = Redaction(enabled=not args.no_redact)
    rec = Recorder(redaction=redaction)
    method = args.method or ("POST" if data is not None else "GET")
    kw: dict[str, Any] = {"family": args.family}
    if overrides:
        kw["resolver"] = _OverrideResolver(overrides)
    from .._adapter.connector import TracingConnector

    connector: TracingConnector = TracingConnector(limit=max(args.concurrency, 1), **kw)
    failures: list[BaseException] = []
    sem = asyncio.Semaphore(args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with traced_session(connector=connector, trace=rec, timeout=timeout) as session:

        async def one(url: URL) -> None:
            async with sem:
                try:
                    async with session.request(
                        method,
                        url,
                        headers=headers,
                        data=data,
                        ssl=ssl_setting,
                        allow_redirects=args.max_redirects > 0,
                        max_redirects=max(args.max_redirects, 1),
                    ) as resp:
                        await resp.read()
                except (TimeoutError, aiohttp.ClientError, OSError) as e:
                    failures.append(e)

        await asyncio.gather(*(one(u) for u in urls for _ in range(args.repeat)))
    return rec, failures


def _slo_violations(rec: Recorder, slo: dict[str, float]) -> list[str]:
    out = []
    for t in rec.requests:
        timings, marks = t.timings, t.marks
        values = {
            "total": timings.total,
            "ttfb": marks.starttransfer,
            "connect": timings.connect,
            "dns": timings.dns,
            "tls": timings.tls,
            "wait": timings.wait,
            "send": timings.send,
            "receive": timings.receive,
        }
        for key, limit in slo.items():
            value = values.get(key)
            if value is not None and value > limit:
                out.append(f"request {t.id}: {key} {value:.1f} ms > {limit:g} ms")
    return out


def _emit(rec: Recorder, args: argparse.Namespace) -> None:
    fmt = args.format
    if fmt == "text":
        from .render import render_text

        render_text(rec, repeat=args.repeat > 1 or len(rec.requests) > 1)
        return
    if fmt == "har":
        text = json.dumps(rec.to_har(), indent=2)
    elif fmt == "json":
        text = json.dumps(rec.to_dicts(), indent=2)
    else:
        text = "\n".join(json.dumps(d, separators=(",", ":")) for d in rec.to_dicts())
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiotrace`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from .demo import demo_main

        return demo_main(argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its one-line usage error
        return EXIT_USAGE if e.code not in (0, None) else 0
    try:
        urls = _parse_urls(args.urls)
        slo = _parse_slo(args.slo)
        if args.output and args.format == "text":
            raise UsageError("-o needs --format json, jsonl or har")
        rec, failures = _run_loop(args, urls)
    except UsageError as e:
        print(f"aiotrace: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    _emit(rec, args)
    violations = _slo_violations(rec, slo)
    for line in violations:
        print(f"aiotrace: SLO exceeded: {line}", file=sys.stderr)
    if failures:
        return EXIT_FAILED
    return EXIT_SLO if violations else 0


def _run_loop(args: argparse.Namespace, urls: list[URL]) -> tuple[Recorder, list[BaseException]]:
    return asyncio.run(_run(args, urls))
