"""The routing-table state file: our node ID and contacts, kept across restarts.

Owns: the on-disk format and writing it atomically. BEP 5 leaves persistence to
implementations; saving contacts lets a node rejoin without the bootstrap routers.

Format (bencoded dict, written with :func:`mainline_dht.wire.bencode.encode_trusted_file`)::

    {b"version": 1,
     b"id":      <our 20-byte node ID>,
     b"nodes":   [<26-byte IPv4 or 38-byte IPv6 compact node info>, ...],
     b"saved":   <wall-clock time of the save, integer seconds since the epoch>,
     b"id6":     <our 20-byte node ID in the IPv6 overlay>,          (optional)
     b"nodes6":  [<38-byte IPv6 compact node info>, ...]}             (optional)

A dual-stack node (BEP 32) keeps one table and one ID per family: the IPv4 ones
in ``id``/``nodes``, the IPv6 ones in ``id6``/``nodes6``. The two optional keys
came later; a file without them (an older one) still loads: its ``id`` then
serves both families and its IPv6 contacts, if any, sit in ``nodes``. An older
program ignores the keys it does not know, so it reads a newer file's IPv4 half.

Compact node info is the BEP 5 / BEP 32 layout: node ID, then the IP address and
port in network byte order.

Durability: every save goes through :func:`.atomic_file.write_atomically` (a
temporary file in the same directory, fsynced, renamed over the old file), so a
``kill -9`` or a power cut at any moment leaves the old file or the new one,
whole, and a killed save's temporary file is removed by a later save. A file
that fails to load is never overwritten: :func:`load_saved_state` moves it
aside to ``<name>.corrupt-<UTC timestamp>`` and says so (so a ``--state``
pointed at some other file keeps that file, under the new name). Within a
valid file, bad node entries are skipped and the good ones kept.

This module does file I/O (and imports ``os``); the pure layers never import it.
It is called by the trio layer, blocking briefly (a few kilobytes).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NamedTuple

from ..wire.bencode import encode_trusted_file
from ..wire.contact import ID_LENGTH, Contact, family_of
from ..errors import StateFileError
from ..core.protocol import NodeProtocol
from ..core.routing_table import RoutingTable
from .atomic_file import read_bencoded_file, write_atomically

__all__ = [
    "FORMAT_VERSION",
    "MAX_STATE_FILE",
    "SavedState",
    "pack_contact",
    "unpack_contact",
    "save_table",
    "load_contacts",
    "load_node_state",
    "move_aside",
    "load_saved_state",
    "save_node_state",
    "load_state",
]

log = logging.getLogger(__name__)

#: The ``version`` this module writes and the only one it reads.
FORMAT_VERSION: Final = 1

#: Largest state file we read (bytes). A full table is a few hundred contacts
#: (~10 KB); anything far bigger is not ours.
MAX_STATE_FILE: Final = 4 * 1024 * 1024

_V4_LEN: Final = ID_LENGTH + 6
_V6_LEN: Final = ID_LENGTH + 18


def pack_contact(contact: Contact) -> bytes:
    """Return the compact node info of ``contact`` (26 bytes IPv4, 38 bytes IPv6).

    Raises:
        ValueError: the address is not an IP address or the port is out of range.
    """
    ip = ipaddress.ip_address(contact.addr[0])
    port = contact.addr[1]
    if len(contact.id) != ID_LENGTH or not 0 <= port < 65536:
        raise ValueError(f"cannot pack {contact!r}")
    return contact.id + ip.packed + port.to_bytes(2, "big")


def unpack_contact(data: bytes) -> Contact:
    """Return the contact in a 26- or 38-byte compact node info.

    Raises:
        ValueError: ``data`` has another length.
    """
    if len(data) == _V4_LEN:
        ip: str = str(ipaddress.IPv4Address(data[ID_LENGTH:-2]))
    elif len(data) == _V6_LEN:
        ip = str(ipaddress.IPv6Address(data[ID_LENGTH:-2]))
    else:
        raise ValueError(f"compact node info of {len(data)} bytes (expected {_V4_LEN} or {_V6_LEN})")
    return Contact(bytes(data[:ID_LENGTH]), (ip, int.from_bytes(data[-2:], "big")))


class SavedState(NamedTuple):
    """What a state file holds, per address family (4, 6).

    Attributes:
        ids: the node ID of each overlay. An older file's one ID serves both.
        contacts: each overlay's contacts, best first.
        in_order: every contact, in the file's order.
    """

    ids: dict[int, bytes]
    contacts: dict[int, list[Contact]]
    in_order: list[Contact]


def _packed_contacts(table: RoutingTable) -> list[bytes]:
    state = table.to_state()
    nodes: list[bytes] = []
    seen: set[bytes] = set()
    for contact in [*state["nodes"], *state["replacements"]]:
        if contact.id in seen or not 0 < contact.addr[1] < 65536:
            continue
        try:
            nodes.append(pack_contact(contact))
        except ValueError:
            continue  # not an IP literal; cannot be stored compactly
        seen.add(contact.id)
    return nodes


def save_table(
    table: RoutingTable | None,
    path: str | os.PathLike[str],
    *,
    table6: RoutingTable | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> int:
    """Write ``table``'s ID and contacts (and ``table6``'s) to ``path`` atomically.

    The file is written under a temporary name in the same directory, flushed
    and fsynced, then renamed over ``path`` (``os.replace``), so a crash leaves
    either the old file or the new one, never a torn one. The directory is
    created if missing.

    Args:
        table: the (IPv4) routing table (its live non-bad entries, then
            replacements that answered us, are saved); ``None`` for an
            IPv6-only node.
        path: the state file.
        table6: the IPv6 overlay's table of a dual-stack or IPv6-only node (BEP 32).
        wall_clock: seconds since the epoch, recorded as ``saved`` (injectable
            for tests; never the trio clock).

    Returns:
        How many contacts were written.

    Raises:
        OSError: the file could not be written (the old file, if any, is intact).
        ValueError: neither table is given.
    """
    if table is None and table6 is None:
        raise ValueError("no routing table to save")
    nodes = [] if table is None else _packed_contacts(table)
    doc: dict[bytes, Any] = {b"version": FORMAT_VERSION, b"nodes": nodes, b"saved": int(wall_clock())}
    count = len(nodes)
    if table6 is not None:
        nodes6 = _packed_contacts(table6)
        doc[b"id6"] = table6.own_id
        doc[b"nodes6"] = nodes6
        count += len(nodes6)
    doc[b"id"] = (table if table is not None else table6).own_id  # type: ignore[union-attr]
    write_atomically(Path(path), encode_trusted_file(doc))
    log.debug("saved %d contacts to %s", count, path)
    return count


def load_contacts(path: str | os.PathLike[str]) -> tuple[bytes, list[Contact]]:
    """Read a state file written by :func:`save_table`.

    Returns:
        ``(own_id, contacts)``: the saved (IPv4) node ID and every contact of
        both families, best first (see :func:`load_state` for them apart).

    Raises:
        OSError, StateFileError: as :func:`load_state`.
    """
    p = Path(path)
    doc = _read(p)
    return doc.ids[4], doc.in_order


def load_state(path: str | os.PathLike[str]) -> SavedState:
    """Read a state file written by :func:`save_table`, or by an older version of it.

    Returns:
        Each family's node ID and contacts.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` if it is missing).
        StateFileError: the file is empty, corrupt, too big, of another version,
            or not a routing-table file at all.
    """
    return _read(Path(path))


def _read(p: Path) -> SavedState:
    doc = read_bencoded_file(p, max_size=MAX_STATE_FILE, kind="a routing-table file")
    if not isinstance(doc, dict) or b"version" not in doc or b"nodes" not in doc:
        raise StateFileError(f"{p} is not a routing-table file (no version/nodes keys)")
    version = doc[b"version"]
    if version != FORMAT_VERSION or type(version) is not int:
        raise StateFileError(f"{p} has format version {version!r}; this program reads version {FORMAT_VERSION}")
    own_id = doc.get(b"id")
    if not isinstance(own_id, bytes) or len(own_id) != ID_LENGTH:
        raise StateFileError(f"{p} has no valid 20-byte node ID")
    if not isinstance(doc.get(b"saved"), int):
        raise StateFileError(f"{p} has no valid save time")
    id6 = doc.get(b"id6", own_id)
    if not isinstance(id6, bytes) or len(id6) != ID_LENGTH:
        raise StateFileError(f"{p} has no valid 20-byte IPv6 node ID")
    contacts: dict[int, list[Contact]] = {4: [], 6: []}
    in_order: list[Contact] = []
    bad: list[str] = []
    total = 0
    for key in (b"nodes", b"nodes6"):
        nodes = doc.get(key, [])
        if not isinstance(nodes, list):
            raise StateFileError(f"{p}: {key.decode()!r} is not a list")
        total += len(nodes)
        for i, item in enumerate(nodes):
            # A bad entry (a flipped bit, a hand edit) costs that entry, not the file.
            if not isinstance(item, bytes):
                bad.append(f"{key.decode()} {i} is not a byte string")
                continue
            try:
                contact = unpack_contact(item)
            except ValueError as exc:
                bad.append(f"{key.decode()} {i}: {exc}")
                continue
            if contact.addr[1] != 0:
                contacts[family_of(contact.addr[0])].append(contact)
                in_order.append(contact)
    if bad:
        log.warning("%s: skipped %d bad node entries of %d, kept the rest (first: %s)", p, len(bad), total, bad[0])
    return SavedState({4: bytes(own_id), 6: bytes(id6)}, contacts, in_order)


def load_node_state(
    path: Path | None, *, wall_clock: Callable[[], float] = time.time
) -> tuple[bytes | None, list[Contact]]:
    """What a starting node takes from its state file (every runtime uses this).

    A file that is not a routing-table file is moved aside, as
    :func:`load_saved_state` does.

    Returns:
        ``(node_id, contacts)``; ``(None, [])`` when there is no path, no file,
        or the file is not a routing-table file.

    Raises:
        OSError: the file exists but cannot be read.
        StateFileError: the file is bad and cannot be moved aside.
    """
    state = load_saved_state(path, wall_clock=wall_clock)
    return state.ids.get(4), state.in_order


def load_saved_state(path: Path | None, *, wall_clock: Callable[[], float] = time.time) -> SavedState:
    """What a starting node takes from its state file: each family's ID and contacts.

    A file that fails to load is moved aside to ``<name>.corrupt-<timestamp>``
    (UTC, from ``wall_clock``) and reported as a warning; the node starts
    afresh and later saves a new file under the old name. The bad file is never
    overwritten.

    Returns:
        The saved state; empty when there is no path, no file, or the file is
        not a routing-table file.

    Raises:
        OSError: the file exists but cannot be read.
        StateFileError: the file is bad and cannot be moved aside (the node must
            not start and overwrite it).
    """
    if path is not None and path.exists():
        try:
            return load_state(path)
        except StateFileError as exc:
            try:
                aside = move_aside(path, wall_clock=wall_clock)
            except OSError as move_exc:
                raise StateFileError(
                    f"{exc}; cannot move it aside ({move_exc.strerror or move_exc}) and will not overwrite "
                    "it: pass another --state path, or --no-state"
                ) from None
            log.warning("ignoring the state file: %s; moved it aside to %s, starting afresh", exc, aside)
    return SavedState({}, {4: [], 6: []}, [])


def move_aside(path: Path, *, wall_clock: Callable[[], float] = time.time) -> Path:
    """Rename ``path`` to ``<name>.corrupt-<UTC timestamp>``, never over an existing file.

    Returns:
        The new path.

    Raises:
        OSError: the rename failed (``path`` is unchanged).
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall_clock()))
    for n in range(1000):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{n}" if n else ""))
        try:
            os.link(path, aside)  # fails if the name is taken: never replaces a file
        except FileExistsError:
            continue
        except OSError:
            # No hard links on this file system: rename, having checked the name is free.
            if aside.exists():
                continue
            os.rename(path, aside)
            return aside
        os.unlink(path)
        return aside
    raise FileExistsError(f"no free name to move {path} aside to")


def save_node_state(proto: NodeProtocol, path: Path | None, *, wall_clock: Callable[[], float] = time.time) -> None:
    """Write the node's routing table(s) to ``path`` atomically, if the core wants them saved.

    A dual-stack node's two cores (``proto`` and its sibling, BEP 32) share the
    file. Nothing is written without a path, nor while every table is empty and
    the node started from saved contacts (offline: the old file stays). A write
    error is logged, never raised: the node carries on.
    """
    if path is None:
        return
    protos = [proto] if proto.sibling is None else [proto, proto.sibling]
    if not any(p.save_wanted() for p in protos):
        log.info("routing table empty; leaving %s as it was", path)
        return
    tables = {p.family: p.table for p in protos}
    try:
        save_table(tables.get(4), path, table6=tables.get(6), wall_clock=wall_clock)
    except OSError as exc:
        log.warning("cannot save the routing table to %s: %s", path, exc)
