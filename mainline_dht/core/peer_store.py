"""The peer store: who announced which infohash to us (BEP 5 ``announce_peer``).

Owns: storing announced peers per infohash with expiry, the bounds that keep a
hostile announcer from exhausting memory or pushing others out, random samples
for ``get_peers`` replies, BEP 51 infohash samples, and how many peers fit one
reply.

One source cannot take over the store: each IP holds at most one entry per
infohash (a re-announce from another port replaces it) and entries for at most
``max_infohashes_per_ip`` infohashes (past that its own oldest goes). When the
store is full, a new infohash evicts the oldest infohash that has a single
peer (what an announcer makes up costs it one entry each; a real swarm has
many), and only when there is none the least recently announced one.

Pure: no I/O, no clock (time arrives as ``now`` in seconds), no global
randomness (samples draw from the ``rng`` given). Must not import trio, socket,
time, asyncio or os.

Every operation is O(1) amortised (``get`` and the samples are linear in what
they return): insertion-ordered maps keep peers per infohash in announce
order, infohashes in order of their latest announce, single-peer infohashes in
order of creation, each IP's infohashes, and all entries in announce order for
expiry. ``OrderedDict`` rather than ``dict`` because evicting from the
front of a plain dict leaves tombstones that the next ``next(iter(d))`` must
skip, which turns FIFO eviction quadratic.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Final

from ..wire.contact import Address

__all__ = [
    "DEFAULT_MAX_INFOHASHES",
    "DEFAULT_MAX_PEERS_PER_INFOHASH",
    "DEFAULT_MAX_PEERS",
    "DEFAULT_MAX_INFOHASHES_PER_IP",
    "DEFAULT_PEER_TTL",
    "DEFAULT_MAX_VALUES_PER_REPLY",
    "REPLY_BUDGET",
    "max_values_for",
    "PeerStore",
]

#: Infohashes stored at once (libtorrent's ``dht_max_torrents`` default: 2,000).
DEFAULT_MAX_INFOHASHES: Final = 2_000

#: Peers stored per infohash (libtorrent's ``dht_max_peers`` default: 500).
DEFAULT_MAX_PEERS_PER_INFOHASH: Final = 500

#: Peers stored in all (our own bound). The two limits above alone would allow a
#: million entries (~200 MB in Python); 100,000 is ~20 MB, far more than a node
#: sees from honest announcers (libtorrent's storage also caps the total).
DEFAULT_MAX_PEERS: Final = 100_000

#: Infohashes one IP may hold entries for. A node stores only the infohashes
#: closest to its ID, so even a seedbox with thousands of torrents lands a handful
#: on any one node; 50 leaves room for many users behind one NAT address, while
#: it takes 40 addresses to fill :data:`DEFAULT_MAX_INFOHASHES`.
DEFAULT_MAX_INFOHASHES_PER_IP: Final = 50

#: Seconds a peer is kept unless it announces again. Clients re-announce every
#: 15-30 minutes (libtorrent's ``dht_announce_interval`` is 900 s); 30 minutes
#: keeps a peer across one missed re-announce.
DEFAULT_PEER_TTL: Final = 30 * 60.0

#: Bytes we allow a reply datagram. Ethernet's 1,500-byte MTU minus 40 bytes of
#: IPv6 header and 8 of UDP header leaves 1,452; 1,400 leaves room for tunnels
#: (PPPoE, VPNs) so replies are never fragmented.
REPLY_BUDGET: Final = 1_400

# Worst-case bytes of a get_peers reply besides the ``values`` items (bencoded):
#   d...e outer dict                                   2
#   1:t + 16:<tid> (tids are 2-4 bytes; allow 16)     22
#   1:y1:r                                             6
#   1:v4:<ver>                                         9
#   2:ip18:<ipv6 + port> (BEP 42)                     25
#   1:r d...e                                          5
#   2:id20:<id>                                       27
#   5:token20:<token> (ours are 8 bytes; allow 20)    30
#   6:values l...e                                    10
#   5:nodes208:<8 x 26> (libtorrent adds nodes too)  219
#   6:nodes6304:<8 x 38> (BEP 32)                    316
#                                              total 671
# Each value is a bencoded compact peer: 6:<4+2> = 8 bytes (IPv4) or
# 18:<16+2> = 21 bytes (IPv6). (1,400 - 671) // 8 = 91 IPv4 or // 21 = 34 IPv6.
_REPLY_OVERHEAD: Final = 671
_VALUE_BYTES_V4: Final = 8
_VALUE_BYTES_V6: Final = 21

#: Peers per ``get_peers`` reply. 50 IPv4 peers are 400 bytes, so even the worst
#: case above stays near 1,070 bytes; libtorrent sends up to 100
#: (``dht_max_peers_reply``), which overflows one packet once nodes ride along.
DEFAULT_MAX_VALUES_PER_REPLY: Final = 50


def max_values_for(ipv6: bool) -> int:
    """Return how many peers of one family fit a ``get_peers`` reply.

    Args:
        ipv6: ``True`` for 18-byte IPv6 compact peers, ``False`` for 6-byte IPv4.

    Returns:
        :data:`DEFAULT_MAX_VALUES_PER_REPLY` for IPv4 and 34 for IPv6 (what fits
        :data:`REPLY_BUDGET` bytes alongside ``nodes`` and ``nodes6``).
    """
    per_value = _VALUE_BYTES_V6 if ipv6 else _VALUE_BYTES_V4
    return min(DEFAULT_MAX_VALUES_PER_REPLY, (REPLY_BUDGET - _REPLY_OVERHEAD) // per_value)


class PeerStore:
    """Peers announced to us, per infohash, with expiry and bounds.

    Args:
        max_infohashes: infohashes kept; beyond it the oldest single-peer
            infohash is dropped, or if none the least recently announced one.
        max_peers_per_infohash: peers kept per infohash; beyond it that
            infohash's least recently announced peer is dropped.
        ttl: seconds a peer lives after its latest announce.
        max_peers: peers kept in all; beyond it the least recently announced
            peer of any infohash is dropped.
        max_infohashes_per_ip: infohashes one IP holds entries for; beyond it
            that IP's least recently announced entry is dropped.
        per_ip: apply the per-IP rules to IPs (``False``: to whole addresses,
            for a test network whose nodes share one IP).

    Raises:
        ValueError: a limit is not positive.
    """

    __slots__ = (
        "_max_infohashes",
        "_max_per",
        "_max_peers",
        "_max_per_ip",
        "_per_ip",
        "_ttl",
        "_by_hash",
        "_by_age",
        "_by_ip",
        "_singles",
    )

    def __init__(
        self,
        *,
        max_infohashes: int = DEFAULT_MAX_INFOHASHES,
        max_peers_per_infohash: int = DEFAULT_MAX_PEERS_PER_INFOHASH,
        ttl: float = DEFAULT_PEER_TTL,
        max_peers: int = DEFAULT_MAX_PEERS,
        max_infohashes_per_ip: int = DEFAULT_MAX_INFOHASHES_PER_IP,
        per_ip: bool = True,
    ) -> None:
        if min(max_infohashes, max_peers_per_infohash, max_peers, max_infohashes_per_ip) < 1 or not ttl > 0:
            raise ValueError("peer-store limits and ttl must be positive")
        self._max_infohashes = max_infohashes
        self._max_per = max_peers_per_infohash
        self._max_peers = max_peers
        self._max_per_ip = max_infohashes_per_ip
        self._per_ip = per_ip
        self._ttl = float(ttl)
        # Entries are keyed by source: (ip, 0) per IP, or the whole address (see ``per_ip``).
        # infohash -> {source: (peer, announced_at, seed)}, both levels oldest announce first.
        self._by_hash: OrderedDict[bytes, OrderedDict[Address, tuple[Address, float, bool]]] = OrderedDict()
        # (infohash, ip) -> announced_at, oldest first: drives expiry and the total cap.
        self._by_age: OrderedDict[tuple[bytes, Address], float] = OrderedDict()
        # ip -> the infohashes it has an entry for, least recently announced first.
        self._by_ip: dict[Address, OrderedDict[bytes, None]] = {}
        # Infohashes with exactly one peer, oldest first: evicted first when full.
        self._singles: OrderedDict[bytes, None] = OrderedDict()

    @property
    def num_infohashes(self) -> int:
        """Infohashes with at least one stored peer (some may have expired since the last sweep)."""
        return len(self._by_hash)

    @property
    def num_peers(self) -> int:
        """Stored (infohash, peer) pairs."""
        return len(self._by_age)

    @property
    def num_sources(self) -> int:
        """Distinct IPs with at least one stored entry."""
        return len(self._by_ip)

    @property
    def ttl(self) -> float:
        """Seconds a peer lives after announcing."""
        return self._ttl

    def __contains__(self, info_hash: object) -> bool:
        return info_hash in self._by_hash

    def infohashes_of(self, ip: str) -> int:
        """How many infohashes ``ip`` holds an entry for."""
        held = self._by_ip.get((ip, 0))
        return 0 if held is None else len(held)

    def add(self, info_hash: bytes, peer: Address, now: float, *, seed: bool = False) -> None:
        """Store (or refresh) ``peer`` for ``info_hash`` (BEP 5 ``announce_peer``).

        A re-announce from the same IP replaces its entry (port, expiry and the
        BEP 33 ``seed`` flag). When a bound is hit the entry that goes is chosen
        as the module docstring says.

        Args:
            info_hash: the 20-byte infohash.
            peer: the peer's (IP, port) as the caller resolved it (``implied_port``).
            now: current time in seconds.
            seed: BEP 33: the peer announced itself as a seed.
        """
        ip = (peer[0], 0) if self._per_ip else peer
        by_hash = self._by_hash
        key = (info_hash, ip)
        peers = by_hash.get(info_hash)
        if peers is not None and ip in peers:  # a re-announce
            by_hash.move_to_end(info_hash)
            peers.move_to_end(ip)
            peers[ip] = (peer, now, seed)
            self._by_age.move_to_end(key)
            self._by_age[key] = now
            self._by_ip[ip].move_to_end(info_hash)
            return
        held = self._by_ip.get(ip)
        if held is not None and len(held) >= self._max_per_ip:
            # This IP's own least recently announced entry makes room.
            self._remove(next(iter(held)), ip)
            peers = by_hash.get(info_hash)
        if peers is None:
            if len(by_hash) >= self._max_infohashes:
                singles = self._singles
                self._drop_infohash(next(iter(singles)) if singles else next(iter(by_hash)))
            peers = by_hash[info_hash] = OrderedDict()
        else:
            by_hash.move_to_end(info_hash)
            if len(peers) >= self._max_per:
                self._remove(info_hash, next(iter(peers)))
                peers = by_hash.get(info_hash)
                if peers is None:  # (a cap of one peer per infohash)
                    peers = by_hash[info_hash] = OrderedDict()
        peers[ip] = (peer, now, seed)
        n = len(peers)
        if n == 1:
            self._singles[info_hash] = None
        elif n == 2:
            self._singles.pop(info_hash, None)
        self._by_age[key] = now
        self._by_ip.setdefault(ip, OrderedDict())[info_hash] = None
        if len(self._by_age) > self._max_peers:
            old_hash, old_ip = next(iter(self._by_age))
            self._remove(old_hash, old_ip)

    def get(
        self,
        info_hash: bytes,
        now: float,
        rng: random.Random,
        limit: int = DEFAULT_MAX_VALUES_PER_REPLY,
        *,
        family: int | None = None,
    ) -> list[Address]:
        """Return a random sample of at most ``limit`` unexpired peers of ``info_hash``.

        Expired peers of this infohash are dropped on the way (lazy expiry).

        Args:
            family: 4 or 6 to return only IPv4 or only IPv6 peers (BEP 32: a
                querier gets the peers of its own family); ``None`` for both.
        """
        peers = self._fresh(info_hash, now)
        if not peers or limit <= 0:
            return []
        if family is None:
            candidates = [v[0] for v in peers.values()]
        else:
            v6 = family == 6
            candidates = [v[0] for v in peers.values() if (":" in v[0][0]) is v6]
        if len(candidates) <= limit:
            return candidates
        return rng.sample(candidates, limit)

    def scrape(self, info_hash: bytes, now: float) -> tuple[list[Address], list[Address]]:
        """Return ``(seeds, others)``: every unexpired peer of ``info_hash`` (BEP 33 input)."""
        seeds: list[Address] = []
        others: list[Address] = []
        for peer, _, seed in (self._fresh(info_hash, now) or {}).values():
            (seeds if seed else others).append(peer)
        return seeds, others

    def expire(self, now: float) -> int:
        """Drop every peer whose latest announce is ``ttl`` seconds old or older.

        Returns:
            How many peers were dropped.
        """
        by_age = self._by_age
        cutoff = now - self._ttl
        dropped = 0
        while by_age:
            key, announced = next(iter(by_age.items()))
            if announced > cutoff:
                break
            self._remove(*key)
            dropped += 1
        return dropped

    def sample_infohashes(self, rng: random.Random, limit: int) -> list[bytes]:
        """Return up to ``limit`` stored infohashes chosen at random (BEP 51)."""
        if limit <= 0 or not self._by_hash:
            return []
        keys = list(self._by_hash)
        if len(keys) <= limit:
            rng.shuffle(keys)
            return keys
        return rng.sample(keys, limit)

    # --- internals ------------------------------------------------------------------

    def _fresh(self, info_hash: bytes, now: float) -> OrderedDict[Address, tuple[Address, float, bool]] | None:
        """The peers of ``info_hash`` after dropping its expired ones (oldest first)."""
        peers = self._by_hash.get(info_hash)
        if peers is None:
            return None
        cutoff = now - self._ttl
        while peers:
            ip, (_, announced, _) = next(iter(peers.items()))
            if announced > cutoff:
                break
            self._remove(info_hash, ip)
            peers = self._by_hash.get(info_hash)
            if peers is None:
                return None
        return peers

    def _remove(self, info_hash: bytes, ip: Address) -> None:
        """Remove the entry of ``ip`` for ``info_hash`` from every index."""
        peers = self._by_hash[info_hash]
        del peers[ip]
        del self._by_age[(info_hash, ip)]
        held = self._by_ip[ip]
        del held[info_hash]
        if not held:
            del self._by_ip[ip]
        n = len(peers)
        if n == 0:
            del self._by_hash[info_hash]
            self._singles.pop(info_hash, None)
        elif n == 1:
            self._singles[info_hash] = None

    def _drop_infohash(self, info_hash: bytes) -> None:
        for ip in list(self._by_hash[info_hash]):
            self._remove(info_hash, ip)
