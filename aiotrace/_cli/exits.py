"""What the command's exit status says: a failed request (1, the phase named) or a broken
``--slo`` (4, the phase named), each as one line on stderr.

A failure's phase comes first from the exception aiohttp raised (a DNS, certificate, proxy,
redirect or timeout error says where it happened), then from the timeline: the last phase the
failed round trip began is the one cut short.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiotrace import Hop, RequestTimeline

    from .fetch import Transfer

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SLO",
    "EXIT_USAGE",
    "PHASE_LABELS",
    "Failure",
    "failure_lines",
    "failure_of",
    "scrub",
    "slo_lines",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SLO = 0, 1, 2, 4

PHASE_LABELS = {
    "blocked": "pool wait",
    "dns": "DNS lookup",
    "connect": "TCP connection",
    "tls": "TLS handshake",
    "send": "request send",
    "wait": "server processing",
    "receive": "content transfer",
}
"""Each timeline phase in words (httpstat's where it has one)."""

# The short name of the phase a request failed in, for the timeline's phases.
_FAILED_IN = {
    "blocked": "pool",
    "dns": "DNS",
    "connect": "connect",
    "tls": "TLS",
    "send": "send",
    "wait": "response",
    "receive": "body",
}
_PHASES = tuple(PHASE_LABELS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """Why a request failed: the phase named (DNS, connect, TLS, timeout, ...) and the error."""

    phase: str
    during: str | None  # for a timeout: the phase it cut short, in words
    kind: str  # the exception's type
    message: str  # the exception, one line, credentials scrubbed

    def line(self, what: str) -> str:
        """One line for stderr, ``what`` being the request (method and URL)."""
        head = f"timeout in {self.during}" if self.during else f"{self.phase} failed"
        return f"aiotrace: {head}: {what}: {self.message}"


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` on one line with every secret given on the command line replaced."""
    for secret in secrets:
        text = text.replace(secret, "REDACTED")
    return " ".join(text.split())


def _last_phase(hop: Hop | None) -> str | None:
    if hop is None:
        return None
    last = None
    for name in _PHASES:
        if getattr(hop.timings, name) is not None:
            last = name
    return last


def failure_of(
    err: BaseException, timeline: RequestTimeline | None, secrets: Sequence[str]
) -> Failure:
    """Name the phase ``err`` ended the request in."""
    hop = timeline.hops[-1] if timeline is not None and timeline.hops else None
    last = _last_phase(hop)
    text = str(err)
    message = scrub(f"{type(err).__name__}: {text}" if text else type(err).__name__, secrets)
    during = None
    if isinstance(err, TimeoutError):
        phase = "timeout"
        during = PHASE_LABELS[last] if last is not None else "the request"
    elif isinstance(err, aiohttp.ClientConnectorDNSError):
        phase = "DNS"
    elif isinstance(err, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        phase = "TLS"
    elif isinstance(err, aiohttp.ClientProxyConnectionError):
        phase = "proxy"
    elif isinstance(err, aiohttp.TooManyRedirects):
        phase = "redirect"
        followed = max(len(err.history) - 1, 0)  # the last response is the one not followed
        message = f"TooManyRedirects: more redirects than --max-redirs {followed}"
    elif isinstance(
        err,
        aiohttp.InvalidUrlRedirectClientError | aiohttp.NonHttpUrlRedirectClientError,
    ):
        phase = "redirect"
    elif isinstance(err, aiohttp.ClientConnectorError):
        phase = "TLS" if last == "tls" else "connect"
    else:
        phase = _FAILED_IN[last] if last is not None else "request"
    return Failure(phase=phase, during=during, kind=type(err).__name__, message=message)


def failure_lines(transfers: Sequence[Transfer]) -> list[str]:
    """One line per failed request; with many, one per phase and kind, counted."""
    failed = [t for t in transfers if t.failure is not None]
    if len(failed) <= 3:
        return [t.failure.line(t.what) for t in failed if t.failure is not None]
    groups: Counter[tuple[str, str]] = Counter()
    first: dict[tuple[str, str], Transfer] = {}
    for t in failed:
        assert t.failure is not None
        key = (t.failure.during or t.failure.phase, t.failure.kind)
        groups[key] += 1
        first.setdefault(key, t)
    lines = []
    for key, n in groups.most_common():
        f = first[key].failure
        assert f is not None
        head = f"timeout in {f.during}" if f.during else f"{f.phase} failed"
        lines.append(
            f"aiotrace: {head}: {n} of {len(transfers)} requests, e.g. {first[key].what}: "
            f"{f.message}"
        )
    return lines


def _values(t: RequestTimeline) -> dict[str, float | None]:
    timings = t.timings
    return {
        "total": t.marks.total,
        "ttfb": t.marks.starttransfer,
        "blocked": timings.blocked,
        "dns": timings.dns,
        "connect": timings.connect,
        "tls": timings.tls,
        "send": timings.send,
        "wait": timings.wait,
        "receive": timings.receive,
    }


def slo_lines(
    transfers: Sequence[Transfer], slo: dict[str, float], *, sampled: bool = False
) -> list[str]:
    """One line per broken ``--slo`` limit: the phase, how many requests, the worst
    (``sampled``: ``--sample``, the limits are checked on the sampled requests, and the line
    says so)."""
    if not slo:
        return []
    checked = f"{len(transfers)} requests"
    if sampled:
        checked = f"{sum(1 for t in transfers if t.timeline is not None)} sampled requests"
    broken: dict[str, list[tuple[float, Transfer]]] = {}
    for t in transfers:
        if t.timeline is None:
            continue
        values = _values(t.timeline)
        for key, limit in slo.items():
            value = values[key]
            if value is not None and value > limit:
                broken.setdefault(key, []).append((value, t))
    lines = []
    for key, limit in slo.items():
        over = broken.get(key)
        if not over:
            continue
        worst, t = max(over, key=lambda p: p[0])
        name = "time to first byte" if key == "ttfb" else PHASE_LABELS.get(key, key)
        count = "" if len(transfers) == 1 else f" in {len(over)} of {checked}"
        lines.append(
            f"aiotrace: SLO broken: {key} ({name}) {worst:.1f} ms > {limit:g} ms{count} ({t.what})"
        )
    return lines
