"""``-w/--write-out``: curl's format language over a finished request, so curl scripts work.

``%{name}`` is one of :data:`VARIABLES`, ``%header{name}`` a response header, ``%{json}`` every
variable as one JSON object, ``%{stderr}``/``%{stdout}`` switch where the rest goes; ``%%``
is ``%`` and ``\\n``, ``\\r``, ``\\t``, ``\\\\`` are what they are in C. Times are seconds with six
decimals, as curl prints them, from the request's curl-style marks: with ``-L``, the last
hop's, counted from the request's start (so they include ``time_redirect``); a step the last
hop did not take (DNS on a reused connection, TLS on plain HTTP) is ``0.000000``, as in
curl. An unknown variable is an error when the template is read, before anything is sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiotrace import Hop, Redaction

    from .fetch import Transfer

__all__ = ["VARIABLES", "WriteOut"]


def _s(ms: float | None) -> str:
    return f"{(ms or 0.0) / 1000.0:.6f}"


def _final(t: Transfer) -> Hop | None:
    return t.timeline.hops[-1] if t.timeline is not None and t.timeline.hops else None


def _addr(t: Transfer, which: str) -> tuple[str, str]:
    hop = _final(t)
    conn = hop.connection if hop is not None else None
    text = getattr(conn, which) if conn is not None else None
    if not text:
        return "", "0"
    host, _, port = text.rpartition(":")
    return host.strip("[]"), port


def _time(name: str) -> Callable[[Transfer, Redaction], str]:
    def value(t: Transfer, r: Redaction) -> str:
        return _s(getattr(t.timeline.marks, name) if t.timeline is not None else None)

    return value


def _header(t: Transfer, r: Redaction, name: str) -> str:
    if not t.responses:
        return ""
    lowered = name.lower()
    values = [r.header(k, v) for k, v in t.responses[-1].headers if k.lower() == lowered]
    return ", ".join(values)


def _posttransfer(t: Transfer, r: Redaction) -> str:
    hop, tl = _final(t), t.timeline
    if hop is None or tl is None or tl.marks.starttransfer is None:
        return _s(None)
    return _s(tl.marks.starttransfer - (hop.timings.wait or 0.0))


def _speed(t: Transfer, r: Redaction) -> str:
    total = t.timeline.marks.total if t.timeline is not None else 0.0
    return f"{t.body_size / (total / 1000.0):.0f}" if total > 0 else "0"


def _verify(t: Transfer, r: Redaction) -> str:
    from aiohttp import ClientConnectorCertificateError

    return "1" if isinstance(t.error, ClientConnectorCertificateError) else "0"


VARIABLES: dict[str, Callable[[Transfer, Redaction], str]] = {
    "content_type": lambda t, r: _header(t, r, "Content-Type"),
    "conn_id": lambda t, r: str(h.connection.id) if (h := _final(t)) and h.connection else "-1",
    "errormsg": lambda t, r: t.error_text(),
    "exitcode": lambda t, r: "1" if t.failed else "0",
    "filename_effective": lambda t, r: t.body_path or "",
    "http_code": lambda t, r: f"{t.responses[-1].status:03d}" if t.responses else "000",
    "http_version": lambda t, r: t.responses[-1].http_version if t.responses else "0",
    "local_ip": lambda t, r: _addr(t, "local_addr")[0],
    "local_port": lambda t, r: _addr(t, "local_addr")[1],
    "method": lambda t, r: t.timeline.method if t.timeline is not None else "",
    "num_connects": lambda t, r: str(t.new_connections),
    "num_headers": lambda t, r: str(len(t.responses[-1].headers)) if t.responses else "0",
    "num_redirects": lambda t, r: str(len(t.timeline.redirects) if t.timeline else 0),
    "num_retries": lambda t, r: str(t.timeline.retries if t.timeline else 0),
    "redirect_url": lambda t, r: r.url(t.redirect_url) or "",
    "remote_ip": lambda t, r: _addr(t, "remote_addr")[0],
    "remote_port": lambda t, r: _addr(t, "remote_addr")[1],
    "response_code": lambda t, r: f"{t.responses[-1].status:03d}" if t.responses else "000",
    "scheme": lambda t, r: (_final(t).url.scheme if _final(t) else t.url.scheme).upper(),  # type: ignore[union-attr]
    "size_download": lambda t, r: str(t.body_size),
    "speed_download": _speed,
    "ssl_verify_result": _verify,
    "time_appconnect": _time("appconnect"),
    "time_connect": _time("connect"),
    "time_namelookup": _time("namelookup"),
    "time_posttransfer": _posttransfer,
    "time_pretransfer": _time("pretransfer"),
    "time_queue": lambda t, r: _s(t.timeline.timings.blocked if t.timeline else None),
    "time_redirect": lambda t, r: _s(t.timeline.redirect_time if t.timeline else None),
    "time_starttransfer": _time("starttransfer"),
    "time_total": _time("total"),
    "url": lambda t, r: r.url(t.url) or "",
    "url_effective": lambda t, r: r.url(_final(t).url if _final(t) else t.url) or "",  # type: ignore[union-attr]
}
"""curl's ``--write-out`` variables aiotrace knows, each from a finished :class:`Transfer`."""

_NUMERIC = {
    "conn_id", "exitcode", "num_connects", "num_headers", "num_redirects", "num_retries",
    "local_port", "remote_port", "size_download", "speed_download", "ssl_verify_result",
}  # fmt: skip
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
_TOKEN = re.compile(r"%%|%\{([^}]*)\}|%header\{([^}]*)\}|\\([nrt\\])")

# A compiled part: ("text", s), ("var", name), ("header", name), ("json", ""), ("to", stream)
_Part = tuple[str, str]


class WriteOut:
    """A ``-w`` template, checked when made (``ValueError`` names an unknown variable)."""

    __slots__ = ("parts",)

    def __init__(self, template: str) -> None:
        parts: list[_Part] = []
        at = 0
        for m in _TOKEN.finditer(template):
            if m.start() > at:
                parts.append(("text", template[at : m.start()]))
            at = m.end()
            var, header, escape = m.group(1), m.group(2), m.group(3)
            if escape is not None:
                parts.append(("text", _ESCAPES[escape]))
            elif header is not None:
                parts.append(("header", header))
            elif var is None:
                parts.append(("text", "%"))
            elif var in ("stderr", "stdout"):
                parts.append(("to", var))
            elif var == "json":
                parts.append(("json", ""))
            elif var in VARIABLES:
                parts.append(("var", var))
            else:
                raise ValueError(f"unknown variable %{{{var}}} (known: {', '.join(VARIABLES)})")
        if at < len(template):
            parts.append(("text", template[at:]))
        self.parts = tuple(parts)

    def render(self, transfer: Transfer, redaction: Redaction) -> list[tuple[str, str]]:
        """``(stream, text)`` pieces for one request, stream ``stdout`` or ``stderr``."""
        out: list[tuple[str, str]] = []
        stream = "stdout"
        for kind, value in self.parts:
            if kind == "to":
                stream = value
            elif kind == "text":
                out.append((stream, value))
            elif kind == "var":
                out.append((stream, VARIABLES[value](transfer, redaction)))
            elif kind == "header":
                out.append((stream, _header(transfer, redaction, value)))
            else:
                out.append((stream, json.dumps(as_dict(transfer, redaction))))
        return out


def as_dict(transfer: Transfer, redaction: Redaction) -> dict[str, object]:
    """Every variable of one request (``%{json}``): numbers as numbers, as curl does."""
    out: dict[str, object] = {}
    for name, fn in VARIABLES.items():
        text = fn(transfer, redaction)
        if name.startswith("time_"):
            out[name] = float(text)
        elif name in _NUMERIC or name in ("http_code", "response_code"):
            out[name] = int(text)
        else:
            out[name] = text
    return out
