"""The protocol core's lookup hints: measured round trips, timeouts, and the recent-contacts cache.

Pure: cores driven with scripted time (tests/helpers.py); no trio.
"""

from __future__ import annotations

import math

import pytest

from helpers import drain_events, make_core
from mainline_dht.core.protocol import NodeConfig, NodeProtocol
from mainline_dht.core.rtt import DEFAULT_FALLBACK_TIMEOUT, DEFAULT_MIN_TIMEOUT
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Address, Contact
from mainline_dht.wire.krpc import FindNode, Ping, pack_nodes

FAR: Address = ("10.0.0.1", 6881)
ROUTER: Address = ("10.0.0.2", 6881)


def reply(core_tid: bytes, sender: bytes) -> bytes:
    return bencode.encode({b"t": core_tid, b"y": b"r", b"r": {b"id": sender}})


def answer(
    core: NodeProtocol, addr: Address, sender: bytes, sent: float, rtt: float, *, node_id: bytes | None = None, learn: bool = True
) -> None:
    key = core.send_query(Ping(), addr, sent, node_id=node_id, learn=learn)
    core.datagrams_to_send()
    core.receive_datagram(reply(key[0], sender), addr, sent + rtt)
    drain_events(core)


def test_answers_train_the_node_wide_and_the_contact_estimates() -> None:
    core = make_core("hints")
    peer = Contact(b"\x42" * 20, FAR)
    assert core.soft_timeout_for(peer) == DEFAULT_FALLBACK_TIMEOUT  # nothing measured yet
    for i in range(6):
        answer(core, FAR, peer.id, float(i), 0.3)
    assert core.rtt.node.samples == 6 and core.rtt.node.srtt == pytest.approx(0.3)
    assert core.recent is not None
    assert core.recent.rtt_of(peer) is not None and core.expected_rtt(peer) == pytest.approx(0.3)
    # A stranger gets the node-wide timeout, the known contact its own (here the same RTT).
    stranger = Contact(b"\x07" * 20, ("10.0.0.9", 6881))
    assert core.expected_rtt(stranger) == math.inf
    assert core.soft_timeout_for(stranger) == pytest.approx(max(DEFAULT_MIN_TIMEOUT, core.rtt.timeout()))
    # Steady 0.3 s answers: twice the contact's RTT (its deviation is floored at srtt / 4).
    assert core.soft_timeout_for(peer) == pytest.approx(0.6)


def test_a_fast_contact_gets_a_shorter_timeout_than_the_node_wide_one() -> None:
    core = make_core("fast")
    fast = Contact(b"\x01" * 20, ("10.0.1.1", 6881))
    for i in range(20):
        # The node's answers spread between 0.2 and 0.8 s; this contact answers in 0.05 s.
        answer(core, (f"10.0.2.{i}", 6881), bytes([0x80 + i]) * 20, float(i), 0.2 + 0.6 * (i % 2))
        answer(core, fast.addr, fast.id, float(i) + 0.5, 0.05)
    assert core.soft_timeout_for(fast) < core.soft_timeout_for(Contact(b"\x09" * 20, ("10.0.3.3", 6881)))


def test_a_timeout_drops_the_contact_from_the_cache() -> None:
    core = make_core("timeout")
    peer = Contact(b"\x42" * 20, FAR)
    answer(core, FAR, peer.id, 0.0, 0.1, node_id=peer.id)
    assert core.recent is not None and peer in core.recent
    core.send_query(FindNode(b"\x00" * 20), FAR, 1.0, node_id=peer.id, timeout=2.0)
    core.handle_timer(3.5)
    assert peer not in core.recent and core.expected_rtt(peer) == math.inf


def test_routers_and_unlearned_repliers_stay_out_of_the_cache() -> None:
    core = make_core("routers")
    core.router_addresses.add(ROUTER)
    answer(core, ROUTER, b"\x11" * 20, 0.0, 0.1)  # a router, even one we would learn from
    answer(core, FAR, b"\x12" * 20, 1.0, 0.1, learn=False)
    assert core.recent is not None and len(core.recent) == 0
    assert core.rtt.node.samples == 2  # their round trips still count node-wide


def test_lookup_seeds_add_the_cached_contacts_closest_to_the_target() -> None:
    core = make_core("seeds", id=b"\x00" * 20)
    near = Contact(b"\xf0" + b"\x00" * 19, ("10.0.5.5", 6881))
    answer(core, near.addr, near.id, 0.0, 0.1)
    target = b"\xf0" + b"\x01" * 19
    seeds = core.lookup_seeds(target, 16, 1.0)
    assert near in seeds
    # Turned off: only the routing table.
    off = make_core("seeds-off", id=b"\x00" * 20, config=NodeConfig(recent_contacts=0))
    answer(off, near.addr, near.id, 0.0, 0.1)
    assert off.recent is None and off.expected_rtt(near) == math.inf
    assert off.lookup_seeds(target, 16, 1.0) == off.table.closest(target, 16)


def test_contacts_an_answer_names_seed_lookups_until_they_fail_to_answer() -> None:
    """The first k nodes of an answer enter the named-contacts cache, unverified;
    lookups start from the closest of them too; one that times out leaves it."""
    core = make_core("named", id=b"\x00" * 20)
    named = [Contact(bytes([0x80 + i]) + b"\x05" * 19, (f"10.1.{i}.1", 6881)) for i in range(12)]
    key = core.send_query(FindNode(b"\x80" * 20), FAR, 0.0, node_id=b"\x42" * 20)
    core.datagrams_to_send()
    body = {b"id": b"\x42" * 20, b"nodes": pack_nodes(named)}
    core.receive_datagram(bencode.encode({b"t": key[0], b"y": b"r", b"r": body}), FAR, 0.1)
    drain_events(core)
    assert core.heard is not None
    assert [c in core.heard for c in named] == [True] * core.config.k + [False] * (12 - core.config.k)
    assert Contact(b"\x42" * 20, FAR) not in core.heard  # it answered: the recent cache has it
    target = bytes([0x83]) + b"\x05" * 19
    seeds = core.lookup_seeds(target, 16, 1.0)
    assert named[3] in seeds and named[10] not in seeds
    assert core.expected_rtt(named[3]) == math.inf  # never measured: asked after known-fast ones
    core.send_query(FindNode(target), named[3].addr, 1.0, node_id=named[3].id, timeout=2.0)
    core.handle_timer(3.5)
    assert named[3] not in core.heard and named[3] not in core.lookup_seeds(target, 16, 4.0)
    # Turned off: the answer's nodes seed nothing.
    off = make_core("named-off", id=b"\x00" * 20, config=NodeConfig(heard_contacts=0))
    key = off.send_query(FindNode(b"\x80" * 20), FAR, 0.0, node_id=b"\x42" * 20)
    off.datagrams_to_send()
    off.receive_datagram(bencode.encode({b"t": key[0], b"y": b"r", b"r": body}), FAR, 0.1)
    assert off.heard is None
    assert off.recent is not None
    assert off.lookup_seeds(target, 16, 1.0) == off.table.closest(target, 16) + off.recent.closest(target, 16, 1.0)
