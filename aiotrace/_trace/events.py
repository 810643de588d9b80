"""The event types: one frozen, slotted value per hook.

Every event carries ``request`` (the :class:`RoundTrip` it belongs to) and ``time`` (the
``time.perf_counter()`` reading when it happened). Fields follow Go's ``net/http/httptrace``
where Go has them. Events are built only for hooks someone set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from multidict import CIMultiDictProxy
    from yarl import URL

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

_E = TypeVar("_E")


class _Event:
    """What every type here shares: ``_new``, the constructor aiotrace's emitters use.

    ``_new`` takes the same keyword arguments as the class and makes the same frozen value,
    but sets the slots directly, where a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` field by field (callgrind: a three-field event 7.9k instructions
    to make and free, 4.4k through ``_new``; a RoundTrip 13.3k and 6.4k; a request with
    every hook set, 548.9k and 484.5k).
    """

    __slots__ = ()

    if TYPE_CHECKING:

        @classmethod
        def _new(cls, **fields: Any) -> Self: ...


def _fast_new(cls: type[_E]) -> type[_E]:
    """Give a frozen slotted dataclass its ``_new`` (see :class:`_Event`)."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_object_new": object.__new__, "_cls": cls}
    for name in names:
        namespace[f"_set_{name}"] = getattr(cls, name).__set__  # the slot's descriptor
    body = "".join(f"    _set_{name}(self, {name})\n" for name in names)
    exec(  # a function per class, as dataclasses makes __init__
        f"def _new(*, {', '.join(names)}):\n    self = _object_new(_cls)\n{body}    return self\n",
        namespace,
    )
    cls._new = staticmethod(namespace["_new"])  # type: ignore[attr-defined]
    return cls


class HookRunner(Protocol):
    """Runs a request's coroutine hooks in event order (``request.SerialRunner``)."""

    def schedule(self, fn: Callable[[Any], Coroutine[Any, Any, object]], event: object) -> None: ...


class RequestHandle(Protocol):
    """What an event's round trip keeps of its request (``request.RequestState``, higher up)."""

    def serial(self) -> HookRunner: ...


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class RoundTrip(_Event):
    """One round trip of a traced request: request id, method, this hop's URL, hop and attempt."""

    id: int
    method: str
    url: URL
    hop: int
    attempt: int
    _state: RequestHandle = field(repr=False, compare=False)


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class TLSInfo(_Event):
    """What the TLS handshake settled: protocol version, cipher, ALPN, peer certificate."""

    version: str | None
    cipher: str | None
    alpn: str | None
    session_reused: bool
    server_name: str | None
    peer_subject: str | None
    peer_issuer: str | None
    peer_not_after: str | None


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class ConnInfo(_Event):
    """A connection: its id (unique in the process), local and remote address, TLS details."""

    id: int
    local_addr: str | None
    remote_addr: str | None
    tls: TLSInfo | None


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestStartInfo(_Event):
    """A request began (once per ``session.request``, before any hop)."""

    request: RoundTrip
    time: float
    method: str
    url: URL


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class GetConnInfo(_Event):
    """A round trip asks the pool for a connection to ``host_port``."""

    request: RoundTrip
    time: float
    host_port: str


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class PoolWaitStartInfo(_Event):
    """The pool is at ``limit``/``limit_per_host``: the round trip queues for a slot."""

    request: RoundTrip
    time: float


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class PoolWaitDoneInfo(_Event):
    """The queued round trip got a slot (``err`` set if the wait was cut short)."""

    request: RoundTrip
    time: float
    err: BaseException | None


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class DNSStartInfo(_Event):
    """A host name lookup began."""

    request: RoundTrip
    time: float
    host: str


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class DNSDoneInfo(_Event):
    """A lookup ended: ``addrs`` or ``err``; ``coalesced`` joined another's; ``cached`` hit."""

    request: RoundTrip
    time: float
    host: str
    addrs: tuple[str, ...]
    err: BaseException | None
    coalesced: bool
    cached: bool


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectStartInfo(_Event):
    """A TCP connect to one address began (one per Happy Eyeballs attempt)."""

    request: RoundTrip
    time: float
    network: str
    addr: str


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectDoneInfo(_Event):
    """A TCP connect to one address ended, ``err`` set when it failed or was abandoned."""

    request: RoundTrip
    time: float
    network: str
    addr: str
    err: BaseException | None


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class TLSHandshakeStartInfo(_Event):
    """The TLS handshake began (first ``do_handshake``)."""

    request: RoundTrip
    time: float
    server_name: str | None


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class TLSHandshakeDoneInfo(_Event):
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


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class GotConnInfo(_Event):
    """The round trip has a connection: new, or ``reused`` after ``idle_time`` seconds idle."""

    request: RoundTrip
    time: float
    conn: ConnInfo
    reused: bool
    was_idle: bool
    idle_time: float


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class WroteHeaderFieldInfo(_Event):
    """One request header as written (all its values)."""

    request: RoundTrip
    time: float
    key: str
    values: tuple[str, ...]


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class WroteHeadersInfo(_Event):
    """All request headers are written."""

    request: RoundTrip
    time: float


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class Wait100ContinueInfo(_Event):
    """Headers carried ``Expect: 100-continue``; the body waits for the server."""

    request: RoundTrip
    time: float


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class WroteRequestInfo(_Event):
    """The whole request (headers and body) is written, or writing failed with ``err``."""

    request: RoundTrip
    time: float
    err: BaseException | None


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class GotFirstResponseByteInfo(_Event):
    """The first byte of the response arrived on the socket."""

    request: RoundTrip
    time: float


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class Got100ContinueInfo(_Event):
    """The server answered ``100 Continue``."""

    request: RoundTrip
    time: float


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class Got1xxResponseInfo(_Event):
    """An informational response (100, 103, ...) arrived before the final one."""

    request: RoundTrip
    time: float
    status: int
    headers: CIMultiDictProxy[str]


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseBodyDoneInfo(_Event):
    """The response body was fully received, or released unread (``err`` says why it was cut)."""

    request: RoundTrip
    time: float
    status: int | None
    err: BaseException | None


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class PutIdleConnInfo(_Event):
    """The connection went back to the idle pool; ``err`` says why it was closed instead."""

    request: RoundTrip
    time: float
    conn: ConnInfo | None
    err: BaseException | None


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class RedirectInfo(_Event):
    """The previous hop answered ``status`` with a Location: the next hop goes to ``to_url``."""

    request: RoundTrip
    time: float
    status: int
    from_url: URL
    to_url: URL


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class RetryInfo(_Event):
    """aiohttp retries the round trip (a stale pooled connection failed); ``err`` is why."""

    request: RoundTrip
    time: float
    reason: str
    err: BaseException | None


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestEndInfo(_Event):
    """The final response's headers arrived; ``response`` is aiohttp's ``ClientResponse``."""

    request: RoundTrip
    time: float
    status: int
    url: URL
    response: Any


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestExceptionInfo(_Event):
    """The request failed; ``err`` is exactly the exception the caller sees."""

    request: RoundTrip
    time: float
    err: BaseException


@_fast_new
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestDoneInfo(_Event):
    """Nothing more will happen for this request: the last body is done, or it failed."""

    request: RoundTrip
    time: float
    err: BaseException | None
