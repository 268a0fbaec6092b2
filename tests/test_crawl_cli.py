"""``mainline-dht crawl`` run as a user runs it, against a DHT of our nodes on loopback.

The 30-node network runs in a thread of its own (``main`` starts its own trio
run), on 127.0.84.1-30; the crawler binds 127.0.84.200. Nothing else is contacted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mainline_dht import cli
from mainline_dht.wire.contact import Address

from netthread import local_network_thread

#: Infohashes that nodes of the test network announce to their neighbours.
ANNOUNCED = [bytes([i]) * 20 for i in range(1, 4)]
DEAD = "127.0.84.250:9"
BIND = "127.0.84.200:0"


@pytest.fixture(scope="module")
def net() -> Iterator[tuple[Address, set[tuple[str, int]]]]:
    with local_network_thread(30, seed=84, base=("127.0.84.1", 0)) as threaded:
        for i, h in enumerate(ANNOUNCED):
            assert threaded.announce(3 + i, h, 4000 + i) > 0
        yield threaded.bootstrap_address, {n.local_address for n in threaded.net.nodes}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_crawl_json_events_and_database(net: tuple[Address, set[tuple[str, int]]], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    boot, members = net
    db = tmp_path / "crawl.sqlite3"
    code, out, err = _run(capsys, "crawl", "--bootstrap", f"{boot[0]}:{boot[1]}", "--bind", BIND,
                          "--duration", "4", "--rate", "100", "--db", f"sqlite:{db}", "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    nodes = [e for e in events if e["event"] == "node"]
    hashes = [e for e in events if e["event"] == "infohash"]
    done = events[-1]
    assert set(done) == {"event", "nodes", "infohashes", "queries", "elapsed", "estimate"}
    assert done["event"] == "done" and done["nodes"] == len(nodes) and done["infohashes"] == len(hashes)
    assert all(set(e) == {"event", "id", "ip", "port"} and len(bytes.fromhex(e["id"])) == 20 for e in nodes)
    found = {(e["ip"], e["port"]) for e in nodes}
    assert found >= members - {boot}
    assert not any(ip == BIND.split(":")[0] for ip, _ in found)  # never ourselves
    assert {bytes.fromhex(e["infohash"]) for e in hashes} >= set(ANNOUNCED)
    assert isinstance(done["queries"], int) and done["queries"] >= len(nodes)
    assert done["estimate"] is None or 10 <= done["estimate"] <= 100
    rows = sqlite3.connect(db).execute("SELECT count(*), count(bep51) FROM nodes").fetchone()
    assert rows[0] >= len(nodes) and rows[1] == rows[0]
    assert sqlite3.connect(db).execute("SELECT count(*) FROM infohashes").fetchone()[0] >= len(ANNOUNCED)


def test_crawl_text_summary_and_resume(net: tuple[Address, set[tuple[str, int]]], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    boot, _ = net
    db = tmp_path / "crawl.sqlite3"
    argv = ["crawl", "--bootstrap", f"{boot[0]}:{boot[1]}", "--bind", BIND, "--duration", "2", "--db", str(db)]
    code, out, err = _run(capsys, *argv)
    assert code == 0 and out == ""
    assert "crawled" in err and "infohash" in err and f"{db}:" in err
    stored = sqlite3.connect(db).execute("SELECT count(*) FROM nodes").fetchone()[0]
    assert stored >= 25
    code, out, err = _run(capsys, *argv)  # nothing is due again: few queries, same nodes
    assert code == 0
    assert sqlite3.connect(db).execute("SELECT count(*) FROM nodes").fetchone()[0] >= stored


def test_crawl_nothing_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "crawl", "--bootstrap", DEAD, "--bind", BIND, "--duration", "1",
                          "--db", str(tmp_path / "c.db"), "--json")
    assert code == 2 and out == ""
    assert "mainline-dht: error: no DHT node answered" in err and "--bootstrap HOST:PORT" in err


def test_crawl_unusable_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite " * 200)
    code, out, err = _run(capsys, "crawl", "--bootstrap", DEAD, "--duration", "1", "--db", str(junk))
    assert code == 2 and out == ""
    assert err.startswith("mainline-dht: error: cannot use ") and "--db PATH" in err
    (tmp_path / "afile").write_text("x")
    code, _, err = _run(capsys, "crawl", "--bootstrap", DEAD, "--duration", "1",
                        "--db", str(tmp_path / "afile" / "x.db"))
    assert code == 2 and "cannot open the crawl database" in err
    code, _, err = _run(capsys, "crawl", "--bootstrap", DEAD, "--duration", "1", "--db", "mysql://x/y")
    assert code == 2 and "no crawl database backend for mysql://" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["crawl", "--rate", "0"], "queries per second above 0"),
        (["crawl", "--rate", "fast"], "not a number"),
        (["crawl", "--duration", "-3"], "positive number of seconds"),
        (["crawl", "--bootstrap", "nohost"], "HOST:PORT"),
        (["crawl", "--bind", "1.2.3.4:99999"], "port out of range"),
    ],
)
def test_crawl_bad_arguments(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_crawl_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["crawl", "--help"])
    out = capsys.readouterr().out
    for word in ("--bootstrap", "--bind", "--duration", "--rate", "--db", "--json", "Exit status", "crawl.sqlite3"):
        assert word in out
