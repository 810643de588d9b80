"""The trace view on a terminal: per request, one block per hop (httpstat's view), and for
repeated runs a table per host. Drawn with rich (the ``cli`` extra): colour on a terminal,
none when piped or with ``NO_COLOR`` set.

A hop's block: where it connected (connection id, reused after how long idle, or new and why
not reused), the DNS answer, TLS version, cipher and ALPN, the certificate's subject, issuer
and days to expiry; the status line and response headers; where the body went; the waterfall.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
from collections import Counter
from typing import IO, TYPE_CHECKING, Any

from .exits import PHASE_LABELS
from .waterfall import Segment, fmt_ms, waterfall

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from aiotrace import Hop, Redaction, TLSInfo

    from .fetch import HopResponse, Run, Transfer

__all__ = ["burst_table", "console", "host_tables", "print_view", "request_view"]

STYLES = {
    "blocked": "bright_black",
    "dns": "cyan",
    "connect": "green",
    "tls": "magenta",
    "send": "yellow",
    "wait": "yellow",
    "receive": "blue",
    "mark": "bold",
    "failed": "bold red",
    "": "",
}

# Why a hop opened a new connection, in words (the Recorder's reuse_miss values).
WHY_NEW = {
    "first": "first connection to this host",
    "busy": "every pooled connection to this host was busy",
    "server_closed": "the server closed the previous one",
    "idle_timeout": "the previous one idled out of the pool",
    "keepalive_disabled": "keep-alive is off",
    "stale_retry": "the pooled one was stale: retried on a new one",
    "error": "the previous one failed",
    "closed": "the previous one was closed",
}

_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
}


# Under --sample: each request's time to its response, counted at the request boundary for
# every request, sampled or not (the Recorder's "response" histogram).
_RESPONSE = "response"


def console(file: IO[str] | None = None) -> Console:
    """A rich console for ``file`` (stdout): colour only on a terminal, never with NO_COLOR."""
    try:
        from rich.console import Console
    except ImportError:  # the cli extra is missing
        print(
            "aiotrace: the trace view needs rich: pip install 'aiohttp-httptrace[cli]' "
            "(or use --json)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    no_color = bool(os.environ.get("NO_COLOR"))
    out = file or sys.stdout
    # Piped, rich would lay tables out for 80 columns: give them room, lines never wrap.
    width = None if out.isatty() or os.environ.get("COLUMNS") else 160

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # `aiotrace URL | head`: main() ends quietly
            self.quiet = True
            raise BrokenPipeError

    return _Console(
        file=out,
        width=width,
        highlight=False,
        soft_wrap=True,
        emoji=False,
        markup=False,
        # NO_COLOR: no styles at all (rich's own NO_COLOR keeps bold and underline).
        color_system=None if no_color else "auto",
    )


def _text(segments: list[Segment]) -> Text:
    from rich.text import Text

    out = Text()
    for text, style in segments:
        out.append(text, style=STYLES.get(style, style))
    return out


def _line(*segments: tuple[str, str] | str) -> Text:
    return _text([(s, "") if isinstance(s, str) else s for s in segments])


def _dn(name: str | None) -> str:
    if not name:
        return "-"
    parts = []
    for part in name.split(", "):
        key, sep, value = part.partition("=")
        parts.append(f"{_SHORT_NAMES.get(key, key)}={value}" if sep else part)
    return ", ".join(parts)


def _expiry(not_after: str | None) -> str:
    if not not_after:
        return "-"
    try:
        expires = ssl.cert_time_to_seconds(not_after)
    except ValueError:
        return not_after
    days = int((expires - time.time()) // 86400)
    when = time.strftime("%Y-%m-%d", time.gmtime(expires))
    if days < 0:
        return f"{when} (expired {-days} days ago)"
    return f"{when} ({days} days from now)"


def _tls_lines(tls: TLSInfo, verified: bool, reused: bool) -> list[Text]:
    resumed = ", session resumed" if tls.session_reused else ""
    lines = [
        _line(
            "TLS ",
            (tls.version or "?", "tls"),
            f", cipher {tls.cipher or '?'}, ALPN {tls.alpn or '-'}{resumed}",
        )
    ]
    if reused:  # the certificate was shown when the connection was opened
        return lines
    if tls.peer_subject or tls.peer_issuer:
        lines.append(_line(f"Certificate: subject {_dn(tls.peer_subject)}"))
        lines.append(_line(f"             issuer  {_dn(tls.peer_issuer)}"))
        lines.append(_line(f"             expires {_expiry(tls.peer_not_after)}"))
    elif not verified:
        lines.append(_line("Certificate: not verified (-k), so not shown"))
    return lines


def _connection_line(hop: Hop) -> Text | None:
    c = hop.connection
    if c is None:
        return None
    where = f"Connected to {c.remote_addr or '?'}"
    if c.local_addr:
        where += f" from {c.local_addr}"
    if hop.reused:
        how = (f"connection #{c.id} ", ("reused", "bold"), f", idle {hop.idle_time * 1000:.1f} ms")
    else:
        why = WHY_NEW.get(hop.reuse_miss or "", hop.reuse_miss or "?")
        how = (f"connection #{c.id} ", ("new", "bold"), f": {why}")
    return _line(where, " (", *how, ")")


def _status_lines(resp: HopResponse, redaction: Redaction, headers: bool) -> list[Text]:
    style = (
        "bold green" if resp.status < 300 else "bold yellow" if resp.status < 400 else "bold red"
    )
    lines = [_line((f"HTTP/{resp.http_version} {resp.status} {resp.reason}".rstrip(), style))]
    if headers:
        for name, value in resp.headers:
            lines.append(_line((f"{name}: ", "cyan"), redaction.header(name, value)))
    return lines


def _failed_phase(hop: Hop) -> str | None:
    last = None
    for name in PHASE_LABELS:
        if getattr(hop.timings, name) is not None:
            last = name
    return last


def _body_lines(transfer: Transfer, redaction: Redaction, head: bool) -> list[Text | bytes]:
    out: list[Text | bytes] = []
    if transfer.body is not None:
        out.append(transfer.body)
    elif transfer.body_path is not None:
        out.append(_line(f"Body stored in: {transfer.body_path} ({transfer.body_size:,} bytes)"))
    elif not head and transfer.error is None:
        if transfer.body_size:
            out.append(_line(f"Body: {transfer.body_size:,} bytes, not kept"))
        else:
            out.append(_line("Body: empty"))
    target = transfer.redirect_url
    if target is not None:
        out.append(
            _line(
                ("Redirect to ", "yellow"),
                redaction.url(target) or "",
                " not followed (-L follows it)",
            )
        )
    return out


def request_view(
    transfer: Transfer,
    redaction: Redaction,
    *,
    headers: bool = True,
    head: bool = False,
    title: bool = False,
    verified: bool = True,
) -> list[Text | bytes]:
    """The block of each hop of one request, then its error if it failed. ``bytes`` items
    are the body (``--body``), to be written as they are."""
    from rich.text import Text

    out: list[Text | bytes] = []
    t = transfer.timeline
    hops = t.hops if t is not None else []
    if title:
        out.append(_line((f"{transfer.what}", "bold")))
    for n, hop in enumerate(hops):
        final = n == len(hops) - 1
        if len(hops) > 1:
            attempt = f", attempt {hop.attempt + 1}" if hop.attempt else ""
            url = redaction.url(hop.url) or ""
            out.append(
                _line((f"── hop {hop.index + 1}{attempt}: {hop.method} {url} ", "bold"), "──")
            )
        if hop.dns_addrs:
            how = (
                " (cached)"
                if hop.dns_cached
                else " (joined a lookup in flight)"
                if hop.dns_coalesced
                else ""
            )
            out.append(
                _line("DNS ", (hop.url.host or "?", "dns"), f" → {', '.join(hop.dns_addrs)}{how}")
            )
        line = _connection_line(hop)
        if line is not None:
            out.append(line)
        if hop.connection is not None and hop.connection.tls is not None:
            out.extend(_tls_lines(hop.connection.tls, verified, hop.reused))
        resp = transfer.response_for(hop.index) if hop.status is not None else None
        if resp is not None:
            out.append(Text())
            out.extend(_status_lines(resp, redaction, headers))
        if final and t is not None and t.status is not None:
            body = _body_lines(transfer, redaction, head)
            if body:
                out.append(Text())
                out.extend(body)
        failed = hop.error is not None or (final and transfer.failure is not None)
        out.append(Text())
        out.extend(
            _text(segments)
            for segments in waterfall(hop, failed_phase=_failed_phase(hop) if failed else None)
        )
        if hop.error is not None and not final:
            out.append(_line(("✗ ", "failed"), hop.error))
        out.append(Text())
    if transfer.failure is not None:
        f = transfer.failure
        head_text = f"timeout in {f.during}" if f.during else f"{f.phase} failed"
        out.append(_line((f"✗ {head_text}: ", "failed"), f.message))
        out.append(Text())
    return out


def print_view(con: Console, items: list[Text | bytes]) -> None:
    """Print a view: lines through rich, a body as the bytes it is."""
    for item in items:
        if isinstance(item, bytes):
            con.file.flush()
            out = getattr(con.file, "buffer", None)
            if out is not None:
                out.write(item)
                out.flush()
            else:  # a text-only stream (tests)
                con.file.write(item.decode("utf-8", "replace"))
            if item and not item.endswith(b"\n"):
                con.file.write("\n")
        else:
            con.print(item)


def _host(url: Any) -> str:
    return f"{url.raw_host}:{url.port}" if url.raw_host else "?"


def host_tables(run: Run) -> list[Any]:
    """For ``-n``: a summary line, then per host its requests, reuse, new connections and
    why, errors by kind, and p50/p95/p99 of each phase (the Recorder's aggregates).

    Under ``--sample`` the requests, statuses and errors count every request (the transfers
    and the Recorder's boundary counts), and so does the ``response`` row (each request's
    time to its response); reuse, new connections and the phases come from the sample, and
    say so."""
    from rich.table import Table

    transfers = run.transfers
    elapsed = run.elapsed or 1e-9
    out: list[Any] = [
        _line(
            (f"{len(transfers)} requests", "bold"),
            f" in {elapsed:.2f} s: {len(transfers) / elapsed:.1f} requests/s",
        )
    ]
    rate = run.recorder.sample_rate
    if rate is not None and rate < 1:  # --sample 1 traces every request
        traced = sum(1 for t in transfers if t.timeline is not None)
        out.append(
            _line(
                (f"sampled {traced} of {len(transfers)} requests (--sample {rate:g})", "yellow"),
                ": the phases, reuse and new connections are estimates from the sample; "
                "requests, statuses, errors and response count every request",
            )
        )
    out.append(_line())
    why: dict[str, Counter[str]] = {}
    errors: dict[str, Counter[str]] = {}
    for t in transfers:
        if t.failure is not None:  # every failed request, sampled or not
            f = t.failure
            kind = f"{'timeout in ' + f.during if f.during else f.phase} ({f.kind})"
            errors.setdefault(_host(t.url), Counter())[kind] += 1
        if t.timeline is None:
            continue
        for hop in t.timeline.hops:
            if hop.connection is not None and not hop.reused:
                why.setdefault(_host(hop.url), Counter())[hop.reuse_miss or "?"] += 1
    for host, stats in run.recorder.stats.items():
        opened = why.get(host, Counter())
        share = stats.reused / stats.round_trips if stats.round_trips else 0.0
        statuses = ", ".join(f"{code} ({n})" for code, n in sorted(stats.statuses.items()))
        sampled = stats.sampled
        out.append(
            _line(
                (host, "bold"),
                f"  {stats.requests} requests, {stats.requests / elapsed:.1f}/s"
                + ("" if sampled is None else f", {sampled} sampled"),
            )
        )
        if statuses:
            out.append(_line(f"  status     {statuses}"))
        trips = "round trips" if sampled is None else "sampled round trips"
        out.append(
            _line(f"  reused     {stats.reused} of {stats.round_trips} {trips} ({share:.0%})")
        )
        reasons = ", ".join(f"{n} {r}" for r, n in opened.most_common())
        out.append(
            _line(
                f"  new        {sum(opened.values())} connections"
                + ("" if sampled is None else " in the sample")
                + (f": {reasons}" if reasons else "")
            )
        )
        errs = errors.get(host)
        if errs:
            out.append(
                _line(
                    ("  errors     ", "failed"),
                    ", ".join(f"{n} {k}" for k, n in errs.most_common()),
                )
            )
        table = Table(show_edge=False, box=None, padding=(0, 2), pad_edge=True)
        heading = "phase" if sampled is None else f"phase ({sampled} sampled: estimates)"
        for col in (heading, "n", "p50", "p95", "p99", "max"):
            table.add_column(
                col, justify="left" if col == heading else "right", header_style="bold"
            )
        names = (*PHASE_LABELS, "total") if sampled is None else (*PHASE_LABELS, "total", _RESPONSE)
        for name in names:
            hist = stats.phases.get(name)
            if hist is None or not hist.count:
                continue
            q = hist.summary()
            label = f"{name} ({PHASE_LABELS[name]})" if name in PHASE_LABELS else name
            if name == _RESPONSE:
                label = "response (every request: exact)"
            table.add_row(
                _line((label, name)),
                str(q.count),
                fmt_ms(q.p50),
                fmt_ms(q.p95),
                fmt_ms(q.p99),
                fmt_ms(q.max),
            )
        out.append(table)
        out.append(_line())
    return out


def burst_table(transfers: list[Transfer]) -> Any:
    """Requests made at once, one row each: connection, pool wait, server time, total."""
    from rich.table import Table

    table = Table(show_edge=False, box=None, padding=(0, 2), pad_edge=True)
    for col in (
        "request",
        "connection",
        "Blocked",
        "Server Processing",
        "Content Transfer",
        "total",
    ):
        left = col in ("request", "connection")
        table.add_column(
            col, justify="left" if left else "right", header_style="bold", no_wrap=True
        )
    for t in transfers:
        if t.timeline is None or not t.timeline.hops:
            continue
        hop = t.timeline.hops[-1]
        c = hop.connection
        if c is None:
            conn = "-"
        elif hop.reused:
            conn = f"#{c.id} reused"
        else:
            conn = f"#{c.id} new ({hop.reuse_miss or '?'})"
        tm = hop.timings
        server = (
            None if tm.send is None and tm.wait is None else (tm.send or 0.0) + (tm.wait or 0.0)
        )
        table.add_row(
            f"#{t.timeline.id}",
            conn,
            _line((fmt_ms(tm.blocked), "blocked" if tm.blocked else "")),
            _line((fmt_ms(server), "wait")),
            _line((fmt_ms(tm.receive), "receive")),
            fmt_ms(tm.total),
        )
    return table
