"""What ``aiotrace crawl`` costs at scale: ``python -m benchmarks.crawl``.

A crawl of ``--requests`` URLs (default 10,000) over ``--hosts`` names (default 20, each sent to
127.0.0.1 by ``--resolve``) at ``--concurrency`` (default 200), against the fixed-response server
of ``server.py`` (its 100-byte ``/small``) in a process of its own. Each mode runs in a fresh
child process, so that its peak RSS is its own:

* ``summary``: the terminal summary only; the Recorder keeps aggregates, not requests;
* ``json``: ``--json``; the Recorder keeps every timeline, and the report holds them all;
* ``html``: ``--html``; the same timelines, as the self-contained HTML waterfall.

For each mode it reports requests per second of the crawl (wall clock, the server on the same
machine), the child's RSS before the crawl (after the imports) and its peak RSS, and the
report's size and the time to build and write it (the summary rendered as the terminal would
get it, or the JSON document written to a file). One run, not a comparison: on a shared
machine, read requests per second as +-20%; RSS and sizes are steady.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("summary", "json", "html")


def _rss_mb(field: str = "VmHWM") -> float:
    """This process's RSS in MiB: ``VmRSS`` now, ``VmHWM`` its peak so far (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the peak, in KiB


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one crawl in this (fresh) process and measure it."""
    from rich.console import Console

    from aiotrace._cli.crawl import Crawler, _options, _parser, read_url_list, write_reports
    from aiotrace._cli.crawl_report import summarize
    from aiotrace._cli.crawl_view import render_summary

    rss_before = _rss_mb("VmRSS")
    args = _parser().parse_args(spec["argv"])
    options = _options(args)
    urls, bad = read_url_list(args.file)
    crawler = Crawler(options, urls)
    t0 = time.perf_counter()
    asyncio.run(crawler.run())
    crawl_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = summarize(
        crawler.rec,
        crawler.tally,
        crawler.counts(len(bad)),
        interrupted=False,
        started_at=crawler.started_at,
        elapsed_s=crawler.elapsed_s,
    )
    if args.json or args.html:
        path = Path(spec["out"])
        with path.open("w", encoding="utf-8") as f:
            if args.json:
                write_reports(crawler, report, bad, {}, json_out=f)
            else:
                write_reports(crawler, report, bad, {"html": f}, json_out=None)
        size = path.stat().st_size
    else:
        buf = io.StringIO()
        render_summary(report, Console(file=buf, width=160, highlight=False))
        size = len(buf.getvalue().encode())
    write_s = time.perf_counter() - t0
    return {
        "requests": len(urls),
        "ok": crawler.ok,
        "failed": crawler.failed,
        "crawl_s": crawl_s,
        "requests_per_s": len(urls) / crawl_s,
        "rss_before_mb": rss_before,
        "rss_peak_mb": _rss_mb(),
        "report_bytes": size,
        "report_s": write_s,
    }


def _run(mode: str, urls: Path, resolve: list[str], concurrency: int, tmp: Path) -> dict[str, Any]:
    argv = [str(urls), "--concurrency", str(concurrency), *resolve]
    out_path = tmp / f"report.{mode}"
    if mode == "json":
        argv.append("--json")
    elif mode == "html":
        argv += ["--html", str(out_path)]
    spec = {"argv": argv, "out": str(out_path)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.crawl", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode}: the crawl failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.crawl``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--mode", action="append", choices=MODES, help="default: every mode")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the numbers here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return 0

    from .__main__ import Fixture

    fixture = Fixture()
    results = {}
    try:
        port = fixture.ports["http"]
        with tempfile.TemporaryDirectory(prefix="aiotrace-crawl-bench-") as tmp_name:
            tmp = Path(tmp_name)
            names = [f"h{i}.bench" for i in range(args.hosts)]
            urls = tmp / "urls.txt"
            urls.write_text(
                "".join(f"http://{names[i % args.hosts]}:{port}/small?i={i}\n"
                        for i in range(args.requests))
            )  # fmt: skip
            resolve = [a for name in names for a in ("--resolve", f"{name}:{port}:127.0.0.1")]
            for mode in args.mode or MODES:
                print(f"crawl benchmark: {mode} ...", file=sys.stderr, flush=True)
                results[mode] = _run(mode, urls, resolve, args.concurrency, tmp)
    finally:
        fixture.close()
    print(
        f"aiotrace crawl: {args.requests:,} requests over {args.hosts} hosts, concurrency "
        f"{args.concurrency} (CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs)"
    )
    print(
        f"{'mode':8} {'req/s':>7} {'ok':>7} {'RSS before':>11} {'peak RSS':>9} "
        f"{'report':>10} {'written in':>11}"
    )
    for mode, r in results.items():
        print(
            f"{mode:8} {r['requests_per_s']:7.0f} {r['ok']:7,} {r['rss_before_mb']:8.1f} MiB "
            f"{r['rss_peak_mb']:5.1f} MiB {r['report_bytes'] / 1e6:7.2f} MB "
            f"{r['report_s']:9.3f} s"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
