"""Tests for mainline_dht.core.node_id: ID arithmetic and the BEP 42 IP restriction."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainline_dht.core.node_id import (
    ID_SPACE,
    common_prefix_length,
    id_to_int,
    int_to_id,
    is_exempt_ip,
    is_id_valid_for_ip,
    node_id_for_ip,
    random_id_in_range,
    random_node_id,
)

# BEP 42 appendix: (IP, rand byte, example node ID). Only the first 21 bits and
# the low 3 bits of the last byte are fixed by the IP; the rest is random.
BEP42_VECTORS = [
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]

ids = st.binary(min_size=20, max_size=20)


def test_random_node_id_is_20_bytes_and_seeded() -> None:
    a = random_node_id(random.Random(1))
    assert len(a) == 20
    assert a == random_node_id(random.Random(1))
    assert a != random_node_id(random.Random(2))


def test_id_int_round_trip_and_bounds() -> None:
    assert id_to_int(b"\x00" * 19 + b"\x01") == 1
    assert int_to_id(ID_SPACE - 1) == b"\xff" * 20
    with pytest.raises(ValueError):
        int_to_id(ID_SPACE)
    with pytest.raises(ValueError):
        int_to_id(-1)


def test_common_prefix_length_examples() -> None:
    zero = bytes(20)
    assert common_prefix_length(zero, zero) == 160
    assert common_prefix_length(zero, b"\x80" + bytes(19)) == 0
    assert common_prefix_length(zero, b"\x01" + bytes(19)) == 7
    assert common_prefix_length(zero, bytes(19) + b"\x01") == 159
    with pytest.raises(ValueError):
        common_prefix_length(zero, bytes(19))


@given(ids, ids)
def test_common_prefix_length_matches_bit_strings(a: bytes, b: bytes) -> None:
    bits_a = format(id_to_int(a), "0160b")
    bits_b = format(id_to_int(b), "0160b")
    expected = 0
    while expected < 160 and bits_a[expected] == bits_b[expected]:
        expected += 1
    assert common_prefix_length(a, b) == expected


@given(st.integers(0, ID_SPACE - 1), st.integers(1, ID_SPACE), st.integers(0, 2**32))
def test_random_id_in_range_stays_inside(lo: int, width: int, seed: int) -> None:
    hi = min(ID_SPACE, lo + width)
    value = id_to_int(random_id_in_range(lo, hi, random.Random(seed)))
    assert lo <= value < hi


def test_random_id_in_range_covers_small_range() -> None:
    rng = random.Random(0)
    seen = {id_to_int(random_id_in_range(10, 14, rng)) for _ in range(200)}
    assert seen == {10, 11, 12, 13}


@pytest.mark.parametrize(("lo", "hi"), [(5, 5), (6, 5), (-1, 3), (0, ID_SPACE + 1)])
def test_random_id_in_range_rejects_bad_ranges(lo: int, hi: int) -> None:
    with pytest.raises(ValueError):
        random_id_in_range(lo, hi, random.Random(0))


@pytest.mark.parametrize(("ip", "rand", "hex_id"), BEP42_VECTORS)
def test_bep42_vectors_are_valid(ip: str, rand: int, hex_id: str) -> None:
    assert is_id_valid_for_ip(bytes.fromhex(hex_id), ip)


@pytest.mark.parametrize(("ip", "rand", "hex_id"), BEP42_VECTORS)
def test_bep42_generated_id_matches_vector_prefix(ip: str, rand: int, hex_id: str) -> None:
    vector = bytes.fromhex(hex_id)
    made = node_id_for_ip(ip, random.Random(rand), r=rand & 7)
    assert len(made) == 20
    assert id_to_int(made) >> 139 == id_to_int(vector) >> 139  # first 21 bits
    assert made[-1] & 7 == vector[-1] & 7 == rand & 7
    assert is_id_valid_for_ip(made, ip)


@pytest.mark.parametrize(("ip", "rand", "hex_id"), BEP42_VECTORS)
def test_bep42_vector_rejected_for_other_ip_or_flipped_bit(ip: str, rand: int, hex_id: str) -> None:
    vector = bytearray(bytes.fromhex(hex_id))
    assert not is_id_valid_for_ip(bytes(vector), "8.8.8.8")
    flipped = bytearray(vector)
    flipped[2] ^= 0x08  # the 21st bit
    assert not is_id_valid_for_ip(bytes(flipped), ip)
    # The bits after the 21st are free.
    free = bytearray(vector)
    free[2] ^= 0x04
    free[10] ^= 0xFF
    assert is_id_valid_for_ip(bytes(free), ip)


def test_bep42_r_in_last_byte_matters() -> None:
    vector = bytearray(bytes.fromhex(BEP42_VECTORS[0][2]))
    vector[-1] = (vector[-1] & ~7) | ((vector[-1] + 1) & 7)
    assert not is_id_valid_for_ip(bytes(vector), BEP42_VECTORS[0][0])


def test_bep42_ipv6_round_trip_and_mask() -> None:
    rng = random.Random(7)
    ip = "2a01:4f8:c17:1234:5678:8a2e:370:7334"
    assert not is_exempt_ip(ip)
    node_id = node_id_for_ip(ip, rng)
    assert is_id_valid_for_ip(node_id, ip)
    # Only the high 64 bits count: a different interface ID is still valid.
    assert is_id_valid_for_ip(node_id, "2a01:4f8:c17:1234::1")
    # Bits the mask drops do not matter (0x01 keeps only bit 0 of the first byte)...
    assert is_id_valid_for_ip(node_id, "2801:4f8:c17:1234::")
    # ...but bits it keeps do: 2a00 vs 2a01 differ in the second byte's low bits.
    assert not is_id_valid_for_ip(node_id, "2a00:1450:4001:80b::200e")


def test_bep42_ipv4_mapped_ipv6_is_treated_as_ipv4() -> None:
    ip, _, hex_id = BEP42_VECTORS[1]
    assert is_id_valid_for_ip(bytes.fromhex(hex_id), "::ffff:" + ip)


def test_bep42_random_ids_rarely_valid() -> None:
    rng = random.Random(3)
    hits = sum(is_id_valid_for_ip(random_node_id(rng), "124.31.75.21") for _ in range(2000))
    assert hits <= 5  # expected 2000 / 2**21


def test_node_id_for_ip_draws_r_and_rejects_bad_r() -> None:
    rs = {node_id_for_ip("65.23.51.170", random.Random(s))[-1] & 7 for s in range(50)}
    assert len(rs) > 4
    with pytest.raises(ValueError):
        node_id_for_ip("65.23.51.170", random.Random(0), r=8)
    with pytest.raises(ValueError):
        node_id_for_ip("not an ip", random.Random(0))


@pytest.mark.parametrize(
    "ip",
    ["10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.3.4", "127.0.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::5", "::"],
)
def test_exempt_addresses_always_valid(ip: str) -> None:
    assert is_exempt_ip(ip)
    assert is_id_valid_for_ip(b"\x00" * 20, ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "124.31.75.21", "2001:4860:4860::8888", "172.32.0.1"])
def test_public_addresses_not_exempt(ip: str) -> None:
    assert not is_exempt_ip(ip)


def test_wrong_length_id_is_invalid_for_public_ip() -> None:
    assert not is_id_valid_for_ip(b"\x5f\xbf\xbf", "124.31.75.21")
