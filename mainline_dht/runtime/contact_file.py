"""The warm-start file: contacts that answered a short-lived node, for its next run.

Owns: the on-disk format of the contact cache that ``mainline-dht peers`` keeps
between runs, and loading it into (and saving it from) a node's cache of recently
answering contacts (:class:`~mainline_dht.core.contact_cache.RecentContacts`).
A command that exits after one lookup has no routing table worth a state file, but
the contacts it verified let the next run start near its target without asking a
bootstrap router. Written atomically, like the state file
(:mod:`mainline_dht.runtime.state_file`).

Format (bencoded dict, written with :func:`mainline_dht.wire.bencode.encode_trusted_file`)::

    {b"version": 1,
     b"saved":   <wall-clock time of the save, integer seconds since the epoch>,
     b"nodes":   [[<26- or 38-byte compact node info>, <smoothed RTT in microseconds, -1 if unknown>], ...]}

Contacts are stored most recent answer first. This module does file I/O; the pure
layers never import it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from ..core.contact_cache import RecentContacts
from ..errors import StateFileError
from ..wire.bencode import encode_trusted_file
from ..wire.contact import Contact
from .atomic_file import read_bencoded_file, write_atomically
from .state_file import pack_contact, unpack_contact

__all__ = [
    "CONTACT_FILE_VERSION",
    "MAX_SAVED_CONTACTS",
    "default_contact_file",
    "load_cached_contacts",
    "restore_contacts",
    "save_cached_contacts",
]

log = logging.getLogger(__name__)

#: The ``version`` this module writes and the only one it reads.
CONTACT_FILE_VERSION: Final = 1
#: Contacts saved at most (~8 KB): plenty to start a lookup anywhere in the space.
MAX_SAVED_CONTACTS: Final = 256
#: Largest file read (bytes); a full one is about 10 KB.
_MAX_FILE: Final = 256 * 1024


def default_contact_file() -> Path:
    """``<user data dir>/mainline-dht/contacts.dat``, next to the routing-table file."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mainline-dht", appauthor=False)) / "contacts.dat"


def save_cached_contacts(
    caches: RecentContacts | Iterable[RecentContacts],
    path: str | os.PathLike[str],
    *,
    since: float,
    now: float,
    wall_clock: Callable[[], float] = time.time,
) -> int:
    """Write the contacts that answered since ``since`` to ``path`` atomically.

    The most recent answers are kept, from every cache given (a dual-stack node
    has one per address family). Nothing is written when none answered (offline, say): the file from the
    last good run is kept.

    Args:
        caches: the node's cache (or caches) of contacts that answered.
        path: the file.
        since: the start of this run (driver's clock): contacts restored from the
            file but not heard from since are not written back.
        now: the current time (driver's clock).
        wall_clock: seconds since the epoch, recorded as ``saved``.

    Returns:
        How many contacts were written.

    Raises:
        OSError: the file could not be written (the old file, if any, is intact).
    """
    if isinstance(caches, RecentContacts):
        caches = [caches]
    entries = sorted((e for c in caches for e in c.fresh(now)), key=lambda e: e.last_answer, reverse=True)
    nodes: list[list[object]] = []
    for entry in entries:
        if entry.last_answer < since or not 0 < entry.contact.addr[1] < 65536:
            continue
        try:
            packed = pack_contact(entry.contact)
        except ValueError:
            continue
        rtt = round(entry.rtt.srtt * 1e6) if entry.rtt.samples else -1
        nodes.append([packed, rtt])
        if len(nodes) >= MAX_SAVED_CONTACTS:
            break
    if not nodes:
        log.debug("no contact answered; leaving %s as it was", path)
        return 0
    data = encode_trusted_file({b"version": CONTACT_FILE_VERSION, b"saved": int(wall_clock()), b"nodes": nodes})
    write_atomically(Path(path), data)
    log.debug("saved %d contacts to %s", len(nodes), path)
    return len(nodes)


def load_cached_contacts(path: str | os.PathLike[str]) -> list[tuple[Contact, float | None]]:
    """Read a file written by :func:`save_cached_contacts`.

    Returns:
        ``(contact, smoothed RTT in seconds or None)`` pairs, most recent answer first.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` if it is missing).
        StateFileError: the file is empty, corrupt, too big or of another version.
    """
    p = Path(path)
    doc = read_bencoded_file(p, max_size=_MAX_FILE, kind="a contact file")
    if not isinstance(doc, dict) or not isinstance(doc.get(b"nodes"), list):
        raise StateFileError(f"{p} is not a contact file (no nodes list)")
    version = doc.get(b"version")
    if type(version) is not int or version != CONTACT_FILE_VERSION:
        raise StateFileError(f"{p} has format version {version!r}; this program reads {CONTACT_FILE_VERSION}")
    out: list[tuple[Contact, float | None]] = []
    for i, item in enumerate(doc[b"nodes"][:MAX_SAVED_CONTACTS]):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes) and type(item[1]) is int):
            raise StateFileError(f"{p}: entry {i} is not [compact node, rtt]")
        try:
            contact = unpack_contact(item[0])
        except ValueError as exc:
            raise StateFileError(f"{p}: entry {i}: {exc}") from None
        if contact.addr[1] != 0:
            out.append((contact, item[1] / 1e6 if item[1] >= 0 else None))
    return out


def restore_contacts(recent: RecentContacts, contacts: list[tuple[Contact, float | None]], *, as_of: float) -> int:
    """Put saved contacts into the node's cache, as having answered at ``as_of``.

    Lookups then start from them (:meth:`NodeProtocol.lookup_seeds`) and rank them
    by their saved RTT; one that does not answer any more leaves the cache at its
    first timeout. Pass a time just before the run began as ``as_of``, so that
    :func:`save_cached_contacts` writes back only those heard from again.

    Returns:
        How many were restored.
    """
    for contact, rtt in reversed(contacts):  # most recent last: it wins a full slot
        recent.answered(contact, as_of, rtt)
    return len(contacts)
