"""Piece assignment, assembly and the hash check of a metadata fetch (no I/O), and
reading and writing info dictionaries."""

from __future__ import annotations

import hashlib

import pytest

from mainline_dht.errors import PeerProtocolError
from mainline_dht.metadata.info import (
    FileEntry,
    encode_torrent_file,
    parse_info_untrusted,
    verify_info,
)
from mainline_dht.metadata.peer_wire import METADATA_PIECE_SIZE
from mainline_dht.metadata.pool import MetadataPool
from mainline_dht.wire import bencode

from fake_peers import info_hash_of, make_info

INFO = make_info(size=40_000)  # 3 pieces
IH = info_hash_of(INFO)
A, B, C = ("127.0.0.1", 1), ("127.0.0.2", 2), ("127.0.0.3", 3)


def piece(i: int, info: bytes = INFO) -> bytes:
    return info[i * METADATA_PIECE_SIZE : (i + 1) * METADATA_PIECE_SIZE]


def spoil(data: bytes) -> bytes:
    return bytes(b ^ 1 for b in data)


def test_one_peer_gives_every_piece() -> None:
    pool = MetadataPool(IH)
    assert len(INFO) > 2 * METADATA_PIECE_SIZE
    assert pool.add_peer(A, len(INFO))
    assert [pool.next_request(A), pool.next_request(A), pool.next_request(A)] == [0, 1, None]  # 2 outstanding
    assert pool.on_data(A, 0, len(INFO), piece(0)).info is None
    assert pool.next_request(A) == 2
    assert pool.on_data(A, 1, len(INFO), piece(1)).info is None
    assert pool.on_data(A, 2, len(INFO), piece(2)).info == INFO
    assert pool.result == INFO


def test_pieces_come_from_whichever_peer_has_them() -> None:
    pool = MetadataPool(IH)
    pool.add_peer(A, len(INFO))
    pool.add_peer(B, len(INFO))
    assert pool.next_request(A) == 0
    assert pool.next_request(B) == 1  # not A's piece
    pool.on_reject(A, 0)
    assert pool.next_request(A) == 2
    assert pool.next_request(A) == 1  # end game: B is slow with 1; A never asked for 0 again
    assert pool.next_request(B) == 0  # A refused 0; B may have it
    pool.on_data(B, 0, len(INFO), piece(0))
    pool.on_data(A, 1, len(INFO), piece(1))
    assert pool.on_data(B, 1, len(INFO), piece(1)).info is None  # duplicate: ignored
    assert pool.on_data(A, 2, len(INFO), piece(2)).info == INFO


def test_a_peer_that_rejects_everything_becomes_useless() -> None:
    pool = MetadataPool(IH)
    pool.add_peer(A, len(INFO))
    for _ in range(3):
        p = pool.next_request(A)
        assert p is not None
        pool.on_reject(A, p)
    assert pool.next_request(A) is None and pool.useless(A)


def test_a_silent_peers_piece_goes_to_another_when_it_leaves() -> None:
    pool = MetadataPool(IH)
    pool.add_peer(A, len(INFO))
    assert pool.next_request(A) == 0
    pool.remove_peer(A)
    pool.add_peer(B, len(INFO))
    assert pool.next_request(B) == 0


def test_wrong_piece_length_or_total_size_drops_the_peer() -> None:
    pool = MetadataPool(IH)
    pool.add_peer(A, len(INFO))
    pool.add_peer(B, len(INFO))
    assert pool.next_request(A) == 0 and pool.next_request(B) == 1
    assert pool.on_data(A, 0, len(INFO), piece(0)[:-1]).dropped == (A,)
    assert pool.on_data(B, 1, len(INFO) + 1, piece(1)).dropped == (B,)
    assert A not in pool and pool.dropped == {A, B}
    assert not pool.add_peer(A, len(INFO))  # never again in this fetch


def test_an_assembly_nobody_works_on_is_freed() -> None:
    pool = MetadataPool(IH)
    for k in range(100):  # peers claiming ever new sizes, one after another
        peer = ("127.0.0.1", 1000 + k)
        pool.add_peer(peer, len(INFO) + k)
        assert pool.next_request(peer) == 0
        pool.on_data(peer, 0, len(INFO) + k, piece(0))
        pool.remove_peer(peer)
    assert len(pool._shared) == 0


def test_unrequested_pieces_are_ignored() -> None:
    pool = MetadataPool(IH)
    pool.add_peer(A, len(INFO))
    assert pool.on_data(A, 1, len(INFO), piece(1)).info is None
    assert pool.next_request(A) == 0  # piece 1 was not taken


def test_sizes_above_the_cap_or_zero_are_refused() -> None:
    pool = MetadataPool(IH, max_size=1000)
    assert not pool.add_peer(A, 1001)
    assert not pool.add_peer(B, 0)
    assert pool.add_peer(C, 1000)


def test_a_lone_peer_with_a_wrong_hash_is_dropped() -> None:
    pool = MetadataPool(IH)
    pool.add_peer(A, len(INFO))
    for i in range(3):
        assert pool.next_request(A) == i
        result = pool.on_data(A, i, len(INFO), spoil(piece(i)) if i == 1 else piece(i))
    assert result.dropped == (A,) and result.info is None and pool.result is None


def test_a_mixed_wrong_hash_makes_each_peer_prove_itself() -> None:
    pool = MetadataPool(IH)
    pool.add_peer(A, len(INFO))  # honest
    pool.add_peer(B, len(INFO))  # spoils what it sends
    assert pool.next_request(A) == 0 and pool.next_request(B) == 1 and pool.next_request(A) == 2
    pool.on_data(A, 0, len(INFO), piece(0))
    pool.on_data(B, 1, len(INFO), spoil(piece(1)))
    failed = pool.on_data(A, 2, len(INFO), piece(2))
    assert failed.info is None and failed.dropped == ()  # nobody can be blamed yet
    # now each peer assembles its own copy
    assert [pool.next_request(B), pool.next_request(B)] == [0, 1]  # its own copy, from the start
    pool.on_data(B, 0, len(INFO), spoil(piece(0)))
    pool.on_data(B, 1, len(INFO), spoil(piece(1)))
    assert pool.next_request(B) == 2
    assert pool.on_data(B, 2, len(INFO), piece(2)).dropped == (B,)
    assert [pool.next_request(A), pool.next_request(A)] == [0, 1]
    pool.on_data(A, 0, len(INFO), piece(0))
    pool.on_data(A, 1, len(INFO), piece(1))
    assert pool.next_request(A) == 2
    assert pool.on_data(A, 2, len(INFO), piece(2)).info == INFO


def test_a_peer_lying_about_the_size_cannot_spoil_honest_pieces() -> None:
    pool = MetadataPool(IH)
    pool.add_peer(A, len(INFO))
    pool.add_peer(B, len(INFO) - 5)
    assert pool.next_request(A) == 0 and pool.next_request(B) == 0  # separate assemblies
    liar = INFO[: len(INFO) - 5]
    for i in range(3):
        if i:
            assert pool.next_request(B) == i
        outcome = pool.on_data(B, i, len(liar), piece(i, liar))
    assert outcome.dropped == (B,)
    pool.on_data(A, 0, len(INFO), piece(0))
    assert [pool.next_request(A), pool.next_request(A)] == [1, 2]
    pool.on_data(A, 1, len(INFO), piece(1))
    assert pool.on_data(A, 2, len(INFO), piece(2)).info == INFO


def test_v2_targets_are_checked_with_sha256() -> None:
    sha256 = hashlib.sha256(INFO).digest()
    pool = MetadataPool(sha256[:20], sha256=sha256)
    pool.add_peer(A, len(INFO))
    for i in range(3):
        assert pool.next_request(A) == i
        out = pool.on_data(A, i, len(INFO), piece(i))
    assert out.info == INFO
    assert verify_info(INFO, IH) and not verify_info(INFO, sha256[:20])
    assert verify_info(INFO, b"", sha256=sha256) and not verify_info(INFO, IH, sha256=bytes(32))


# --- info dictionaries --------------------------------------------------------------


def test_parse_v1_multi_file() -> None:
    info = parse_info_untrusted(INFO, IH)
    assert info.name == "fake torrent" and info.piece_length == 16384 and info.version == 1
    assert info.files == (FileEntry(("dir", "file0.bin"), 1000), FileEntry(("dir", "file1.bin"), 2000),
                          FileEntry(("dir", "file2.bin"), 3000))
    assert info.length == 6000 and info.info == INFO


def test_parse_v1_single_file_and_padding_and_utf8() -> None:
    single = bencode.encode({b"length": 12345, b"name": "caf\u00e9".encode(), b"piece length": 32768, b"pieces": bytes(20)})
    info = parse_info_untrusted(single, b"")
    assert info.name == "caf\u00e9" and info.files == (FileEntry(("caf\u00e9",), 12345),) and info.length == 12345
    padded = bencode.encode({b"files": [{b"length": 5, b"path": [b"a"]},
                                        {b"attr": b"p", b"length": 16379, b"path": [b".pad", b"16379"]},
                                        {b"length": 7, b"path": [b"b"]}],
                             b"name": b"\xff", b"piece length": 16384, b"pieces": bytes(40)})
    info = parse_info_untrusted(padded, b"")
    assert info.name == "\ufffd" and [f.path for f in info.files] == [("a",), ("b",)] and info.length == 12


def test_parse_v2_file_tree() -> None:
    tree = {b"b.txt": {b"": {b"length": 3, b"pieces root": bytes(32)}},
            b"dir": {b"a.txt": {b"": {b"length": 5, b"pieces root": bytes(32)}}}}
    raw = bencode.encode({b"file tree": tree, b"meta version": 2, b"name": b"v2", b"piece length": 16384})
    info = parse_info_untrusted(raw, b"")
    assert info.version == 2 and info.files == (FileEntry(("b.txt",), 3), FileEntry(("dir", "a.txt"), 5))


@pytest.mark.parametrize(
    "raw",
    [b"le", b"d4:name1:xe", b"d4:name1:x12:piece lengthi1ee", b"d4:name1:x12:piece lengthi-1e6:lengthi1ee",
     b"d5:filesl1:xe4:name1:x12:piece lengthi1ee", b"d5:filesld6:lengthi1eee4:name1:x12:piece lengthi1ee",
     b"d5:filesi1e4:name1:x12:piece lengthi1ee", b"d4:namei5e12:piece lengthi1e6:lengthi1ee", b"not bencode"],
    ids=["list", "no piece length", "no files", "negative", "file not dict", "no path", "files int", "name int",
         "garbage"],
)
def test_malformed_info_dictionaries_raise(raw: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        parse_info_untrusted(raw, b"")


def test_torrent_file_keeps_the_info_bytes_exactly() -> None:
    data = encode_torrent_file(INFO, nodes=[("127.0.0.1", 6881)], created_by="t")
    decoded = bencode.decode_untrusted(data, max_size=len(data))
    assert decoded[b"nodes"] == [[b"127.0.0.1", 6881]] and decoded[b"created by"] == b"t"
    start = data.index(b"4:info") + 6
    assert data[start : start + len(INFO)] == INFO
