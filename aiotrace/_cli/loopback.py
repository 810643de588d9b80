"""Loopback servers for ``aiotrace demo``: HTTP and HTTPS (aiohttp's web server, with a
certificate from a throwaway trustme CA) and a DNS server (dnslib) answering a small zone, so
that aiodns really resolves the demo's names. Everything binds 127.0.0.1; the only files
written (the server's key and certificate, which ``ssl`` loads from files only) go to a
temporary directory removed on exit; leaving :func:`loopback` stops every server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from aiohttp import web

__all__ = ["Loopback", "ZoneServer", "loopback"]


class ZoneServer(asyncio.DatagramProtocol):
    """A DNS server over UDP answering A queries for ``zone`` (name -> IPv4 address): a name
    in the zone without an address of the asked type gets an empty answer, any other name
    NXDOMAIN."""

    def __init__(self, zone: dict[str, str]) -> None:
        self.zone = {name.lower(): addr for name, addr in zone.items()}
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSRecord  # type: ignore[import-untyped]

        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return
        self.queries += 1
        reply = request.reply()
        qname = request.q.qname
        name = str(qname).rstrip(".").lower()
        addr4 = self.zone.get(name)
        if addr4 is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(addr4), ttl=60))
        if self.transport is not None:
            self.transport.sendto(reply.pack(), addr)


@dataclass(frozen=True, slots=True, kw_only=True)
class Loopback:
    """The running demo servers: their ports, the CA to trust, a resolver asking the zone."""

    http_port: int
    https_port: int
    dns_port: int
    refused_port: int  # bound, never listening: a connect there is refused
    client_ssl: ssl.SSLContext  # trusts the throwaway CA only
    ca_pem: str
    dns: ZoneServer

    def resolver(self) -> aiohttp.AsyncResolver:
        """An aiodns resolver that asks the demo's DNS server and nothing else."""
        import pycares  # aiodns's own dependency: its flags

        return aiohttp.AsyncResolver(
            nameservers=[f"127.0.0.1:{self.dns_port}"],
            # Exactly the name asked reaches the server: no search domains, no aliases.
            flags=pycares.ARES_FLAG_NOSEARCH | pycares.ARES_FLAG_NOALIASES,
            timeout=1.0,
            tries=1,
        )


def _tls(names: Iterable[str], folder: str) -> tuple[ssl.SSLContext, ssl.SSLContext, str]:
    """Server and client contexts from a new CA; the key goes to ``folder`` only."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(*names)
    path = os.path.join(folder, "server.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(path)
    ca_pem = ca.cert_pem.bytes().decode("ascii")
    client = ssl.create_default_context(cadata=ca_pem)
    return server, client, ca_pem


@contextlib.asynccontextmanager
async def loopback(
    app: web.Application, zone: dict[str, str], tls_names: Iterable[str]
) -> AsyncIterator[Loopback]:
    """Serve ``app`` over HTTP and HTTPS (a certificate for ``tls_names``) and ``zone`` over
    DNS, on 127.0.0.1, for the duration of the block."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="aiotrace-demo-") as folder:
        server_ssl, client_ssl, ca_pem = await loop.run_in_executor(None, _tls, tls_names, folder)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        dns_transport = None
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl).start()
            http_port, https_port = (addr[1] for addr in runner.addresses)
            dns = ZoneServer(zone)
            dns_transport, _ = await loop.create_datagram_endpoint(
                lambda: dns, local_addr=("127.0.0.1", 0)
            )
            dns_port = dns_transport.get_extra_info("sockname")[1]
            refused.bind(("127.0.0.1", 0))
            yield Loopback(
                http_port=http_port,
                https_port=https_port,
                dns_port=dns_port,
                refused_port=refused.getsockname()[1],
                client_ssl=client_ssl,
                ca_pem=ca_pem,
                dns=dns,
            )
        finally:
            refused.close()
            if dns_transport is not None:
                dns_transport.close()
            await runner.cleanup()
