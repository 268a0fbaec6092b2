"""Tests for mainline_dht.core.tokens: rotating, IP-bound announce tokens (BEP 5)."""

from __future__ import annotations

import random

import pytest

from mainline_dht.core.tokens import TOKEN_LENGTH, TokenManager

IP = "203.0.113.7"


def manager(now: float = 0.0, seed: int = 0) -> TokenManager:
    return TokenManager(rng=random.Random(seed), rotate_every=300.0, now=now)


def test_token_is_valid_for_its_ip_only() -> None:
    tm = manager()
    token = tm.issue(IP, 1.0)
    assert len(token) == TOKEN_LENGTH
    assert tm.is_valid(token, IP, 2.0)
    assert not tm.is_valid(token, "203.0.113.8", 2.0)
    assert tm.issue(IP, 3.0) == token  # stable within a rotation


def test_token_survives_one_rotation_and_dies_after_two() -> None:
    tm = manager()
    token = tm.issue(IP, 299.0)
    assert tm.next_rotation == 300.0
    assert tm.is_valid(token, IP, 300.0)  # rotated once: previous secret
    assert tm.next_rotation == 600.0
    assert tm.issue(IP, 300.0) != token
    assert tm.is_valid(token, IP, 599.0)
    assert not tm.is_valid(token, IP, 600.0)  # rotated twice


def test_token_lifetime_is_between_5_and_10_minutes() -> None:
    tm = manager()
    early = tm.issue(IP, 0.0)
    late = tm.issue(IP, 299.9)
    assert early == late
    # Both die at 600 s: 10 minutes for the early one, 5 for the late one.
    assert tm.is_valid(early, IP, 599.9) and tm.is_valid(late, IP, 599.9)
    assert not tm.is_valid(late, IP, 600.0)


def test_rotation_is_lazy_and_reported() -> None:
    tm = manager(now=100.0)
    assert tm.next_rotation == 400.0
    assert not tm.rotate_if_due(399.0)
    assert tm.rotate_if_due(400.0)
    assert tm.next_rotation == 700.0
    assert not tm.rotate_if_due(400.0)


def test_long_idle_gap_invalidates_old_tokens() -> None:
    tm = manager()
    token = tm.issue(IP, 10.0)
    # Nobody called for an hour: the deadline is 300, now is 3,610.
    assert not tm.is_valid(token, IP, 3610.0)
    assert tm.next_rotation > 3610.0
    assert tm.next_rotation - 3610.0 <= 300.0
    fresh = tm.issue(IP, 3610.0)
    assert tm.is_valid(fresh, IP, 3610.0 + 299.0)


def test_gap_of_just_under_two_rotations_keeps_previous() -> None:
    tm = manager()
    token = tm.issue(IP, 250.0)
    assert tm.is_valid(token, IP, 599.0)


def test_forged_and_malformed_tokens_refused() -> None:
    tm = manager()
    good = tm.issue(IP, 0.0)
    forged = bytes([good[0] ^ 1]) + good[1:]
    assert not tm.is_valid(forged, IP, 0.0)
    assert not tm.is_valid(b"", IP, 0.0)
    assert not tm.is_valid(good + b"\x00", IP, 0.0)
    assert not tm.is_valid(good[:4], IP, 0.0)
    assert not tm.is_valid("not bytes", IP, 0.0)  # type: ignore[arg-type]


def test_secrets_come_from_rng_and_differ_between_nodes() -> None:
    a, b, a2 = manager(seed=1), manager(seed=2), manager(seed=1)
    assert a.issue(IP, 0.0) == a2.issue(IP, 0.0)
    assert a.issue(IP, 0.0) != b.issue(IP, 0.0)
    assert not b.is_valid(a.issue(IP, 0.0), IP, 0.0)


def test_ipv6_addresses_work() -> None:
    tm = manager()
    token = tm.issue("2001:db8::1", 0.0)
    assert tm.is_valid(token, "2001:db8::1", 1.0)
    assert not tm.is_valid(token, "2001:db8::2", 1.0)


def test_rotate_every_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TokenManager(rng=random.Random(0), rotate_every=0.0)
