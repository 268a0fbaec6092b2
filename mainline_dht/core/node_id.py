"""Node IDs: random IDs, prefix arithmetic and the BEP 42 tie between an ID and an IP.

Owns: making node IDs (uniformly at random, or restricted to an external IP as
BEP 42 asks), measuring how many leading bits two IDs share, and checking whether
a node's ID is one its IP address may use.

Pure: no I/O, no clock, no global randomness. Randomness comes in as an
``rng: random.Random`` argument. Must not import trio, socket, time, asyncio or os.
"""

from __future__ import annotations

import ipaddress
import random
from functools import lru_cache
from typing import Final

import crc32c

from ..wire.contact import ID_LENGTH

__all__ = [
    "ID_BITS",
    "ID_SPACE",
    "random_node_id",
    "id_to_int",
    "int_to_id",
    "common_prefix_length",
    "random_id_in_range",
    "node_id_for_ip",
    "is_id_valid_for_ip",
    "is_exempt_ip",
]

#: Bits in a node ID (BEP 5: 160-bit IDs).
ID_BITS: Final = ID_LENGTH * 8

#: Number of distinct node IDs; valid integer IDs lie in ``[0, ID_SPACE)``.
ID_SPACE: Final = 1 << ID_BITS

# BEP 42: the IPv4 address is masked with 0x030f3fff and the high 64 bits of an
# IPv6 address with 0x0103070f1f3f7fff before hashing.
_V4_MASK: Final = 0x030F3FFF
_V6_MASK: Final = 0x0103070F1F3F7FFF

# BEP 42: "The first (most significant) 21 bits of the node ID ... MUST match the
# first 21 bits of the resulting hash."
_PREFIX_BITS: Final = 21


def random_node_id(rng: random.Random) -> bytes:
    """Return a uniformly random 20-byte node ID drawn from ``rng``."""
    return rng.getrandbits(ID_BITS).to_bytes(ID_LENGTH, "big")


def id_to_int(node_id: bytes) -> int:
    """Return a node ID (or infohash) as an unsigned big-endian integer."""
    return int.from_bytes(node_id, "big")


def int_to_id(value: int) -> bytes:
    """Return the 20-byte big-endian form of an integer in ``[0, 2**160)``.

    Raises:
        ValueError: ``value`` is outside the ID space.
    """
    if not 0 <= value < ID_SPACE:
        raise ValueError(f"{value} is outside the 160-bit ID space")
    return value.to_bytes(ID_LENGTH, "big")


def common_prefix_length(a: bytes, b: bytes) -> int:
    """Return how many leading bits two equally long IDs share (0..160 for node IDs).

    BEP 5: the bucket a contact belongs to follows from this number.

    Raises:
        ValueError: the IDs differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"IDs of different lengths ({len(a)} and {len(b)} bytes)")
    diff = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return len(a) * 8 - diff.bit_length()


def random_id_in_range(lo: int, hi: int, rng: random.Random) -> bytes:
    """Return a uniformly random ID whose integer value lies in ``[lo, hi)``.

    Used to pick the target of a bucket refresh (BEP 5: "picking a random ID in
    the range of the bucket").

    Raises:
        ValueError: the range is empty or not inside ``[0, 2**160)``.
    """
    if not 0 <= lo < hi <= ID_SPACE:
        raise ValueError(f"invalid ID range [{lo}, {hi})")
    return (lo + rng.randrange(hi - lo)).to_bytes(ID_LENGTH, "big")


# --- BEP 42 ---------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _ip_facts(ip: str) -> tuple[bytes, bool]:
    """Return (masked IP bytes for the BEP 42 hash, whether the IP is exempt).

    Cached: the same few thousand addresses talk to a node over and over, and
    parsing text addresses costs more than the CRC itself.
    """
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    exempt = addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_unspecified
    if isinstance(addr, ipaddress.IPv4Address):
        masked = (int(addr) & _V4_MASK).to_bytes(4, "big")
    else:
        masked = ((int(addr) >> 64) & _V6_MASK).to_bytes(8, "big")
    return masked, exempt


def _prefix_crc(masked: bytes, r: int) -> int:
    # BEP 42: ip[0] |= r << 5, then CRC32-C over the 4 (IPv4) or 8 (IPv6) bytes.
    return int(crc32c.crc32c(bytes((masked[0] | (r << 5),)) + masked[1:]))


def is_exempt_ip(ip: str) -> bool:
    """Return whether ``ip`` is exempt from BEP 42 node-ID checks.

    BEP 42 exempts local-network addresses (10/8, 172.16/12, 192.168/16,
    169.254/16, 127/8). This also exempts the IPv6 equivalents (loopback,
    unique-local fc00::/7, link-local fe80::/10), other non-routable blocks
    Python classes as private, and the unspecified address.

    Raises:
        ValueError: ``ip`` is not an IP address.
    """
    return _ip_facts(ip)[1]


def node_id_for_ip(ip: str, rng: random.Random, *, r: int | None = None) -> bytes:
    """Return a random node ID that BEP 42 allows a node at ``ip`` to use.

    The first 21 bits come from ``crc32c((ip & mask) | (r << 29))`` (``r << 61``
    for IPv6), the low 3 bits of the last byte hold ``r`` and everything else
    is random.

    Args:
        ip: our external IP address (text).
        rng: source of the random bits.
        r: the 3-bit salt (0..7); drawn from ``rng`` when ``None``.

    Raises:
        ValueError: ``ip`` is not an IP address or ``r`` is not in 0..7.
    """
    if r is None:
        r = rng.randrange(8)
    elif not 0 <= r <= 7:
        raise ValueError(f"BEP 42 r must be in 0..7, not {r}")
    masked, _ = _ip_facts(ip)
    crc = _prefix_crc(masked, r)
    # 21 bits of CRC, then 136 random bits, then 5 random bits and r in the last 3.
    value = (crc >> (32 - _PREFIX_BITS)) << (ID_BITS - _PREFIX_BITS)
    value |= rng.getrandbits(ID_BITS - _PREFIX_BITS - 3) << 3
    value |= r
    return value.to_bytes(ID_LENGTH, "big")


def is_id_valid_for_ip(node_id: bytes, ip: str) -> bool:
    """Return whether a node at ``ip`` may use ``node_id`` under BEP 42.

    Exempt (local) addresses are always valid. ``r`` is read from the low 3 bits
    of the ID's last byte.

    Raises:
        ValueError: ``ip`` is not an IP address.
    """
    masked, exempt = _ip_facts(ip)
    if exempt:
        return True
    if len(node_id) != ID_LENGTH:
        return False
    crc = _prefix_crc(masked, node_id[-1] & 0x07)
    return int.from_bytes(node_id[:3], "big") >> 3 == crc >> (32 - _PREFIX_BITS)
