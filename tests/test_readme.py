"""Every example in README.md runs, against a test network, and does what the README says.

The README marks each example with an HTML comment, ``<!-- example: NAME -->``, on
the line before its fence. This file starts ``mainline-dht testnet`` (the README's
own command, on addresses of its own: 127.0.83.x, free ports), runs each example
there and checks its output. The only changes made to an example are the ones
the README states: ``127.0.1.1:6881`` becomes the test network's address, a port
on ``127.0.0.1`` becomes 0, a ``postgresql://`` URL becomes the test's throwaway
PostgreSQL server's, and ``mainline-dht`` becomes ``python -m mainline_dht``.

Every fenced block outside "Two commands" must be a marked example with a check
here, so an example cannot be added without being run.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from postgres_server import PostgresServer

from mainline_dht.runtime.state_file import load_contacts

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WAIT = 60.0  # seconds any one example may take at most; on loopback they need about one
#: The bootstrap address the examples use: ``mainline-dht testnet``'s default.
README_TESTNET = ("127.0.1.1", 6881)
#: The test network's first address (port 0: every node on a free port).
TESTNET_BASE = "127.0.83.1:0"
TESTNET_NODES = "30"
#: The database URL of the fleet examples; the test's own throwaway server replaces it.
README_POSTGRES = "postgresql://crawler@localhost/dht"
#: The peer the announce examples announce, as the lookups see it.
ANNOUNCED_PEER = "127.0.0.1:51413"

_MARKER = re.compile(r"^<!-- example: (?P<name>[\w.]+) -->$")
_FENCE = re.compile(r"^```(?P<lang>\w*)$")


@dataclass(frozen=True)
class Example:
    name: str
    lang: str
    code: str
    line: int


def read_examples() -> tuple[dict[str, Example], list[int]]:
    """The README's marked examples by name, and the lines of unmarked fences outside "Two commands"."""
    lines = README.read_text().splitlines()
    examples: dict[str, Example] = {}
    unmarked: list[int] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:]
        fence = _FENCE.match(line)
        if fence and fence["lang"]:
            end = lines.index("```", i + 1)
            marker = _MARKER.match(lines[i - 1]) if i else None
            if marker:
                name = marker["name"]
                assert name not in examples, f"two examples named {name}"
                examples[name] = Example(name, fence["lang"], "\n".join(lines[i + 1:end]) + "\n", i + 1)
            elif section != "Two commands":
                unmarked.append(i + 1)
            i = end
        i += 1
    return examples, unmarked


EXAMPLES, UNMARKED = read_examples()


def localize(text: str, bootstrap: tuple[str, int]) -> str:
    """Apply the README's stated substitutions."""
    host, port = bootstrap
    text = text.replace(f"{README_TESTNET[0]}:{README_TESTNET[1]}", f"{host}:{port}")
    text = text.replace(f'("{README_TESTNET[0]}", {README_TESTNET[1]})', f'("{host}", {port})')
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:0", text)
    return re.sub(r'\("127\.0\.0\.1", \d+\)', '("127.0.0.1", 0)', text)


def command(name: str, bootstrap: tuple[str, int]) -> list[str]:
    """The one shell command of example ``name``, as an argv."""
    example = EXAMPLES[name]
    assert example.lang == "sh"
    commands = [shlex.split(line, comments=True) for line in localize(example.code, bootstrap).splitlines()]
    commands = [argv for argv in commands if argv]
    assert len(commands) == 1, f"{name}: one command per example"
    argv = commands[0]
    assert argv[0] == "mainline-dht", f"{name}: examples run our command"
    return [sys.executable, "-m", "mainline_dht", *argv[1:]]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def run_command(name: str, bootstrap: tuple[str, int], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(name, bootstrap), cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=WAIT)


def run_python(name: str, bootstrap: tuple[str, int], cwd: Path) -> subprocess.CompletedProcess[str]:
    example = EXAMPLES[name]
    assert example.lang == "python"
    script = cwd / name
    script.write_text(localize(example.code, bootstrap))
    result = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env(), capture_output=True, text=True,
                            timeout=WAIT)
    assert result.returncode == 0, f"README.md line {example.line}: {name} failed:\n{result.stderr}"
    return result


class Lines:
    """The lines a long-running process prints, read on a thread so that waits are bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def next(self) -> str:
        line = self._queue.get(timeout=WAIT)
        assert line is not None, "the process ended"
        return line

    def rest(self) -> str:
        """Every line still to come, once the process has closed its output."""
        lines = []
        while (line := self._queue.get(timeout=WAIT)) is not None:
            lines.append(line)
        return "".join(lines)


@dataclass
class RunningTestnet:
    bootstrap: tuple[str, int]
    announce: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTestnet]:
    """The README's testnet command, running; and the README's announce command, run on it."""
    argv = command("testnet", README_TESTNET) + ["--base", TESTNET_BASE, "--nodes", TESTNET_NODES]
    proc = subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = Lines(proc.stdout).next().strip()
        host, _, port = first.rpartition(":")
        bootstrap = (host, int(port))
        announce = run_command("announce", bootstrap, tmp_path_factory.mktemp("announce"))
        yield RunningTestnet(bootstrap, announce)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert "stopped" in err


def test_every_block_is_a_tested_example() -> None:
    assert UNMARKED == [], f"README.md: fenced blocks at lines {UNMARKED} carry no <!-- example: NAME --> marker"
    assert set(EXAMPLES) == set(CHECKED)


def test_testnet(testnet: RunningTestnet) -> None:
    host, port = testnet.bootstrap
    assert host.startswith("127.0.") and port > 0


def test_ping(testnet: RunningTestnet, tmp_path: Path) -> None:
    result = run_command("ping", testnet.bootstrap, tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\b[0-9a-f]{40}\b", result.stdout + result.stderr)


def test_announce(testnet: RunningTestnet) -> None:
    result = testnet.announce
    # The lookup before the announce found nobody (exit 1); then the nodes took the announce.
    assert result.returncode in (0, 1), result.stderr
    accepted = re.search(r"announce accepted by (\d+) node", result.stderr)
    assert accepted and int(accepted[1]) > 0, result.stderr


def test_peers(testnet: RunningTestnet, tmp_path: Path) -> None:
    result = run_command("peers", testnet.bootstrap, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{ANNOUNCED_PEER}\n"
    assert "1 peer in" in result.stderr


def test_lookup_py(testnet: RunningTestnet, tmp_path: Path) -> None:
    out = run_python("lookup.py", testnet.bootstrap, tmp_path).stdout.splitlines()
    assert out[0] == ANNOUNCED_PEER
    assert re.fullmatch(r"[1-9]\d* nodes answered", out[1]) and len(out) == 2


def test_announce_py(testnet: RunningTestnet, tmp_path: Path) -> None:
    out = run_python("announce.py", testnet.bootstrap, tmp_path).stdout
    assert re.fullmatch(r"[1-9]\d* nodes accepted the announce\n", out)


def test_embed_trio_py(testnet: RunningTestnet, tmp_path: Path) -> None:
    out = run_python("embed_trio.py", testnet.bootstrap, tmp_path).stdout.splitlines()
    assert out[0] == f"peer {ANNOUNCED_PEER}"
    assert re.fullmatch(r"[1-9]\d* contacts in the routing table", out[1]) and len(out) == 2
    _, contacts = load_contacts(tmp_path / "client-dht.dat")  # saved on leaving the block
    assert contacts


def test_embed_threads_py(testnet: RunningTestnet, tmp_path: Path) -> None:
    out = run_python("embed_threads.py", testnet.bootstrap, tmp_path).stdout.splitlines()
    assert re.fullmatch(r"[1-9]\d* nodes accepted the announce; peers: \[\('127\.0\.0\.1', 51413\)\]", out[0])
    assert out[1:] == [f"peer {ANNOUNCED_PEER}"]
    _, contacts = load_contacts(tmp_path / "client-dht.dat")
    assert contacts


def test_embed_asyncio_py(testnet: RunningTestnet, tmp_path: Path) -> None:
    out = run_python("embed_asyncio.py", testnet.bootstrap, tmp_path).stdout.splitlines()
    assert out[0] == f"peer {ANNOUNCED_PEER}"
    assert re.fullmatch(r"[1-9]\d* nodes accepted the announce", out[1]) and len(out) == 2
    _, contacts = load_contacts(tmp_path / "client-dht.dat")
    assert contacts


def test_crawl(testnet: RunningTestnet, tmp_path: Path) -> None:
    import sqlite3

    result = run_command("crawl", testnet.bootstrap, tmp_path)
    assert result.returncode == 0, result.stderr
    crawled = re.search(r"crawled (\d+) nodes", result.stderr)
    assert crawled and int(crawled[1]) >= int(TESTNET_NODES) - 5, result.stderr
    db = sqlite3.connect(tmp_path / "crawl.sqlite3")
    assert db.execute("SELECT count(*) FROM nodes").fetchone()[0] == int(crawled[1])
    announced = bytes.fromhex("37998897394d4ac3936309e1d75edfaaa2ff91ce")
    assert db.execute("SELECT reporters FROM infohashes WHERE infohash = ?", (announced,)).fetchone()[0] >= 1


def _with_database(argv: list[str], url: str) -> list[str]:
    assert README_POSTGRES in argv
    return [url if arg == README_POSTGRES else arg for arg in argv]


def test_fleet_and_its_status(testnet: RunningTestnet, tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.url("readme_fleet")
    result = subprocess.run(_with_database(command("fleet", testnet.bootstrap), url), cwd=tmp_path, env=env(),
                            capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 0, result.stderr
    assert "worker w1" in result.stderr
    crawled = re.search(r"crawled (\d+) nodes", result.stderr)
    assert crawled and int(crawled[1]) >= int(TESTNET_NODES) - 5, result.stderr
    status = subprocess.run(_with_database(command("fleet_status", testnet.bootstrap), url), cwd=tmp_path,
                            env=env(), capture_output=True, text=True, timeout=WAIT)
    assert status.returncode == 0, status.stderr
    assert re.search(r"^\d+ nodes .*partitions: 0 of 256 leased, 0 expired, 256 free", status.stdout), status.stdout
    assert re.search(r"^  w1 .* 0 partitions +[1-9]\d* nodes", status.stdout, re.M), status.stdout  # leases given back


def test_crawl_py(testnet: RunningTestnet, tmp_path: Path) -> None:
    out = run_python("crawl.py", testnet.bootstrap, tmp_path).stdout.splitlines()
    assert "infohash 37998897394d4ac3936309e1d75edfaaa2ff91ce" in out[:-1]
    assert re.fullmatch(r"[1-9]\d* nodes answered", out[-1])


def test_node(testnet: RunningTestnet, tmp_path: Path) -> None:
    """The node starts, joins, and on Ctrl-C stops and saves its routing table."""
    # --status-interval (a hidden option) makes it report soon that it has joined.
    argv = command("node", testnet.bootstrap) + ["--status-interval", "0.2"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = Lines(proc.stdout)  # reads all of stdout, to the end
    try:
        assert re.match(r"node [0-9a-f]{40} on UDP 127\.0\.0\.1:\d+; routing table file node\.dat", lines.next())
        for _ in range(int(WAIT / 0.2)):
            status = lines.next()
            if "not joined yet" not in status and not status.startswith("node ID is now"):
                break
        assert re.search(r"\b[1-9]\d* contacts", status), status
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(WAIT)
    assert proc.stderr is not None
    err = proc.stderr.read()  # little: warnings only
    assert proc.returncode == 0, err
    assert re.search(r"stopped; [1-9]\d* contacts saved to node\.dat", lines.rest())
    _, contacts = load_contacts(tmp_path / "node.dat")
    assert contacts


#: The immutable item the put example stores: the SHA-1 of b"5:hello".
HELLO_TARGET = "e28910ea0adb94dd45ced75fbff3e135c01bc437"


def test_put_and_get(testnet: RunningTestnet, tmp_path: Path) -> None:
    put = run_command("put", testnet.bootstrap, tmp_path)
    assert put.returncode == 0, put.stderr
    assert put.stdout.strip() == HELLO_TARGET and "stored on" in put.stderr
    got = run_command("get", testnet.bootstrap, tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "hello\n"


def test_items_py(testnet: RunningTestnet, tmp_path: Path) -> None:
    lines = run_python("items.py", testnet.bootstrap, tmp_path).stdout.splitlines()
    assert lines[0] == f"{HELLO_TARGET} b'hello'"
    assert re.fullmatch(r"seq 1 on [1-9]\d* nodes: \{b'version': 2\}", lines[1]), lines


def test_scrape(testnet: RunningTestnet, tmp_path: Path) -> None:
    result = run_command("scrape", testnet.bootstrap, tmp_path)
    assert result.returncode == 0, result.stderr
    # The announce example's peer, announced without --seed: one downloader, no seeds.
    assert "about 0 seeds and 1 downloaders" in result.stderr


#: The examples the tests above check, by name.
CHECKED = {"testnet", "ping", "announce", "peers", "lookup.py", "announce.py", "embed_trio.py",
           "embed_threads.py", "embed_asyncio.py", "node", "crawl", "crawl.py", "put", "get", "items.py",
           "scrape", "fleet", "fleet_status"}
