"""Small files of ours: written so that a crash at any moment leaves the old file or the new one, whole.

Owns: the temporary-file-and-rename write used by the state file, the ``peers``
contact cache and ``.torrent`` output, the clean-up of temporary files that a
killed writer left behind, and the bounded read of a bencoded file of ours.

A write goes to ``.<name>.<random>.tmp`` in the same directory, is fsynced,
renamed over ``<name>`` and the directory fsynced. A process killed between
creating the temporary file and renaming it leaves that file behind; the next
successful write of the same path removes such leftovers once they are older
than :data:`STALE_TEMP_AGE`, so repeated crashes cannot fill the directory. A
writer that is still busy is never that slow with a few kilobytes; if one were,
it would lose that one save (its rename fails), never the file.

This module does file I/O; the pure layers never import it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ..errors import DecodeError, StateFileError
from ..wire.bencode import decode_trusted

__all__ = ["STALE_TEMP_AGE", "read_bencoded_file", "remove_stale_temp_files", "write_atomically"]

log = logging.getLogger(__name__)

#: Seconds after which a temporary file of ours is taken for a dead writer's leftover.
STALE_TEMP_AGE: Final = 60.0

#: Leftovers looked at per write, at most (the directory may be shared with other files).
_MAX_LEFTOVERS_PER_WRITE: Final = 100


def write_atomically(path: Path, data: bytes, *, wall_clock: Callable[[], float] = time.time) -> None:
    """Replace ``path`` by a file holding ``data``, atomically and durably.

    Creates the parent directory if needed. After the rename, removes temporary
    files of earlier writes of ``path`` that are older than
    :data:`STALE_TEMP_AGE` (see the module docstring).

    Raises:
        OSError: the file cannot be written; ``path`` is unchanged and no
            temporary file is left.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    # Make the rename itself durable (POSIX); not possible everywhere (Windows).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    remove_stale_temp_files(path, wall_clock=wall_clock)


def remove_stale_temp_files(path: Path, *, wall_clock: Callable[[], float] = time.time) -> int:
    """Remove the temporary files that killed writers of ``path`` left behind.

    Only names of the form ``.<name>.<anything>.tmp`` beside ``path`` that were
    last modified more than :data:`STALE_TEMP_AGE` seconds ago are removed; a
    failure to remove one is ignored (it is tried again on the next write).

    Returns:
        How many files were removed.
    """
    prefix = _temp_prefix(path)
    cutoff = wall_clock() - STALE_TEMP_AGE
    removed = 0
    try:
        entries = os.scandir(path.parent)
    except OSError:
        return 0
    with entries:
        looked_at = 0
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            looked_at += 1
            if looked_at > _MAX_LEFTOVERS_PER_WRITE:
                break
            try:
                if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                os.unlink(entry.path)
            except OSError:
                continue
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) left beside %s by an interrupted save", removed, path)
    return removed


def read_bencoded_file(path: Path, *, max_size: int, kind: str) -> Any:
    """Read and decode a bencoded file of ours, at most ``max_size`` bytes of it.

    Args:
        kind: what the file should be, for the messages ("a contact file").

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` if it is missing).
        StateFileError: the file is larger than ``max_size``, empty, or not bencoding.
    """
    with path.open("rb") as f:
        data = f.read(max_size + 1)
    if len(data) > max_size:
        raise StateFileError(f"{path} is larger than {max_size} bytes: not {kind}")
    if not data:
        raise StateFileError(f"{path} is empty")
    try:
        return decode_trusted(data)
    except DecodeError as exc:
        raise StateFileError(f"{path} is corrupt or not {kind}: {exc}") from None


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."
