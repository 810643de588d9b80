"""``aiotrace crawl``: trace a list of URLs, many at once; a per-host summary and reports.

    aiotrace crawl urls.txt --concurrency 50 -L         # summary per host on the terminal
    aiotrace crawl - --rate 20 --json < urls.txt        # one JSON document on stdout
    aiotrace crawl urls.txt --har crawl.har --jsonl crawl.jsonl --slo total=500

The list has one URL a line; blank lines and lines starting with ``#`` are skipped, a bad line
is reported on stderr with its line number and skipped.

Exit status: 0 every URL got a response (whatever its HTTP status, as curl without
``--fail``); 1 some request got none (refused, timed out, TLS failure, ...), as ``aiotrace
URL``; 2 bad input (an option, an unreadable list, a list with no URL in it); 4 a ``--slo``
limit was exceeded (and no request failed); 130 interrupted by SIGINT or SIGTERM: requests in
flight are cancelled and reported as such, and every report is still written.

``--sample RATIO`` traces a share of the requests (``Crawler._trace``); the summary and the
reports say which figures are the sample's (``crawl_report``, ``crawl_view``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from textwrap import fill
from typing import IO, TYPE_CHECKING, Any, NoReturn

import aiohttp
from yarl import URL

from .._adapter.connector import TracingConnector
from .._adapter.session import traced_session
from .._record.recorder import Recorder
from .._record.redact import DEFAULT_REDACTION, Redaction
from .._record.stalls import LoopStallMonitor
from .._report.html import document_from_recorder, render_html
from .._trace.clock import wall_time
from .._trace.hooks import ClientTrace, compose
from .args import (
    SLO_KEYS,
    UsageError,
    _formatter,
    _headers,
    _Parser,
    _resolve,
    _slo,
    _ssl,
    check_sample,
)
from .crawl_report import (
    CrawlCounts,
    CrawlReport,
    CrawlTally,
    crawl_document,
    summarize,
    write_document,
)
from .exits import EXIT_FAILED, EXIT_SLO, EXIT_USAGE, PHASE_LABELS
from .fetch import _OverrideResolver

if TYPE_CHECKING:
    import ssl
    from types import ModuleType

    from .crawl_view import ProgressView

__all__ = ["EXIT_INTERRUPTED", "CrawlOptions", "Crawler", "crawl_main", "read_url_list"]

EXIT_INTERRUPTED = 130


@dataclass(frozen=True, slots=True, kw_only=True)
class BadLine:
    """A line of the URL list that is not an http(s) URL: reported, then skipped."""

    line: int
    text: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "text": self.text, "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlOptions:
    """What a crawl does, parsed and checked from the command line."""

    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    skip_headers: tuple[str, ...] = ()  # -H 'Name:': a header aiohttp would add, not sent
    concurrency: int = 20
    limit_per_host: int = 0
    follow_redirects: bool = False
    max_time: float = 30.0
    ssl: ssl.SSLContext | bool = True
    resolve: tuple[tuple[tuple[str, int], tuple[str, ...]], ...] = ()
    rate: float | None = None
    slo: tuple[tuple[str, float], ...] = ()
    redaction: Redaction = DEFAULT_REDACTION
    keep_requests: bool = False  # a per-request output was asked: keep every timeline
    sample: float | None = None  # --sample: the ratio of requests traced (None: every one)
    sample_seed: int | None = None  # --sample-seed: the same sample every run


# -- the URL list ------------------------------------------------------------------------------


def _check_url(text: str) -> str | None:
    """Why ``text`` is not a URL to crawl, or ``None`` if it is one."""
    if any(c.isspace() for c in text):
        return "not a URL (contains whitespace)"
    try:
        url = URL(text)
        port = url.port
    except (ValueError, TypeError) as e:
        return f"not a URL ({e})" if str(e) else "not a URL"
    if url.scheme not in ("http", "https") or not url.raw_host:
        return "not an http(s) URL"
    if port is None or not 0 < port < 65536:
        return "bad port"
    return None


def parse_url_lines(lines: Iterator[bytes]) -> tuple[list[str], list[BadLine]]:
    """The URLs of a list (one a line, ``#`` comments and blank lines skipped) and its bad
    lines, numbered from 1."""
    urls: list[str] = []
    bad: list[BadLine] = []
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            bad.append(BadLine(line=number, text=raw.decode("utf-8", "replace").strip(),
                               reason="not UTF-8"))  # fmt: skip
            continue
        if not text or text.startswith("#"):
            continue
        reason = _check_url(text)
        if reason is None:
            urls.append(text)
        else:
            bad.append(BadLine(line=number, text=text, reason=reason))
    return urls, bad


def read_url_list(source: str) -> tuple[list[str], list[BadLine]]:
    """Read the list at ``source`` (``-``: stdin) whole, before the crawl starts: so the
    progress bar knows the total, and bad lines are reported before any request."""
    if source == "-":
        return parse_url_lines(iter(sys.stdin.buffer.readline, b""))
    try:
        with open(source, "rb") as f:
            return parse_url_lines(iter(f.readline, b""))
    except OSError as e:
        raise UsageError(f"cannot read {source!r}: {e.strerror or e}") from None


# -- the crawl ---------------------------------------------------------------------------------


class Crawler:
    """Runs one crawl: ``concurrency`` workers take the URLs in order, each request traced.

    Counters say at any moment what became of every URL (``counts``). ``stop()`` (on SIGINT
    or SIGTERM) lets no worker take another URL and cancels the requests in flight; each is
    then counted as cancelled, and its timeline ends with the cancellation.
    """

    def __init__(self, options: CrawlOptions, urls: Sequence[str]) -> None:
        self.options = options
        self.urls = urls
        # The loop-stall monitor: a callback every 10 ms, so that each phase says how much
        # of it the event loop was blocked (the crawler's own work, not the server's).
        self.monitor = LoopStallMonitor()
        # Under --sample, every request is still counted (requests, statuses, errors, the
        # time to its response); the phases come from the sample, and a failed or 5xx request
        # the sampler skipped is kept anyway (keep_errors), with what the boundary saw.
        sampling = options.sample is not None
        self.rec = Recorder(
            aggregate_only=not options.keep_requests,
            redaction=options.redaction,
            loop_stalls=self.monitor,
            sample=options.sample,
            sample_seed=options.sample_seed,
            keep_errors=sampling,
        )
        self.tally = CrawlTally(options.redaction, dict(options.slo), self.monitor)
        self.ok = self.failed = self.cancelled = self.started = 0
        self.in_flight = 0
        self.interrupted = False
        self.started_at = time.time()
        self.elapsed_s = 0.0
        self._next = 0
        self._workers: list[asyncio.Task[None]] = []

    @property
    def finished(self) -> int:
        return self.ok + self.failed + self.cancelled

    def counts(self, bad_lines: int = 0) -> CrawlCounts:
        return CrawlCounts(
            urls=len(self.urls),
            bad_lines=bad_lines,
            ok=self.ok,
            failed=self.failed,
            cancelled=self.cancelled,
            not_started=len(self.urls) - self.started,
        )

    def stop(self) -> None:
        """Take no more URLs; cancel the requests in flight."""
        if self.interrupted:
            return
        self.interrupted = True
        for task in self._workers:
            task.cancel()

    async def run(self, progress: ProgressView | None = None) -> None:
        """Crawl every URL (until ``stop()``)."""
        o = self.options
        t0 = time.perf_counter()
        self.started_at = time.time()
        kw: dict[str, Any] = {}
        if o.resolve:
            kw["resolver"] = _OverrideResolver(dict(o.resolve), aiohttp.DefaultResolver())
        connector = TracingConnector(limit=o.concurrency, limit_per_host=o.limit_per_host, **kw)
        limiter = None
        if o.rate is not None:
            from aiolimiter import AsyncLimiter

            # Bursts of at most a tenth of a second's worth (and at least one request), so
            # that the requests are spread evenly rather than sent a second's worth at once.
            burst = max(1.0, o.rate / 10)
            limiter = AsyncLimiter(burst, burst / o.rate)
        trace = self._trace()
        session = traced_session(
            connector=connector,
            trace=trace,
            timeout=aiohttp.ClientTimeout(total=o.max_time),
            cookie_jar=aiohttp.DummyCookieJar(),  # like curl: no cookies carried over
        )
        ticker = None
        async with self.monitor, session:
            self._workers = [
                asyncio.create_task(self._worker(session, limiter))
                for _ in range(min(o.concurrency, len(self.urls)))
            ]
            if progress is not None:
                ticker = asyncio.create_task(self._tick(progress))
            try:
                await asyncio.gather(*self._workers, return_exceptions=True)
            finally:
                if ticker is not None:
                    ticker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ticker
                    progress.update(self)  # type: ignore[union-attr]
        self.elapsed_s = time.perf_counter() - t0

    def _trace(self) -> ClientTrace | None:
        """The session's trace: the Recorder's, then the tally's (which reads the stall book
        the Recorder's observer keeps up to date). Under ``--sample`` both observers ride on
        one sampling trace, so that a request is decided once and the tally sees the same
        sample as the Recorder (composed with the tally's unsampled trace, every request
        would be traced for it, and sampling would save nothing); the Recorder's own
        ``on_unsampled`` still counts, or keeps, every request the sampler skips."""
        o = self.options
        if o.sample is None:
            return compose(self.rec.trace, self.tally.trace)
        return ClientTrace(
            sample=o.sample, sample_seed=o.sample_seed, _observers=(self.rec, self.tally)
        )

    async def _tick(self, progress: ProgressView) -> None:
        while True:
            progress.update(self)
            await asyncio.sleep(0.2)

    def _take(self) -> str | None:
        if self.interrupted or self._next >= len(self.urls):
            return None
        url = self.urls[self._next]
        self._next += 1
        return url

    async def _worker(self, session: aiohttp.ClientSession, limiter: Any) -> None:
        o = self.options
        method, headers, ssl_setting = o.method, list(o.headers), o.ssl
        follow = o.follow_redirects
        kw: dict[str, Any] = {"skip_auto_headers": o.skip_headers} if o.skip_headers else {}
        while (url := self._take()) is not None:
            if limiter is not None:
                try:
                    await limiter.acquire()
                except asyncio.CancelledError:  # taken but never sent: not started
                    return
            self.started += 1
            self.in_flight += 1
            try:
                async with session.request(
                    method, url, headers=headers, ssl=ssl_setting, allow_redirects=follow, **kw
                ) as resp:
                    # Read the body to its end without keeping it.
                    while await resp.content.readany():
                        pass
            except asyncio.CancelledError:
                self.cancelled += 1
                return
            except Exception:  # recorded by the Recorder with its kind; the crawl goes on
                self.failed += 1
            else:
                self.ok += 1
            finally:
                self.in_flight -= 1


# -- the command -------------------------------------------------------------------------------


class _CrawlParser(_Parser):
    """The command's parser: a usage error is one line, pointing at this command's help."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see aiotrace crawl --help)")


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of ``aiotrace crawl``: curl's flags where they mean the same as for one URL
    (``args.py``); a usage error is one line (``UsageError``)."""
    p = _CrawlParser(
        prog="aiotrace crawl",
        description=fill(
            "Trace a list of URLs concurrently: a summary per host (errors, connection "
            "reuse and why not, pool waits, event-loop stalls, p50/p90/p99 of each phase), "
            "the slowest requests, and JSON, JSONL, HAR and HTML reports. Exit status: 0 "
            "every URL got a response, 1 some request failed, 2 bad input, 4 an --slo was "
            "broken, 130 interrupted (the reports are still written).",
            width=88,
        ),
        formatter_class=_formatter(argv),
    )
    p.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="one URL a line ('-' or none: stdin)"
    )
    send = p.add_argument_group("what to send")
    send.add_argument("-X", "--request", dest="method", default="GET", help="method (GET)")
    send.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
        help="a header for every request; repeatable",
    )  # fmt: skip
    send.add_argument(
        "-L", "--location", action="store_true", help="follow redirects (each hop traced)"
    )
    send.add_argument(
        "-m", "--max-time", type=float, default=30.0, metavar="S", help="seconds a request (30)"
    )
    send.add_argument("-k", "--insecure", action="store_true", help="do not verify certificates")
    send.add_argument("--cacert", metavar="PEM", help="CA certificates to trust")
    send.add_argument(
        "--resolve", action="append", default=[], metavar="HOST:PORT:ADDR",
        help="use ADDR for HOST:PORT (curl's); repeatable",
    )  # fmt: skip
    pace = p.add_argument_group("how many at once")
    pace.add_argument("--concurrency", type=int, default=20, metavar="N", help="in flight (20)")
    pace.add_argument(
        "--limit-per-host", type=int, default=0, metavar="N", help="connections a host (0: any)"
    )
    pace.add_argument("--rate", type=float, metavar="R", help="at most R requests a second")
    pace.add_argument(
        "--sample", type=float, metavar="RATIO",
        help="trace this share of the requests (0 < RATIO <= 1): requests, statuses and errors "
        "still count every request, the phases, reuse, pool wait and slowest requests are "
        "estimates from the sample; a request that fails (or gets a 5xx) is kept even if not "
        "sampled. --json, --jsonl, --har and --html hold the sampled (and kept) requests "
        "only; --slo checks the sample",
    )  # fmt: skip
    pace.add_argument(
        "--sample-seed", type=int, metavar="N", help="the same sample every run (with --sample)"
    )
    out = p.add_argument_group("reports")
    out.add_argument("--json", action="store_true", help="the report as one JSON document")
    out.add_argument("--jsonl", metavar="FILE", help="every request's timeline, one a line")
    out.add_argument("--har", metavar="FILE", help="HAR 1.2, one entry a hop")
    out.add_argument("--html", metavar="FILE", help="the waterfall, one self-contained page")
    out.add_argument("--no-redact", action="store_true", help="keep credentials in URLs")
    out.add_argument(
        "--slo",
        metavar="NAME=MS,...",
        help=f"exit 4 when a request is slower; NAME in {', '.join(SLO_KEYS)}",
    )
    return p


def _options(args: argparse.Namespace) -> CrawlOptions:
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.limit_per_host < 0:
        raise UsageError("--limit-per-host must be 0 (no limit) or more")
    if not args.max_time > 0:
        raise UsageError("--max-time must be positive")
    if args.rate is not None and not args.rate > 0:
        raise UsageError("--rate must be positive")
    check_sample(args.sample, args.sample_seed)
    method = args.method.strip().upper()
    if not method or not method.isascii() or not all(c.isalnum() or c in "-_" for c in method):
        raise UsageError(f"-X: not a method: {args.method!r}")
    if args.rate is not None:
        try:
            import aiolimiter  # noqa: F401
        except ImportError:
            raise UsageError(
                "--rate needs aiolimiter: pip install 'aiohttp-httptrace[cli]'"
            ) from None
    headers, skip = _headers(args.header)
    return CrawlOptions(
        method=method,
        headers=tuple(headers),
        skip_headers=tuple(skip),
        concurrency=args.concurrency,
        limit_per_host=args.limit_per_host,
        follow_redirects=args.location,
        max_time=args.max_time,
        ssl=_ssl(args),
        resolve=tuple(_resolve(args.resolve).items()),
        rate=args.rate,
        slo=tuple(_slo(args.slo).items()),
        redaction=Redaction(enabled=not args.no_redact),
        keep_requests=bool(args.json or args.jsonl or args.har or args.html),
        sample=args.sample,
        sample_seed=args.sample_seed,
    )


def _open_outputs(args: argparse.Namespace) -> dict[str, IO[str]]:
    """Open the report files before the crawl: a path that cannot be written is bad input,
    found before the crawl rather than after it."""
    files: dict[str, IO[str]] = {}
    for kind in ("jsonl", "har", "html"):
        path = getattr(args, kind)
        if path is None:
            continue
        try:
            files[kind] = open(path, "w", encoding="utf-8")  # noqa: SIM115 closed by the caller
        except OSError as e:
            for f in files.values():
                f.close()
            raise UsageError(f"--{kind}: cannot write {path!r}: {e.strerror or e}") from None
    return files


def write_reports(
    crawler: Crawler,
    report: CrawlReport,
    bad: Sequence[BadLine],
    files: dict[str, IO[str]],
    *,
    json_out: IO[str] | None,
    title: str = "aiotrace crawl",
) -> None:
    """Write what was asked: the JSON document, the JSONL, HAR and HTML files.

    The HTML page needs its whole document at once (``document_from_recorder``); asked for,
    its timelines' dicts serve ``--json`` and ``--jsonl`` too. Otherwise those two are written
    a timeline at a time, so that no more than one timeline's dict is in memory. Each JSON
    value is encoded whole by ``json.dumps`` (the C encoder: ``json.dump`` to a file, or any
    ``indent``, encodes in Python, 2-3 times slower)."""
    rec = crawler.rec
    page = None
    if "html" in files:
        stalls = [(wall_time(a), (b - a) * 1000.0) for a, b in crawler.monitor.stalls]
        page = document_from_recorder(rec, title=title, stalls=stalls)

    def timelines() -> Iterator[dict[str, Any]]:
        if page is not None:
            return iter(page["requests"])
        return (t.to_dict(rec.redaction) for t in rec.requests)

    if "jsonl" in files:
        f = files["jsonl"]
        for timeline in timelines():
            f.write(json.dumps(timeline, separators=(",", ":")) + "\n")
    if "har" in files:
        files["har"].write(json.dumps(rec.to_har(), separators=(",", ":")) + "\n")
    if page is not None:
        files["html"].write(render_html(page))
    if json_out is not None:
        doc = crawl_document(report, [b.to_dict() for b in bad])
        if rec.aggregate_only:
            write_document(json_out, doc)
        else:
            connections = page["connections"] if page is not None else None
            if connections is None:
                connections = (c.to_dict() for c in rec.connections)
            write_document(json_out, doc, timelines(), connections)


def _install_signals(
    loop: asyncio.AbstractEventLoop, stop: Callable[[], None]
) -> list[signal.Signals]:
    """SIGINT and SIGTERM stop the crawl; a second one ends the process at once."""
    installed: list[signal.Signals] = []

    def on_signal(signum: int) -> None:
        for sig in installed:  # the next one is the default: stop now
            loop.remove_signal_handler(sig)
        stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            continue
        installed.append(sig)
    return installed


async def _crawl(crawler: Crawler, progress: ProgressView | None) -> None:
    loop = asyncio.get_running_loop()
    installed = _install_signals(loop, crawler.stop)
    try:
        await crawler.run(progress)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _view() -> ModuleType | None:
    """The terminal views (``crawl_view``), if rich is installed."""
    try:
        from . import crawl_view
    except ImportError:
        return None
    return crawl_view


def crawl_main(argv: Sequence[str]) -> int:
    """``aiotrace crawl [FILE] [options]``; returns the exit status (module docstring)."""
    try:
        args = _parser(argv).parse_args(list(argv))
    except SystemExit as e:  # --help
        return 0 if e.code in (0, None) else EXIT_USAGE
    except UsageError as e:
        print(f"aiotrace: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        options = _options(args)
        urls, bad = read_url_list(args.file)
        where = "stdin" if args.file == "-" else args.file
        for b in bad:
            print(f"aiotrace: {where} line {b.line}: {b.reason}: {b.text[:200]!r}", file=sys.stderr)
        if not urls:
            raise UsageError(f"no URL to crawl in {where}")
        if not args.json and _view() is None:
            raise UsageError(
                "the summary needs rich: pip install 'aiohttp-httptrace[cli]' (or use --json)"
            )
        files = _open_outputs(args)
    except UsageError as e:
        print(f"aiotrace: {e}", file=sys.stderr)
        return EXIT_USAGE
    crawler = Crawler(options, urls)
    view = _view()
    try:
        progress = view.make_progress(len(urls)) if view is not None else None
        try:
            asyncio.run(_crawl(crawler, progress))
        finally:
            if progress is not None:
                progress.close()
        report = summarize(
            crawler.rec,
            crawler.tally,
            crawler.counts(len(bad)),
            interrupted=crawler.interrupted,
            started_at=crawler.started_at,
            elapsed_s=crawler.elapsed_s,
            sample_rate=options.sample,
            sample_seed=options.sample_seed,
        )
        write_reports(
            crawler,
            report,
            bad,
            files,
            json_out=sys.stdout if args.json else None,
            title=f"aiotrace crawl {'stdin' if args.file == '-' else args.file}",
        )
        if view is not None and not args.json:
            view.render_summary(report)
        sys.stdout.flush()
    except KeyboardInterrupt:  # before the handlers were in place, or a second Ctrl-C
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `aiotrace crawl urls | head`: the reader is gone, that is all
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        for f in files.values():
            f.close()
    # Under --sample, the limits are checked on the sampled requests (the tally sees those).
    checked = (
        f"{crawler.finished} requests"
        if options.sample is None or options.sample >= 1
        else f"{crawler.tally.finished} sampled requests"
    )
    for breach in report.breaches:
        # As ``aiotrace URL --slo`` words it (exits.slo_lines), with the worst request's id.
        name = "time to first byte" if breach.key == "ttfb" else PHASE_LABELS.get(breach.key)
        print(
            f"aiotrace: SLO broken: {breach.key} ({name or breach.key}) "
            f"{breach.worst_ms:.1f} ms > {breach.limit_ms:g} ms in {breach.count} of "
            f"{checked} (#{breach.worst_id} {breach.worst_url})",
            file=sys.stderr,
        )
    if crawler.interrupted:
        return EXIT_INTERRUPTED
    if crawler.failed:
        return EXIT_FAILED
    return EXIT_SLO if report.breaches else 0
