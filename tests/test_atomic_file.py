"""Atomic writes, and the clean-up of what a killed writer leaves behind."""

from __future__ import annotations

import os
from pathlib import Path

from mainline_dht.runtime.atomic_file import STALE_TEMP_AGE, remove_stale_temp_files, write_atomically


def _age(path: Path, seconds: float) -> None:
    st = path.stat()
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def test_a_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.dat"
    write_atomically(path, b"one")
    write_atomically(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["f.dat"]


def test_a_write_removes_old_leftovers_of_the_same_file_only(tmp_path: Path) -> None:
    path = tmp_path / "f.dat"
    stale = tmp_path / ".f.dat.abc123.tmp"  # what a writer killed before its rename leaves
    fresh = tmp_path / ".f.dat.def456.tmp"  # maybe another writer, busy right now
    other = tmp_path / ".g.dat.abc123.tmp"  # another file's
    unrelated = tmp_path / "f.dat.corrupt-20260101T000000Z"
    for p in (stale, fresh, other, unrelated):
        p.write_bytes(b"x")
    for p in (stale, other, unrelated):
        _age(p, STALE_TEMP_AGE + 5)
    write_atomically(path, b"data")
    assert sorted(os.listdir(tmp_path)) == sorted(["f.dat", fresh.name, other.name, unrelated.name])


def test_clean_up_of_a_missing_directory_is_a_no_op(tmp_path: Path) -> None:
    assert remove_stale_temp_files(tmp_path / "no" / "f.dat") == 0
