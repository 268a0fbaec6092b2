"""The size estimate (mainline_dht.crawl.estimate): pure arithmetic on ID distances."""

from __future__ import annotations

import random

import pytest

from mainline_dht.crawl.estimate import KEYSPACE, closest_distances, estimate_size, target_estimate, xor_distances


def _network(n: int, seed: int) -> tuple[random.Random, list[int]]:
    rng = random.Random(seed)
    return rng, sorted(rng.getrandbits(160) for _ in range(n))


@pytest.mark.parametrize("n", [500, 5000, 200_000])
def test_estimate_is_within_15_percent_from_64_targets(n: int) -> None:
    rng, ids = _network(n, seed=n + 1)
    samples = [closest_distances(rng.getrandbits(160), ids, 16) for _ in range(64)]
    est = estimate_size(samples)
    assert est is not None and est.targets == 64
    assert abs(est.nodes / n - 1) < 0.15
    assert est.low <= est.nodes <= est.high
    assert 1.0 < est.spread < 2.0


def test_estimate_is_median_unbiased_over_many_networks() -> None:
    ratios = []
    for seed in range(40):
        rng, ids = _network(2000, seed)
        est = estimate_size([closest_distances(rng.getrandbits(160), ids, 8) for _ in range(16)])
        assert est is not None
        ratios.append(est.nodes / 2000)
    ratios.sort()
    assert 0.93 < ratios[len(ratios) // 2] < 1.07


def test_an_eclipse_shows_as_a_huge_estimate() -> None:
    """Sybils placed next to every target (what an eclipse attacker does) make the
    closest distances tiny: the estimate jumps by orders of magnitude."""
    rng, ids = _network(5000, seed=3)
    targets = [rng.getrandbits(160) for _ in range(16)]
    healthy = estimate_size([closest_distances(t, ids, 8) for t in targets])
    sybils = sorted(set(ids) | {t ^ rng.getrandbits(100) for t in targets for _ in range(8)})
    eclipsed = estimate_size([closest_distances(t, sybils, 8) for t in targets])
    assert healthy is not None and eclipsed is not None
    assert eclipsed.nodes > 1000 * healthy.nodes


def test_closest_distances_match_a_full_sort() -> None:
    rng, ids = _network(3000, seed=9)
    for i in range(300):
        target = rng.choice(ids) if i % 3 == 0 else rng.getrandbits(160)
        m = rng.randrange(1, 25)
        assert closest_distances(target, ids, m) == sorted(target ^ x for x in ids if x != target)[:m]
    assert closest_distances(5, [], 8) == [] and closest_distances(5, [1, 2], 0) == []


def test_xor_distances_and_target_estimate() -> None:
    target = bytes(20)
    ids = [(1).to_bytes(20, "big"), (3).to_bytes(20, "big"), (1).to_bytes(20, "big"), target]
    assert xor_distances(target, ids) == [1, 3]
    assert target_estimate([]) is None
    assert target_estimate([KEYSPACE // 4]) == pytest.approx((1 - 1 / 3) * 4)
    assert estimate_size([[1]]) is None  # one node: below min_nodes
    assert estimate_size([]) is None
