"""Making the requests ``aiotrace URL`` was asked for: one traced session, a Recorder, and per
request a :class:`Transfer` holding what the timeline does not (each hop's response line and
headers, where the body went, the error).

The session is what curl would use: no cookie jar (curl's default), proxies from the
environment when one is set (aiohttp's ``trust_env``), ``--resolve`` and ``--dns-servers``
through a resolver, ``-4``/``-6`` as the connector's family.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
import urllib.request
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from aiotrace import ClientTrace, Recorder, TracingConnector, traced_session, with_client_trace

if TYPE_CHECKING:
    from aiotrace import RequestStartInfo, RequestTimeline

    from .args import Options
    from .exits import Failure

__all__ = [
    "BodySink",
    "HopResponse",
    "Run",
    "Transfer",
    "attach_timelines",
    "fetch",
    "perform",
    "tracking_ids",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class HopResponse:
    """A round trip's response as it arrived: HTTP version, status line and headers."""

    http_version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, resp: aiohttp.ClientResponse) -> HopResponse:
        v = resp.version
        return cls(
            http_version=f"{v.major}.{v.minor}" if v is not None else "1.1",
            status=resp.status,
            reason=resp.reason or "",
            headers=tuple(resp.headers.items()),
        )

    def head(self) -> bytes:
        """The status line and headers as curl ``-i`` writes them."""
        lines = [f"HTTP/{self.http_version} {self.status} {self.reason}".rstrip()]
        lines += [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


@dataclass(slots=True, kw_only=True)
class Transfer:
    """One request the command made: its timeline, each hop's response, its body, its end."""

    url: URL
    method: str
    what: str  # method and redacted URL, for messages
    request_id: int | None = None
    responses: list[HopResponse] = field(default_factory=list)  # by hop index
    body_size: int = 0
    body_path: str | None = None
    body: bytes | None = None  # --body
    error: BaseException | None = None
    failure: Failure | None = None
    timeline: RequestTimeline | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def new_connections(self) -> int:
        """Connections this request opened (curl's ``num_connects``)."""
        if self.timeline is None:
            return 0
        return sum(1 for h in self.timeline.hops if h.connection is not None and not h.reused)

    @property
    def redirect_url(self) -> URL | None:
        """Where the final response points when it is a redirect not followed."""
        if not self.responses or self.timeline is None or not self.timeline.hops:
            return None
        last = self.responses[-1]
        if last.status not in (301, 302, 303, 307, 308):
            return None
        location = next((v for k, v in last.headers if k.lower() == "location"), None)
        if location is None:
            return None
        try:
            return self.timeline.hops[-1].url.join(URL(location))
        except ValueError:
            return None

    def error_text(self) -> str:
        return self.failure.message if self.failure is not None else ""

    def response_for(self, index: int) -> HopResponse | None:
        return self.responses[index] if index < len(self.responses) else None


@dataclass(slots=True, kw_only=True)
class Run:
    """Every request of one command: transfers in the order asked, the Recorder, the time."""

    transfers: list[Transfer]
    recorder: Recorder
    elapsed: float  # seconds, first request to last


class _OverrideResolver(AbstractResolver):
    """``--resolve``: fixed addresses for some host:port pairs, the given resolver for the rest."""

    def __init__(
        self, overrides: dict[tuple[str, int], tuple[str, ...]], fallback: AbstractResolver
    ) -> None:
        self._overrides = overrides
        self._fallback = fallback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addrs = self._overrides.get((host.lower(), port))
        if addrs is None:
            return await self._fallback.resolve(host, port, family)
        out = []
        for addr in addrs:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            if family in (socket.AF_UNSPEC, fam):
                out.append(
                    ResolveResult(hostname=host, host=addr, port=port, family=fam, proto=0, flags=0)
                )
        if not out:
            raise OSError(f"--resolve gives {host}:{port} no address of the family asked (-4/-6)")
        return out

    async def close(self) -> None:
        await self._fallback.close()


_current: ContextVar[Transfer | None] = ContextVar("aiotrace_cli_transfer", default=None)


def _note_request_id(e: RequestStartInfo) -> None:
    """``request_start`` runs in the caller's task: it tells its Transfer the request's id."""
    transfer = _current.get()
    if transfer is not None:
        transfer.request_id = e.request.id


_IDS = ClientTrace(request_start=_note_request_id)


def _proxies_set() -> bool:
    return bool(urllib.request.getproxies())


def _resolver(opts: Options) -> AbstractResolver:
    resolver: AbstractResolver
    if opts.dns_servers:
        resolver = aiohttp.AsyncResolver(nameservers=list(opts.dns_servers))
    else:
        resolver = aiohttp.DefaultResolver()
    if opts.resolve:
        resolver = _OverrideResolver(opts.resolve, resolver)
    return resolver


class BodySink:
    """Where one response's body goes: a file (``-o``, ``-O``; a temp file made on the first
    byte), memory (``--body``) or nowhere (counted only)."""

    def __init__(
        self,
        transfer: Transfer,
        *,
        path: str | None = None,
        temp: bool = False,
        memory: bool = False,
    ) -> None:
        self.transfer = transfer
        self.path = path
        self.temp = temp and path is None and not memory
        self.chunks: list[bytes] | None = [] if memory else None
        self.file: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self.chunks is not None:
            self.chunks.append(data)
            return
        if self.file is None:
            if self.path is not None:
                self.file = open(self.path, "wb")  # noqa: SIM115 (closed in close())
            elif self.temp:
                fd, self.path = tempfile.mkstemp(prefix="aiotrace-body-")
                self.file = os.fdopen(fd, "wb")
            else:
                return
            self.transfer.body_path = self.path
        self.file.write(data)

    def open(self) -> None:
        """Create an ``-o`` file now: curl makes it even for an empty body."""
        if self.path is not None and self.file is None and not self.temp:
            self.write(b"")

    def close(self) -> None:
        if self.chunks is not None:
            self.transfer.body = b"".join(self.chunks)
        if self.file is not None:
            self.file.close()


async def perform(
    session: aiohttp.ClientSession,
    transfer: Transfer,
    sink: BodySink | None = None,
    *,
    include: bool = False,
    **kwargs: Any,
) -> None:
    """Make ``transfer``'s request (``kwargs``: ``session.request``'s), read the body into
    ``sink`` (``include``: the headers first, as curl ``-i``); an error is kept, not raised."""
    token = _current.set(transfer)
    try:
        async with session.request(transfer.method, transfer.url, **kwargs) as resp:
            transfer.responses = [HopResponse.of(r) for r in (*resp.history, resp)]
            if sink is not None:
                sink.open()
                if include:
                    sink.write(transfer.responses[-1].head())
            if transfer.method != "HEAD":
                async for chunk in resp.content.iter_any():
                    transfer.body_size += len(chunk)
                    if sink is not None:
                        sink.write(chunk)
    except aiohttp.TooManyRedirects as e:
        transfer.responses = [HopResponse.of(r) for r in e.history]
        transfer.error = e
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        transfer.error = e
    finally:
        _current.reset(token)
        if sink is not None:
            sink.close()


def tracking_ids() -> contextlib.AbstractContextManager[ClientTrace]:
    """The scope in which :func:`perform` learns each request's id (to find its timeline)."""
    return with_client_trace(_IDS)


def attach_timelines(transfers: list[Transfer], rec: Recorder) -> None:
    """Give each transfer its timeline from ``rec``."""
    timelines = {t.id: t for t in rec.requests}
    for transfer in transfers:
        if transfer.request_id is not None:
            transfer.timeline = timelines.get(transfer.request_id)


async def _fetch(opts: Options, extra_trace: ClientTrace | None) -> Run:
    # --sample: the Recorder traces a share of the requests and counts every one; the
    # transfers keep each request's status and error either way.
    rec = Recorder(redaction=opts.redaction, sample=opts.sample, sample_seed=opts.sample_seed)
    resolver = _resolver(opts)
    connector = TracingConnector(family=opts.family, resolver=resolver)
    timeout = aiohttp.ClientTimeout(total=opts.max_time, connect=opts.connect_timeout)
    transfers = [
        Transfer(url=url, method=opts.method, what=f"{opts.method} {opts.redaction.url(url)}")
        for url in opts.urls
        for _ in range(opts.repeat)
    ]
    keep_body = opts.text and opts.repeat == 1  # a temp file per request shown
    sem = asyncio.Semaphore(opts.concurrency)

    async def one(transfer: Transfer) -> None:
        sink = BodySink(transfer, path=opts.output, temp=keep_body, memory=opts.body)
        async with sem:
            await perform(
                session,
                transfer,
                sink,
                include=opts.include,
                headers=opts.headers,
                data=opts.data,
                auth=opts.auth,
                ssl=opts.ssl,
                allow_redirects=opts.follow,
                max_redirects=opts.max_redirects,
            )

    try:
        async with traced_session(
            connector=connector,
            trace=rec,
            timeout=timeout,
            trust_env=_proxies_set(),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=opts.skip_headers or None,
        ) as session:
            began = time.perf_counter()
            with contextlib.ExitStack() as scope:
                scope.enter_context(tracking_ids())
                if extra_trace is not None:
                    scope.enter_context(with_client_trace(extra_trace))
                await asyncio.gather(*(one(t) for t in transfers))
            elapsed = time.perf_counter() - began
    finally:
        await resolver.close()
    attach_timelines(transfers, rec)
    return Run(transfers=transfers, recorder=rec, elapsed=elapsed)


def fetch(opts: Options, extra_trace: ClientTrace | None = None) -> Run:
    """Make every request ``opts`` asks for (``extra_trace``: the ``-v`` hooks)."""
    return asyncio.run(_fetch(opts, extra_trace))
