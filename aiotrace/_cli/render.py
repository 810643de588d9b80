"""Terminal output for the CLI: a waterfall per hop and aggregates per host, drawn with rich."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from yarl import URL

from .._record.timeline import PHASES

if TYPE_CHECKING:
    from .._record.recorder import Recorder
    from .._record.redact import Redaction
    from .._record.timeline import Hop, RequestTimeline

__all__ = ["render_text"]

_COLORS = {
    "blocked": "grey50",
    "dns": "cyan",
    "connect": "green",
    "tls": "magenta",
    "send": "yellow",
    "wait": "blue",
    "receive": "red",
}
_BAR = 40


def _console() -> object:
    try:
        from rich.console import Console
    except ImportError:  # the cli extra is missing
        print(
            "aiotrace: text output needs rich: pip install 'aiohttp-httptrace[cli]' "
            "(or use --format json)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    return Console(highlight=False)


def escape(text: str) -> str:
    """Text shown as is: rich must not read ``[...]`` in a URL or error as markup."""
    return text.replace("[", "\\[")


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.1f}"


def _bar(hop: Hop, scale: float) -> str:
    parts = []
    for name in PHASES:
        ms = getattr(hop.timings, name)
        if ms is None:
            continue
        width = max(1, round(ms * scale)) if ms > 0 else 0
        parts.append(f"[{_COLORS[name]}]{'█' * width}[/]")
    return "".join(parts)


def _conn(hop: Hop) -> str:
    c = hop.connection
    if c is None:
        return "-"
    if hop.reused:
        return f"#{c.id} reused ({hop.idle_time * 1000:.0f} ms idle)"
    return f"#{c.id} new ({hop.reuse_miss or '?'})"


def _request_lines(t: RequestTimeline, scale: float, redaction: Redaction) -> list[str]:
    hops = t.hops
    outcome = str(t.status) if t.status is not None else f"[red]{escape(t.error or '')}[/]"
    extra = []
    if t.redirects:
        extra.append(f"{len(t.redirects)} redirect{'s' * (len(t.redirects) > 1)}")
    if t.retries:
        extra.append(f"{t.retries} retr{'ies' if t.retries > 1 else 'y'}")
    extra.append(f"{t.timings.total:.1f} ms")
    url = escape(redaction.url(t.url) or "")
    lines = [f"[bold]#{t.id} {t.method} {url}[/] → {outcome} · {' · '.join(extra)}"]
    for h in hops:
        c = h.connection
        addr = c.remote_addr if c is not None and c.remote_addr else "-"
        if c is not None and c.tls is not None:
            addr += f" {c.tls.version}"
            if c.tls.alpn:
                addr += f" {c.tls.alpn}"
        status = str(h.status) if h.status is not None else f"[red]{escape(h.error or '-')}[/]"
        label = f"hop {h.index}" + (f" attempt {h.attempt}" if h.attempt else "")
        path = escape(URL(redaction.url(h.url) or "/").path_qs)
        lines.append(f"  {label}  {status}  {path}  {addr}  conn {_conn(h)}")
        phases = [
            f"[{_COLORS[p]}]{p}[/] {getattr(h.timings, p):.1f}"
            for p in PHASES
            if getattr(h.timings, p) is not None
        ]
        lines.append("      " + "  ".join(phases) + f"  = {h.timings.total:.1f} ms")
        lines.append("      " + _bar(h, scale))
    return lines


def render_text(rec: Recorder, *, repeat: bool) -> None:
    """Print each request's hops as a table with a waterfall, then per-host aggregates."""
    console = _console()
    from rich.table import Table

    legend = "  ".join(f"[{c}]█[/] {n}" for n, c in _COLORS.items())
    shown = rec.requests if not repeat or len(rec.requests) <= 10 else rec.requests[:3]
    longest = max((h.timings.total for t in shown for h in t.hops), default=0.0) or 1.0
    for t in shown:
        for line in _request_lines(t, _BAR / longest, rec.redaction):
            console.print(line)  # type: ignore[attr-defined]
        console.print()  # type: ignore[attr-defined]
    if repeat:
        if len(rec.requests) > len(shown):
            console.print(f"… {len(rec.requests) - len(shown)} more requests")  # type: ignore[attr-defined]
        table = Table(title="per host (ms)", title_justify="left", show_edge=False)
        for col in ("host", "requests", "errors", "reused", "phase", "p50", "p95", "p99", "max"):
            table.add_column(col, justify="left" if col in ("host", "phase") else "right")
        for host, stats in rec.stats.items():
            errors = sum(stats.errors.values())
            first = True
            for name in (*PHASES, "total"):
                hist = stats.phases.get(name)
                if hist is None:
                    continue
                q = hist.summary()
                table.add_row(
                    host if first else "",
                    str(stats.requests) if first else "",
                    str(errors) if first else "",
                    f"{stats.reused}/{stats.round_trips}" if first else "",
                    name,
                    f"{q.p50:.1f}",
                    f"{q.p95:.1f}",
                    f"{q.p99:.1f}",
                    f"{q.max:.1f}",
                )
                first = False
        console.print(table)  # type: ignore[attr-defined]
    console.print(legend)  # type: ignore[attr-defined]
