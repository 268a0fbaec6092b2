"""Tests of mainline_dht.core.rtt: RFC 6298-style estimates and the timeouts they give."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainline_dht.core.rtt import (
    DEFAULT_FALLBACK_TIMEOUT,
    DEFAULT_MAX_TIMEOUT,
    DEFAULT_MIN_TIMEOUT,
    RttEstimate,
    RttEstimator,
)
from mainline_dht.errors import LocalProtocolError


def test_the_first_sample_sets_srtt_and_half_of_it_as_deviation() -> None:
    est = RttEstimate()
    assert est.timeout() == math.inf
    est.observe(0.2)
    assert (est.srtt, est.rttvar, est.samples) == (0.2, 0.1, 1)
    assert est.timeout() == pytest.approx(0.2 + 4 * 0.1)


def test_later_samples_move_srtt_an_eighth_and_rttvar_a_quarter() -> None:
    est = RttEstimate()
    est.observe(0.2)
    est.observe(0.6)
    # rttvar first (it uses the old srtt): 0.1 + (|0.2 - 0.6| - 0.1) / 4
    assert est.rttvar == pytest.approx(0.175)
    assert est.srtt == pytest.approx(0.25)


def test_steady_samples_converge_and_the_deviation_vanishes() -> None:
    est = RttEstimate()
    for _ in range(200):
        est.observe(0.08)
    assert est.srtt == pytest.approx(0.08)
    assert est.rttvar < 1e-6
    assert est.timeout(min_var=0.01) == pytest.approx(0.08 + 0.04)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_impossible_samples_are_ignored(bad: float) -> None:
    est = RttEstimate()
    est.observe(bad)
    assert est.samples == 0
    est.observe(0.1)
    est.observe(bad)
    assert est.samples == 1 and est.srtt == 0.1


def test_nothing_measured_gives_the_fallback() -> None:
    rtt = RttEstimator()
    assert rtt.timeout() == DEFAULT_FALLBACK_TIMEOUT
    assert rtt.timeout(RttEstimate()) == DEFAULT_FALLBACK_TIMEOUT


def test_an_unknown_contact_gets_the_node_wide_timeout() -> None:
    rtt = RttEstimator()
    for sample in (0.1, 0.12, 0.08, 0.11, 0.09):
        rtt.observe(sample)
    assert rtt.timeout() == pytest.approx(max(DEFAULT_MIN_TIMEOUT, rtt.node.srtt + 4 * rtt.node.rttvar))
    assert DEFAULT_MIN_TIMEOUT <= rtt.timeout() < DEFAULT_FALLBACK_TIMEOUT


def test_a_contact_that_answered_quickly_gets_a_shorter_timeout_than_a_stranger() -> None:
    rtt = RttEstimator(minimum=0.01)
    for sample in (0.3, 0.05, 0.4, 0.1, 0.35, 0.2):
        rtt.observe(sample)
    fast = RttEstimate()
    for _ in range(5):
        fast.observe(0.03)
    slow = RttEstimate()
    for _ in range(5):
        slow.observe(0.45)
    assert rtt.timeout(fast) < rtt.timeout() < rtt.timeout(slow)
    # A quarter of its RTT floors the contact's deviation: a few steady samples do
    # not make its timeout a hair above its RTT.
    assert rtt.timeout(fast) == pytest.approx(2 * fast.srtt)


def test_timeouts_are_bounded_both_ways() -> None:
    rtt = RttEstimator(minimum=0.2, maximum=0.8)
    rtt.observe(0.0001)  # loopback
    assert rtt.timeout() == 0.2
    slow = RttEstimate()
    slow.observe(5.0)
    assert rtt.timeout(slow) == 0.8


@pytest.mark.parametrize(
    "kwargs",
    [{"minimum": 0.0}, {"minimum": 2.0, "maximum": 1.0}, {"maximum": math.inf}, {"fallback": 0.0}, {"fallback": math.nan}],
)
def test_bad_bounds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        RttEstimator(**kwargs)


@given(st.lists(st.floats(min_value=0.0, max_value=60.0), max_size=50), st.lists(st.floats(min_value=0.0, max_value=60.0), max_size=5))
def test_every_timeout_is_within_bounds(node_samples: list[float], contact_samples: list[float]) -> None:
    rtt = RttEstimator()
    for s in node_samples:
        rtt.observe(s)
    contact = RttEstimate()
    for s in contact_samples:
        contact.observe(s)
    for t in (rtt.timeout(), rtt.timeout(contact)):
        assert t == DEFAULT_FALLBACK_TIMEOUT or DEFAULT_MIN_TIMEOUT <= t <= DEFAULT_MAX_TIMEOUT
