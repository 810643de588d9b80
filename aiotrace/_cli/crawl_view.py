"""``aiotrace crawl`` on the terminal: the progress bar while it runs, the summary after.

Needs rich (the ``cli`` extra). The progress bar goes to stderr and only to a terminal:
piped or redirected, stderr gets nothing of it. The summary goes to stdout, in colour on a
terminal and as plain text otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from .._record.phases import PHASES
from .crawl_report import RESPONSE, SUMMARY_PHASES

if TYPE_CHECKING:
    from .crawl import Crawler
    from .crawl_report import CrawlReport, HostSummary

__all__ = ["HOSTS_SHOWN", "ProgressView", "make_progress", "render_summary"]

HOSTS_SHOWN = 20  # hosts in the tables (the busiest); --json has every one
_WIDE = 160  # piped output is not wrapped at 80 columns (COLUMNS still rules)


class _RateColumn(ProgressColumn):
    """Requests finished per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("- req/s" if speed is None else f"{speed:.0f} req/s", style="cyan")


class ProgressView:
    """The progress bar: done (ok, failed) out of the total, in flight, rate, ETA."""

    def __init__(self, total: int, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]crawl"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn(
                "· [green]{task.fields[ok]} ok[/] · [red]{task.fields[failed]} failed[/] · "
                "{task.fields[in_flight]} in flight ·"
            ),
            _RateColumn(),
            TextColumn("· ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            auto_refresh=False,  # refreshed by the crawl's own ticker: no thread
        )
        self._task = self._progress.add_task("crawl", total=total, ok=0, failed=0, in_flight=0)
        self._progress.start()

    def update(self, crawler: Crawler) -> None:
        self._progress.update(
            self._task,
            completed=crawler.finished,
            ok=crawler.ok,
            failed=crawler.failed + crawler.cancelled,
            in_flight=crawler.in_flight,
        )
        self._progress.refresh()

    def close(self) -> None:
        self._progress.stop()


def make_progress(total: int) -> ProgressView | None:
    """A progress bar on stderr if stderr is a terminal; ``None`` (nothing shown) if not."""
    console = Console(file=sys.stderr)
    if not console.is_terminal or not sys.stderr.isatty():
        return None
    return ProgressView(total, console)


# -- the summary -------------------------------------------------------------------------------


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def _counts(d: dict[str, int], limit: int = 3) -> str:
    items = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {n}" for k, n in items[:limit])
    if len(items) > limit:
        text += f", +{len(items) - limit} more"
    return text


def _opened(h: HostSummary) -> str:
    n = sum(h.opened.values())
    return f"{n} ({_counts(h.opened)})" if n else "0"


def _errors(h: HostSummary) -> str:
    return f"[red]{h.failed} ({escape(_counts(h.errors, 2))})[/]" if h.failed else "0"


def _stall(h: HostSummary) -> str:
    """How many round trips overlapped a loop stall, the ms of stall summed over them (one
    stall counts in every round trip it overlapped), and the phase most of it fell in."""
    total = h.stall_total
    if total is None:
        return "-"
    if not total or not h.stall_ms:
        return "0"
    phases = h.stall_ms
    phase = max(PHASES, key=lambda name: phases.get(name, 0.0))
    return f"{h.stalled}: {_ms(total)} ms ({phase} {_ms(phases.get(phase, 0.0))})"


_SAMPLED_CAPTION = (
    "* from the sampled requests (estimates); requests, errors and statuses count every request"
)
_RESPONSE_CAPTION = (
    "response: every request's time to its response (or error), sampled or not: exact"
)


def _ms(v: float) -> str:
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


class _SummaryConsole(Console):
    """stdout for the summary: a reader gone (``aiotrace crawl urls | head``) stops the
    output, not the command, whose exit status still says how the crawl went."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _console() -> Console:
    console = _SummaryConsole(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = _SummaryConsole(highlight=False, width=_WIDE)
    return console


def render_summary(report: CrawlReport, console: Console | None = None) -> None:
    """Print the summary: an overall line, per-host counts and phases, the slowest requests."""
    console = console or _console()
    c = report.counts
    o = report.overall
    head = (
        f"[bold]crawl[/]: {c.urls} URLs · [green]{c.ok} ok[/] · "
        f"{'[red]' if c.failed else ''}{c.failed} failed{'[/]' if c.failed else ''} · "
        f"{c.cancelled} cancelled · {c.not_started} not started"
    )
    if c.bad_lines:
        head += f" · {c.bad_lines} bad lines skipped"
    head += f" · {report.elapsed_s:.1f} s · {report.rate:.0f} req/s"
    stalls_seen = report.loop_stalls
    if stalls_seen is not None and stalls_seen.count:
        head += (
            f" · [yellow]event loop stalled {_ms(stalls_seen.stalled_ms)} ms "
            f"({stalls_seen.count} stall{'s' * (stalls_seen.count > 1)})[/]"
        )
    if report.interrupted:
        head += " · [bold red]interrupted[/]"
    console.print(head)
    sampled = o.sampled
    if sampled is not None:
        console.print(
            f"[yellow]sampled {sampled} of {o.requests} requests (--sample "
            f"{report.sample_rate:g}): the phases, the slowest requests and the figures "
            "marked * are estimates from the sample[/]"
        )

    hosts = report.hosts[:HOSTS_SHOWN]
    stalls = any(h.stall_ms is not None for h in (*report.hosts, o))
    # Under --sample the round trips' figures come from the sample: their headings say so
    # (a *), and a caption says which counts are exact.
    star = "*" if sampled is not None else ""
    table = Table(
        title="per host", title_justify="left", show_edge=False, pad_edge=False,
        caption=None if sampled is None else _SAMPLED_CAPTION, caption_justify="left",
    )  # fmt: skip
    columns: tuple[str, ...] = ("host", "requests", "errors", "statuses")
    if sampled is not None:
        columns += ("sampled",)
    columns += (f"reuse{star}", f"conns opened (why){star}", f"pool wait{star}")
    for col in columns:
        right = col.rstrip("*") in ("requests", "sampled", "reuse", "pool wait")
        table.add_column(col, justify="right" if right else "left")
    if stalls:
        table.add_column(f"stalled trips: ms{star}", justify="right")
    for h in (*hosts, o):
        row = [
            escape(h.host) if h is not o else "[bold]overall[/]",
            str(h.requests),
            _errors(h),
            escape(_counts({str(k): n for k, n in h.statuses.items()}, 3)) or "-",
            *(() if sampled is None else (str(h.sampled or 0),)),
            _pct(h.reuse_rate),
            escape(_opened(h)),
            _pct(h.pool_wait_share),
        ]
        if stalls:
            row.append(_stall(h))
        table.add_row(*row, end_section=h is hosts[-1] if hosts else False)
    console.print()
    console.print(table)
    if len(report.hosts) > len(hosts):
        console.print(f"… {len(report.hosts) - len(hosts)} more hosts (all of them in --json)")

    title = "phases per host (ms): p50 / p90 / p99"
    shown: tuple[str, ...] = SUMMARY_PHASES
    if sampled is not None:
        # The phases are the sample's; "response" (each request's time to its response,
        # counted at the request boundary) is every request's.
        title += f", estimates from {sampled} sampled of {o.requests} requests"
        shown = (*SUMMARY_PHASES, RESPONSE)
    phases = Table(
        title=title, title_justify="left", show_edge=False, pad_edge=False,
        caption=None if sampled is None else _RESPONSE_CAPTION, caption_justify="left",
    )  # fmt: skip
    phases.add_column("host")
    phases.add_column("")
    if sampled is not None:
        phases.add_column("sampled", justify="right")
    for name in shown:
        phases.add_column(name, justify="right")
    for h in (*hosts, o):
        for i, q in enumerate(("p50", "p90", "p99")):
            cells = []
            if sampled is not None:
                cells.append("" if i else f"{h.sampled or 0} of {h.requests}")
            for name in shown:
                quantiles = h.phases.get(name)
                cells.append("-" if quantiles is None else _ms(getattr(quantiles, q)))
            label = "" if i else (escape(h.host) if h is not o else "[bold]overall[/]")
            phases.add_row(label, q, *cells, end_section=i == 2)
    console.print()
    console.print(phases)

    if report.slowest:
        title = f"the {len(report.slowest)} slowest requests"
        if sampled is not None:
            title = f"the {len(report.slowest)} slowest of the {sampled} sampled requests"
        slow = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for col in ("request", "ms", "dominant phase", "loop stall ms", "outcome", "url"):
            slow.add_column(col, justify="right" if col in ("ms", "loop stall ms") else "left")
        for s in report.slowest:
            if s.dominant_phase is None:
                dominant = "-"
            else:
                share = s.dominant_ms / s.elapsed_ms if s.elapsed_ms > 0 else 0.0
                dominant = f"{s.dominant_phase} {_ms(s.dominant_ms)} ({share * 100:.0f}%)"
            outcome = str(s.status) if s.error is None else f"[red]{escape(s.error[:60])}[/]"
            hops = f" ({s.hops} hops)" if s.hops > 1 else ""
            stalled = "-" if s.stall_ms is None else _ms(s.stall_ms)
            if s.dominant_stall_ms:
                stalled += f" ({_ms(s.dominant_stall_ms)} in {s.dominant_phase})"
            slow.add_row(
                f"#{s.id}", _ms(s.elapsed_ms), dominant, stalled, outcome, escape(s.url) + hops
            )
        console.print()
        console.print(slow)
