"""Crawl stores: the SQLite backend and the --db string (mainline_dht.crawl.store)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mainline_dht.crawl.sqlite_store import SQLiteStore
from mainline_dht.crawl.store import (
    SCHEMA_VERSION,
    InfohashReport,
    NodeRecord,
    StoreCounts,
    StoreError,
    default_db_path,
    open_store,
)

A, B, C = b"\x0a" * 20, b"\x0b" * 20, b"\x0c" * 20
H1, H2 = b"\x01" * 20, b"\x02" * 20


def test_tables_keys_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "crawl.sqlite3"
    open_store(path).close()  # the directory is created
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in ("nodes", "infohashes")}
    assert cols["nodes"][:7] == ["id", "ip", "port", "first_seen", "last_seen", "version", "bep51"]
    assert cols["infohashes"][:4] == ["infohash", "first_seen", "last_seen", "reporters"]
    pk = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})") if r[5]] for t in ("nodes", "infohashes")}
    assert pk == {"nodes": ["id"], "infohashes": ["infohash"]}
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_node_upserts_merge(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    store.write([NodeRecord(A, ("10.0.0.1", 1), 10.0, 20.0, b"LT\x01\x02", True, 100.0, 60, 5)], [])
    store.write([NodeRecord(A, ("10.0.0.2", 2), 5.0, 15.0, None, None, 300.0, None, None)], [])
    (rec,) = store.load_nodes()
    assert rec == NodeRecord(A, ("10.0.0.2", 2), 5.0, 20.0, b"LT\x01\x02", True, 300.0, 60, 5)
    store.close()


def test_reporters_count_distinct_nodes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    store.write([], [InfohashReport(H1, 1.0, A), InfohashReport(H1, 2.0, A), InfohashReport(H1, 3.0, B),
                     InfohashReport(H2, 4.0, None)])
    store.write([], [InfohashReport(H1, 9.0, B), InfohashReport(H1, 0.5, C), InfohashReport(H2, 5.0, None)])
    rows = sqlite3.connect(tmp_path / "c.db").execute(
        "SELECT infohash, first_seen, last_seen, reporters, queried FROM infohashes ORDER BY infohash").fetchall()
    assert rows == [(H1, 0.5, 9.0, 3, 0), (H2, 4.0, 5.0, 0, 2)]
    assert store.counts() == StoreCounts(nodes=0, bep51_nodes=0, infohashes=2)
    store.close()


def test_a_failed_batch_keeps_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    with pytest.raises(StoreError, match="cannot write"):
        store.write([NodeRecord(b"short", ("10.0.0.1", 1), 1.0, 1.0)], [InfohashReport(H1, 1.0, A)])
    assert store.counts() == StoreCounts(0, 0, 0)
    store.close()


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = open_store(f"sqlite:{path}")
    store.write([NodeRecord(A, ("10.0.0.1", 1), 1.0, 2.0, None, False, 50.0)], [InfohashReport(H1, 1.0, A)])
    store.close()
    again = open_store(str(path))
    assert again.counts() == StoreCounts(1, 0, 1)
    assert [r.bep51 for r in again.load_nodes()] == [False]
    again.close()


def test_unusable_databases_raise_store_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="junk"):
        open_store(junk)
    with pytest.raises(StoreError):
        open_store(tmp_path / "file" / "below" / "x.db") if (tmp_path / "file").write_text("x") else None
    with pytest.raises(StoreError, match="postgresql"):
        open_store("postgresql://localhost/crawl")
    with pytest.raises(StoreError, match="needs a path"):
        open_store("sqlite:")
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute("CREATE TABLE schema_version (version INTEGER)")
    db.execute("INSERT INTO schema_version VALUES (99)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(newer)


def test_default_path_is_in_the_user_data_dir() -> None:
    path = default_db_path()
    assert path.name == "crawl.sqlite3" and path.parent.name == "mainline-dht"
