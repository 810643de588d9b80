"""The command line, the demo and the examples, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotrace._cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_demo_runs_offline_and_shows_every_kind_of_hop() -> None:
    """`aiotrace demo` serves itself on loopback and shows DNS, reuse, reuse misses and pool waits."""
    out = run("-m", "aiotrace", "demo")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in ("2 redirects", "new (first)", "new (server_closed)", "reused", "blocked", "dns"):
        assert needle in text


def test_demo_json_is_machine_readable() -> None:
    """`aiotrace demo --format json` prints one JSON document with every request's hops."""
    out = run("-m", "aiotrace", "demo", "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data) == 8
    assert [len(r["hops"]) for r in data][:3] == [3, 1, 1]
    assert data[2]["hops"][0]["reuse_miss"] == "server_closed"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("examples/dns_and_reuse.py", ["DNS Info: host=localhost", "reused=False", "reused=True"]),
        ("examples/redirect_reuse.py", ["Connection reused for http://localhost:", "? False"]),
    ],
)
def test_examples_run_offline(script: str, expected: list[str]) -> None:
    """The Go blog's programs, the aiotrace way, run on loopback and print what Go's printed."""
    out = run(script)
    assert out.returncode == 0, out.stderr
    for needle in expected:
        assert needle in out.stdout
    if "redirect" in script:
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 2 and all(line.endswith("? False") for line in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["not a url"], "not an http(s) URL"),
        (["ftp://x/"], "not an http(s) URL"),
        (["http://127.0.0.1:1/", "--slo", "speed=3"], "--slo"),
        (["http://127.0.0.1:1/", "--slo", "total=abc"], "milliseconds"),
        (["http://127.0.0.1:1/", "-H", "NoColon"], "-H"),
        (["http://127.0.0.1:1/", "--resolve", "a.test:x:1.2.3.4"], "--resolve"),
        (["http://127.0.0.1:1/", "--resolve", "a.test:80:nope"], "not an IP"),
        (["http://127.0.0.1:1/", "-d", "@/nonexistent/file"], "cannot read"),
        (["http://127.0.0.1:1/", "-n", "0"], "at least 1"),
        (["http://127.0.0.1:1/", "-k", "--cacert", "x.pem"], "do not go together"),
        (["http://127.0.0.1:1/", "-o", "x.json"], "-o needs"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input prints one line naming the problem and exits 2, never a traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_failed_request_exits_1_and_is_shown(refused_port: int) -> None:
    """A refused request is shown with its error and the command exits 1."""
    out = run("-m", "aiotrace", f"http://127.0.0.1:{refused_port}/", "--format", "json")
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data[0]["error"].startswith("ClientConnectorError")
    assert data[0]["hops"][0]["timings"]["connect"] is not None


@pytest.fixture(scope="module")
def demo_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The demo's loopback server in a process of its own (the CLI under test is another)."""
    script = tmp_path_factory.mktemp("demo") / "serve.py"
    script.write_text(
        "import asyncio, sys\n"
        "from aiohttp import web\n"
        "from aiotrace._cli.demo import demo_app\n"
        "async def main():\n"
        "    r = web.AppRunner(demo_app()); await r.setup()\n"
        "    s = web.TCPSite(r, '127.0.0.1', 0); await s.start()\n"
        "    print(r.addresses[0][1], flush=True); await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_slo_violation_exits_4_and_har_is_written(tmp_path: Path, demo_port: int) -> None:
    """Against the demo's slow endpoint a tight --slo exits 4; --format har writes a HAR file."""
    har = tmp_path / "out.har"
    out = run(
        "-m", "aiotrace", f"http://127.0.0.1:{demo_port}/slow", "--slo", "total=50",
        "--format", "har", "-o", str(har),
    )  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert "SLO exceeded" in out.stderr and "total" in out.stderr
    entries = json.loads(har.read_text())["log"]["entries"]
    assert len(entries) == 1 and entries[0]["timings"]["wait"] >= 100


def test_resolve_sends_a_name_to_the_given_address(demo_port: int) -> None:
    """``--resolve HOST:PORT:ADDR`` (curl's) connects a name no DNS server knows to the given
    address; the timeline shows the lookup and the address connected to."""
    out = run(
        "-m", "aiotrace", f"http://demo.test:{demo_port}/",
        "--resolve", f"DEMO.test:{demo_port}:127.0.0.1", "--format", "json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    request = json.loads(out.stdout)[0]
    assert (request["status"], request["error"]) == (200, None)
    hop = request["hops"][0]
    assert hop["connection"]["remote_addr"] == f"127.0.0.1:{demo_port}"
    assert hop["timings"]["dns"] is not None and hop["timings"]["connect"] is not None


safe_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    url=safe_text,
    header=safe_text,
    slo=safe_text,
    resolve=safe_text,
)
def test_arbitrary_arguments_never_traceback(url: str, header: str, slo: str, resolve: str) -> None:
    """Whatever the URL, header, --slo and --resolve text, bad input is a clean exit 2."""
    argv = [url, "-H", header, "--slo", slo, "--resolve", resolve, "--timeout", "0.5"]
    if url.startswith(("http://", "https://")):
        argv[0] = "http://127.0.0.1:9/"  # never reach the network, even for valid input
    try:
        code = main(argv)
    except SystemExit as e:  # argparse itself on e.g. '-x' looking options
        code = e.code if isinstance(e.code, int) else 2
    assert code in (0, 1, 2, 4)


def test_text_output_redacts_credentials(refused_port: int) -> None:
    """The terminal output hides URL user info and token values like every other export."""
    out = run(
        "-m", "aiotrace", f"http://user:hunter2@127.0.0.1:{refused_port}/p?token=s3cr3t&x=[1]"
    )
    assert out.returncode == 1
    assert "REDACTED" in out.stdout
    assert "s3cr3t" not in out.stdout
    assert "hunter2" not in out.stdout
    assert "x=[1]" in out.stdout or "x=%5B1%5D" in out.stdout
