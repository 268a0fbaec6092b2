"""Tests for mainline_dht.core.peer_store: announced peers, expiry and bounds."""

from __future__ import annotations

import random

import pytest

from mainline_dht.wire import bencode
from mainline_dht.core.peer_store import (
    DEFAULT_MAX_VALUES_PER_REPLY,
    DEFAULT_PEER_TTL,
    REPLY_BUDGET,
    PeerStore,
    max_values_for,
)

IH = b"\x11" * 20
IH2 = b"\x22" * 20


def peer(n: int) -> tuple[str, int]:
    return (f"203.0.113.{n % 250}", 6000 + n)


def test_add_and_get() -> None:
    store = PeerStore()
    store.add(IH, peer(1), 0.0)
    store.add(IH, peer(2), 1.0, seed=True)
    assert IH in store and IH2 not in store
    assert store.num_infohashes == 1 and store.num_peers == 2
    assert sorted(store.get(IH, 2.0, random.Random(0), 50)) == [peer(1), peer(2)]
    assert store.get(IH2, 2.0, random.Random(0), 50) == []
    assert store.scrape(IH, 2.0) == ([peer(2)], [peer(1)])


def test_get_samples_at_most_limit_at_random() -> None:
    store = PeerStore()
    for n in range(100):
        store.add(IH, peer(n), 0.0)
    rng = random.Random(1)
    a = store.get(IH, 1.0, rng, 10)
    b = store.get(IH, 1.0, rng, 10)
    assert len(a) == len(set(a)) == 10 and set(a) <= {peer(n) for n in range(100)}
    assert a != b
    assert store.get(IH, 1.0, rng, 0) == []


def test_peers_expire_after_ttl() -> None:
    store = PeerStore(ttl=100.0)
    store.add(IH, peer(1), 0.0)
    store.add(IH, peer(2), 50.0)
    assert store.get(IH, 99.9, random.Random(0), 50) != []
    assert store.get(IH, 100.0, random.Random(0), 50) == [peer(2)]
    assert store.num_peers == 1  # lazily dropped by get
    assert store.get(IH, 150.0, random.Random(0), 50) == []
    assert IH not in store and store.num_peers == 0


def test_expire_sweeps_everything_old() -> None:
    store = PeerStore(ttl=100.0)
    for n in range(10):
        store.add(IH if n % 2 else IH2, peer(n), float(n))
    assert store.expire(99.0) == 0
    assert store.expire(104.0) == 5
    assert store.num_peers == 5
    assert store.expire(1000.0) == 5
    assert store.num_infohashes == 0 and store.num_peers == 0


def test_reannounce_refreshes_expiry_and_seed_flag() -> None:
    store = PeerStore(ttl=100.0)
    store.add(IH, peer(1), 0.0)
    store.add(IH, peer(2), 10.0)
    store.add(IH, peer(1), 90.0, seed=True)
    assert store.num_peers == 2
    assert store.expire(150.0) == 1  # peer(2) only
    assert store.get(IH, 150.0, random.Random(0), 50) == [peer(1)]
    assert store.scrape(IH, 150.0) == ([peer(1)], [])


def test_per_infohash_cap_drops_least_recently_announced_peer() -> None:
    store = PeerStore(max_peers_per_infohash=3)
    for n in range(3):
        store.add(IH, peer(n), float(n))
    store.add(IH, peer(0), 5.0)  # refresh: peer(1) is now the oldest
    store.add(IH, peer(9), 6.0)
    assert sorted(store.get(IH, 7.0, random.Random(0), 50)) == sorted([peer(0), peer(2), peer(9)])
    assert store.num_peers == 3


def test_infohash_cap_drops_least_recently_announced_infohash() -> None:
    store = PeerStore(max_infohashes=2)
    store.add(IH, peer(1), 0.0)
    store.add(IH, peer(2), 0.0)
    store.add(IH2, peer(3), 1.0)
    store.add(IH, peer(4), 2.0)  # IH is now the most recent
    ih3 = b"\x33" * 20
    store.add(ih3, peer(5), 3.0)
    assert IH in store and ih3 in store and IH2 not in store
    assert store.num_peers == 4


def test_total_peer_cap_drops_globally_oldest() -> None:
    store = PeerStore(max_peers=3)
    store.add(IH, peer(1), 0.0)
    store.add(IH2, peer(2), 1.0)
    store.add(IH, peer(3), 2.0)
    store.add(IH2, peer(4), 3.0)
    assert store.num_peers == 3
    assert sorted(store.get(IH, 4.0, random.Random(0), 50)) == [peer(3)]
    assert sorted(store.get(IH2, 4.0, random.Random(0), 50)) == sorted([peer(2), peer(4)])


def test_bounds_hold_under_churn() -> None:
    rng = random.Random(5)
    store = PeerStore(max_infohashes=20, max_peers_per_infohash=7, max_peers=100, ttl=50.0)
    now = 0.0
    for _ in range(5000):
        now += rng.random()
        store.add(bytes([rng.randrange(40)]) * 20, peer(rng.randrange(30)), now, seed=rng.random() < 0.3)
        if rng.random() < 0.05:
            store.expire(now)
        assert store.num_infohashes <= 20 and store.num_peers <= 100
    total = 0
    for ih in store.sample_infohashes(rng, 100):
        got = store.get(ih, now, rng, 100)
        assert len(got) <= 7
        total += len(got)
    assert total == store.num_peers


def test_sample_infohashes() -> None:
    store = PeerStore()
    hashes = [bytes([n]) * 20 for n in range(30)]
    for n, ih in enumerate(hashes):
        store.add(ih, peer(n), 0.0)
    rng = random.Random(2)
    sample = store.sample_infohashes(rng, 20)
    assert len(sample) == len(set(sample)) == 20 and set(sample) <= set(hashes)
    assert sorted(store.sample_infohashes(rng, 100)) == sorted(hashes)
    assert store.sample_infohashes(rng, 0) == []
    assert PeerStore().sample_infohashes(rng, 20) == []


def test_invalid_limits_rejected() -> None:
    with pytest.raises(ValueError):
        PeerStore(max_infohashes=0)
    with pytest.raises(ValueError):
        PeerStore(ttl=0.0)


def test_default_ttl_is_30_minutes() -> None:
    store = PeerStore()
    store.add(IH, peer(1), 0.0)
    assert store.ttl == DEFAULT_PEER_TTL == 1800.0
    assert store.expire(1799.0) == 0 and store.expire(1800.0) == 1


def _worst_reply(values: list[bytes]) -> bytes:
    """A get_peers reply as large as the arithmetic in peer_store assumes."""
    return bencode.encode(
        {
            b"t": b"T" * 16,
            b"y": b"r",
            b"v": b"LT\x02\x01",
            b"ip": b"\xff" * 18,
            b"r": {
                b"id": b"\xaa" * 20,
                b"token": b"\xbb" * 20,
                b"values": values,
                b"nodes": b"\xcc" * 26 * 8,
                b"nodes6": b"\xdd" * 38 * 8,
            },
        }
    )


@pytest.mark.parametrize(("ipv6", "size"), [(False, 6), (True, 18)])
def test_max_values_fit_one_packet(ipv6: bool, size: int) -> None:
    n = max_values_for(ipv6)
    assert 0 < n <= DEFAULT_MAX_VALUES_PER_REPLY
    assert len(_worst_reply([b"\x01" * size] * n)) <= REPLY_BUDGET


def test_max_values_arithmetic_is_tight_for_ipv6() -> None:
    # One more IPv6 peer than allowed would overflow the budget.
    n = max_values_for(True)
    assert len(_worst_reply([b"\x01" * 18] * (n + 1))) > REPLY_BUDGET
    assert max_values_for(False) == DEFAULT_MAX_VALUES_PER_REPLY == 50
