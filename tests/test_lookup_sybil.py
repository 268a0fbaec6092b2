"""Sybil resistance of mainline_dht.core.lookup, driven with scripted time (no trio).

The diversity rule (one candidate per IPv4 /24 or IPv6 /64; a crowded prefix ranks
behind everyone) and the BEP 42 preference, each with the counterfactual that shows
what the rule changes. Public addresses appear only as strings: nothing is sent.
IDs are placed by their distance to an all-zero target, as in test_lookup.py.
"""

from __future__ import annotations

import random

import pytest

from mainline_dht.core.lookup import DEFAULT_MAX_PER_PREFIX, Lookup
from mainline_dht.core.node_id import is_id_valid_for_ip, node_id_for_ip
from mainline_dht.errors import LocalProtocolError
from mainline_dht.wire.contact import Contact

ZERO = bytes(20)


def at(n: int, host: str, port: int = 6881) -> Contact:
    """A contact at distance ``n`` from the all-zero target."""
    return Contact(n.to_bytes(20, "big"), (host, port))


def dists(contacts: list[Contact], target: bytes = ZERO) -> list[int]:
    t = int.from_bytes(target, "big")
    return [int.from_bytes(x.id, "big") ^ t for x in contacts]


def test_default_is_one_candidate_per_prefix() -> None:
    assert DEFAULT_MAX_PER_PREFIX == 1


def test_one_candidate_per_ipv4_slash24_the_closest_unqueried_wins() -> None:
    lookup = Lookup(ZERO, [at(9, "1.2.3.4"), at(50, "5.6.7.8")], now=0.0, alpha=1)
    assert lookup.candidate_count == 2
    # Same /24, farther: ignored. Same /24, closer: replaces the unqueried one.
    assert lookup.add_candidate(at(12, "1.2.3.5")) is False
    assert lookup.add_candidate(at(3, "1.2.3.200")) is True
    assert lookup.candidate_count == 2
    # The /24 offered three hosts: it is crowded and ranks behind 5.6.7.8.
    assert dists(lookup.next_queries(0.0)) == [50]


def test_a_prefix_already_asked_takes_no_more_candidates() -> None:
    lookup = Lookup(ZERO, [at(9, "1.2.3.4"), at(50, "5.6.7.8")], now=0.0, alpha=1)
    first = lookup.next_queries(0.0)
    assert dists(first) == [9]
    lookup.on_response(first[0], 0.1, nodes=[at(3, "1.2.3.5"), at(2, "1.2.3.6")])
    assert lookup.candidate_count == 2
    assert dists(lookup.next_queries(0.1)) == [50]


def test_a_failed_candidate_frees_its_prefix() -> None:
    lookup = Lookup(ZERO, [at(9, "1.2.3.4")], now=0.0, alpha=1)
    (sent,) = lookup.next_queries(0.0)
    lookup.on_failure(sent, 3.0)
    # The lookup is over (nothing left), so check the rule on a fresh one that has
    # a failed holder and more to ask.
    lookup = Lookup(ZERO, [at(9, "1.2.3.4"), at(50, "5.6.7.8")], now=0.0, alpha=1)
    (sent,) = lookup.next_queries(0.0)
    lookup.on_failure(sent, 3.0)
    assert lookup.add_candidate(at(3, "1.2.3.5")) is True
    assert dists(lookup.next_queries(3.0)) == [3]


def test_ipv6_prefixes_are_slash64() -> None:
    lookup = Lookup(ZERO, [at(9, "2a00:1450::1")], now=0.0)
    assert lookup.add_candidate(at(10, "2a00:1450::2")) is False  # same /64
    assert lookup.add_candidate(at(11, "2a00:1450:0:1::1")) is True  # next /64


def test_local_addresses_are_exempt_unless_told() -> None:
    local = [at(n, f"10.0.0.{n}") for n in range(1, 9)]
    assert Lookup(ZERO, local, now=0.0).candidate_count == 8
    assert Lookup(ZERO, local, now=0.0, diversity_local=True).candidate_count == 1
    loopback = [at(n, "127.0.0.1", 7000 + n) for n in range(1, 9)]
    assert Lookup(ZERO, loopback, now=0.0).candidate_count == 8


def test_no_prefix_limit_when_off() -> None:
    same = [at(n, f"1.2.3.{n}") for n in range(1, 9)]
    assert Lookup(ZERO, same, now=0.0, max_per_prefix=None).candidate_count == 8
    assert Lookup(ZERO, same, now=0.0, max_per_prefix=2).candidate_count == 2
    with pytest.raises(LocalProtocolError):
        Lookup(ZERO, same, now=0.0, max_per_prefix=0)


def _run_against_sybils(**options: object) -> Lookup:
    """Honest nodes at distances 1000..1015 (each its own /24) answer with nothing
    new; sybils in two /24s name each other under IDs at distances 1..40, so the
    closest places all look taken by them."""
    honest = [at(1000 + i, f"{20 + i}.1.1.1") for i in range(16)]
    sybil_hosts = [f"66.6.6.{h}" for h in range(1, 21)] + [f"66.6.7.{h}" for h in range(1, 21)]
    rng = random.Random(3)

    def sybil_reply() -> list[Contact]:
        return [at(1 + rng.randrange(40), host, 6881) for host in rng.sample(sybil_hosts, 8)]

    seeds = honest[:8] + [at(500, "66.6.6.200")]
    lookup = Lookup(ZERO, seeds, now=0.0, k=8, alpha=3, **options)  # type: ignore[arg-type]
    now = 0.0
    while not lookup.done:
        batch = lookup.next_queries(now)
        assert batch, "the lookup stalled"
        now += 0.1
        for contact in batch:
            if contact.addr[0].startswith("66.6."):
                lookup.on_response(contact, now, nodes=sybil_reply(), token=b"s")
            else:
                i = int.from_bytes(contact.id, "big") - 1000
                lookup.on_response(contact, now, nodes=honest[i + 1 : i + 3], token=b"h")
    return lookup


def test_sybils_in_few_networks_cannot_take_the_result_set() -> None:
    lookup = _run_against_sybils()
    result = [contact for contact, _ in lookup.closest_responders(8)]
    # The 8 closest honest nodes answered, and they are the result: the sybils'
    # (closer) made-up IDs rank behind, their two /24s hold one candidate each.
    assert dists(result) == list(range(1000, 1008))
    assert sum(1 for c in lookup.peers) == 0
    assert lookup.candidate_count <= 16 + 2 + 1


def test_without_the_prefix_rule_sybils_take_the_result_set() -> None:
    lookup = _run_against_sybils(max_per_prefix=None)
    result = [contact for contact, _ in lookup.closest_responders(8)]
    assert all(contact.addr[0].startswith("66.6.") for contact in result)


# --- BEP 42 ---------------------------------------------------------------------------

VALID_IP = "124.31.75.21"
OTHER_IP = "21.75.31.124"


def _placed(rng: random.Random) -> tuple[bytes, bytes]:
    """(a target, a BEP 42-valid ID for VALID_IP at distance 2**100 from it)."""
    valid = node_id_for_ip(VALID_IP, rng)
    target = (int.from_bytes(valid, "big") ^ (1 << 100)).to_bytes(20, "big")
    return target, valid


def _near(target: bytes, distance: int) -> bytes:
    return (int.from_bytes(target, "big") ^ distance).to_bytes(20, "big")


@pytest.mark.parametrize("enforce", [False, True])
def test_invalid_id_ranks_behind_a_valid_one_at_similar_distance(enforce: bool) -> None:
    target, valid = _placed(random.Random(1))
    invalid = _near(target, 3 << 98)  # three quarters of the valid one's distance
    assert not is_id_valid_for_ip(invalid, OTHER_IP)
    lookup = Lookup(target, [Contact(invalid, (OTHER_IP, 6881)), Contact(valid, (VALID_IP, 6881))], now=0.0, alpha=1, enforce_bep42=enforce)
    assert [x.id for x in lookup.next_queries(0.0)] == [valid]


def test_preference_only_at_similar_distance_enforcement_always() -> None:
    target, valid = _placed(random.Random(2))
    invalid = _near(target, 1 << 90)  # far closer than the valid one
    seeds = [Contact(invalid, (OTHER_IP, 6881)), Contact(valid, (VALID_IP, 6881))]
    assert [x.id for x in Lookup(target, seeds, now=0.0, alpha=1).next_queries(0.0)] == [invalid]
    enforced = Lookup(target, seeds, now=0.0, alpha=1, enforce_bep42=True)
    assert [x.id for x in enforced.next_queries(0.0)] == [valid]


def test_enforced_invalid_ids_are_still_asked_when_nothing_else_is_left() -> None:
    target, valid = _placed(random.Random(4))
    invalid = _near(target, 5)
    lookup = Lookup(target, [Contact(invalid, (OTHER_IP, 6881)), Contact(valid, (VALID_IP, 6881))], now=0.0, alpha=1, k=2, enforce_bep42=True)
    first = lookup.next_queries(0.0)
    lookup.on_response(first[0], 0.1)
    second = lookup.next_queries(0.1)
    assert [x.id for x in first + second] == [valid, invalid]
    lookup.on_response(second[0], 0.2)
    assert lookup.done
    assert [x.id for x, _ in lookup.closest_responders(2)] == [valid, invalid]


def test_local_addresses_are_exempt_from_bep42() -> None:
    target, valid = _placed(random.Random(5))
    invalid = _near(target, 3 << 98)
    lookup = Lookup(target, [Contact(invalid, ("192.168.1.9", 6881)), Contact(valid, (VALID_IP, 6881))], now=0.0, alpha=1, enforce_bep42=True)
    assert [x.id for x in lookup.next_queries(0.0)] == [invalid]
