"""BEP 33 DHT scrapes: bloom filters of the IPs that announced an infohash.

Owns: the 256-byte bloom filter with BEP 33's hash construction (two 11-bit
indices from the SHA-1 of the packed IP address), the union of filters from
several nodes, the size estimate, and what a storing node puts in a
``get_peers`` reply when asked to ``scrape`` (``BFsd``/``BFpe``) or to prefer
non-seeds (``noseed``).

Only IP addresses go into a filter (4 bytes for IPv4, 16 for IPv6), never
ports: a scrape counts hosts.

Pure: must not import trio, socket, time, asyncio or os.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ..wire.contact import Address
from .peer_store import PeerStore

__all__ = [
    "BLOOM_BYTES",
    "BLOOM_BITS",
    "BLOOM_HASHES",
    "BloomFilter",
    "ScrapeEstimate",
    "estimate",
    "scrape_reply",
    "merge",
    "ScrapeCollector",
]

#: BEP 33: m = 256 * 8 bits in k = 2 positions per element.
BLOOM_BYTES: Final = 256
BLOOM_BITS: Final = BLOOM_BYTES * 8
BLOOM_HASHES: Final = 2


def _packed_ip(ip: str | bytes) -> bytes:
    if isinstance(ip, bytes):
        if len(ip) not in (4, 16):
            raise ValueError("a packed IP address is 4 or 16 bytes")
        return ip
    return ipaddress.ip_address(ip).packed


class BloomFilter:
    """A BEP 33 bloom filter (256 bytes) of IP addresses.

    Args:
        data: 256 bytes of an existing filter (a ``BFsd`` or ``BFpe`` field), or
            ``None`` for an empty filter.

    Raises:
        ValueError: ``data`` is not 256 bytes.
    """

    __slots__ = ("_bits",)

    def __init__(self, data: bytes | None = None) -> None:
        if data is None:
            self._bits = bytearray(BLOOM_BYTES)
        else:
            if len(data) != BLOOM_BYTES:
                raise ValueError(f"a BEP 33 bloom filter is {BLOOM_BYTES} bytes, not {len(data)}")
            self._bits = bytearray(data)

    def add(self, ip: str | bytes) -> None:
        """Insert an IP address (text, or packed 4 or 16 bytes).

        BEP 33: the two indices are the first two little-endian 16-bit words of
        SHA-1(ip), each taken modulo m; bit ``i`` is bit ``i % 8`` (least
        significant first) of byte ``i // 8``.

        Raises:
            ValueError: ``ip`` is not an IP address.
        """
        h = hashlib.sha1(_packed_ip(ip)).digest()
        bits = self._bits
        for index in ((h[0] | h[1] << 8) % BLOOM_BITS, (h[2] | h[3] << 8) % BLOOM_BITS):
            bits[index >> 3] |= 1 << (index & 7)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, (str, bytes)):
            return False
        h = hashlib.sha1(_packed_ip(ip)).digest()
        bits = self._bits
        return all(
            bits[index >> 3] & (1 << (index & 7))
            for index in ((h[0] | h[1] << 8) % BLOOM_BITS, (h[2] | h[3] << 8) % BLOOM_BITS)
        )

    def update(self, other: BloomFilter | bytes) -> None:
        """OR another filter into this one: the union of the two sets."""
        data = other._bits if isinstance(other, BloomFilter) else BloomFilter(other)._bits
        bits = self._bits
        for i in range(BLOOM_BYTES):
            bits[i] |= data[i]

    def zero_bits(self) -> int:
        """How many of the 2,048 bits are clear."""
        return BLOOM_BITS - sum(bin(b).count("1") for b in self._bits)

    def estimate(self) -> float:
        """BEP 33's estimate of how many distinct IPs were inserted.

        ``log(c / m) / (k * log(1 - 1/m))`` with ``c = min(m - 1, zero bits)``.
        Two edges differ from the bare formula: an empty filter reads 0 (the
        clamp would make it 0.5), and ``c >= 1`` keeps a full filter at about
        7,800 rather than infinity; the estimate breaks down past ~6,000
        entries anyway (the false-positive rate nears 1).
        """
        zeros = self.zero_bits()
        if zeros == BLOOM_BITS:
            return 0.0
        c = max(1, min(BLOOM_BITS - 1, zeros))
        return math.log(c / BLOOM_BITS) / (BLOOM_HASHES * math.log(1 - 1 / BLOOM_BITS))

    def __bytes__(self) -> bytes:
        return bytes(self._bits)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BloomFilter) and self._bits == other._bits

    def __hash__(self) -> int:
        return hash(bytes(self._bits))

    @classmethod
    def of(cls, ips: Iterable[str | bytes]) -> BloomFilter:
        """A filter holding ``ips``."""
        bloom = cls()
        for ip in ips:
            bloom.add(ip)
        return bloom


def merge(filters: Iterable[bytes | BloomFilter]) -> BloomFilter:
    """Return the union (bitwise OR) of ``filters``."""
    out = BloomFilter()
    for f in filters:
        out.update(f)
    return out


@dataclass(frozen=True, slots=True)
class ScrapeEstimate:
    """What a scrape estimates from the filters it merged.

    Attributes:
        seeds: estimated seeds (distinct IPs in the merged ``BFsd``).
        downloaders: estimated peers that are not seeds (distinct IPs in ``BFpe``).
        responders: how many replies carried filters.
    """

    seeds: float
    downloaders: float
    responders: int


def estimate(seed_filters: Iterable[bytes], peer_filters: Iterable[bytes]) -> ScrapeEstimate:
    """Merge the ``BFsd`` and ``BFpe`` filters of several replies and estimate both counts."""
    seeds = list(seed_filters)
    peers = list(peer_filters)
    return ScrapeEstimate(merge(seeds).estimate(), merge(peers).estimate(), max(len(seeds), len(peers)))


class ScrapeCollector:
    """Merges the scrape answers of one ``get_peers`` lookup (BEP 33, requesting side).

    Replies with both filters are ORed into the seed and peer unions. A reply
    with ``values`` but no filters (a node that does not speak BEP 33) counts
    its IPs as downloaders, unless a seed filter from another node holds them
    (BEP 33, "Handling legacy responses"); that check waits for the estimate,
    when every seed filter is in.
    """

    __slots__ = ("seeds", "peers", "responders", "_legacy")

    def __init__(self) -> None:
        self.seeds = BloomFilter()
        self.peers = BloomFilter()
        #: Replies that carried both filters.
        self.responders = 0
        self._legacy: set[str] = set()

    def offer(self, bloom_seeds: bytes | None, bloom_peers: bytes | None, values: Iterable[Address] = ()) -> None:
        """Take one ``get_peers`` reply's ``BFsd``, ``BFpe`` and ``values``."""
        if bloom_seeds is not None and bloom_peers is not None:
            self.seeds.update(bloom_seeds)
            self.peers.update(bloom_peers)
            self.responders += 1
        elif len(self._legacy) < 8 * BLOOM_BITS:  # bounded: past that the estimate is meaningless anyway
            self._legacy.update(ip for ip, _ in values)

    def estimate(self) -> ScrapeEstimate:
        """The estimate of seeds and downloaders from everything offered so far."""
        peers = BloomFilter(bytes(self.peers))
        for ip in self._legacy:
            if ip not in self.seeds:
                peers.add(ip)
        return ScrapeEstimate(self.seeds.estimate(), peers.estimate(), self.responders)


def scrape_reply(
    store: PeerStore,
    info_hash: bytes,
    now: float,
    rng: random.Random,
    limit: int,
    *,
    scrape: bool,
    noseed: bool,
    ipv6: bool = False,
) -> tuple[list[Address], bytes | None, bytes | None]:
    """What a ``get_peers`` reply with BEP 33 flags carries besides nodes and token.

    Args:
        store: our peer store.
        info_hash: the infohash asked for.
        now: current time (seconds).
        rng: draws the sample of peers.
        limit: peers per reply.
        scrape: the query's ``scrape`` = 1: add the filters when we store peers.
        noseed: the query's ``noseed`` = 1: fill ``values`` with non-seeds first.
        ipv6: the querier's family: ``values`` hold peers of that family only
            (the filters hold every IP).

    Returns:
        ``(values, BFsd, BFpe)``; the filters are ``None`` unless ``scrape`` was
        asked and we store peers for the infohash. ``BFpe`` holds the peers that
        are not seeds (BEP 33: "all stored peers"; libtorrent, like us, counts a
        seed only in ``BFsd``, so seeds + downloaders is the swarm).
    """
    seeds, others = store.scrape(info_hash, now)
    if not seeds and not others:
        return [], None, None
    fam_seeds = [p for p in seeds if (":" in p[0]) == ipv6]
    fam_others = [p for p in others if (":" in p[0]) == ipv6]
    if noseed:
        values = fam_others if len(fam_others) <= limit else rng.sample(fam_others, limit)
        if len(values) < limit and fam_seeds:
            room = limit - len(values)
            values = values + (fam_seeds if len(fam_seeds) <= room else rng.sample(fam_seeds, room))
    else:
        everyone = fam_others + fam_seeds
        values = everyone if len(everyone) <= limit else rng.sample(everyone, limit)
    if not scrape:
        return values, None, None
    return (
        values,
        bytes(BloomFilter.of(ip for ip, _ in seeds)),
        bytes(BloomFilter.of(ip for ip, _ in others)),
    )
