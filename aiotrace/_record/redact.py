"""Redaction: what every export does to URLs and headers before they leave the process.

By default URL user info is dropped, the values of sensitive query parameters are replaced,
and the values of credential headers are replaced. ``Redaction(enabled=False)`` opts out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from yarl import URL

__all__ = ["DEFAULT_REDACTION", "REDACTED", "Redaction"]

REDACTED = "REDACTED"

_SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
_SENSITIVE_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "key",
        "api_key",
        "apikey",
        "signature",
        "sig",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Redaction:
    """What exports hide: URL user info, these query parameters' values, these headers' values."""

    enabled: bool = True
    query_params: frozenset[str] = field(default=_SENSITIVE_PARAMS)
    headers: frozenset[str] = field(default=_SENSITIVE_HEADERS)

    @classmethod
    def with_params(cls, params: Iterable[str], *, extend: bool = True) -> Redaction:
        """A redaction hiding ``params`` too (or instead, with ``extend=False``)."""
        names = frozenset(p.lower() for p in params)
        return cls(query_params=(_SENSITIVE_PARAMS | names) if extend else names)

    def url(self, url: URL | str | None) -> str | None:
        """The URL as text, with user info dropped and sensitive query values replaced."""
        if url is None:
            return None
        u = url if isinstance(url, URL) else URL(url)
        if not self.enabled:
            return str(u)
        if u.raw_user is not None or u.raw_password is not None:
            u = u.with_user(None)
        if u.raw_query_string:
            query = u.query
            if any(k.lower() in self.query_params for k in query):
                u = u.with_query(
                    [
                        (k, REDACTED if k.lower() in self.query_params else v)
                        for k, v in query.items()
                    ]
                )
        return str(u)

    def header(self, name: str, value: str) -> str:
        """The header's value, or ``REDACTED`` for a credential header."""
        if self.enabled and name.lower() in self.headers:
            return REDACTED
        return value


DEFAULT_REDACTION = Redaction()
