"""Every read of aiohttp's private state, in one place.

aiohttp has no public signal for these, so aiotrace touches them here and nowhere else (the
private *methods* TracingConnector overrides are listed, with the same note, in
``connector.py``; ``TracingResponseHandler.connection_lost`` reads its own inherited
``_payload`` to learn the body's error). Each was verified, textually and by the test
suite, on aiohttp 3.12.15 and 3.14.5; ``pyproject.toml`` caps aiohttp below the next minor
release so that a new one is checked before it is allowed.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from aiohttp import connector as _connector_mod

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

    from aiohttp import BaseConnector, ClientSession, TCPConnector, TraceConfig
    from aiohttp.client_proto import ResponseHandler

__all__ = [
    "AIOHTTP_DEFAULT_SSL_CONTEXTS",
    "acquired_key",
    "asked_to_close",
    "connector_unused",
    "dns_cache_state",
    "install_protocol_factory",
    "install_request_boundary",
    "make_ssl_context",
    "pool_contents",
    "set_socket_factory",
    "socket_factory",
    "trace_config_list",
]

# aiohttp's module-level default contexts (connector.py: _SSL_CONTEXT_VERIFIED / _UNVERIFIED),
# shared by every session in the process: aiotrace never mutates them, it uses its own twins.
AIOHTTP_DEFAULT_SSL_CONTEXTS: tuple[ssl.SSLContext, ssl.SSLContext] = (
    _connector_mod._SSL_CONTEXT_VERIFIED,
    _connector_mod._SSL_CONTEXT_UNVERIFIED,
)


def make_ssl_context(verified: bool) -> ssl.SSLContext:
    """A context made exactly as aiohttp makes its defaults (``_make_ssl_context``)."""
    ctx: ssl.SSLContext = _connector_mod._make_ssl_context(verified)
    return ctx


def install_protocol_factory(
    connector: BaseConnector, protocol_class: Callable[..., ResponseHandler]
) -> None:
    """Make the connector build ``protocol_class`` connections.

    ``BaseConnector._factory`` is ``functools.partial(ResponseHandler, loop=loop)`` in every
    version from 3.9 to 3.14.
    """
    connector._factory = functools.partial(protocol_class, loop=connector._loop)


def dns_cache_state(connector: TCPConnector, host: str, port: int) -> tuple[bool, bool]:
    """``(cached, in_flight)`` for a lookup of ``host:port`` about to start.

    Reads ``_use_dns_cache``, ``_cached_hosts`` (a ``_DNSCacheTable``) and
    ``_throttle_dns_futures``, the state ``TCPConnector._resolve_host`` itself consults.
    """
    c: Any = connector
    if not c._use_dns_cache:
        return False, False
    key = (host, port)
    cached = key in c._cached_hosts and not c._cached_hosts.expired(key)
    return cached, (not cached and key in c._throttle_dns_futures)


def asked_to_close(protocol: ResponseHandler) -> bool:
    """Whether a response on this connection said ``Connection: close`` (or was HTTP/1.0
    without keep-alive), or the connection failed: ``ResponseHandler._should_close``, set in
    ``data_received`` from the parser's ``message.should_close``, and by ``set_exception``,
    ``force_close`` and ``connection_lost`` (the caller tells a failure apart by
    ``exception()``). For connections no traced request watched (see ``close``)."""
    return bool(protocol._should_close)


def install_request_boundary(session: ClientSession, wrapper: Callable[..., Any]) -> None:
    """Route ``session.request()``/``get()``/… through ``wrapper``.

    Every request method of ``ClientSession`` calls ``self._request(...)``; an instance
    attribute of that name shadows the method. Set with ``object.__setattr__`` so aiohttp's
    DEBUG-mode ``__setattr__`` warning is not tripped, and not through ``__dict__``: reading
    an instance's ``__dict__`` turns its inline attribute values into a real dict, which
    slows every attribute access aiohttp's request path makes on the session.
    """
    object.__setattr__(session, "_request", wrapper)


def socket_factory(connector: TCPConnector) -> Any:
    """The ``socket_factory`` the connector was made with (``None``: aiohappyeyeballs' own):
    ``TCPConnector._socket_factory``, stored as given in 3.12.15 and 3.14.5."""
    return connector._socket_factory


def set_socket_factory(connector: TCPConnector, factory: Any) -> None:
    """Make the connector open its sockets with ``factory`` (read per connect: see
    ``socket_factory``)."""
    connector._socket_factory = factory


def connector_unused(connector: BaseConnector) -> bool:
    """Whether the connector has no connection at all, pooled or in use, and is open:
    ``BaseConnector._conns`` (key -> deque of idle (protocol, time)) and ``_acquired``
    (protocols in use), the same in 3.12.15 and 3.14.5."""
    c: Any = connector
    return not (c._conns or c._acquired or c.closed)


def pool_contents(connector: BaseConnector) -> tuple[list[Any], list[tuple[Any, int]]]:
    """The connections in use (their protocols, a connection being made excluded: its
    placeholder has no transport) and the idle ones, as ``(key, count)``:
    ``BaseConnector._acquired`` (a set) and ``_conns`` (key -> deque of (protocol, time); the
    dict is replaced wholesale by the cleanup), as in 3.12.15 and 3.14.5. Called from a
    metric reader's thread: each container is copied in one C call (``list()``) before it is
    read, so the loop changing it meanwhile cannot break the iteration."""
    c: Any = connector
    active = [p for p in list(c._acquired) if p.transport is not None]
    idle = [(key, len(conns)) for key, conns in list(c._conns.items()) if conns]
    return active, idle


def acquired_key(connector: BaseConnector, protocol: Any) -> Any:
    """The pool key of a connection in use, where the connector tracks it per host
    (``_acquired_per_host``, kept only with ``limit_per_host``); else ``None``."""
    c: Any = connector
    for key, protos in list(c._acquired_per_host.items()):
        if protocol in protos:
            return key
    return None


def trace_config_list(session: ClientSession) -> list[TraceConfig]:
    """The session's own list of TraceConfigs (``ClientSession.trace_configs`` returns the
    list ``_trace_configs`` itself in 3.12.15 and 3.14.5; aiohttp reads it at the start of
    each request, so a change applies to requests that start afterwards)."""
    return session._trace_configs
