"""A torrent's info dictionary: checking it against its hash, reading it, writing a .torrent.

Owns: :class:`TorrentInfo` (what users want from an info dictionary: name,
size, files, piece length, and the raw bytes), the hash check of BEP 9 (SHA-1
for v1 infohashes, SHA-256 for BEP 52 v2 ones), and the bytes of a
trackerless ``.torrent`` file built around the info dictionary exactly as
received. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import DecodeError, PeerProtocolError
from ..wire import bencode
from ..wire.contact import Address

__all__ = [
    "DEFAULT_MAX_METADATA_SIZE",
    "MAX_FILES",
    "FileEntry",
    "TorrentInfo",
    "verify_info",
    "parse_info_untrusted",
    "encode_torrent_file",
]

#: The largest info dictionary we fetch by default (bytes). Real ones are
#: tens of KiB to a few MiB (a 100,000-file torrent is about 5 MiB).
DEFAULT_MAX_METADATA_SIZE: Final = 10 * 1024 * 1024
#: The most files :func:`parse_info_untrusted` lists; a 10 MiB dictionary
#: cannot describe many more than this anyway.
MAX_FILES: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a torrent.

    Attributes:
        path: the path components, decoded as UTF-8 (undecodable bytes replaced).
        length: bytes.
    """

    path: tuple[str, ...]
    length: int


@dataclass(frozen=True, slots=True)
class TorrentInfo:
    """What an info dictionary says, plus where it came from.

    Attributes:
        info_hash: the 20-byte infohash the dictionary was fetched for (the
            DHT key: SHA-1, or the first 20 bytes of the SHA-256 for v2).
        name: the torrent's name (UTF-8, undecodable bytes replaced).
        length: total bytes of all files (padding files excluded).
        files: every file; a single-file torrent has one entry, ``(name,)``.
        piece_length: bytes per piece.
        info: the bencoded info dictionary, byte for byte as verified.
        version: 1 (v1), 2 (v2 only) or 3 (hybrid: v1 and v2).
        source: the peer that completed it, when fetched.
        peers: peers known to have the torrent, when fetched.
    """

    info_hash: bytes
    name: str
    length: int
    files: tuple[FileEntry, ...]
    piece_length: int
    info: bytes = field(repr=False)
    version: int = 1
    source: Address | None = None
    peers: tuple[Address, ...] = ()


def verify_info(info: bytes, info_hash: bytes, *, sha256: bytes | None = None) -> bool:
    """Whether ``info`` is the info dictionary named by the hash.

    Args:
        info: the assembled bytes.
        info_hash: the 20-byte DHT infohash; checked with SHA-1 when ``sha256``
            is ``None``.
        sha256: the full 32-byte v2 infohash (BEP 52, from a ``btmh`` magnet);
            when given, the SHA-256 of ``info`` must equal it.
    """
    if sha256 is not None:
        return hashlib.sha256(info).digest() == sha256
    return hashlib.sha1(info).digest() == info_hash


def _text(value: Any, what: str) -> str:
    if type(value) is not bytes:
        raise PeerProtocolError(f"info dictionary: {what} is not a string")
    return value.decode("utf-8", "replace")


def _length(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise PeerProtocolError(f"info dictionary: {what} is not a non-negative integer")
    return value


def parse_info_untrusted(
    info: bytes,
    info_hash: bytes,
    *,
    max_size: int = DEFAULT_MAX_METADATA_SIZE,
) -> TorrentInfo:
    """Read name, files and sizes from a (verified) bencoded info dictionary.

    Understands v1 (``length`` or ``files``), v2 (``meta version`` 2 and
    ``file tree``, BEP 52) and hybrids (both; the v1 list is used, without
    BEP 47 padding files). Prefers ``name.utf-8`` when present.

    Raises:
        PeerProtocolError: not a bencoded dictionary, or without a name, a
            piece length or any file description.
    """
    try:
        d = bencode.decode_untrusted(info, max_size=max_size)
    except DecodeError as exc:
        raise PeerProtocolError(f"info dictionary does not decode: {exc}") from None
    if type(d) is not dict:
        raise PeerProtocolError("info dictionary is not a dictionary")
    name = _text(d.get(b"name.utf-8", d.get(b"name")), "name")
    piece_length = _length(d.get(b"piece length"), "piece length")
    v2 = d.get(b"meta version") == 2 and type(d.get(b"file tree")) is dict
    v1 = b"length" in d or b"files" in d
    files: list[FileEntry] = []
    if b"length" in d:
        files.append(FileEntry((name,), _length(d[b"length"], "length")))
    elif b"files" in d:
        entries = d[b"files"]
        if type(entries) is not list or len(entries) > MAX_FILES:
            raise PeerProtocolError("info dictionary: files is not a list of at most a million entries")
        for entry in entries:
            if type(entry) is not dict:
                raise PeerProtocolError("info dictionary: a file entry is not a dictionary")
            if b"p" in entry.get(b"attr", b""):  # BEP 47 padding file
                continue
            path = entry.get(b"path.utf-8", entry.get(b"path"))
            if type(path) is not list or not path:
                raise PeerProtocolError("info dictionary: a file has no path")
            parts = tuple(_text(p, "a path component") for p in path)
            files.append(FileEntry(parts, _length(entry.get(b"length"), "a file length")))
    elif v2:
        files = _file_tree(d[b"file tree"])
    else:
        raise PeerProtocolError("info dictionary describes no files")
    version = (1 if v1 else 0) | (2 if v2 else 0)
    return TorrentInfo(
        info_hash=info_hash,
        name=name,
        length=sum(f.length for f in files),
        files=tuple(files),
        piece_length=piece_length,
        info=info,
        version=version,
    )


def _file_tree(tree: dict[bytes, Any]) -> list[FileEntry]:
    """Flatten a BEP 52 file tree, iteratively (its depth is bounded by the decoder)."""
    files: list[FileEntry] = []
    stack: list[tuple[tuple[str, ...], dict[bytes, Any]]] = [((), tree)]
    while stack:
        prefix, node = stack.pop()
        for key in node:
            child = node[key]
            if type(child) is not dict:
                raise PeerProtocolError("info dictionary: a file tree node is not a dictionary")
            if key == b"":
                leaf = child
                files.append(FileEntry(prefix, _length(leaf.get(b"length"), "a file length")))
                if len(files) > MAX_FILES:
                    raise PeerProtocolError("info dictionary lists more than a million files")
            else:
                stack.append((prefix + (key.decode("utf-8", "replace"),), child))
    files.sort(key=lambda f: f.path)
    return files


def encode_torrent_file(info: bytes, *, nodes: list[Address] | tuple[Address, ...] = (), created_by: str = "") -> bytes:
    """Return a trackerless ``.torrent`` holding ``info`` byte for byte.

    The info dictionary is spliced in as received, not re-encoded, so the
    file's infohash is the one that was verified.

    Args:
        info: the bencoded info dictionary.
        nodes: addresses to list under BEP 5's ``nodes`` key (a trackerless
            torrent's entry points; we list the peers that had the torrent).
        created_by: the ``created by`` string.
    """
    out = bytearray(b"d")
    if created_by:
        out += bencode.encode(b"created by") + bencode.encode(created_by.encode("utf-8"))
    out += b"4:info" + info
    if nodes:
        out += bencode.encode(b"nodes") + bencode.encode([[host.encode("ascii"), port] for host, port in nodes])
    out += b"e"
    return bytes(out)
