"""The peer wire pieces of a metadata fetch, without sockets: handshake, framing,
BEP 10 extension handshake, BEP 9 ut_metadata messages, hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainline_dht.errors import PeerProtocolError
from mainline_dht.metadata.peer_wire import (
    EXTENDED,
    HANDSHAKE_LENGTH,
    MAX_MESSAGE_LENGTH,
    METADATA_PIECE_SIZE,
    ExtensionHandshake,
    KeepAlive,
    Message,
    MessageReader,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_extension_handshake_untrusted,
    decode_handshake_untrusted,
    decode_metadata_message_untrusted,
    encode_extended,
    encode_extension_handshake,
    encode_handshake,
    encode_message,
    encode_metadata_message,
    metadata_piece_count,
    metadata_piece_length,
)
from mainline_dht.wire import bencode

IH = bytes(range(20))
PID = b"-XX0000-" + bytes(12)


def _reader_after_handshake(*chunks: bytes, max_length: int = MAX_MESSAGE_LENGTH) -> MessageReader:
    reader = MessageReader(max_length=max_length)
    reader.feed(encode_handshake(IH, PID))
    assert reader.next_handshake() is not None
    for c in chunks:
        reader.feed(c)
    return reader


# --- handshake ---------------------------------------------------------------------


def test_handshake_layout_sets_the_extension_bit() -> None:
    data = encode_handshake(IH, PID)
    assert len(data) == HANDSHAKE_LENGTH
    assert data[:20] == b"\x13BitTorrent protocol"
    assert data[20:28] == b"\x00\x00\x00\x00\x00\x10\x00\x00"  # BEP 10: byte 5, bit 0x10
    assert data[28:48] == IH and data[48:] == PID
    hs = decode_handshake_untrusted(data)
    assert hs.info_hash == IH and hs.peer_id == PID and hs.supports_extensions


def test_handshake_without_extensions() -> None:
    hs = decode_handshake_untrusted(encode_handshake(IH, PID, extensions=False))
    assert not hs.supports_extensions


@pytest.mark.parametrize(
    "data",
    [b"", b"\x13BitTorrent protocol" + bytes(47), b"\x13BitTorrent protocoX" + bytes(48), b"GET / HTTP/1.1\r\n" + bytes(52)],
    ids=["empty", "short", "wrong name", "http"],
)
def test_bad_handshakes_raise(data: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        decode_handshake_untrusted(data)


def test_reader_waits_for_the_whole_handshake_in_pieces() -> None:
    data = encode_handshake(IH, PID) + encode_message(2)
    reader = MessageReader()
    for b in data[:67]:
        reader.feed(bytes([b]))
        assert reader.next_handshake() is None
    reader.feed(data[67:])
    hs = reader.next_handshake()
    assert hs is not None and hs.info_hash == IH
    assert reader.next_message() == Message(2, b"")


def test_reader_refuses_a_non_bittorrent_stream_early() -> None:
    reader = MessageReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\nhello")
    with pytest.raises(PeerProtocolError):
        reader.next_handshake()


def test_encoding_checks_lengths() -> None:
    with pytest.raises(ValueError):
        encode_handshake(IH[:19], PID)
    with pytest.raises(ValueError):
        encode_message(256)


# --- framing -----------------------------------------------------------------------


def test_framing_round_trip_with_keep_alive() -> None:
    stream = encode_message(5, b"\xff\x00") + b"\x00\x00\x00\x00" + encode_extended(3, b"abc")
    reader = _reader_after_handshake()
    for i in range(0, len(stream), 3):  # arrives in 3-byte chunks
        reader.feed(stream[i : i + 3])
    assert reader.next_message() == Message(5, b"\xff\x00")
    assert reader.next_message() == KeepAlive()
    assert reader.next_message() == Message(EXTENDED, b"\x03abc")
    assert reader.next_message() is None
    assert reader.buffered == 0


def test_oversize_length_is_refused_before_the_body_arrives() -> None:
    reader = _reader_after_handshake(struct.pack(">I", 1000) + b"x", max_length=999)
    with pytest.raises(PeerProtocolError, match="longer"):
        reader.next_message()
    reader = _reader_after_handshake(b"\xff\xff\xff\xff")
    with pytest.raises(PeerProtocolError):
        reader.next_message()


def test_incomplete_message_waits() -> None:
    reader = _reader_after_handshake(struct.pack(">I", 10) + b"\x05abc")
    assert reader.next_message() is None
    reader.feed(b"defghi")
    assert reader.next_message() == Message(5, b"abcdefghi")


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_protocol_errors(data: bytes) -> None:
    reader = _reader_after_handshake(data, max_length=64)
    try:
        while reader.next_message() is not None:
            pass
    except PeerProtocolError:
        pass
    assert reader.buffered <= len(data)


# --- BEP 10 extension handshake -------------------------------------------------------


def test_extension_handshake_round_trip() -> None:
    framed = encode_extension_handshake({b"ut_metadata": 3, b"ut_pex": 1}, metadata_size=31235, client="x 1.0")
    reader = _reader_after_handshake(framed)
    msg = reader.next_message()
    assert isinstance(msg, Message) and msg.id == EXTENDED and msg.payload[0] == 0
    ext = decode_extension_handshake_untrusted(msg.payload[1:])
    assert ext == ExtensionHandshake({b"ut_metadata": 3, b"ut_pex": 1}, 31235, "x 1.0")
    assert ext.ut_metadata == 3


@pytest.mark.parametrize(
    ("body", "ut_metadata", "size"),
    [
        ({b"m": {b"ut_metadata": 0}, b"metadata_size": 5}, None, 5),  # 0 = disabled (BEP 10)
        ({b"m": {}}, None, None),
        ({}, None, None),
        ({b"m": {b"ut_metadata": 300}, b"metadata_size": -1}, None, None),  # not a byte; negative size
        ({b"m": {b"ut_metadata": b"2"}, b"metadata_size": b"10"}, None, None),  # wrong types ignored
        ({b"m": {b"ut_metadata": 2}, b"v": [1], b"reqq": 250, b"zz": {b"a": 1}}, 2, None),  # unknown keys
    ],
)
def test_extension_handshake_tolerates_odd_optional_fields(body: dict[bytes, object], ut_metadata: int | None, size: int | None) -> None:
    ext = decode_extension_handshake_untrusted(bencode.encode(body))
    assert ext.ut_metadata == ut_metadata and ext.metadata_size == size


@pytest.mark.parametrize(
    "payload",
    [b"", b"le", b"i5e", b"d1:m3:abce", b"d1:mi1ee", b"d1:md11:ut_metadatai1eee" + b"x", b"d" * 100],
    ids=["empty", "list", "int", "m string", "m int", "trailing", "deep"],
)
def test_malformed_extension_handshakes_raise(payload: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        decode_extension_handshake_untrusted(payload)


def test_oversize_extension_handshake_raises() -> None:
    with pytest.raises(PeerProtocolError):
        decode_extension_handshake_untrusted(bencode.encode({b"m": {}, b"pad": b"x" * 70_000}))


# --- BEP 9 ut_metadata -----------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [MetadataRequest(0), MetadataRequest(7), MetadataReject(3),
     MetadataData(0, 100, b"d" * 100), MetadataData(1, 20_000, b"\x00e" * 1808)],
)
def test_metadata_messages_round_trip(message: MetadataRequest | MetadataReject | MetadataData) -> None:
    framed = encode_metadata_message(message, 9)
    msg = _reader_after_handshake(framed).next_message()
    assert isinstance(msg, Message) and msg.id == EXTENDED and msg.payload[0] == 9
    assert decode_metadata_message_untrusted(msg.payload[1:]) == message


def test_metadata_wire_bytes_follow_bep_9() -> None:
    assert encode_metadata_message(MetadataRequest(0), 3)[6:] == b"d8:msg_typei0e5:piecei0ee"
    assert encode_metadata_message(MetadataReject(2), 3)[6:] == b"d8:msg_typei2e5:piecei2ee"
    data = encode_metadata_message(MetadataData(0, 3, b"abc"), 3)
    assert data[6:] == b"d8:msg_typei1e5:piecei0e10:total_sizei3eeabc"


def test_data_whose_piece_starts_like_bencode_is_split_at_the_dict_end() -> None:
    piece = b"d1:ai1ee" + b"e" * 50  # raw bytes that look like bencode
    assert decode_metadata_message_untrusted(
        bencode.encode({b"msg_type": 1, b"piece": 0, b"total_size": 58}) + piece
    ) == MetadataData(0, 58, piece)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"d8:msg_typei0ee",  # no piece
        b"d5:piecei0ee",  # no msg_type
        b"d8:msg_typei0e5:piecei-1ee",  # negative piece
        b"d8:msg_typei1e5:piecei0ee" + b"abc",  # data without total_size
        b"d8:msg_typei0e5:piecei0eex",  # trailing bytes after a request
        b"d8:msg_typei2e5:piecei0eex",  # after a reject
        b"d8:msg_typei9e5:piecei0ee",  # unknown msg_type
        b"d8:msg_type",  # truncated
        b"d5:piecei0e8:msg_typei0ee",  # unsorted keys (the strict decoder)
        b"li1ee",  # a list
        b"d8:msg_typei01e5:piecei0ee",  # leading zero
        b"d999999999999999999999:x",  # absurd string length
    ],
)
def test_malformed_metadata_messages_raise(payload: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        decode_metadata_message_untrusted(payload)


def test_a_data_piece_longer_than_16_kib_raises() -> None:
    head = bencode.encode({b"msg_type": 1, b"piece": 0, b"total_size": 40_000})
    assert decode_metadata_message_untrusted(head + b"x" * METADATA_PIECE_SIZE).data == b"x" * METADATA_PIECE_SIZE
    with pytest.raises(PeerProtocolError, match="16 KiB"):
        decode_metadata_message_untrusted(head + b"x" * (METADATA_PIECE_SIZE + 1))


def test_piece_arithmetic() -> None:
    assert metadata_piece_count(1) == 1
    assert metadata_piece_count(METADATA_PIECE_SIZE) == 1
    assert metadata_piece_count(METADATA_PIECE_SIZE + 1) == 2
    assert metadata_piece_length(40_000, 0) == METADATA_PIECE_SIZE
    assert metadata_piece_length(40_000, 2) == 40_000 - 2 * METADATA_PIECE_SIZE
    with pytest.raises(ValueError):
        metadata_piece_length(40_000, 3)
