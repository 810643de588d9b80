"""The event types: one frozen, slotted value per hook.

Every event carries ``request`` (the :class:`RoundTrip` it belongs to) and ``time`` (the
``time.perf_counter()`` reading when it happened). Fields follow Go's ``net/http/httptrace``
where Go has them. Events are built only for hooks someone set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy
    from yarl import URL

    from ._state import RequestState

__all__ = [
    "ConnInfo",
    "ConnectDoneInfo",
    "ConnectStartInfo",
    "DNSDoneInfo",
    "DNSStartInfo",
    "GetConnInfo",
    "Got1xxResponseInfo",
    "Got100ContinueInfo",
    "GotConnInfo",
    "GotFirstResponseByteInfo",
    "PoolWaitDoneInfo",
    "PoolWaitStartInfo",
    "PutIdleConnInfo",
    "RedirectInfo",
    "RequestDoneInfo",
    "RequestEndInfo",
    "RequestExceptionInfo",
    "RequestStartInfo",
    "ResponseBodyDoneInfo",
    "RetryInfo",
    "RoundTrip",
    "TLSHandshakeDoneInfo",
    "TLSHandshakeStartInfo",
    "TLSInfo",
    "Wait100ContinueInfo",
    "WroteHeaderFieldInfo",
    "WroteHeadersInfo",
    "WroteRequestInfo",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundTrip:
    """One round trip of a traced request: request id, method, this hop's URL, hop and attempt."""

    id: int
    method: str
    url: URL
    hop: int
    attempt: int
    _state: RequestState = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSInfo:
    """What the TLS handshake settled: protocol version, cipher, ALPN, peer certificate."""

    version: str | None
    cipher: str | None
    alpn: str | None
    session_reused: bool
    server_name: str | None
    peer_subject: str | None
    peer_issuer: str | None
    peer_not_after: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnInfo:
    """A connection: its id (unique in the process), local and remote address, TLS details."""

    id: int
    local_addr: str | None
    remote_addr: str | None
    tls: TLSInfo | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestStartInfo:
    """A request began (once per ``session.request``, before any hop)."""

    request: RoundTrip
    time: float
    method: str
    url: URL


@dataclass(frozen=True, slots=True, kw_only=True)
class GetConnInfo:
    """A round trip asks the pool for a connection to ``host_port``."""

    request: RoundTrip
    time: float
    host_port: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolWaitStartInfo:
    """The pool is at ``limit``/``limit_per_host``: the round trip queues for a slot."""

    request: RoundTrip
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolWaitDoneInfo:
    """The queued round trip got a slot (``err`` set if the wait was cut short)."""

    request: RoundTrip
    time: float
    err: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DNSStartInfo:
    """A host name lookup began."""

    request: RoundTrip
    time: float
    host: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DNSDoneInfo:
    """A lookup ended: ``addrs`` or ``err``; ``coalesced`` joined another's; ``cached`` hit."""

    request: RoundTrip
    time: float
    host: str
    addrs: tuple[str, ...]
    err: BaseException | None
    coalesced: bool
    cached: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectStartInfo:
    """A TCP connect to one address began (one per Happy Eyeballs attempt)."""

    request: RoundTrip
    time: float
    network: str
    addr: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectDoneInfo:
    """A TCP connect to one address ended, ``err`` set when it failed or was abandoned."""

    request: RoundTrip
    time: float
    network: str
    addr: str
    err: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSHandshakeStartInfo:
    """The TLS handshake began (first ``do_handshake``)."""

    request: RoundTrip
    time: float
    server_name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSHandshakeDoneInfo:
    """The TLS handshake ended: what was negotiated, or ``err``."""

    request: RoundTrip
    time: float
    version: str | None
    cipher: str | None
    alpn: str | None
    session_reused: bool
    peer_subject: str | None
    peer_issuer: str | None
    peer_not_after: str | None
    err: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GotConnInfo:
    """The round trip has a connection: new, or ``reused`` after ``idle_time`` seconds idle."""

    request: RoundTrip
    time: float
    conn: ConnInfo
    reused: bool
    was_idle: bool
    idle_time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WroteHeaderFieldInfo:
    """One request header as written (all its values)."""

    request: RoundTrip
    time: float
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WroteHeadersInfo:
    """All request headers are written."""

    request: RoundTrip
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait100ContinueInfo:
    """Headers carried ``Expect: 100-continue``; the body waits for the server."""

    request: RoundTrip
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WroteRequestInfo:
    """The whole request (headers and body) is written, or writing failed with ``err``."""

    request: RoundTrip
    time: float
    err: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GotFirstResponseByteInfo:
    """The first byte of the response arrived on the socket."""

    request: RoundTrip
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Got100ContinueInfo:
    """The server answered ``100 Continue``."""

    request: RoundTrip
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Got1xxResponseInfo:
    """An informational response (100, 103, ...) arrived before the final one."""

    request: RoundTrip
    time: float
    status: int
    headers: CIMultiDictProxy[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseBodyDoneInfo:
    """The response body was fully received, or released unread (``err`` says why it was cut)."""

    request: RoundTrip
    time: float
    status: int | None
    err: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PutIdleConnInfo:
    """The connection went back to the idle pool; ``err`` says why it was closed instead."""

    request: RoundTrip
    time: float
    conn: ConnInfo | None
    err: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RedirectInfo:
    """The previous hop answered ``status`` with a Location: the next hop goes to ``to_url``."""

    request: RoundTrip
    time: float
    status: int
    from_url: URL
    to_url: URL


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryInfo:
    """aiohttp retries the round trip (a stale pooled connection failed); ``err`` is why."""

    request: RoundTrip
    time: float
    reason: str
    err: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestEndInfo:
    """The final response's headers arrived; ``response`` is aiohttp's ``ClientResponse``."""

    request: RoundTrip
    time: float
    status: int
    url: URL
    response: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestExceptionInfo:
    """The request failed; ``err`` is exactly the exception the caller sees."""

    request: RoundTrip
    time: float
    err: BaseException


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestDoneInfo:
    """Nothing more will happen for this request: the last body is done, or it failed."""

    request: RoundTrip
    time: float
    err: BaseException | None
