"""Real loopback peers for the aiotrace test-suite: no mocks, only sockets on 127.0.0.1 / ::1.

What lives here (fixtures wrapping these are in ``conftest.py``):

* :class:`DNSServer` - an authoritative dnslib-backed DNS server on a random UDP *and* TCP
  port of 127.0.0.1, run in its own thread (independent of the test's event loop).  Its zone
  maps names to A / AAAA addresses; each name can get an injected delay, NXDOMAIN, SERVFAIL
  or "drop" (never answer).  Every query is counted per name and per type.
  :func:`resolver_kwargs` gives the ``aiodns.DNSResolver`` / ``aiohttp.resolver.AsyncResolver``
  keyword arguments that make c-ares ask this server and nothing else.
* TLS helpers built on trustme: :func:`server_ssl_context` and :func:`client_ssl_context`.
* :func:`raw_server` - an asyncio TCP server running a ``handler(reader, writer)`` coroutine per
  connection, plus ready-made handlers for misbehaving HTTP/1.1 peers (103 Early Hints,
  100 Continue, resets, truncated bodies, slow-loris headers, silence ...).
* :func:`proxy_py` - the ``proxy.py`` forward proxy (PyPI) in a subprocess on 127.0.0.1, with
  or without Basic proxy authentication; :func:`connect_proxy` - a small CONNECT proxy handler
  for :func:`raw_server` that can be told to fail (407, 502, close before or after replying).
* :func:`closed_port` (connect is refused at once) and :func:`blackhole_listener` (connect
  hangs: the accept queue of a listener that never accepts is filled first).

Every server here is bounded in count and in time and stops by itself, even if a test forgets
to stop it.  Injected delays are wall-clock sleeps of >= 100 ms in the tests that use them.
A lower bound on an elapsed time subtracts :data:`TIMER_SLACK`: uvloop keeps its clock in whole
milliseconds, so its timers may fire up to a millisecond before ``time.monotonic()`` says the
delay has passed (seen in CI: a 0.3 s timeout after 0.2996 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import ipaddress
import itertools
import selectors
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pycares
import trustme
from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSError, DNSRecord  # type: ignore[import-untyped]

TIMER_SLACK = 0.01
"""Seconds a measured delay may fall short of the timer that ended it (uvloop's ms clock)."""

__all__ = [
    "TEST_HOSTNAMES",
    "TIMER_SLACK",
    "DNSServer",
    "Handler",
    "RawServer",
    "blackhole_listener",
    "client_ssl_context",
    "close_before_response",
    "closed_port",
    "connect_proxy",
    "content_length_too_long",
    "continue_100",
    "early_hints",
    "hosts_file_names",
    "ProxyServer",
    "proxy_py",
    "raw_server",
    "read_request_head",
    "reset_mid_body",
    "reset_mid_headers",
    "reset_now",
    "resolver_kwargs",
    "respond",
    "server_ssl_context",
    "silent",
    "slow_headers",
    "stale_after_first_response",
    "stale_then_fresh",
    "truncated_chunked",
]

#: Names every "good" test certificate is valid for.
TEST_HOSTNAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1", "a.test", "b.test", "c.test")


# --------------------------------------------------------------------------------------------
# Ports: refused and black-holed
# --------------------------------------------------------------------------------------------


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@contextlib.contextmanager
def closed_port(host: str = "127.0.0.1") -> Iterator[int]:
    """Yield a TCP port on ``host`` where a connect is refused (RST) at once.

    The port stays *bound* (but never listening) for the duration, so no other process can
    grab it and turn the refusal into a flaky success.
    """
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.contextmanager
def blackhole_listener(
    host: str = "127.0.0.1", *, max_fill: int = 8, settle: float = 0.2
) -> Iterator[tuple[str, int]]:
    """Yield ``(host, port)`` of a listener whose connects hang (no SYN-ACK) until timeout.

    A bound socket that is not listening is *refused* on loopback, and a listener that merely
    never calls ``accept()`` still completes handshakes until its accept queue is full.  So
    this listens with backlog 0 and fills the queue with our own connections: once full,
    Linux drops further SYNs (``tcp_abort_on_overflow=0``, the default), and the next
    ``connect()`` hangs in SYN-SENT - a real connect timeout on loopback.  Bounded: at most
    ``max_fill`` filler sockets, ``settle`` seconds each, all closed on exit.
    """
    listener = socket.socket(_family(host), socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind((host, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(max_fill):
            probe = socket.socket(_family(host), socket.SOCK_STREAM)
            probe.setblocking(False)
            probe.connect_ex((host, port))
            connected = _wait_writable(probe, settle)
            if connected and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                fillers.append(probe)  # handshake completed: one more slot of the queue used
                continue
            probe.close()  # this one hung in SYN-SENT: the queue is full
            break
        else:  # pragma: no cover - a kernel that never fills the queue
            raise RuntimeError(f"accept queue did not fill after {max_fill} connections")
        yield host, port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


def _wait_writable(sock: socket.socket, timeout: float) -> bool:
    """True once a non-blocking connect finished (success or error), False on timeout."""
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_WRITE)
        return bool(sel.select(timeout))


# --------------------------------------------------------------------------------------------
# DNS
# --------------------------------------------------------------------------------------------

Behaviour = Literal["answer", "nxdomain", "servfail", "drop"]


@dataclass
class ZoneEntry:
    """How the test DNS server treats one name."""

    a: list[str] = field(default_factory=list)
    aaaa: list[str] = field(default_factory=list)
    behaviour: Behaviour = "answer"
    delay: float = 0.0
    ttl: int = 0


def _canon(name: str) -> str:
    return name.rstrip(".").lower()


class DNSServer:
    """An authoritative DNS server for tests, on 127.0.0.1 (UDP and TCP, same random port).

    Configure it before or while it runs (the zone is read under a lock)::

        dns.add("a.test", "127.0.0.1", "::1", delay=0.15)
        dns.nxdomain("gone.test")
        dns.servfail("broken.test")
        dns.drop("void.test")          # counted, never answered

    Unknown names get NXDOMAIN.  A known name without records of the asked type gets an empty
    NOERROR answer (NODATA).  ``count(name, qtype=None)`` tells how many queries reached it.

    Bounded: the serving thread stops by itself after ``lifetime`` seconds or ``max_queries``
    queries, whichever comes first; ``stop()`` (or leaving the ``with`` block) stops it at once.
    """

    def __init__(
        self, host: str = "127.0.0.1", *, lifetime: float = 120.0, max_queries: int = 5000
    ) -> None:
        self.host = host
        self.lifetime = lifetime
        self.max_queries = max_queries
        self._zone: dict[str, ZoneEntry] = {}
        # An RLock, not a Lock: tests read the counters from the event loop while the server
        # thread may hold the lock, and blockbuster flags a contended Lock (not an RLock) there.
        self._lock = threading.RLock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str, str]] = []  # (name, qtype, "udp"|"tcp") in arrival order
        self.errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)  # stop() may run on an event loop (blockbuster)
        self._stopping = threading.Event()
        self.port = 0

    # -- zone ---------------------------------------------------------------------------------

    def add(self, name: str, *addresses: str, delay: float = 0.0, ttl: int = 0) -> None:
        """Answer ``name`` with ``addresses`` (IPv4 -> A, IPv6 -> AAAA) after ``delay`` s."""
        entry = ZoneEntry(delay=delay, ttl=ttl)
        for address in addresses:
            ip = ipaddress.ip_address(address)
            (entry.a if ip.version == 4 else entry.aaaa).append(str(ip))
        self._set(name, entry)

    def nxdomain(self, name: str, *, delay: float = 0.0) -> None:
        """Answer ``name`` with NXDOMAIN (after ``delay`` s)."""
        self._set(name, ZoneEntry(behaviour="nxdomain", delay=delay))

    def servfail(self, name: str, *, delay: float = 0.0) -> None:
        """Answer ``name`` with SERVFAIL (after ``delay`` s)."""
        self._set(name, ZoneEntry(behaviour="servfail", delay=delay))

    def drop(self, name: str) -> None:
        """Count queries for ``name`` but never answer them."""
        self._set(name, ZoneEntry(behaviour="drop"))

    def _set(self, name: str, entry: ZoneEntry) -> None:
        with self._lock:
            self._zone[_canon(name)] = entry

    # -- counters -----------------------------------------------------------------------------

    def count(self, name: str, qtype: str | None = None) -> int:
        """Queries received for ``name`` (optionally only of ``qtype``, e.g. ``"A"``)."""
        name = _canon(name)
        with self._lock:
            return sum(
                n
                for (qname, t), n in self._counts.items()
                if qname == name and (qtype is None or t == qtype)
            )

    @property
    def total(self) -> int:
        """All queries received so far."""
        with self._lock:
            return sum(self._counts.values())

    def reset_counts(self) -> None:
        """Forget all counted queries (the zone is kept)."""
        with self._lock:
            self._counts.clear()
            self.log.clear()

    # -- addresses ----------------------------------------------------------------------------

    @property
    def nameserver(self) -> str:
        """``"127.0.0.1:PORT"`` / ``"[::1]:PORT"``: the form c-ares' server CSV accepts."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> DNSServer:
        """Bind UDP and TCP on one free port and start serving in a daemon thread."""
        family = _family(self.host)
        for _ in range(20):  # the UDP port picked by the kernel may be taken for TCP
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:  # pragma: no cover
            raise RuntimeError("no port free for both UDP and TCP")
        tcp.listen(16)
        udp.setblocking(False)
        tcp.setblocking(False)
        self._udp, self._tcp, self.port = udp, tcp, port
        self._thread = threading.Thread(target=self._serve, name=f"test-dns:{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every socket; idempotent."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the serving thread -------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._udp is not None
        assert self._tcp is not None
        sel = selectors.DefaultSelector()
        sel.register(self._udp, selectors.EVENT_READ, "udp")
        sel.register(self._tcp, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        buffers: dict[socket.socket, bytes] = {}
        # (due, seq, payload, udp-address or tcp-socket): delayed replies, sent in due order
        pending: list[tuple[float, int, bytes, Any]] = []
        seq = itertools.count()
        deadline = time.monotonic() + self.lifetime
        handled = 0
        try:
            while not self._stopping.is_set() and handled < self.max_queries:
                now = time.monotonic()
                if now >= deadline:
                    break
                while pending and pending[0][0] <= now:
                    _, _, payload, target = heapq.heappop(pending)
                    self._send(payload, target)
                timeout = deadline - now
                if pending:
                    timeout = min(timeout, pending[0][0] - now)
                for key, _ in sel.select(max(timeout, 0.0)):
                    kind = key.data
                    if kind == "wake":
                        return
                    if kind == "udp":
                        try:
                            data, addr = self._udp.recvfrom(65535)
                        except BlockingIOError:
                            continue
                        requests: list[tuple[bytes, Any]] = [(data, addr)]
                    elif kind == "listen":
                        try:
                            conn, _ = self._tcp.accept()
                        except BlockingIOError:
                            continue
                        conn.setblocking(False)
                        buffers[conn] = b""
                        sel.register(conn, selectors.EVENT_READ, "tcp")
                        continue
                    else:
                        conn = key.fileobj  # type: ignore[assignment]
                        chunk = b""
                        with contextlib.suppress(BlockingIOError, ConnectionError):
                            chunk = conn.recv(65535)
                        if not chunk:
                            sel.unregister(conn)
                            buffers.pop(conn, None)
                            conn.close()
                            continue
                        buf = buffers[conn] + chunk
                        requests = []
                        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                            size = struct.unpack("!H", buf[:2])[0]
                            requests.append((buf[2 : 2 + size], conn))
                            buf = buf[2 + size :]
                        buffers[conn] = buf
                    for data, target in requests:
                        handled += 1
                        answer = self._answer(data, "udp" if kind == "udp" else "tcp")
                        if answer is None:
                            continue
                        delay, payload = answer
                        if delay > 0:
                            heapq.heappush(
                                pending, (time.monotonic() + delay, next(seq), payload, target)
                            )
                        else:
                            self._send(payload, target)
        except Exception as exc:  # pragma: no cover - surfaced via .errors in teardown
            self.errors.append(exc)
        finally:
            for conn in buffers:
                conn.close()
            sel.close()

    def _send(self, payload: bytes, target: Any) -> None:
        assert self._udp is not None
        try:
            if isinstance(target, socket.socket):
                target.sendall(struct.pack("!H", len(payload)) + payload)
            else:
                self._udp.sendto(payload, target)
        except OSError:
            pass  # the client went away (e.g. a TCP connection was closed): nothing to do

    def _answer(self, data: bytes, proto: str) -> tuple[float, bytes] | None:
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return None
        qname = request.q.qname
        name = _canon(str(qname))
        qtype = QTYPE.get(request.q.qtype, str(request.q.qtype))
        with self._lock:
            self._counts[(name, qtype)] += 1
            self.log.append((name, qtype, proto))
            entry = self._zone.get(name)
        reply = request.reply()  # copies id, question; sets qr, aa, ra
        if entry is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return 0.0, reply.pack()
        if entry.behaviour == "drop":
            return None
        if entry.behaviour == "nxdomain":
            reply.header.rcode = RCODE.NXDOMAIN
        elif entry.behaviour == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        else:
            if qtype in ("A", "ANY"):
                for addr in entry.a:
                    reply.add_answer(RR(qname, QTYPE.A, rdata=A(addr), ttl=entry.ttl))
            if qtype in ("AAAA", "ANY"):
                for addr in entry.aaaa:
                    reply.add_answer(RR(qname, QTYPE.AAAA, rdata=AAAA(addr), ttl=entry.ttl))
        return entry.delay, reply.pack()


def hosts_file_names(path: str = "/etc/hosts") -> set[str]:
    """Lower-cased host names listed in a hosts file (empty if it cannot be read)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    names: set[str] = set()
    for line in lines:
        fields = line.split("#", 1)[0].split()
        names.update(_canon(name) for name in fields[1:])
    return names


def resolver_kwargs(server: DNSServer, *, timeout: float = 1.0, tries: int = 1) -> dict[str, Any]:
    """Keyword arguments for ``aiodns.DNSResolver`` / ``AsyncResolver`` to ask only ``server``.

    * ``nameservers=["127.0.0.1:PORT"]`` - c-ares >= 1.24 (pycares 5 bundles 1.34) reads a port
      in its server CSV.  aiodns sets it on the channel right after creating it, before any
      query, so the resolv.conf servers are never contacted.
    * ``flags=NOSEARCH | NOALIASES`` - no resolv.conf ``search``/``domain`` suffixes and no
      ``HOSTALIASES`` rewriting: exactly the asked name reaches the server, so counts are exact.
      (Explicit flags also drop c-ares' default EDNS flag, which this server does not need.)
    * ``timeout``/``tries`` - first-try timeout and attempts; a dropped name fails with
      ``ARES_ETIMEOUT`` after about ``timeout * tries``.  c-ares never waits less than 250 ms
      per try, and once it has 3+ answers from a server it uses 5x their mean latency (still
      >= 250 ms) instead of ``timeout``: keep injected DNS delays below 250 ms, or expect a
      timeout / retry.

    Deliberately *not* passed: ``lookups="b"`` (DNS only, skip /etc/hosts).  pycares 5.2.1
    points ``ares_options.lookups`` at a temporary cffi buffer that is freed before
    ``ares_init_options`` copies it, so c-ares sometimes reads garbage and then fails every
    lookup at once with ARES_ECONNREFUSED ("Could not contact DNS servers") without sending a
    packet (``resolvconf_path=`` has the same bug).  The system default ("files, then DNS")
    is used instead: names in /etc/hosts (``localhost`` ...) are answered from that file, so
    tests use names under the reserved ``.test`` TLD, which ``conftest`` checks are absent.
    """
    return {
        "nameservers": [server.nameserver],
        "flags": pycares.ARES_FLAG_NOSEARCH | pycares.ARES_FLAG_NOALIASES,
        "timeout": timeout,
        "tries": tries,
    }


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


def server_ssl_context(
    ca: trustme.CA,
    *names: str,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> ssl.SSLContext:
    """A server context with a leaf cert from ``ca`` for ``names`` (default TEST_HOSTNAMES).

    ``not_after`` in the past gives an expired certificate.  Writes a temporary file (the ssl
    module loads keys only from files), so build these outside the event loop.
    """
    cert = ca.issue_cert(*(names or TEST_HOSTNAMES), not_before=not_before, not_after=not_after)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


def client_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    """``ssl.create_default_context()`` (system roots, hostname checks on) also trusting ``ca``."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


# --------------------------------------------------------------------------------------------
# Raw asyncio peers
# --------------------------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A running :func:`raw_server`; unpacks as ``host, port``."""

    def __init__(self, host: str, port: int, *, tls: bool = False) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.connections = 0  # accepted so far
        self.errors: list[BaseException] = []  # handler failures other than connection errors

    def __iter__(self) -> Iterator[Any]:
        return iter((self.host, self.port))

    @property
    def url(self) -> str:
        """``http://host:port/`` (``https`` when serving TLS; IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"


@contextlib.asynccontextmanager
async def raw_server(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    max_connections: int = 32,
    lifetime: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[RawServer]:
    """Serve ``handler(reader, writer)`` per connection on ``host`` and a free port.

    ``async with raw_server(respond(b"...")) as (host, port):`` - or ``as srv`` for
    ``srv.url`` / ``srv.connections``.  Bounded: after ``max_connections`` the listener
    closes, and after ``lifetime`` seconds every handler is cancelled and every connection
    aborted, even if the ``async with`` block is still running.  The writer is closed when the
    handler returns.  Handler exceptions other than connection errors are re-raised on exit.
    """
    tasks: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()
    state: RawServer | None = None

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert state is not None
        task = asyncio.current_task()
        assert task is not None
        state.connections += 1
        if state.connections >= max_connections:
            server.close()  # stop listening; this last connection is still served
        if state.connections > max_connections:
            writer.transport.abort()
            return
        tasks.add(task)
        writers.add(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client closed or reset first: fine for a misbehaving-peer test
        except asyncio.CancelledError:
            # Cancelled by shutdown(): end quietly.  This is the connection's top-level task,
            # and asyncio.streams logs an error for a client_connected_cb task that ends
            # cancelled, so re-raising here would only produce noise.
            pass
        except Exception as exc:
            state.errors.append(exc)
        finally:
            tasks.discard(task)
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(on_connect, host, 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    state = RawServer(host, port, tls=tls is not None)

    def shutdown() -> None:
        server.close()
        for task in list(tasks):
            task.cancel()
        for writer in list(writers):
            writer.transport.abort()

    timer = asyncio.get_running_loop().call_later(lifetime, shutdown)
    try:
        yield state
    finally:
        timer.cancel()
        shutdown()
        if tasks:
            await asyncio.wait(list(tasks), timeout=5)
        await server.wait_closed()
    if state.errors:
        raise state.errors[0]


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    """Read one HTTP/1.x request line + headers (through the blank line)."""
    return await reader.readuntil(b"\r\n\r\n")


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def reset_now(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0, then close) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def respond(data: bytes, *, read_request: bool = True, keep_alive: bool = False) -> Handler:
    """Reply with the fixed bytes ``data`` (to every request if ``keep_alive``), then close."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            if read_request:
                head = await read_request_head(reader)
                await reader.readexactly(_content_length(head))
            writer.write(data)
            await writer.drain()
            if not keep_alive:
                return

    return handler


def early_hints(
    *,
    link: str = "</style.css>; rel=preload; as=style",
    delay: float = 0.0,
    body: bytes = b"hello",
) -> Handler:
    """``103 Early Hints`` (with a Link header), wait ``delay`` s, then ``200 OK`` + ``body``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(f"HTTP/1.1 103 Early Hints\r\nLink: {link}\r\n\r\n".encode())
        await writer.drain()
        if delay:
            await asyncio.sleep(delay)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()

    return handler


def continue_100(*, delay: float = 0.0, body: bytes = b"got it") -> Handler:
    """``100 Continue`` after ``delay`` s, read the request body, then ``200 OK`` + ``body``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request_head(reader)
        if delay:
            await asyncio.sleep(delay)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await reader.readexactly(_content_length(head))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()

    return handler


def close_before_response(*, read_request: bool = True) -> Handler:
    """Close (FIN) without sending a byte, after reading the request head if ``read_request``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if read_request:
            await read_request_head(reader)

    return handler


def reset_mid_headers(*, partial: bytes = b"HTTP/1.1 200 OK\r\nContent-Le") -> Handler:
    """Send the start of a response head, then reset the connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(partial)
        await writer.drain()
        await asyncio.sleep(0.05)  # let the bytes reach the client before the RST
        reset_now(writer)

    return handler


def reset_mid_body(*, declared: int = 100, sent: bytes = b"0123456789") -> Handler:
    """Declare ``Content-Length: declared``, send ``sent`` (shorter), then reset."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (declared, sent))
        await writer.drain()
        await asyncio.sleep(0.05)
        reset_now(writer)

    return handler


def truncated_chunked(*, chunks: tuple[bytes, ...] = (b"hello",)) -> Handler:
    """A chunked response whose terminating ``0`` chunk never comes: close (FIN) instead."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()

    return handler


def content_length_too_long(*, declared: int = 100, sent: bytes = b"0123456789") -> Handler:
    """Declare ``Content-Length: declared``, send ``sent`` (shorter), then close (FIN)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (declared, sent))
        await writer.drain()

    return handler


def slow_headers(
    *,
    interval: float = 0.1,
    head: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: yes\r\n\r\n",
    body: bytes = b"ok",
    max_bytes: int = 200,
) -> Handler:
    """Slow-loris response: the head one byte every ``interval`` s (at most ``max_bytes``).

    The whole head takes ``len(head) * interval`` seconds (about 5 s for the default); a
    client with a read / header timeout should give up well before.
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        for i in range(min(len(head), max_bytes)):
            writer.write(head[i : i + 1])
            await writer.drain()
            await asyncio.sleep(interval)
        writer.write(body)
        await writer.drain()

    return handler


def stale_after_first_response() -> Handler:
    """The first connection answers one request, then reads the next and never answers it:
    a stale pooled connection, on which aiohttp retries an idempotent request once."""
    seen: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_no = len(seen)
        seen.append(conn_no)
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if conn_no == 0:  # the next request on this connection gets no answer
            await read_request_head(reader)

    return handler


def silent() -> Handler:
    """Accept, read whatever comes and never answer - until the client closes or lifetime ends.

    Behind a TLS client this is a server that never sends the ServerHello (handshake timeout);
    behind plain HTTP it is a server that never sends a response (read timeout).
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    return handler


# --------------------------------------------------------------------------------------------
# Proxies: proxy.py in a subprocess, and a CONNECT proxy that can be told to fail
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyServer:
    """A running forward proxy on 127.0.0.1 (``auth``: the Basic credentials it demands)."""

    port: int
    auth: tuple[str, str] | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port`` (no credentials)."""
        return f"http://{self.host}:{self.port}"

    def url_with_credentials(self, user: str, password: str) -> str:
        """``http://user:password@127.0.0.1:port``."""
        return f"http://{user}:{password}@{self.host}:{self.port}"


@contextlib.contextmanager
def proxy_py(
    *, basic_auth: tuple[str, str] | None = None, lifetime: float = 900.0, startup: float = 30.0
) -> Iterator[ProxyServer]:
    """Run ``proxy.py`` (``python -m proxy``) on 127.0.0.1 and an ephemeral port.

    One acceptor, one worker, nothing written outside a temporary directory. Bounded: killed
    after ``lifetime`` seconds even if the block is still running, and on exit. It takes
    ``user:password`` Basic proxy authentication when ``basic_auth`` is given (a request
    without it gets ``407``).
    """
    with tempfile.TemporaryDirectory(prefix="aiotrace-proxy-") as tmp:
        port_file = f"{tmp}/port"
        argv = [
            sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0",
            "--port-file", port_file, "--num-acceptors", "1", "--num-workers", "1",
            "--threadless", "--log-level", "ERROR", "--data-dir", tmp, "--timeout", "30",
        ]  # fmt: skip
        if basic_auth is not None:
            argv += ["--basic-auth", ":".join(basic_auth)]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        killer = threading.Timer(lifetime, proc.kill)
        killer.daemon = True
        killer.start()
        try:
            deadline = time.monotonic() + startup
            port = 0
            while not port:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"proxy.py exited with {proc.returncode}: {err[-500:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"proxy.py did not start within {startup} s")
                with contextlib.suppress(OSError, ValueError), open(port_file) as f:
                    port = int(f.read().split()[0])
                if port:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    except OSError:
                        port = 0
                if not port:
                    time.sleep(0.05)
            yield ProxyServer(port=port, auth=basic_auth)
        finally:
            killer.cancel()
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stderr is not None:
                proc.stderr.close()


ProxyBehaviour = Literal["tunnel", "reply", "close_before_reply", "close_after_established"]


def connect_proxy(
    behaviour: ProxyBehaviour = "tunnel",
    *,
    reply: bytes = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
    delay: float = 0.0,
    heads: list[bytes] | None = None,
) -> Handler:
    """A CONNECT proxy for :func:`raw_server`: reads the ``CONNECT host:port`` head (kept in
    ``heads`` if given), waits ``delay`` s, then

    * ``tunnel``: connects to the target and relays bytes both ways until either side closes;
    * ``reply``: sends ``reply`` (a 502 unless told otherwise, e.g. a 407) and closes;
    * ``close_before_reply``: closes without answering the CONNECT;
    * ``close_after_established``: answers ``200 Connection established``, then closes.
    """

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request_head(reader)
        if heads is not None:
            heads.append(head)
        if delay:
            await asyncio.sleep(delay)
        if behaviour == "reply":
            writer.write(reply)
            await writer.drain()
            return
        if behaviour == "close_before_reply":
            return
        established = b"HTTP/1.1 200 Connection established\r\n\r\n"
        if behaviour == "close_after_established":
            writer.write(established)
            await writer.drain()
            return
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        assert method == b"CONNECT", head
        host, _, port = target.decode().rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(established)
        await writer.drain()
        try:
            await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))
        finally:
            up_writer.close()

    return handler


def stale_then_fresh(heads: list[bytes]) -> Any:
    """The first connection answers once, then reads the next request and never answers (a
    stale pooled connection: aiohttp retries); every request head is appended to ``heads``."""
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = not connections
        connections.append(1)
        heads.append(await read_request_head(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if first:
            heads.append(await read_request_head(reader))

    return handler
