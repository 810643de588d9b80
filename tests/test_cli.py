"""The ``aiotrace`` command as a user runs it: the installed console script in a subprocess,
against loopback HTTP, HTTPS (trustme) and proxy servers running in a thread, and the test
DNS server of ``peers.py`` where a real lookup matters."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import TEST_HOSTNAMES, DNSServer, blackhole_listener, server_ssl_context

from aiotrace._cli.args import UsageError, _url
from aiotrace._cli.main import main
from aiotrace._cli.writeout import VARIABLES

ROOT = Path(__file__).resolve().parent.parent
AIOTRACE = str(Path(sys.executable).with_name("aiotrace"))
if not os.path.exists(AIOTRACE):  # pragma: no cover - a venv always has it next to python
    AIOTRACE = shutil.which("aiotrace") or AIOTRACE
BODY = "hello from the test server\n"
ESCAPE = re.compile(r"\x1b\[")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


TEMP: list[str] = []  # where the script's temp files (bodies) go: pytest's tmp for the module


@pytest.fixture(scope="module", autouse=True)
def _temp_files_in_pytests_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The bodies the script saves to temp files land in pytest's tmp, not in /tmp."""
    TEMP[:] = [str(tmp_path_factory.mktemp("bodies"))]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without proxies or colour settings, temp files in pytest's tmp,
    plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in PROXY_VARS and k not in ("NO_COLOR", "FORCE_COLOR")
    }
    if TEMP:
        env["TMPDIR"] = TEMP[0]
    env.update(extra)
    return env


def aiotrace(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``aiotrace`` script."""
    return subprocess.run(
        [AIOTRACE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env=env or clean_env(),
    )


def one_line(err: str) -> str:
    """The stderr of a failed run: exactly one line, never a traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- the servers ---------------------------------------------------------------------------


def _app() -> web.Application:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=BODY, headers={"X-Test": "yes", "Set-Cookie": "session=s3cr3t"})

    async def redirect(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound("/" if n <= 1 else f"/redirect/{n - 1}")

    async def to_b(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"https://b.test:{request.url.port}/back")

    async def back(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"https://a.test:{request.url.port}/")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="slow\n")

    async def close(request: web.Request) -> web.Response:
        return web.Response(text="bye\n", headers={"Connection": "close"})

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body": body.decode("utf-8", "replace"),
            }
        )

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/to-b", to_b)
    app.router.add_get("/back", back)
    app.router.add_get("/slow", slow)
    app.router.add_get("/close", close)
    app.router.add_get("/files/report.txt", index)
    app.router.add_route("*", "/echo", echo)
    return app


def _proxy_app() -> web.Application:
    async def proxied(request: web.Request) -> web.Response:
        return web.Response(text="via proxy\n", headers={"X-Via": "test-proxy"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxied)
    return app


@dataclass(frozen=True)
class Servers:
    """The loopback servers the command is pointed at."""

    http: int
    https: int
    proxy: int
    cacert: str

    def resolve(self, *names: str) -> list[str]:
        """``--resolve`` arguments sending ``names`` on the HTTPS port to 127.0.0.1."""
        out = []
        for name in names:
            out += ["--resolve", f"{name}:{self.https}:127.0.0.1"]
        return out


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """HTTP, HTTPS and a proxy on 127.0.0.1, served by a thread for the module (at most
    five minutes); the CA's certificate in a file for ``--cacert``."""
    ca = trustme.CA()
    server_ctx = server_ssl_context(ca, *TEST_HOSTNAMES)
    cacert = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(cacert))
    ports: list[int] = []
    ready = threading.Event()
    loop_box: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        stop = asyncio.Event()
        loop_box.append((asyncio.get_running_loop(), stop))
        runner = web.AppRunner(_app(), access_log=None)
        proxy = web.AppRunner(_proxy_app(), access_log=None)
        await runner.setup()
        await proxy.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx).start()
            await web.TCPSite(proxy, "127.0.0.1", 0).start()
            ports.extend(addr[1] for addr in (*runner.addresses, *proxy.addresses))
            ready.set()
            await asyncio.wait_for(stop.wait(), 300)
        finally:
            await proxy.cleanup()
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield Servers(http=ports[0], https=ports[1], proxy=ports[2], cacert=str(cacert))
    finally:
        loop, stop = loop_box[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


# -- the views -----------------------------------------------------------------------------


def test_https_view_shows_dns_connection_tls_certificate_headers_body_and_waterfall(
    servers: Servers, dns_server: DNSServer
) -> None:
    """A fresh HTTPS request shows the real DNS answer, the connection (new, first), TLS
    version/cipher/ALPN, the certificate's subject, issuer and days left, the status line and
    headers (credentials redacted), the temp file holding the body, and httpstat's waterfall
    with every column and mark in order; piped, with no escape codes."""
    dns_server.add("a.test", "127.0.0.1")
    out = aiotrace(
        f"https://a.test:{servers.https}/", "--cacert", servers.cacert,
        "--dns-servers", dns_server.nameserver,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert dns_server.count("a.test") >= 1
    assert "DNS a.test → 127.0.0.1" in text
    assert re.search(
        rf"Connected to 127\.0\.0\.1:{servers.https} from 127\.0\.0\.1:\d+ "
        r"\(connection #1 new: first connection to this host\)",
        text,
    )
    assert re.search(r"TLS TLSv1\.[23], cipher \S+, ALPN -", text)
    assert re.search(r"Certificate: subject O=trustme", text)
    assert re.search(r"issuer  O=trustme .*Testing CA", text)
    assert re.search(r"expires \d{4}-\d\d-\d\d \(\d+ days from now\)", text)
    assert "HTTP/1.1 200 OK" in text and "X-Test: yes" in text
    assert "Set-Cookie: REDACTED" in text and "s3cr3t" not in text
    stored = re.search(r"Body stored in: (\S+) \((\d+) bytes\)", text)
    assert stored is not None
    try:
        assert Path(stored[1]).read_text() == BODY and int(stored[2]) == len(BODY)
    finally:
        Path(stored[1]).unlink()
    labels = ["DNS Lookup", "TCP Connection", "TLS Handshake", "Server Processing", "Content Transfer"]
    positions = [text.index(label) for label in labels]
    assert positions == sorted(positions)
    marks = [text.index(f"{m}:") for m in ("namelookup", "connect", "pretransfer", "starttransfer", "total")]
    assert marks == sorted(marks) and marks[0] > positions[-1]
    assert "Blocked" not in text
    assert not ESCAPE.search(text)


def test_plain_http_views_show_reuse_idle_time_and_why_not_reused(servers: Servers) -> None:
    """Three URLs in one run: one block each; plain HTTP drops the TLS column and, on a new
    connection, the pretransfer mark (as httpstat does); after the server closed #1 the
    second opens #2 and says why, and the third reuses #2 with its idle time (no connect
    mark then: its pretransfer shows how long getting the pooled connection took)."""
    base = f"http://127.0.0.1:{servers.http}"
    out = aiotrace(f"{base}/close", f"{base}/", f"{base}/")
    assert out.returncode == 0, out.stderr
    blocks = out.stdout.split(f"GET {base}/")[1:]
    assert len(blocks) == 3
    assert "connection #1 new: first connection to this host" in blocks[0]
    assert "connection #2 new: the server closed the previous one" in blocks[1]
    assert re.search(r"connection #2 reused, idle \d+\.\d ms", blocks[2])
    for block in blocks:
        assert "TLS Handshake" not in block
        assert "TCP Connection" in block and "total:" in block
    assert all("connect:" in b and "pretransfer:" not in b for b in blocks[:2])
    assert "connect:" not in blocks[2] and "pretransfer:" in blocks[2]


def test_head_shows_the_status_and_headers_and_no_body(servers: Servers) -> None:
    """``-I`` sends HEAD and stops at the headers: no body line, still the waterfall."""
    out = aiotrace("-I", f"http://127.0.0.1:{servers.http}/")
    assert out.returncode == 0, out.stderr
    assert "HTTP/1.1 200 OK" in out.stdout and "Content-Length:" in out.stdout
    assert "Body" not in out.stdout and "Server Processing" in out.stdout


def test_redirect_is_not_followed_without_L(servers: Servers) -> None:
    """Without ``-L`` the 302 is the answer, and the view says where it points and that -L
    would follow it (curl's default)."""
    out = aiotrace(f"https://a.test:{servers.https}/to-b", "--cacert", servers.cacert,
                   *servers.resolve("a.test"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "HTTP/1.1 302 Found" in out.stdout
    assert f"Redirect to https://b.test:{servers.https}/back not followed (-L follows it)" in out.stdout
    assert "── hop" not in out.stdout


def test_L_shows_one_block_per_hop_with_connection_and_reuse(servers: Servers) -> None:
    """With ``-L`` a chain across two hosts shows one block per hop, each with its status,
    its waterfall and its connection: a.test new, b.test new (first), a.test again reused."""
    out = aiotrace("-L", f"https://a.test:{servers.https}/to-b", "--cacert", servers.cacert,
                   *servers.resolve("a.test", "b.test"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    blocks = out.stdout.split("── hop ")[1:]
    assert [b.split(":", 1)[0] for b in blocks] == ["1", "2", "3"]
    assert "connection #1 new: first connection" in blocks[0] and "302 Found" in blocks[0]
    assert "connection #2 new: first connection" in blocks[1] and "302 Found" in blocks[1]
    assert re.search(r"connection #1 reused, idle", blocks[2]) and "200 OK" in blocks[2]
    assert "Certificate:" in blocks[1] and "Certificate:" not in blocks[2]  # shown once per connection
    assert all(b.count("Content Transfer") == 1 for b in blocks)


# -- machine-readable output ---------------------------------------------------------------


def test_write_out_gives_every_variable_from_the_recorders_marks(servers: Servers) -> None:
    """``-w`` prints each of curl's variables as curl does, and each agrees with the
    timeline ``--json`` printed in the same run (times are its marks in seconds)."""
    template = "\\t".join(f"{name}=%{{{name}}}" for name in VARIABLES)
    out = aiotrace(
        "-L", "--json", f"https://a.test:{servers.https}/to-b", "--cacert", servers.cacert,
        *servers.resolve("a.test", "b.test"),
        "-w", f"%{{stderr}}{template}\\n%header{{x-test}}|%{{json}}\\n",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (request,) = json.loads(out.stdout)
    line, rest = out.stderr.split("\n", 1)
    got = dict(item.split("=", 1) for item in line.split("\t"))
    header, as_json = rest.strip().split("|", 1)
    final = request["hops"][-1]
    conn = final["connection"]
    marks = request["marks"]

    def seconds(ms: float | None) -> str:
        return f"{(ms or 0.0) / 1000:.6f}"

    expected = {
        "content_type": "text/plain; charset=utf-8",
        "conn_id": str(conn["id"]),
        "errormsg": "",
        "exitcode": "0",
        "filename_effective": "",  # --json: the body is counted, not kept
        "http_code": "200",
        "http_version": "1.1",
        "local_ip": conn["local_addr"].rsplit(":", 1)[0],
        "local_port": conn["local_addr"].rsplit(":", 1)[1],
        "method": "GET",
        "num_connects": "2",
        "num_headers": str(len(final["response"]["headers"])),
        "num_redirects": "2",
        "num_retries": "0",
        "redirect_url": "",
        "remote_ip": "127.0.0.1",
        "remote_port": str(servers.https),
        "response_code": "200",
        "scheme": "HTTPS",
        "size_download": str(len(BODY)),
        "speed_download": f"{len(BODY) / (marks['total'] / 1000):.0f}",
        "ssl_verify_result": "0",
        "time_appconnect": seconds(marks["appconnect"]),
        "time_connect": seconds(marks["connect"]),
        "time_namelookup": seconds(marks["namelookup"]),
        "time_posttransfer": seconds(marks["starttransfer"] - final["timings"]["wait"]),
        "time_pretransfer": seconds(marks["pretransfer"]),
        "time_queue": seconds(request["timings"]["blocked"]),
        "time_redirect": seconds(request["redirect_time"]),
        "time_starttransfer": seconds(marks["starttransfer"]),
        "time_total": seconds(marks["total"]),
        "url": f"https://a.test:{servers.https}/to-b",
        "url_effective": request["final_url"],
    }
    assert set(expected) == set(VARIABLES)
    assert got == expected
    assert float(got["time_redirect"]) > 0 and float(got["time_total"]) > float(got["time_redirect"])
    assert header == "yes"
    data = json.loads(as_json)
    assert data["http_code"] == 200 and data["time_total"] == float(expected["time_total"])
    assert data["url_effective"] == expected["url_effective"]


def test_json_and_har_parse_and_agree(servers: Servers, tmp_path: Path) -> None:
    """``--json`` is the timelines' ``to_dict()`` plus each hop's response, and ``--har``
    the same run as HAR 1.2: one entry per hop, the same timings, connections and headers."""
    har_path = tmp_path / "run.har"
    out = aiotrace(
        "-L", "--json", "--har", str(har_path), f"https://a.test:{servers.https}/to-b",
        "--cacert", servers.cacert, *servers.resolve("a.test", "b.test"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (request,) = json.loads(out.stdout)
    hops = request["hops"]
    assert (request["status"], len(hops), len(request["redirects"])) == (200, 3, 2)
    assert [h["response"]["status"] for h in hops] == [302, 302, 200]
    assert ["Location", f"https://b.test:{servers.https}/back"] in hops[0]["response"]["headers"]
    assert ["Set-Cookie", "REDACTED"] in hops[2]["response"]["headers"]
    assert [h["reused"] for h in hops] == [False, False, True]
    assert request["body"] == {"size": len(BODY), "path": None}
    entries = json.loads(har_path.read_text())["log"]["entries"]
    assert len(entries) == 3
    for entry, hop in zip(entries, hops, strict=True):
        assert entry["response"]["status"] == hop["status"]
        assert entry["connection"] == str(hop["connection"]["id"])
        assert entry["serverIPAddress"] == "127.0.0.1"
        assert entry["timings"]["wait"] == round(hop["timings"]["wait"], 3)
        assert entry["timings"]["receive"] == round(hop["timings"]["receive"], 3)
        assert entry["timings"]["ssl"] == (-1 if hop["timings"]["tls"] is None else round(hop["timings"]["tls"], 3))
    assert entries[0]["response"]["statusText"] == "Found"
    assert entries[0]["response"]["redirectURL"] == f"https://b.test:{servers.https}/back"
    assert {"name": "X-Test", "value": "yes"} in entries[2]["response"]["headers"]
    assert entries[2]["response"]["content"]["size"] == len(BODY)


def test_jsonl_prints_one_line_per_request(servers: Servers) -> None:
    """``--format jsonl`` (the same as ``--jsonl``) with ``-n 3`` prints three JSON lines,
    one per request, in order."""
    out = aiotrace("--format", "jsonl", "-n", "3", f"http://127.0.0.1:{servers.http}/")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [json.loads(line)["status"] for line in lines] == [200, 200, 200]
    assert [json.loads(line)["id"] for line in lines] == [1, 2, 3]


def test_verbose_prints_each_hook_as_it_fires_in_order(servers: Servers) -> None:
    """``-v`` writes one line per hook on stderr, curl's markers first, in Go's order for a
    fresh HTTPS request; the ``-u`` password never appears, its header is REDACTED."""
    out = aiotrace(
        "-v", "-s", "-u", "bob:hunter2", f"https://a.test:{servers.https}/",
        "--cacert", servers.cacert, *servers.resolve("a.test"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert all(re.match(r"[*<>] +\d+\.\d\d ms  [a-z_0-9]+: ", line) for line in lines), lines
    names = [line.split("ms  ", 1)[1].split(":", 1)[0] for line in lines]
    collapsed = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    assert collapsed == [
        "request_start", "get_conn", "dns_start", "dns_done", "connect_start", "connect_done",
        "tls_handshake_start", "tls_handshake_done", "got_conn", "wrote_header_field",
        "wrote_headers", "wrote_request", "got_first_response_byte", "response_body_done",
        "put_idle_conn", "request_end", "request_done",
    ]  # fmt: skip
    assert any("wrote_header_field: Authorization: REDACTED" in line for line in lines)
    assert any(line.startswith(">") and "Host: a.test" in line for line in lines)
    assert "hunter2" not in out.stderr + out.stdout
    assert out.stdout == ""


# -- exit statuses -------------------------------------------------------------------------


@pytest.fixture
def refused(refused_port: int) -> str:
    """A URL whose connect is refused."""
    return f"http://127.0.0.1:{refused_port}/"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("refused", r"aiotrace: connect failed: GET http://127\.0\.0\.1:\d+/: ClientConnectorError"),
        ("nxdomain", r"aiotrace: DNS failed: GET http://gone\.test:\d+/: ClientConnectorDNSError"),
        ("untrusted", r"aiotrace: TLS failed: GET https://a\.test:\d+/: ClientConnectorCertificateError"),
        ("blackhole", r"aiotrace: timeout in TCP connection: GET http://127\.0\.0\.1:\d+/: "),
        ("slow", r"aiotrace: timeout in server processing: GET http://127\.0\.0\.1:\d+/slow: "),
        ("redirects", r"aiotrace: redirect failed: .*more redirects than --max-redirs 0"),
    ],
)
def test_a_failed_request_exits_1_with_one_line_naming_the_phase(
    case: str, expected: str, servers: Servers, dns_server: DNSServer, refused: str
) -> None:
    """Each kind of failure exits 1 with one line on stderr naming the phase it failed in:
    connect, DNS, TLS, a timeout (and where) or the redirect limit."""
    http = f"http://127.0.0.1:{servers.http}"
    if case == "blackhole":
        with blackhole_listener() as (host, port):
            out = aiotrace("--connect-timeout", "0.3", f"http://{host}:{port}/")
    else:
        args = {
            "refused": [refused],
            "nxdomain": ["--dns-servers", dns_server.nameserver, f"http://gone.test:{servers.http}/"],
            "untrusted": [f"https://a.test:{servers.https}/", *servers.resolve("a.test")],
            "slow": ["-m", "0.15", f"{http}/slow"],
            "redirects": ["-L", "--max-redirs", "0", f"{http}/redirect/2"],
        }[case]
        out = aiotrace(*args)
    assert out.returncode == 1, out.stderr
    assert re.match(expected, one_line(out.stderr)), out.stderr
    assert "✗" in out.stdout  # the view shows the failure too


def test_slo_broken_exits_4_naming_the_phase(servers: Servers) -> None:
    """``--slo`` exits 4 with one line per broken limit naming it (``-s`` hides it, ``-S``
    shows it again, as curl's error lines); a limit kept says nothing."""
    url = f"http://127.0.0.1:{servers.http}/slow"
    out = aiotrace("-s", "--slo", "ttfb=100", url)
    assert (out.returncode, out.stdout, out.stderr) == (4, "", "")
    out = aiotrace("-s", "-S", "--slo", "ttfb=100,total=60000", url)
    assert out.returncode == 4, out.stderr
    line = one_line(out.stderr)
    assert re.match(r"aiotrace: SLO broken: ttfb \(time to first byte\) \d+\.\d ms > 100 ms", line)


def test_insecure_skips_verification_and_says_so(servers: Servers) -> None:
    """``-k`` connects despite an untrusted certificate and says the certificate was not
    verified (so not shown), exit 0."""
    out = aiotrace("-k", f"https://a.test:{servers.https}/", *servers.resolve("a.test"))
    assert out.returncode == 0, out.stderr
    assert "Certificate: not verified (-k)" in out.stdout and "TLS TLSv1." in out.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no URL given"),
        (["--nope", "http://x/"], "unrecognized arguments: --nope"),
        (["not a url"], "malformed URL"),
        (["http://a:99999/"], "malformed URL"),
        (["ftp://x/"], "unsupported scheme 'ftp'"),
        (["http://x/", "--slo", "speed=3"], "--slo"),
        (["http://x/", "--slo", "total=abc"], "milliseconds"),
        (["http://x/", "-H", "NoColon"], "-H: expected 'Name: value'"),
        (["http://x/", "-H", "Bad Name: v"], "is not a header name"),
        (["http://x/", "--resolve", "a.test:x:1.2.3.4"], "--resolve: expected HOST:PORT:ADDR"),
        (["http://x/", "--resolve", "a.test:80:nope"], "not an IP address"),
        (["http://x/", "--dns-servers", "dns.example"], "--dns-servers"),
        (["http://x/", "-d", "@/nonexistent/file"], "-d: cannot read"),
        (["http://x/", "--data-binary", "@/nonexistent/file"], "--data-binary: cannot read"),
        (["http://x/", "-w", "%{time_nothing}"], "-w: unknown variable %{time_nothing}"),
        (["http://x/", "-w", "@/nonexistent/file"], "-w: cannot read"),
        (["http://x/", "-n", "0"], "at least 1"),
        (["http://x/", "-c", "0"], "at least 1"),
        (["http://x/", "-n", "many"], "invalid int value"),
        (["http://x/", "-m", "0"], "positive number of seconds"),
        (["http://x/", "--max-redirs", "-2"], "--max-redirs"),
        (["http://x/", "-k", "--cacert", "x.pem"], "do not go together"),
        (["http://x/", "--cacert", "/nonexistent.pem"], "--cacert: cannot load"),
        (["http://x/", "-u", "bob"], "-u: expected USER:PASSWORD"),
        (["http://x/", "-u", "bob:pw", "-H", "Authorization: x"], "do not go together"),
        (["http://x/", "-X", "GET ME"], "-X: not a method"),
        (["http://x/", "-o", "/nonexistent/dir/out"], "-o: cannot write"),
        (["http://x/", "-O"], "-O: no file name"),
        (["http://x/", "http://y/", "-o", "out"], "take one request"),
        (["http://x/", "--json", "--jsonl"], "do not go together"),
        (["http://x/", "--json", "--har", "-"], "share stdout"),
        (["http://x/", "--jsonl", "--body"], "share stdout"),
        (["demo", "--nope"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input of every kind prints one line naming the problem and exits 2, before any
    request is made."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in one_line(captured.err)
    assert captured.out == ""


def test_help_lists_every_flag_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    """``aiotrace --help`` exits 0 listing curl's flags, the subcommands, examples and the
    exit statuses."""
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("-X", "-H", "-d", "--data-binary", "-k", "--cacert", "-4", "-6", "--resolve",
                 "--connect-timeout", "--max-time", "-s", "-v", "-A", "-u", "-L", "--max-redirs",
                 "-I", "-i", "-o", "-O", "--body", "-w", "--json", "--jsonl", "--har", "--format",
                 "-n", "-c", "--slo"):  # fmt: skip
        assert re.search(rf"(^|[ ,]){re.escape(flag)}[ ,\n]", text, re.M), flag
    assert "aiotrace demo" in text and "examples:" in text and "exit status:" in text


def test_the_installed_script_reports_bad_input_in_one_line() -> None:
    """The console script itself gives one line and exit 2 for bad input (an unknown option)."""
    out = aiotrace("--frobnicate", "http://x/")
    assert out.returncode == 2
    assert one_line(out.stderr) == "aiotrace: unrecognized arguments: --frobnicate (see aiotrace --help)"


safe_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=safe_text, header=safe_text, slo=safe_text, resolve=safe_text, write_out=safe_text)
def test_arbitrary_arguments_never_traceback(
    url: str, header: str, slo: str, resolve: str, write_out: str
) -> None:
    """Whatever the URL, header, --slo, --resolve and -w text, bad input is a clean exit 2."""
    argv = [url, "-H", header, "--slo", slo, "--resolve", resolve, "-w", write_out, "-m", "0.5"]
    try:
        _url(url)
    except UsageError:
        pass
    else:  # a URL the command would fetch: never reach the network, not even DNS
        argv[0] = "http://127.0.0.1:9/"
    code = main(argv)
    assert code in (0, 1, 2, 4)


# -- what is sent, where the body goes ----------------------------------------------------


def test_request_flags_are_sent_as_curl_sends_them(servers: Servers, tmp_path: Path) -> None:
    """-X, -H (and 'Name:' to drop one), -A, -d @file (newlines dropped) joined with -d by &,
    and --data-binary @file (kept as is) reach the server as curl would send them."""
    form = tmp_path / "form.txt"
    form.write_bytes(b"a=1\nb=2\r\n")
    url = f"http://127.0.0.1:{servers.http}/echo"
    out = aiotrace("-s", "--body", "-X", "PUT", "-H", "X-One: 1", "-H", "Accept:",
                   "-A", "agent/1", "-d", f"@{form}", "-d", "c=3", url)  # fmt: skip
    assert out.returncode == 0, out.stderr
    echo = json.loads(out.stdout)
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert echo["method"] == "PUT" and echo["body"] == "a=1b=2&c=3"
    assert headers["x-one"] == "1" and headers["user-agent"] == "agent/1"
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert "accept" not in headers
    out = aiotrace("-s", "--body", "--data-binary", f"@{form}", url)
    echo = json.loads(out.stdout)
    assert echo["method"] == "POST" and echo["body"] == "a=1\nb=2\r\n"


def test_body_goes_to_o_O_and_i_adds_the_headers(servers: Servers, tmp_path: Path) -> None:
    """``-o FILE`` writes the body there (``-i``: after the status line and headers, as
    curl does); ``-O`` names the file after the URL, in the working directory."""
    target = tmp_path / "out.bin"
    out = aiotrace("-i", "-o", str(target), f"http://127.0.0.1:{servers.http}/")
    assert out.returncode == 0, out.stderr
    data = target.read_bytes()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n" + BODY.encode())
    assert f"Body stored in: {target}" in out.stdout
    out = aiotrace("-O", f"http://127.0.0.1:{servers.http}/files/report.txt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "report.txt").read_text() == BODY


def test_ipv4_and_ipv6_only_pick_the_addresses(servers: Servers) -> None:
    """``-4`` and ``-6`` keep only their family of the addresses a name has: the IPv4-only
    server is reached with -4, and with -6 there is nothing to connect to."""
    resolve = ["--resolve", f"both.test:{servers.http}:127.0.0.1,::1"]
    url = f"http://both.test:{servers.http}/"
    out = aiotrace("-4", "-s", "-w", "%{remote_ip}", url, *resolve)
    assert (out.returncode, out.stdout) == (0, "127.0.0.1")
    out = aiotrace("-6", "-s", "-S", "-w", "%{remote_ip}", url, *resolve)
    assert out.returncode == 1 and out.stdout in ("", "::1")
    assert one_line(out.stderr).startswith("aiotrace: connect failed")


def test_proxies_come_from_the_environment(servers: Servers) -> None:
    """HTTP_PROXY sends the request to the proxy; NO_PROXY for the host goes direct."""
    url = f"http://site.test:{servers.http}/"
    args = ["-s", "-w", "%{remote_port} %header{x-via}", url,
            "--resolve", f"site.test:{servers.http}:127.0.0.1"]  # fmt: skip
    proxy = f"http://127.0.0.1:{servers.proxy}"
    out = aiotrace(*args, env=clean_env(HTTP_PROXY=proxy))
    assert (out.returncode, out.stdout) == (0, f"{servers.proxy} test-proxy"), out.stderr
    out = aiotrace(*args, env=clean_env(HTTP_PROXY=proxy, NO_PROXY="site.test"))
    assert (out.returncode, out.stdout) == (0, f"{servers.http} "), out.stderr


def test_credentials_are_redacted_everywhere(refused_port: int) -> None:
    """URL user info, token query values and the -u password never reach stdout or stderr."""
    out = aiotrace(
        "-u", "bob:hunter2", "-w", "%{url_effective}",
        f"http://user:pa55word@127.0.0.1:{refused_port}/p?token=s3cr3t&x=1",
    )  # fmt: skip
    assert out.returncode == 1
    both = out.stdout + out.stderr
    assert "REDACTED" in both
    for secret in ("s3cr3t", "hunter2", "pa55word"):
        assert secret not in both


# -- colour --------------------------------------------------------------------------------


def _on_a_terminal(*args: str, env: dict[str, str]) -> bytes:
    """Run the script with a pseudo-terminal as stdout and stderr; what it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([AIOTRACE, *args], stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(10)
    os.close(master)
    return out


def test_colour_on_a_terminal_none_with_NO_COLOR_or_piped(servers: Servers) -> None:
    """On a terminal the view has colour; with NO_COLOR it has no escape code at all, and
    piped it has none either (checked in every other test)."""
    url = f"http://127.0.0.1:{servers.http}/"
    coloured = _on_a_terminal(url, env=clean_env(TERM="xterm-256color"))
    plain = _on_a_terminal(url, env=clean_env(TERM="xterm-256color", NO_COLOR="1"))
    assert b"HTTP/1.1 200 OK" in coloured and b"HTTP/1.1 200 OK" in plain
    assert ESCAPE.search(coloured.decode())
    assert not re.search(rb"\x1b", plain)


# -- repeats ---------------------------------------------------------------------------------


def test_repeat_prints_a_table_per_host(servers: Servers, refused: str) -> None:
    """``-n N -c C`` prints requests/s and per host the reuse rate, new connections and why,
    errors by kind and p50/p95/p99 per phase; a failure anywhere exits 1 with one line."""
    base = f"http://127.0.0.1:{servers.http}"
    out = aiotrace("-n", "4", "-c", "2", f"{base}/", f"{base}/close", refused)
    assert out.returncode == 1
    text = out.stdout
    assert re.search(r"12 requests in \d+\.\d\d s: \d+\.\d requests/s", text)
    ours = text.split(f"127.0.0.1:{servers.http}  ")[1]
    assert "8 requests" in ours and "status     200 (8)" in ours
    assert re.search(r"reused     \d+ of 8 round trips \(\d+%\)", ours)
    assert re.search(r"new        \d+ connections: .*server_closed", ours)
    for row in ("connect (TCP connection)", "wait (server processing)", "total"):
        assert row in ours
    assert re.search(r"phase +n +p50 +p95 +p99 +max", ours)
    theirs = text.split(refused.removeprefix("http://").rstrip("/") + "  ")[1]
    assert "errors     4 connect (ClientConnectorError)" in theirs
    line = one_line(out.stderr)
    assert line.startswith("aiotrace: connect failed: 4 of 12 requests, e.g. GET ")


def test_repeat_with_sample_counts_every_request_and_marks_the_estimates(
    servers: Servers, refused: str
) -> None:
    """``-n N --sample 0.25 --sample-seed 5``: each host's requests, statuses and errors count
    every request, the sample's size (the seeded draws) is said overall and per host, and the
    reuse, new connections and phases say they are the sample's, beside an exact response
    row; every failure still gets its line on stderr."""
    n, rate, seed = 60, 0.25, 5
    base = f"http://127.0.0.1:{servers.http}"
    out = aiotrace("-n", str(n), "-c", "4", "--sample", str(rate), "--sample-seed", str(seed),
                   f"{base}/", refused)  # fmt: skip
    assert out.returncode == 1, out.stderr
    draw = random.Random(seed).random
    k = sum(draw() < rate for _ in range(2 * n))
    text = out.stdout
    assert re.search(rf"{2 * n} requests in \d+\.\d\d s", text)
    assert f"sampled {k} of {2 * n} requests (--sample 0.25): " in text
    ours = text.split(f"127.0.0.1:{servers.http}  ")[1]
    theirs = text.split(refused.removeprefix("http://").rstrip("/") + "  ")[1]
    per_host = []
    for block, name in ((ours, "ours"), (theirs, "theirs")):
        m = re.match(rf"{n} requests, \d+\.\d/s, (\d+) sampled\n", block)
        assert m is not None, (name, block)
        per_host.append(int(m[1]))
    assert sum(per_host) == k
    assert f"status     200 ({n})" in ours
    assert re.search(r"reused     \d+ of \d+ sampled round trips \(\d+%\)", ours)
    assert re.search(rf"phase \({per_host[0]} sampled: estimates\) +n +p50", ours)
    assert re.search(rf"total +{per_host[0]} ", ours)
    assert re.search(rf"response \(every request: exact\) +{n} ", ours)
    assert f"errors     {n} connect (ClientConnectorError)" in theirs
    line = one_line(out.stderr)
    assert line.startswith(f"aiotrace: connect failed: {n} of {2 * n} requests, e.g. GET ")


def test_repeat_with_sample_writes_the_sample_and_the_failures(
    servers: Servers, refused: str
) -> None:
    """``--jsonl`` under ``--sample`` holds the sampled requests with their timelines and
    every failed request the sampler skipped, marked ``sampled: false`` with its failure."""
    n, rate, seed = 30, 0.25, 7
    base = f"http://127.0.0.1:{servers.http}"
    out = aiotrace("-n", str(n), "--sample", str(rate), "--sample-seed", str(seed), "--jsonl",
                   f"{base}/", refused)  # fmt: skip
    assert out.returncode == 1, out.stderr
    draw = random.Random(seed).random
    drawn = [draw() < rate for _ in range(2 * n)]  # -c 1: one request after the other
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    traced = [r for r in rows if "hops" in r]
    kept = [r for r in rows if r.get("sampled") is False]
    assert len(traced) == sum(drawn) and len(traced) + len(kept) == len(rows)
    assert len(kept) == drawn[n:].count(False)
    assert {r["url"] for r in kept} == {refused}
    assert all(r["failure"]["phase"] == "connect" and r["status"] is None for r in kept)
    assert all(r["hops"] and r["timings"]["total"] is not None for r in traced)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "3", "--sample", "0"], "--sample must be a ratio in (0, 1]"),
        (["-n", "3", "--sample", "2"], "--sample must be a ratio in (0, 1]"),
        (["-n", "3", "--sample", "x"], "invalid float value: 'x'"),
        (["--sample", "0.5"], "--sample samples a repeated run: give -n N"),
        (["-n", "3", "--sample-seed", "1"], "--sample-seed goes with --sample"),
        (["-n", "3", "--sample", "0.5", "-w", "%{http_code}"], "does not go with --sample"),
    ],
)
def test_bad_sample_is_one_line_and_exit_2(argv: list[str], message: str) -> None:
    """A ratio outside (0, 1], not a number, without ``-n``, a seed alone, or with ``-w``:
    the console script prints one line and exits 2, sending nothing."""
    out = aiotrace("http://127.0.0.1:1/", *argv, timeout=30)
    assert out.returncode == 2
    assert message in one_line(out.stderr)
    assert out.stdout == ""


# -- the demo ------------------------------------------------------------------------------


def test_demo_tours_every_step_offline_quickly_and_leaves_nothing(tmp_path: Path) -> None:
    """``aiotrace demo`` runs its eight steps on loopback (real DNS, TLS with a throwaway
    CA), exits 0 well within its time, and writes nothing outside its own temp directory,
    which it removes."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    began = time.monotonic()
    out = aiotrace("demo", env=clean_env(TMPDIR=str(tmp)), cwd=tmp_path, timeout=60)
    took = time.monotonic() - began
    assert out.returncode == 0, out.stderr
    assert took < 20, took
    assert out.stderr == ""
    text = out.stdout
    for n in range(1, 9):
        assert f"{n}/8 " in text
    for needle in (
        "DNS shop.test → 127.0.0.1", "Certificate: subject", "connection #1 reused, idle",
        "── hop 3", "connection #2 new: first connection", "the server closed the previous one",
        "reused", "new (busy)", "✗ connect failed", "✗ TLS failed", "Hostname mismatch",
    ):  # fmt: skip
        assert needle in text, needle
    burst = text.split("6/8 ")[1].split("7/8 ")[0]
    assert re.search(r"request +connection +Blocked +Server Processing", burst)
    assert re.search(r"^ +Blocked +DNS Lookup +TCP Connection +Server Processing", burst, re.M)
    assert not ESCAPE.search(text)
    assert list(tmp.iterdir()) == [] and list(tmp_path.iterdir()) == [tmp]


def test_demo_json_has_the_same_tour_as_data() -> None:
    """``aiotrace demo --json`` prints the eight steps, each with its notice and requests'
    timelines: reuse, why not reused, pool waits, and the two failures' phases."""
    out = aiotrace("demo", "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    steps = json.loads(out.stdout)["steps"]
    assert [s["step"] for s in steps] == list(range(1, 9))
    assert all(s["notice"] for s in steps)
    first, again, chain, closes, slow_drip, burst, refused, tls = (s["requests"] for s in steps)
    assert first[0]["hops"][0]["timings"]["dns"] is not None
    assert first[0]["hops"][0]["connection"]["tls"]["version"].startswith("TLSv1.")
    assert again[0]["hops"][0]["reused"] and again[0]["hops"][0]["idle_time_ms"] >= 150
    assert [h["reused"] for h in chain[0]["hops"]] == [True, False, True]
    assert closes[1]["hops"][0]["reuse_miss"] == "server_closed"
    slow, drip = slow_drip
    assert slow["hops"][0]["timings"]["wait"] > 200 > slow["hops"][0]["timings"]["receive"]
    assert drip["hops"][0]["timings"]["receive"] > 200 > drip["hops"][0]["timings"]["wait"]
    assert len(burst) == 5 and sum(r["hops"][0]["timings"]["blocked"] is not None for r in burst) >= 3
    assert refused[0]["failure"]["phase"] == "connect"
    assert tls[0]["failure"]["phase"] == "TLS"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("examples/dns_and_reuse.py", ["DNS Info: host=localhost", "reused=False", "reused=True"]),
        ("examples/redirect_reuse.py", ["Connection reused for http://localhost:", "? False"]),
    ],
)
def test_examples_run_offline(script: str, expected: list[str]) -> None:
    """The Go blog's programs, the aiotrace way, run on loopback and print what Go's printed."""
    out = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    for needle in expected:
        assert needle in out.stdout
    if "redirect" in script:
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 2 and all(line.endswith("? False") for line in lines)
