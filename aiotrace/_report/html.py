"""The HTML report: a waterfall of every request of a crawl, in connection lanes, in one file.

Theory of operation
-------------------
The page is one self-contained file. The stylesheet and the script beside this module
(``waterfall.css``, ``waterfall.js``) are inlined into ``waterfall.html``; the report's data
goes in as JSON in a ``<script type="application/json">`` element, with every ``<`` written
as ``\\u003c`` so that no URL (or anything else in the data) can close that element or open a
comment in it. Nothing is fetched: the page opens from disk, offline. The script draws the
waterfall on a canvas, only the lanes and times in view, so 10,000 requests make no more
DOM than 10.

The document (``document_from_recorder`` builds one; the page reads it and nothing else)::

    {
      "title": str,                # the page's title
      "generated_at": float,       # time.time() when it was made
      "requests": [RequestTimeline.to_dict(), ...],
      "connections": [ConnectionRecord.to_dict(), ...],
      "hosts": {"host:port": HostStats.to_dict(), ...},   # may be empty
      "dropped": int,              # requests finished but not kept (a Recorder's ring)
      "sample_rate": float | None, # the share of requests traced (None: all, or a callable's)
      "stalls": [{"started_at": float, "duration_ms": float}, ...],  # optional
    }

Every request and round trip is placed on one time axis by its ``started_at`` (wall clock,
derived from the same ``perf_counter`` stamps as its phases, so offsets are exact). A round
trip may carry ``"stall": {phase: ms}`` (the time of each phase the event loop was blocked);
the tooltip shows it. The per-host table takes requests, errors, reuse and percentiles from
``hosts`` where a host is listed there (every request the Recorder saw), and works out the
rest from the requests in the document. Under sampling (``sample_rate`` below 1) the summary
line counts the timelines as "N traced of M requests", M and the failures from ``hosts``.

The page embeds the document in its ``page_form``: connection details once, not on every
round trip (a quarter of a crawl's bytes).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from html import escape
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from .._trace.clock import wall_time

if TYPE_CHECKING:
    from os import PathLike

    from .._record.recorder import Recorder

__all__ = [
    "document_from_recorder",
    "page_form",
    "render_html",
    "report_document",
    "write_html",
    "write_html_report",
]

DEFAULT_TITLE = "aiotrace report"
_PLACEHOLDER = re.compile(r"/\*@(CSS|JS|TITLE|DATA)@\*/")


def document_from_recorder(
    rec: Recorder,
    *,
    title: str = DEFAULT_TITLE,
    stalls: Iterable[tuple[float, float]] = (),
) -> dict[str, Any]:
    """The report's document for what ``rec`` kept: every timeline (redacted as the
    Recorder says), every connection, the per-host aggregates and the number dropped.

    ``stalls`` are event-loop stalls as ``(started_at, duration_ms)``, ``started_at`` on
    the ``time.time()`` scale; the page shades them across the waterfall.
    """
    return {
        "title": title,
        "generated_at": time.time(),
        "requests": rec.to_dicts(),
        "connections": [c.to_dict() for c in rec.connections],
        "hosts": {label: stats.to_dict() for label, stats in rec.stats.items()},
        "dropped": rec.dropped,
        "sample_rate": rec.sample_rate,
        "stalls": [{"started_at": at, "duration_ms": ms} for at, ms in stalls],
    }


def report_document(rec: Recorder, *, title: str = DEFAULT_TITLE) -> dict[str, Any]:
    """The report's document for ``rec`` (JSON-ready), with the loop stalls its
    ``stall_monitor`` saw, if it has one (``Recorder(loop_stalls=True)``)."""
    monitor = rec.stall_monitor
    stalls = [] if monitor is None else monitor.stalls
    return document_from_recorder(
        rec, title=title, stalls=[(wall_time(a), (b - a) * 1000.0) for a, b in stalls]
    )


def write_html_report(
    rec: Recorder, path: str | PathLike[str], *, title: str = DEFAULT_TITLE
) -> int:
    """Write ``rec``'s HTML waterfall report to ``path``; returns the bytes written.

    It reads and writes files: from async code, call it through ``asyncio.to_thread``."""
    return write_html(report_document(rec, title=title), path)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def page_form(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document as the page embeds it: the same, but that a round trip's connection
    details listed in ``connections`` are left there (the round trip keeps the id). A
    crawl's page is a quarter smaller this way, and opens a third faster (measured, 10,000
    TLS requests: 17 MB, 1.5 s to drawn in chromium; 12.7 MB, 1.0 s). ``document`` is left
    as it was."""
    known = {}
    for c in document.get("connections") or ():
        if isinstance(c, Mapping) and "id" in c:
            known[c["id"]] = c
    if not known:
        return dict(document)
    requests = []
    for r in document.get("requests") or ():
        original = r.get("hops") or ()
        hops: list[Any] | None = None  # a copy, made at the first change
        for i, h in enumerate(original):
            conn = h.get("connection")
            if (
                isinstance(conn, Mapping)
                and (record := known.get(conn.get("id"))) is not None
                and all(record.get(k) == v for k, v in conn.items())
            ):
                if hops is None:
                    hops = list(original)
                hops[i] = {**h, "connection": {"id": conn["id"]}}
        requests.append(r if hops is None else {**r, "hops": hops})
    return {**document, "requests": requests}


def _json_for_script(document: Mapping[str, Any]) -> str:
    """The document as JSON safe inside a ``<script>`` element: no ``<`` at all."""
    try:
        text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere: rare, so only then walk it all
        text = json.dumps(_finite(document), separators=(",", ":"), allow_nan=False)
    # "<" appears only inside JSON strings, where \u003c means the same character.
    return text.replace("<", "\\u003c")


@functools.cache
def _asset(name: str) -> str:
    """A file beside this module (the page's template, stylesheet and script)."""
    return files("aiotrace._report").joinpath(name).read_text(encoding="utf-8")


def render_html(document: Mapping[str, Any]) -> str:
    """The self-contained page for ``document`` (see the module docstring for its shape).

    Reads the page's files on first use and encodes the whole document: blocking work, so
    from a coroutine call it (or ``write_html``) through ``asyncio.to_thread``."""
    title = str(document.get("title") or DEFAULT_TITLE)
    parts = {
        "CSS": _asset("waterfall.css"),
        "JS": _asset("waterfall.js"),
        "TITLE": escape(title),
        "DATA": _json_for_script(page_form(document)),
    }
    # One pass: nothing substituted is searched again for placeholders.
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _asset("waterfall.html"))


def write_html(document: Mapping[str, Any], path: str | PathLike[str]) -> int:
    """Write the page for ``document`` to ``path`` (UTF-8); returns the bytes written."""
    data = render_html(document).encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
