"""HAR 1.2 export: one entry per round trip (each redirect hop and retry is its own entry).

Timings follow the spec: ``blocked``, ``dns``, ``connect``, ``ssl`` are -1 when the phase did
not happen; ``send``, ``wait``, ``receive`` are always present (0 when they did not);
``ssl`` is also counted inside ``connect``; ``time`` is the sum of the others, ``ssl`` once.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._version import __version__ as _version

if TYPE_CHECKING:
    from .redact import Redaction
    from .timeline import Hop, RequestTimeline

__all__ = ["har_log"]


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="milliseconds")


def _ms(v: float | None) -> float:
    return -1 if v is None else round(v, 3)


def _server_ip(hop: Hop) -> str | None:
    remote = hop.connection.remote_addr if hop.connection else None
    if remote is None:
        return None
    host = remote.rsplit(":", 1)[0]
    return host.strip("[]")


def _entry(
    timeline: RequestTimeline, hop: Hop, next_hop: Hop | None, r: Redaction
) -> dict[str, Any]:
    t = hop.timings
    connect = None
    if t.connect is not None or t.tls is not None:
        connect = (t.connect or 0.0) + (t.tls or 0.0)
    timings = {
        "blocked": _ms(t.blocked),
        "dns": _ms(t.dns),
        "connect": _ms(connect),
        "send": round(t.send or 0.0, 3),
        "wait": round(t.wait or 0.0, 3),
        "receive": round(t.receive or 0.0, 3),
        "ssl": _ms(t.tls),
    }
    total = sum(v for k, v in timings.items() if k != "ssl" and v > 0)
    url = r.url(hop.url) or ""
    redirect = r.url(next_hop.url) if next_hop is not None and next_hop.index != hop.index else ""
    entry: dict[str, Any] = {
        "startedDateTime": _iso(hop.started_at),
        "time": round(total, 3),
        "request": {
            "method": hop.method,
            "url": url,
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [],
            "queryString": [],
            "headersSize": -1,
            "bodySize": -1,
        },
        "response": {
            "status": hop.status or 0,
            "statusText": "",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [],
            "content": {"size": 0, "mimeType": "", "comment": "body size not measured"},
            "redirectURL": redirect or "",
            "headersSize": -1,
            "bodySize": -1,
        },
        "cache": {},
        "timings": timings,
        "_aiotrace": {
            "request_id": timeline.id,
            "hop": hop.index,
            "attempt": hop.attempt,
            "reused": hop.reused,
            "reuse_miss": hop.reuse_miss,
            "error": hop.error,
        },
    }
    ip = _server_ip(hop)
    if ip is not None:
        entry["serverIPAddress"] = ip
    if hop.connection is not None:
        entry["connection"] = str(hop.connection.id)
    return entry


def har_log(timelines: Iterable[RequestTimeline], redaction: Redaction) -> dict[str, Any]:
    """A HAR 1.2 ``{"log": ...}`` document of these timelines."""
    entries = []
    for timeline in timelines:
        hops = timeline.hops
        for i, hop in enumerate(hops):
            entries.append(
                _entry(timeline, hop, hops[i + 1] if i + 1 < len(hops) else None, redaction)
            )
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "aiotrace", "version": _version},
            "entries": entries,
        }
    }
