"""``aiotrace crawl``, run as a user runs it: the installed console script in a subprocess,
against a loopback site of several hosts (``crawl_site.py``, a process of its own)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import random
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from aiotrace._cli.crawl import Crawler, CrawlOptions, parse_url_lines
from aiotrace._cli.crawl_report import summarize
from aiotrace._cli.main import main

ROOT = Path(__file__).resolve().parent.parent
AIOTRACE = str(Path(sys.executable).with_name("aiotrace"))
SITE = Path(__file__).with_name("crawl_site.py")
DATA = re.compile(r'<script type="application/json" id="aiotrace-data">(.*?)</script>', re.S)
# The command's environment: piped output is as wide as COLUMNS says, and something in the
# test run sets it to 80; the tests read the summary unwrapped, as a file gets it.
ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


@dataclass(frozen=True)
class Site:
    """The running site: its plain ports (one "host" each), its TLS port, the CA to trust."""

    ports: list[int]
    tls: int
    cafile: Path

    def host(self, i: int) -> str:
        """``name:port`` of host ``i``: a ``.test`` name the crawl resolves with --resolve."""
        return f"{'abcdefghijklmnopqrstuvwxyz'[i]}.test:{self.ports[i]}"

    def resolve(self) -> list[str]:
        """``--resolve`` arguments sending every host's name (and the TLS one) to loopback."""
        args = []
        for i, port in enumerate(self.ports):
            args += ["--resolve", f"{self.host(i).split(':')[0]}:{port}:127.0.0.1"]
        return [*args, "--resolve", f"tls.test:{self.tls}:127.0.0.1"]


def start_site(n: int, tmp: Path, ca: trustme.CA) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``crawl_site.py`` on ``n`` plain ports and a TLS one; returns it and its ports."""
    cert = ca.issue_cert("tls.test", "localhost", "127.0.0.1")
    certfile, keyfile = tmp / "site.pem", tmp / "site.key"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    server = subprocess.Popen(
        [sys.executable, str(SITE), str(n), "--certfile", str(certfile), "--keyfile", str(keyfile)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, json.loads(server.stdout.readline())


def stop_site(server: subprocess.Popen[str]) -> None:
    """Close the site's stdin (it stops by itself), then make sure it is gone."""
    assert server.stdin is not None and server.stdout is not None
    server.stdin.close()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    server.stdout.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tls_ca: trustme.CA) -> Iterator[Site]:
    """Four plain hosts and a TLS one, on loopback, for the whole module."""
    tmp = tmp_path_factory.mktemp("site")
    cafile = tmp / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(cafile))
    server, ports = start_site(4, tmp, tls_ca)
    try:
        yield Site(ports=ports["ports"], tls=ports["tls"], cafile=cafile)
    finally:
        stop_site(server)


def crawl(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``aiotrace crawl ARGS`` (the venv's console script), output captured (piped)."""
    return subprocess.run(
        [AIOTRACE, "crawl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=ENV,
    )


def html_data(path: Path) -> Any:
    """The document an HTML report carries."""
    found = DATA.search(path.read_text(encoding="utf-8"))
    assert found is not None
    return json.loads(found.group(1))


def url_file(tmp_path: Path, lines: list[str], name: str = "urls.txt") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- the list ----------------------------------------------------------------------------------


def test_url_lines_parse_with_line_numbers() -> None:
    """Comments and blank lines are skipped; each bad line is kept with its number and why."""
    lines = [
        b"# a comment\n",
        b"http://a.test/\n",
        b"\n",
        b"   \n",
        b"ftp://a.test/\n",
        b"http://a b/\n",
        b"http://a.test:99999/\n",
        b"\xff\xfe\n",
        b"  https://b.test:8443/x?y=1  \n",
        b"/relative\n",
    ]
    urls, bad = parse_url_lines(iter(lines))
    assert urls == ["http://a.test/", "https://b.test:8443/x?y=1"]
    assert [(b.line, b.reason.split(" (")[0]) for b in bad] == [
        (5, "not an http(s) URL"),
        (6, "not a URL"),
        (7, "not a URL"),
        (8, "not UTF-8"),
        (10, "not an http(s) URL"),
    ]


def test_bad_lines_are_reported_with_numbers_and_skipped(tmp_path: Path, site: Site) -> None:
    """Each bad line is one stderr line naming its number; the good ones are crawled (exit 0)."""
    path = url_file(
        tmp_path,
        [
            "# hosts to check",
            f"http://{site.host(0)}/",
            "",
            "not a url",
            f"http://{site.host(1)}/page/2",
            "mailto:someone@example.org",
        ],
    )
    out = crawl(path, *site.resolve(), "--json")
    assert out.returncode == 0, out.stderr
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"aiotrace: {path} line 4: not a URL")
    assert errors[1].startswith(f"aiotrace: {path} line 6: not an http(s) URL")
    doc = json.loads(out.stdout)
    assert doc["counts"]["ok"] == 2 and doc["counts"]["bad_lines"] == 2
    assert [b["line"] for b in doc["bad_lines"]] == [4, 6]


def test_stdin_is_read_for_dash_and_for_no_file(site: Site) -> None:
    """``-`` and no FILE both read the list from stdin."""
    urls = f"http://{site.host(0)}/\nhttp://{site.host(0)}/page/1\n"
    for args in (["-"], []):
        out = crawl(*args, *site.resolve(), "--json", stdin=urls)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["counts"]["ok"] == 2


@pytest.mark.parametrize(
    ("args", "lines", "message"),
    [
        ([], [], "no URL to crawl"),
        ([], ["# only a comment", "nope"], "no URL to crawl"),
        (["--concurrency", "0"], ["http://a.test/"], "--concurrency"),
        (["--rate", "0"], ["http://a.test/"], "--rate"),
        (["--max-time", "-1"], ["http://a.test/"], "--max-time"),
        (["--slo", "speed=3"], ["http://a.test/"], "--slo"),
        (["-H", "NoColon"], ["http://a.test/"], "-H"),
        (["-X", "GE T"], ["http://a.test/"], "-X"),
        (["--resolve", "a.test:80:nope"], ["http://a.test/"], "not an IP"),
        (["-k", "--cacert", "x.pem"], ["http://a.test/"], "do not go together"),
        (["--har", "/nonexistent/dir/x.har"], ["http://a.test/"], "cannot write"),
        (["--html", "/nonexistent/dir/x.html"], ["http://a.test/"], "--html: cannot write"),
        (["--nope"], ["http://a.test/"], "see aiotrace crawl --help"),
        (["--concurrency", "x"], ["http://a.test/"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    lines: list[str],
    message: str,
) -> None:
    """Bad options or a list with no URL: one line on stderr, exit 2, no request sent."""
    assert main(["crawl", url_file(tmp_path, lines), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 + lines.count("nope")
    assert "Traceback" not in err


def test_unreadable_list_is_exit_2(tmp_path: Path) -> None:
    """A list that cannot be read is one line naming it, exit 2 (from the console script)."""
    out = crawl(str(tmp_path / "missing.txt"))
    assert out.returncode == 2
    assert "cannot read" in out.stderr and "missing.txt" in out.stderr


# -- the summary -------------------------------------------------------------------------------


def test_summary_per_host(tmp_path: Path, site: Site, refused_port: int) -> None:
    """The terminal summary lists each host with its requests, errors by kind, reuse, the
    connections opened and why, the phases' percentiles, the overall line and the slowest
    requests with their dominant phase."""
    a, b, c = site.host(0), site.host(1), site.host(2)
    lines = [f"http://{a}/page/{i}" for i in range(6)]
    lines += [f"http://{b}/slow?ms=400", f"http://{b}/redirect", f"http://{c}/close"]
    lines += [f"http://{c}/close", f"http://{c}/fail", f"http://127.0.0.1:{refused_port}/"]
    path = url_file(tmp_path, lines)
    out = crawl(path, *site.resolve(), "-L", "--limit-per-host", "1", "--concurrency", "4")
    assert out.returncode == 1, out.stderr  # the refused port
    text = out.stdout
    assert text.startswith("crawl: 12 URLs · 11 ok · 1 failed · 0 cancelled · 0 not started")
    for host in (a, b, c, f"127.0.0.1:{refused_port}", "overall"):
        assert host in text
    assert "ClientConnectorError" in text
    table = text[text.index("per host") : text.index("phases per host")]
    row = {line.split()[0]: line for line in table.splitlines() if line.split()}
    # One connection per host (--limit-per-host 1) reused, but c.test's server closes its.
    assert "(first 1)" in row[a] and "83.3%" in row[a]  # 5 of 6 round trips reused
    assert "server_closed" in row[c] and "500 1" in row[c]
    for phase in ("blocked", "dns", "connect", "send", "wait", "receive", "total", "p90"):
        assert phase in text
    slowest = text[text.index("slowest requests") :].splitlines()
    # The two first rows (after the title and header): the slow request, waiting for its
    # response, and the redirect behind it, waiting for b.test's one connection.
    first = {row.split("│")[-1].strip(): row for row in slowest[3:5]}
    assert "wait" in first[f"http://{b}/slow?ms=400"]
    assert "blocked" in first[f"http://{b}/redirect (2 hops)"]
    assert len([s for s in slowest if s.startswith("#")]) == 5
    assert "\x1b" not in text and "\x1b" not in out.stderr


def test_redirects_are_followed_with_L_and_each_hop_traced(tmp_path: Path, site: Site) -> None:
    """Without -L a redirect is its own 302 response; with -L each hop is a round trip of its
    own (the HAR has one entry per hop) and a hop to another host counts there."""
    a, b = site.host(0), site.host(1)
    path = url_file(tmp_path, [f"http://{a}/redirect", f"http://{a}/redirect-to?port={site.ports[1]}"])
    har = tmp_path / "out.har"
    out = crawl(path, *site.resolve(), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [r["status"] for r in doc["requests"]] == [302, 302]
    out = crawl(path, *site.resolve(), "-L", "--json", "--har", str(har))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [(r["status"], len(r["hops"])) for r in doc["requests"]] == [(200, 2), (200, 2)]
    entries = json.loads(har.read_text())["log"]["entries"]
    assert len(entries) == 4
    assert doc["hosts"][a]["round_trips"] == 3
    assert doc["hosts"][f"127.0.0.1:{site.ports[1]}"]["round_trips"] == 1
    assert b not in doc["hosts"]


def test_reports_parse_and_their_counts_match(tmp_path: Path, site: Site, refused_port: int) -> None:
    """--json, --jsonl, --har and --html hold every request (the HAR one entry per hop) and
    agree with the per-host aggregates; every URL is accounted for exactly once."""
    lines = [f"http://{site.host(i % 4)}/page/{i}" for i in range(20)]
    lines += [f"http://{site.host(0)}/redirect", f"http://127.0.0.1:{refused_port}/x"]
    path = url_file(tmp_path, lines)
    jsonl, har, html = tmp_path / "out.jsonl", tmp_path / "out.har", tmp_path / "out.html"
    out = crawl(
        path, *site.resolve(), "-L", "--json", "--jsonl", str(jsonl), "--har", str(har),
        "--html", str(html),
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["counts"] == {
        "urls": 22, "bad_lines": 0, "ok": 21, "failed": 1, "cancelled": 0, "not_started": 0,
    }  # fmt: skip
    requests = doc["requests"]
    assert sorted(r["url"] for r in requests) == sorted(lines)
    assert sum(h["requests"] for h in doc["hosts"].values()) == 22
    assert doc["overall"]["requests"] == 22
    assert doc["overall"]["errors"] == {"ClientConnectorError": 1}
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in requests]
    entries = json.loads(har.read_text())["log"]["entries"]
    assert len(entries) == sum(len(r["hops"]) for r in requests) == 23
    page = html_data(html)
    assert [r["id"] for r in page["requests"]] == [r["id"] for r in requests]
    assert len(page["connections"]) == len(doc["connections"])
    assert page["title"] == f"aiotrace crawl {path}"
    opened = sum(h["connections_opened"] for h in doc["hosts"].values())
    assert opened == len(doc["connections"])
    assert len(doc["slowest"]) == 5
    assert all(s["dominant_phase"] in ("dns", "connect", "send", "wait", "receive", "blocked")
               for s in doc["slowest"])  # fmt: skip


def test_tls_with_cacert_or_k(tmp_path: Path, site: Site) -> None:
    """--cacert trusts the site's CA (the TLS phase is measured); without it verification
    fails (exit 1, the certificate error counted); -k skips verification."""
    path = url_file(tmp_path, [f"https://tls.test:{site.tls}/", f"https://tls.test:{site.tls}/page/1"])
    out = crawl(path, *site.resolve(), "--cacert", str(site.cafile), "--json")
    assert out.returncode == 0, out.stderr
    host = json.loads(out.stdout)["hosts"][f"tls.test:{site.tls}"]
    assert host["phases"]["tls"]["count"] >= 1
    out = crawl(path, *site.resolve(), "--json")
    assert out.returncode == 1
    errors = json.loads(out.stdout)["overall"]["errors"]
    assert list(errors) == ["ClientConnectorCertificateError"]
    out = crawl(path, *site.resolve(), "-k", "--json")
    assert out.returncode == 0, out.stderr


# -- exit statuses -----------------------------------------------------------------------------


def test_http_errors_exit_0_and_max_time_failures_exit_1(tmp_path: Path, site: Site) -> None:
    """A 500 is a response (exit 0); a request over --max-time got none (exit 1, counted as
    a timeout); -X and -H go with every request."""
    path = url_file(tmp_path, [f"http://{site.host(0)}/fail", f"http://{site.host(0)}/"])
    out = crawl(path, *site.resolve(), "-H", "X-Test: 1")
    assert out.returncode == 0, out.stderr
    path = url_file(tmp_path, [f"http://{site.host(0)}/slow?ms=1500", f"http://{site.host(0)}/"])
    out = crawl(path, *site.resolve(), "--max-time", "0.3", "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["counts"]["failed"] == 1 and doc["counts"]["ok"] == 1
    (kind,) = doc["overall"]["errors"]
    assert "Timeout" in kind
    path = url_file(tmp_path, [f"http://{site.host(0)}/"])
    out = crawl(path, *site.resolve(), "-X", "HEAD", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["requests"][0]["method"] == "HEAD"


def test_slo_exceeded_exits_4_naming_the_phase(tmp_path: Path, site: Site) -> None:
    """A --slo limit some requests went over exits 4, with one stderr line per limit naming
    the phase, how many went over and the worst; limits no request broke say nothing."""
    lines = [f"http://{site.host(0)}/slow?ms=300", f"http://{site.host(0)}/"]
    out = crawl(url_file(tmp_path, lines), *site.resolve(), "--slo", "wait=150,dns=5000")
    assert out.returncode == 4, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("aiotrace: SLO broken: wait (server processing) ")
    assert " ms > 150 ms in 1 of 2 requests (#" in line
    assert "/slow?ms=300" in line


# -- sampling ----------------------------------------------------------------------------------


def sampled_list(
    site: Site, refused_port: int, n: int, rate: float, seed: int
) -> tuple[list[str], list[bool]]:
    """``n`` distinct URLs over three hosts, with two refused and two 500s among the requests
    the seeded sampler skips and one of each among those it takes; and which it takes (the
    crawl draws once per URL, in list order, as its workers take them)."""
    draw = random.Random(seed).random
    drawn = [draw() < rate for _ in range(n)]
    lines = [f"http://{site.host(i % 3)}/page/{i}" for i in range(n)]
    skipped = [i for i in range(n) if not drawn[i]]
    taken = [i for i in range(n) if drawn[i]]
    for i in (skipped[10], skipped[40], taken[3]):
        lines[i] = f"http://127.0.0.1:{refused_port}/refused/{i}"
    for i in (skipped[20], skipped[50], taken[5]):
        lines[i] = f"http://{site.host(0)}/fail?i={i}"
    return lines, drawn


def test_sample_counts_every_request_and_traces_the_sample(
    tmp_path: Path, site: Site, refused_port: int
) -> None:
    """``--sample 0.2 --sample-seed 1 --json --jsonl``: every host's request, status and
    error counts equal the truth, ``sampled`` counts exactly the seeded draws and is marked
    ``estimated``, and the requests written are the sampled ones plus every skipped failure
    or 5xx (keep_errors), the same in the JSON and the JSONL."""
    n, rate, seed = 300, 0.2, 1
    lines, drawn = sampled_list(site, refused_port, n, rate, seed)
    jsonl, har, html = tmp_path / "out.jsonl", tmp_path / "out.har", tmp_path / "out.html"
    out = crawl(
        url_file(tmp_path, lines), *site.resolve(), "--sample", str(rate), "--sample-seed",
        str(seed), "--json", "--jsonl", str(jsonl), "--har", str(har), "--html", str(html),
    )  # fmt: skip
    assert out.returncode == 1, out.stderr  # the refused port
    doc = json.loads(out.stdout)
    assert doc["sample_rate"] == rate and doc["sample_seed"] == seed
    assert doc["counts"]["ok"] == n - 3 and doc["counts"]["failed"] == 3
    truth: dict[str, dict[str, Any]] = {}
    for line in lines:
        host = line.split("/")[2]
        t = truth.setdefault(host, {"requests": 0, "statuses": {}, "errors": {}})
        t["requests"] += 1
        if "/refused/" in line:
            t["errors"]["ClientConnectorError"] = t["errors"].get("ClientConnectorError", 0) + 1
        else:
            code = "500" if "/fail" in line else "200"
            t["statuses"][code] = t["statuses"].get(code, 0) + 1
    assert set(doc["hosts"]) == set(truth)
    for host, t in truth.items():
        h = doc["hosts"][host]
        assert (h["requests"], h["statuses"], h["errors"]) == (
            t["requests"], t["statuses"], t["errors"],
        ), host  # fmt: skip
        assert h["estimated"] is True
        # Every request's time to its response is exact; the phases are the sample's.
        assert h["phases"]["response"]["count"] == t["requests"]
        total = h["phases"].get("total", {"count": 0})["count"]
        assert total == h["sampled"], host
    sampled_urls = sorted(lines[i] for i in range(n) if drawn[i])
    assert sum(h["sampled"] for h in doc["hosts"].values()) == len(sampled_urls)
    assert doc["overall"]["sampled"] == len(sampled_urls)
    assert doc["overall"]["requests"] == n and doc["overall"]["estimated"] is True
    requests = doc["requests"]
    traced = sorted(r["url"] for r in requests if r.get("sampled", True))
    assert traced == sampled_urls
    # keep_errors: the failures and 5xx the sampler skipped are kept, with no round trip.
    kept = sorted((r["url"], r["status"], r["hops"]) for r in requests if r.get("sampled") is False)
    assert kept == sorted(
        (lines[i], 500 if "/fail" in lines[i] else None, [])
        for i in range(n)
        if not drawn[i] and ("/fail" in lines[i] or "/refused/" in lines[i])
    )
    assert len(kept) == 4
    refused = [r for r in requests if "/refused/" in r["url"]]
    assert len(refused) == 3 and all("ClientConnectorError" in r["error"] for r in refused)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in requests]
    entries = json.loads(har.read_text())["log"]["entries"]
    assert len(entries) == len(sampled_urls)  # one per round trip: the kept ones have none
    page = html_data(html)
    assert [r["id"] for r in page["requests"]] == [r["id"] for r in requests]
    assert page["sample_rate"] == rate
    assert all(s["url"] in sampled_urls for s in doc["slowest"])


def test_sample_summary_marks_the_estimates(
    tmp_path: Path, site: Site, refused_port: int
) -> None:
    """The terminal summary under ``--sample`` keeps the exact request counts, says how many
    were sampled (overall line, a ``sampled`` column, ``N of M`` beside the phases), stars
    the figures from the sample, and says the slowest requests and ``--slo`` are the
    sample's."""
    n, rate, seed = 200, 0.2, 3
    lines, drawn = sampled_list(site, refused_port, n, rate, seed)
    out = crawl(url_file(tmp_path, lines), *site.resolve(), "--sample", "0.2", "--sample-seed", "3",
                "--slo", "total=0.001")  # fmt: skip
    assert out.returncode == 1, out.stderr  # the refused port wins over the SLO
    text = out.stdout
    k = sum(drawn)
    head, note = text.splitlines()[:2]
    assert head.startswith(f"crawl: {n} URLs · {n - 3} ok · 3 failed")
    assert note.startswith(f"sampled {k} of {n} requests (--sample 0.2): ")
    assert "estimates from the sample" in note
    table = text[text.index("per host") : text.index("phases per host")]
    assert "reuse*" in table and "pool wait*" in table and "sampled" in table
    assert "requests, errors and statuses count every request" in table
    cells = {
        c[0]: c for line in table.splitlines() if len(c := [x.strip() for x in line.split("│")]) > 4
    }
    # host, requests (every one), errors, statuses, sampled
    assert cells["overall"][1] == str(n) and cells["overall"][4] == str(k)
    assert cells[f"127.0.0.1:{refused_port}"][1:3] == ["3", "3 (ClientConnectorError 3)"]
    assert cells[site.host(0)][1] == str(len([u for u in lines if site.host(0) in u]))
    assert f"estimates from {k} sampled of {n} requests" in text
    assert f"{k} of {n}" in text[text.index("phases per host") :]
    assert "response" in text and "sampled or not: exact" in text
    assert f"slowest of the {k} sampled requests" in text
    # --slo is checked on the sample, and its line says so.
    assert re.search(rf"ms > 0\.001 ms in \d+ of {k} sampled requests \(#", out.stderr)
    assert "\x1b" not in text and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample", "0"], "--sample must be a ratio in (0, 1]"),
        (["--sample", "2"], "--sample must be a ratio in (0, 1]"),
        (["--sample", "x"], "invalid float value: 'x'"),
        (["--sample", "nan"], "--sample must be a ratio in (0, 1]"),
        (["--sample-seed", "3"], "--sample-seed goes with --sample"),
        (["--sample", "0.5", "--sample-seed", "y"], "invalid int value: 'y'"),
    ],
)
def test_bad_sample_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """A ratio outside (0, 1], not a number, or a seed without a ratio: one line on stderr
    from the console script, exit 2, nothing crawled."""
    out = crawl(url_file(tmp_path, ["http://127.0.0.1:1/"]), *args, timeout=30)
    assert out.returncode == 2
    assert out.stderr.startswith("aiotrace: ") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""


# -- loop stalls -------------------------------------------------------------------------------


@pytest.mark.allow_blocking  # the test blocks the loop on purpose
async def test_a_loop_stall_shows_in_the_phase_it_blocked(aiohttp_server: Any) -> None:
    """The crawler's own loop blocked for 200 ms while a request waits for its response: the
    host's loop-stall time (in ``wait``) and the slowest request's say about 200 ms; a
    request that ran while the loop was free says none."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        return web.Response(text="slow")

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="fast")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/fast", fast)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    crawler = Crawler(CrawlOptions(concurrency=2), [f"{base}/fast", f"{base}/slow"])

    async def block() -> None:
        # Until the fast one is done (a counter, no event to wait on); the slow one then waits
        # for its response.
        while crawler.ok < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        time.sleep(0.2)  # noqa: ASYNC251  the crawler's own work, holding the loop

    blocker = asyncio.create_task(block())
    await crawler.run()
    await blocker
    report = summarize(
        crawler.rec, crawler.tally, crawler.counts(), interrupted=False, started_at=0.0,
        elapsed_s=crawler.elapsed_s,
    )  # fmt: skip
    (host,) = report.hosts
    assert host.stall_ms is not None
    assert 150 <= host.stall_ms["wait"] <= 400, host.stall_ms
    assert host.stalled == 1
    first, second = report.slowest
    assert first.url.endswith("/slow") and first.dominant_phase == "wait"
    assert first.dominant_stall_ms is not None and 150 <= first.dominant_stall_ms <= 400
    assert second.url.endswith("/fast") and second.stall_ms == 0.0


# -- interrupting --------------------------------------------------------------------------------


def wait_hanging(site: Site, host: int, n: int, proc: subprocess.Popen[str]) -> None:
    """Wait until the site holds ``n`` requests to ``/hang`` on ``host``: the crawl is well
    under way, however long the command took to start on a loaded machine."""
    deadline = time.monotonic() + 60
    url = f"http://127.0.0.1:{site.ports[0]}/hanging?host={site.host(host)}"
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url) as resp:
            if int(resp.read()) >= n:
                return
        assert proc.poll() is None, "the crawl ended before its requests hung"
        time.sleep(0.1)
    pytest.fail(f"the site never held {n} hanging requests")


@pytest.mark.parametrize(("sig", "host"), [(signal.SIGINT, 1), (signal.SIGTERM, 3)])
def test_interrupt_cancels_in_flight_and_writes_reports(
    tmp_path: Path, site: Site, sig: signal.Signals, host: int
) -> None:
    """SIGINT or SIGTERM mid-crawl: exit 130 at once, the requests in flight reported as
    cancelled, the rest as not started, and every report written for what finished."""
    fast = [f"http://{site.host(0)}/page/{i}" for i in range(4)]
    hang = [f"http://{site.host(host)}/hang" for _ in range(10)]
    path = url_file(tmp_path, fast + hang)
    har, html = tmp_path / "out.har", tmp_path / "out.html"
    proc = subprocess.Popen(
        [AIOTRACE, "crawl", path, *site.resolve(), "--concurrency", "6", "--json", "--har", str(har),
         "--html", str(html)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=ENV,
    )
    try:
        wait_hanging(site, host, 6, proc)  # the four fast ones are done, six hang
        sent = time.monotonic()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert took < 10
    doc = json.loads(stdout)
    assert doc["interrupted"] is True
    assert doc["counts"] == {
        "urls": 14, "bad_lines": 0, "ok": 4, "failed": 0, "cancelled": 6, "not_started": 4,
    }  # fmt: skip
    assert [r["status"] for r in doc["requests"] if r["error"] is None] == [200] * 4
    assert [r["error"] for r in doc["requests"] if r["status"] is None] == ["CancelledError"] * 6
    assert doc["hosts"][site.host(host)]["errors"] == {"cancelled": 6}
    assert len(json.loads(har.read_text())["log"]["entries"]) == 10
    page = html_data(html)
    assert [r["error"] for r in page["requests"]].count("CancelledError") == 6


def test_interrupted_summary_says_so(tmp_path: Path, site: Site) -> None:
    """The terminal summary of an interrupted crawl shows it, and the cancelled requests."""
    path = url_file(tmp_path, [f"http://{site.host(2)}/hang" for _ in range(3)])
    proc = subprocess.Popen(
        [AIOTRACE, "crawl", path, *site.resolve()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=ENV,
    )
    try:
        wait_hanging(site, 2, 3, proc)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "3 cancelled" in stdout and "interrupted" in stdout
    assert "cancelled 3" in stdout  # the host's errors by kind


# -- the terminal ------------------------------------------------------------------------------


def run_on_a_terminal(argv: list[str], timeout: float = 60) -> tuple[int, bytes, str]:
    """Run with stderr on a pseudo-terminal (stdout piped): exit status, what the terminal
    got, stdout."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=ROOT, env=ENV
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal's other end closed: the process is gone
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        assert proc.stdout is not None
        stdout = proc.stdout.read().decode()
        return proc.wait(timeout=10), screen, stdout
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_progress_bar_on_a_terminal_only(tmp_path: Path, site: Site) -> None:
    """On a terminal stderr shows a progress bar (done, failed, in flight, rate, ETA); piped,
    stderr and stdout get nothing of it and no escape codes at all."""
    path = url_file(tmp_path, [f"http://{site.host(0)}/slow?ms=200" for _ in range(12)])
    argv = [AIOTRACE, "crawl", path, *site.resolve(), "--concurrency", "2"]
    code, screen, stdout = run_on_a_terminal(argv)
    assert code == 0
    text = screen.decode(errors="replace")
    assert "\x1b[" in text
    for needle in ("crawl", "ok", "failed", "in flight", "req/s", "ETA"):
        assert needle in text
    assert "12/12" in text or "/12" in text
    assert stdout.startswith("crawl: 12 URLs · 12 ok")
    piped = crawl(*argv[2:])
    assert piped.returncode == 0
    assert piped.stderr == ""
    assert "\x1b" not in piped.stdout
    assert piped.stdout.startswith("crawl: 12 URLs · 12 ok")


@pytest.mark.parametrize("json_out", [False, True])
def test_a_reader_gone_stops_the_output_not_the_status(
    tmp_path: Path, site: Site, json_out: bool
) -> None:
    """stdout closed by its reader (``| head``) ends the output quietly: no traceback, and
    the exit status still says how the crawl went (0: every request got a response)."""
    path = url_file(tmp_path, [f"http://{site.host(0)}/", f"http://{site.host(1)}/"])
    argv = [AIOTRACE, "crawl", path, *site.resolve(), *(["--json"] if json_out else [])]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before anything is written: the write fails with EPIPE
    try:
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert stderr == ""


def test_rate_caps_requests_per_second(tmp_path: Path, site: Site) -> None:
    """--rate 10 spreads ten requests over about a second, however many may be in flight."""
    path = url_file(tmp_path, [f"http://{site.host(0)}/page/{i}" for i in range(10)])
    out = crawl(path, *site.resolve(), "--rate", "10", "--concurrency", "10", "--json")
    assert out.returncode == 0, out.stderr
    starts = sorted(r["started_at"] for r in json.loads(out.stdout)["requests"])
    assert starts[-1] - starts[0] >= 0.7  # nine gaps of 0.1 s, generously
    without = crawl(path, *site.resolve(), "--concurrency", "10", "--json")
    starts = sorted(r["started_at"] for r in json.loads(without.stdout)["requests"])
    assert starts[-1] - starts[0] < 0.5


# -- scale -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ten_thousand_requests_over_twenty_hosts(
    tmp_path: Path, tls_ca: trustme.CA
) -> None:
    """10,000 requests over 20 loopback hosts (distinct names through --resolve) at
    concurrency 200 finish within two minutes, each one accounted for exactly once."""
    server, ports = start_site(20, tmp_path, tls_ca)
    try:
        names = [f"h{i}.test" for i in range(20)]
        lines = [f"http://{names[i % 20]}:{ports['ports'][i % 20]}/page/{i}" for i in range(10_000)]
        resolve = []
        for name, port in zip(names, ports["ports"], strict=True):
            resolve += ["--resolve", f"{name}:{port}:127.0.0.1"]
        t0 = time.monotonic()
        out = crawl(url_file(tmp_path, lines), *resolve, "--concurrency", "200", "--json",
                    timeout=120)  # fmt: skip
        took = time.monotonic() - t0
    finally:
        stop_site(server)
    assert out.returncode == 0, out.stderr[-2000:]
    assert took < 120
    doc = json.loads(out.stdout)
    assert doc["counts"]["ok"] == 10_000
    assert sorted(r["url"] for r in doc["requests"]) == sorted(lines)
    assert len({r["id"] for r in doc["requests"]}) == 10_000
    assert len(doc["hosts"]) == 20
    assert all(h["requests"] == 500 for h in doc["hosts"].values())
    assert doc["overall"]["phases"]["total"]["count"] == 10_000


# -- the example -------------------------------------------------------------------------------


def test_crawler_example_traces_itself_and_writes_its_report(tmp_path: Path) -> None:
    """examples/crawler.py crawls its own loopback site, following links and a redirect, and
    writes its report, HTML and JSON, holding every request it made and the per-host
    aggregates."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "crawler.py"), "-o", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("fetched 30 pages in 30 requests")
    doc = json.loads((tmp_path / "report.json").read_text())
    assert len(doc["requests"]) == 30
    assert sum(len(r["hops"]) for r in doc["requests"]) == 31  # /old redirects once
    (host,) = doc["hosts"].values()
    assert host["requests"] == 30 and host["round_trips"] == 31
    assert len(doc["connections"]) == host["round_trips"] - host["reused"]
    page = html_data(tmp_path / "report.html")
    assert [r["id"] for r in page["requests"]] == [r["id"] for r in doc["requests"]]
