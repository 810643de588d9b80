"""TLS handshake hooks, through the standard library's ``SSLContext.sslobject_class``.

Both asyncio's and uvloop's SSL transports drive an ``ssl.SSLObject`` made by
``context.wrap_bio``, which builds ``context.sslobject_class``. The first ``do_handshake`` call
is the handshake's start; the first call that returns is its end. Verification is the
context's own: aiotrace never changes ``verify_mode``, ``check_hostname`` or the trust store.

aiohttp's shared default contexts are never touched: :func:`traceable` swaps them for twins
made by the same aiohttp function. A user's own context gets ``sslobject_class`` set once, if
it still has the standard one; with no trace active the subclass only adds a ContextVar read.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from .._trace.events import TLSInfo
from .._trace.request import running_request
from .private import AIOHTTP_DEFAULT_SSL_CONTEXTS, make_ssl_context

if TYPE_CHECKING:
    from .._trace.hop import HopState

__all__ = ["TracingSSLObject", "tls_info", "traceable"]


def _name(parts: Any) -> str | None:
    if not parts:
        return None
    return ", ".join("=".join(kv) for rdn in parts for kv in rdn)


# Peer certificate (DER) -> (subject, issuer, notAfter). Decoding a certificate into
# getpeercert()'s dict costs ~20 us; a server shows the same one on every connection, and the
# DER bytes cost a tenth of that. Bounded: cleared when full.
# Keyed with the verify mode: unverified, getpeercert() tells nothing (see below).
_CERT_NAMES: dict[tuple[bytes, int], tuple[str | None, str | None, str | None]] = {}
_CERT_NAMES_MAX = 256


def _peer_names(obj: Any) -> tuple[str | None, str | None, str | None]:
    try:
        der = obj.getpeercert(True)
    except (ValueError, ssl.SSLError):
        der = None
    if not der:
        return None, None, None
    key = (der, obj.context.verify_mode)
    names = _CERT_NAMES.get(key)
    if names is None:
        try:
            cert = obj.getpeercert() or {}
        except (ValueError, ssl.SSLError):
            cert = {}
        # With verification off (ssl=False) the dict form is empty: nothing was checked.
        names = (_name(cert.get("subject")), _name(cert.get("issuer")), cert.get("notAfter"))
        if len(_CERT_NAMES) >= _CERT_NAMES_MAX:
            _CERT_NAMES.clear()
        _CERT_NAMES[key] = names
    return names


def tls_info(obj: Any) -> TLSInfo:
    """What an SSL object (``ssl.SSLObject`` or ``ssl.SSLSocket``) negotiated."""
    cipher = obj.cipher()
    subject, issuer, not_after = _peer_names(obj)
    return TLSInfo(
        version=obj.version(),
        cipher=cipher[0] if cipher else None,
        alpn=obj.selected_alpn_protocol(),
        session_reused=bool(obj.session_reused),
        server_name=obj.server_hostname,
        peer_subject=subject,
        peer_issuer=issuer,
        peer_not_after=not_after,
    )


class TracingSSLObject(ssl.SSLObject):
    """An ``SSLObject`` that reports its handshake to the round trip that opened it.

    Its own state is plain attributes with class-level defaults, never read through
    ``__dict__`` (which would slow every later ``read``/``write`` of the connection).
    """

    _aiotrace_looked_up = False
    _aiotrace_hop: HopState | None = None
    _aiotrace_started = False

    def do_handshake(self) -> None:
        if not self._aiotrace_looked_up:  # the first call runs in the connecting task
            self._aiotrace_looked_up = True
            state = running_request()
            self._aiotrace_hop = state.hop if state is not None else None
        hop = self._aiotrace_hop
        if hop is None:
            return super().do_handshake()
        if not self._aiotrace_started:
            self._aiotrace_started = True
            hop.tls_start(self.server_hostname)
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except BaseException as e:
            self._aiotrace_hop = None  # the connection outlives the request
            hop.tls_done(None, e)
            raise
        self._aiotrace_hop = None
        hop.tls_done(tls_info(self), None)
        return None


_TWINS: dict[int, ssl.SSLContext] = {}


def _twin(ctx: ssl.SSLContext) -> ssl.SSLContext:
    verified = ctx is AIOHTTP_DEFAULT_SSL_CONTEXTS[0]
    twin = _TWINS.get(verified)
    if twin is None:
        twin = _TWINS[verified] = make_ssl_context(verified)
        twin.sslobject_class = TracingSSLObject
    return twin


def traceable(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """The context to hand the transport: ``ctx`` itself, observed, or aiohttp-default's twin."""
    if ctx.sslobject_class is TracingSSLObject:
        return ctx
    if ctx in AIOHTTP_DEFAULT_SSL_CONTEXTS:
        return _twin(ctx)
    if ctx.sslobject_class is ssl.SSLObject:
        ctx.sslobject_class = TracingSSLObject
    return ctx


def preload_default_twins() -> None:
    """Build the twins now (they read the trust store from disk: not on the event loop)."""
    for ctx in AIOHTTP_DEFAULT_SSL_CONTEXTS:
        _twin(ctx)
