"""Tests of mainline_dht.core.contact_cache: the bounded cache of contacts that answered us."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainline_dht.core.contact_cache import RecentContacts
from mainline_dht.errors import LocalProtocolError
from mainline_dht.wire.contact import Contact


def contact(top: int, rest: int = 0, port: int | None = None) -> Contact:
    """A contact whose ID starts with byte ``top`` (its slot with 256 slots)."""
    node_id = bytes([top]) + rest.to_bytes(19, "big")
    return Contact(node_id, (f"10.{top}.{rest % 256}.{rest // 256 % 256}", port or 6881))


def test_answers_are_kept_with_their_rtt_and_time() -> None:
    cache = RecentContacts()
    a = contact(1)
    cache.answered(a, 10.0, 0.2)
    cache.answered(a, 11.0, 0.1)
    entry = cache.get(a)
    assert entry is not None and entry.last_answer == 11.0 and entry.rtt.samples == 2
    assert cache.expected_rtt(a) == pytest.approx(entry.rtt.srtt)
    assert a in cache and len(cache) == 1


def test_unknown_or_untimed_contacts_rank_as_unknown() -> None:
    cache = RecentContacts()
    assert cache.expected_rtt(contact(1)) == math.inf and cache.rtt_of(contact(1)) is None
    cache.answered(contact(2), 0.0)  # answered, but not timed
    assert cache.expected_rtt(contact(2)) == math.inf and cache.rtt_of(contact(2)) is None


def test_a_timeout_removes_the_contact() -> None:
    cache = RecentContacts()
    a = contact(3)
    cache.answered(a, 0.0, 0.1)
    cache.failed(Contact(a.id, (a.addr[0], a.addr[1] + 1)))  # another address: not it
    assert a in cache
    cache.failed(a)
    assert a not in cache and len(cache) == 0 and cache.closest(a.id, 8, 0.0) == []


def test_closest_is_by_xor_distance_and_skips_stale_entries() -> None:
    cache = RecentContacts(max_age=100.0)
    contacts = [contact(top) for top in (0x10, 0x11, 0x80, 0xF0)]
    for i, c in enumerate(contacts):
        cache.answered(c, float(i), 0.1)
    target = contact(0x11, 5).id
    assert cache.closest(target, 2, 50.0) == [contacts[1], contacts[0]]
    assert cache.closest(target, 10, 50.0) == [contacts[1], contacts[0], contacts[2], contacts[3]]
    # At t = 101.5 the first two answers are more than 100 s old.
    assert cache.closest(target, 10, 101.5) == [contacts[2], contacts[3]]
    assert [e.contact for e in cache.fresh(101.5)] == [contacts[3], contacts[2]]


def test_a_full_slot_drops_its_longest_silent_entry() -> None:
    cache = RecentContacts(capacity=8, slots=4)  # 2 per slot, by the top 2 bits
    a, b, c = (contact(0x00, i) for i in (1, 2, 3))
    cache.answered(a, 1.0, 0.1)
    cache.answered(b, 2.0, 0.1)
    cache.answered(a, 3.0, 0.1)  # a answered again: b is now the longest silent
    cache.answered(c, 4.0, 0.1)
    assert a in cache and c in cache and b not in cache
    # Other slots are untouched by the first one's churn.
    others = [contact(0x40), contact(0x80), contact(0xC0)]
    for o in others:
        cache.answered(o, 5.0, 0.1)
    assert all(o in cache for o in others) and len(cache) == 5


def test_one_address_holds_one_entry() -> None:
    cache = RecentContacts()
    old = contact(7, port=7000)
    new = Contact(contact(9).id, old.addr)
    cache.answered(old, 0.0, 0.1)
    cache.answered(new, 1.0, 0.1)
    assert old not in cache and new in cache and len(cache) == 1


def test_the_cache_stays_spread_over_the_id_space() -> None:
    """A flood of answers from one region cannot push out the rest."""
    cache = RecentContacts(capacity=64, slots=16)
    spread = [Contact(bytes([i << 4]) + bytes(19), (f"10.9.9.{i}", 6881)) for i in range(16)]
    for c in spread:
        cache.answered(c, 0.0, 0.1)
    rng = random.Random(1)
    for i in range(1000):
        node_id = bytes([rng.randrange(16)]) + rng.randbytes(19)  # all in slot 0
        cache.answered(Contact(node_id, (f"10.1.{i // 256}.{i % 256}", 6881)), 1.0 + i, 0.1)
    assert len(cache) <= 64
    assert all(c in cache for c in spread[1:])


@given(st.lists(st.tuples(st.binary(min_size=20, max_size=20), st.integers(1, 300), st.booleans()), max_size=300))
def test_never_more_than_capacity(ops: list[tuple[bytes, int, bool]]) -> None:
    cache = RecentContacts(capacity=32, slots=8)
    for t, (node_id, host, fail) in enumerate(ops):
        c = Contact(node_id, (f"10.0.{host // 256}.{host % 256}", 6881))
        if fail:
            cache.failed(c)
        else:
            cache.answered(c, float(t), 0.05)
        assert len(cache) <= 32
        assert len({e.contact.addr for e in cache}) == len(cache)


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"slots": 3}, {"capacity": 4, "slots": 8}, {"max_age": 0}])
def test_bad_shapes_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        RecentContacts(**kwargs)  # type: ignore[arg-type]
