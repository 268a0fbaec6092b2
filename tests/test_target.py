"""Tests for mainline_dht.wire.target.parse_target: infohashes and magnet links a user types."""

from __future__ import annotations

import base64

import pytest

from mainline_dht.wire.target import Target, TargetError, parse_target, parse_target_hashes

INFOHASH = bytes.fromhex("c9e15763f722f23e98a29decdfae341b98d53056")
HEX = INFOHASH.hex()
BASE32 = base64.b32encode(INFOHASH).decode("ascii")
#: A v2 (SHA-256) infohash; the DHT knows a v2 torrent by its first 20 bytes (BEP 52).
SHA256 = bytes(range(0x40, 0x60))
BTMH = "1220" + SHA256.hex()  # multihash: 0x12 = sha2-256, 0x20 = 32 bytes


def test_fixture_constants() -> None:
    assert len(HEX) == 40 and len(BASE32) == 32 and len(BTMH) == 68


@pytest.mark.parametrize(
    "text",
    [HEX, HEX.upper(), HEX[:20] + HEX[20:].upper(), BASE32, BASE32.lower(), f"  {HEX}\n", f"\t{BASE32} "],
    ids=["hex", "HEX", "mixed case", "base32", "base32 lower", "hex with whitespace", "base32 with whitespace"],
)
def test_bare_infohashes(text: str) -> None:
    assert parse_target(text) == INFOHASH


@pytest.mark.parametrize(
    "text",
    [
        f"magnet:?xt=urn:btih:{HEX}",
        f"magnet:?xt=urn:btih:{HEX.upper()}",
        f"magnet:?xt=urn:btih:{BASE32}",
        f"magnet:?xt=urn:btih:{BASE32.lower()}",
        f"magnet:?xt=URN:BTIH:{HEX}",
        f"MAGNET:?xt=urn:btih:{HEX}",
        f"magnet:?xt=urn%3Abtih%3A{HEX}",
        f"  magnet:?xt=urn:btih:{HEX}  ",
    ],
    ids=["hex", "HEX", "base32", "base32 lower", "URN:BTIH", "MAGNET:", "percent-encoded", "whitespace"],
)
def test_magnet_btih(text: str) -> None:
    assert parse_target(text) == INFOHASH


@pytest.mark.parametrize(
    "text",
    [
        f"magnet:?xt=urn:btih:{HEX}&dn=Ubuntu+24.04+Desktop&tr=udp%3A%2F%2Ftracker.example.org%3A6969%2Fannounce",
        f"magnet:?dn=name&tr=http%3A%2F%2Ft.example%2Fa%3Fx%3D1%26y%3D2&xt=urn:btih:{HEX}&xl=12345",
        f"magnet:?tr=udp://t1.example:80&tr=udp://t2.example:80&xt=urn:btih:{BASE32}&ws=http://w.example/f",
        f"magnet:?xt=urn:btih:{HEX}&dn=%E2%9C%93&x.pe=127.0.0.1:6881",
    ],
    ids=["dn and tr", "xt after other params", "several tr", "unicode dn and x.pe"],
)
def test_magnet_with_extra_parameters(text: str) -> None:
    assert parse_target(text) == INFOHASH


def test_v2_magnet_is_truncated_to_20_bytes() -> None:
    assert parse_target(f"magnet:?xt=urn:btmh:{BTMH}") == SHA256[:20]
    assert parse_target(f"magnet:?xt=urn:btmh:{BTMH.upper()}&dn=v2+only") == SHA256[:20]


@pytest.mark.parametrize(
    "text",
    [
        f"magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:{BTMH}&dn=hybrid",
        f"magnet:?xt=urn:btmh:{BTMH}&xt=urn:btih:{HEX}&dn=hybrid",
        f"magnet:?xt=urn:btmh:{BTMH}&dn=hybrid&xt=urn:btih:{BASE32}",
    ],
    ids=["btih first", "btmh first", "base32 btih last"],
)
def test_hybrid_magnet_uses_the_v1_infohash(text: str) -> None:
    assert parse_target(text) == INFOHASH


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not an infohash or magnet link"),
        ("garbage", "not an infohash or magnet link"),
        ("hello world " * 20, "not an infohash or magnet link"),
        (HEX[:-1], "40 hex characters"),
        (HEX + "0", "40 hex characters"),
        (HEX[:-1] + "g", "40 hex characters"),
        (BASE32[:-1], "32 base32 characters"),
        (BASE32[:-1] + "1", "32 base32 characters"),  # '1' is not in the base32 alphabet
        (HEX + HEX, "not an infohash"),
        (f"urn:btih:{HEX}", "not an infohash or magnet link"),
        ("https://example.org/file.torrent", "not an infohash or magnet link"),
    ],
)
def test_garbage_and_wrong_lengths_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_target(text)


def test_error_message_quotes_at_most_80_characters_of_input() -> None:
    with pytest.raises(TargetError) as info:
        parse_target("x" * 10_000)
    assert len(str(info.value)) < 250


@pytest.mark.parametrize(
    "text",
    ["magnet:", "magnet:?", "magnet:?dn=only+a+name", f"magnet:?xt=urn:sha1:{HEX}", f"magnet:?tr=udp://t.example:80&dn={HEX}"],
    ids=["bare", "empty query", "dn only", "urn:sha1", "hash in dn"],
)
def test_magnet_without_a_bittorrent_xt_is_refused(text: str) -> None:
    with pytest.raises(TargetError, match="no xt=urn:btih: or xt=urn:btmh:"):
        parse_target(text)


@pytest.mark.parametrize(
    "btih",
    [HEX[:-1], HEX + "00", "z" * 40, BASE32[:-2], "", HEX[:16]],
    ids=["39 hex", "42 hex", "not hex", "30 base32", "empty", "16 hex"],
)
def test_magnet_with_malformed_btih_is_refused(btih: str) -> None:
    with pytest.raises(TargetError, match="malformed btih"):
        parse_target(f"magnet:?xt=urn:btih:{btih}&dn=x")


@pytest.mark.parametrize(
    "btmh",
    [
        "1114" + "ab" * 20,  # sha1 multihash
        "1340" + "ab" * 64,  # sha2-512 multihash
        "1b20" + "ab" * 32,  # keccak-256
        BTMH[:-2],  # one byte short
        BTMH + "00",  # one byte long
        SHA256.hex(),  # raw SHA-256 without the multihash prefix
    ],
    ids=["sha1", "sha2-512", "keccak", "short", "long", "no prefix"],
)
def test_magnet_with_other_multihash_is_refused(btmh: str) -> None:
    with pytest.raises(TargetError, match="unsupported btmh hash.*1220 \\+ 64 hex"):
        parse_target(f"magnet:?xt=urn:btmh:{btmh}")


def test_target_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_target("nope")


# --- parse_target_hashes: keeping the full v2 infohash for the metadata check ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEX, Target(INFOHASH)),
        (f"magnet:?xt=urn:btih:{HEX}", Target(INFOHASH)),
        (f"magnet:?xt=urn:btmh:{BTMH}", Target(SHA256[:20], SHA256)),
        (f"magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:{BTMH}", Target(INFOHASH, SHA256)),  # hybrid
        (f"magnet:?xt=urn:btmh:{BTMH}&xt=urn:btih:{HEX}", Target(INFOHASH, SHA256)),
        (SHA256.hex(), Target(SHA256[:20], SHA256)),
    ],
    ids=["hex", "btih", "btmh", "hybrid", "hybrid btmh first", "64 hex"],
)
def test_parse_target_hashes_keeps_the_sha256(text: str, expected: Target) -> None:
    assert parse_target_hashes(text) == expected
    assert parse_target(text) == expected.info_hash
