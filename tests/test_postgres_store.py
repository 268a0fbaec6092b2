"""The PostgreSQL crawl store against a real, throwaway PostgreSQL server.

The server comes from ``tools/postgres_server.py`` (initdb + pg_ctl on a Unix
socket, as the ``postgres`` user when we are root). These tests run in CI and
fail, never skip, when the server binaries or psycopg are missing.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from postgres_server import PostgresServer

from mainline_dht.crawl.postgres_store import (
    PARTITIONS,
    POSTGRES_SCHEMA_VERSION,
    PostgresStore,
    partition_of,
)
from mainline_dht.crawl.sqlite_store import SQLiteStore
from mainline_dht.crawl.store import InfohashReport, NodeRecord, StoreError, TorrentRecord, open_store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database for each test."""
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:50]
    return postgres.url(name)


@pytest.fixture
def store(db_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(db_url)
    yield s
    s.close()


def _node(i: int, *, seen: float = 1000.0, **fields: object) -> NodeRecord:
    node_id = i.to_bytes(2, "big") * 10
    return NodeRecord(node_id, (f"127.0.{i // 250}.{i % 250 + 1}", 6881), seen, seen, **fields)  # type: ignore[arg-type]


def test_schema_created_with_its_version(store: PostgresStore, db_url: str) -> None:
    assert store.schema_version == POSTGRES_SCHEMA_VERSION
    with psycopg.connect(db_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        version = conn.execute("SELECT version FROM schema_version").fetchall()
        partitions = conn.execute("SELECT count(*) FROM partitions").fetchone()
    assert {"nodes", "infohashes", "infohash_reports", "schema_version", "partitions", "workers",
            "frontier", "lease_log", "torrents"} <= tables
    assert version == [(POSTGRES_SCHEMA_VERSION,)]
    assert partitions == (PARTITIONS,)


def test_opening_twice_changes_nothing(store: PostgresStore, db_url: str) -> None:
    store.write([_node(1)], [])
    again = PostgresStore(db_url)
    try:
        assert again.schema_version == POSTGRES_SCHEMA_VERSION
        assert again.counts().nodes == 1
    finally:
        again.close()


def test_version_1_database_is_upgraded_and_keeps_its_rows(db_url: str) -> None:
    # A database made by a single crawler of schema version 1 (no fleet tables).
    old = PostgresStore.__new__(PostgresStore)
    old._psycopg = psycopg
    old.url = db_url
    import threading

    old._lock = threading.Lock()
    old._db = psycopg.connect(db_url, autocommit=True)
    assert old._upgrade(target=1) == 1
    old.write([_node(7)], [InfohashReport(b"h" * 20, 5.0, _node(7).node_id)])
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('partitions')").fetchone() == (None,)
    old.close()

    new = PostgresStore(db_url)
    try:
        assert new.schema_version == POSTGRES_SCHEMA_VERSION
        counts = new.counts()
        assert (counts.nodes, counts.infohashes) == (1, 1)
        assert len(new.lease("w1", ttl=30, live_within=30).partitions) == PARTITIONS
    finally:
        new.close()


def test_newer_schema_is_refused_with_a_clear_message(db_url: str) -> None:
    PostgresStore(db_url).close()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99.*upgrade mainline-dht"):
        PostgresStore(db_url)


def test_unreachable_server_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        PostgresStore(f"postgresql://postgres@/nowhere?host={tmp_path}")


def test_open_store_picks_postgres_by_scheme(db_url: str) -> None:
    store = open_store(db_url)
    try:
        assert isinstance(store, PostgresStore)
        assert "postgresql://" in store.location
    finally:
        store.close()


def test_upserts_merge_and_count_distinct_reporters(store: PostgresStore) -> None:
    a, b = _node(1).node_id, _node(2).node_id
    h = b"\x01" * 20
    store.write([_node(1, seen=10.0, version=b"LT\x01\x02"), _node(1, seen=20.0, bep51=True)],
                [InfohashReport(h, 10.0, a), InfohashReport(h, 11.0, a)])
    store.write([_node(1, seen=5.0), _node(2, seen=30.0)],
                [InfohashReport(h, 30.0, b), InfohashReport(h, 31.0, a), InfohashReport(h, 40.0, None)])
    nodes = {n.node_id: n for n in store.load_nodes()}
    assert nodes[a].first_seen == 5.0 and nodes[a].last_seen == 20.0
    assert nodes[a].version == b"LT\x01\x02" and nodes[a].bep51 is True
    with psycopg.connect(store.url) as conn:
        row = conn.execute("SELECT first_seen, last_seen, reporters, queried FROM infohashes").fetchall()
    assert row == [(10.0, 40.0, 2, 1)]


def _write_batches(url: str, seed: int, rounds: int) -> None:
    """A worker process: overlapping nodes and reports, in several batches."""
    rng = random.Random(seed)
    store = PostgresStore(url)
    try:
        for _ in range(rounds):
            nodes = [_node(rng.randrange(300), seen=float(rng.randrange(1000))) for _ in range(40)]
            reports = [
                InfohashReport(bytes([rng.randrange(50)]) * 20, float(rng.randrange(1000)),
                               _node(rng.randrange(300)).node_id if rng.random() < 0.8 else None)
                for _ in range(60)
            ]
            store.write(nodes, reports)
    finally:
        store.close()


def _batches(seed: int, rounds: int) -> list[tuple[list[NodeRecord], list[InfohashReport]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(rounds):
        nodes = [_node(rng.randrange(300), seen=float(rng.randrange(1000))) for _ in range(40)]
        reports = [
            InfohashReport(bytes([rng.randrange(50)]) * 20, float(rng.randrange(1000)),
                           _node(rng.randrange(300)).node_id if rng.random() < 0.8 else None)
            for _ in range(60)
        ]
        out.append((nodes, reports))
    return out


def test_concurrent_upserts_from_processes_equal_one_sqlite_store(db_url: str, tmp_path: Path) -> None:
    PostgresStore(db_url).close()  # schema first, so the workers race only on rows
    ctx = multiprocessing.get_context("fork")  # a fresh interpreter per worker costs seconds
    procs = [ctx.Process(target=_write_batches, args=(db_url, seed, 15)) for seed in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reference = SQLiteStore(tmp_path / "one.sqlite3")
    for seed in range(4):
        for nodes, reports in _batches(seed, 15):
            reference.write(nodes, reports)
    with psycopg.connect(db_url) as conn:
        pg_hashes = conn.execute(
            "SELECT infohash, first_seen, last_seen, reporters, queried FROM infohashes ORDER BY infohash").fetchall()
        pg_nodes = conn.execute("SELECT id, first_seen, last_seen FROM nodes ORDER BY id").fetchall()
        dupes = conn.execute("SELECT count(*) - count(DISTINCT (infohash, node_id)) FROM infohash_reports").fetchone()
    sq_hashes = reference._db.execute(
        "SELECT infohash, first_seen, last_seen, reporters, queried FROM infohashes ORDER BY infohash").fetchall()
    sq_nodes = reference._db.execute("SELECT id, first_seen, last_seen FROM nodes ORDER BY id").fetchall()
    reference.close()
    assert dupes == (0,)
    assert [(bytes(h), *rest) for h, *rest in pg_hashes] == [(bytes(h), *rest) for h, *rest in sq_hashes]
    assert [(bytes(i), *rest) for i, *rest in pg_nodes] == [(bytes(i), *rest) for i, *rest in sq_nodes]


def test_leases_share_the_partitions_fairly(store: PostgresStore) -> None:
    store.heartbeat("a")
    first = store.lease("a", ttl=60, live_within=60)
    assert len(first.partitions) == PARTITIONS
    store.heartbeat("b")
    b = store.lease("b", ttl=60, live_within=60)
    assert b.partitions == frozenset()  # a holds all until it renews
    a = store.lease("a", ttl=60, live_within=60)  # renewing, a releases the excess
    assert len(a.partitions) == PARTITIONS // 2
    b = store.lease("b", ttl=60, live_within=60)
    assert len(b.partitions) == PARTITIONS // 2
    assert not a.partitions & b.partitions
    status = store.status(live_within=60)
    assert status.leased == PARTITIONS and status.free == 0
    assert {w.name: w.partitions for w in status.workers} == {"a": 128, "b": 128}


def test_expired_lease_is_taken_over(store: PostgresStore) -> None:
    store.heartbeat("a")
    held = store.lease("a", ttl=0.5, live_within=60).partitions
    time.sleep(0.6)
    store.heartbeat("b")
    b = store.lease("b", ttl=60, live_within=0.1)  # a is not alive: b's share is everything
    assert b.partitions == frozenset(range(PARTITIONS)) == held
    status = store.status(live_within=0.1)
    assert {w.name: (w.partitions, w.alive) for w in status.workers} == {"a": (0, False), "b": (256, True)}


def test_release_frees_everything(store: PostgresStore) -> None:
    store.lease("a", ttl=60, live_within=60)
    store.release("a")
    assert store.status(live_within=60).free == PARTITIONS


def test_frontier_goes_to_the_partition_holder(store: PostgresStore) -> None:
    known = _node(3)
    store.write([known], [])
    contacts = [(bytes([p]) + b"\x00" * 19, ("127.0.0.9", 1000 + p)) for p in (1, 2, 200)]
    assert store.add_frontier(contacts + [(known.node_id, known.addr)]) == 3  # known nodes skipped
    assert store.add_frontier(contacts) == 0
    taken = store.take_frontier({1, 200})
    assert sorted(partition_of(i) for i, _ in taken) == [1, 200]
    assert store.take_frontier({1, 200}) == []
    assert [partition_of(i) for i, _ in store.take_frontier(range(256))] == [2]


def test_committed_batches_survive_kill_9_and_leases_pass_on(db_url: str) -> None:
    """A worker killed with SIGKILL: what it committed stays; its leases expire and move on."""
    PostgresStore(db_url).close()
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path[:0] = {[str(REPO), str(REPO / 'tools')]!r}
        from mainline_dht.crawl.postgres_store import PostgresStore
        from mainline_dht.crawl.store import NodeRecord
        store = PostgresStore({db_url!r})
        store.heartbeat("doomed")
        store.lease("doomed", ttl=1.0, live_within=1.0)
        i = 0
        while True:
            i += 1
            store.write([NodeRecord(i.to_bytes(20, "big"), ("127.0.0.1", 1), 1.0, 1.0)], [])
            print(i, flush=True)
            time.sleep(0.005)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    committed = 0
    for line in proc.stdout:
        committed = int(line)
        if committed >= 50:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    store = PostgresStore(db_url)
    try:
        assert store.counts().nodes >= committed  # every write it reported done is there
        time.sleep(1.1)
        store.heartbeat("heir")
        lease = store.lease("heir", ttl=30, live_within=1.0)
        assert lease.partitions == frozenset(range(PARTITIONS))
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT sum(takeovers) FROM partitions").fetchone() == (PARTITIONS,)
    finally:
        store.close()


def test_torrents_are_upserted(store: PostgresStore) -> None:
    h = b"\x05" * 20
    store.write_torrents([TorrentRecord(h, "old", 1, (("a", 1),), 1.0)])
    store.write_torrents([TorrentRecord(h, "Ünïcode", 30, (("d/a", 10), ("d/b", 20)), 2.0),
                          TorrentRecord(h, "dup in one batch", 30, (("d/a", 10), ("d/b", 20)), 3.0)])
    with psycopg.connect(store.url) as conn:
        rows = conn.execute("SELECT name, total_length, file_count, files, fetched_at FROM torrents").fetchall()
    assert rows == [("dup in one batch", 30, 2, [["d/a", 10], ["d/b", 20]], 3.0)]
