"""Turning what a user types into a 20-byte infohash.

Owns: parsing 40-hex and 32-base32 infohashes and magnet links (BEP 9
``xt=urn:btih:``, and BitTorrent v2's ``xt=urn:btmh:1220<sha-256 hex>``, which
the DHT knows by its first 20 bytes, BEP 52). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

__all__ = ["parse_target", "parse_target_hashes", "Target", "TargetError"]

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_BASE32 = re.compile(r"[A-Za-z2-7]{32}")
_HEX_SHA256_MULTIHASH = re.compile(r"1220([0-9a-fA-F]{64})")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class TargetError(ValueError):
    """The text is not an infohash or a magnet link we understand."""


@dataclass(frozen=True, slots=True)
class Target:
    """The hashes a target names.

    Attributes:
        info_hash: the 20-byte DHT infohash (v1 when known, else the first 20
            bytes of the v2 one).
        sha256: the full 32-byte v2 infohash (BEP 52), when the target gave one
            (a ``btmh`` topic or 64 hex characters); ``None`` for v1 targets.
    """

    info_hash: bytes
    sha256: bytes | None = None


def parse_target(text: str) -> bytes:
    """Return the 20-byte DHT infohash named by ``text``.

    Accepts a 40-character hex infohash, a 32-character base32 infohash, or a
    magnet link carrying ``xt=urn:btih:`` (hex or base32) or
    ``xt=urn:btmh:1220`` + 64 hex characters (v2; truncated to 20 bytes).
    A hybrid magnet with both uses the v1 infohash.

    Raises:
        TargetError: with a message that says what was expected.
    """
    return parse_target_hashes(text).info_hash


def parse_target_hashes(text: str) -> Target:
    """Like :func:`parse_target`, keeping the full v2 infohash when there is one.

    Also accepts 64 hex characters as a v2 infohash. A metadata fetch checks a
    v2 (or hybrid, from a ``btmh``) info dictionary against ``sha256``.

    Raises:
        TargetError: with a message that says what was expected.
    """
    text = text.strip()
    if text.lower().startswith("magnet:"):
        return _parse_magnet(text)
    if _HEX64.fullmatch(text):
        v2 = binascii.unhexlify(text)
        return Target(v2[:20], v2)
    ih = _parse_btih(text)
    if ih is None:
        raise TargetError(
            f"not an infohash or magnet link: {text[:80]!r} "
            "(expected 40 hex characters, 32 base32 characters, or magnet:?xt=urn:btih:...)"
        )
    return Target(ih)


def _parse_btih(value: str) -> bytes | None:
    if _HEX40.fullmatch(value):
        return binascii.unhexlify(value)
    if _BASE32.fullmatch(value):
        return base64.b32decode(value.upper())
    return None


def _parse_magnet(text: str) -> Target:
    query = urlsplit(text).query
    if not query and "?" in text:
        query = text.split("?", 1)[1]
    topics = parse_qs(query).get("xt", [])
    v1: bytes | None = None
    v2: bytes | None = None
    for xt in topics:
        lower = xt.lower()
        if lower.startswith("urn:btih:"):
            ih = _parse_btih(xt[9:])
            if ih is None:
                raise TargetError(f"magnet link has a malformed btih infohash: {xt[:80]!r}")
            v1 = v1 or ih
        if lower.startswith("urn:btmh:"):
            m = _HEX_SHA256_MULTIHASH.fullmatch(xt[9:])
            if m is None:
                raise TargetError(
                    f"magnet link has an unsupported btmh hash: {xt[:80]!r} (expected 1220 + 64 hex characters)"
                )
            v2 = v2 or binascii.unhexlify(m.group(1))
    if v1 is not None:
        return Target(v1, v2)
    if v2 is not None:
        return Target(v2[:20], v2)
    raise TargetError("magnet link has no xt=urn:btih: or xt=urn:btmh: topic")
