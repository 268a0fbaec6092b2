"""The crawl store on a PostgreSQL server, shared by a fleet of crawlers.

Owns: the SQL of the crawl tables on PostgreSQL (the same ``nodes``,
``infohashes`` and ``infohash_reports`` as :mod:`.sqlite_store`), their schema
versions and upgrades, and the tables through which crawler processes share
the work without a coordinator of our own:

``partitions``
    the keyspace split into :data:`PARTITIONS` parts by the first byte of a
    node ID; each row says which worker holds it (``worker``) and until when
    (``lease_expires``, server time in Unix seconds). Workers take free or
    expired rows with ``SELECT ... FOR UPDATE SKIP LOCKED``.
``workers``
    one row per worker name: when it started, its last heartbeat, its address
    and counters, for ``mainline-dht crawl-status``.
``frontier``
    nodes a worker learned of in a partition it does not hold, for the holder
    to visit; the holder takes them out in batches.
``lease_log``
    every holding of a partition: ``since`` it was taken ``until`` it expires
    or was given back (server time), so that an operator (and our tests) can
    check that no partition was ever held by two workers at once.

Every write is one transaction, so a worker killed with ``kill -9`` loses only
the batch in flight; its leases expire and another worker takes them over.
Upserts merge: two workers that see the same node or infohash leave one row,
and ``reporters`` counts distinct (infohash, node) pairs across all workers.
Rows of one batch are written in key order, so that two workers' batches never
wait on each other in a cycle.

psycopg 3 is an optional dependency: ``pip install 'mainline-dht[postgres]'``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from .store import InfohashReport, NodeRecord, StoreCounts, StoreError, TorrentRecord

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "PARTITIONS",
    "POSTGRES_SCHEMA_VERSION",
    "FleetStatus",
    "Lease",
    "PostgresStore",
    "WorkerStatus",
    "partition_of",
]

#: Partitions of the keyspace: one per value of a node ID's first byte.
PARTITIONS: Final = 256
#: The schema version this code writes; older versions are upgraded on open.
POSTGRES_SCHEMA_VERSION: Final = 3
#: Frontier rows kept at most; the oldest are dropped beyond (bounds the table).
MAX_FRONTIER: Final = 1_000_000
#: Seconds a connection attempt may take.
CONNECT_TIMEOUT: Final = 10

#: Migrations, in order: ``_MIGRATIONS[v - 1]`` takes a database from version
#: ``v - 1`` to ``v``. Version 1 holds what a single crawler needs (the tables
#: of :mod:`.store`); version 2 adds what a fleet shares; version 3 the
#: ``torrents`` of ``crawl --metadata``.
_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE nodes (
        id BYTEA PRIMARY KEY CHECK (length(id) = 20),
        ip TEXT NOT NULL,
        port INTEGER NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        version BYTEA,
        bep51 BOOLEAN,
        next_visit DOUBLE PRECISION NOT NULL DEFAULT 0,
        sample_interval INTEGER,
        num INTEGER
    );
    CREATE TABLE infohashes (
        infohash BYTEA PRIMARY KEY CHECK (length(infohash) = 20),
        first_seen DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        reporters INTEGER NOT NULL DEFAULT 0,
        queried INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE infohash_reports (
        infohash BYTEA NOT NULL,
        node_id BYTEA NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (infohash, node_id)
    );
    """,
    """
    CREATE TABLE partitions (
        partition SMALLINT PRIMARY KEY CHECK (partition >= 0 AND partition < 256),
        worker TEXT,
        lease_expires DOUBLE PRECISION NOT NULL DEFAULT 0,
        takeovers INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO partitions (partition) SELECT generate_series(0, 255);
    CREATE TABLE workers (
        name TEXT PRIMARY KEY,
        address TEXT,
        started DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        queries BIGINT NOT NULL DEFAULT 0,
        nodes BIGINT NOT NULL DEFAULT 0,
        infohashes BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE frontier (
        id BYTEA PRIMARY KEY CHECK (length(id) = 20),
        partition SMALLINT NOT NULL,
        ip TEXT NOT NULL,
        port INTEGER NOT NULL,
        added DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX frontier_by_partition ON frontier (partition, added);
    CREATE TABLE lease_log (
        partition SMALLINT NOT NULL,
        worker TEXT NOT NULL,
        since DOUBLE PRECISION NOT NULL,
        until DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (partition, worker, since)
    );
    CREATE INDEX nodes_by_next_visit ON nodes (next_visit);
    """,
    """
    CREATE TABLE torrents (
        infohash BYTEA PRIMARY KEY CHECK (length(infohash) = 20),
        name TEXT NOT NULL,
        total_length BIGINT NOT NULL,
        file_count INTEGER NOT NULL,
        files JSONB NOT NULL,
        fetched_at DOUBLE PRECISION NOT NULL
    );
    """,
)

_NOW: Final = "extract(epoch from clock_timestamp())"


def partition_of(node_id: bytes) -> int:
    """The partition a node ID falls in: its first byte."""
    return node_id[0]


@dataclass(frozen=True, slots=True)
class Lease:
    """Partitions a worker holds after a lease call, and until when (server time)."""

    partitions: frozenset[int]
    expires: float


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One row of ``workers`` with the partitions it holds now."""

    name: str
    address: str | None
    started: float
    last_seen: float
    queries: int
    nodes: int
    infohashes: int
    partitions: int
    alive: bool


@dataclass(frozen=True, slots=True)
class FleetStatus:
    """What ``mainline-dht crawl-status`` prints."""

    now: float
    workers: list[WorkerStatus]
    leased: int
    expired: int
    free: int
    frontier: int
    counts: StoreCounts


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


class PostgresStore:
    """A :class:`~.store.CrawlStore` on PostgreSQL, with the fleet's leases.

    Args:
        url: a libpq connection URL (``postgresql://user@host/db``; a Unix
            socket with ``?host=/path``).

    Raises:
        StoreError: psycopg is not installed, the server cannot be reached, or
            the database holds a schema newer than this code knows.
    """

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "a PostgreSQL crawl database needs psycopg: pip install 'mainline-dht[postgres]'"
            ) from None
        self._psycopg = psycopg
        self.url = url
        self._lock = threading.Lock()  # one connection; calls may come from worker threads
        try:
            self._db: psycopg.Connection[Any] = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the crawl database {self.location}: {_first_line(exc)}") from None
        try:
            self.schema_version = self._upgrade()
        except psycopg.Error as exc:
            self._db.close()
            raise StoreError(f"cannot set up the crawl database {self.location}: {_first_line(exc)}") from None
        except StoreError:
            self._db.close()
            raise

    # --- schema --------------------------------------------------------------------

    def _upgrade(self, target: int = POSTGRES_SCHEMA_VERSION) -> int:
        """Create the tables or bring them to ``target``, under an advisory lock
        so that workers starting together do not race."""
        db = self._db
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(hashtext('mainline-dht crawl schema'))")
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else int(row[0])
            if version > len(_MIGRATIONS):
                raise StoreError(
                    f"the crawl database {self.location} has schema version {version}; "
                    f"this mainline-dht knows up to {len(_MIGRATIONS)}: upgrade mainline-dht"
                )
            for v in range(version + 1, target + 1):
                db.execute(_MIGRATIONS[v - 1])
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (%s)", (max(version, target),))
            elif target > version:
                db.execute("UPDATE schema_version SET version = %s", (target,))
        return max(version, target)

    # --- the CrawlStore interface -------------------------------------------------------

    @property
    def location(self) -> str:
        """The server URL, without a password."""
        return _redacted(self.url)

    def write(self, nodes: Sequence[NodeRecord], reports: Sequence[InfohashReport]) -> None:
        """Upsert a batch in one transaction (see :meth:`.store.CrawlStore.write`).

        Raises:
            StoreError: the write failed; nothing of the batch is kept.
        """
        if not nodes and not reports:
            return
        node_rows = _merge_nodes(nodes)
        hashes: dict[bytes, list[float]] = {}
        for r in reports:
            row = hashes.get(r.info_hash)
            passive = 1.0 if r.reporter is None else 0.0
            if row is None:
                hashes[r.info_hash] = [r.seen_at, r.seen_at, passive]
            else:
                row[0] = min(row[0], r.seen_at)
                row[1] = max(row[1], r.seen_at)
                row[2] += passive
        links: dict[tuple[bytes, bytes], float] = {}
        for r in reports:
            if r.reporter is not None:
                key = (r.info_hash, r.reporter)
                links[key] = min(links.get(key, math.inf), r.seen_at)
        hash_keys = sorted(hashes)
        link_keys = sorted(links)
        with self._lock, self._errors("write to"):
            db = self._db
            with db.transaction():
                if node_rows:
                    db.execute(_UPSERT_NODES, _columns(node_rows, 10))
                if hash_keys:
                    db.execute(
                        _UPSERT_INFOHASHES,
                        (hash_keys, [hashes[h][0] for h in hash_keys], [hashes[h][1] for h in hash_keys],
                         [int(hashes[h][2]) for h in hash_keys]),
                    )
                if link_keys:
                    db.execute(
                        _INSERT_REPORTS,
                        ([k[0] for k in link_keys], [k[1] for k in link_keys], [links[k] for k in link_keys]),
                    )

    def write_torrents(self, torrents: Sequence[TorrentRecord]) -> None:
        """Insert or replace rows of ``torrents`` in one transaction (see :meth:`.store.CrawlStore.write_torrents`).

        Raises:
            StoreError: the write failed; nothing of the batch is kept.
        """
        merged = {t.info_hash: t for t in torrents}  # one row per key: a command may not touch a row twice
        if not merged:
            return
        keys = sorted(merged)
        with self._lock, self._errors("write to"):
            self._db.execute(
                """INSERT INTO torrents (infohash, name, total_length, file_count, files, fetched_at)
                SELECT * FROM unnest(%s::bytea[], %s::text[], %s::bigint[], %s::int[], %s::jsonb[], %s::float8[])
                ON CONFLICT (infohash) DO UPDATE SET name = excluded.name, total_length = excluded.total_length,
                    file_count = excluded.file_count, files = excluded.files, fetched_at = excluded.fetched_at""",
                (keys, [merged[k].name for k in keys], [merged[k].total_length for k in keys],
                 [merged[k].file_count for k in keys],
                 [json.dumps([[path, length] for path, length in merged[k].files], ensure_ascii=False) for k in keys],
                 [merged[k].fetched_at for k in keys]),
            )

    def load_nodes(self, partitions: Iterable[int] | None = None) -> Iterator[NodeRecord]:
        """Stored nodes, to resume a crawl: all, or those in ``partitions``.

        Raises:
            StoreError: the read failed.
        """
        sql = f"SELECT {_NODE_COLUMNS} FROM nodes"
        params: tuple[Any, ...] = ()
        if partitions is not None:
            sql += " WHERE get_byte(id, 0) = ANY(%s)"
            params = (sorted(partitions),)
        with self._lock, self._errors("read"):
            rows = self._db.execute(sql, params).fetchall()
        for row in rows:
            yield _node_record(row)

    def counts(self) -> StoreCounts:
        """Row counts of ``nodes`` (and those with BEP 51) and ``infohashes``."""
        with self._lock, self._errors("read"):
            db = self._db
            row = db.execute("SELECT count(*), count(*) FILTER (WHERE bep51) FROM nodes").fetchone()
            hashes = db.execute("SELECT count(*) FROM infohashes").fetchone()
        assert row is not None and hashes is not None
        return StoreCounts(int(row[0]), int(row[1]), int(hashes[0]))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # --- the fleet ------------------------------------------------------------------

    def server_time(self) -> float:
        """The server's clock (Unix seconds): leases are judged by it alone, so
        workers on machines whose clocks disagree still agree on expiry."""
        with self._lock, self._errors("read"):
            row = self._db.execute(f"SELECT {_NOW}").fetchone()
        assert row is not None
        return float(row[0])

    def heartbeat(self, name: str, *, address: str | None = None, queries: int = 0, nodes: int = 0,
                  infohashes: int = 0) -> None:
        """Register worker ``name`` or record that it is alive, with its counters."""
        with self._lock, self._errors("write to"):
            self._db.execute(
                f"""INSERT INTO workers (name, address, started, last_seen, queries, nodes, infohashes)
                VALUES (%s, %s, {_NOW}, {_NOW}, %s, %s, %s)
                ON CONFLICT (name) DO UPDATE SET address = coalesce(excluded.address, workers.address),
                    last_seen = excluded.last_seen, queries = excluded.queries, nodes = excluded.nodes,
                    infohashes = excluded.infohashes""",
                (name, address, queries, nodes, infohashes),
            )

    def lease(self, name: str, *, ttl: float, live_within: float) -> Lease:
        """Renew ``name``'s partitions and take its fair share of the free ones.

        A worker's fair share is the partitions divided by the workers whose
        heartbeat is younger than ``live_within`` seconds (rounded up). It keeps
        what it holds up to that share, releases the excess (so a newcomer finds
        free partitions), and takes free or expired partitions with
        ``FOR UPDATE SKIP LOCKED`` until it holds its share. A partition whose
        lease ran out is free: its former holder must have stopped crawling it
        by then (it renews well before ``ttl`` or stops, see :meth:`held`).

        Args:
            name: the worker.
            ttl: seconds the lease lasts from now (server time).
            live_within: heartbeat age that counts a worker as alive.

        Returns:
            What the worker holds now.
        """
        with self._lock, self._errors("write to"):
            db = self._db
            with db.transaction():
                now_row = db.execute(f"SELECT {_NOW}").fetchone()
                assert now_row is not None
                now = float(now_row[0])
                live = db.execute(
                    "SELECT count(*) FROM workers WHERE last_seen >= %s OR name = %s", (now - live_within, name)
                ).fetchone()
                assert live is not None
                share = math.ceil(PARTITIONS / max(1, int(live[0])))
                held = [
                    int(r[0])
                    for r in db.execute(
                        "SELECT partition FROM partitions WHERE worker = %s AND lease_expires > %s "
                        "ORDER BY partition FOR UPDATE",
                        (name, now),
                    ).fetchall()
                ]
                if len(held) > share:
                    excess = held[share:]
                    held = held[:share]
                    db.execute(
                        "UPDATE partitions SET worker = NULL, lease_expires = 0 WHERE partition = ANY(%s)", (excess,)
                    )
                    db.execute(_CLOSE_LOG, (now, name, excess, now))
                expires = now + ttl
                if held:
                    db.execute(
                        "UPDATE partitions SET lease_expires = %s WHERE partition = ANY(%s)", (expires, held)
                    )
                    db.execute(_CLOSE_LOG, (expires, name, held, now))
                if len(held) < share:
                    taken = db.execute(
                        """WITH free AS (
                            SELECT partition FROM partitions
                            WHERE worker IS NULL OR lease_expires <= %(now)s
                            ORDER BY (worker IS NOT NULL), partition
                            LIMIT %(want)s FOR UPDATE SKIP LOCKED)
                        UPDATE partitions p SET
                            takeovers = p.takeovers + (p.worker IS NOT NULL AND p.worker <> %(name)s)::int,
                            worker = %(name)s, lease_expires = %(expires)s
                        FROM free WHERE p.partition = free.partition
                        RETURNING p.partition""",
                        {"now": now, "want": share - len(held), "name": name, "expires": expires},
                    ).fetchall()
                    new = [int(r[0]) for r in taken]
                    if new:
                        db.execute(
                            "INSERT INTO lease_log (partition, worker, since, until) "
                            "SELECT p, %s, %s, %s FROM unnest(%s::smallint[]) AS p",
                            (name, now, expires, new),
                        )
                    held += new
        return Lease(frozenset(held), expires)

    def release(self, name: str) -> None:
        """Give up every partition ``name`` holds (a clean shutdown)."""
        with self._lock, self._errors("write to"):
            db = self._db
            with db.transaction():
                now_row = db.execute(f"SELECT {_NOW}").fetchone()
                assert now_row is not None
                now = float(now_row[0])
                released = [
                    int(r[0])
                    for r in db.execute(
                        "UPDATE partitions SET worker = NULL, lease_expires = 0 WHERE worker = %s RETURNING partition",
                        (name,),
                    ).fetchall()
                ]
                db.execute(_CLOSE_LOG, (now, name, released, now))

    def add_frontier(self, contacts: Iterable[tuple[bytes, tuple[str, int]]]) -> int:
        """Record nodes for the holders of their partitions to visit; known nodes are skipped.

        Returns:
            How many were new to the frontier.
        """
        rows = {node_id: addr for node_id, addr in contacts if len(node_id) == 20}
        if not rows:
            return 0
        keys = sorted(rows)
        with self._lock, self._errors("write to"):
            cur = self._db.execute(
                f"""INSERT INTO frontier (id, partition, ip, port, added)
                SELECT f.id, get_byte(f.id, 0), f.ip, f.port, {_NOW}
                FROM unnest(%s::bytea[], %s::text[], %s::int[]) AS f(id, ip, port)
                WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = f.id)
                ON CONFLICT (id) DO NOTHING""",
                (keys, [rows[k][0] for k in keys], [rows[k][1] for k in keys]),
            )
            added = cur.rowcount
            count = self._db.execute("SELECT count(*) FROM frontier").fetchone()
            assert count is not None
            if int(count[0]) > MAX_FRONTIER:
                self._db.execute(
                    "DELETE FROM frontier WHERE id IN (SELECT id FROM frontier ORDER BY added LIMIT %s)",
                    (int(count[0]) - MAX_FRONTIER,),
                )
        return max(0, added)

    def take_frontier(self, partitions: Iterable[int], limit: int = 10_000) -> list[tuple[bytes, tuple[str, int]]]:
        """Remove and return up to ``limit`` frontier nodes of ``partitions``, oldest first."""
        wanted = sorted(partitions)
        if not wanted:
            return []
        with self._lock, self._errors("write to"):
            rows = self._db.execute(
                """DELETE FROM frontier WHERE id IN (
                    SELECT id FROM frontier WHERE partition = ANY(%s) ORDER BY added LIMIT %s
                    FOR UPDATE SKIP LOCKED)
                RETURNING id, ip, port""",
                (wanted, limit),
            ).fetchall()
        return [(bytes(r[0]), (str(r[1]), int(r[2]))) for r in rows]

    def status(self, *, live_within: float) -> FleetStatus:
        """The fleet at a glance: workers, leases, frontier, row counts."""
        counts = self.counts()
        with self._lock, self._errors("read"):
            db = self._db
            now_row = db.execute(f"SELECT {_NOW}").fetchone()
            assert now_row is not None
            now = float(now_row[0])
            held = dict(
                (str(w), int(n))
                for w, n in db.execute(
                    "SELECT worker, count(*) FROM partitions WHERE worker IS NOT NULL AND lease_expires > %s "
                    "GROUP BY worker",
                    (now,),
                ).fetchall()
            )
            workers = [
                WorkerStatus(str(r[0]), r[1], float(r[2]), float(r[3]), int(r[4]), int(r[5]), int(r[6]),
                             held.get(str(r[0]), 0), float(r[3]) >= now - live_within)
                for r in db.execute(
                    "SELECT name, address, started, last_seen, queries, nodes, infohashes FROM workers ORDER BY name"
                ).fetchall()
            ]
            row = db.execute(
                "SELECT count(*) FILTER (WHERE worker IS NOT NULL AND lease_expires > %s), "
                "count(*) FILTER (WHERE worker IS NOT NULL AND lease_expires <= %s), "
                "count(*) FILTER (WHERE worker IS NULL) FROM partitions",
                (now, now),
            ).fetchone()
            frontier = db.execute("SELECT count(*) FROM frontier").fetchone()
        assert row is not None and frontier is not None
        return FleetStatus(now, workers, int(row[0]), int(row[1]), int(row[2]), int(frontier[0]), counts)

    # --- helpers --------------------------------------------------------------------

    def _errors(self, verb: str) -> _ErrorsAsStoreError:
        return _ErrorsAsStoreError(self, verb)


class _ErrorsAsStoreError:
    """``with`` block that turns psycopg errors into :class:`StoreError`."""

    def __init__(self, store: PostgresStore, verb: str) -> None:
        self.store = store
        self.verb = verb

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and isinstance(exc, self.store._psycopg.Error):
            raise StoreError(
                f"cannot {self.verb} the crawl database {self.store.location}: {_first_line(exc)}"
            ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Set ``until`` of a worker's current holdings of some partitions (those not over
# before ``now``): renewals move it on, releases bring it back to now.
_CLOSE_LOG: Final = """
UPDATE lease_log SET until = %s
WHERE worker = %s AND partition = ANY(%s::smallint[]) AND until > %s
"""

_NODE_COLUMNS: Final = "id, ip, port, first_seen, last_seen, version, bep51, next_visit, sample_interval, num"

_UPSERT_NODES: Final = f"""
INSERT INTO nodes ({_NODE_COLUMNS})
SELECT * FROM unnest(%s::bytea[], %s::text[], %s::int[], %s::float8[], %s::float8[], %s::bytea[], %s::bool[],
                     %s::float8[], %s::int[], %s::int[])
ON CONFLICT (id) DO UPDATE SET
    ip = excluded.ip,
    port = excluded.port,
    first_seen = least(nodes.first_seen, excluded.first_seen),
    last_seen = greatest(nodes.last_seen, excluded.last_seen),
    version = coalesce(excluded.version, nodes.version),
    bep51 = coalesce(excluded.bep51, nodes.bep51),
    next_visit = excluded.next_visit,
    sample_interval = coalesce(excluded.sample_interval, nodes.sample_interval),
    num = coalesce(excluded.num, nodes.num)
"""

_UPSERT_INFOHASHES: Final = """
INSERT INTO infohashes (infohash, first_seen, last_seen, queried)
SELECT * FROM unnest(%s::bytea[], %s::float8[], %s::float8[], %s::int[])
ON CONFLICT (infohash) DO UPDATE SET
    first_seen = least(infohashes.first_seen, excluded.first_seen),
    last_seen = greatest(infohashes.last_seen, excluded.last_seen),
    queried = infohashes.queried + excluded.queried
"""

# A pair another worker (or an earlier batch) inserted already is skipped by
# ON CONFLICT DO NOTHING and so not counted again: ``reporters`` stays exact.
_INSERT_REPORTS: Final = """
WITH added AS (
    INSERT INTO infohash_reports (infohash, node_id, first_seen)
    SELECT * FROM unnest(%s::bytea[], %s::bytea[], %s::float8[])
    ON CONFLICT DO NOTHING
    RETURNING infohash)
UPDATE infohashes i SET reporters = i.reporters + a.n
FROM (SELECT infohash, count(*) AS n FROM added GROUP BY infohash) a
WHERE i.infohash = a.infohash
"""


def _merge_nodes(nodes: Sequence[NodeRecord]) -> list[tuple[Any, ...]]:
    """One row per node ID, in key order (a command may not touch a row twice)."""
    merged: dict[bytes, NodeRecord] = {}
    for n in nodes:
        old = merged.get(n.node_id)
        if old is None:
            merged[n.node_id] = n
            continue
        merged[n.node_id] = NodeRecord(
            n.node_id, n.addr, min(old.first_seen, n.first_seen), max(old.last_seen, n.last_seen),
            n.version if n.version is not None else old.version,
            n.bep51 if n.bep51 is not None else old.bep51,
            n.next_visit,
            n.sample_interval if n.sample_interval is not None else old.sample_interval,
            n.num if n.num is not None else old.num,
        )
    return [
        (n.node_id, n.addr[0], n.addr[1], n.first_seen, n.last_seen, n.version, n.bep51, n.next_visit,
         n.sample_interval, n.num)
        for _, n in sorted(merged.items())
    ]


def _columns(rows: list[tuple[Any, ...]], width: int) -> tuple[list[Any], ...]:
    return tuple([row[i] for row in rows] for i in range(width))


def _node_record(row: Sequence[Any]) -> NodeRecord:
    node_id, ip, port, first, last, version, bep51, next_visit, interval, num = row
    return NodeRecord(
        bytes(node_id), (str(ip), int(port)), float(first), float(last),
        None if version is None else bytes(version), bep51, float(next_visit), interval, num,
    )
