"""One connect_start/connect_done per TCP connect attempt, through ``socket_factory``.

aiohttp (3.12+) passes ``socket_factory`` to aiohappyeyeballs, which calls it once per address
it tries and then runs ``loop.sock_connect`` on the socket. The socket made here is a
``socket.socket`` subclass that watches that attempt: both asyncio and uvloop start the connect
with ``sock.connect()`` and learn its outcome from ``sock.getsockopt(SOL_SOCKET, SO_ERROR)``;
so the attempt's end is seen exactly when the event loop sees it. An attempt that never got an
outcome (cancelled by a timeout or the caller, or a Happy Eyeballs loser) is ended by the round
trip itself: with the request's error, or as abandoned once another address connected.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from .._trace.request import running_request

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._trace.hop import HopState, _Attempt

__all__ = ["make_socket_factory"]

_SO_ERROR = (socket.SOL_SOCKET, socket.SO_ERROR)
# The base methods, called directly: a zero-argument super() costs a lookup per call.
_connect = socket.socket.connect
_getsockopt = socket.socket.getsockopt


class _AttemptSocket(socket.socket):
    __slots__ = ("_aiotrace_attempt", "_aiotrace_hop")

    _aiotrace_hop: HopState | None
    _aiotrace_attempt: _Attempt

    def _aiotrace_done(self, err: OSError | None) -> None:
        hop = self._aiotrace_hop
        if hop is not None:
            self._aiotrace_hop = None  # the socket outlives the request (the transport has it)
            hop.connect_done(self._aiotrace_attempt, err)

    def connect(self, address: Any) -> None:
        try:
            _connect(self, address)
        except (BlockingIOError, InterruptedError):
            raise
        except OSError as e:
            self._aiotrace_done(e)
            raise
        self._aiotrace_done(None)

    def getsockopt(self, *args: Any) -> Any:
        value = _getsockopt(self, *args)
        if self._aiotrace_hop is not None and args[:2] == _SO_ERROR and len(args) == 2:
            self._aiotrace_done(OSError(value, _strerror(value)) if value else None)
        return value


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)


def make_socket_factory(
    user_factory: Callable[[Any], socket.socket] | None,
) -> Callable[[Any], socket.socket]:
    """A ``socket_factory`` that reports each attempt of a traced request."""

    def factory(addr_info: Any) -> socket.socket:
        state = running_request()
        hop = state.hop if state is not None else None
        family, type_, proto, _, sockaddr = addr_info
        if hop is None:
            if user_factory is not None:
                return user_factory(addr_info)
            return socket.socket(family=family, type=type_, proto=proto)
        attempt = hop.connect_start(family, sockaddr)
        if user_factory is not None:
            # A user's own socket can't be watched: its attempt is settled by the TLS start
            # or by got_conn (the winner), or by the failure.
            return user_factory(addr_info)
        sock = _AttemptSocket(family=family, type=type_, proto=proto)
        sock._aiotrace_hop = hop
        sock._aiotrace_attempt = attempt
        return sock

    return factory
