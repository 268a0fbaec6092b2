"""The serving hot path against the full decoder and the encoder.

``ping``, ``find_node`` and ``get_peers`` are read by ``query_fields_untrusted``
and answered with replies bencoded by hand (``NodeProtocol._answer``). For any
datagram (Hypothesis, the malformed corpus, captured libtorrent traffic) the
fast path must accept exactly what ``decode_value_untrusted`` decodes as one of
those queries (but for ``get_peers`` with BEP 33 flags), with the same fields; and every hand-built reply must be byte for
byte what ``bencode.encode`` makes of the same message.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_core
from mainline_dht.core.protocol import NodeProtocol
from mainline_dht.errors import DecodeError
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Contact
from mainline_dht.wire.krpc import (
    QUERY_FIND_NODE,
    QUERY_GET_PEERS,
    QUERY_PING,
    FindNode,
    GetPeers,
    Ping,
    QueryMessage,
    decode_value_untrusted,
    pack_peer,
    query_fields_untrusted,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CORPUS = sorted(p for d in ("malformed", "libtorrent", "libtorrent_ipv6") for p in (FIXTURES / d).glob("*.bin"))
HOT = {QUERY_PING: Ping, QUERY_FIND_NODE: FindNode, QUERY_GET_PEERS: GetPeers}


def check_agreement(value: Any) -> bool:
    """Assert the fast path and the full decoder agree on ``value``; return whether it is a hot query."""
    fields = query_fields_untrusted(value)
    try:
        msg: object = decode_value_untrusted(value)
    except DecodeError:
        msg = None
    hot = isinstance(msg, QueryMessage) and type(msg.query) in (Ping, FindNode, GetPeers)
    if hot and type(msg.query) is GetPeers and (b"scrape" in value[b"a"] or b"noseed" in value[b"a"]):
        hot = False  # BEP 33 flags, whatever their value: answered off the hot path
    assert (fields is not None) == hot, (value, fields, msg)
    if fields is None:
        return False
    assert isinstance(msg, QueryMessage)
    kind, method, tid, sender, target, read_only = fields
    assert type(msg.query) is HOT[kind]
    assert (method, tid, sender, read_only) == (msg.query.method, msg.tid, msg.sender_id, msg.read_only)
    query = msg.query
    expected_target = None if isinstance(query, Ping) else query.target if isinstance(query, FindNode) else query.info_hash
    assert target == expected_target
    return True


# --- datagrams ---------------------------------------------------------------------------------

ids = st.one_of(st.binary(min_size=20, max_size=20), st.binary(max_size=24), st.integers(), st.lists(st.binary(max_size=3), max_size=2))
flags = st.one_of(st.integers(-1, 3), st.binary(max_size=2))
args = st.fixed_dictionaries(
    {},
    optional={
        b"id": ids,
        b"target": ids,
        b"info_hash": ids,
        b"want": st.one_of(st.lists(st.sampled_from([b"n4", b"n6", b"x", 4])), st.binary(max_size=2)),
        b"scrape": flags,
        b"noseed": flags,
        b"token": st.binary(max_size=8),
    },
)
messages = st.fixed_dictionaries(
    {},
    optional={
        b"t": st.one_of(st.binary(max_size=20), st.integers()),
        b"y": st.sampled_from([b"q", b"r", b"e", b"x", b"", 1]),
        b"q": st.sampled_from([b"ping", b"find_node", b"get_peers", b"announce_peer", b"frob", b"", 7]),
        b"a": st.one_of(args, st.lists(st.integers(), max_size=2), st.binary(max_size=4)),
        b"ro": flags,
        b"v": st.binary(max_size=6),
        b"r": st.dictionaries(st.binary(max_size=3), st.binary(max_size=3), max_size=2),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_fast_path_and_decoder_agree_on_generated_messages(value: dict[bytes, Any]) -> None:
    data = bencode.encode(value)
    check_agreement(bencode.decode_untrusted(data))


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_fast_path_and_decoder_agree_on_damaged_bytes(value: dict[bytes, Any], data: st.DataObject) -> None:
    raw = bytearray(bencode.encode(value))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        decoded = bencode.decode_untrusted(bytes(raw))
    except DecodeError:
        return  # neither path sees it
    check_agreement(decoded)


def test_fast_path_and_decoder_agree_on_the_fixture_corpus() -> None:
    assert len(CORPUS) > 50
    hot = 0
    for path in CORPUS:
        try:
            value = bencode.decode_untrusted(path.read_bytes())
        except DecodeError:
            continue
        hot += check_agreement(value)
    assert hot >= 5  # captured pings, find_nodes and get_peers among them


# --- hand-built replies ------------------------------------------------------------------------

QUERIER = ("10.20.30.40", 6881)
TARGET = b"\x5a" * 20


def _core_with_state() -> NodeProtocol:
    core = make_core("fast")
    rng = random.Random(3)
    for i in range(40):
        core.table.heard_from(Contact(rng.randbytes(20), (f"10.{i}.0.1", 1000 + i)), 0.0, responded=True)
    for i in range(7):
        core.peer_store.add(TARGET, (f"10.99.{i}.1", 2000 + i), 0.0)
    return core


def _replies(core: NodeProtocol) -> list[bytes]:
    """What the core sent the querier besides its own queries (a verification ping)."""
    return [d for d, addr in core.datagrams_to_send() if addr == QUERIER and bencode.decode_untrusted(d)[b"y"] == b"r"]


def _expected(core: NodeProtocol, kind: int, tid: bytes, target: bytes | None) -> bytes:
    """The reply, built as a dictionary and bencoded by the encoder."""
    r: dict[bytes, Any] = {b"id": core.node_id}
    if target is not None:
        r[b"nodes"] = b"".join(c.id + pack_peer(c.addr) for c in core.table.closest(target, core.config.k))
    if kind == QUERY_GET_PEERS:
        assert target is not None
        r[b"token"] = core.tokens.issue(QUERIER[0], 1.0)
        peers = core.peer_store.get(target, 1.0, random.Random(0), 1000)
        if peers:
            r[b"values"] = [pack_peer(p) for p in peers]
    d: dict[bytes, Any] = {b"t": tid, b"y": b"r", b"r": r, b"ip": pack_peer(QUERIER)}
    if core.config.version is not None:
        d[b"v"] = core.config.version
    return bencode.encode(d)


@pytest.mark.parametrize("tid", [b"", b"a", b"xy", b"1234", b"\x00" * 16])
@pytest.mark.parametrize(
    ("method", "key", "kind"),
    [(b"ping", None, QUERY_PING), (b"find_node", b"target", QUERY_FIND_NODE), (b"get_peers", b"info_hash", QUERY_GET_PEERS)],
)
def test_hand_built_replies_are_what_the_encoder_makes(tid: bytes, method: bytes, key: bytes | None, kind: int) -> None:
    core = _core_with_state()
    a: dict[bytes, Any] = {b"id": b"\x11" * 20}
    if key is not None:
        a[key] = TARGET
    query = bencode.encode({b"t": tid, b"y": b"q", b"q": method, b"a": a})
    assert query_fields_untrusted(bencode.decode_untrusted(query)) is not None  # the fast path
    core.receive_datagram(query, QUERIER, 1.0)
    [reply] = _replies(core)
    assert reply == _expected(core, kind, tid, None if key is None else TARGET)


@settings(max_examples=100, deadline=None)
@given(tid=st.binary(max_size=16), target=st.binary(min_size=20, max_size=20), kind=st.sampled_from(sorted(HOT)))
def test_hand_built_replies_match_the_encoder_for_any_tid_and_target(tid: bytes, target: bytes, kind: int) -> None:
    core = make_core("fast")
    rng = random.Random(4)
    for i in range(20):
        core.table.heard_from(Contact(rng.randbytes(20), (f"10.{i}.0.1", 1000 + i)), 0.0, responded=True)
    method = {QUERY_PING: b"ping", QUERY_FIND_NODE: b"find_node", QUERY_GET_PEERS: b"get_peers"}[kind]
    a: dict[bytes, Any] = {b"id": b"\x11" * 20}
    if kind == QUERY_FIND_NODE:
        a[b"target"] = target
    elif kind == QUERY_GET_PEERS:
        a[b"info_hash"] = target
    core.receive_datagram(bencode.encode({b"t": tid, b"y": b"q", b"q": method, b"a": a}), QUERIER, 1.0)
    [reply] = _replies(core)
    assert reply == _expected(core, kind, tid, None if kind == QUERY_PING else target)
    assert bencode.encode(bencode.decode_untrusted(reply)) == reply  # canonical
