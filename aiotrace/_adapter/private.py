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

    from aiohttp import ClientSession, TCPConnector
    from aiohttp.client_proto import ResponseHandler

__all__ = [
    "AIOHTTP_DEFAULT_SSL_CONTEXTS",
    "asked_to_close",
    "dns_cache_state",
    "install_protocol_factory",
    "install_request_boundary",
    "make_ssl_context",
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
    connector: TCPConnector, protocol_class: Callable[..., ResponseHandler]
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
