"""httpstat's waterfall for one round trip, laid out as text.

Columns in httpstat's order and words: ``DNS Lookup | TCP Connection | TLS Handshake | Server
Processing | Content Transfer`` (no TLS column for plain HTTP), each phase in ms; a pool wait,
when there was one, gets a ``Blocked`` column in front. The cells are the timeline's phases,
laid end to end, so they add up to the total: Server Processing is ``send + wait``, from the
end of the handshake (or connect) to the first byte, which also holds aiohttp's own setup of
the new connection before ``pretransfer`` (httpstat's ``starttransfer - pretransfer`` leaves
that out). A phase that did not happen (DNS, TCP and TLS on a reused connection) shows ``-``.

Beneath, curl's cumulative marks, each at the right edge of the column it closes (the name
up to the edge, the value past it, as httpstat lays them out):
``namelookup`` (DNS), ``connect`` (TCP), ``pretransfer`` (TLS; httpstat leaves it out for plain
HTTP, where it is the connect mark), ``starttransfer`` and ``total``.

Lines are lists of ``(text, style)`` segments; the style names a phase (or ``""``, ``"mark"``,
``"failed"``), so that the caller decides the colours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiotrace import Hop

__all__ = ["Segment", "fmt_ms", "waterfall"]

Segment = tuple[str, str]


def fmt_ms(ms: float | None) -> str:
    """Milliseconds as a person reads them: ``0.42ms``, ``3.1ms``, ``120ms``; ``-``: none."""
    if ms is None:
        return "-"
    if ms < 1:
        return f"{ms:.2f}ms"
    if ms < 10:
        return f"{ms:.1f}ms"
    return f"{ms:.0f}ms"


def _plus(a: float | None, b: float | None) -> float | None:
    if a is None and b is None:
        return None
    return (a or 0.0) + (b or 0.0)


def waterfall(hop: Hop, *, failed_phase: str | None = None) -> list[list[Segment]]:
    """The waterfall lines of ``hop``; ``failed_phase`` (a timeline phase) is marked failed."""
    t, m = hop.timings, hop.marks
    https = hop.url.scheme == "https"
    # (label, ms, style, the phases it covers, the marks that end with it)
    columns: list[tuple[str, float | None, str, tuple[str, ...], tuple[str, ...]]] = []
    if t.blocked is not None:
        columns.append(("Blocked", t.blocked, "blocked", ("blocked",), ()))
    columns.append(("DNS Lookup", t.dns, "dns", ("dns",), ("namelookup",)))
    tcp_marks = ("connect",) if https or m.connect is not None else ("pretransfer",)
    columns.append(("TCP Connection", t.connect, "connect", ("connect",), tcp_marks))
    if https:
        columns.append(("TLS Handshake", t.tls, "tls", ("tls",), ("pretransfer",)))
    columns.append(
        ("Server Processing", _plus(t.send, t.wait), "wait", ("send", "wait"), ("starttransfer",))
    )
    columns.append(("Content Transfer", t.receive, "receive", ("receive",), ("total",)))

    cells = [fmt_ms(ms) for _, ms, _, _, _ in columns]
    widths = [
        max(len(label), len(cell)) + 2 for (label, *_), cell in zip(columns, cells, strict=True)
    ]
    labels: list[Segment] = [(" ", "")]
    bar: list[Segment] = [("[", "")]
    edges = []  # where each column's right edge ('|' or ']') is
    at = 1
    for i, ((label, ms, style, phases, _), cell, w) in enumerate(
        zip(columns, cells, widths, strict=True)
    ):
        labels.append(
            (label.center(w) + " " if i < len(columns) - 1 else label.center(w).rstrip(), "")
        )
        failed = failed_phase is not None and failed_phase in phases
        bar.append((cell.center(w), "failed" if failed else style if ms is not None else ""))
        bar.append(("]" if i == len(columns) - 1 else "|", ""))
        at += w
        edges.append(at)
        at += 1
    lines = [labels, bar, [(_ruler(edges, 0, -1), "")]]
    for i, (_, _, _, _, marks) in enumerate(columns):
        for name in marks:
            ms = getattr(m, name)
            if ms is None:
                continue
            # as httpstat: the name ends on the column's edge, the value runs on past it
            start = max(0, edges[i] - len(name))
            end = start + len(name) + 1 + len(fmt_ms(ms))
            lines.append(
                [
                    (" " * start + f"{name}:", ""),
                    (fmt_ms(ms), "mark"),
                    (_ruler(edges[i + 1 :], end, edges[i]), ""),
                ]
            )
    return lines


def _ruler(edges: list[int], start: int, after: int) -> str:
    """Spaces with a ``|`` at each edge right of ``after``, the line starting at ``start``."""
    out = []
    at = start
    for edge in edges:
        if edge <= after or edge < at:
            continue
        out.append(" " * (edge - at) + "|")
        at = edge + 1
    return "".join(out)
