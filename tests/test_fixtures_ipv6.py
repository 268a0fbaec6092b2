"""The codec and the core against libtorrent's IPv6 traffic (BEP 32) in fixtures/libtorrent_ipv6/.

Captured by tools/capture_fixtures_ipv6.py from an IPv6-only libtorrent 2.1.1
swarm on [::1] (see fixtures/README.md).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from mainline_dht.core.protocol import NodeProtocol
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Contact
from mainline_dht.wire.krpc import (
    GetPeers,
    QueryMessage,
    ResponseMessage,
    decode_message_untrusted,
    encode_message,
    unpack_nodes_untrusted,
)

DIR = Path(__file__).resolve().parent.parent / "fixtures" / "libtorrent_ipv6"
INDEX: dict[str, dict[str, Any]] = json.loads((DIR / "index.json").read_text())
FILES = sorted(INDEX)


def _load(name: str) -> bytes:
    return (DIR / name).read_bytes()


def _response(name: str) -> ResponseMessage:
    msg = decode_message_untrusted(_load(name))
    assert isinstance(msg, ResponseMessage)
    return msg


def test_the_corpus_has_libtorrent_answers_and_queries() -> None:
    senders = {INDEX[n]["sender"] for n in FILES}
    assert senders == {"us", "libtorrent"}
    assert {"response_find_node.bin", "response_get_peers_values.bin", "incoming_query_get_peers.bin"} <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_every_datagram_decodes_and_round_trips(name: str) -> None:
    data = _load(name)
    msg = decode_message_untrusted(data)
    assert decode_message_untrusted(encode_message(msg)) == msg


@pytest.mark.parametrize("name", [n for n in FILES if n.startswith("response_") and "nodes6" in INDEX[n]["r_keys"]])
def test_libtorrent_nodes6_are_38_byte_ipv6_contacts(name: str) -> None:
    raw = bencode.decode_untrusted(_load(name))[b"r"][b"nodes6"]  # type: ignore[index]
    assert len(raw) % 38 == 0 and raw
    msg = _response(name)
    assert msg.nodes == () and len(msg.nodes6) == len(raw) // 38
    assert all(c.addr[0] == "::1" and 0 < c.addr[1] < 65536 for c in msg.nodes6)
    assert msg.nodes6 == unpack_nodes_untrusted(raw, ipv6=True)


def test_an_ipv6_only_libtorrent_answers_want_n4_n6_with_nodes6_alone() -> None:
    for name in ("response_find_node_want_n4_n6.bin", "response_get_peers_want_n4_n6.bin"):
        msg = _response(name)
        assert msg.nodes6 and not msg.nodes


def test_libtorrent_ipv6_values_and_ip_field() -> None:
    msg = _response("response_get_peers_values.bin")
    assert sorted(msg.values) == [("::1", 6001), ("::1", 6002), ("::1", 6003)]
    assert msg.token
    assert msg.ip is not None and msg.ip[0] == "::1"  # BEP 42 over IPv6: 18 bytes


def test_our_ipv6_core_answers_libtorrents_get_peers_with_nodes6() -> None:
    query = decode_message_untrusted(_load("incoming_query_get_peers.bin"))
    assert isinstance(query, QueryMessage) and isinstance(query.query, GetPeers)
    core = NodeProtocol(b"\xee" * 20, rng=random.Random(0), family=6)
    for i in range(1, 4):
        core.table.heard_from(Contact(bytes([i]) * 20, (f"fd00::{i}", 6881)), 0.0, responded=True)
    source = ("::1", 7000)
    core.receive_datagram(_load("incoming_query_get_peers.bin"), source, 1.0)
    replies = [d for d, dest in core.datagrams_to_send() if dest == source and b"1:y1:r" in d]
    (reply,) = replies
    msg = decode_message_untrusted(reply)
    assert isinstance(msg, ResponseMessage) and msg.tid == query.tid
    assert len(msg.nodes6) == 3 and msg.nodes == () and msg.token


@pytest.mark.parametrize("name", FILES)
def test_the_core_takes_every_ipv6_datagram_without_raising(name: str) -> None:
    core = NodeProtocol(b"\x02" * 20, rng=random.Random(0), family=6)
    core.receive_datagram(_load(name), ("::1", 7001), 1.0)
    assert core.stats.malformed == 0
