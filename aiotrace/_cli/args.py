"""``aiotrace URL``'s arguments: curl's flags, parsed and checked into one :class:`Options`.

Every check happens here, before anything is sent: a malformed URL, an unknown scheme, a bad
header, an unreadable ``@file``, a bad ``--resolve`` or ``-w`` variable all raise
:class:`UsageError`, which the command prints as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from textwrap import fill
from typing import Any, NoReturn

from aiohttp import BasicAuth
from yarl import URL

from aiotrace import Redaction

from .writeout import WriteOut

__all__ = ["SLO_KEYS", "Options", "UsageError", "parse_options", "url_parser"]

SLO_KEYS = ("total", "ttfb", "blocked", "dns", "connect", "tls", "send", "wait", "receive")

# RFC 9110 token characters: what a header name may hold.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

EXAMPLES = """\
examples:
  aiotrace https://example.org/                 DNS, TCP, TLS, headers and httpstat's waterfall
  aiotrace -L http://example.org/               follow redirects: one block per hop
  aiotrace -I https://example.org/              HEAD: status line and headers only
  aiotrace -s -o /dev/null -w '%{http_code} %{time_total}\\n' URL    curl's --write-out
  aiotrace -v URL                               every hook as it fires, one line each
  aiotrace -n 50 -c 5 URL                       p50/p95/p99 per phase and host, reuse, errors
  aiotrace -n 1000 -c 20 --sample 0.1 URL       the same from a 10% sample, the counts exact
  aiotrace --json URL | jq '.[0].hops'          the timelines as JSON (or --jsonl, --har FILE)
  aiotrace --slo total=300,ttfb=100 URL         exit status 4 when a request is slower
  aiotrace --resolve example.org:443:127.0.0.1 -H 'Accept: text/html' -d @body.json URL
  aiotrace demo                                 a guided tour on loopback, no network needed

exit status: 0 ok (whatever the HTTP status), 1 a request failed (the line says in which
phase: DNS, connect, TLS, timeout, ...), 2 bad input, 4 an --slo was broken.
Proxies: HTTP_PROXY, HTTPS_PROXY and NO_PROXY are honoured (aiohttp's trust_env).
Colour on a terminal only; NO_COLOR=1 turns it off.
"""


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (raised, never printed with the usage)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see aiotrace --help)")


def _formatter(argv: Sequence[str]) -> type[argparse.HelpFormatter]:
    """rich-argparse's formatter when help is asked for (only then: importing it costs)."""
    if not any(arg in ("-h", "--help") for arg in argv):
        return argparse.RawDescriptionHelpFormatter
    try:
        from rich_argparse import RawDescriptionRichHelpFormatter
    except ImportError:  # the cli extra is missing: plain help
        return argparse.RawDescriptionHelpFormatter

    class Help(RawDescriptionRichHelpFormatter):
        group_name_formatter = str.capitalize  # "What to send", not "What To Send"

    return Help


class _DataAction(argparse.Action):
    """``-d`` and ``--data-binary`` share one ordered list, as curl joins them with ``&``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def url_parser(
    subcommands: Sequence[tuple[str, str]] = (), argv: Sequence[str] = ()
) -> argparse.ArgumentParser:
    """The parser of ``aiotrace [options] URL...``; ``subcommands`` (name, summary) are listed
    in the help; ``argv``: the arguments it will parse (rich help if they ask for help)."""
    from .._version import __version__

    listed = "".join(f"  aiotrace {name:<12} {summary}\n" for name, summary in subcommands)
    p = _Parser(
        prog="aiotrace",
        usage="aiotrace [options] URL...\n       aiotrace {demo"
        + "".join(f",{name}" for name, _ in subcommands if name != "demo")
        + "} ...",
        description=fill(
            "Trace HTTP requests made with aiohttp, the way curl -w and httpstat show them, "
            "per redirect hop: DNS lookup, TCP connect, TLS handshake, whether a pooled "
            "connection was reused (and why not), time waiting for the pool, server "
            "processing and content transfer.",
            width=88,
        )
        + (f"\n\nsubcommands:\n{listed}" if listed else ""),
        epilog=EXAMPLES,
        formatter_class=_formatter(argv),
        allow_abbrev=False,
    )
    p.add_argument("urls", nargs="*", metavar="URL", help="http:// or https:// (http:// if none)")

    send = p.add_argument_group("what to send")
    send.add_argument("-X", "--request", dest="method", metavar="METHOD", help="method")
    send.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
        help="extra header (repeatable); 'NAME:' drops one aiohttp adds",
    )  # fmt: skip
    send.add_argument(
        "-d", "--data", dest="data", action=_DataAction, const="text", metavar="DATA",
        help="body, POST unless -X; @FILE reads a file without its newlines, @- stdin",
    )  # fmt: skip
    send.add_argument(
        "--data-binary", dest="data", action=_DataAction, const="binary", metavar="DATA",
        help="body as is; @FILE reads a file byte for byte",
    )  # fmt: skip
    send.add_argument("-A", "--user-agent", metavar="NAME", help="User-Agent header")
    send.add_argument(
        "-u", "--user", metavar="USER:PASSWORD", help="basic auth (redacted in every output)"
    )

    conn = p.add_argument_group("where and how to connect")
    conn.add_argument("-L", "--location", action="store_true", help="follow redirects")
    conn.add_argument(
        "--max-redirs", type=int, default=50, metavar="N",
        help="redirects -L follows at most (default 50, -1: no limit)",
    )  # fmt: skip
    conn.add_argument("-k", "--insecure", action="store_true", help="do not verify TLS")
    conn.add_argument("--cacert", metavar="FILE", help="PEM file of CA certificates to trust")
    conn.add_argument(
        "-4", "--ipv4", dest="family", action="store_const", const=socket.AF_INET, default=0,
        help="IPv4 addresses only",
    )  # fmt: skip
    conn.add_argument(
        "-6", "--ipv6", dest="family", action="store_const", const=socket.AF_INET6,
        help="IPv6 addresses only",
    )  # fmt: skip
    conn.add_argument(
        "--resolve", action="append", default=[], metavar="HOST:PORT:ADDR[,ADDR]",
        help="use ADDR for HOST:PORT instead of DNS (repeatable)",
    )  # fmt: skip
    conn.add_argument(
        "--dns-servers", metavar="ADDR[:PORT][,...]", help="ask these DNS servers (aiodns)"
    )
    conn.add_argument(
        "--connect-timeout", type=float, metavar="SECONDS",
        help="time for DNS, TCP and TLS (and a pool wait)",
    )  # fmt: skip
    conn.add_argument("-m", "--max-time", type=float, metavar="SECONDS", help="time per request")

    show = p.add_argument_group("what to show")
    show.add_argument("-I", "--head", action="store_true", help="HEAD: status and headers only")
    show.add_argument(
        "-i", "--include", action="store_true", help="headers before the body (-o, --body)"
    )
    show.add_argument("-o", "--output", metavar="FILE", help="write the body to FILE (- stdout)")
    show.add_argument(
        "-O", "--remote-name", action="store_true", help="write the body to the URL's file name"
    )
    show.add_argument(
        "--body", action="store_true", help="print the body (default: saved to a temp file)"
    )
    show.add_argument(
        "-w", "--write-out", metavar="FORMAT",
        help="curl's variables after each request, e.g. '%%{time_total}\\n'; @FILE reads it",
    )  # fmt: skip
    show.add_argument(
        "-v", "--verbose", action="store_true", help="each hook as it fires, on stderr"
    )
    show.add_argument("-s", "--silent", action="store_true", help="no trace view and no error line")
    show.add_argument("-S", "--show-error", action="store_true", help="the error line with -s")
    show.add_argument("--json", action="store_true", help="the timelines as one JSON document")
    show.add_argument("--jsonl", action="store_true", help="one JSON line per request")
    show.add_argument("--har", metavar="FILE", help="a HAR 1.2 file, one entry per hop (- stdout)")
    show.add_argument(
        "--format", choices=("text", "json", "jsonl", "har"), help="the same as --json etc."
    )
    show.add_argument(
        "--no-redact", action="store_true", help="show credentials (hidden by default)"
    )

    repeat = p.add_argument_group("repeat and check")
    repeat.add_argument(
        "-n", "--repeat", type=int, default=1, metavar="N", help="requests per URL (default 1)"
    )
    repeat.add_argument(
        "-c", "--concurrency", type=int, default=1, metavar="C", help="requests in flight"
    )
    repeat.add_argument(
        "--sample", type=float, metavar="RATIO",
        help="with -n: trace this share of the requests (0 < RATIO <= 1); requests, statuses "
        "and errors still count every request, the phases, reuse and new connections are "
        "estimates from the sample, and --slo checks the sample; --json, --jsonl and --har "
        "hold the sampled requests (and the failed or 5xx ones, without timings)",
    )  # fmt: skip
    repeat.add_argument(
        "--sample-seed", type=int, metavar="N", help="the same sample every run (with --sample)"
    )
    repeat.add_argument(
        "--slo", metavar="NAME=MS,...",
        help=f"exit 4 when a request is slower; NAME in {', '.join(SLO_KEYS)}",
    )  # fmt: skip
    p.add_argument("--version", action="version", version=f"aiotrace {__version__}")
    return p


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What ``aiotrace URL...`` was asked to do, checked."""

    urls: tuple[URL, ...]
    method: str
    headers: tuple[tuple[str, str], ...]
    skip_headers: frozenset[str]
    data: bytes | None
    auth: BasicAuth | None
    follow: bool
    max_redirects: int  # aiohttp's meaning (see _max_redirects)
    ssl: ssl.SSLContext | bool
    family: int
    resolve: dict[tuple[str, int], tuple[str, ...]]
    dns_servers: tuple[str, ...]
    connect_timeout: float | None
    max_time: float | None
    head: bool
    include: bool
    output: str | None  # a path, "-" for stdout, None: see body / remote_name
    remote_name: bool
    body: bool
    write_out: WriteOut | None
    verbose: bool
    silent: bool
    show_error: bool
    json: bool
    jsonl: bool
    har: str | None
    repeat: int
    concurrency: int
    sample: float | None  # --sample: the ratio of requests traced (None: every one)
    sample_seed: int | None
    slo: dict[str, float]
    redaction: Redaction
    secrets: tuple[str, ...]  # credentials given on the command line, scrubbed from errors

    @property
    def requests(self) -> int:
        """How many requests the command makes."""
        return len(self.urls) * self.repeat

    @property
    def text(self) -> bool:
        """The trace view goes to stdout (not JSON, not silenced)."""
        return not (self.silent or self.json or self.jsonl or self.har == "-")


def parse_options(
    argv: Sequence[str], subcommands: Sequence[tuple[str, str]] = ()
) -> Options | None:
    """The checked options, or ``None`` when argparse already answered (``--help``)."""
    parser = url_parser(subcommands, argv)
    argv = list(argv)
    for i, arg in enumerate(argv[:-1]):
        # curl's "--max-redirs -1": argparse takes a negative number for an option when the
        # parser has options like -4 and -6, so give it the value attached.
        if arg == "--max-redirs" and re.fullmatch(r"-\d+", argv[i + 1]):
            argv[i : i + 2] = [f"--max-redirs={argv[i + 1]}"]
            break
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit as e:  # --help, --version: printed; exit 0
        if e.code not in (0, None):
            raise UsageError("bad arguments (see aiotrace --help)") from None
        return None
    return _options(args)


def _options(args: argparse.Namespace) -> Options:
    if not args.urls:
        raise UsageError("no URL given (aiotrace --help; 'aiotrace demo' for a tour)")
    urls = tuple(_url(item) for item in args.urls)
    _check_numbers(args)
    fmt = args.format
    if args.json and args.jsonl:
        raise UsageError("--json and --jsonl do not go together")
    json_out = args.json or fmt == "json"
    jsonl_out = args.jsonl or fmt == "jsonl"
    har = args.har if args.har is not None else ("-" if fmt == "har" else None)
    if har == "-" and (json_out or jsonl_out):
        raise UsageError("--har - and --json/--jsonl would share stdout: give --har a FILE")
    if fmt == "text" and (args.json or args.jsonl or args.har):
        raise UsageError("--format text does not go with --json, --jsonl or --har")
    if har not in (None, "-"):
        _check_writable(har, "--har")

    headers, skip = _headers(args.header)
    secrets: list[str] = []
    if args.user_agent is not None:
        if "\n" in args.user_agent or "\r" in args.user_agent:
            raise UsageError("-A: a user agent is one line")
        headers.append(("User-Agent", args.user_agent))
    auth = None
    if args.user is not None:
        user, sep, password = args.user.partition(":")
        if not sep or not user:
            raise UsageError("-u: expected USER:PASSWORD")
        if any(name.lower() == "authorization" for name, _ in headers):
            raise UsageError("-u and -H 'Authorization: ...' do not go together")
        auth = BasicAuth(user, password)
        secrets.append(password)
        # curl: -u wins over credentials in the URL (aiohttp would refuse both)
        secrets += [u.password for u in urls if u.password]
        urls = tuple(u.with_user(None) if u.raw_user is not None else u for u in urls)
    redaction = Redaction(enabled=not args.no_redact)
    for name, value in headers:
        if redaction.header(name, value) != value and value:
            secrets.append(value)
    for url in urls:
        if url.password:
            secrets.append(url.password)
        if url.raw_query_string:
            secrets += [v for k, v in url.query.items() if k.lower() in redaction.query_params]

    data = _data(args.data)
    if data is not None and not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    method = args.method or ("HEAD" if args.head else "POST" if data is not None else "GET")
    if not _TOKEN.match(method):
        raise UsageError(f"-X: not a method: {args.method!r}")

    output, remote_name, body = args.output, args.remote_name, args.body
    if sum(bool(x) for x in (output, remote_name, body)) > 1:
        raise UsageError("-o, -O and --body do not go together")
    if (output or remote_name or body) and len(urls) * args.repeat > 1:
        raise UsageError("-o, -O and --body take one request (one URL, no -n)")
    if output == "-":
        output, body = None, True
    if body and (json_out or jsonl_out or har == "-"):
        raise UsageError("the body and the JSON would share stdout: write the body with -o FILE")
    if output:
        _check_writable(output, "-o")
    elif remote_name:
        name = urls[0].name
        if not name:
            raise UsageError(f"-O: no file name in {redaction.url(urls[0])}")
        output = name
        _check_writable(output, "-O")

    write_out = None
    if args.write_out is not None:
        template = args.write_out
        if template.startswith("@"):
            template = _read(template[1:], "-w").decode("utf-8", "replace")
        try:
            write_out = WriteOut(template)
        except ValueError as e:
            raise UsageError(f"-w: {e}") from None

    return Options(
        urls=urls,
        method=method.upper(),
        headers=tuple(headers),
        skip_headers=frozenset(skip),
        data=data,
        auth=auth,
        follow=args.location,
        max_redirects=_max_redirects(args.max_redirs),
        ssl=_ssl(args),
        family=args.family,
        resolve=_resolve(args.resolve),
        dns_servers=_dns_servers(args.dns_servers),
        connect_timeout=args.connect_timeout,
        max_time=args.max_time,
        head=args.head,
        include=args.include,
        output=output,
        remote_name=remote_name,
        body=body,
        write_out=write_out,
        verbose=args.verbose,
        silent=args.silent,
        show_error=args.show_error or not args.silent,
        json=json_out,
        jsonl=jsonl_out,
        har=har,
        repeat=args.repeat,
        concurrency=args.concurrency,
        sample=args.sample,
        sample_seed=args.sample_seed,
        slo=_slo(args.slo),
        redaction=redaction,
        secrets=tuple(s for s in secrets if s),
    )


def _url(item: str) -> URL:
    text = item if "://" in item else f"http://{item}"  # curl's default scheme
    try:
        url = URL(text)
        host, port = url.host, url.port
    except (ValueError, TypeError, UnicodeError):
        raise UsageError(f"malformed URL: {item!r}") from None
    if url.scheme not in ("http", "https"):
        raise UsageError(f"unsupported scheme {url.scheme!r} (http or https): {item!r}")
    if not host or any(c in host for c in ' \t\r\n/\\<>"{}|^`') or port == 0:
        raise UsageError(f"malformed URL: {item!r}")
    return url


def _check_numbers(args: argparse.Namespace) -> None:
    if args.repeat < 1:
        raise UsageError("-n must be at least 1")
    if args.concurrency < 1:
        raise UsageError("-c must be at least 1")
    for flag, value in (("--connect-timeout", args.connect_timeout), ("-m", args.max_time)):
        if value is not None and not value > 0:
            raise UsageError(f"{flag} must be a positive number of seconds")
    if args.max_redirs < -1:
        raise UsageError("--max-redirs must be -1 (no limit) or more")
    check_sample(args.sample, args.sample_seed)
    if args.sample is not None:
        if args.repeat < 2:
            raise UsageError("--sample samples a repeated run: give -n N (N > 1)")
        if args.write_out is not None:
            raise UsageError("-w reads every request's timings: it does not go with --sample")


def check_sample(sample: float | None, seed: int | None) -> None:
    """``--sample RATIO`` and ``--sample-seed N``, as the command and ``crawl`` take them."""
    if sample is not None and not 0 < sample <= 1:
        raise UsageError(f"--sample must be a ratio in (0, 1], e.g. 0.1, not {sample:g}")
    if seed is not None and sample is None:
        raise UsageError("--sample-seed goes with --sample")


def _max_redirects(curl_max: int) -> int:
    """curl's --max-redirs N (N redirects followed) as aiohttp's ``max_redirects``: aiohttp
    raises when the count of redirects reaches it, and 0 means no limit."""
    return 0 if curl_max < 0 else curl_max + 1


def _headers(items: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    headers: list[tuple[str, str]] = []
    skip: list[str] = []
    for item in items:
        if item.endswith(";") and ":" not in item:  # curl: 'Name;' sends an empty value
            name, value, empty = item[:-1].strip(), "", True
        else:
            name, sep, value = item.partition(":")
            name, value, empty = name.strip(), value.strip(), False
            if not sep:
                raise UsageError(f"-H: expected 'Name: value', got {item!r}")
        if not _TOKEN.match(name):
            raise UsageError(f"-H: {name!r} is not a header name")
        if "\r" in value or "\n" in value:
            raise UsageError(f"-H: the value of {name} spans lines")
        if not value and not empty:
            skip.append(name)  # curl: 'Name:' removes a header the client would add
        else:
            headers.append((name, value))
    return headers, skip


def _read(path: str, flag: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{flag}: cannot read {path!r}: {e.strerror or e}") from None


def _data(items: Sequence[tuple[str, str]] | None) -> bytes | None:
    if not items:
        return None
    parts = []
    for kind, value in items:
        if value.startswith("@"):
            raw = _read(value[1:], "-d" if kind == "text" else "--data-binary")
            if kind == "text":  # curl -d @file drops carriage returns and newlines
                raw = raw.replace(b"\r", b"").replace(b"\n", b"")
            parts.append(raw)
        else:
            parts.append(value.encode())
    return b"&".join(parts)


def _check_writable(path: str, flag: str) -> None:
    if os.path.isdir(path):
        raise UsageError(f"{flag}: {path!r} is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"{flag}: cannot write in {folder!r}")


def _ssl(args: argparse.Namespace) -> ssl.SSLContext | bool:
    if args.insecure and args.cacert:
        raise UsageError("-k and --cacert do not go together")
    if args.insecure:
        return False
    if args.cacert:
        ctx = ssl.create_default_context()
        try:
            ctx.load_verify_locations(args.cacert)
        except (OSError, ssl.SSLError) as e:
            reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or e
            raise UsageError(f"--cacert: cannot load {args.cacert!r}: {reason}") from None
        return ctx
    return True


def _ip(text: str, flag: str) -> str:
    addr = text.strip().removeprefix("[").removesuffix("]")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
    except OSError:
        raise UsageError(f"{flag}: {text!r} is not an IP address") from None
    return addr


def _resolve(items: Sequence[str]) -> dict[tuple[str, int], tuple[str, ...]]:
    out = {}
    for item in items:
        host, _, rest = item.partition(":")
        port, _, addrs = rest.partition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or not addrs:
            raise UsageError(f"--resolve: expected HOST:PORT:ADDR, got {item!r}")
        out[(host.lower(), int(port))] = tuple(_ip(a, "--resolve") for a in addrs.split(","))
    return out


def _dns_servers(text: str | None) -> tuple[str, ...]:
    """curl's --dns-servers list, as c-ares' ``host:port`` / ``[v6]:port`` strings."""
    if text is None:
        return ()
    servers = []
    for item in text.split(","):
        item = item.strip()
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?|([0-9a-fA-F:]+)", item)
        if not m:
            raise UsageError(f"--dns-servers: not an address: {item!r}")
        host = _ip(m[1] or m[3] or m[5], "--dns-servers")
        port = m[2] or m[4]
        if port is not None and not 0 < int(port) < 65536:
            raise UsageError(f"--dns-servers: bad port in {item!r}")
        shown = f"[{host}]" if ":" in host else host
        servers.append(f"{shown}:{port}" if port else shown)
    return tuple(servers)


def _slo(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SLO_KEYS:
            raise UsageError(f"--slo: expected NAME=MS, NAME one of {', '.join(SLO_KEYS)}")
        try:
            out[key] = float(value)
        except ValueError:
            raise UsageError(f"--slo: {key} needs a number of milliseconds") from None
        if not out[key] > 0:
            raise UsageError(f"--slo: {key} must be a positive number of milliseconds")
    return out
