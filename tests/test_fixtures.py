"""The codec and the node core against the datagram corpora in fixtures/.

fixtures/libtorrent/ is real libtorrent 2.1.1 traffic (see fixtures/README.md):
every datagram must decode, except the deliberately broken queries we sent it,
and must survive an encode/decode cycle. fixtures/malformed/ is a generated
corpus of broken datagrams, each tagged in index.json with what a node must do.
Finally both corpora go through NodeProtocol.receive_datagram, which must never
raise and must answer exactly the malformed queries that have a readable ``t``.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from mainline_dht.wire.bencode import decode_untrusted
from mainline_dht.errors import DecodeError
from mainline_dht.wire.krpc import (
    AnnouncePeer,
    ErrorCode,
    ErrorMessage,
    Get,
    GetPeers,
    Message,
    QueryMessage,
    ResponseMessage,
    SampleInfohashes,
    UnknownQuery,
    decode_message_untrusted,
    encode_message,
)
from mainline_dht.core.protocol import NodeProtocol

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LIBTORRENT = FIXTURES / "libtorrent"
MALFORMED = FIXTURES / "malformed"
LT_INDEX: dict[str, dict[str, Any]] = json.loads((LIBTORRENT / "index.json").read_text())
BAD_INDEX: dict[str, dict[str, Any]] = json.loads((MALFORMED / "index.json").read_text())

#: libtorrent 2.1.1's ``v`` (fixtures/README.md).
LT_VERSION = b"LT\x02\x11"
#: Where our capture tool sent its queries from (fixtures/README.md).
OUR_CAPTURE_ADDRESS = ("127.0.2.1", 6882)
#: The address the datagrams seem to come from when fed to NodeProtocol.
SOURCE = ("127.0.0.9", 6881)
HANG_GUARD_SECONDS = 30.0


def _structurally_broken(name: str) -> bool:
    """Whether index.json says ``name`` is a query we broke on purpose.

    Those are our queries that libtorrent did not answer at all (no ``y``) or
    answered with 203 "missing 'x' key" / "invalid value for 'x'". The other
    203s ("invalid token", "unknown message") judge well-formed queries.
    """
    entry = LT_INDEX[name]
    if entry["sender"] != "us":
        return False
    if entry["reply"] is None:
        return True
    error = LT_INDEX[entry["reply"]].get("e")
    return error is not None and str(error[1]).startswith(("missing ", "invalid value"))


LT_FILES = sorted(LT_INDEX)
LT_BROKEN = [name for name in LT_FILES if _structurally_broken(name)]
LT_VALID = [name for name in LT_FILES if not _structurally_broken(name)]

#: Malformed-corpus files our decoder accepts on purpose, with the reason. Each
#: holds a mistyped *optional* field, which the decoder ignores as libtorrent
#: does (src/kademlia/msg.cpp clears a wrongly typed optional key) rather than
#: rejecting the whole message as index.json expects.
LIBERAL: dict[str, str] = {
    "krpc_query_want_not_list.bin": "'want' that is not a list is ignored (BEP 32 is optional)",
    "krpc_query_announce_implied_port_bytes.bin": "a non-integer 'implied_port' counts as absent",
    "krpc_response_ip_5_bytes.bin": "a malformed BEP 42 'ip' is dropped, the response kept",
}


def _read(directory: Path, name: str) -> bytes:
    return (directory / name).read_bytes()


def _decode(name: str) -> Message:
    return decode_message_untrusted(_read(LIBTORRENT, name))


def test_index_files_match_the_directories() -> None:
    assert set(LT_INDEX) == {p.name for p in LIBTORRENT.glob("*.bin")}
    assert set(BAD_INDEX) == {p.name for p in MALFORMED.glob("*.bin")}
    assert set(LIBERAL) <= set(BAD_INDEX)
    # The classification must find the broken queries the README describes.
    assert "query_missing_y.bin" in LT_BROKEN
    assert "query_ping_short_id.bin" in LT_BROKEN
    assert "query_announce_peer_bad_token.bin" in LT_VALID
    assert len(LT_BROKEN) == 10


# --- libtorrent captures ------------------------------------------------------------------


@pytest.mark.parametrize("name", LT_VALID)
def test_libtorrent_datagram_decodes_and_survives_reencoding(name: str) -> None:
    data = _read(LIBTORRENT, name)
    assert decode_untrusted(data) is not None  # index.json: strict bencode accepts all of them
    msg = decode_message_untrusted(data)
    expected_type = {"query": QueryMessage, "incoming": QueryMessage, "response": ResponseMessage, "error": ErrorMessage}
    assert type(msg) is expected_type[name.split("_")[0]]
    # Our encoder drops fields we do not model (``p``, ``bs``, an error's ``r``),
    # so compare decoded messages, not bytes.
    assert decode_message_untrusted(encode_message(msg)) == msg


@pytest.mark.parametrize("name", LT_BROKEN)
def test_deliberately_broken_queries_raise_decode_error(name: str) -> None:
    raw = decode_untrusted(_read(LIBTORRENT, name))
    with pytest.raises(DecodeError) as info:
        _decode(name)
    assert info.value.tid == raw[b"t"]
    # A 203 is due for broken queries, but a message without 'y' is no query.
    assert info.value.is_query is (raw.get(b"y") == b"q")


@pytest.mark.parametrize("name", [n for n in LT_FILES if LT_INDEX[n].get("reply")])
def test_replies_echo_their_query_tid(name: str) -> None:
    reply = LT_INDEX[name]["reply"]
    assert decode_untrusted(_read(LIBTORRENT, reply))[b"t"] == decode_untrusted(_read(LIBTORRENT, name))[b"t"]
    if name in LT_VALID:
        assert _decode(reply).tid == _decode(name).tid


@pytest.mark.parametrize("name", [n for n in LT_VALID if LT_INDEX[n]["sender"] == "libtorrent"])
def test_libtorrent_version_and_ip(name: str) -> None:
    msg = _decode(name)
    assert msg.version == LT_VERSION
    if isinstance(msg, QueryMessage):
        return
    if "ip" in LT_INDEX[name]["keys"]:
        assert msg.ip == OUR_CAPTURE_ADDRESS
    else:
        assert msg.ip is None


def test_get_peers_values_response_has_values_nodes_and_token() -> None:
    msg = _decode("response_get_peers_values.bin")
    assert isinstance(msg, ResponseMessage)
    assert sorted(msg.values) == [("127.0.1.2", 6001), ("127.0.1.3", 6002), ("127.0.1.4", 6003)]
    assert msg.nodes
    assert msg.token is not None and len(msg.token) == 4  # libtorrent's tokens are 4 bytes


@pytest.mark.parametrize("name", ["response_find_node_want_n4_n6.bin", "response_get_peers_want_n4_n6.bin"])
def test_want_n4_n6_responses_carry_nodes6(name: str) -> None:
    msg = _decode(name)
    assert isinstance(msg, ResponseMessage)
    assert msg.nodes and msg.nodes6
    assert all(c.addr[0] == "::1" and len(c.id) == 20 for c in msg.nodes6)


def test_plain_find_node_has_no_nodes6_and_lists_our_querier() -> None:
    msg = _decode("response_find_node.bin")
    assert isinstance(msg, ResponseMessage)
    assert msg.nodes6 == ()
    assert OUR_CAPTURE_ADDRESS in [c.addr for c in msg.nodes]


def test_scrape_response_has_bloom_filters_instead_of_values() -> None:
    msg = _decode("response_get_peers_scrape.bin")
    assert isinstance(msg, ResponseMessage)
    assert msg.values == ()
    assert msg.bloom_seeds is not None and len(msg.bloom_seeds) == 256
    assert msg.bloom_peers is not None and len(msg.bloom_peers) == 256


def test_sample_infohashes_response() -> None:
    msg = _decode("response_sample_infohashes.bin")
    assert isinstance(msg, ResponseMessage)
    assert msg.samples is not None and msg.num is not None
    assert msg.num >= len(msg.samples) >= 1
    assert msg.interval == 21600


def test_error_replies_carry_libtorrent_code_and_text() -> None:
    for name in (n for n in LT_FILES if n.startswith("error_")):
        msg = _decode(name)
        assert isinstance(msg, ErrorMessage)
        code, text = LT_INDEX[name]["e"]
        assert (msg.code, msg.message) == (code, text)
        assert msg.code == ErrorCode.PROTOCOL


def test_queries_libtorrent_sends_us() -> None:
    announce = _decode("incoming_query_announce_peer.bin")
    assert isinstance(announce, QueryMessage) and isinstance(announce.query, AnnouncePeer)
    assert announce.query.seed is False and announce.query.implied_port is False
    assert 0 < announce.query.port < 65536
    bootstrap = _decode("incoming_query_get_peers_bootstrap.bin")  # its 'bs' key is ignored
    assert isinstance(bootstrap, QueryMessage) and isinstance(bootstrap.query, GetPeers)
    sample = _decode("incoming_query_sample_infohashes.bin")
    assert isinstance(sample, QueryMessage) and isinstance(sample.query, SampleInfohashes)


def test_our_queries_decode_as_sent() -> None:
    read_only = _decode("query_ping_read_only.bin")
    assert isinstance(read_only, QueryMessage) and read_only.read_only
    want = _decode("query_find_node_want_n4_n6.bin")
    assert isinstance(want, QueryMessage) and want.want == frozenset({b"n4", b"n6"})
    implied = _decode("query_announce_peer_implied_port.bin")
    assert isinstance(implied, QueryMessage) and isinstance(implied.query, AnnouncePeer)
    assert implied.query.implied_port
    scrape = _decode("query_get_peers_scrape.bin")
    assert isinstance(scrape, QueryMessage) and scrape.query == GetPeers(scrape.query.info_hash, scrape=True)  # type: ignore[union-attr]
    assert _decode("query_unknown_method.bin").query == UnknownQuery(b"frobnicate")  # type: ignore[union-attr]
    get = _decode("query_get_immutable.bin")
    assert isinstance(get, QueryMessage) and isinstance(get.query, Get)  # BEP 44


# --- malformed corpus --------------------------------------------------------------------------


def _decode_within_guard(data: bytes) -> BaseException | None:
    """decode_message_untrusted(data) in a daemon thread; what it raised, or None."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            decode_message_untrusted(data)
        except BaseException as exc:  # noqa: BLE001 - we report whatever escapes
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_SECONDS)
    assert outcome, f"decoding did not finish within {HANG_GUARD_SECONDS} s"
    return outcome[0]


@pytest.mark.parametrize("name", sorted(set(BAD_INDEX) - set(LIBERAL)))
def test_malformed_datagram_raises_only_decode_error(name: str) -> None:
    exc = _decode_within_guard(_read(MALFORMED, name))
    assert type(exc) is DecodeError, f"{name}: {exc!r}"
    expect = BAD_INDEX[name]["expect"]
    if expect == "reply_203":
        assert (exc.tid, exc.is_query) == (b"aa", True)
    else:
        assert exc.is_query is False
    if expect == "decode_error":
        assert exc.tid is None  # not even bencode: no t could be read


def test_bencode_py_hang_datagram_is_rejected_promptly() -> None:
    data = _read(MALFORMED, "bencode_negative_length_hang.bin")
    assert data == b"d1:a1:b-6:"
    assert type(_decode_within_guard(data)) is DecodeError


def test_liberal_exceptions_decode_to_the_documented_message() -> None:
    want = decode_message_untrusted(_read(MALFORMED, "krpc_query_want_not_list.bin"))
    assert isinstance(want, QueryMessage) and want.want is None
    implied = decode_message_untrusted(_read(MALFORMED, "krpc_query_announce_implied_port_bytes.bin"))
    assert isinstance(implied, QueryMessage) and isinstance(implied.query, AnnouncePeer)
    assert implied.query.implied_port is False and implied.query.port > 0
    ip = decode_message_untrusted(_read(MALFORMED, "krpc_response_ip_5_bytes.bin"))
    assert isinstance(ip, ResponseMessage) and ip.ip is None


# --- the node core never raises on them --------------------------------------------------------


def _protocol() -> NodeProtocol:
    return NodeProtocol(b"\x42" * 20, rng=random.Random(0))


def _feed(data: bytes) -> list[tuple[Message, tuple[str, int]]]:
    proto = _protocol()
    proto.receive_datagram(data, SOURCE, now=0.0)
    return [(decode_message_untrusted(out), addr) for out, addr in proto.datagrams_to_send()]


def _replies(sent: list[tuple[Message, tuple[str, int]]]) -> list[Message]:
    """Our answers to the datagram (verification pings we may send are queries)."""
    assert all(addr == SOURCE for _, addr in sent)
    return [msg for msg, _ in sent if not isinstance(msg, QueryMessage)]


@pytest.mark.parametrize("name", sorted(BAD_INDEX))
def test_protocol_answers_malformed_queries_with_203_and_drops_the_rest(name: str) -> None:
    data = _read(MALFORMED, name)
    sent = _feed(data)
    expect = BAD_INDEX[name]["expect"]
    if name == "krpc_query_want_not_list.bin":
        # Decoded liberally (see LIBERAL): a valid find_node gets a normal answer.
        [reply] = _replies(sent)
        assert isinstance(reply, ResponseMessage) and reply.tid == b"aa"
    elif expect == "reply_203":
        # implied_port_bytes decodes (and its sender may get a verification ping),
        # but its token is not ours: it earns a 203 all the same.
        if name not in LIBERAL:
            assert len(sent) == 1
        [reply] = _replies(sent)
        assert isinstance(reply, ErrorMessage)
        assert (reply.tid, reply.code) == (b"aa", ErrorCode.PROTOCOL)
    else:
        assert sent == []


@pytest.mark.parametrize("name", LT_FILES)
def test_protocol_handles_every_libtorrent_datagram(name: str) -> None:
    data = _read(LIBTORRENT, name)
    raw = decode_untrusted(data)
    replies = _replies(_feed(data))
    if raw.get(b"y") != b"q":
        assert replies == []  # unsolicited responses and errors, and the query without y
        return
    [reply] = replies
    assert reply.tid == raw[b"t"]
    if name in LT_BROKEN or "announce_peer" in name:  # broken, or a token we never issued
        assert isinstance(reply, ErrorMessage) and reply.code == ErrorCode.PROTOCOL
    elif name == "query_unknown_method.bin":
        assert isinstance(reply, ErrorMessage) and reply.code == ErrorCode.METHOD_UNKNOWN
    else:
        assert isinstance(reply, ResponseMessage) and reply.sender_id == b"\x42" * 20


def test_one_protocol_survives_both_corpora_in_sequence() -> None:
    proto = _protocol()
    now = 0.0
    for directory, names in ((LIBTORRENT, LT_FILES), (MALFORMED, sorted(BAD_INDEX))):
        for name in names:
            proto.receive_datagram(_read(directory, name), SOURCE, now=now)
            now += 0.01
    out = proto.datagrams_to_send()
    assert out and all(addr == SOURCE for _, addr in out)
    assert proto.stats.malformed >= len(set(BAD_INDEX) - set(LIBERAL)) + len(LT_BROKEN)
