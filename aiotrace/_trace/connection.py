"""One connection's life as the reuse detector sees it: :class:`ConnState` (kept on the
connection's protocol) and, per pool key, how the last connection ended (:class:`HostHistory`).

The connector (``aiotrace._adapter.connector``) fills these in; round trips (``hop.py``) and
timelines read them.
"""

from __future__ import annotations

import itertools
from typing import Any

from .clock import now as _now
from .events import ConnInfo, TLSInfo

__all__ = ["ConnState", "HostHistory", "sockaddr"]

_conn_ids = itertools.count(1)


class HostHistory:
    """What the reuse detector remembers per pool key: how its last connection ended."""

    __slots__ = ("last_close",)

    def __init__(self) -> None:
        self.last_close: str | None = None


class ConnState:
    """One connection's life, as the reuse detector sees it (kept on the protocol)."""

    __slots__ = (
        "_info",
        "close_reason",
        "closed_at",
        "history",
        "host_label",
        "id",
        "keepalive_disabled",
        "key",
        "observed",
        "opened_at",
        "raw",
        "released_at",
        "releasing",
        "served",
        "server_said_close",
    )

    def __init__(self) -> None:
        self.id = next(_conn_ids)
        self.opened_at = _now()
        self.key: Any = None
        # What the first traced got_conn learned of the connection, as the transport gave it
        # (local and remote address, TLS details): made into a ConnInfo only when something
        # reads ``info``.
        self.raw: tuple[Any, Any, TLSInfo | None] | None = None
        self._info: ConnInfo | None = None
        self.served = 0
        self.released_at: float | None = None
        self.closed_at: float | None = None
        self.close_reason: str | None = None
        self.history: HostHistory | None = None
        self.host_label: str | None = None  # "host:port", for aggregates
        self.keepalive_disabled = False
        self.server_said_close = False
        self.observed = False  # the protocol's feed_data is shadowed (see got_conn)
        self.releasing = False  # an untraced request is releasing it (see the protocol's close)

    @property
    def info(self) -> ConnInfo | None:
        """The connection's addresses and TLS details; ``None`` until a traced round trip got it."""
        info = self._info
        if info is None and self.raw is not None:
            local, remote, tls = self.raw
            info = self._info = ConnInfo._new(
                id=self.id, local_addr=sockaddr(local), remote_addr=sockaddr(remote), tls=tls
            )
        return info

    @info.setter
    def info(self, info: ConnInfo | None) -> None:
        self._info = info

    def closing(self, reason: str) -> None:
        """Record why the connection is being closed (the first reason given wins)."""
        if self.close_reason is None:
            self.close_reason = reason
            if self.history is not None:
                self.history.last_close = reason

    def __repr__(self) -> str:
        state = (
            "CLOSED"
            if self.closed_at is not None
            else ("IDLE" if self.released_at is not None else "ACTIVE")
        )
        return f"<ConnState #{self.id} {state} served={self.served}>"


def sockaddr(addr: Any) -> str | None:
    """A socket address as ``host:port`` (``[host]:port`` for IPv6), or ``None``."""
    if not addr:
        return None
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
