"""The ``aiotrace`` command: ``aiotrace [options] URL...`` traces requests the way curl and
httpstat users expect; ``aiotrace NAME ...`` runs a subcommand (``demo``, ...).

A first argument naming a subcommand selects it (no URL is ever a bare word: a URL without a
scheme still has a dot or a colon); anything else is the URL command, whose flags are
curl's (``args.py``). The run: check every argument, make the requests (``fetch.py``), show
them (``render.py``, ``writeout.py``, JSON, HAR), then the exit status (``exits.py``): 0, 1 a
request failed, 2 bad input, 4 an ``--slo`` broken. Every message is one line on stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .args import Options, UsageError, parse_options
from .exits import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SLO,
    EXIT_USAGE,
    failure_lines,
    failure_of,
    slo_lines,
)
from .exports import har, transfer_dict

if TYPE_CHECKING:
    from .fetch import Run, Transfer

__all__ = ["SUBCOMMANDS", "main"]

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("a guided tour on loopback servers: no network needed", "aiotrace._cli.demo:main"),
    "crawl": (
        "trace a list of URLs concurrently: a summary per host, JSON/HAR/HTML reports",
        "aiotrace._cli.crawl:crawl_main",
    ),
}
"""Subcommand name -> (one-line summary for --help, ``module:function`` taking the argv left
and returning the exit status). A new subcommand adds itself here."""


def _subcommand(name: str) -> Callable[[Sequence[str]], int]:
    module, _, function = SUBCOMMANDS[name][1].partition(":")
    fn: Callable[[Sequence[str]], int] = getattr(importlib.import_module(module), function)
    return fn


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiotrace`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in SUBCOMMANDS:
            return _subcommand(args[0])(args[1:])
        summaries = [(name, summary) for name, (summary, _) in SUBCOMMANDS.items()]
        opts = parse_options(args, summaries)
        if opts is None:  # --help or --version answered
            return EXIT_OK
        return trace_urls(opts)
    except UsageError as e:
        print(f"aiotrace: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `aiotrace URL | head`: nothing more to say, nowhere to say it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def trace_urls(opts: Options) -> int:
    """Run ``aiotrace URL...`` with checked options; the exit status."""
    from .fetch import fetch

    extra = None
    if opts.verbose:
        from .verbose import verbose_trace

        extra = verbose_trace(
            opts.redaction, sys.stderr.write, many=opts.requests > 1, secrets=opts.secrets
        )
    run = fetch(opts, extra)
    for t in run.transfers:
        if t.error is not None:
            t.failure = failure_of(t.error, t.timeline, opts.secrets)

    if opts.text:
        _show(run, opts)
    elif opts.silent and opts.body:
        sys.stdout.flush()
        for t in run.transfers:
            if t.body:
                sys.stdout.buffer.write(t.body)
        sys.stdout.buffer.flush()
    if opts.write_out is not None:
        for t in run.transfers:
            for stream, text in opts.write_out.render(t, opts.redaction):
                (sys.stderr if stream == "stderr" else sys.stdout).write(text)
        sys.stdout.flush()
    if opts.json or opts.jsonl:
        # Under --sample: the sampled requests, and those that failed or got a 5xx.
        docs = [
            transfer_dict(t, opts.redaction, opts.secrets)
            for t in run.transfers
            if opts.sample is None or t.timeline is not None or _failed_or_5xx(t)
        ]
        if opts.json:
            sys.stdout.write(json.dumps(docs, indent=2) + "\n")
        else:
            sys.stdout.write("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in docs))
    if opts.har is not None:
        text = (
            json.dumps(har(run.recorder, run.transfers, opts.redaction, opts.secrets), indent=2)
            + "\n"
        )
        if opts.har == "-":
            sys.stdout.write(text)
        else:
            try:
                with open(opts.har, "w", encoding="utf-8") as f:
                    f.write(text)
            except OSError as e:
                print(f"aiotrace: --har: cannot write {opts.har!r}: {e.strerror}", file=sys.stderr)
                return EXIT_FAILED
    sys.stdout.flush()

    failures = failure_lines(run.transfers)
    if opts.show_error:
        for line in failures:
            print(line, file=sys.stderr)
    broken = slo_lines(run.transfers, opts.slo, sampled=(opts.sample or 1) < 1)
    if opts.show_error:
        for line in broken:
            print(line, file=sys.stderr)
    if failures:
        return EXIT_FAILED
    return EXIT_SLO if broken else EXIT_OK


def _failed_or_5xx(t: Transfer) -> bool:
    """A request a sampling Recorder would keep unsampled (``keep_errors``)."""
    return t.error is not None or bool(t.responses and t.responses[-1].status >= 500)


def _show(run: Run, opts: Options) -> None:
    from .render import console, host_tables, print_view, request_view

    con = console()
    if opts.repeat > 1:
        for item in host_tables(run):
            con.print(item)
        return
    many = len(run.transfers) > 1
    for t in run.transfers:
        view = request_view(
            t,
            opts.redaction,
            head=opts.head,
            title=many,
            verified=opts.ssl is not False,
        )
        print_view(con, view)
