"""Tests of mainline_dht.core.rate_limit: the per-IP query budget, with scripted time."""

from __future__ import annotations

import pytest

from mainline_dht.core.rate_limit import DEFAULT_QUERY_BURST, DEFAULT_QUERY_RATE, QueryRateLimiter


def spend(limiter: QueryRateLimiter, ip: str, now: float, n: int) -> int:
    """Offer ``n`` queries from ``ip`` at ``now``; return how many were allowed."""
    return sum(limiter.allow(ip, now) for _ in range(n))


def test_defaults_follow_the_reference_rate() -> None:
    limiter = QueryRateLimiter()
    assert (limiter.rate, limiter.burst) == (DEFAULT_QUERY_RATE, DEFAULT_QUERY_BURST) == (5.0, 50.0)


def test_a_new_ip_gets_a_full_burst_then_is_refused() -> None:
    limiter = QueryRateLimiter(rate=5, burst=10)
    assert spend(limiter, "10.0.0.1", 0.0, 25) == 10
    assert limiter.dropped == 15
    assert not limiter.allow("10.0.0.1", 0.0)


def test_the_bucket_refills_at_the_rate_and_no_higher_than_the_burst() -> None:
    limiter = QueryRateLimiter(rate=5, burst=10)
    spend(limiter, "10.0.0.1", 0.0, 10)
    assert spend(limiter, "10.0.0.1", 1.0, 100) == 5  # one second: five more
    assert spend(limiter, "10.0.0.1", 1.125, 100) == 0  # 0.625 of a token: nothing yet
    assert spend(limiter, "10.0.0.1", 1.25, 100) == 1
    assert spend(limiter, "10.0.0.1", 3600.0, 100) == 10  # an hour's quiet: one burst, not 18,000


def test_a_steady_sender_gets_the_rate() -> None:
    limiter = QueryRateLimiter(rate=5, burst=10)
    # 100 queries a second for 60 s: the burst, then 5 a second.
    allowed = sum(limiter.allow("10.0.0.1", i / 100) for i in range(6000))
    assert 10 + 5 * 59 <= allowed <= 10 + 5 * 60 + 1


def test_ips_have_separate_budgets() -> None:
    limiter = QueryRateLimiter(rate=1, burst=3)
    assert spend(limiter, "10.0.0.1", 0.0, 10) == 3
    assert spend(limiter, "10.0.0.2", 0.0, 10) == 3
    assert spend(limiter, "2001:db8::1", 0.0, 10) == 3


def test_tokens_reports_without_spending() -> None:
    limiter = QueryRateLimiter(rate=2, burst=4)
    assert limiter.tokens("10.0.0.1", 0.0) == 4
    spend(limiter, "10.0.0.1", 0.0, 4)
    assert limiter.tokens("10.0.0.1", 0.0) == 0
    assert limiter.tokens("10.0.0.1", 1.0) == 2
    assert limiter.tokens("10.0.0.1", 1.0) == 2
    assert spend(limiter, "10.0.0.1", 1.0, 10) == 2


def test_a_clock_that_steps_back_refills_nothing() -> None:
    limiter = QueryRateLimiter(rate=5, burst=5)
    spend(limiter, "10.0.0.1", 100.0, 5)
    assert spend(limiter, "10.0.0.1", 50.0, 5) == 0
    assert spend(limiter, "10.0.0.1", 100.25, 5) == 1  # counted from the latest time seen


def test_memory_is_bounded_and_the_least_recently_seen_ip_goes_first() -> None:
    limiter = QueryRateLimiter(rate=1, burst=2, max_tracked=100)
    spend(limiter, "10.0.0.1", 0.0, 2)  # exhausted
    for i in range(150):
        limiter.allow(f"11.0.0.{i}", 0.0)
        assert len(limiter) <= 100
        if i % 10 == 0:
            assert not limiter.allow("10.0.0.1", 0.0)  # seen again: stays remembered, still refused
    assert len(limiter) == 100
    assert limiter.tokens("11.0.0.0", 0.0) == 2  # long unseen: forgotten (a full bucket again)
    assert limiter.tokens("11.0.0.149", 0.0) == 1


@pytest.mark.parametrize(("rate", "burst", "max_tracked"), [(0, 5, 10), (-1, 5, 10), (1, 0.5, 10), (1, 5, 0)])
def test_nonsense_settings_are_refused(rate: float, burst: float, max_tracked: int) -> None:
    with pytest.raises(ValueError):
        QueryRateLimiter(rate=rate, burst=burst, max_tracked=max_tracked)
