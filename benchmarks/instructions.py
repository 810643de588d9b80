"""Instructions per request under callgrind: ``python -m benchmarks.instructions``.

Theory of operation
-------------------
CPU time on a small shared machine moves with everything else the machine does; an instruction
count does not. So, besides the timed benchmark (``python -m benchmarks``), this counts the
instructions the client process executes per request, with valgrind's callgrind:

1. The fixture server of the timed benchmark runs in its own process (plain HTTP only: over
   TLS, OpenSSL's work would swamp what aiotrace adds).
2. For each scenario and configuration, a child process runs the client under callgrind
   twice, making ``n1`` and then ``n2`` requests after the same warm-up; the difference of the
   two totals divided by ``n2 - n1`` is the cost of one request, with start-up, imports and
   warm-up cancelled out.
3. The garbage collector is disabled in the child (``--gc`` keeps it): when a change is not
   about allocation, the collector's passes are noise. Counts still move by about +-2k
   instructions per request between runs of the same code (the event loop's scheduling).

4. ``--cache`` adds callgrind's cache model, with its last level sized as the reference VM's
   per-core L2 (512 KiB, 8-way, 64 B lines; callgrind models two levels): misses per request
   in the first-level data cache and in that L2, for when CPU ratios run above instruction
   ratios (64 requests in flight) and the question is whether the working set outgrew a cache.

It is a tool for finding where instructions go, not a target: the issue's targets are CPU
ratios from ``python -m benchmarks``. Counts exclude the kernel, so a scenario dominated by
system calls (a new connection per request) reads higher here than in CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import socket
import subprocess
import sys
from typing import Any

from .__main__ import (
    SCENARIOS,
    Config,
    Fixture,
    Scenario,
    _configs,
    _open,
    _select,
    run_block,
)

# Scenarios counted (plain HTTP), with their request counts: n2 - n1 spans at least two of the
# aggregate fold's batches (1,024 pooled requests each) where requests are pooled.
COUNTS = {
    "seq-small-http": (200, 2248),
    "c64-small-http": (256, 2304),
    "newconn-seq-small-http": (40, 360),
}
# callgrind's totals: Ir, and with the cache model Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
_COLLECTED = re.compile(rb"Collected\s*:\s*(\d+(?: \d+)*)")
_L2_MODEL = "--LL=524288,8,64"


def _counted_configs() -> list[Config]:
    """The timed benchmark's configurations but the control (a count does not drift)."""
    return [c for c in _configs() if c.name != "plain2"]


def _options(scenario: Scenario) -> dict[str, Any]:
    if scenario.new_connection:  # as the timed benchmark's Fixture.connector_options
        return {"force_close": True, "use_dns_cache": False, "family": socket.AF_INET}
    return {}


def _url(scenario: Scenario, port: int) -> str:
    host = "localhost" if scenario.new_connection else "127.0.0.1"
    return f"http://{host}:{port}{scenario.path}"


async def _child(config_name: str, scenario: Scenario, port: int, n: int, keep_gc: bool) -> None:
    config = next(c for c in _counted_configs() if c.name == config_name)
    client = await _open(config, _options(scenario))
    url = _url(scenario, port)
    try:
        await run_block(client, url, max(scenario.concurrency, 64), scenario.concurrency)
        gc.collect()
        if not keep_gc:
            gc.disable()
        await run_block(client, url, n, scenario.concurrency)
    finally:
        await client.session.close()


def callgrind_totals(
    module_args: list[str], label: str, *, cache: bool = False, env: dict[str, str] | None = None
) -> list[int]:
    """callgrind's totals for ``python -m <module_args>`` (Ir, and with ``cache`` the cache
    model's counts: see _COLLECTED). Raises ``RuntimeError`` with ``label`` and the child's last
    line if it fails."""
    model = ["--cache-sim=yes", _L2_MODEL] if cache else []
    cmd = ["valgrind", "--tool=callgrind", *model, "--callgrind-out-file=/dev/null"]
    cmd += [sys.executable, "-m", *module_args]
    run = subprocess.run(
        cmd,
        capture_output=True,
        timeout=900,
        env={**os.environ, **(env or {}), "PYTHONHASHSEED": "0"},
    )
    found = _COLLECTED.search(run.stderr)
    if run.returncode != 0 or found is None:
        tail = run.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{label}: {tail[0]}")
    return [int(v) for v in found.group(1).split()]


def _count(
    config: str, scenario: Scenario, port: int, n: int, keep_gc: bool, cache: bool
) -> tuple[int, int, int]:
    """(instructions, L1 data misses, L2 misses) the client incurs making ``n`` requests (plus
    start-up and warm-up); the misses are 0 without ``cache``."""
    child = ["benchmarks.instructions", "--child", config, scenario.name, str(port), str(n)]
    if keep_gc:
        child.append("--gc")
    totals = callgrind_totals(child, f"{config} on {scenario.name}", cache=cache)
    if len(totals) < 9:
        return totals[0], 0, 0
    ir, _dr, _dw, _i1, d1r, d1w, l2i, l2r, l2w = totals[:9]
    return ir, d1r + d1w, l2i + l2r + l2w


def _ratio(value: float, plain: list[float] | None, i: int) -> str:
    return f"{value / plain[i]:8.3f}" if plain and plain[i] else " " * 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions",
        description="Instructions per request (callgrind), plain aiohttp against each config.",
    )
    parser.add_argument("--scenario", action="append", default=[], metavar="PATTERN")
    parser.add_argument("--config", action="append", default=[], metavar="NAME")
    parser.add_argument("--gc", action="store_true", help="keep the garbage collector on")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="also count L1 data and L2 misses (cache model, 512 KiB L2; ~3x slower)",
    )
    parser.add_argument("--child", nargs=4, metavar=("CONFIG", "SCENARIO", "PORT", "N"))
    args = parser.parse_args(argv)
    if args.child:
        config, name, port, n = args.child
        scenario = next(s for s in SCENARIOS if s.name == name)
        asyncio.run(_child(config, scenario, int(port), int(n), args.gc))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    scenarios = [s for s in _select(SCENARIOS, args.scenario) if s.name in COUNTS]
    names = [c.name for c in _counted_configs()]
    unknown = set(args.config) - set(names)
    if not scenarios or unknown:
        print(f"nothing to count: scenarios {sorted(COUNTS)}, configs {names}", file=sys.stderr)
        return 2
    names = [c for c in names if not args.config or c in {"plain", *args.config}]
    fixture = Fixture()
    try:
        port = fixture.ports["http"]
        header = f"{'scenario / config':34} {'k instr/req':>12} {'x plain':>8}"
        if args.cache:
            header += f" {'L1d miss':>9} {'x plain':>8} {'L2 miss':>8} {'x plain':>8}"
        print(header)
        for scenario in scenarios:
            print(scenario.name)
            n1, n2 = COUNTS[scenario.name]
            plain: list[float] | None = None
            for name in names:
                try:
                    a = _count(name, scenario, port, n1, args.gc, args.cache)
                    b = _count(name, scenario, port, n2, args.gc, args.cache)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print(f"  {name:32} skipped: {e}")
                    continue
                per = [(y - x) / (n2 - n1) for x, y in zip(a, b, strict=True)]
                plain = per if name == "plain" else plain
                line = f"  {name:32} {per[0] / 1000:12.1f} {_ratio(per[0], plain, 0)}"
                if args.cache:
                    line += f" {per[1]:9.0f} {_ratio(per[1], plain, 1)}"
                    line += f" {per[2]:8.0f} {_ratio(per[2], plain, 2)}"
                print(line, flush=True)
    finally:
        fixture.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
