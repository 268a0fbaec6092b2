"""Tests of mainline_dht.core.external_ip: agreeing on our external address from BEP 42 ``ip`` reports."""

from __future__ import annotations

import pytest

from mainline_dht.core.external_ip import DEFAULT_MIN_VOTES, ExternalAddressVoter

HOME = "198.51.100.7"
AWAY = "203.0.113.9"


def voters(n: int, start: int = 0) -> list[str]:
    return [f"11.{(start + i) // 250}.{(start + i) % 250}.1" for i in range(n)]  # distinct /24s


def test_an_address_needs_min_votes_from_distinct_ips() -> None:
    voter = ExternalAddressVoter()
    assert DEFAULT_MIN_VOTES == 10
    results = [voter.vote(ip, HOME) for ip in voters(9)]
    assert results == [None] * 9 and voter.current is None
    # The same voter again and again adds nothing.
    assert all(voter.vote(voters(1)[0], HOME) is None for _ in range(50))
    assert voter.vote(voters(1, start=9)[0], HOME) == HOME
    assert voter.current == HOME
    assert voter.vote(voters(1, start=10)[0], HOME) is None  # already known: no new report


def test_a_minority_cannot_move_the_address() -> None:
    voter = ExternalAddressVoter(min_votes=3)
    for ip in voters(10):
        voter.vote(ip, HOME)
    assert voter.current == HOME
    for ip in voters(9, start=100):  # 9 liars against 10
        assert voter.vote(ip, AWAY) is None
    assert voter.vote(voters(1, start=200)[0], AWAY) is None  # 10 against 10: no majority
    assert voter.vote(voters(1, start=201)[0], AWAY) == AWAY  # 11 of 21


def test_a_voter_changing_its_report_moves_its_one_vote() -> None:
    voter = ExternalAddressVoter(min_votes=3)
    for ip in voters(3):
        voter.vote(ip, HOME)
    assert voter.current == HOME
    for ip in voters(3):
        voter.vote(ip, AWAY)  # we moved; the same nodes now see the new address
    assert voter.current == AWAY and len(voter) == 3


def test_memory_is_bounded_and_old_votes_fade() -> None:
    voter = ExternalAddressVoter(min_votes=5, max_voters=20)
    for ip in voters(20):
        voter.vote(ip, HOME)
    assert voter.current == HOME
    changed = [voter.vote(ip, AWAY) for ip in voters(500, start=1000)]
    assert len(voter) == 20
    assert changed.count(AWAY) == 1 and voter.current == AWAY


@pytest.mark.parametrize(("min_votes", "max_voters"), [(0, 10), (5, 4)])
def test_nonsense_settings_are_refused(min_votes: int, max_voters: int) -> None:
    with pytest.raises(ValueError):
        ExternalAddressVoter(min_votes=min_votes, max_voters=max_voters)
