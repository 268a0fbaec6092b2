"""BEP 42 in the routing table: valid IDs preferred when choosing whom to keep, enforcement
as an option, local addresses exempt. Public addresses appear only as strings."""

from __future__ import annotations

import random

from mainline_dht.core.node_id import is_id_valid_for_ip, node_id_for_ip
from mainline_dht.core.routing_table import Outcome, RoutingTable
from mainline_dht.wire.contact import Contact

VALID_IP = "124.31.75.21"


def _top(node_id: bytes) -> int:
    return node_id[0] >> 7


def _setup(rng: random.Random) -> tuple[bytes, Contact]:
    """(our own ID, a newcomer with a BEP 42-valid ID in the far half of the ID space)."""
    valid = node_id_for_ip(VALID_IP, rng)
    own = bytes([(1 - _top(valid)) << 7]) + bytes(19)
    return own, Contact(valid, (VALID_IP, 6881))


def _invalid_far(rng: random.Random, top: int, i: int) -> Contact:
    """A contact at a public address whose ID (in the half starting with bit ``top``) is not valid for it."""
    while True:
        node_id = bytes([(top << 7) | rng.randrange(128)]) + rng.randbytes(19)
        ip = f"30.0.{i}.1"
        if not is_id_valid_for_ip(node_id, ip):
            return Contact(node_id, (ip, 6881))


def _valid_far(rng: random.Random, top: int, i: int) -> Contact:
    for j in range(1, 255):
        ip = f"31.{i}.{j}.1"
        node_id = node_id_for_ip(ip, rng)
        if _top(node_id) == top:
            return Contact(node_id, (ip, 6881))
    raise AssertionError("no address gives an ID in that half")


def _full_bucket(table: RoutingTable, contacts: list[Contact]) -> None:
    for c in contacts:
        assert table.heard_from(c, 1.0, responded=True).outcome is Outcome.ADDED
    assert len(table.bucket_for(contacts[0].id).entries) == table.k


def test_a_valid_id_takes_the_place_of_an_invalid_one_in_a_full_bucket() -> None:
    rng = random.Random(1)
    own, newcomer = _setup(rng)
    table = RoutingTable(own, now=0.0)
    invalid = [_invalid_far(rng, _top(newcomer.id), i) for i in range(8)]
    _full_bucket(table, invalid)
    assert table.heard_from(newcomer, 2.0, responded=True).outcome is Outcome.ADDED
    assert newcomer.id in table
    bucket = table.bucket_for(newcomer.id)
    assert len(bucket.entries) == 8
    displaced = [c for c in invalid if c.id not in table]
    assert len(displaced) == 1
    assert displaced[0].id in {r.contact.id for r in bucket.replacements}


def test_without_the_preference_the_newcomer_waits_in_the_cache() -> None:
    rng = random.Random(1)
    own, newcomer = _setup(rng)
    table = RoutingTable(own, now=0.0, prefer_valid_ids=False)
    _full_bucket(table, [_invalid_far(rng, _top(newcomer.id), i) for i in range(8)])
    assert table.heard_from(newcomer, 2.0, responded=True).outcome is Outcome.REPLACEMENT_CACHED
    assert newcomer.id not in table


def test_valid_entries_are_not_displaced() -> None:
    rng = random.Random(2)
    own, newcomer = _setup(rng)
    table = RoutingTable(own, now=0.0)
    _full_bucket(table, [_valid_far(rng, _top(newcomer.id), i) for i in range(8)])
    assert table.heard_from(newcomer, 2.0, responded=True).outcome is Outcome.REPLACEMENT_CACHED


def test_an_invalid_newcomer_does_not_displace_anyone() -> None:
    rng = random.Random(3)
    own, newcomer = _setup(rng)
    table = RoutingTable(own, now=0.0)
    top = _top(newcomer.id)
    _full_bucket(table, [_invalid_far(rng, top, i) for i in range(8)])
    other = _invalid_far(rng, top, 99)
    assert table.heard_from(other, 2.0, responded=True).outcome is Outcome.REPLACEMENT_CACHED


def test_enforcement_keeps_invalid_ids_out_local_addresses_exempt() -> None:
    rng = random.Random(4)
    own, newcomer = _setup(rng)
    table = RoutingTable(own, now=0.0, enforce_valid_ids=True)
    invalid = _invalid_far(rng, _top(newcomer.id), 1)
    assert table.heard_from(invalid, 1.0, responded=True).outcome is Outcome.REJECTED
    assert table.heard_from(invalid, 1.0, responded=False).outcome is Outcome.REJECTED
    assert table.restore(invalid, 1.0) is False
    assert table.heard_from(newcomer, 1.0, responded=True).outcome is Outcome.ADDED
    local = Contact(invalid.id, ("192.168.7.7", 6881))
    assert table.heard_from(local, 1.0, responded=True).outcome is Outcome.ADDED
    # The option survives a new own ID (BEP 42 address change).
    moved = table.with_own_id(bytes([_top(newcomer.id) << 7]) + bytes(19), 2.0)
    assert moved.heard_from(_invalid_far(rng, 1 - _top(newcomer.id), 2), 3.0, responded=True).outcome is Outcome.REJECTED
    # Without enforcement the same contact gets in.
    assert RoutingTable(own, now=0.0).heard_from(invalid, 1.0, responded=True).outcome is Outcome.ADDED


def test_node_config_enforce_bep42_reaches_the_table() -> None:
    from mainline_dht.core.protocol import NodeConfig, NodeProtocol

    rng = random.Random(5)
    own, newcomer = _setup(rng)
    invalid = _invalid_far(rng, _top(newcomer.id), 1)
    enforcing = NodeProtocol(own, config=NodeConfig(enforce_bep42=True), rng=random.Random(0))
    assert enforcing.table.heard_from(invalid, 1.0, responded=True).outcome is Outcome.REJECTED
    default = NodeProtocol(own, rng=random.Random(0))
    assert default.table.heard_from(invalid, 1.0, responded=True).outcome is Outcome.ADDED
