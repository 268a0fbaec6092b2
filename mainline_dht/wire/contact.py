"""Addresses and contacts: the (node ID, address) pairs every other module passes around.

Pure values; imports nothing but the standard library.
"""

from __future__ import annotations

from typing import NamedTuple

#: A UDP address: (IP address text, port). IPv6 addresses are plain text too.
Address = tuple[str, int]

#: Length of a node ID or infohash in bytes (BEP 5: 160 bits).
ID_LENGTH = 20


class Contact(NamedTuple):
    """A DHT node we know of: its 20-byte node ID and its UDP address."""

    id: bytes
    addr: Address


def family_of(ip: str) -> int:
    """Return the address family of IP text: 6 for IPv6, 4 otherwise (BEP 32 overlays)."""
    return 6 if ":" in ip else 4


def distance(a: bytes, b: bytes) -> int:
    """Return the XOR distance of two 20-byte IDs as an unsigned integer (BEP 5)."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
