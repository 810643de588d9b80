"""Shared fixtures for the aiotrace tests: two event loops, TLS, a real DNS server, bad peers.

* Every async test (and its async fixtures, ``aiohttp_server`` / ``aiohttp_client`` included)
  runs once on the stock asyncio loop and once on uvloop: ids end in ``[asyncio]`` /
  ``[uvloop]``.  This uses pytest-asyncio's ``pytest_asyncio_loop_factories`` hook (>= 1.4);
  overriding the ``event_loop_policy`` fixture is deprecated there, and deprecations are
  errors here.  ``--loops=asyncio`` (or ``uvloop``) runs just one of them.
* ``blockbuster`` is active in every test: a blocking call (``time.sleep``, a blocking socket
  or file read/write, a contended ``threading.Lock`` ...) made *on the event-loop thread while
  the loop runs* raises ``BlockingError``.  Threads without a running loop (the DNS server,
  c-ares' event thread) and sync fixtures are not affected.  Mark a test
  ``@pytest.mark.allow_blocking`` to opt out.  Gotcha: a session fixture first requested
  through ``request.getfixturevalue()`` inside an async test is set up *on the loop*; request
  such fixtures as test arguments instead.
* The server implementations live in ``peers.py``; this file only wires them into fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest
import trustme
import uvloop
from aiohttp.resolver import AsyncResolver
from blockbuster import BlockBuster, blockbuster_ctx
from peers import (
    TEST_HOSTNAMES,
    DNSServer,
    Handler,
    ProxyServer,
    RawServer,
    blackhole_listener,
    client_ssl_context,
    closed_port,
    hosts_file_names,
    proxy_py,
    raw_server,
    resolver_kwargs,
    server_ssl_context,
)

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOP_FACTORIES: dict[str, LoopFactory] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


# --------------------------------------------------------------------------------------------
# Two loops
# --------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--loops``: which event loops async tests run on."""
    parser.addoption(
        "--loops",
        default=",".join(LOOP_FACTORIES),
        help=f"comma-separated event loops for async tests (default: {','.join(LOOP_FACTORIES)})",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register this conftest's marker (``--strict-markers`` is on)."""
    config.addinivalue_line(
        "markers", "allow_blocking: do not fail on blocking calls in the event loop"
    )


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    """Parametrize every async test over the stock asyncio loop and uvloop."""
    names = [name.strip() for name in str(config.getoption("loops")).split(",") if name.strip()]
    unknown = set(names) - set(LOOP_FACTORIES)
    if unknown or not names:
        raise pytest.UsageError(f"--loops: unknown {sorted(unknown)}; use {list(LOOP_FACTORIES)}")
    return {name: LOOP_FACTORIES[name] for name in names}


# --------------------------------------------------------------------------------------------
# Blocking calls in the loop
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail the test on any blocking call made in a running event loop (see module doc)."""
    if request.node.get_closest_marker("allow_blocking"):
        yield None
        return
    with blockbuster_ctx() as bb:
        # Test-side helpers that may block briefly even when a test calls them on the loop:
        # trustme writes the key to a temp file (ssl loads keys only from files), and
        # DNSServer.stop() joins its thread, which exits at once on the wake-up byte.  Neither
        # is code under test; everything else stays checked.
        for function in bb.functions.values():
            function.can_block_in("tests/peers.py", {"server_ssl_context", "stop"})
        yield bb


# --------------------------------------------------------------------------------------------
# TLS (trustme).  Contexts are built in sync fixtures: trustme writes temp files to load the
# key, which blockbuster would rightly flag inside the loop.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The test certificate authority (trusted only by ``client_ssl_ctx``)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl_ctx(tls_ca: trustme.CA) -> ssl.SSLContext:
    """Server context, cert valid for localhost, 127.0.0.1, ::1, a.test, b.test, c.test."""
    return server_ssl_context(tls_ca, *TEST_HOSTNAMES)


@pytest.fixture(scope="session")
def wrong_host_ssl_ctx(tls_ca: trustme.CA) -> ssl.SSLContext:
    """Server context whose (CA-signed, unexpired) cert is only for ``wrong.test``."""
    return server_ssl_context(tls_ca, "wrong.test")


@pytest.fixture(scope="session")
def expired_ssl_ctx(tls_ca: trustme.CA) -> ssl.SSLContext:
    """Server context with the right names but a cert that expired yesterday."""
    now = dt.datetime.now(dt.UTC)
    return server_ssl_context(
        tls_ca,
        *TEST_HOSTNAMES,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )


@pytest.fixture
def client_ssl_ctx(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A fresh ``ssl.create_default_context()`` that also trusts ``tls_ca`` (per test: no
    TLS session cache shared between tests)."""
    return client_ssl_context(tls_ca)


# --------------------------------------------------------------------------------------------
# DNS
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _hosts_file_free_of_test_names() -> None:
    """Fail early if /etc/hosts lists a ``.test`` name: c-ares would answer it from the file.

    (The resolver keeps c-ares' default "files, then DNS" order; see ``peers.resolver_kwargs``
    for why ``lookups="b"`` is not used.)
    """
    shadowed = sorted(name for name in hosts_file_names() if name.endswith(".test"))
    if shadowed:
        pytest.fail(f"/etc/hosts lists {shadowed}: the test DNS server would never see them")


@pytest.fixture
def dns_server(_hosts_file_free_of_test_names: None) -> Iterator[DNSServer]:
    """A fresh authoritative DNS server (UDP+TCP on 127.0.0.1) with an empty zone."""
    with DNSServer() as server:
        yield server
    assert not server.errors, server.errors


@pytest.fixture
def zone(dns_server: DNSServer) -> DNSServer:
    """``a.test``, ``b.test`` and ``c.test`` -> 127.0.0.1 (modules with other names override)."""
    for name in ("a.test", "b.test", "c.test"):
        dns_server.add(name, "127.0.0.1")
    return dns_server


@pytest.fixture
async def make_resolver(dns_server: DNSServer) -> AsyncIterator[Callable[..., AsyncResolver]]:
    """Factory: ``make_resolver(**overrides)`` -> ``AsyncResolver`` asking only ``dns_server``.

    Overrides go to ``aiodns.DNSResolver`` (e.g. ``timeout=0.3``, ``tries=2``,
    ``flags=pycares.ARES_FLAG_USEVC`` for TCP).  All are closed at teardown.
    """
    resolvers: list[AsyncResolver] = []

    def make(**overrides: Any) -> AsyncResolver:
        resolver = AsyncResolver(**{**resolver_kwargs(dns_server), **overrides})
        resolvers.append(resolver)
        return resolver

    yield make
    for resolver in resolvers:
        await resolver.close()


@pytest.fixture
async def dns_resolver(make_resolver: Callable[..., AsyncResolver]) -> AsyncResolver:
    """An ``aiohttp.resolver.AsyncResolver`` (aiodns) that asks only ``dns_server``."""
    return make_resolver()


# --------------------------------------------------------------------------------------------
# Raw peers and ports
# --------------------------------------------------------------------------------------------


@pytest.fixture
async def raw_peer() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    """Factory: ``srv = await raw_peer(handler, **kw)`` starts a ``peers.raw_server``.

    Every server started is stopped at teardown (and stops by itself after its lifetime).
    """
    async with contextlib.AsyncExitStack() as stack:

        async def start(handler: Handler, **kwargs: Any) -> RawServer:
            return await stack.enter_async_context(raw_server(handler, **kwargs))

        yield start


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 TCP port held bound but not listening: connecting is refused at once."""
    with closed_port("127.0.0.1") as port:
        yield port


@pytest.fixture
def blackhole() -> Iterator[tuple[str, int]]:
    """``(host, port)`` on 127.0.0.1 where a TCP connect hangs until the client times out."""
    with blackhole_listener("127.0.0.1") as address:
        yield address


# --------------------------------------------------------------------------------------------
# Forward proxies (proxy.py subprocesses, one of each per test session: ~0.5 s to start)
# --------------------------------------------------------------------------------------------

PROXY_CREDENTIALS = ("proxyuser", "proxy-secret")


@pytest.fixture(scope="session")
def http_proxy() -> Iterator[ProxyServer]:
    """proxy.py on 127.0.0.1: plain HTTP forwarding and CONNECT tunnels, no authentication."""
    with proxy_py() as proxy:
        yield proxy


@pytest.fixture(scope="session")
def auth_proxy() -> Iterator[ProxyServer]:
    """proxy.py on 127.0.0.1 demanding Basic proxy authentication (``PROXY_CREDENTIALS``)."""
    with proxy_py(basic_auth=PROXY_CREDENTIALS) as proxy:
        yield proxy
