"""libtorrent sessions that seed torrents on loopback, for metadata tests and benchmarks.

Owns: writing a few files, making a ``.torrent`` of them with libtorrent
(v1 only, hybrid v1+v2, or v2 only), starting a :class:`LibtorrentSwarm` whose
sessions also speak BitTorrent over TCP, and making chosen sessions seed a
torrent and announce it in the DHT.

Facts learned from libtorrent 2.1.1 that shape this module:

* ``create_torrent`` makes a hybrid (v1 + v2) torrent unless given
  ``create_torrent.v1_only`` or ``v2_only``; a hybrid's v1 file list carries
  BEP 47 padding files (``torrent_info.files().file_flags`` marks them).
* A hybrid torrent is announced in the DHT under both infohashes: the SHA-1 and
  the first 20 bytes of the SHA-256.
* Seeding starts after libtorrent has checked the files (a fraction of a second
  here); ``force_dht_announce`` then announces at once rather than waiting for
  the DHT's announce timer.

Synchronous, like :mod:`libtorrent_net`; loopback only, no trackers, no LSD,
UPnP or NAT-PMP (inherited from its settings), TCP peer connections allowed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from libtorrent_net import LibtorrentSwarm, import_libtorrent, start_swarm

__all__ = ["MadeTorrent", "make_torrent", "start_seed_swarm", "seed", "wait_announced", "PEER_SETTINGS"]

#: Settings on top of libtorrent_net's DHT-only ones: TCP peer connections on,
#: uTP off (we speak TCP), and several connections from one IP (every test
#: client is 127.0.0.1).
PEER_SETTINGS: dict[str, Any] = {
    "enable_outgoing_tcp": True,
    "enable_incoming_tcp": True,
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True,
}


@dataclasses.dataclass(frozen=True)
class MadeTorrent:
    """A torrent made by :func:`make_torrent`.

    Attributes:
        data: the ``.torrent`` bytes.
        info_hash: the 20-byte DHT infohash (SHA-1 for v1/hybrid, truncated SHA-256 for v2 only).
        sha256: the full v2 infohash, or ``None`` for v1-only torrents.
        name: the torrent's name (the top directory).
        files: ``(path, length)`` of every real file (no padding), sorted by path.
        save_path: the directory that holds the top directory (seeding ``save_path``).
    """

    data: bytes
    info_hash: bytes
    sha256: bytes | None
    name: str
    files: list[tuple[str, int]]
    save_path: Path

    @property
    def magnet_btmh(self) -> str:
        """A v2 magnet link (``xt=urn:btmh:1220...``) for this torrent."""
        assert self.sha256 is not None
        return f"magnet:?xt=urn:btmh:1220{self.sha256.hex()}"


def make_torrent(root: Path, name: str, files: dict[str, bytes], *, kind: str = "v1",
                 piece_size: int = 16384) -> MadeTorrent:
    """Write ``files`` under ``root/name`` and make a torrent of them.

    Args:
        root: the save path (created if missing).
        name: the torrent's name and top directory.
        files: relative path -> content.
        kind: ``"v1"``, ``"hybrid"`` or ``"v2"``.
        piece_size: bytes per piece (a power of two, at least 16 KiB).
    """
    lt = import_libtorrent()
    top = root / name
    for rel, content in files.items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    flags = {"v1": lt.create_torrent.v1_only, "hybrid": 0, "v2": lt.create_torrent.v2_only}[kind]
    entries = lt.list_files(str(top))
    ct = lt.create_torrent(entries, piece_size, flags)
    ct.set_creator("mainline-dht tests")
    lt.set_piece_hashes(ct, str(root))
    data = bytes(lt.bencode(ct.generate()))
    ti = lt.torrent_info(data)
    hashes = ti.info_hashes()
    sha256 = bytes.fromhex(str(hashes.v2)) if hashes.has_v2() else None
    info_hash = bytes.fromhex(str(hashes.v1)) if hashes.has_v1() else (sha256 or b"")[:20]
    listed = sorted((rel, len(content)) for rel, content in files.items())
    return MadeTorrent(data, info_hash, sha256, name, listed, root)


def start_seed_swarm(n: int, *, first_ip: str, **options: Any) -> LibtorrentSwarm:
    """:func:`libtorrent_net.start_swarm` with BitTorrent over TCP enabled (:data:`PEER_SETTINGS`)."""
    settings = dict(PEER_SETTINGS)
    settings.update(options.pop("settings", None) or {})
    return start_swarm(n, first_ip=first_ip, port=0, settings=settings, **options)


def seed(swarm: LibtorrentSwarm, i: int, torrent: MadeTorrent, *, timeout: float = 20.0) -> Any:
    """Make session ``i`` seed ``torrent`` and announce it in the DHT; return its handle.

    Raises:
        TimeoutError: the session did not reach the seeding state in time.
    """
    lt = import_libtorrent()
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent.data)
    atp.save_path = str(torrent.save_path)
    # neither queued nor paused: libtorrent pauses auto-managed torrents beyond active_seeds (5),
    # and a paused torrent does not announce; seed mode: the files were just written, skip the check
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    atp.flags |= lt.torrent_flags.seed_mode
    handle = swarm.session(i).add_torrent(atp)
    deadline = time.monotonic() + timeout
    while not handle.status().is_seeding:
        if time.monotonic() > deadline:
            raise TimeoutError(f"session {i} is not seeding {torrent.name} after {timeout} s: {handle.status().state}")
        time.sleep(0.02)
    handle.force_dht_announce()
    return handle


#: Seconds between repeated ``force_dht_announce`` calls while waiting: an
#: announce that found no node (a session still filling its table) is not
#: retried by libtorrent before its announce interval, many minutes away.
REANNOUNCE_INTERVAL = 1.0


def wait_announced(swarm: LibtorrentSwarm, asker: int, info_hash: bytes, count: int, *,
                   handles: Sequence[Any] = (), timeout: float = 30.0) -> list[Any]:
    """Wait until a DHT lookup from session ``asker`` finds ``count`` peers of ``info_hash``.

    Args:
        handles: the seeds' torrent handles, announced again every
            :data:`REANNOUNCE_INTERVAL` seconds while waiting.

    Raises:
        TimeoutError: fewer peers after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    announced = time.monotonic()
    while True:
        peers = swarm.get_peers(asker, info_hash, timeout=5.0).peers
        if len(peers) >= count:
            return peers
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(peers)} of {count} seeds of {info_hash.hex()} announced after {timeout} s")
        if time.monotonic() - announced > REANNOUNCE_INTERVAL:
            for h in handles:
                h.force_dht_announce()
            announced = time.monotonic()
        time.sleep(0.1)
