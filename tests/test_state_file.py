"""Tests for mainline_dht.runtime.state_file: the saved routing table."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from mainline_dht.wire import bencode
from mainline_dht.runtime import state_file
from mainline_dht.wire.contact import Contact
from mainline_dht.errors import StateFileError
from mainline_dht.core.routing_table import RoutingTable
from mainline_dht.runtime.state_file import load_contacts, load_state, pack_contact, save_table, unpack_contact


def clock() -> float:
    return 1_700_000_000.5


def make_table(seed: int = 0, n: int = 40) -> RoutingTable:
    rng = random.Random(seed)
    table = RoutingTable(rng.randbytes(20))
    for i in range(n):
        ip = f"203.0.{i // 200}.{i % 200 + 1}" if i % 4 else f"2001:db8::{i + 1:x}"
        table.heard_from(Contact(rng.randbytes(20), (ip, 1000 + i)), 0.0, responded=True)
    return table


def test_round_trip(tmp_path: Path) -> None:
    table = make_table()
    path = tmp_path / "sub" / "table.dat"  # directory created on demand
    written = save_table(table, path, wall_clock=clock)
    own_id, contacts = load_contacts(path)
    assert own_id == table.own_id
    state = table.to_state()
    # Live entries first, then the replacements that answered us.
    assert contacts == state["nodes"] + state["replacements"]
    assert written == len(contacts) > len(table) == len(state["nodes"])
    assert any(":" in c.addr[0] for c in contacts) and any("." in c.addr[0] for c in contacts)


def test_file_format_is_the_documented_one(tmp_path: Path) -> None:
    table = make_table(n=5)
    path = tmp_path / "t.dat"
    save_table(table, path, wall_clock=clock)
    doc = bencode.decode_trusted(path.read_bytes())
    assert set(doc) == {b"version", b"id", b"nodes", b"saved"}
    assert doc[b"version"] == 1 and doc[b"id"] == table.own_id and doc[b"saved"] == 1_700_000_000
    assert all(len(n) in (26, 38) for n in doc[b"nodes"])


def test_bad_nodes_are_not_saved(tmp_path: Path) -> None:
    table = RoutingTable(b"\x01" * 20, max_per_ip=None)
    table.heard_from(Contact(b"\x80" * 20, ("203.0.113.1", 0)), 0.0, responded=True)
    table.heard_from(Contact(b"\x81" * 20, ("203.0.113.2", 7)), 0.0, responded=True)
    bad = Contact(b"\x82" * 20, ("203.0.113.3", 8))
    table.heard_from(bad, 0.0, responded=True)
    table.failed(bad, 1.0)
    table.failed(bad, 1.0)
    path = tmp_path / "t.dat"
    assert save_table(table, path, wall_clock=clock) == 1
    assert load_contacts(path)[1] == [Contact(b"\x81" * 20, ("203.0.113.2", 7))]


def test_compact_packing() -> None:
    v4 = Contact(b"\xab" * 20, ("1.2.3.4", 6881))
    v6 = Contact(b"\xcd" * 20, ("2001:db8::1", 443))
    assert pack_contact(v4) == b"\xab" * 20 + bytes([1, 2, 3, 4]) + (6881).to_bytes(2, "big")
    assert len(pack_contact(v6)) == 38
    assert unpack_contact(pack_contact(v4)) == v4
    assert unpack_contact(pack_contact(v6)) == v6
    with pytest.raises(ValueError):
        unpack_contact(b"\x00" * 27)
    with pytest.raises(ValueError):
        pack_contact(Contact(b"\x00" * 20, ("example.com", 1)))
    with pytest.raises(ValueError):
        pack_contact(Contact(b"\x00" * 20, ("1.2.3.4", 70000)))


def test_save_replaces_atomically_and_cleans_up_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.dat"
    save_table(make_table(seed=1), path, wall_clock=clock)
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_table(make_table(seed=2), path, wall_clock=clock)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["t.dat"]  # no temporary file left behind


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_contacts(tmp_path / "nope.dat")


GOOD_ID = b"\x07" * 20
GOOD_NODE = b"\x09" * 20 + bytes([1, 2, 3, 4, 0x1A, 0xE1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"this is not bencode", "corrupt"),
        (b"d7:version", "corrupt"),
        (bencode.encode([1, 2, 3]), "not a routing-table file"),
        (bencode.encode({b"announce": b"http://tracker", b"info": {b"name": b"x"}}), "not a routing-table file"),
        (bencode.encode({b"version": 2, b"id": GOOD_ID, b"nodes": [], b"saved": 1}), "version 2"),
        (bencode.encode({b"version": 1, b"id": b"short", b"nodes": [], b"saved": 1}), "node ID"),
        (bencode.encode({b"version": 1, b"id": GOOD_ID, b"nodes": [], b"saved": b"x"}), "save time"),
        (bencode.encode({b"version": 1, b"id": GOOD_ID, b"nodes": b"x", b"saved": 1}), "not a list"),
    ],
)
def test_bad_files_raise_state_file_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "t.dat"
    path.write_bytes(content)
    with pytest.raises(StateFileError, match=message):
        load_contacts(path)


def test_bad_node_entries_are_skipped_and_the_good_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "t.dat"
    path.write_bytes(bencode.encode({b"version": 1, b"id": GOOD_ID, b"nodes": [5, GOOD_NODE, b"x" * 30], b"saved": 1}))
    assert load_contacts(path) == (GOOD_ID, [Contact(b"\x09" * 20, ("1.2.3.4", 6881))])


def test_oversized_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.dat"
    path.write_bytes(b"x" * (state_file.MAX_STATE_FILE + 1))
    with pytest.raises(StateFileError, match="larger"):
        load_contacts(path)


def test_valid_hand_written_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "t.dat"
    path.write_bytes(bencode.encode({b"version": 1, b"id": GOOD_ID, b"nodes": [GOOD_NODE], b"saved": 1}))
    assert load_contacts(path) == (GOOD_ID, [Contact(b"\x09" * 20, ("1.2.3.4", 6881))])


def test_both_overlays_tables_round_trip(tmp_path: Path) -> None:
    """BEP 32: a dual-stack node saves one table and one ID per family."""
    rng = random.Random(7)
    table4 = RoutingTable(rng.randbytes(20))
    table6 = RoutingTable(rng.randbytes(20))
    for i in range(6):
        table4.heard_from(Contact(rng.randbytes(20), (f"203.0.113.{i + 1}", 1000 + i)), 0.0, responded=True)
        table6.heard_from(Contact(rng.randbytes(20), (f"2001:db8::{i + 1:x}", 2000 + i)), 0.0, responded=True)
    path = tmp_path / "dual.dat"
    assert save_table(table4, path, table6=table6, wall_clock=clock) == 12
    doc = bencode.decode_trusted(path.read_bytes())
    assert set(doc) == {b"version", b"id", b"nodes", b"saved", b"id6", b"nodes6"}
    state = load_state(path)
    assert state.ids == {4: table4.own_id, 6: table6.own_id}
    assert state.contacts[4] == table4.to_state()["nodes"]
    assert state.contacts[6] == table6.to_state()["nodes"]
    # An IPv6-only node: its ID stands in 'id' too, so older readers still find one.
    save_table(None, path, table6=table6, wall_clock=clock)
    state = load_state(path)
    assert state.ids[6] == table6.own_id and state.contacts[4] == []
    with pytest.raises(ValueError):
        save_table(None, path, wall_clock=clock)


def test_an_older_single_table_file_loads_into_both_families(tmp_path: Path) -> None:
    """Migration: a file written before the IPv6 overlay existed (one ID, mixed 'nodes')."""
    old_id = b"\x07" * 20
    v4 = Contact(b"\x01" * 20, ("203.0.113.1", 6881))
    v6 = Contact(b"\x02" * 20, ("2001:db8::2", 6882))
    path = tmp_path / "old.dat"
    path.write_bytes(
        bencode.encode({b"version": 1, b"id": old_id, b"nodes": [pack_contact(v4), pack_contact(v6)], b"saved": 1})
    )
    state = load_state(path)
    assert state.ids == {4: old_id, 6: old_id}
    assert state.contacts == {4: [v4], 6: [v6]}
    assert load_contacts(path) == (old_id, [v4, v6])
