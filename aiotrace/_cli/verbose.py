"""``-v``: every hook as it fires, one line each on stderr, like ``curl -v``.

A line is curl's marker (``*`` the connection and the request's life, ``>`` what was sent,
``<`` what came back), the milliseconds since the request started, the hook's name and what
its event says. With more than one request in the run, ``#id`` says whose line it is.
Credentials are redacted as in every other output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiotrace import HOOK_NAMES, ClientTrace

from .exits import scrub

if TYPE_CHECKING:
    from aiotrace import Redaction

__all__ = ["LINES", "verbose_trace"]


def _err(e: Any) -> str:
    err = getattr(e, "err", None)
    if err is None:
        return ""
    text = str(err)
    return f" failed: {type(err).__name__}" + (f": {text}" if text else "")


def _conn(c: Any) -> str:
    return f"connection #{c.id}" if c is not None else "no connection"


def _tls_done(e: Any, r: Redaction) -> str:
    if e.err is not None:
        return _err(e).lstrip()
    text = f"{e.version} / {e.cipher}, ALPN {e.alpn or '-'}"
    if e.session_reused:
        text += ", session resumed"
    if e.peer_subject:
        text += f", subject {e.peer_subject}"
    return text


def _got_conn(e: Any, r: Redaction) -> str:
    if e.reused:
        return f"{_conn(e.conn)} reused, idle {e.idle_time * 1000:.1f} ms"
    return f"{_conn(e.conn)} new, to {e.conn.remote_addr or '?'}"


def _dns_done(e: Any, r: Redaction) -> str:
    if e.err is not None:
        return f"{e.host}{_err(e)}"
    how = " (cached)" if e.cached else " (joined a lookup in flight)" if e.coalesced else ""
    return f"{e.host} is {', '.join(e.addrs) or 'nothing'}{how}"


def _put_idle_conn(e: Any, r: Redaction) -> str:
    if e.err is None:
        return f"{_conn(e.conn)} back to the pool"
    return f"{_conn(e.conn)} closed, not pooled: {e.err}"


def _request_end(e: Any, r: Redaction) -> str:
    resp = e.response
    v = getattr(resp, "version", None)
    version = f"HTTP/{v.major}.{v.minor}" if v is not None else "HTTP"
    return f"{version} {e.status} {getattr(resp, 'reason', '') or ''}".rstrip()


LINES: dict[str, tuple[str, Callable[[Any, Redaction], str]]] = {
    "request_start": ("*", lambda e, r: f"{e.method} {r.url(e.url)}"),
    "get_conn": ("*", lambda e, r: f"a connection to {e.host_port}"),
    "pool_wait_start": ("*", lambda e, r: "the pool is full: waiting for a connection"),
    "pool_wait_done": ("*", lambda e, r: "got a place in the pool" + _err(e)),
    "dns_start": ("*", lambda e, r: e.host),
    "dns_done": ("*", _dns_done),
    "connect_start": ("*", lambda e, r: f"trying {e.addr} ({e.network})"),
    "connect_done": ("*", lambda e, r: e.addr + _err(e) if e.err else f"connected to {e.addr}"),
    "tls_handshake_start": ("*", lambda e, r: f"server name {e.server_name or '-'}"),
    "tls_handshake_done": ("*", _tls_done),
    "got_conn": ("*", _got_conn),
    "wrote_header_field": (">", lambda e, r: f"{e.key}: {r.header(e.key, ', '.join(e.values))}"),
    "wrote_headers": (">", lambda e, r: "end of headers"),
    "wait_100_continue": (">", lambda e, r: "Expect: 100-continue: waiting to send the body"),
    "wrote_request": (">", lambda e, r: "request sent" + _err(e)),
    "got_first_response_byte": ("<", lambda e, r: "first byte"),
    "got_100_continue": ("<", lambda e, r: "100 Continue"),
    "got_1xx_response": ("<", lambda e, r: f"{e.status} (informational)"),
    "request_end": ("<", _request_end),
    "redirect": ("*", lambda e, r: f"{e.status}: next hop {r.url(e.to_url)}"),
    "retry": ("*", lambda e, r: f"{e.reason}: retrying" + _err(e)),
    "response_body_done": ("<", lambda e, r: "body done" + _err(e)),
    "put_idle_conn": ("*", _put_idle_conn),
    "request_exception": ("*", lambda e, r: f"{type(e.err).__name__}: {e.err}"),
    "request_done": ("*", lambda e, r: "done" + _err(e)),
}  # fmt: skip
"""Each hook's marker and how its event reads."""


def verbose_trace(
    redaction: Redaction,
    write: Callable[[str], object],
    *,
    many: bool,
    secrets: Sequence[str] = (),
) -> ClientTrace:
    """A trace that writes one line per hook as it fires (``many``: say which request;
    ``secrets``: scrubbed from every line, as the error line does)."""
    starts: dict[int, float] = {}

    def hook(name: str) -> Callable[[Any], None]:
        marker, describe = LINES[name]
        first, last = name == "request_start", name == "request_done"

        def line(e: Any) -> None:
            rid = e.request.id
            if first:
                starts[rid] = e.time
            t0 = starts.pop(rid, e.time) if last else starts.get(rid, e.time)
            who = f"#{rid} " if many else ""
            text = scrub(describe(e, redaction), secrets)
            write(f"{marker} {who}{(e.time - t0) * 1000:8.2f} ms  {name}: {text}\n")

        return line

    hooks: dict[str, Any] = {name: hook(name) for name in HOOK_NAMES}
    return ClientTrace(**hooks)
