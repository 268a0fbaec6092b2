"""``mainline-dht crawl --metadata``: the crawl fetches the metadata of the infohashes it
finds into the ``torrents`` table (SQLite), and ``--json`` reports each torrent.

Network rules: loopback only (127.0.79.x); the peers are fake peers of ours
(tests/fake_peers.py) serving metadata over TCP, announced by DHT nodes of a
local test network on their own IPs.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mainline_dht import cli
from mainline_dht.crawl.sqlite_store import SQLiteStore
from mainline_dht.crawl.store import TorrentRecord
from mainline_dht.wire.contact import Address

from fake_peers import FakePeer, info_hash_of, make_info
from netthread import local_network_thread

INFOS = [make_info(f"crawled {i}".encode(), files=i + 1, size=2000, seed=i) for i in range(2)]
HASHES = [info_hash_of(info) for info in INFOS]
BIND = "127.0.79.200:0"


@pytest.fixture(scope="module")
def net() -> Iterator[Address]:
    """A 12-node DHT on 127.0.79.x; two nodes announce fake peers that serve INFOS."""
    with local_network_thread(12, seed=79, base=("127.0.79.1", 0)) as threaded:
        for i, info in enumerate(INFOS):
            addr = threaded.start(FakePeer(info).serve, threaded.net.nodes[4 + i].local_address[0])
            assert threaded.announce(4 + i, HASHES[i], addr[1]) > 0
        yield threaded.bootstrap_address


def test_crawl_metadata_fills_the_torrents_table(net: Address, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "crawl.sqlite3"
    code = cli.main(["crawl", "--bootstrap", f"{net[0]}:{net[1]}", "--bind", BIND, "--duration", "5",
                     "--rate", "100", "--metadata", "--metadata-rate", "20", "--db", f"sqlite:{db}", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    torrents = {e["infohash"]: e for e in events if e["event"] == "torrent"}
    assert set(torrents) == {h.hex() for h in HASHES}
    for i, h in enumerate(HASHES):
        assert torrents[h.hex()] == {"event": "torrent", "infohash": h.hex(), "name": f"crawled {i}",
                                     "length": sum(1000 * (k + 1) for k in range(i + 1)), "files": i + 1}
    rows = sqlite3.connect(db).execute(
        "SELECT infohash, name, total_length, file_count, files, fetched_at FROM torrents ORDER BY name").fetchall()
    assert [(bytes(r[0]), r[1], r[3]) for r in rows] == [(HASHES[0], "crawled 0", 1), (HASHES[1], "crawled 1", 2)]
    assert json.loads(rows[1][4]) == [["dir/file0.bin", 1000], ["dir/file1.bin", 2000]]
    assert all(r[5] > 1_600_000_000 for r in rows)


def test_crawl_without_metadata_fetches_nothing(net: Address, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "crawl.sqlite3"
    code = cli.main(["crawl", "--bootstrap", f"{net[0]}:{net[1]}", "--bind", BIND, "--duration", "2",
                     "--rate", "100", "--db", str(db), "--json"])
    assert code == 0
    assert not any(json.loads(line)["event"] == "torrent" for line in capsys.readouterr().out.splitlines())
    assert sqlite3.connect(db).execute("SELECT count(*) FROM torrents").fetchone()[0] == 0


def test_sqlite_store_replaces_a_torrent_fetched_again(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.sqlite3")
    h = b"\x01" * 20
    store.write_torrents([TorrentRecord(h, "old", 1, (("a", 1),), 1.0)])
    store.write_torrents([TorrentRecord(h, "caf\u00e9", 3, (("a", 1), ("d/b", 2)), 2.0)])
    store.write_torrents([])
    store.close()
    rows = sqlite3.connect(tmp_path / "t.sqlite3").execute("SELECT * FROM torrents").fetchall()
    assert rows == [(h, "caf\u00e9", 3, 2, '[["a", 1], ["d/b", 2]]', 2.0)]


def test_metadata_rate_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["crawl", "--metadata", "--metadata-rate", "0"])
    assert "fetches per second" in capsys.readouterr().err
