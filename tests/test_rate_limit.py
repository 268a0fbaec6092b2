"""Tests of mainline_dht.core.rate_limit: the inbound policy, with scripted time."""

from __future__ import annotations

import random

import pytest

from mainline_dht.core.rate_limit import (
    DEFAULT_BAN_SECONDS,
    DEFAULT_QUERY_BURST,
    DEFAULT_QUERY_RATE,
    InboundPolicy,
)


def spend(policy: InboundPolicy, ip: str, now: float, n: int) -> int:
    """Offer ``n`` datagrams from ``ip`` at ``now``; return how many were admitted."""
    return sum(policy.admit(ip, now) for _ in range(n))


def test_a_source_at_20_a_second_is_never_limited() -> None:
    policy = InboundPolicy()
    assert DEFAULT_QUERY_RATE > 20
    rng = random.Random(0)
    now = 0.0
    # Ten minutes at 20 a second on average, sent in clumps of up to 40 at once.
    sent = admitted = 0
    while now < 600.0:
        n = rng.randint(0, 40)
        sent += n
        admitted += spend(policy, "10.0.0.1", now, n)
        now += 1.0
    assert sent > 10_000 and admitted == sent
    assert policy.limited == policy.bans == 0


def test_a_flood_is_ignored_for_minutes_then_forgiven() -> None:
    policy = InboundPolicy(reply_rate=None)
    # 1,000 a second: the burst goes, then the source is ignored.
    t = 0.0
    admitted = 0
    for i in range(10_000):
        admitted += policy.admit("10.0.0.9", t + i / 1000)
    assert DEFAULT_QUERY_BURST <= admitted <= DEFAULT_QUERY_BURST + DEFAULT_QUERY_RATE
    assert policy.bans == 1 and policy.banned("10.0.0.9", 10.0)
    # Quiet or not, it stays ignored for the ban's length...
    assert spend(policy, "10.0.0.9", DEFAULT_BAN_SECONDS - 10, 5) == 0
    assert policy.tokens("10.0.0.9", 100.0) == 0
    # ...and comes back with a full bucket afterwards.
    assert spend(policy, "10.0.0.9", DEFAULT_BAN_SECONDS + 11, 5) == 5
    # Others were never affected.
    assert spend(policy, "10.0.0.10", 5.0, 100) == 100


def test_ips_have_separate_budgets() -> None:
    policy = InboundPolicy(rate=1, burst=3, reply_rate=None)
    assert spend(policy, "10.0.0.1", 0.0, 10) == 3
    assert spend(policy, "10.0.0.2", 0.0, 10) == 3
    assert spend(policy, "2001:db8::1", 0.0, 10) == 3


def test_the_bucket_refills_at_the_rate_and_no_higher_than_the_burst() -> None:
    policy = InboundPolicy(rate=5, burst=10, reply_rate=None, ban_seconds=0)
    assert spend(policy, "10.0.0.1", 0.0, 10) == 10
    assert policy.tokens("10.0.0.1", 1.0) == 5
    assert policy.tokens("10.0.0.1", 3600.0) == 10  # an hour's quiet: one burst, not 18,000


def test_a_clock_that_steps_back_refills_nothing() -> None:
    policy = InboundPolicy(rate=5, burst=5, reply_rate=None)
    spend(policy, "10.0.0.1", 100.0, 4)
    assert policy.tokens("10.0.0.1", 50.0) == 1


def test_the_global_budget_serves_table_contacts_then_known_then_new_sources() -> None:
    table = {"10.1.0.1"}
    policy = InboundPolicy(reply_rate=100, reply_burst=100, trusted=table.__contains__)
    # A known source: first served long enough before the pressure starts.
    assert policy.admit("10.2.0.1", 0.0)
    assert policy.admit("10.2.0.2", 20.0)  # too recent to count as known
    t = 20.0
    # A flood of first-time (spoofed) sources takes only the half they may spend.
    new = sum(policy.admit(f"10.9.{i // 250}.{i % 250}", t) for i in range(5_000))
    assert new == 49
    assert policy.budget_refused == 5_000 - 49
    assert not policy.admit("10.2.0.2", t)
    # The known source still gets the next quarter, and no more.
    assert spend(policy, "10.2.0.1", t, 100) == 25
    # The table contact gets what remains.
    assert spend(policy, "10.1.0.1", t, 100) == 25
    assert policy.reply_tokens(t) < 1
    # One second later the budget is whole again: at most 100 a second in all.
    assert policy.reply_tokens(t + 1.0) == 100


def test_a_spoofed_flood_cannot_crowd_out_a_table_contact() -> None:
    table = {"10.1.0.1"}
    policy = InboundPolicy(trusted=table.__contains__)
    honest = sent = 0
    spoofed = 0
    # 10 s of 20,000 spoofed datagrams a second, and one contact at 20 a second.
    for ms in range(10_000):
        now = ms / 1000
        for j in range(20):
            i = ms * 20 + j
            spoofed += policy.admit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now)
        if ms % 50 == 0:
            sent += 1
            honest += policy.admit("10.1.0.1", now)
    assert honest == sent == 200
    # Refused first-time sources were not remembered: they push no one out of the map.
    assert len(policy) <= spoofed + 1 < 20_000
    # The node handled no more than its global budget from the spoofed sources.
    assert spoofed <= policy.reply_burst + 10 * policy.reply_rate  # type: ignore[operator]


def test_memory_is_bounded_and_the_least_recently_seen_ip_goes_first() -> None:
    policy = InboundPolicy(rate=1, burst=2, max_tracked=100, reply_rate=None)
    spend(policy, "10.0.0.1", 0.0, 3)  # banned
    for i in range(150):
        policy.admit(f"11.0.0.{i}", 0.0)
        assert len(policy) <= 100
        if i % 10 == 0:
            assert not policy.admit("10.0.0.1", 0.0)  # seen again: stays remembered, still refused
    assert len(policy) == 100
    assert policy.tokens("11.0.0.0", 0.0) == 2  # long unseen: forgotten (a full bucket again)
    assert policy.tokens("11.0.0.149", 0.0) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0},
        {"rate": -1},
        {"burst": 0.5},
        {"max_tracked": 0},
        {"ban_seconds": -1},
        {"reply_rate": 0},
        {"reply_burst": 0},
        {"new_reserve": 1.0},
        {"new_reserve": 0.2, "known_reserve": 0.3},
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        InboundPolicy(**kwargs)  # type: ignore[arg-type]
