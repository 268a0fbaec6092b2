"""Tests for mainline_dht.core.routing_table: BEP 5 buckets, node states and admission rules."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mainline_dht.wire.contact import Contact, distance
from mainline_dht.core.node_id import ID_SPACE, id_to_int, int_to_id
from mainline_dht.core.routing_table import (
    BAD_AFTER_FAILURES,
    EVICTION_PING_INTERVAL,
    GOOD_WINDOW,
    REFRESH_INTERVAL,
    VERIFY_RETRY_INTERVAL,
    NodeStatus,
    Outcome,
    RoutingTable,
    TableEntry,
    split_saved_contacts,
)

OWN = bytes(20)  # own ID 0: the far half of the space is every ID with the top bit set
TOP = 1 << 159


def far_id(n: int) -> bytes:
    """An ID in the far half [2**159, 2**160) (never splits for OWN = 0)."""
    return int_to_id(TOP + n)


def near_id(n: int, depth: int = 1) -> bytes:
    """An ID sharing ``depth`` leading zero bits with OWN and then a 1 bit."""
    return int_to_id((ID_SPACE >> (depth + 1)) + n)


def contact(node_id: bytes, i: int, port: int = 6881) -> Contact:
    return Contact(node_id, (f"203.0.{i // 250}.{i % 250 + 1}", port))


def verified(table: RoutingTable, c: Contact, now: float) -> Outcome:
    return table.heard_from(c, now, responded=True).outcome


def fill_far_bucket(table: RoutingTable, now: float = 0.0) -> list[Contact]:
    """Fill the far bucket with k good contacts (and split off our half)."""
    out = []
    for n in range(table.k):
        c = contact(far_id(n), n)
        assert verified(table, c, now) is Outcome.ADDED
        out.append(c)
    # A near node makes the table split off the far bucket.
    assert verified(table, contact(near_id(0), 200), now) is Outcome.ADDED
    assert [b.range for b in table.buckets] == [(0, TOP), (TOP, ID_SPACE)]
    return out


# --- construction and basic admission ---------------------------------------------------------


def test_new_table_is_one_empty_bucket() -> None:
    table = RoutingTable(OWN, now=5.0)
    assert len(table) == 0
    assert [b.range for b in table.buckets] == [(0, ID_SPACE)]
    assert table.buckets[0].last_changed == 5.0
    assert table.closest(far_id(1)) == []
    with pytest.raises(ValueError):
        RoutingTable(b"short")
    with pytest.raises(ValueError):
        RoutingTable(OWN, k=0)


def test_own_id_read_only_and_malformed_never_enter() -> None:
    table = RoutingTable(OWN)
    assert verified(table, Contact(OWN, ("203.0.113.1", 1)), 0.0) is Outcome.REJECTED
    ro = table.heard_from(contact(far_id(1), 1), 0.0, responded=True, read_only=True)
    assert ro.outcome is Outcome.REJECTED
    assert verified(table, Contact(b"\x01" * 19, ("203.0.113.1", 1)), 0.0) is Outcome.REJECTED
    assert len(table) == 0


def test_responded_contact_is_added_and_good() -> None:
    table = RoutingTable(OWN)
    c = contact(far_id(1), 1)
    result = table.heard_from(c, 10.0, responded=True, rtt=0.2)
    assert result.outcome is Outcome.ADDED and result.ping == ()
    entry = table.get(c.id)
    assert isinstance(entry, TableEntry)
    assert entry.contact == c and entry.last_response == 10.0 and entry.rtt == 0.2
    assert entry.status(10.0) is NodeStatus.GOOD
    assert c.id in table and list(table) == [entry]
    assert verified(table, c, 11.0) is Outcome.UPDATED
    assert len(table) == 1


def test_rtt_is_smoothed() -> None:
    table = RoutingTable(OWN)
    c = contact(far_id(1), 1)
    table.heard_from(c, 0.0, responded=True, rtt=0.8)
    table.heard_from(c, 1.0, responded=True, rtt=0.0)
    entry = table.get(c.id)
    assert entry is not None and entry.rtt == pytest.approx(0.7)


def test_unverified_contact_asks_for_verification_then_enters() -> None:
    table = RoutingTable(OWN)
    c = contact(far_id(1), 1)
    first = table.heard_from(c, 0.0, responded=False)
    assert first.outcome is Outcome.VERIFY and first.ping == ()
    assert c.id not in table
    # More queries while the ping is in flight do not ask again...
    assert table.heard_from(c, 1.0, responded=False).outcome is Outcome.PENDING
    # ...until the retry interval has passed.
    assert table.heard_from(c, VERIFY_RETRY_INTERVAL, responded=False).outcome is Outcome.VERIFY
    assert verified(table, c, VERIFY_RETRY_INTERVAL + 0.1) is Outcome.ADDED
    # Now known: its queries just update it.
    assert table.heard_from(c, 40.0, responded=False).outcome is Outcome.UPDATED
    entry = table.get(c.id)
    assert entry is not None and entry.last_query == 40.0


def test_verification_memory_is_bounded() -> None:
    table = RoutingTable(OWN, max_per_ip=None)
    cs = [contact(far_id(n), n) for n in range(5000)]
    for c in cs:
        assert table.heard_from(c, 0.0, responded=False).outcome is Outcome.VERIFY
    assert table.heard_from(cs[-1], 1.0, responded=False).outcome is Outcome.PENDING
    # The oldest requests were forgotten to stay bounded: asked again.
    assert table.heard_from(cs[0], 1.0, responded=False).outcome is Outcome.VERIFY


# --- node states (BEP 5) ------------------------------------------------------------------


def test_good_becomes_questionable_after_15_minutes_of_silence() -> None:
    table = RoutingTable(OWN)
    c = contact(far_id(1), 1)
    table.heard_from(c, 100.0, responded=True)
    entry = table.get(c.id)
    assert entry is not None
    assert entry.status(100.0 + GOOD_WINDOW) is NodeStatus.GOOD
    assert entry.status(100.0 + GOOD_WINDOW + 0.1) is NodeStatus.QUESTIONABLE
    # A query from a node that has answered before makes it good again.
    table.heard_from(c, 2000.0, responded=False)
    assert entry.status(2000.0) is NodeStatus.GOOD
    assert entry.status(2000.0 + GOOD_WINDOW + 1) is NodeStatus.QUESTIONABLE


def test_never_responded_node_is_never_good() -> None:
    entry = TableEntry(contact(far_id(1), 1), first_seen=0.0, last_query=5.0)
    assert entry.status(5.0) is NodeStatus.QUESTIONABLE
    entry.failures = 1
    assert entry.status(5.0) is NodeStatus.BAD


def test_failures_make_a_node_bad_and_an_answer_restores_it() -> None:
    table = RoutingTable(OWN)
    c = contact(far_id(1), 1)
    table.heard_from(c, 0.0, responded=True)
    entry = table.get(c.id)
    assert entry is not None
    table.failed(c, 1.0)
    assert entry.status(1.0) is NodeStatus.QUESTIONABLE
    for _ in range(BAD_AFTER_FAILURES - 1):
        table.failed(c, 2.0)
    assert entry.status(2.0) is NodeStatus.BAD
    assert table.closest(c.id) == []
    table.heard_from(c, 3.0, responded=True)
    assert entry.status(3.0) is NodeStatus.GOOD and entry.failures == 0


def test_failed_for_unknown_contact_is_harmless() -> None:
    table = RoutingTable(OWN)
    assert table.failed(contact(far_id(1), 1), 0.0) == ()
    c = contact(far_id(2), 2)
    table.heard_from(c, 0.0, responded=True)
    # Same ID, different address: not our entry.
    table.failed(Contact(c.id, ("198.51.100.7", 1)), 0.0)
    entry = table.get(c.id)
    assert entry is not None and entry.failures == 0


def test_counts_and_questionable_order() -> None:
    table = RoutingTable(OWN)
    cs = [contact(far_id(n), n) for n in range(4)]
    for i, c in enumerate(cs):
        table.heard_from(c, float(i), responded=True)
    table.heard_from(cs[0], 50.0, responded=False)  # seen most recently
    table.failed(cs[3], 60.0)
    table.failed(cs[3], 60.0)
    now = 10.0 + GOOD_WINDOW
    counts = table.counts(now)
    assert counts == {NodeStatus.GOOD: 1, NodeStatus.QUESTIONABLE: 2, NodeStatus.BAD: 1}
    assert table.questionable(now) == [cs[1], cs[2]]
    later = 100.0 + GOOD_WINDOW
    assert table.questionable(later) == [cs[1], cs[2], cs[0]]


# --- splitting and full buckets ---------------------------------------------------------------


def test_only_bucket_holding_own_id_splits() -> None:
    table = RoutingTable(OWN)
    far = fill_far_bucket(table)
    # The far bucket is full and does not hold our ID: the newcomer waits.
    newcomer = contact(far_id(100), 100)
    result = table.heard_from(newcomer, 1.0, responded=True)
    assert result.outcome is Outcome.REPLACEMENT_CACHED
    assert result.ping == ()  # all entries are good: nothing to ping
    assert newcomer.id not in table
    assert [r.contact for r in table.buckets[1].replacements] == [newcomer]
    assert len(table.buckets) == 2 and all(c.id in table for c in far)


def test_split_repeats_until_the_newcomer_fits() -> None:
    table = RoutingTable(OWN, k=2)
    # Two nodes deep in our half: bucket [0, 2**160) then [0, 2**159)... split.
    assert verified(table, contact(near_id(0, depth=5), 1), 0.0) is Outcome.ADDED
    assert verified(table, contact(near_id(1, depth=5), 2), 0.0) is Outcome.ADDED
    assert verified(table, contact(near_id(0, depth=9), 3), 0.0) is Outcome.ADDED
    ranges = [b.range for b in table.buckets]
    # Buckets for depths 0..5 were split off on the way down, then one more.
    assert ranges[0] == (0, ID_SPACE >> 6)
    assert ranges[-1] == (ID_SPACE >> 1, ID_SPACE)
    assert sum(len(b) for b in table.buckets) == 3


def test_full_bucket_replaces_a_bad_entry_at_once() -> None:
    table = RoutingTable(OWN)
    far = fill_far_bucket(table)
    for _ in range(BAD_AFTER_FAILURES):
        table.failed(far[3], 1.0)
    newcomer = contact(far_id(100), 100)
    assert verified(table, newcomer, 2.0) is Outcome.ADDED
    assert far[3].id not in table and newcomer.id in table
    assert table.buckets[1].last_changed == 2.0


def test_full_bucket_with_questionable_entries_pings_least_recently_seen() -> None:
    table = RoutingTable(OWN)
    far = fill_far_bucket(table, now=0.0)
    for i, c in enumerate(far):
        table.heard_from(c, 10.0 + i, responded=False)  # far[0] seen longest ago
    now = 100.0 + GOOD_WINDOW  # all questionable
    r1 = table.heard_from(contact(far_id(100), 100), now, responded=True)
    assert r1.outcome is Outcome.REPLACEMENT_CACHED and r1.ping == (far[0],)
    # Another newcomer soon after: far[0] is already being pinged, ask for far[1].
    r2 = table.heard_from(contact(far_id(101), 101), now + 1, responded=True)
    assert r2.ping == (far[1],)
    # After the ping interval far[0] may be asked for again.
    r3 = table.heard_from(contact(far_id(102), 102), now + EVICTION_PING_INTERVAL + 1, responded=True)
    assert r3.ping == (far[0],)


def test_failed_questionable_entry_is_replaced_by_a_verified_replacement() -> None:
    table = RoutingTable(OWN)
    far = fill_far_bucket(table)
    now = 1.0 + GOOD_WINDOW
    waiting = contact(far_id(100), 100)
    assert verified(table, waiting, now) is Outcome.REPLACEMENT_CACHED
    victim = far[0]
    assert table.failed(victim, now + 1) == ()
    assert victim.id in table  # one failure is not enough for a node that answered
    assert table.failed(victim, now + 2) == ()
    assert victim.id not in table and waiting.id in table
    assert table.buckets[1].replacements == []
    assert table.buckets[1].last_changed == now + 2


def test_unverified_replacement_is_returned_for_pinging_not_inserted() -> None:
    table = RoutingTable(OWN)
    far = fill_far_bucket(table)
    now = 1.0 + GOOD_WINDOW
    stranger = contact(far_id(100), 100)
    result = table.heard_from(stranger, now, responded=False)
    assert result.outcome is Outcome.REPLACEMENT_CACHED
    assert result.ping == (far[0],)
    table.failed(far[0], now)
    assert table.failed(far[0], now) == (stranger,)
    assert stranger.id not in table and far[0].id in table
    # The stranger answers our ping: it replaces the bad entry.
    assert verified(table, stranger, now + 1) is Outcome.ADDED
    assert far[0].id not in table


def test_replacement_cache_is_bounded_oldest_out_unverified_first() -> None:
    table = RoutingTable(OWN, replacement_cache=3)
    fill_far_bucket(table)
    stranger = contact(far_id(100), 100)
    table.heard_from(stranger, 1.0, responded=False)
    for n in range(101, 104):
        assert verified(table, contact(far_id(n), n), 1.0) is Outcome.REPLACEMENT_CACHED
    ids = [r.contact.id for r in table.buckets[1].replacements]
    assert ids == [far_id(101), far_id(102), far_id(103)]
    assert verified(table, contact(far_id(104), 104), 1.0) is Outcome.REPLACEMENT_CACHED
    ids = [r.contact.id for r in table.buckets[1].replacements]
    assert ids == [far_id(102), far_id(103), far_id(104)]


def test_unverified_contact_gets_verify_when_bucket_has_a_bad_entry() -> None:
    table = RoutingTable(OWN)
    far = fill_far_bucket(table)
    for _ in range(BAD_AFTER_FAILURES):
        table.failed(far[5], 1.0)
    result = table.heard_from(contact(far_id(100), 100), 2.0, responded=False)
    assert result.outcome is Outcome.VERIFY
    assert far[5].id in table  # nothing changes until the newcomer answers


# --- ID hijack and address changes ----------------------------------------------------------


def test_known_id_at_new_address_keeps_old_address_while_not_bad() -> None:
    table = RoutingTable(OWN)
    c = contact(far_id(1), 1)
    table.heard_from(c, 0.0, responded=True)
    thief = Contact(c.id, ("198.51.100.9", 7000))
    assert table.heard_from(thief, 1.0, responded=True).outcome is Outcome.REJECTED
    assert table.heard_from(thief, 1.0, responded=False).outcome is Outcome.REJECTED
    # Even when questionable, the old address stays.
    assert table.heard_from(thief, 2 * GOOD_WINDOW, responded=True).outcome is Outcome.REJECTED
    entry = table.get(c.id)
    assert entry is not None and entry.addr == c.addr


def test_known_id_moves_when_old_entry_is_bad() -> None:
    table = RoutingTable(OWN)
    c = contact(far_id(1), 1)
    table.heard_from(c, 0.0, responded=True)
    for _ in range(BAD_AFTER_FAILURES):
        table.failed(c, 1.0)
    moved = Contact(c.id, ("198.51.100.9", 7000))
    assert table.heard_from(moved, 2.0, responded=False).outcome is Outcome.VERIFY
    assert table.heard_from(moved, 3.0, responded=True).outcome is Outcome.UPDATED
    entry = table.get(c.id)
    assert entry is not None and entry.addr == moved.addr and entry.status(3.0) is NodeStatus.GOOD
    # The old address is free for someone else.
    assert verified(table, Contact(far_id(2), c.addr), 4.0) is Outcome.ADDED


def test_new_id_at_known_address_replaces_only_a_non_good_entry() -> None:
    table = RoutingTable(OWN)
    c = contact(far_id(1), 1)
    table.heard_from(c, 0.0, responded=True)
    other = Contact(far_id(2), c.addr)
    assert table.heard_from(other, 1.0, responded=True).outcome is Outcome.REJECTED
    assert other.id not in table
    later = 1.0 + GOOD_WINDOW  # c is now questionable
    assert table.heard_from(other, later, responded=False).outcome is Outcome.VERIFY
    assert table.heard_from(other, later + 1, responded=True).outcome is Outcome.ADDED
    assert other.id in table and c.id not in table
    assert len(table) == 1


# --- per-IP limit ---------------------------------------------------------------------------


def test_one_entry_per_ip_by_default() -> None:
    table = RoutingTable(OWN)
    a = Contact(far_id(1), ("203.0.113.5", 1000))
    b = Contact(far_id(2), ("203.0.113.5", 2000))
    assert verified(table, a, 0.0) is Outcome.ADDED
    assert verified(table, b, 0.0) is Outcome.REJECTED
    assert table.heard_from(b, 0.0, responded=False).outcome is Outcome.REJECTED
    # Once the first goes bad the slot is free.
    for _ in range(BAD_AFTER_FAILURES):
        table.failed(a, 1.0)
    assert table.heard_from(b, 2.0, responded=False).outcome is Outcome.VERIFY
    assert verified(table, b, 2.0) is Outcome.ADDED
    assert a.id not in table


def test_per_ip_limit_configurable_and_loopback_exempt() -> None:
    unlimited = RoutingTable(OWN, max_per_ip=None)
    two = RoutingTable(OWN, max_per_ip=2)
    strict = RoutingTable(OWN, exempt_loopback=False)
    loop = RoutingTable(OWN)
    for n in range(3):
        c = Contact(far_id(n), ("203.0.113.5", 1000 + n))
        assert verified(unlimited, c, 0.0) is Outcome.ADDED
        assert verified(two, c, 0.0) is (Outcome.ADDED if n < 2 else Outcome.REJECTED)
        lc = Contact(far_id(n), ("127.0.0.1", 1000 + n))
        assert verified(loop, lc, 0.0) is Outcome.ADDED
        assert verified(strict, lc, 0.0) is (Outcome.ADDED if n == 0 else Outcome.REJECTED)


# --- closest, refresh, remove ---------------------------------------------------------------


def test_closest_sorted_and_excludes_bad_and_optionally_questionable() -> None:
    rng = random.Random(4)
    own = rng.randbytes(20)
    table = RoutingTable(own, max_per_ip=None)
    cs = [Contact(rng.randbytes(20), ("203.0.113.1", 1000 + i)) for i in range(300)]
    for c in cs:
        table.heard_from(c, 0.0, responded=True)
    entries = list(table)
    assert len(entries) > 16
    bad = entries[0].contact
    table.failed(bad, 1.0)
    table.failed(bad, 1.0)
    table.heard_from(entries[1].contact, GOOD_WINDOW, responded=True)
    for _ in range(20):
        target = rng.randbytes(20)
        eligible = [e.contact for e in table if e.contact != bad]
        expect = sorted(eligible, key=lambda c: distance(c.id, target))
        assert table.closest(target, 8) == expect[:8]
        assert table.closest(target, 1000) == expect
    good_only = table.closest(own, 8, include_questionable=False, now=GOOD_WINDOW + 1)
    assert good_only == [entries[1].contact]
    assert table.closest(own, 0) == []


def test_buckets_to_refresh_and_touch() -> None:
    table = RoutingTable(OWN, now=0.0)
    fill_far_bucket(table, now=10.0)
    assert table.buckets_to_refresh(10.0 + REFRESH_INTERVAL - 1) == []
    assert table.buckets_to_refresh(10.0 + REFRESH_INTERVAL) == [(0, TOP), (TOP, ID_SPACE)]
    table.touch_bucket(far_id(999), 500.0)
    assert table.buckets_to_refresh(10.0 + REFRESH_INTERVAL) == [(0, TOP)]
    # A response from a member refreshes its bucket too (BEP 5 "last changed").
    table.heard_from(contact(near_id(0), 200), 600.0, responded=True)
    assert table.buckets_to_refresh(10.0 + REFRESH_INTERVAL) == []
    # A query from a member does not.
    table.heard_from(contact(near_id(0), 200), 700.0, responded=False)
    assert table.buckets_to_refresh(600.0 + REFRESH_INTERVAL) == [(0, TOP), (TOP, ID_SPACE)]


def test_remove_promotes_a_verified_replacement() -> None:
    table = RoutingTable(OWN)
    far = fill_far_bucket(table)
    waiting = contact(far_id(100), 100)
    table.heard_from(waiting, 1.0, responded=True)
    assert table.remove(far[2].id) is True
    assert far[2].id not in table and waiting.id in table
    assert table.remove(far[2].id) is False
    assert table.remove(waiting.id) is True
    assert len(table.buckets[1]) == table.k - 1


# --- persistence ----------------------------------------------------------------------------


def test_state_round_trip_restores_unverified_contacts() -> None:
    rng = random.Random(9)
    own = rng.randbytes(20)
    table = RoutingTable(own)
    cs = [contact(rng.randbytes(20), i) for i in range(60)]
    for c in cs:
        table.heard_from(c, 0.0, responded=True)
    bad = next(iter(table)).contact
    table.failed(bad, 0.0)
    table.failed(bad, 0.0)
    state = table.to_state()
    assert state["version"] == 1 and state["id"] == own
    assert bad not in state["nodes"]
    restored = RoutingTable.from_state(state, now=1000.0)
    assert restored.own_id == own
    assert {e.contact for e in restored} == set(state["nodes"])
    assert all(e.status(1000.0) is NodeStatus.QUESTIONABLE for e in restored)
    first = next(iter(restored)).contact
    restored.failed(first, 1001.0)
    entry = restored.get(first.id)
    assert entry is not None and entry.status(1001.0) is NodeStatus.BAD
    with pytest.raises(ValueError):
        RoutingTable.from_state({**state, "version": 2}, now=0.0)
    other = RoutingTable.from_state(state, now=0.0, own_id=rng.randbytes(20))
    assert other.own_id != own


def test_a_new_own_id_keeps_the_contacts_and_what_we_know_of_them() -> None:
    rng = random.Random(5)
    table = RoutingTable(rng.randbytes(20))
    for i in range(400):
        c = contact(rng.randbytes(20), i)
        table.heard_from(c, float(i), responded=True, rtt=0.05)
    failing = next(iter(table))
    table.failed(failing.contact, 500.0)
    before = {e.contact.id: e for e in table}
    cached = {r.contact.id for b in table.buckets for r in b.replacements}
    new_id = rng.randbytes(20)
    moved = table.with_own_id(new_id, 600.0)
    assert moved.own_id == new_id and moved is not table
    check_invariants(moved, 1, 8)
    after = {e.contact.id: e for e in moved}
    # Every entry is still known, in the table or as a replacement, with its
    # history, unless its new bucket and that bucket's cache are both full.
    kept = after.keys() | {r.contact.id for b in moved.buckets for r in b.replacements}
    for lost in before.keys() - kept:
        bucket = moved.bucket_for(lost)
        assert len(bucket.entries) == moved.k and len(bucket.replacements) == 8
    # As many entries as an empty table around the new ID takes from the same contacts.
    fresh = RoutingTable(new_id)
    for e in sorted(before.values(), key=lambda e: e.first_seen):
        fresh.restore(e.contact, 600.0)
    assert len(after) == len(fresh)
    assert all(after[i] is before[i] for i in after.keys() & before.keys())
    assert moved.get(failing.contact.id) in (None, failing) and failing.failures == 1
    # The far half around the new ID: full buckets of the contacts known longest.
    for bucket in moved.buckets:
        if len(bucket.entries) == moved.k and bucket.replacements:
            newest_kept = max(e.first_seen for e in bucket.entries)
            assert all(r.first_seen > newest_kept or r.contact.id in cached for r in bucket.replacements)
    # A contact that has the new ID itself is dropped.
    some = next(iter(table)).contact
    again = table.with_own_id(some.id, 700.0)
    assert some.id not in again and all(r.contact.id != some.id for b in again.buckets for r in b.replacements)
    check_invariants(again, 1, 8)


def test_split_saved_contacts_puts_the_former_entries_first() -> None:
    rng = random.Random(4)
    own = rng.randbytes(20)
    table = RoutingTable(own)
    for i in range(300):  # enough that the far buckets overflow into their caches
        table.heard_from(contact(rng.randbytes(20), i), 0.0, responded=True)
    state = table.to_state()
    assert state["replacements"]
    saved = [*state["nodes"], *state["replacements"]]
    fits, overflow = split_saved_contacts(own, saved)
    assert fits == state["nodes"]
    assert overflow == state["replacements"]
    # The order decides: the replacements given first take the places instead.
    fits2, overflow2 = split_saved_contacts(own, [*state["replacements"], *state["nodes"]])
    assert set(state["replacements"]) <= set(fits2) and set(fits2) != set(fits)
    assert sorted(fits2 + overflow2) == sorted(saved)


def test_split_saved_contacts_leaves_out_our_own_id() -> None:
    mine = Contact(OWN, ("203.0.0.1", 1))
    other = contact(far_id(1), 2)
    assert split_saved_contacts(OWN, [mine, other]) == ([other], [])
    assert split_saved_contacts(OWN, []) == ([], [])


# --- property tests -------------------------------------------------------------------------


def check_invariants(table: RoutingTable, max_per_ip: int | None, replacement_cache: int) -> None:
    own = id_to_int(table.own_id)
    buckets = table.buckets
    assert buckets[0].lo == 0 and buckets[-1].hi == ID_SPACE
    live_ids: set[bytes] = set()
    addrs: set[tuple[str, int]] = set()
    per_ip: dict[str, int] = {}
    for prev, b in zip((None, *buckets), buckets):
        if prev is not None:
            assert prev.hi == b.lo  # contiguous partition
        size = b.hi - b.lo
        assert size & (size - 1) == 0 and b.lo % size == 0  # aligned power of two
        if not b.lo <= own < b.hi and size != ID_SPACE:
            # Only the bucket holding our ID ever split: every other bucket's
            # sibling (the other half of its parent) holds our ID.
            sibling_lo = b.lo ^ size
            assert sibling_lo <= own < sibling_lo + size
        assert len(b.entries) <= table.k
        assert len(b.replacements) <= replacement_cache
        for e in b.entries:
            assert b.lo <= e.id_int < b.hi and e.id_int == id_to_int(e.contact.id)
            assert e.contact.id != table.own_id
            assert table.get(e.contact.id) is e
            assert e.contact.addr not in addrs
            addrs.add(e.contact.addr)
            live_ids.add(e.contact.id)
            per_ip[e.contact.addr[0]] = per_ip.get(e.contact.addr[0], 0) + 1
        for r in b.replacements:
            assert b.lo <= r.id_int < b.hi
            assert r.contact.id not in live_ids and table.get(r.contact.id) is None
    assert len(live_ids) == len(table)
    if max_per_ip is not None:
        assert max(per_ip.values(), default=0) <= max_per_ip


def brute_closest(table: RoutingTable, target: bytes) -> list[Contact]:
    eligible = [e.contact for e in table if not e.is_bad]
    return sorted(eligible, key=lambda c: distance(c.id, target))


OPS = st.lists(
    st.tuples(
        st.sampled_from(["respond", "respond", "query", "fail", "fail", "tick", "remove", "closest"]),
        st.integers(0, 59),  # which node of the pool
        st.integers(0, 2),  # address variant (exercises hijack and clash rules)
        st.floats(0, 2 * GOOD_WINDOW),
    ),
    min_size=40,
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(ops=OPS, seed=st.integers(0, 2**32), k=st.sampled_from([1, 2, 8]), max_per_ip=st.sampled_from([1, 2, None]))
def test_random_operation_sequences_keep_invariants(
    ops: list[tuple[str, int, int, float]], seed: int, k: int, max_per_ip: int | None
) -> None:
    rng = random.Random(seed)
    own = rng.randbytes(20)
    own_int = id_to_int(own)
    # IDs cluster around our own so splitting goes deep.
    pool = [int_to_id(own_int ^ (rng.getrandbits(160) >> rng.randrange(0, 40))) for _ in range(60)]
    table = RoutingTable(own, k=k, max_per_ip=max_per_ip, replacement_cache=3)
    now = 0.0
    # Start from a populated table, so the operations meet full buckets.
    prefill = [("respond", i, i % 3, 0.0) for i in rng.sample(range(60), rng.randrange(0, 60))]
    for op, i, variant, dt in prefill + ops:
        c = Contact(pool[i], (f"203.0.113.{(i + variant * 7) % 20}", 6881 + variant))
        if op == "respond":
            table.heard_from(c, now, responded=True)
        elif op == "query":
            result = table.heard_from(c, now, responded=False)
            if result.outcome in (Outcome.VERIFY, Outcome.PENDING):
                assert table.get(c.id) is None or table.get(c.id).addr != c.addr  # type: ignore[union-attr]
        elif op == "fail":
            known = table.get(c.id)
            # Mostly fail the contact as the table knows it, so entries go bad.
            table.failed(known.contact if known is not None and variant < 2 else c, now)
        elif op == "tick":
            now += dt
        elif op == "remove":
            table.remove(c.id)
        else:
            assert table.closest(c.id, 8) == brute_closest(table, c.id)[:8]
        check_invariants(table, max_per_ip, 3)
    for _ in range(5):
        target = rng.randbytes(20)
        assert table.closest(target, 20) == brute_closest(table, target)[:20]


STATE_OPS = st.lists(
    st.tuples(st.sampled_from(["respond", "query", "fail", "tick"]), st.integers(0, 7), st.floats(0, GOOD_WINDOW)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=STATE_OPS)
@example(ops=[("tick", 0, 1.6251467812500664), ("respond", 0, 0.0), ("tick", 0, 900.0)])  # a rounding boundary
def test_node_states_follow_the_scripted_clock(ops: list[tuple[str, int, float]]) -> None:
    """A model of BEP 5 states, tracked independently, agrees with the table."""
    table = RoutingTable(OWN, k=16)
    contacts = [contact(far_id(n), n) for n in range(8)]
    model: dict[int, dict[str, float | int | None]] = {}
    now = 0.0
    for op, i, dt in ops:
        c = contacts[i]
        if op == "respond":
            table.heard_from(c, now, responded=True)
            m = model.setdefault(i, {"resp": None, "query": None, "fails": 0})
            m["resp"], m["fails"] = now, 0
        elif op == "query":
            table.heard_from(c, now, responded=False)
            if i in model:
                model[i]["query"] = now
        elif op == "fail":
            table.failed(c, now)
            if i in model:
                model[i]["fails"] = int(model[i]["fails"] or 0) + 1
        else:
            now += dt
        for j, m in model.items():
            entry = table.get(contacts[j].id)
            assert entry is not None
            fails = int(m["fails"] or 0)
            resp, query = m["resp"], m["query"]
            assert isinstance(resp, float)
            if fails >= BAD_AFTER_FAILURES:
                expect = NodeStatus.BAD
            # (The same comparison as the table's, against one horizon: at the
            # boundary, `now - resp <= GOOD_WINDOW` can round the other way.)
            elif fails == 0 and (
                resp >= now - GOOD_WINDOW or (isinstance(query, float) and query >= now - GOOD_WINDOW)
            ):
                expect = NodeStatus.GOOD
            else:
                expect = NodeStatus.QUESTIONABLE
            assert entry.status(now) is expect
        assert len(table) == len(model)
