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


def test_the_global_budget_serves_trusted_then_known_then_strangers() -> None:
    table = {"10.1.0.1"}
    policy = InboundPolicy(reply_rate=100, reply_burst=100, stranger_rate=10, stranger_burst=10,
                           trusted=table.__contains__)
    # A known source: 12 s of traffic without a silence over the gap.
    t = 0.0
    while t < 12.0:
        assert policy.admit("10.2.0.1", t)
        t += 1.0
    # A sporadic one: seen 10 s apart, no sustained history.
    assert policy.admit("10.2.0.2", 0.0) and policy.admit("10.2.0.2", 10.0)
    policy.verified("10.3.0.1", 5.0)  # it answered one of our queries
    t = 12.0
    assert policy.is_known("10.2.0.1", t) and not policy.is_known("10.2.0.2", t)
    assert policy.is_verified("10.3.0.1") and not policy.is_verified("10.2.0.1")
    # A flood of first-time (spoofed) sources takes only the strangers' budget.
    before = policy.budget_refused
    new = sum(policy.admit(f"10.9.{i // 250}.{i % 250}", t) for i in range(5_000))
    assert new == 10
    assert policy.budget_refused - before == 5_000 - 10
    assert not policy.admit("10.2.0.2", t)  # a stranger too: the strangers' budget is spent
    # The known source gets the global budget down to its last quarter...
    assert spend(policy, "10.2.0.1", t, 100) == 100 - 10 - 25
    # ...and the trusted ones (a table contact, an IP that answered us) the rest.
    assert spend(policy, "10.3.0.1", t, 10) == 10
    assert spend(policy, "10.1.0.1", t, 100) == 15
    assert policy.reply_tokens(t) < 1
    # One second later the budget is whole again: at most 100 a second in all.
    assert policy.reply_tokens(t + 1.0) == 100


def test_strangers_that_come_back_share_a_small_budget() -> None:
    """A forged source used every 10 s is served from the strangers' budget,
    however long the flood lasts and whatever the global budget holds."""
    policy = InboundPolicy()
    addresses = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(50_000)]
    served = 0
    # 60 s at 5,000 a second, each address every 10 s (what tools/hostile.py sends).
    for ms in range(60_000):
        now = ms / 1000
        for j in range(5):
            served += policy.admit(addresses[(ms * 5 + j) % 50_000], now)
    stranger_budget = policy.strangers.burst + 60 * policy.strangers.rate
    assert stranger_budget - 5 <= served <= stranger_budget + 1
    assert served < 60 * policy.reply_rate / 2  # type: ignore[operator]
    assert not any(policy.is_known(ip, 60.0) for ip in addresses[:1000])


def test_a_sustained_source_earns_its_place_beside_a_spoofed_flood() -> None:
    """A heavy client that first shows up during a spoofed flood (so is a
    stranger) is served in full once its traffic has been sustained for
    ``known_after`` seconds; a gap longer than ``known_max_gap`` starts it over."""
    policy = InboundPolicy(known_after=10.0, known_max_gap=2.0)
    rng = random.Random(0)
    answered: list[bool] = []
    honest_at = 5.0 + rng.random() * 0.05  # 20 a second from t = 5 s, at random instants
    for i in range(200_000):  # 40 s at 5,000 a second, never the same source twice
        now = (i + rng.random()) / 5000
        while honest_at <= now:
            answered.append(policy.admit("10.200.0.1", honest_at))
            honest_at = 5.0 + len(answered) * 0.05 + rng.random() * 0.05
        policy.admit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now)
    assert not all(answered[:40])  # a stranger at first
    assert all(answered[-(20 * 15):])  # known, and served in full, for the last 15 s
    assert policy.is_known("10.200.0.1", 40.0)
    # Silent for longer than the gap: it starts over as a stranger.
    policy.admit("10.200.0.1", 43.0)
    assert not policy.is_known("10.200.0.1", 43.0)


def test_an_ip_that_answered_us_is_trusted() -> None:
    policy = InboundPolicy(reply_rate=100, reply_burst=100, stranger_rate=1, stranger_burst=1)
    spend(policy, "10.9.0.1", 0.0, 1)  # the strangers' budget is spent
    assert not policy.admit("10.4.0.1", 0.0)
    policy.verified("10.4.0.1", 0.0)
    assert policy.is_verified("10.4.0.1")
    assert spend(policy, "10.4.0.1", 0.0, 20) == 20


def test_a_flood_in_a_trusted_source_s_name_cannot_get_it_banned() -> None:
    """A spoofer floods with the addresses of a table contact, of an IP that
    answered us and of a stranger: the trusted two are held to their rate and
    served again as soon as the flood stops; the stranger is banned for minutes."""
    table = {"10.1.0.1"}
    policy = InboundPolicy(rate=30, burst=150, trusted=table.__contains__)
    policy.verified("10.4.0.1", 0.0)
    admitted = dict.fromkeys(("10.1.0.1", "10.4.0.1", "10.5.0.1"), 0)
    for i in range(10_000):  # 10 s at 1,000 a second in each name
        for ip in admitted:
            admitted[ip] += policy.admit(ip, i / 1000)
    assert policy.bans == 1 and policy.banned("10.5.0.1", 10.0)
    assert not policy.banned("10.1.0.1", 10.0) and not policy.banned("10.4.0.1", 10.0)
    # Held to its rate while the flood lasts: the burst, then 30 a second.
    for ip in ("10.1.0.1", "10.4.0.1"):
        assert admitted[ip] <= 150 + 10 * 30 + 1
    # A second after the flood stops, the trusted sources are served in full.
    assert spend(policy, "10.1.0.1", 11.0, 20) == 20
    assert spend(policy, "10.4.0.1", 11.0, 20) == 20
    assert spend(policy, "10.5.0.1", 11.0, 20) == 0
    assert spend(policy, "10.5.0.1", 10.0 + policy.ban_seconds, 20) == 20


def test_answering_our_query_ends_a_ban() -> None:
    """A ban may have come from a flood in its name: once it is return-routable,
    the source is held to its rate instead."""
    policy = InboundPolicy(rate=10, burst=20)
    assert spend(policy, "10.6.0.1", 0.0, 100) == 20
    assert policy.banned("10.6.0.1", 1.0)
    policy.verified("10.6.0.1", 1.0)
    assert not policy.banned("10.6.0.1", 1.0)
    assert spend(policy, "10.6.0.1", 2.0, 100) == 10  # a second's worth of its rate, no burst


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
    # The node handled no more than the strangers' budget from the spoofed sources.
    assert spoofed <= policy.strangers.burst + 10 * policy.strangers.rate


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
        {"stranger_rate": 0},
        {"stranger_burst": 0.5},
        {"known_max_gap": 0},
        {"known_after": -1},
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        InboundPolicy(**kwargs)  # type: ignore[arg-type]


def test_refusing_strangers_from_the_closed_window_decides_as_the_buckets_do() -> None:
    """While both budgets are known to be short, first-time strangers are refused
    with one comparison; the decisions are those of the buckets themselves."""
    table = {"10.1.0.1"}
    fast = InboundPolicy(reply_rate=50, reply_burst=60, stranger_rate=7, stranger_burst=5, trusted=table.__contains__)
    exact = InboundPolicy(reply_rate=50, reply_burst=60, stranger_rate=7, stranger_burst=5, trusted=table.__contains__)
    rng = random.Random(3)
    now = 0.0
    decisions = []
    for i in range(20_000):
        now += rng.expovariate(400)
        ip = rng.choice(["10.1.0.1", "10.2.0.1", f"10.3.0.{rng.randrange(50)}", f"10.9.{i >> 8 & 255}.{i & 255}"])
        exact._closed_until = -1.0  # always ask the buckets
        a, b = fast.admit(ip, now), exact.admit(ip, now)
        assert a == b, (i, ip, now)
        decisions.append(a)
    assert 0.05 < sum(decisions) / len(decisions) < 0.95
    assert fast.budget_refused == exact.budget_refused > 1000
