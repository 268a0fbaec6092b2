"""Where a crawl keeps what it found: the storage interface and the choice of backend.

Owns: :class:`CrawlStore` (the interface every backend implements), the records
it takes and gives (:class:`NodeRecord`, :class:`InfohashReport`,
:class:`StoreCounts`), :class:`StoreError`, and :func:`open_store`, which turns a
``--db`` string into a store. The crawler knows only this module; SQLite lives in
:mod:`.sqlite_store` and a server database can be added beside it by registering
its URL scheme in :data:`STORE_OPENERS`, without touching the crawler.

The tables every backend keeps (operators query them, so names and keys are fixed):

``nodes``
    ``id`` (20 bytes, the key), ``ip``, ``port``, ``first_seen``, ``last_seen``
    (Unix seconds of the first and latest answer), ``version`` (the ``v`` field,
    bytes or NULL), ``bep51`` (1 supports ``sample_infohashes``, 0 does not, NULL
    unknown), ``next_visit`` (Unix seconds before which the crawler does not ask
    it again: BEP 51 ``interval``), ``sample_interval`` (its last ``interval``),
    ``num`` (its last ``num``: infohashes it stores).
``infohashes``
    ``infohash`` (20 bytes, the key), ``first_seen``, ``last_seen``,
    ``reporters`` (how many distinct nodes sampled it to us), ``queried`` (how
    many ``get_peers``/``announce_peer`` queries for it our node received).
``infohash_reports``
    ``(infohash, node_id)`` pairs, the key: which node reported which infohash,
    so that ``reporters`` counts distinct nodes exactly.
``torrents``
    ``infohash`` (20 bytes, the key), ``name``, ``total_length`` (bytes),
    ``file_count``, ``files`` (JSON: a list of ``[path, length]``, the path's
    components joined with ``/``), ``fetched_at`` (Unix seconds): the metadata
    ``crawl --metadata`` fetched from the infohash's peers (BEP 9). A torrent
    fetched again replaces its row. Added without a version change: older
    databases gain the table when opened.
``schema_version``
    one row: the schema's version number.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from ..errors import DHTError
from ..wire.contact import Address

__all__ = [
    "CrawlStore",
    "InfohashReport",
    "NodeRecord",
    "StoreCounts",
    "TorrentRecord",
    "StoreError",
    "STORE_OPENERS",
    "SCHEMA_VERSION",
    "default_db_path",
    "open_store",
]

#: The version of the tables described in the module docstring.
SCHEMA_VERSION: Final = 1


class StoreError(DHTError):
    """The crawl database cannot be opened, read or written; the message says which and why."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One row of ``nodes``: a node that answered the crawler.

    Times are Unix seconds (wall clock).

    Attributes:
        node_id: its 20-byte ID.
        addr: its (IP, port).
        first_seen: when it first answered us.
        last_seen: when it last answered us.
        version: its ``v`` field, if it sent one.
        bep51: whether it answers ``sample_infohashes`` (``None``: not asked yet).
        next_visit: do not ask it again before this time.
        sample_interval: the BEP 51 ``interval`` it last gave (seconds).
        num: the BEP 51 ``num`` it last gave.
    """

    node_id: bytes
    addr: Address
    first_seen: float
    last_seen: float
    version: bytes | None = None
    bep51: bool | None = None
    next_visit: float = 0.0
    sample_interval: int | None = None
    num: int | None = None


@dataclass(frozen=True, slots=True)
class InfohashReport:
    """One sighting of an infohash.

    Attributes:
        info_hash: the 20-byte infohash.
        seen_at: Unix seconds.
        reporter: the ID of the node whose ``sample_infohashes`` reply held it;
            ``None`` when our node learned it from a query it received.
    """

    info_hash: bytes
    seen_at: float
    reporter: bytes | None


@dataclass(frozen=True, slots=True)
class TorrentRecord:
    """One row of ``torrents``: a torrent's metadata, fetched from its peers.

    Attributes:
        info_hash: the 20-byte infohash.
        name: the torrent's name.
        total_length: bytes of all its files.
        files: ``(path, length)`` of each file, path components joined with ``/``.
        fetched_at: Unix seconds.
    """

    info_hash: bytes
    name: str
    total_length: int
    files: tuple[tuple[str, int], ...]
    fetched_at: float

    @property
    def file_count(self) -> int:
        """How many files."""
        return len(self.files)


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What a store holds in all (over every run)."""

    nodes: int
    bep51_nodes: int
    infohashes: int


class CrawlStore(Protocol):
    """The storage a crawl writes to. Backends: :class:`~.sqlite_store.SQLiteStore`, :class:`~.postgres_store.PostgresStore`.

    Calls come from one task at a time (the crawler serialises them), possibly
    from a worker thread; a backend may block. Writes arrive in batches: one
    :meth:`write` is one transaction, so a crash loses at most the batch in
    progress.
    """

    @property
    def location(self) -> str:
        """Where the data lives, for messages (a path or a URL without password)."""
        ...

    def write(self, nodes: Sequence[NodeRecord], reports: Sequence[InfohashReport]) -> None:
        """Upsert a batch in one transaction.

        Nodes: a new ID is inserted; a known one keeps the earliest
        ``first_seen`` and the latest ``last_seen``, and takes the other fields
        from the record (``version`` and ``bep51`` only when not ``None``).
        Infohashes: inserted or their ``last_seen`` moved on; a report with a
        reporter adds the (infohash, reporter) pair once, and ``reporters``
        counts the distinct pairs; a report without one adds 1 to ``queried``.

        Raises:
            StoreError: the write failed (nothing of the batch is kept).
        """
        ...

    def write_torrents(self, torrents: Sequence[TorrentRecord]) -> None:
        """Insert or replace rows of ``torrents``, in one transaction.

        May be called from another task than :meth:`write` (the metadata
        fetches run beside the crawl), so a backend serialises the two.

        Raises:
            StoreError: the write failed (nothing of the batch is kept).
        """
        ...

    def load_nodes(self) -> Iterator[NodeRecord]:
        """Every stored node, to resume a crawl (order unspecified).

        Raises:
            StoreError: the read failed.
        """
        ...

    def counts(self) -> StoreCounts:
        """Row counts over every run."""
        ...

    def close(self) -> None:
        """Release the database; further calls are errors."""
        ...


def default_db_path() -> Path:
    """The default crawl database: ``<user data dir>/mainline-dht/crawl.sqlite3``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mainline-dht", appauthor=False)) / "crawl.sqlite3"


def _open_sqlite(location: str) -> CrawlStore:
    from .sqlite_store import SQLiteStore

    return SQLiteStore(location)


def _open_postgres(location: str) -> CrawlStore:
    from .postgres_store import PostgresStore

    return PostgresStore(location)


#: URL scheme -> a function that opens a store from the rest of the ``--db`` string.
#: A server backend registers its scheme here (e.g. ``"postgresql"``).
STORE_OPENERS: dict[str, Callable[[str], CrawlStore]] = {"sqlite": _open_sqlite, "postgresql": _open_postgres, "postgres": _open_postgres}


def open_store(db: str | os.PathLike[str] | None = None) -> CrawlStore:
    """Open the store a ``--db`` string names.

    Args:
        db: ``sqlite:PATH``, a plain path (SQLite), ``SCHEME://...`` for a
            registered backend, or ``None`` for :func:`default_db_path`.

    Raises:
        StoreError: unknown scheme, or the database cannot be opened or created.
    """
    if db is None:
        return _open_sqlite(str(default_db_path()))
    text = os.fspath(db)
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() == "sqlite":
        path = rest[2:] if rest.startswith("//") else rest  # sqlite:PATH or sqlite://PATH
        if not path:
            raise StoreError("sqlite: needs a path, as in sqlite:crawl.sqlite3")
        return _open_sqlite(path)
    if sep and rest.startswith("//") and scheme.isalnum():
        opener = STORE_OPENERS.get(scheme.lower())
        if opener is None:
            known = ", ".join(f"{s}:PATH" if s == "sqlite" else f"{s}://..." for s in STORE_OPENERS)
            raise StoreError(f"no crawl database backend for {scheme}:// (known: {known}, or a plain path)")
        return opener(text)
    return _open_sqlite(text)
