"""What tracing would cost if aiohttp called an observer itself: ``python -m benchmarks.upstream``.

Theory of operation
-------------------
aiotrace reaches into aiohttp's request where aiohttp has no signal: a wrapper around
``ClientSession._request``, a ContextVar so the connector finds the request, a coroutine around
``connect()`` for got_conn, a response-class swap for the request written, overrides of the
protocol and of ``_release``. A ``ClientTrace()`` with no hook and no observer pays all of that
before recording anything (~1.12 of plain aiohttp's instructions on pooled requests), which is
more than the issue's Recorder (1.10) and aggregate-only (1.08) targets allow. This measures
the alternative, an aiohttp that calls a per-request observer directly:

1. A copy of the installed aiohttp gets seven direct calls, each behind one ``is not None``
   test: request start, get_conn and got_conn around ``connector.connect``, the request written
   (before ``resp.start``), the first response byte (``ResponseHandler.data_received``), the
   connection's release (``BaseConnector._release``) and the request's end or error. Each edit
   checks the source it changes: another aiohttp version than the one it was written for
   (3.14.5) is refused with a one-line message, never half-patched.
2. ``Floor``, an observer doing the least an aggregate-only Recorder must: one slotted state per
   request, a ``perf_counter`` stamp per event, six values appended to a list per request.
3. Instructions per request under callgrind, counted as ``benchmarks.instructions`` counts them
   (two runs of ``n1`` and ``n2`` requests, GC off), for stock aiohttp, the patched copy with no
   observer (what the hook points cost every request), and the patched copy with ``Floor``.

A prototype for a measurement, not a proposal's code: the patched copy lives in a temporary
directory for the run; nothing in aiotrace uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .__main__ import Fixture, run_requests
from .instructions import COUNTS, callgrind_totals

_SCENARIOS = {"seq-small-http": 1, "c64-small-http": 64}  # name -> concurrency
_WRITTEN_FOR = "3.14.5"

# (file, aiohttp's code, the code with the observer's call), applied in order.
_EDITS = (
    (
        "client.py",
        "    _connector: BaseConnector | None = None\n",
        "    _connector: BaseConnector | None = None\n    _observer: Any = None\n",
    ),
    (
        "client.py",
        "        resp: ClientResponse | None = None\n        try:\n"
        "            if self.closed:\n"
        '                raise RuntimeError("Session is closed")\n\n'
        "            method = method.upper()\n",
        "        resp: ClientResponse | None = None\n        obs = None\n        try:\n"
        "            if self.closed:\n"
        '                raise RuntimeError("Session is closed")\n\n'
        "            method = method.upper()\n"
        "            if self._observer is not None:\n"
        "                obs = self._observer.start(method, str_or_url)\n",
    ),
    (
        "client.py",
        "                        try:\n"
        "                            conn = await self._connector.connect(\n",
        "                        if obs is not None:\n"
        "                            obs.get_conn()\n"
        "                        try:\n"
        "                            conn = await self._connector.connect(\n",
    ),
    (
        "client.py",
        "                        assert conn.protocol is not None\n",
        "                        assert conn.protocol is not None\n"
        "                        if obs is not None:\n"
        "                            obs.got_conn(conn.protocol)\n",
    ),
    (
        "client.py",
        "                            try:\n"
        "                                await resp.start(conn)\n",
        "                            try:\n"
        "                                if obs is not None:\n"
        "                                    obs.wrote_request()\n"
        "                                await resp.start(conn)\n",
    ),
    (
        "client.py",
        "                upload_tracker._finalize()\n            return resp\n",
        "                upload_tracker._finalize()\n"
        "            if obs is not None:\n"
        "                obs.end(resp)\n"
        "            return resp\n",
    ),
    (
        "client.py",
        "                # A failure occurred after the response was received.\n"
        "                resp.close()\n",
        "                # A failure occurred after the response was received.\n"
        "                resp.close()\n"
        "            if obs is not None:\n"
        "                obs.exception(e)\n",
    ),
    (
        "client_proto.py",
        "import asyncio\n",
        "import asyncio\nfrom time import perf_counter as _observer_now\n",
    ),
    (
        "client_proto.py",
        "    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:\n",
        "    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:\n"
        "        self._observed: Any = None\n",
    ),
    (
        "client_proto.py",
        "    def data_received(self, data: bytes) -> None:\n",
        "    def data_received(self, data: bytes) -> None:\n"
        "        obs = self._observed\n"
        "        if obs is not None and obs.t_first_byte is None and data:\n"
        "            obs.t_first_byte = _observer_now()\n",
    ),
    (
        "connector.py",
        "        self._release_acquired(key, protocol)\n",
        "        self._release_acquired(key, protocol)\n"
        "        obs = protocol._observed\n"
        "        if obs is not None:\n"
        "            protocol._observed = None\n"
        "            obs.released()\n",
    ),
)


def patched_aiohttp(into: Path) -> Path:
    """Copy the installed aiohttp under ``into`` with the observer's calls; returns ``into``.

    Raises ``RuntimeError`` (one line) if the installed aiohttp's code is not what the edits
    expect."""
    import aiohttp

    source = Path(aiohttp.__file__).parent
    target = into / "aiohttp"
    shutil.copytree(source, target)
    for name, old, new in _EDITS:
        path = target / name
        text = path.read_text()
        if text.count(old) != 1:
            raise RuntimeError(
                f"aiohttp {aiohttp.__version__}: {name} is not the code this prototype edits "
                f"(written for aiohttp {_WRITTEN_FOR})"
            )
        path.write_text(text.replace(old, new))
    return into


_now = time.perf_counter


class FloorRequest:
    """One request's stamps, as the patched aiohttp reports them."""

    __slots__ = (
        "err",
        "floor",
        "method",
        "status",
        "t_body_done",
        "t_end",
        "t_first_byte",
        "t_get_conn",
        "t_got_conn",
        "t_start",
        "t_wrote_request",
        "url",
    )
    err: BaseException | None
    floor: Floor
    method: str
    status: int | None
    t_body_done: float | None
    t_end: float | None
    t_first_byte: float | None
    t_get_conn: float | None
    t_got_conn: float | None
    t_start: float
    t_wrote_request: float | None
    url: Any

    def get_conn(self) -> None:
        self.t_get_conn = _now()

    def got_conn(self, protocol: Any) -> None:
        self.t_got_conn = _now()
        protocol._observed = self

    def wrote_request(self) -> None:
        self.t_wrote_request = _now()

    def released(self) -> None:
        self.t_body_done = _now()
        if self.t_end is not None:
            self.floor.fold(self)

    def end(self, response: Any) -> None:
        self.t_end = _now()
        self.status = response.status
        if self.t_body_done is not None:
            self.floor.fold(self)

    def exception(self, err: BaseException) -> None:
        self.t_end = _now()
        self.err = err


class Floor:
    """The least an aggregate-only Recorder must do per request (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.folded = 0

    def start(self, method: str, url: Any) -> FloorRequest:
        r = FloorRequest()
        r.floor = self
        r.method = method
        r.url = url
        r.t_start = _now()
        r.t_get_conn = r.t_got_conn = r.t_wrote_request = r.t_first_byte = None
        r.t_body_done = r.t_end = r.status = r.err = None
        return r

    def fold(self, r: FloorRequest) -> None:
        rows = self.rows
        rows += (r.url, r.status, r.t_get_conn, r.t_wrote_request, r.t_first_byte, r.t_body_done)
        if len(rows) >= 6 * 1024:
            self.folded += len(rows) // 6
            rows.clear()


async def _child(mode: str, port: int, n: int, concurrency: int) -> None:
    import aiohttp

    if (mode != "stock") != hasattr(aiohttp.ClientSession, "_observer"):
        raise RuntimeError(f"{mode}: imported the wrong aiohttp ({aiohttp.__file__})")
    session = aiohttp.ClientSession()
    floor = Floor()
    if mode == "floor":
        object.__setattr__(session, "_observer", floor)  # past aiohttp's DEBUG __setattr__
    url = f"http://127.0.0.1:{port}/small"
    try:
        await run_requests(session, url, 64, concurrency)
        gc.collect()
        gc.disable()
        await run_requests(session, url, n, concurrency)
    finally:
        await session.close()
    if mode == "floor" and floor.folded + len(floor.rows) // 6 < n:
        raise RuntimeError(f"the observer saw {floor.folded + len(floor.rows) // 6} of {n}")


def _count(mode: str, port: int, n: int, concurrency: int, patched: Path) -> int:
    env = {}
    if mode != "stock":  # the patched copy first on the child's path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(patched), os.getenv("PYTHONPATH")]))
    child = ["benchmarks.upstream", "--child", mode, str(port), str(n), str(concurrency)]
    return callgrind_totals(child, mode, env=env)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.upstream",
        description="Instructions per request if aiohttp called a tracing observer directly.",
    )
    parser.add_argument("--child", nargs=4, metavar=("MODE", "PORT", "N", "CONCURRENCY"))
    args = parser.parse_args(argv)
    if args.child:
        mode, port, n, concurrency = args.child
        asyncio.run(_child(mode, int(port), int(n), int(concurrency)))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="aiotrace-upstream-") as tmp:
        try:
            patched = patched_aiohttp(Path(tmp))
        except RuntimeError as e:
            print(f"benchmarks.upstream: {e}", file=sys.stderr)
            return 2
        fixture = Fixture()
        try:
            port = fixture.ports["http"]
            print(f"{'scenario / aiohttp':34} {'k instr/req':>12} {'x stock':>8}")
            for scenario, concurrency in _SCENARIOS.items():
                print(scenario)
                n1, n2 = COUNTS[scenario]
                stock = None
                for mode, label in (
                    ("stock", "stock"),
                    ("patched", "patched, no observer"),
                    ("floor", "patched, Floor observer"),
                ):
                    try:
                        a = _count(mode, port, n1, concurrency, patched)
                        b = _count(mode, port, n2, concurrency, patched)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        print(f"  {label:32} skipped: {e}")
                        continue
                    per = (b - a) / (n2 - n1)
                    stock = per if mode == "stock" else stock
                    ratio = f"{per / stock:8.3f}" if stock else " " * 8
                    print(f"  {label:32} {per / 1000:12.1f} {ratio}", flush=True)
        finally:
            fixture.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
