"""Tests of mainline_dht.core.protocol: the sans-I/O node core, with scripted time.

Pure: no trio, no sockets. A core is spoken to either byte for byte as a stranger
would (``raw_query`` + ``ask`` from tests/helpers.py), or linked to other cores
over the fake wire of ``ProtocolNet`` / ``deliver_all``. Time is a float we move.
Addresses are 10.x.y.z: they exist only in these tests.
"""

from __future__ import annotations

import random

import pytest

from helpers import (
    ProtocolNet,
    ProtocolPair,
    ask,
    closest_ids,
    decode,
    deliver_all,
    drain_events,
    make_core,
    node_id,
    raw_query,
)
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Address, Contact
from mainline_dht.errors import LocalProtocolError
from mainline_dht.core.events import ExternalAddressChanged, PeerAnnounced, QueryTimedOut, ResponseReceived
from mainline_dht.wire.krpc import (
    FindNode,
    GetPeers,
    Ping,
    pack_nodes,
    pack_peer,
    unpack_nodes_untrusted,
    unpack_peer_untrusted,
)
from mainline_dht.core.protocol import CLIENT_VERSION, DEFAULT_QUERY_TIMEOUT, PEER_EXPIRY_SWEEP, NodeConfig, NodeProtocol
from mainline_dht.core.node_id import is_id_valid_for_ip, node_id_for_ip
from mainline_dht.core.rate_limit import DEFAULT_MAX_TRACKED
from mainline_dht.core.routing_table import BAD_AFTER_FAILURES, NodeStatus, TableEntry

SERVER: Address = ("10.0.0.1", 6881)
CLIENT: Address = ("10.9.8.7", 51413)
INFO_HASH = bytes(range(20))


def stranger(i: int, port: int = 6881) -> Address:
    """A distinct IPv4 address per ``i`` (one entry per IP is the table's rule)."""
    rest, host = divmod(i, 254)
    assert rest < 1 << 16
    return (f"10.{rest >> 8}.{rest & 255}.{host + 1}", port)


def populate(core: NodeProtocol, n: int, *, seed: int = 0, now: float = 0.0) -> list[Contact]:
    """Offer ``n`` random verified contacts to the core's table; return those it kept."""
    rng = random.Random(seed)
    for i in range(n):
        core.table.heard_from(Contact(rng.randbytes(20), stranger(0x20000 + i)), now, responded=True)
    return [e.contact for e in core.table]


def entry(core: NodeProtocol, node: bytes) -> TableEntry:
    """The live table entry of ``node`` (it must be there)."""
    e = core.table.get(node)
    assert e is not None
    return e


def timer(core: NodeProtocol) -> float:
    """The core's next deadline (it always has one: the peer sweep)."""
    t = core.get_timer()
    assert t is not None
    return t


def only_reply(core: NodeProtocol, data: bytes, addr: Address = CLIENT, now: float = 0.0) -> dict:
    replies = ask(core, data, addr, now)
    assert len(replies) == 1, replies
    return replies[0]


def get_token(core: NodeProtocol, addr: Address, now: float, info_hash: bytes = INFO_HASH) -> bytes:
    r = only_reply(core, raw_query(b"get_peers", {b"info_hash": info_hash}), addr, now)
    token = r[b"r"][b"token"]
    assert isinstance(token, bytes) and token
    return token


def announce(
    core: NodeProtocol,
    addr: Address,
    now: float,
    *,
    port: int = 6000,
    info_hash: bytes = INFO_HASH,
    token: bytes | None = None,
    implied_port: bool = False,
) -> dict:
    """Announce from ``addr`` (fetching a token first unless given); return the answer."""
    if token is None:
        token = get_token(core, addr, now, info_hash)
    args = {b"info_hash": info_hash, b"port": port, b"token": token}
    if implied_port:
        args[b"implied_port"] = 1
    return only_reply(core, raw_query(b"announce_peer", args), addr, now)


def error_code(msg: dict) -> int:
    assert msg[b"y"] == b"e", msg
    return msg[b"e"][0]


# --- every query kind ------------------------------------------------------------------------


def test_ping_is_answered_with_our_id_and_the_tid() -> None:
    core = make_core("s")
    r = only_reply(core, raw_query(b"ping", {}, tid=b"\x00\x07"))
    assert r[b"y"] == b"r"
    assert r[b"t"] == b"\x00\x07"
    assert r[b"r"][b"id"] == core.node_id
    assert core.stats.replies_sent == 1
    assert core.stats.queries_by_method == {b"ping": 1}


def test_find_node_returns_the_8_closest_as_compact_nodes() -> None:
    core = make_core("s")
    kept = populate(core, 200)
    assert len(kept) > 16  # enough that "closest" is a real choice
    target = random.Random(5).randbytes(20)
    r = only_reply(core, raw_query(b"find_node", {b"target": target}))
    raw = r[b"r"][b"nodes"]
    assert len(raw) == 8 * 26
    got = unpack_nodes_untrusted(raw)
    assert [c.id for c in got] == closest_ids([c.id for c in kept], target, 8)
    by_id = {c.id: c.addr for c in kept}
    assert all(by_id[c.id] == c.addr for c in got)


def test_find_node_with_few_contacts_returns_them_all() -> None:
    core = make_core("s")
    kept = populate(core, 3)
    r = only_reply(core, raw_query(b"find_node", {b"target": bytes(20)}))
    assert sorted(unpack_nodes_untrusted(r[b"r"][b"nodes"])) == sorted(kept)


def test_find_node_leaves_out_bad_contacts() -> None:
    core = make_core("s")
    kept = populate(core, 5)
    bad = kept[0]
    for _ in range(BAD_AFTER_FAILURES):
        core.table.failed(bad, 0.0)
    r = only_reply(core, raw_query(b"find_node", {b"target": bad.id}))
    ids = [c.id for c in unpack_nodes_untrusted(r[b"r"][b"nodes"])]
    assert bad.id not in ids and len(ids) == 4


def test_get_peers_without_peers_returns_token_and_nodes() -> None:
    core = make_core("s")
    kept = populate(core, 30)
    r = only_reply(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH}))[b"r"]
    assert b"values" not in r
    assert isinstance(r[b"token"], bytes) and len(r[b"token"]) >= 4
    got = [c.id for c in unpack_nodes_untrusted(r[b"nodes"])]
    assert got == closest_ids([c.id for c in kept], INFO_HASH, 8)


def test_get_peers_returns_announced_peers_capped_per_reply() -> None:
    core = make_core("s", config=NodeConfig(max_values_per_reply=5))
    announced = set()
    for i in range(3):
        addr = stranger(100 + i)
        assert announce(core, addr, 1.0, port=7000 + i)[b"y"] == b"r"
        announced.add((addr[0], 7000 + i))
    r = only_reply(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH}), now=2.0)[b"r"]
    assert {unpack_peer_untrusted(v) for v in r[b"values"]} == announced
    assert b"token" in r and b"nodes" in r  # nodes alongside values, as libtorrent does

    for i in range(3, 12):
        addr = stranger(100 + i)
        announce(core, addr, 3.0, port=7000 + i)
        announced.add((addr[0], 7000 + i))
    r = only_reply(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH}), now=4.0)[b"r"]
    values = [unpack_peer_untrusted(v) for v in r[b"values"]]
    assert len(values) == 5 and len(set(values)) == 5
    assert set(values) <= announced
    # Other infohashes stay empty.
    other = only_reply(core, raw_query(b"get_peers", {b"info_hash": b"\xff" * 20}), now=4.0)[b"r"]
    assert b"values" not in other


def test_announce_with_a_valid_token_stores_the_peer_and_emits_an_event() -> None:
    core = make_core("s")
    r = announce(core, CLIENT, 10.0, port=6001)
    assert r[b"y"] == b"r" and r[b"r"][b"id"] == core.node_id
    assert core.peer_store.get(INFO_HASH, 10.0, random.Random(0)) == [(CLIENT[0], 6001)]
    assert drain_events(core) == [PeerAnnounced(INFO_HASH, (CLIENT[0], 6001), False)]
    assert core.stats.announces_accepted == 1 and core.stats.bad_tokens == 0


def test_announce_with_seed_flag_reports_a_seed() -> None:
    core = make_core("s")
    token = get_token(core, CLIENT, 0.0)
    args = {b"info_hash": INFO_HASH, b"port": 6001, b"token": token, b"seed": 1}
    assert only_reply(core, raw_query(b"announce_peer", args))[b"y"] == b"r"
    assert drain_events(core) == [PeerAnnounced(INFO_HASH, (CLIENT[0], 6001), True)]


def test_a_token_survives_one_rotation() -> None:
    """The control for the expiry case below: 1 to 2 rotations is the BEP 5 lifetime."""
    rotation = 300.0
    core = make_core("s", config=NodeConfig(token_rotation=rotation))
    token = get_token(core, CLIENT, 0.0)
    assert announce(core, CLIENT, rotation + 1.0, token=token)[b"y"] == b"r"


@pytest.mark.parametrize("case", ["garbage", "other_ip", "expired", "other_infohash_ok"])
def test_bad_tokens_get_203_and_store_nothing(case: str) -> None:
    rotation = 300.0
    core = make_core("s", config=NodeConfig(token_rotation=rotation))
    now = 0.0
    if case == "garbage":
        token = b"\x00" * 8
    elif case == "other_ip":
        token = get_token(core, ("10.9.8.8", CLIENT[1]), now)
    elif case == "expired":
        token = get_token(core, CLIENT, now)
        # A get_peers from someone else after one rotation makes the secret rotate on time.
        get_token(core, stranger(5), rotation + 1.0)
        now = 2 * rotation + 1.0
    else:
        # Tokens are bound to the IP, not to the infohash (BEP 5): this one is fine.
        token = get_token(core, CLIENT, now, info_hash=b"\xee" * 20)
    r = announce(core, CLIENT, now, token=token)
    if case == "other_infohash_ok":
        assert r[b"y"] == b"r"
        return
    assert error_code(r) == 203
    assert core.peer_store.num_peers == 0
    assert drain_events(core) == []
    assert core.stats.bad_tokens == 1 and core.stats.announces_accepted == 0


def test_a_token_works_from_another_port_of_the_same_ip() -> None:
    core = make_core("s")
    token = get_token(core, (CLIENT[0], 1111), 0.0)
    assert announce(core, (CLIENT[0], 2222), 0.0, token=token)[b"y"] == b"r"


def test_implied_port_uses_the_source_port() -> None:
    core = make_core("s")
    addr = (CLIENT[0], 40123)
    assert announce(core, addr, 0.0, port=9999, implied_port=True)[b"y"] == b"r"
    assert core.peer_store.get(INFO_HASH, 0.0, random.Random(0)) == [addr]
    assert drain_events(core) == [PeerAnnounced(INFO_HASH, addr, False)]


def test_sample_infohashes_returns_samples_num_interval_and_nodes() -> None:
    core = make_core("s", config=NodeConfig(max_samples=4, sample_interval=1234))
    kept = populate(core, 30)
    hashes = [bytes([i]) * 20 for i in range(1, 7)]
    for i, h in enumerate(hashes):
        announce(core, stranger(300 + i), 0.0, info_hash=h)
    target = b"\x42" * 20
    r = only_reply(core, raw_query(b"sample_infohashes", {b"target": target}))[b"r"]
    samples = [r[b"samples"][i : i + 20] for i in range(0, len(r[b"samples"]), 20)]
    assert len(r[b"samples"]) == 4 * 20
    assert len(set(samples)) == 4 and set(samples) <= set(hashes)
    assert r[b"num"] == 6
    assert r[b"interval"] == 1234
    assert [c.id for c in unpack_nodes_untrusted(r[b"nodes"])] == closest_ids([c.id for c in kept], target, 8)


def test_sample_infohashes_with_nothing_stored() -> None:
    core = make_core("s")
    r = only_reply(core, raw_query(b"sample_infohashes", {b"target": bytes(20)}))[b"r"]
    assert r[b"samples"] == b"" and r[b"num"] == 0


def test_unknown_method_with_only_an_id_gets_204() -> None:
    core = make_core("s")
    r = only_reply(core, raw_query(b"vote", {}, tid=b"uu"))
    assert error_code(r) == 204 and r[b"t"] == b"uu"
    assert core.stats.errors_sent == 1


@pytest.mark.parametrize("key", [b"target", b"info_hash"])
def test_unknown_method_with_a_target_is_answered_like_find_node(key: bytes) -> None:
    core = make_core("s")
    populate(core, 40)
    target = b"\x99" * 20
    unknown = only_reply(core, raw_query(b"lookup_v9", {key: target}))
    find = only_reply(core, raw_query(b"find_node", {b"target": target}))
    assert unknown[b"y"] == b"r"
    assert unknown[b"r"][b"nodes"] == find[b"r"][b"nodes"] != b""


def test_unknown_methods_share_one_counter() -> None:
    """Method names come from strangers: counting each would grow memory without bound."""
    core = make_core("s")
    for i in range(50):
        ask(core, raw_query(b"m%d" % i, {}), stranger(i), 0.0)
    assert core.stats.queries_by_method == {b"unknown": 50}


# --- what every reply carries ------------------------------------------------------------------


def _every_kind() -> list[tuple[str, bytes]]:
    return [
        ("ping", raw_query(b"ping", {})),
        ("find_node", raw_query(b"find_node", {b"target": INFO_HASH})),
        ("get_peers", raw_query(b"get_peers", {b"info_hash": INFO_HASH})),
        ("announce_bad_token", raw_query(b"announce_peer", {b"info_hash": INFO_HASH, b"port": 1, b"token": b"x"})),
        ("sample_infohashes", raw_query(b"sample_infohashes", {b"target": INFO_HASH})),
        ("unknown_204", raw_query(b"frob", {})),
        ("unknown_target", raw_query(b"frob", {b"target": INFO_HASH})),
        ("malformed_203", raw_query(b"find_node", {b"target": b"short"})),
    ]


@pytest.mark.parametrize("addr", [("10.9.8.7", 51413), ("2001:db8::7", 6881)], ids=["v4", "v6"])
@pytest.mark.parametrize(("kind", "data"), _every_kind(), ids=[k for k, _ in _every_kind()])
def test_every_reply_and_error_carries_ip_and_v(kind: str, data: bytes, addr: Address) -> None:
    core = make_core("s")
    msg = only_reply(core, data, addr)
    assert msg[b"ip"] == pack_peer(addr)  # BEP 42: the querier's address as we saw it
    assert msg[b"v"] == CLIENT_VERSION
    assert msg[b"t"] == b"tx"


def test_no_v_when_the_version_is_none() -> None:
    core = make_core("s", config=NodeConfig(version=None))
    assert b"v" not in only_reply(core, raw_query(b"ping", {}))
    assert b"v" not in only_reply(core, raw_query(b"frob", {}))
    core.send_query(Ping(), SERVER, 0.0)
    [(data, _)] = core.datagrams_to_send()
    assert b"v" not in decode(data)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        raw_query(b"find_node", {b"target": b"\x01" * 19}, tid=b"zz"),
        raw_query(b"get_peers", {}, tid=b"zz"),
        raw_query(b"ping", {}, tid=b"zz", sender=b""),  # no id
        raw_query(b"ping", {b"id": b"\x01" * 21}, tid=b"zz"),
        raw_query(b"announce_peer", {b"info_hash": INFO_HASH, b"token": b"t"}, tid=b"zz"),  # no port
        bencode.encode({b"t": b"zz", b"y": b"q", b"q": b"ping", b"a": b"not a dict"}),
        bencode.encode({b"t": b"zz", b"y": b"q", b"a": {b"id": b"\x01" * 20}}),  # no q
    ],
)
def test_a_malformed_query_with_a_readable_tid_gets_exactly_one_203(data: bytes) -> None:
    core = make_core("s")
    core.receive_datagram(data, CLIENT, 0.0)
    out = core.datagrams_to_send()
    assert len(out) == 1
    payload, dst = out[0]
    msg = decode(payload)
    assert dst == CLIENT and msg[b"t"] == b"zz" and error_code(msg) == 203
    assert core.stats.malformed == 1
    assert len(core.table) == 0 and drain_events(core) == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"d1:t2:zz1:y1:q",  # truncated
        b"li1ei2ee",  # not a dict
        bencode.encode({b"y": b"q", b"q": b"ping", b"a": {b"id": b"\x01" * 20}}),  # no t
        bencode.encode({b"t": 7, b"y": b"q", b"q": b"ping", b"a": {b"id": b"\x01" * 20}}),
        bencode.encode({b"t": b"zz", b"y": b"x"}),
        b"d" * 5000 + b"e" * 5000,  # deep nesting
    ],
)
def test_unreadable_datagrams_are_dropped_and_counted(data: bytes) -> None:
    core = make_core("s")
    core.receive_datagram(data, CLIENT, 0.0)
    assert core.datagrams_to_send() == []
    assert core.stats.malformed == 1


@pytest.mark.parametrize(
    "r",
    [
        {b"id": b"\x01" * 19},
        {b"id": b"\x01" * 20, b"nodes": b"\x00" * 25},
        {b"id": b"\x01" * 20, b"values": [b"\x00" * 5]},
        {b"id": b"\x01" * 20, b"values": b"not a list"},
        b"not a dict",
    ],
)
def test_a_malformed_response_sends_nothing_and_is_counted(r: object) -> None:
    core = make_core("s")
    key = core.send_query(Ping(), SERVER, 0.0)
    core.datagrams_to_send()
    core.receive_datagram(bencode.encode({b"t": key[0], b"y": b"r", b"r": r}), SERVER, 0.1)
    assert core.datagrams_to_send() == []
    assert core.stats.malformed == 1
    assert drain_events(core) == []
    assert core.outstanding == 1  # still waiting: it times out as usual


def test_a_malformed_error_reply_is_counted() -> None:
    core = make_core("s")
    key = core.send_query(Ping(), SERVER, 0.0)
    core.datagrams_to_send()
    core.receive_datagram(bencode.encode({b"t": key[0], b"y": b"e", b"e": b"oops"}), SERVER, 0.1)
    assert core.datagrams_to_send() == [] and core.stats.malformed == 1


# --- matching replies --------------------------------------------------------------------------


def _response(tid: bytes, sender: bytes, **r: object) -> bytes:
    body: dict[bytes, object] = {b"id": sender}
    body.update({k.encode(): v for k, v in r.items()})
    return bencode.encode({b"t": tid, b"y": b"r", b"r": body})


def test_replies_are_matched_by_tid_and_address() -> None:
    core = make_core("s")
    key = core.send_query(Ping(), SERVER, 0.0)
    core.datagrams_to_send()
    tid = key[0]
    # The same tid from another address (a spoofer, or a confused node) is ignored.
    core.receive_datagram(_response(tid, b"\x05" * 20), ("10.6.6.6", 6881), 0.1)
    core.receive_datagram(_response(tid, b"\x05" * 20), (SERVER[0], SERVER[1] + 1), 0.1)
    assert drain_events(core) == [] and core.outstanding == 1
    assert core.stats.unexpected_responses == 2
    assert b"\x05" * 20 not in core.table
    # A wrong tid from the right address too.
    core.receive_datagram(_response(bytes([tid[0] ^ 1]) + tid[1:], b"\x05" * 20), SERVER, 0.1)
    assert core.stats.unexpected_responses == 3 and core.outstanding == 1
    core.receive_datagram(_response(tid, b"\x05" * 20), SERVER, 0.25)
    [event] = drain_events(core)
    assert isinstance(event, ResponseReceived)
    assert event.key == key and event.query == Ping() and event.response.sender_id == b"\x05" * 20
    assert event.rtt == pytest.approx(0.25)
    assert core.outstanding == 0
    # A duplicate of the reply is unexpected now.
    core.receive_datagram(_response(tid, b"\x05" * 20), SERVER, 0.3)
    assert drain_events(core) == [] and core.stats.unexpected_responses == 4


def test_an_error_reply_becomes_an_error_event() -> None:
    core = make_core("s")
    key = core.send_query(FindNode(INFO_HASH), SERVER, 0.0)
    core.datagrams_to_send()
    core.receive_datagram(bencode.encode({b"t": key[0], b"y": b"e", b"e": [202, b"busy"]}), SERVER, 0.1)
    [event] = drain_events(core)
    assert event.key == key and event.error.code == 202 and event.error.message == "busy"  # type: ignore[union-attr]
    assert core.outstanding == 0 and core.stats.errors_received == 1


def test_two_cores_answer_each_other_over_the_fake_wire() -> None:
    pair = ProtocolPair()
    key = pair.query(pair.A, GetPeers(INFO_HASH), pair.B)
    [event] = drain_events(pair.a)
    assert isinstance(event, ResponseReceived) and event.key == key
    assert event.response.sender_id == pair.b.node_id
    assert event.response.token is not None
    assert event.response.ip == pair.A  # BEP 42, parsed on our side
    assert pair.a.reported_addresses[-1] == pair.A
    # Both learned the other: A from the answer, B by verifying A with a ping.
    assert pair.b.node_id in pair.a.table and pair.a.node_id in pair.b.table


# --- BEP 42: our external address and node ID ----------------------------------------------

PUBLIC_IP = "21.43.65.87"  # never on the wire: these cores talk through a list


def _replies_reporting(core: NodeProtocol, ip: str, voters: int, now: float = 1.0) -> list[object]:
    """Answer a ping of ours from each of ``voters`` IPs, every reply reporting ``ip`` as ours."""
    for i in range(voters):
        src = stranger((3000 + i) * 254)  # one per /24: a /24 casts one vote
        key = core.send_query(Ping(), src, now)
        core.datagrams_to_send()
        reply = {b"t": key[0], b"y": b"r", b"r": {b"id": node_id(7000 + i)}, b"ip": pack_peer((ip, 6881))}
        core.receive_datagram(bencode.encode(reply), src, now)
    return drain_events(core)


def test_agreed_external_address_gives_a_bep42_node_id() -> None:
    core = make_core("s")
    old_id = core.node_id
    contacts = populate(core, 60)
    assert not is_id_valid_for_ip(old_id, PUBLIC_IP)
    events = _replies_reporting(core, PUBLIC_IP, 10)
    changed = [e for e in events if isinstance(e, ExternalAddressChanged)]
    assert len(changed) == 1 and changed[0].ip == PUBLIC_IP
    new_id = changed[0].new_node_id
    assert new_id is not None and new_id == core.node_id != old_id
    assert is_id_valid_for_ip(new_id, PUBLIC_IP)
    assert core.table.own_id == new_id
    # The contacts stay known (random IDs fill at least the two widest buckets
    # around any ID: see test_routing_table for the rebuild itself), and replies
    # carry the new ID.
    assert sum(c.id in core.table for c in contacts) >= 2 * core.table.k
    assert only_reply(core, raw_query(b"ping", {}), now=2.0)[b"r"][b"id"] == new_id
    # More agreeing reports change nothing.
    assert not [e for e in _replies_reporting(core, PUBLIC_IP, 5) if isinstance(e, ExternalAddressChanged)]


def test_fewer_reports_than_needed_change_nothing() -> None:
    core = make_core("s")
    old_id = core.node_id
    events = _replies_reporting(core, PUBLIC_IP, 9)
    assert not [e for e in events if isinstance(e, ExternalAddressChanged)]
    assert core.node_id == old_id and core.address_votes.current is None


@pytest.mark.parametrize(
    ("ip", "config"),
    [
        ("192.168.1.20", NodeConfig()),  # a local address: BEP 42 exempts it
        (PUBLIC_IP, NodeConfig(bep42_node_id=False)),  # told to keep its ID
        (PUBLIC_IP, NodeConfig(read_only=True)),  # BEP 43: in no one's table, so no need
    ],
)
def test_the_id_is_kept_when_bep42_does_not_apply(ip: str, config: NodeConfig) -> None:
    core = make_core("s", config=config)
    old_id = core.node_id
    [changed] = [e for e in _replies_reporting(core, ip, 10) if isinstance(e, ExternalAddressChanged)]
    assert changed == ExternalAddressChanged(ip, None)
    assert core.node_id == old_id


def test_an_id_already_valid_for_the_address_is_kept() -> None:
    valid = node_id_for_ip(PUBLIC_IP, random.Random(1))
    core = make_core("s", id=valid)
    [changed] = [e for e in _replies_reporting(core, PUBLIC_IP, 10) if isinstance(e, ExternalAddressChanged)]
    assert changed.new_node_id is None and core.node_id == valid


# --- timeouts ----------------------------------------------------------------------------------


def test_a_timeout_fires_at_its_deadline() -> None:
    core = make_core("s", now=10.0)  # (its first maintenance round is at 20 s)
    key = core.send_query(Ping(), SERVER, 10.0)
    core.datagrams_to_send()
    assert core.get_timer() == 10.0 + DEFAULT_QUERY_TIMEOUT
    core.handle_timer(10.0 + DEFAULT_QUERY_TIMEOUT - 0.001)
    assert drain_events(core) == [] and core.outstanding == 1
    core.handle_timer(10.0 + DEFAULT_QUERY_TIMEOUT)
    assert drain_events(core) == [QueryTimedOut(key, Ping())]
    assert core.outstanding == 0 and core.stats.timeouts == 1
    # A reply after the timeout is unexpected.
    core.receive_datagram(_response(key[0], b"\x05" * 20), SERVER, 16.0)
    assert drain_events(core) == [] and core.stats.unexpected_responses == 1


def test_a_custom_timeout_and_a_cancelled_query() -> None:
    core = make_core("s")
    k1 = core.send_query(Ping(), SERVER, 0.0, timeout=2.0)
    k2 = core.send_query(Ping(), stranger(9), 0.0, timeout=1.0)
    assert core.get_timer() == 1.0
    core.cancel(k2)
    core.handle_timer(1.0)
    assert drain_events(core) == []
    core.handle_timer(2.0)
    assert drain_events(core) == [QueryTimedOut(k1, Ping())]


def test_timeouts_count_against_the_table_entry_until_it_is_bad() -> None:
    core = make_core("s")
    contact = populate(core, 1)[0]
    now = 0.0
    assert entry(core, contact.id).status(now) is NodeStatus.GOOD
    for failures in range(1, BAD_AFTER_FAILURES + 1):
        core.send_query(Ping(), contact.addr, now, node_id=contact.id)
        now = timer(core)
        core.handle_timer(now)
        assert entry(core, contact.id).failures == failures
    assert entry(core, contact.id).status(now) is NodeStatus.BAD
    assert contact not in core.table.closest(contact.id, 8)


def test_a_timeout_without_node_id_or_learn_leaves_the_table_alone() -> None:
    core = make_core("s")
    contact = populate(core, 1)[0]
    core.send_query(Ping(), contact.addr, 0.0)  # no node_id
    core.send_query(Ping(), contact.addr, 0.0, node_id=contact.id, learn=False)
    core.handle_timer(100.0)
    assert entry(core, contact.id).failures == 0


# --- learning contacts -------------------------------------------------------------------------


def test_a_querier_is_verified_by_a_ping_and_enters_when_it_answers() -> None:
    core = make_core("s")
    them = b"\x33" * 20
    core.receive_datagram(raw_query(b"find_node", {b"target": INFO_HASH}, sender=them), CLIENT, 0.0)
    out = [(decode(d), a) for d, a in core.datagrams_to_send()]
    assert all(a == CLIENT for _, a in out)
    pings = [m for m, _ in out if m[b"y"] == b"q"]
    assert [m[b"q"] for m in pings] == [b"ping"] and [m[b"y"] for m, _ in out].count(b"r") == 1
    assert them not in core.table  # a spoofable query alone never admits anyone
    assert core.stats.verification_pings == 1
    # More queries meanwhile do not trigger more pings.
    core.receive_datagram(raw_query(b"ping", {}, sender=them), CLIENT, 0.5)
    assert [decode(d)[b"y"] for d, _ in core.datagrams_to_send()] == [b"r"]
    # The answer admits it, as good; no event for an internal ping.
    core.receive_datagram(_response(pings[0][b"t"], them), CLIENT, 1.0)
    assert entry(core, them).status(1.0) is NodeStatus.GOOD
    assert drain_events(core) == []


def test_a_querier_that_never_answers_stays_out() -> None:
    core = make_core("s")
    core.receive_datagram(raw_query(b"ping", {}, sender=b"\x33" * 20), CLIENT, 0.0)
    core.datagrams_to_send()
    core.handle_timer(60.0)
    assert len(core.table) == 0
    assert drain_events(core) == []  # internal pings time out silently
    assert core.stats.timeouts == 1


def test_nodes_learned_from_replies_are_pinged_and_join_the_table() -> None:
    net = ProtocolNet()
    a = net.add(("10.0.0.1", 6881), make_core("a"))
    b = net.add(("10.0.0.2", 6881), make_core("b"))
    others = [net.add(stranger(50 + i), make_core(f"c{i}")) for i in range(5)]
    for i, c in enumerate(others):  # b knows them; a does not
        b.table.heard_from(Contact(c.node_id, stranger(50 + i)), 0.0, responded=True)
    net.query(("10.0.0.1", 6881), FindNode(INFO_HASH), ("10.0.0.2", 6881))
    pinged = {d.destination for d in net.log if d.source == ("10.0.0.1", 6881) and d.message.get(b"q") == b"ping"}
    # (a may ping b too: b's verification ping of a can arrive before b's answer.)
    assert pinged - {("10.0.0.2", 6881)} == {stranger(50 + i) for i in range(5)}
    assert {e.id for e in a.table} == {b.node_id} | {c.node_id for c in others}


def test_only_nodes_that_would_fit_are_pinged() -> None:
    core = make_core("s", id=node_id(1))
    # Eight good contacts in the upper half of the ID space fill that bucket for good
    # (it does not hold our ID, so it never splits).
    for i in range(8):
        core.table.heard_from(Contact(node_id((1 << 159) + i), stranger(60 + i)), 0.0, responded=True)
    core.table.heard_from(Contact(node_id(1 << 100), stranger(70)), 0.0, responded=True)
    assert len(core.table) == 9
    no_room = Contact(node_id((1 << 159) + 100), stranger(80))
    room = Contact(node_id(1 << 120), stranger(81))
    key = core.send_query(FindNode(INFO_HASH), SERVER, 1.0)
    core.datagrams_to_send()
    core.receive_datagram(_response(key[0], node_id(1 << 140), nodes=pack_nodes([no_room, room])), SERVER, 1.1)
    pinged = [a for d, a in core.datagrams_to_send() if decode(d)[b"q"] == b"ping"]
    assert pinged == [room.addr]


def test_a_good_full_bucket_keeps_its_entries() -> None:
    core = make_core("s", id=node_id(1))
    upper = [Contact(node_id((1 << 159) + i), stranger(60 + i)) for i in range(8)]
    for c in upper:
        core.table.heard_from(c, 0.0, responded=True)
    core.table.heard_from(Contact(node_id(5), stranger(70)), 0.0, responded=True)  # split
    newcomer = b"\x80" + b"\x77" * 19
    core.receive_datagram(raw_query(b"ping", {}, sender=newcomer), CLIENT, 1.0)
    assert [decode(d)[b"y"] for d, _ in core.datagrams_to_send()] == [b"r"]
    assert newcomer not in core.table


def test_over_budget_pings_are_queued_and_sent_later() -> None:
    cfg = NodeConfig(ping_rate=2.0, max_pending_pings=4)
    core = make_core("s", config=cfg)
    for i in range(10):
        core.receive_datagram(raw_query(b"ping", {}, sender=bytes([i + 1]) * 20), stranger(400 + i), 0.0)
    sent_at: dict[Address, float] = {}

    def collect(now: float) -> None:
        for data, addr in core.datagrams_to_send():
            if decode(data)[b"y"] == b"q":
                assert addr not in sent_at
                sent_at[addr] = now

    collect(0.0)
    assert len(sent_at) == 2  # the budget's initial tokens
    assert core.stats.pings_rate_limited == 10 - 2 - 4  # beyond the queue bound: dropped
    assert core.get_timer() == pytest.approx(0.5, abs=1e-3)  # one token per 1/rate seconds
    now = 0.0
    while (t := timer(core)) < 30.0:
        assert t >= now  # never a timer in the past (a busy driver)
        now = t
        core.handle_timer(now)
        collect(now)
        assert len(core._pinging) <= cfg.max_pending_pings
        # The rate holds at every moment: the initial burst plus one per 1/rate seconds.
        assert len(sent_at) <= 2 + (now + 1e-3) * cfg.ping_rate
    assert len(sent_at) == 6
    assert core.stats.verification_pings == 6
    # One per 1/rate seconds, then none until slots free as pings time out.
    assert sorted(sent_at.values())[2:] == pytest.approx([0.5, 1.0, 5.0, 5.0], abs=1e-3)
    assert sent_at.keys() == {stranger(400 + i) for i in range(6)}


@pytest.mark.parametrize("start", [0.061, 0.531, 1.7, 12345.678])
@pytest.mark.parametrize("rate", [3.0, 50.0])
def test_the_timer_always_moves_on_while_pings_wait(start: float, rate: float) -> None:
    """A driver that sleeps until get_timer() must never be woken for nothing, again and again.

    Float rounding once left 0.99999... tokens at the instant get_timer named, so
    nothing was sent and get_timer named that same instant forever (a hang under
    trio's MockClock, a busy loop on the real clock).
    """
    core = make_core("s", config=NodeConfig(ping_rate=rate), now=start)
    for i in range(120):
        core.receive_datagram(raw_query(b"ping", {}, sender=bytes([i + 1]) * 20), stranger(600 + i), start)
    core.datagrams_to_send()
    now = start
    for _ in range(1000):
        if not core._ping_queue:
            break
        t = core.get_timer()
        assert t is not None
        core.handle_timer(t)
        sent = core.datagrams_to_send()
        assert sent or t > now, f"woken at {t!r} for nothing, twice"
        now = t
    assert not core._ping_queue


# --- read-only nodes (BEP 43) ------------------------------------------------------------------


def test_a_read_only_node_answers_nothing_and_sends_ro() -> None:
    core = make_core("s", config=NodeConfig(read_only=True))
    for data in [x for _, x in _every_kind()]:
        core.receive_datagram(data, CLIENT, 0.0)
    assert core.datagrams_to_send() == []
    assert len(core.table) == 0
    core.send_query(FindNode(INFO_HASH), SERVER, 0.0)
    [(data, _)] = core.datagrams_to_send()
    assert decode(data)[b"ro"] == 1


def test_a_read_only_querier_never_enters_our_table() -> None:
    pair = ProtocolPair(config_a=NodeConfig(read_only=True))
    for _ in range(3):
        pair.query(pair.A, Ping(), pair.B)
        pair.query(pair.A, FindNode(INFO_HASH), pair.B)
    # B answered, but never pinged A to verify it, and never listed it.
    assert all(d.message[b"y"] == b"r" for d in pair.log if d.source == pair.B)
    assert len(pair.b.table) == 0
    assert pair.a.node_id not in pair.b.table
    assert pair.b.node_id in pair.a.table  # A still learns from answers


def test_normal_queries_do_not_carry_ro() -> None:
    core = make_core("s")
    core.send_query(Ping(), SERVER, 0.0)
    [(data, _)] = core.datagrams_to_send()
    assert b"ro" not in decode(data)


# --- limits ------------------------------------------------------------------------------------


def test_max_outstanding_is_enforced() -> None:
    core = make_core("s", config=NodeConfig(max_outstanding=3))
    keys = [core.send_query(Ping(), stranger(500 + i), 0.0, timeout=1.0 + i) for i in range(3)]
    with pytest.raises(LocalProtocolError):
        core.send_query(Ping(), stranger(510), 0.0)
    # Strangers' queries are still answered, and never raise; the verification ping waits.
    assert len(ask(core, raw_query(b"ping", {}, sender=b"\x44" * 20), stranger(520), 0.0)) == 1
    assert core.outstanding == 3
    core.handle_timer(1.0)
    assert drain_events(core) == [QueryTimedOut(keys[0], Ping())]
    # The freed slot goes to the waiting verification ping...
    assert [(decode(d)[b"q"], a) for d, a in core.datagrams_to_send()] == [(b"ping", stranger(520))]
    assert core.outstanding == 3
    with pytest.raises(LocalProtocolError):
        core.send_query(Ping(), stranger(510), 1.0)
    # ...and the next one to us.
    core.handle_timer(2.0)
    core.send_query(Ping(), stranger(510), 2.0)
    assert core.outstanding == 3


@pytest.mark.parametrize("addr", [("10.0.0.1", 0), ("10.0.0.1", 70000)])
def test_sending_to_a_bad_port_is_refused(addr: Address) -> None:
    core = make_core("s")
    with pytest.raises(LocalProtocolError):
        core.send_query(Ping(), addr, 0.0)


def test_node_id_must_be_20_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        NodeProtocol(b"\x01" * 19, rng=random.Random(0))


def test_expired_peers_are_swept() -> None:
    ttl = 1800.0
    core = make_core("s", config=NodeConfig(peer_ttl=ttl))
    announce(core, CLIENT, 0.0)
    assert core.peer_store.num_peers == 1
    now = 0.0
    fired = 0
    while True:
        t = core.get_timer()
        assert t is not None and t <= now + PEER_EXPIRY_SWEEP  # the sweep is always scheduled
        if t >= ttl:
            break
        now = t
        core.handle_timer(now)
        fired += 1
        assert core.peer_store.num_peers == 1  # not yet expired
    assert fired >= ttl // PEER_EXPIRY_SWEEP - 1
    core.handle_timer(t)
    assert core.peer_store.num_peers == 0 and core.peer_store.num_infohashes == 0


def test_a_flood_of_spoofed_queries_leaves_memory_bounded() -> None:
    """100,000 queries from distinct spoofed sources, none of which ever answers.

    The global budget is off, so that every query is read and answered: this is
    about memory (tests/test_hostile.py shows the budget refusing such a flood).
    """
    cfg = NodeConfig(reply_rate=None)
    core = make_core("s", config=cfg)
    populate(core, 50)
    table_before = len(core.table)
    rng = random.Random(7)
    methods = [b"ping", b"find_node", b"get_peers", b"sample_infohashes", b"frob"]
    now = 0.0
    replies = 0
    for i in range(100_000):
        method = methods[i % 5]
        args = {b"target": rng.randbytes(20), b"info_hash": rng.randbytes(20)}
        addr = (f"11.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1024 + i % 60000)
        core.receive_datagram(raw_query(method, args, sender=rng.randbytes(20), tid=b"%x" % i), addr, now)
        now += 0.0005  # 2,000 queries a second for 50 s
        t = core.get_timer()
        if t is not None and t <= now:
            core.handle_timer(now)
        replies += sum(1 for _, a in core.datagrams_to_send() if a == addr)
        if i % 5000 == 0:
            assert core.outstanding <= cfg.max_pending_pings
            assert len(core._ping_queue) <= cfg.max_pending_pings
    assert replies >= 100_000  # every query was answered
    assert core.outstanding <= cfg.max_pending_pings
    assert len(core._ping_queue) <= cfg.max_pending_pings
    assert len(core._deadlines) <= 2 * cfg.max_pending_pings
    # Pings went out at the configured rate, no faster.
    assert core.stats.verification_pings <= cfg.ping_rate * now + cfg.ping_rate + 1
    # No stranger entered the table (none answered a ping); it did not grow.
    assert len(core.table) == table_before
    replacements = sum(len(b.replacements) for b in core.table.buckets)
    assert replacements <= len(core.table.buckets) * 8
    assert len(core.stats.queries_by_method) <= 6
    assert len(core.reported_addresses) <= 32
    assert core.peer_store.num_peers == 0
    assert drain_events(core) == []


def _kinds_of_query(i: int) -> bytes:
    """Query ``i`` of a mixed stream: every method, and a malformed one that earns a 203."""
    return [
        raw_query(b"ping", {}, tid=b"%x" % i),
        raw_query(b"find_node", {b"target": INFO_HASH}, tid=b"%x" % i),
        raw_query(b"get_peers", {b"info_hash": INFO_HASH}, tid=b"%x" % i),
        raw_query(b"sample_infohashes", {b"target": INFO_HASH}, tid=b"%x" % i),
        raw_query(b"announce_peer", {b"info_hash": INFO_HASH, b"port": 1, b"token": b"x"}, tid=b"%x" % i),
        raw_query(b"frob", {}, tid=b"%x" % i),
        raw_query(b"get_peers", {}, tid=b"%x" % i),  # malformed
    ][i % 7]


def test_one_ip_gets_its_budget_of_answers_then_is_ignored() -> None:
    cfg = NodeConfig()
    core = make_core("s", config=cfg)
    populate(core, 30)
    burst = int(cfg.query_burst_per_ip)
    # A burst of every kind of query from one IP, from many ports: the budget is per IP.
    answered = sum(
        len(ask(core, _kinds_of_query(i), (CLIENT[0], 1024 + i), 0.0)) for i in range(1000)
    )
    assert answered == burst
    assert core.stats.queries_rate_limited == 1000 - burst
    # Dropped before decoding: only the admitted ones were read at all.
    assert core.stats.queries_received + core.stats.malformed == burst
    # Another IP is answered meanwhile; the flooder is ignored for the ban's length.
    assert len(ask(core, raw_query(b"ping", {}), SERVER, 0.0)) == 1
    assert sum(len(ask(core, raw_query(b"ping", {}), CLIENT, 60.0)) for _ in range(10)) == 0
    later = cfg.flood_ban_seconds + 1
    assert sum(len(ask(core, raw_query(b"ping", {}), CLIENT, later)) for _ in range(10)) == 10
    # Refused queriers do not reach the routing table or the peer store.
    assert core.peer_store.num_peers == 0


def test_replies_to_our_queries_are_not_charged_to_the_budget() -> None:
    core = make_core("s")
    for i in range(200):
        ask(core, raw_query(b"ping", {}), SERVER, 0.0)
    assert core.stats.queries_rate_limited > 0
    key = core.send_query(Ping(), SERVER, 0.0)
    core.datagrams_to_send()
    drain_events(core)
    core.receive_datagram(_response(key[0], b"\x05" * 20), SERVER, 0.1)
    [event] = drain_events(core)
    assert isinstance(event, ResponseReceived) and event.key == key


def test_no_budget_when_the_rate_is_none() -> None:
    core = make_core("s", config=NodeConfig(query_rate_per_ip=None))
    assert core.query_limiter is None
    assert sum(len(ask(core, raw_query(b"ping", {}), CLIENT, 0.0)) for _ in range(1000)) == 1000
    assert core.stats.queries_rate_limited == 0


def test_deliver_all_moves_datagrams_until_quiet() -> None:
    """The fake wire itself: a three-core exchange settles, and lost datagrams vanish."""
    cores = {stranger(900 + i): make_core(f"w{i}") for i in range(3)}
    addrs = list(cores)
    cores[addrs[0]].send_query(Ping(), addrs[1], 0.0)
    cores[addrs[0]].send_query(Ping(), ("10.200.0.1", 6881), 0.0)  # nobody there
    log = deliver_all(cores, 0.0)
    assert any(d.destination == ("10.200.0.1", 6881) for d in log)
    assert all(not c.datagrams_to_send() for c in cores.values())
    lost = deliver_all(cores, 0.0, drop=lambda d: True)
    assert lost == []
