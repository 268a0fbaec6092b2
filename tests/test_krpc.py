"""Tests for mainline_dht.wire.krpc: message round trips, compact formats, validation.

Wire vectors marked "BEP 5" are the examples printed in BEP 5 itself.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainline_dht.wire.bencode import decode_untrusted, encode
from mainline_dht.wire.contact import Contact
from mainline_dht.errors import DecodeError, LocalProtocolError
from mainline_dht.wire.krpc import (
    MAX_TID_LENGTH,
    MAX_TOKEN_LENGTH,
    AnnouncePeer,
    ErrorCode,
    ErrorMessage,
    FindNode,
    GetPeers,
    Message,
    Ping,
    Query,
    QueryMessage,
    ResponseMessage,
    SampleInfohashes,
    UnknownQuery,
    decode_message_untrusted,
    encode_message,
    method_of,
    pack_nodes,
    pack_peer,
    pack_peers,
    unpack_nodes_untrusted,
    unpack_peer_untrusted,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

ID_A = b"abcdefghij0123456789"
ID_B = b"mnopqrstuvwxyz123456"
NODE_V4 = Contact(b"N" * 20, ("192.0.2.7", 6881))
NODE_V4_B = Contact(b"O" * 20, ("203.0.113.200", 1))
NODE_V6 = Contact(b"S" * 20, ("2001:db8::1", 51413))
BLOOM_SEEDS = bytes(range(256))
BLOOM_PEERS = bytes(255 - i for i in range(256))
#: An IPv4-mapped IPv6 address in the text form the decoder produces (Python's canonical form).
MAPPED = str(ipaddress.IPv6Address("::ffff:1.2.3.4"))


def _round_trip(msg: Message) -> Message:
    decoded = decode_message_untrusted(encode_message(msg))
    assert decoded == msg
    return decoded


def _wire(value: dict[bytes, Any]) -> bytes:
    return encode(value)


def _query(args: dict[bytes, Any], method: bytes = b"ping", **top: Any) -> bytes:
    return _wire({b"t": b"aa", b"y": b"q", b"q": method, b"a": args, **{k.encode(): v for k, v in top.items()}})


def _response(r: dict[bytes, Any], **top: Any) -> bytes:
    return _wire({b"t": b"aa", b"y": b"r", b"r": r, **{k.encode(): v for k, v in top.items()}})


# --- BEP 5 wire vectors ------------------------------------------------------------------

BEP5_VECTORS = [
    (
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        QueryMessage(b"aa", ID_A, Ping()),
    ),
    (
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        ResponseMessage(b"aa", ID_B),
    ),
    (
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
        QueryMessage(b"aa", ID_A, FindNode(ID_B)),
    ),
    (
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        QueryMessage(b"aa", ID_A, GetPeers(ID_B)),
    ),
    (
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
        ResponseMessage(b"aa", ID_A, values=(("97.120.106.101", 11893), ("105.100.104.116", 28269)), token=b"aoeusnth"),
    ),
    (
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e"
        b"5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        QueryMessage(b"aa", ID_A, AnnouncePeer(ID_B, 6881, b"aoeusnth", implied_port=True)),
    ),
    (
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        ErrorMessage(b"aa", ErrorCode.GENERIC, "A Generic Error Ocurred"),
    ),
]


@pytest.mark.parametrize(("wire", "msg"), BEP5_VECTORS)
def test_bep5_examples_decode_and_encode_byte_for_byte(wire: bytes, msg: Message) -> None:
    assert decode_message_untrusted(wire) == msg
    assert encode_message(msg) == wire


# --- round trips of every message type -------------------------------------------------

QUERIES: list[Query] = [
    Ping(),
    FindNode(ID_B),
    GetPeers(ID_B),
    GetPeers(ID_B, scrape=True),
    GetPeers(ID_B, noseed=True),
    GetPeers(ID_B, scrape=True, noseed=True),
    AnnouncePeer(ID_B, 6881, b"tok"),
    AnnouncePeer(ID_B, 65535, b"t" * MAX_TOKEN_LENGTH, seed=True),
    AnnouncePeer(ID_B, 0, b"tok", implied_port=True),
    AnnouncePeer(ID_B, 6881, b"tok", implied_port=True, seed=True),
    SampleInfohashes(ID_B),
    UnknownQuery(b"vote"),
    UnknownQuery(b"lookup_v9", ID_B),
]


@pytest.mark.parametrize("query", QUERIES, ids=repr)
def test_query_round_trips(query: Query) -> None:
    _round_trip(QueryMessage(b"\x00\x01", ID_A, query))


@pytest.mark.parametrize("query", QUERIES, ids=repr)
def test_query_round_trips_with_want_ro_and_version(query: Query) -> None:
    for want in (frozenset({b"n4"}), frozenset({b"n6"}), frozenset({b"n4", b"n6"}), frozenset()):
        _round_trip(QueryMessage(b"tx", ID_A, query, read_only=True, want=want, version=b"LT\x02\x11"))


def test_query_flags_on_the_wire() -> None:
    msg = QueryMessage(
        b"aa", ID_A, AnnouncePeer(ID_B, 0, b"tk", implied_port=True, seed=True), read_only=True, want=frozenset({b"n6", b"n4"}), version=b"UT01"
    )
    value = decode_untrusted(encode_message(msg))
    assert value[b"ro"] == 1
    assert value[b"v"] == b"UT01"
    assert value[b"a"] == {
        b"id": ID_A,
        b"info_hash": ID_B,
        b"port": 0,
        b"token": b"tk",
        b"implied_port": 1,
        b"seed": 1,
        b"want": [b"n4", b"n6"],
    }
    scrape = decode_untrusted(encode_message(QueryMessage(b"aa", ID_A, GetPeers(ID_B, scrape=True, noseed=True))))
    assert scrape[b"a"][b"scrape"] == 1 and scrape[b"a"][b"noseed"] == 1
    plain = decode_untrusted(encode_message(QueryMessage(b"aa", ID_A, GetPeers(ID_B))))
    assert set(plain) == {b"t", b"y", b"q", b"a"}
    assert set(plain[b"a"]) == {b"id", b"info_hash"}


RESPONSES = [
    ResponseMessage(b"aa", ID_A),
    ResponseMessage(b"aa", ID_A, nodes=(NODE_V4, NODE_V4_B)),
    ResponseMessage(b"aa", ID_A, nodes6=(NODE_V6,)),
    ResponseMessage(b"aa", ID_A, nodes=(NODE_V4,), nodes6=(NODE_V6,), token=b"tok"),
    ResponseMessage(b"aa", ID_A, values=(("10.0.0.1", 1), ("::1", 65535), (MAPPED, 80)), token=b"t"),
    ResponseMessage(b"aa", ID_A, values=(("10.0.0.1", 6881),), nodes=(NODE_V4,), token=b""),
    ResponseMessage(b"aa", ID_A, samples=(ID_A, ID_B), num=2, interval=21600, nodes=(NODE_V4,)),
    ResponseMessage(b"aa", ID_A, samples=(), num=0, interval=0),
    ResponseMessage(b"aa", ID_A, ip=("198.51.100.9", 6881), version=b"LT\x02\x11"),
    ResponseMessage(b"aa", ID_A, ip=("2001:db8::9", 1)),
    ResponseMessage(b"aa", ID_A, token=b"x" * 20, bloom_seeds=BLOOM_SEEDS, bloom_peers=BLOOM_PEERS),
]


@pytest.mark.parametrize("msg", RESPONSES, ids=range(len(RESPONSES)))
def test_response_round_trips(msg: ResponseMessage) -> None:
    _round_trip(msg)


def test_response_fields_on_the_wire() -> None:
    msg = ResponseMessage(
        b"aa",
        ID_A,
        nodes=(NODE_V4,),
        nodes6=(NODE_V6,),
        values=(("10.0.0.1", 6881),),
        token=b"tk",
        samples=(ID_B,),
        num=7,
        interval=60,
        ip=("127.0.0.1", 6881),
        bloom_seeds=BLOOM_SEEDS,
        bloom_peers=BLOOM_PEERS,
        version=b"MD01",
    )
    value = decode_untrusted(encode_message(msg))
    assert value[b"y"] == b"r"
    assert value[b"ip"] == bytes([127, 0, 0, 1, 0x1A, 0xE1])
    assert value[b"v"] == b"MD01"
    r = value[b"r"]
    assert r[b"nodes"] == b"N" * 20 + bytes([192, 0, 2, 7, 0x1A, 0xE1])
    assert r[b"nodes6"] == b"S" * 20 + ipaddress.IPv6Address("2001:db8::1").packed + (51413).to_bytes(2, "big")
    assert r[b"values"] == [bytes([10, 0, 0, 1, 0x1A, 0xE1])]
    assert (r[b"token"], r[b"samples"], r[b"num"], r[b"interval"]) == (b"tk", ID_B, 7, 60)
    assert (r[b"BFsd"], r[b"BFpe"]) == (BLOOM_SEEDS, BLOOM_PEERS)


@pytest.mark.parametrize(
    "msg",
    [
        ErrorMessage(b"aa", ErrorCode.GENERIC, "generic"),
        ErrorMessage(b"aa", ErrorCode.SERVER, "server"),
        ErrorMessage(b"aa", ErrorCode.PROTOCOL, "invalid token"),
        ErrorMessage(b"aa", ErrorCode.METHOD_UNKNOWN, "Method Unknown"),
        ErrorMessage(b"aa", 299, "", ip=("127.0.0.1", 5), version=b"LT\x02\x11"),
        ErrorMessage(b"", 201, "ünïcode ✓"),
    ],
    ids=repr,
)
def test_error_round_trips(msg: ErrorMessage) -> None:
    _round_trip(msg)


def test_error_message_with_invalid_utf8_is_replaced_not_refused() -> None:
    msg = decode_message_untrusted(_wire({b"t": b"aa", b"y": b"e", b"e": [203, b"bad \xff byte"]}))
    assert msg == ErrorMessage(b"aa", 203, "bad \ufffd byte")


def test_error_codes_are_bep5_values() -> None:
    assert [int(c) for c in ErrorCode] == [201, 202, 203, 204]


def test_method_of() -> None:
    assert [method_of(q) for q in (Ping(), FindNode(ID_A), GetPeers(ID_A), SampleInfohashes(ID_A))] == [
        b"ping",
        b"find_node",
        b"get_peers",
        b"sample_infohashes",
    ]
    assert method_of(AnnouncePeer(ID_A, 1, b"t")) == b"announce_peer"
    assert method_of(UnknownQuery(b"put")) == b"put"


# --- compact formats ----------------------------------------------------------------------


def test_pack_peer_ipv4_and_ipv6() -> None:
    assert pack_peer(("1.2.3.4", 6881)) == b"\x01\x02\x03\x04\x1a\xe1"
    assert pack_peer(("0.0.0.0", 0)) == b"\x00" * 6
    assert pack_peer(("255.255.255.255", 65535)) == b"\xff" * 6
    assert pack_peer(("::1", 6881)) == b"\x00" * 15 + b"\x01\x1a\xe1"
    assert len(pack_peer(("2001:db8::1", 1))) == 18
    assert pack_peers([("1.2.3.4", 1), ("::", 2)]) == [b"\x01\x02\x03\x04\x00\x01", b"\x00" * 16 + b"\x00\x02"]


@pytest.mark.parametrize(
    "addr",
    [("1.2.3.4", 65536), ("1.2.3.4", -1), ("::1", 70000), ("example.com", 1), ("1.2.3", 1), ("256.0.0.1", 1), ("1.2.3.4.5", 1), ("::g", 1), ("", 1)],
)
def test_pack_peer_rejects_bad_addresses(addr: tuple[str, int]) -> None:
    with pytest.raises(LocalProtocolError):
        pack_peer(addr)


@pytest.mark.parametrize("addr", [("1.2.3.4", 6881), ("0.0.0.0", 0), ("::1", 1), ("2001:db8::abcd", 65535), (MAPPED, 7)])
def test_unpack_peer_inverts_pack_peer(addr: tuple[str, int]) -> None:
    assert unpack_peer_untrusted(pack_peer(addr)) == addr


@pytest.mark.parametrize("length", [0, 1, 5, 7, 17, 19, 26])
def test_unpack_peer_rejects_other_lengths(length: int) -> None:
    with pytest.raises(DecodeError):
        unpack_peer_untrusted(b"\x01" * length)


def test_pack_and_unpack_nodes() -> None:
    mixed = (NODE_V4, NODE_V6, NODE_V4_B)
    v4 = pack_nodes(mixed)
    v6 = pack_nodes(mixed, ipv6=True)
    assert len(v4) == 2 * 26 and len(v6) == 38  # each family skips the other's contacts
    assert unpack_nodes_untrusted(v4) == (NODE_V4, NODE_V4_B)
    assert unpack_nodes_untrusted(v6, ipv6=True) == (NODE_V6,)
    assert unpack_nodes_untrusted(b"") == ()
    assert unpack_nodes_untrusted(b"", ipv6=True) == ()


@pytest.mark.parametrize("length", [1, 25, 27, 38, 51])
def test_unpack_nodes_rejects_lengths_not_a_multiple_of_26(length: int) -> None:
    with pytest.raises(DecodeError):
        unpack_nodes_untrusted(b"\x00" * length)


@pytest.mark.parametrize("length", [1, 26, 37, 39, 75])
def test_unpack_nodes6_rejects_lengths_not_a_multiple_of_38(length: int) -> None:
    with pytest.raises(DecodeError):
        unpack_nodes_untrusted(b"\x00" * length, ipv6=True)


def test_pack_nodes_rejects_bad_node_ids() -> None:
    with pytest.raises(LocalProtocolError):
        pack_nodes([Contact(b"short", ("1.2.3.4", 1))])
    with pytest.raises(LocalProtocolError):
        pack_nodes([Contact(b"x" * 21, ("::1", 1))], ipv6=True)


# --- caller mistakes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: FindNode(b"short"),
        lambda: FindNode(b"x" * 21),
        lambda: GetPeers(b"x" * 19),
        lambda: SampleInfohashes(b""),
        lambda: AnnouncePeer(b"x" * 19, 6881, b"t"),
        lambda: AnnouncePeer(ID_A, 0, b"t"),
        lambda: AnnouncePeer(ID_A, 65536, b"t"),
        lambda: AnnouncePeer(ID_A, -1, b"t"),
        lambda: AnnouncePeer(ID_A, 70000, b"t", implied_port=True),
        lambda: AnnouncePeer(ID_A, 6881, b""),
        lambda: AnnouncePeer(ID_A, 6881, b"t" * (MAX_TOKEN_LENGTH + 1)),
    ],
    ids=[
        "find_node short",
        "find_node long",
        "get_peers 19",
        "sample empty",
        "announce 19",
        "announce port 0",
        "announce port 65536",
        "announce port -1",
        "implied port 70000",
        "empty token",
        "long token",
    ],
)
def test_caller_mistakes_raise_local_protocol_error(make: Any) -> None:
    with pytest.raises(LocalProtocolError):
        make()


@pytest.mark.parametrize(
    "msg",
    [
        QueryMessage(b"aa", b"short", Ping()),
        ResponseMessage(b"aa", b"x" * 21),
        ResponseMessage(b"aa", ID_A, nodes=(Contact(b"short", ("1.2.3.4", 1)),)),
        ResponseMessage(b"aa", ID_A, values=(("not-an-ip", 1),)),
        ResponseMessage(b"aa", ID_A, ip=("1.2.3.4", 65536)),
    ],
    ids=["query id", "response id", "node id", "peer address", "ip port"],
)
def test_encoding_unrepresentable_fields_raises_local_protocol_error(msg: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(msg)


# --- validation of untrusted input -----------------------------------------------------------

GOOD_ARGS: dict[bytes, dict[bytes, Any]] = {
    b"ping": {b"id": ID_A},
    b"find_node": {b"id": ID_A, b"target": ID_B},
    b"get_peers": {b"id": ID_A, b"info_hash": ID_B},
    b"announce_peer": {b"id": ID_A, b"info_hash": ID_B, b"port": 6881, b"token": b"tok"},
    b"sample_infohashes": {b"id": ID_A, b"target": ID_B},
}


@pytest.mark.parametrize("method", list(GOOD_ARGS))
def test_good_query_args_decode(method: bytes) -> None:
    msg = decode_message_untrusted(_query(GOOD_ARGS[method], method))
    assert isinstance(msg, QueryMessage)
    assert method_of(msg.query) == method


def _bad(method: bytes, **changes: Any) -> bytes:
    """A query of ``method`` with arguments changed (a value of None deletes the key)."""
    args = dict(GOOD_ARGS[method])
    for key, value in changes.items():
        if value is None:
            args.pop(key.encode(), None)
        else:
            args[key.encode()] = value
    return _query(args, method)


BAD_QUERIES = {
    "id 19 bytes": _bad(b"ping", id=b"x" * 19),
    "id 21 bytes": _bad(b"ping", id=b"x" * 21),
    "id empty": _bad(b"ping", id=b""),
    "id int": _bad(b"ping", id=5),
    "id list": _bad(b"ping", id=[ID_A]),
    "id missing": _bad(b"ping", id=None),
    "target 19 bytes": _bad(b"find_node", target=b"x" * 19),
    "target missing": _bad(b"find_node", target=None),
    "target int": _bad(b"find_node", target=1),
    "info_hash 21 bytes": _bad(b"get_peers", info_hash=b"x" * 21),
    "info_hash missing": _bad(b"get_peers", info_hash=None),
    "info_hash dict": _bad(b"get_peers", info_hash={}),
    "sample target 10 bytes": _bad(b"sample_infohashes", target=b"x" * 10),
    "announce info_hash 19": _bad(b"announce_peer", info_hash=b"x" * 19),
    "announce port 0": _bad(b"announce_peer", port=0),
    "announce port -1": _bad(b"announce_peer", port=-1),
    "announce port 65536": _bad(b"announce_peer", port=65536),
    "announce port 2**70": _bad(b"announce_peer", port=2**70),
    "announce port bytes": _bad(b"announce_peer", port=b"6881"),
    "announce port missing": _bad(b"announce_peer", port=None),
    "announce token int": _bad(b"announce_peer", token=1234),
    "announce token list": _bad(b"announce_peer", token=[b"t"]),
    "announce token empty": _bad(b"announce_peer", token=b""),
    "announce token too long": _bad(b"announce_peer", token=b"t" * (MAX_TOKEN_LENGTH + 1)),
    "announce token missing": _bad(b"announce_peer", token=None),
    "implied_port with port bytes": _bad(b"announce_peer", implied_port=1, port=b"x"),
    "a missing": _wire({b"t": b"aa", b"y": b"q", b"q": b"ping"}),
    "a list": _wire({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": [ID_A]}),
    "a bytes": _wire({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": ID_A}),
    "q missing": _wire({b"t": b"aa", b"y": b"q", b"a": {b"id": ID_A}}),
    "q int": _wire({b"t": b"aa", b"y": b"q", b"q": 1, b"a": {b"id": ID_A}}),
    "q list": _wire({b"t": b"aa", b"y": b"q", b"q": [b"ping"], b"a": {b"id": ID_A}}),
}


@pytest.mark.parametrize("data", list(BAD_QUERIES.values()), ids=list(BAD_QUERIES))
def test_malformed_query_with_readable_tid_raises_decode_error_for_a_203(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_message_untrusted(data)
    assert info.value.tid == b"aa"
    assert info.value.is_query is True


def _bad_response(**changes: Any) -> bytes:
    r: dict[bytes, Any] = {b"id": ID_A}
    for key, value in changes.items():
        if value is None:
            r.pop(key.encode(), None)
        else:
            r[key.encode()] = value
    return _response(r)


BAD_RESPONSES = {
    "id 19 bytes": _bad_response(id=b"x" * 19),
    "id missing": _bad_response(id=None),
    "id int": _bad_response(id=7),
    "nodes 25 bytes": _bad_response(nodes=b"n" * 25),
    "nodes 27 bytes": _bad_response(nodes=b"n" * 27),
    "nodes list": _bad_response(nodes=[b"n" * 26]),
    "nodes6 37 bytes": _bad_response(nodes6=b"n" * 37),
    "nodes6 26 bytes": _bad_response(nodes6=b"n" * 26),
    "nodes6 int": _bad_response(nodes6=1),
    "values entry 5 bytes": _bad_response(values=[b"v" * 5]),
    "values entry 7 bytes": _bad_response(values=[b"v" * 6, b"v" * 7]),
    "values entry int": _bad_response(values=[1]),
    "values entry list": _bad_response(values=[[b"v" * 6]]),
    "values bytes": _bad_response(values=b"v" * 6),
    "token int": _bad_response(token=5),
    "token too long": _bad_response(token=b"t" * (MAX_TOKEN_LENGTH + 1)),
    "samples 21 bytes": _bad_response(samples=b"s" * 21),
    "samples list": _bad_response(samples=[ID_A]),
    "num negative": _bad_response(num=-1),
    "num bytes": _bad_response(num=b"1"),
    "interval negative": _bad_response(interval=-5),
    "r missing": _wire({b"t": b"aa", b"y": b"r"}),
    "r list": _wire({b"t": b"aa", b"y": b"r", b"r": [{b"id": ID_A}]}),
}


@pytest.mark.parametrize("data", list(BAD_RESPONSES.values()), ids=list(BAD_RESPONSES))
def test_malformed_response_raises_decode_error_that_is_not_a_query(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_message_untrusted(data)
    assert info.value.is_query is False
    assert info.value.tid == b"aa"


BAD_ERRORS = {
    "e missing": {},
    "e empty": {b"e": []},
    "e code only": {b"e": [201]},
    "e code bytes": {b"e": [b"201", b"msg"]},
    "e message int": {b"e": [201, 5]},
    "e bytes": {b"e": b"201 msg"},
    "e dict": {b"e": {b"code": 201}},
}


@pytest.mark.parametrize("extra", list(BAD_ERRORS.values()), ids=list(BAD_ERRORS))
def test_malformed_error_raises_decode_error_that_is_not_a_query(extra: dict[bytes, Any]) -> None:
    with pytest.raises(DecodeError) as info:
        decode_message_untrusted(_wire({b"t": b"aa", b"y": b"e", **extra}))
    assert info.value.is_query is False


def test_error_list_may_carry_extra_elements() -> None:
    msg = decode_message_untrusted(_wire({b"t": b"aa", b"y": b"e", b"e": [202, b"busy", b"extra", 1]}))
    assert msg == ErrorMessage(b"aa", 202, "busy")


@pytest.mark.parametrize(
    ("data", "tid"),
    [
        (_wire({b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}}), None),
        (_wire({b"t": 1, b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}}), None),
        (_wire({b"t": [b"aa"], b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}}), None),
        (_wire({b"t": b"x" * (MAX_TID_LENGTH + 1), b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}}), None),
        (_wire({b"t": b"aa", b"q": b"ping", b"a": {b"id": ID_A}}), b"aa"),
        (_wire({b"t": b"aa", b"y": b"x", b"q": b"ping", b"a": {b"id": ID_A}}), b"aa"),
        (_wire({b"t": b"aa", b"y": 1}), b"aa"),
        (_wire({b"t": b"aa", b"y": [b"q"]}), b"aa"),
        (_wire({b"t": b"aa", b"y": b"qq"}), b"aa"),
        (b"le", None),
        (b"i1e", None),
        (b"4:spam", None),
        (b"de", None),
    ],
)
def test_messages_without_a_valid_t_or_y_are_not_answerable(data: bytes, tid: bytes | None) -> None:
    with pytest.raises(DecodeError) as info:
        decode_message_untrusted(data)
    assert info.value.is_query is False
    assert info.value.tid == tid


def test_longest_tid_is_accepted() -> None:
    tid = b"t" * MAX_TID_LENGTH
    assert decode_message_untrusted(_wire({b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": ID_A}})).tid == tid


def test_bad_bencode_raises_decode_error_without_tid() -> None:
    for data in (b"", b"d1:a1:b-6:", b"d1:t2:aa1:y1:q1:q4:pinge", b"d1:t2:aa" + b"l" * 40 + b"e" * 41):
        with pytest.raises(DecodeError) as info:
            decode_message_untrusted(data)
        assert (info.value.tid, info.value.is_query) == (None, False)


def test_unknown_y_is_described_briefly_even_when_huge_or_deep() -> None:
    deep = b"d1:t2:aa1:y" + b"l" * 30 + b"e" * 30 + b"e"
    with pytest.raises(DecodeError, match="list"):
        decode_message_untrusted(deep)
    with pytest.raises(DecodeError) as info:
        decode_message_untrusted(_wire({b"t": b"aa", b"y": b"z" * 50_000}))
    assert len(str(info.value)) < 100


# --- liberal on extras -------------------------------------------------------------------------


def test_unknown_keys_are_ignored() -> None:
    query = _wire(
        {
            b"t": b"aa",
            b"y": b"q",
            b"q": b"get_peers",
            b"a": {b"id": ID_A, b"info_hash": ID_B, b"bs": 1, b"zzz": [b"x", {b"k": 1}]},
            b"zz": {b"nested": [1, 2]},
            b"p": 6881,
        }
    )
    assert decode_message_untrusted(query) == QueryMessage(b"aa", ID_A, GetPeers(ID_B))
    response = _response({b"id": ID_A, b"p": 6881, b"nodes": b"", b"unknown": [1]}, extra=b"x")
    assert decode_message_untrusted(response) == ResponseMessage(b"aa", ID_A)
    error = _wire({b"t": b"aa", b"y": b"e", b"e": [203, b"x"], b"r": {b"id": ID_A, b"p": 1}})
    assert decode_message_untrusted(error) == ErrorMessage(b"aa", 203, "x")


@pytest.mark.parametrize(
    "top",
    [
        {b"v": b"v" * 65},  # longer than MAX_VERSION_LENGTH
        {b"v": 1},
        {b"v": [b"LT"]},
        {b"ip": b"\x01\x02\x03\x04\x05"},
        {b"ip": b"\x01" * 7},
        {b"ip": 5},
    ],
    ids=["v too long", "v int", "v list", "ip 5 bytes", "ip 7 bytes", "ip int"],
)
def test_malformed_optional_v_and_ip_are_dropped(top: dict[bytes, Any]) -> None:
    data = _wire({b"t": b"aa", b"y": b"r", b"r": {b"id": ID_A}, **top})
    assert decode_message_untrusted(data) == ResponseMessage(b"aa", ID_A)
    error = _wire({b"t": b"aa", b"y": b"e", b"e": [201, b"x"], **top})
    assert decode_message_untrusted(error) == ErrorMessage(b"aa", 201, "x")


def test_bloom_filters_of_the_wrong_size_are_dropped() -> None:
    data = _response({b"id": ID_A, b"BFsd": b"x" * 255, b"BFpe": 1})
    assert decode_message_untrusted(data) == ResponseMessage(b"aa", ID_A)


@pytest.mark.parametrize(
    ("want", "expected"),
    [
        ([b"n4"], frozenset({b"n4"})),
        ([b"n6", b"n4"], frozenset({b"n4", b"n6"})),
        ([], frozenset()),
        ([b"n5", b"N4", 4, [b"n6"], {b"n6": 1}, b"n6"], frozenset({b"n6"})),
        (b"n4n6", None),  # not a list: ignored, as libtorrent does with a mistyped optional key
        (6, None),
    ],
)
def test_want_keeps_only_known_byte_string_entries(want: Any, expected: frozenset[bytes] | None) -> None:
    msg = decode_message_untrusted(_query({b"id": ID_A, b"target": ID_B, b"want": want}, b"find_node"))
    assert isinstance(msg, QueryMessage)
    assert msg.want == expected


@pytest.mark.parametrize(("ro", "expected"), [(1, True), (0, False), (2, False), (b"1", False), ([1], False)])
def test_read_only_is_exactly_ro_1(ro: Any, expected: bool) -> None:
    msg = decode_message_untrusted(_query({b"id": ID_A}, ro=ro))
    assert isinstance(msg, QueryMessage)
    assert msg.read_only is expected


def test_announce_flags() -> None:
    implied = decode_message_untrusted(_bad(b"announce_peer", implied_port=1, port=None))
    assert isinstance(implied, QueryMessage)
    assert implied.query == AnnouncePeer(ID_B, 0, b"tok", implied_port=True)
    # With implied_port the port is ignored, so an out-of-range one is not an error.
    for port in (0, -1, 70000):
        msg = decode_message_untrusted(_bad(b"announce_peer", implied_port=1, port=port))
        assert isinstance(msg, QueryMessage)
        assert msg.query == AnnouncePeer(ID_B, 0, b"tok", implied_port=True)
    # A mistyped optional flag counts as absent (libtorrent's rule for optional keys).
    mistyped = decode_message_untrusted(_bad(b"announce_peer", implied_port=b"1", seed=b"1"))
    assert isinstance(mistyped, QueryMessage)
    assert mistyped.query == AnnouncePeer(ID_B, 6881, b"tok")
    seed = decode_message_untrusted(_bad(b"announce_peer", seed=1))
    assert isinstance(seed, QueryMessage)
    assert seed.query == AnnouncePeer(ID_B, 6881, b"tok", seed=True)


def test_unknown_method_keeps_a_target_or_info_hash() -> None:
    for key in (b"target", b"info_hash"):
        msg = decode_message_untrusted(_query({b"id": ID_A, key: ID_B}, b"lookup_v9"))
        assert isinstance(msg, QueryMessage)
        assert msg.query == UnknownQuery(b"lookup_v9", ID_B)
    both = decode_message_untrusted(_query({b"id": ID_A, b"target": ID_B, b"info_hash": ID_A}, b"x"))
    assert isinstance(both, QueryMessage)
    assert both.query == UnknownQuery(b"x", ID_B)  # target is preferred
    for args in ({b"id": ID_A}, {b"id": ID_A, b"target": b"short"}, {b"id": ID_A, b"info_hash": 20}):
        msg = decode_message_untrusted(_query(args, b"store_v9"))
        assert isinstance(msg, QueryMessage)
        assert msg.query == UnknownQuery(b"store_v9", None)


def test_unknown_method_still_needs_a_valid_id() -> None:
    with pytest.raises(DecodeError) as info:
        decode_message_untrusted(_query({b"target": ID_B}, b"lookup_v9"))
    assert info.value.is_query and info.value.tid == b"aa"


# --- Hypothesis ------------------------------------------------------------------------------

node_ids = st.binary(min_size=20, max_size=20)
tids = st.binary(max_size=MAX_TID_LENGTH)
ports = st.integers(min_value=0, max_value=65535)
ipv4 = st.binary(min_size=4, max_size=4).map(lambda b: str(ipaddress.IPv4Address(b)))
ipv6 = st.binary(min_size=16, max_size=16).map(lambda b: str(ipaddress.IPv6Address(b)))
addresses = st.tuples(ipv4 | ipv6, ports)
versions = st.none() | st.binary(max_size=64)
unknown_methods = st.binary(max_size=20).filter(
    lambda m: m not in {b"ping", b"find_node", b"get_peers", b"announce_peer", b"sample_infohashes", b"get", b"put"}
)


@st.composite
def announce_peers(draw: st.DrawFn) -> AnnouncePeer:
    implied = draw(st.booleans())
    port = draw(ports if implied else st.integers(min_value=1, max_value=65535))
    return AnnouncePeer(draw(node_ids), port, draw(st.binary(min_size=1, max_size=MAX_TOKEN_LENGTH)), implied, draw(st.booleans()))


queries = st.one_of(
    st.just(Ping()),
    st.builds(FindNode, node_ids),
    st.builds(GetPeers, node_ids, st.booleans(), st.booleans()),
    announce_peers(),
    st.builds(SampleInfohashes, node_ids),
    st.builds(UnknownQuery, unknown_methods, st.none() | node_ids),
)

query_messages = st.builds(
    QueryMessage,
    tids,
    node_ids,
    queries,
    st.booleans(),
    st.none() | st.frozensets(st.sampled_from([b"n4", b"n6"])),
    versions,
)

response_messages = st.builds(
    ResponseMessage,
    tids,
    node_ids,
    st.lists(st.builds(Contact, node_ids, st.tuples(ipv4, ports)), max_size=8).map(tuple),
    st.lists(st.builds(Contact, node_ids, st.tuples(ipv6, ports)), max_size=8).map(tuple),
    st.lists(addresses, max_size=50).map(tuple),
    st.none() | st.binary(max_size=MAX_TOKEN_LENGTH),
    st.none() | st.lists(node_ids, max_size=10).map(tuple),
    st.none() | st.integers(min_value=0, max_value=2**40),
    st.none() | st.integers(min_value=0, max_value=2**31),
    st.none() | addresses,
    versions,
    st.none() | st.binary(min_size=256, max_size=256),
    st.none() | st.binary(min_size=256, max_size=256),
)

error_messages = st.builds(
    ErrorMessage,
    tids,
    st.integers(min_value=-(2**63), max_value=2**63),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=100),
    st.none() | addresses,
    versions,
)

messages = st.one_of(query_messages, response_messages, error_messages)

FUZZ = settings(max_examples=300, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(messages)
def test_random_messages_round_trip(msg: Message) -> None:
    _round_trip(msg)


def _check_datagram(data: bytes) -> None:
    """Only DecodeError may escape; an accepted datagram must re-encode to an equal message."""
    try:
        msg = decode_message_untrusted(data)
    except DecodeError:
        return
    assert decode_message_untrusted(encode_message(msg)) == msg


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    _check_datagram(data)


SEEDS = [p.read_bytes() for p in sorted((FIXTURES / "libtorrent").glob("*.bin"))]


@st.composite
def mutated_datagrams(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS) | messages.map(encode_message)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        if kind == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(min_value=1, max_value=8))]
    return bytes(data)


@FUZZ
@given(mutated_datagrams())
def test_mutated_datagrams_raise_only_decode_error(data: bytes) -> None:
    _check_datagram(data)


bencode_values = st.recursive(
    st.binary(max_size=40) | st.integers(min_value=-(2**70), max_value=2**70),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.binary(max_size=10), children, max_size=4),
    max_leaves=12,
)
KEYS = [b"t", b"y", b"q", b"a", b"r", b"e", b"v", b"ip", b"ro"]
ARG_KEYS = [b"id", b"target", b"info_hash", b"port", b"token", b"implied_port", b"want", b"nodes", b"nodes6", b"values"]
ARG_KEYS += [b"samples", b"num", b"interval", b"BFsd", b"BFpe", b"scrape", b"noseed", b"seed"]


@st.composite
def structurally_mutated(draw: st.DrawFn) -> dict[bytes, Any]:
    """A valid message's dict with one key of the top level or of a/r replaced or deleted."""
    value: dict[bytes, Any] = decode_untrusted(draw(st.sampled_from(SEEDS) | messages.map(encode_message)))
    inner = value.get(b"a", value.get(b"r"))
    if type(inner) is dict and draw(st.booleans()):
        target, keys = inner, ARG_KEYS
    else:
        target, keys = value, KEYS
    key = draw(st.sampled_from(keys))
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        target.pop(key, None)
    else:
        target[key] = draw(bencode_values | st.binary(min_size=20, max_size=20) | st.sampled_from([b"q", b"r", b"e"]))
    return value


@FUZZ
@given(structurally_mutated())
def test_structurally_mutated_messages_raise_only_decode_error(value: dict[bytes, Any]) -> None:
    data = encode(value)
    try:
        msg = decode_message_untrusted(data)
    except DecodeError as exc:
        t = value.get(b"t")
        readable_query = value.get(b"y") == b"q" and type(t) is bytes and len(t) <= MAX_TID_LENGTH
        # A malformed query with a readable t must be answerable with a 203; nothing else may be.
        assert exc.is_query is readable_query
        if readable_query:
            assert exc.tid == t
        return
    assert decode_message_untrusted(encode_message(msg)) == msg
