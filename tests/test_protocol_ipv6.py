"""BEP 32 in the core: one core per overlay family, sharing a peer store and tokens.

Pure: cores driven with raw datagrams and scripted time, no trio.
"""

from __future__ import annotations

import random

import pytest

from mainline_dht.core.protocol import NodeConfig, NodeProtocol
from mainline_dht.errors import LocalProtocolError
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Contact
from mainline_dht.wire.krpc import (
    FindNode,
    ResponseMessage,
    encode_message,
    unpack_nodes_untrusted,
    unpack_peer_untrusted,
)

from helpers import ask, raw_query

INFO = b"\x42" * 20
V4_QUERIER = ("10.0.0.9", 4000)
V6_QUERIER = ("fd00::9", 4000)


def dual(seed: str = "dual", **config: object) -> tuple[NodeProtocol, NodeProtocol]:
    """A dual-stack pair of cores (IPv4, IPv6) with a few contacts in each table."""
    cfg = NodeConfig(**config)  # type: ignore[arg-type]
    core4 = NodeProtocol(random.Random(seed).randbytes(20), config=cfg, rng=random.Random(seed), family=4)
    core6 = NodeProtocol(random.Random(seed + "6").randbytes(20), config=cfg, rng=random.Random(seed + "6"), family=6, sibling=core4)
    for i in range(1, 6):
        core4.table.heard_from(Contact(bytes([i]) * 20, (f"10.1.0.{i}", 6881)), 0.0, responded=True)
        core6.table.heard_from(Contact(bytes([0x80 + i]) * 20, (f"fd00::1:{i}", 6881)), 0.0, responded=True)
    return core4, core6


def reply_to(core: NodeProtocol, method: bytes, args: dict[bytes, object], addr: tuple[str, int]) -> dict[bytes, object]:
    (msg,) = ask(core, raw_query(method, args), addr, 1.0)
    assert msg[b"y"] == b"r"
    r = msg[b"r"]
    assert isinstance(r, dict)
    return r


def test_sibling_cores_share_the_peer_store_and_tokens() -> None:
    core4, core6 = dual()
    assert core4.sibling is core6 and core6.sibling is core4
    assert core4.peer_store is core6.peer_store and core4.tokens is core6.tokens
    with pytest.raises(LocalProtocolError):
        NodeProtocol(b"x" * 20, rng=random.Random(0), family=4, sibling=core4)
    with pytest.raises(LocalProtocolError):
        NodeProtocol(b"x" * 20, rng=random.Random(0), family=5)


@pytest.mark.parametrize("method", [b"find_node", b"get_peers"])
def test_without_want_each_querier_gets_nodes_of_its_own_family(method: bytes) -> None:
    core4, core6 = dual()
    key = b"target" if method == b"find_node" else b"info_hash"
    r6 = reply_to(core6, method, {key: INFO}, V6_QUERIER)
    assert b"nodes" not in r6
    nodes6 = unpack_nodes_untrusted(r6[b"nodes6"], ipv6=True)  # type: ignore[arg-type]
    assert len(nodes6) == 5 and all(":" in c.addr[0] for c in nodes6)
    r4 = reply_to(core4, method, {key: INFO}, V4_QUERIER)
    assert b"nodes6" not in r4
    assert {c.addr for c in unpack_nodes_untrusted(r4[b"nodes"])} == {(f"10.1.0.{i}", 6881) for i in range(1, 6)}  # type: ignore[arg-type]


@pytest.mark.parametrize("method", [b"find_node", b"get_peers", b"sample_infohashes", b"vote"])
@pytest.mark.parametrize(
    ("want", "keys"),
    [([b"n4", b"n6"], {b"nodes", b"nodes6"}), ([b"n6"], {b"nodes6"}), ([b"n4"], {b"nodes"})],
)
def test_want_names_the_families_sent(method: bytes, want: list[bytes], keys: set[bytes]) -> None:
    for core, querier in zip(dual(), (V4_QUERIER, V6_QUERIER)):
        key = b"info_hash" if method == b"get_peers" else b"target"
        r = reply_to(core, method, {key: INFO, b"want": want}, querier)
        assert {k for k in r if k.startswith(b"nodes")} == keys
        if b"nodes6" in r:
            assert len(unpack_nodes_untrusted(r[b"nodes6"], ipv6=True)) == 5  # type: ignore[arg-type]
        if b"nodes" in r:
            assert len(unpack_nodes_untrusted(r[b"nodes"])) == 5  # type: ignore[arg-type]


def test_a_single_family_node_answers_want_for_the_other_family_with_its_own() -> None:
    core6 = NodeProtocol(b"\x01" * 20, rng=random.Random(1), family=6)
    core6.table.heard_from(Contact(b"\x02" * 20, ("fd00::2", 1)), 0.0, responded=True)
    r = reply_to(core6, b"find_node", {b"target": INFO, b"want": [b"n4"]}, V6_QUERIER)
    assert set(r) >= {b"nodes6"} and b"nodes" not in r
    # Junk want entries count as no want.
    r = reply_to(core6, b"find_node", {b"target": INFO, b"want": [b"n5", 4]}, V6_QUERIER)
    assert b"nodes6" in r and b"nodes" not in r


def test_values_follow_the_querier_family_unless_want_asks_for_the_other() -> None:
    core4, core6 = dual()
    for i in range(3):
        core4.peer_store.add(INFO, (f"10.9.0.{i}", 1000 + i), 0.0)
        core4.peer_store.add(INFO, (f"fd00::9:{i}", 2000 + i), 0.0)

    def values(core: NodeProtocol, querier: tuple[str, int], want: list[bytes] | None = None) -> set[tuple[str, int]]:
        args: dict[bytes, object] = {b"info_hash": INFO}
        if want is not None:
            args[b"want"] = want
        r = reply_to(core, b"get_peers", args, querier)
        return {unpack_peer_untrusted(v) for v in r[b"values"]}  # type: ignore[attr-defined]

    v4 = {(f"10.9.0.{i}", 1000 + i) for i in range(3)}
    v6 = {(f"fd00::9:{i}", 2000 + i) for i in range(3)}
    assert values(core4, V4_QUERIER) == v4
    assert values(core6, V6_QUERIER) == v6
    assert values(core4, V4_QUERIER, [b"n4"]) == v4
    assert values(core4, V4_QUERIER, [b"n4", b"n6"]) == v4 | v6
    assert values(core6, V6_QUERIER, [b"n4", b"n6"]) == v4 | v6
    # A single-family node too never hands a querier peers of the other family unasked.
    lone = NodeProtocol(b"\x05" * 20, rng=random.Random(5))
    lone.peer_store.add(INFO, ("fd00::1", 1), 0.0)
    lone.peer_store.add(INFO, ("10.0.0.1", 1), 0.0)
    assert values(lone, V4_QUERIER) == {("10.0.0.1", 1)}


def test_an_announce_over_ipv6_is_served_to_ipv4_queriers_that_want_it() -> None:
    core4, core6 = dual()
    r = reply_to(core6, b"get_peers", {b"info_hash": INFO}, V6_QUERIER)
    (ack,) = ask(
        core6,
        raw_query(b"announce_peer", {b"info_hash": INFO, b"port": 7000, b"token": r[b"token"]}),
        V6_QUERIER,
        2.0,
    )
    assert ack[b"y"] == b"r"
    r4 = reply_to(core4, b"get_peers", {b"info_hash": INFO, b"want": [b"n4", b"n6"]}, V4_QUERIER)
    assert [unpack_peer_untrusted(v) for v in r4[b"values"]] == [("fd00::9", 7000)]  # type: ignore[attr-defined]
    assert b"values" not in reply_to(core4, b"get_peers", {b"info_hash": INFO}, V4_QUERIER)


def test_hand_built_replies_are_canonical_bencode_for_both_families() -> None:
    core4, core6 = dual()
    core4.peer_store.add(INFO, ("fd00::7", 7), 0.0)
    core4.peer_store.add(INFO, ("10.0.0.7", 7), 0.0)
    for core, querier in ((core4, V4_QUERIER), (core6, V6_QUERIER)):
        for want in (None, [b"n6"], [b"n4", b"n6"]):
            args: dict[bytes, object] = {b"info_hash": INFO}
            if want:
                args[b"want"] = want
            core.receive_datagram(raw_query(b"get_peers", args), querier, 1.0)
            (data,) = [d for d, dest in core.datagrams_to_send() if dest == querier and b"1:y1:r" in d]
            assert bencode.encode(bencode.decode_untrusted(data)) == data


def test_each_core_learns_only_its_own_family_from_replies() -> None:
    core4, core6 = dual()
    v4_contact = Contact(b"\x33" * 20, ("10.3.3.3", 3))
    v6_contact = Contact(b"\x66" * 20, ("fd00::66", 6))
    for core, responder in ((core4, ("10.2.2.2", 2)), (core6, ("fd00::22", 2))):
        key = core.send_query(FindNode(INFO), responder, 0.0)
        core.datagrams_to_send()
        reply = ResponseMessage(key[0], b"\x22" * 20, nodes=(v4_contact,), nodes6=(v6_contact,))
        core.receive_datagram(encode_message(reply), responder, 0.1)
        pinged = {dest for _, dest in core.datagrams_to_send()}
        assert pinged == ({v4_contact.addr} if core is core4 else {v6_contact.addr})
        assert all((":" in e.addr[0]) == (core is core6) for e in core.table)


def test_external_address_votes_count_only_the_core_family() -> None:
    core4, core6 = dual()
    for i in range(12):
        responder = (f"fd00::a:{i}", 1)
        key = core6.send_query(FindNode(INFO), responder, 0.0)
        reply = ResponseMessage(key[0], bytes([i + 1]) * 20, ip=("198.51.100.7", 6881))
        core6.receive_datagram(encode_message(reply), responder, 0.1)
    assert core6.address_votes.current is None and not core6.reported_addresses
    for i in range(12):
        responder = (f"fd00:{i:x}::b", 1)  # one /64 each: a /64 casts one vote
        key = core6.send_query(FindNode(INFO), responder, 0.0)
        reply = ResponseMessage(key[0], bytes([i + 1]) * 20, ip=("2001:db8::7", 6881))
        core6.receive_datagram(encode_message(reply), responder, 0.1)
    assert core6.address_votes.current == "2001:db8::7"
    assert core4.address_votes.current is None
