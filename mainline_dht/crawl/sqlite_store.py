"""The default crawl store: one SQLite file (stdlib ``sqlite3``), in WAL mode.

Owns the SQL of the tables described in :mod:`.store`. WAL lets operators read
the file (``sqlite3 crawl.sqlite3 'select count(*) from nodes'``) while a crawl
writes to it; each :meth:`SQLiteStore.write` is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from .store import SCHEMA_VERSION, InfohashReport, NodeRecord, StoreCounts, StoreError, TorrentRecord

__all__ = ["SQLiteStore"]

#: Milliseconds to wait for another process's write lock before failing.
BUSY_TIMEOUT_MS: Final = 10_000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id BLOB PRIMARY KEY CHECK (length(id) = 20),
    ip TEXT NOT NULL,
    port INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    version BLOB,
    bep51 INTEGER,
    next_visit REAL NOT NULL DEFAULT 0,
    sample_interval INTEGER,
    num INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS infohashes (
    infohash BLOB PRIMARY KEY CHECK (length(infohash) = 20),
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    reporters INTEGER NOT NULL DEFAULT 0,
    queried INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS infohash_reports (
    infohash BLOB NOT NULL,
    node_id BLOB NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (infohash, node_id)
) WITHOUT ROWID;
-- reporters counts distinct (infohash, node) pairs: a pair already present is not
-- inserted again (ON CONFLICT DO NOTHING), so the trigger does not fire for it.
CREATE TABLE IF NOT EXISTS torrents (
    infohash BLOB PRIMARY KEY CHECK (length(infohash) = 20),
    name TEXT NOT NULL,
    total_length INTEGER NOT NULL,
    file_count INTEGER NOT NULL,
    files TEXT NOT NULL,
    fetched_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS infohash_reports_count AFTER INSERT ON infohash_reports
BEGIN
    UPDATE infohashes SET reporters = reporters + 1 WHERE infohash = NEW.infohash;
END;
"""

_UPSERT_NODE: Final = """
INSERT INTO nodes (id, ip, port, first_seen, last_seen, version, bep51, next_visit, sample_interval, num)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    ip = excluded.ip,
    port = excluded.port,
    first_seen = min(nodes.first_seen, excluded.first_seen),
    last_seen = max(nodes.last_seen, excluded.last_seen),
    version = coalesce(excluded.version, nodes.version),
    bep51 = coalesce(excluded.bep51, nodes.bep51),
    next_visit = excluded.next_visit,
    sample_interval = coalesce(excluded.sample_interval, nodes.sample_interval),
    num = coalesce(excluded.num, nodes.num)
"""

_UPSERT_INFOHASH: Final = """
INSERT INTO infohashes (infohash, first_seen, last_seen, queried) VALUES (?, ?, ?, ?)
ON CONFLICT (infohash) DO UPDATE SET
    first_seen = min(infohashes.first_seen, excluded.first_seen),
    last_seen = max(infohashes.last_seen, excluded.last_seen),
    queried = infohashes.queried + excluded.queried
"""

_INSERT_REPORT: Final = """
INSERT INTO infohash_reports (infohash, node_id, first_seen) VALUES (?, ?, ?)
ON CONFLICT DO NOTHING
"""


class SQLiteStore:
    """A :class:`~.store.CrawlStore` in one SQLite file.

    Args:
        path: the database file; created (with its directory) if missing.

    Raises:
        StoreError: the file cannot be created or opened, is not a database, or
            holds a schema version this code does not know.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # the crawler serialises calls; this makes it a rule
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: the crawler writes from a worker thread, one call at a time.
            self._db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                                       isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the crawl database {path}: {exc}") from None
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot use {path} as a crawl database: {exc}") from None

    def _setup(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(self.path) != ":memory:" and (mode is None or str(mode[0]).lower() != "wal"):
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (journal mode {mode})")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
        found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
        if found is not None:
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is not None and row[0] != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {row[0]}; this mainline-dht knows version {SCHEMA_VERSION}"
                )
        db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @property
    def location(self) -> str:
        """The database file's path."""
        return str(self.path)

    def write(self, nodes: Sequence[NodeRecord], reports: Sequence[InfohashReport]) -> None:
        """Upsert a batch in one transaction (see :meth:`.store.CrawlStore.write`).

        Raises:
            StoreError: the write failed; nothing of the batch is kept.
        """
        if not nodes and not reports:
            return
        node_rows = [
            (n.node_id, n.addr[0], n.addr[1], n.first_seen, n.last_seen, n.version,
             None if n.bep51 is None else int(n.bep51), n.next_visit, n.sample_interval, n.num)
            for n in nodes
        ]
        # One row per infohash: the batch's first and last sighting, its passive count.
        merged: dict[bytes, list[float]] = {}
        for r in reports:
            row = merged.get(r.info_hash)
            passive = 1.0 if r.reporter is None else 0.0
            if row is None:
                merged[r.info_hash] = [r.seen_at, r.seen_at, passive]
            else:
                row[0] = min(row[0], r.seen_at)
                row[1] = max(row[1], r.seen_at)
                row[2] += passive
        hash_rows = [(h, first, last, int(q)) for h, (first, last, q) in merged.items()]
        link_rows = [(r.info_hash, r.reporter, r.seen_at) for r in reports if r.reporter is not None]
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(_UPSERT_NODE, node_rows)
                    db.executemany(_UPSERT_INFOHASH, hash_rows)
                    db.executemany(_INSERT_REPORT, link_rows)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write to the crawl database {self.path}: {exc}") from None

    def write_torrents(self, torrents: Sequence[TorrentRecord]) -> None:
        """Insert or replace ``torrents`` rows in one transaction (see :meth:`.store.CrawlStore.write_torrents`).

        Raises:
            StoreError: the write failed; nothing of the batch is kept.
        """
        if not torrents:
            return
        rows = [
            (t.info_hash, t.name, t.total_length, t.file_count,
             json.dumps([[path, length] for path, length in t.files], ensure_ascii=False), t.fetched_at)
            for t in torrents
        ]
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(
                        "INSERT OR REPLACE INTO torrents (infohash, name, total_length, file_count, files, fetched_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", rows)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write to the crawl database {self.path}: {exc}") from None

    def load_nodes(self) -> Iterator[NodeRecord]:
        """Every stored node (see :meth:`.store.CrawlStore.load_nodes`)."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, ip, port, first_seen, last_seen, version, bep51, next_visit, sample_interval, num "
                    "FROM nodes"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the crawl database {self.path}: {exc}") from None
        for node_id, ip, port, first, last, version, bep51, next_visit, interval, num in rows:
            yield NodeRecord(
                bytes(node_id), (str(ip), int(port)), float(first), float(last),
                None if version is None else bytes(version),
                None if bep51 is None else bool(bep51),
                float(next_visit), interval, num,
            )

    def counts(self) -> StoreCounts:
        """Row counts of ``nodes`` (and those with BEP 51) and ``infohashes``."""
        with self._lock:
            try:
                db = self._db
                nodes, bep51 = db.execute("SELECT count(*), coalesce(sum(bep51 = 1), 0) FROM nodes").fetchone()
                infohashes = db.execute("SELECT count(*) FROM infohashes").fetchone()[0]
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the crawl database {self.path}: {exc}") from None
        return StoreCounts(int(nodes), int(bep51), int(infohashes))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
