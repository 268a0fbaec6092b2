"""The crawl policy (mainline_dht.crawl.policy): pure, scripted time, no sockets."""

from __future__ import annotations

import random
from collections import defaultdict

from mainline_dht.crawl.policy import CrawlLimits, CrawlPolicy, CrawlQuery, QueryKind
from mainline_dht.crawl.store import NodeRecord
from mainline_dht.wire.contact import Contact

from helpers import max_in_window

T0 = 1_700_000_000.0


def _contact(i: int, ip: str | None = None) -> Contact:
    return Contact(random.Random(i).randbytes(20), (ip or f"10.0.{i // 250}.{i % 250 + 1}", 6881))


def _policy(**limits: object) -> CrawlPolicy:
    return CrawlPolicy(rng=random.Random(1), now=T0, limits=CrawlLimits(**limits))  # type: ignore[arg-type]


def test_every_new_node_gets_one_sample_query() -> None:
    p = _policy(rate=1000.0, burst=1000.0)
    contacts = [_contact(i) for i in range(50)]
    assert p.add_contacts(contacts, T0) == 50
    assert p.add_contacts(contacts, T0) == 0  # known ones are not added twice
    qs = p.next_queries(T0)
    assert sorted(q.node_id for q in qs) == sorted(c.id for c in contacts)
    assert all(q.kind is QueryKind.SAMPLE for q in qs)
    assert p.next_queries(T0 + 1) == []  # in flight: nothing more until they answer


def test_targets_ask_for_neighbourhoods_and_random_regions() -> None:
    p = _policy(rate=1000.0, burst=1000.0, neighbour_share=0.5)
    p.add_contacts([_contact(i) for i in range(200)], T0)
    qs = p.next_queries(T0)
    near = sum(q.target[:15] == q.node_id[:15] for q in qs)
    assert 60 < near < 140


def test_global_rate_is_a_token_bucket() -> None:
    p = _policy(rate=10.0, burst=5.0, max_in_flight=10_000)
    p.add_contacts([_contact(i) for i in range(1000)], T0)
    assert len(p.next_queries(T0)) == 5
    assert p.next_queries(T0) == []
    wake = p.next_wakeup()
    assert wake is not None and abs(wake - (T0 + 0.1)) < 1e-3
    assert len(p.next_queries(T0 + 1.0)) == 5  # capped by the burst
    sent = 10
    now = T0 + 1.0
    while now < T0 + 11.0:
        now += 0.05
        sent += len(p.next_queries(now))
    assert 105 <= sent <= 111  # 10/s for 10 s more, plus the bursts


def test_charged_lookup_queries_slow_the_crawl() -> None:
    p = _policy(rate=10.0, burst=5.0)
    p.add_contacts([_contact(i) for i in range(100)], T0)
    p.charge(20, T0)
    assert p.next_queries(T0) == []
    assert p.next_queries(T0 + 1.0) == []  # 20 owed, 10 refilled
    assert len(p.next_queries(T0 + 1.65)) == 1  # 1.5 tokens


def test_no_ip_ever_gets_what_libtorrent_bans_at() -> None:
    """A simulated crawl of 3,000 nodes behind 12 IPs (and 500 on IPs of their own),
    every node answering at once with more contacts and, often, a ``num`` that asks
    for more samples: the queries per IP in any 10-second window never reach
    libtorrent's ban threshold (50 in 10 s), nor the policy's own bound (4 + 2 x 10)."""
    rng = random.Random(5)
    p = CrawlPolicy(rng=random.Random(2), now=T0, limits=CrawlLimits(rate=5000.0, min_interval=0.0,
                                                                       retry_after=0.5))
    crowded = [_contact(i, ip=f"10.9.9.{i % 12 + 1}") for i in range(3000)]
    alone = [_contact(10_000 + i) for i in range(500)]
    everyone = crowded + alone
    p.add_contacts(everyone[:20], T0)
    sent: dict[str, list[float]] = defaultdict(list)
    now = T0
    while now < T0 + 300:
        for q in p.next_queries(now):
            sent[q.addr[0]].append(now)
            roll = rng.random()
            if roll < 0.1:
                p.on_timeout(q, now)
            elif roll < 0.2:
                p.on_error(q, now, 204)
            else:
                p.on_response(q, now, sender_id=q.node_id, nodes=rng.sample(everyone, 8),
                              samples=[rng.randbytes(20)], num=1000, interval=0)
        now += 0.01
    assert sum(len(v) for v in sent.values()) > 3000
    worst = max(max_in_window(v) for v in sent.values())
    assert worst <= 24 < 50
    # and the crowded IPs are served all along, at their budget (no node is left waiting forever)
    for i in range(12):
        times = sent[f"10.9.9.{i + 1}"]
        assert len(times) >= 2 * 290 and max(times) > T0 + 299


def test_resample_only_after_interval_and_while_num_says_more() -> None:
    p = _policy(rate=100.0, burst=100.0, min_interval=10.0, max_sample_rounds=3)
    c = _contact(1)
    p.add_contact(c, T0)
    (q,) = p.next_queries(T0)
    out = p.on_response(q, T0, sender_id=c.id, samples=[b"a" * 20, b"b" * 20], num=5, interval=60,
                        version=b"LT\x01\x02")
    assert out is not None and out.first_answer and out.samples == (b"a" * 20, b"b" * 20)
    assert p.nodes[c.id].bep51 is True and p.nodes[c.id].version == b"LT\x01\x02"
    assert p.next_queries(T0 + 59) == []  # interval honoured
    (q2,) = p.next_queries(T0 + 60)
    assert q2.kind is QueryKind.SAMPLE
    # the same two again: num still says more, but the round limit (3) comes next
    p.on_response(q2, T0 + 60, sender_id=c.id, samples=[b"a" * 20, b"c" * 20], num=5, interval=5)
    assert p.nodes[c.id].next_visit == T0 + 70  # interval 5 < min_interval 10
    (q3,) = p.next_queries(T0 + 70)
    p.on_response(q3, T0 + 70, sender_id=c.id, samples=[b"d" * 20], num=5, interval=5)
    # third round: no more re-asking until the revisit
    assert p.nodes[c.id].next_visit >= T0 + 70 + p.limits.revisit_after


def test_all_seen_means_no_resample_before_revisit() -> None:
    p = _policy(rate=100.0, burst=100.0)
    c = _contact(1)
    p.add_contact(c, T0)
    (q,) = p.next_queries(T0)
    p.on_response(q, T0, sender_id=c.id, samples=[b"a" * 20], num=1, interval=30)
    assert p.next_queries(T0 + 1000) == []
    assert p.nodes[c.id].next_visit == T0 + p.limits.revisit_after


def test_no_bep51_is_remembered_and_never_sampled_again() -> None:
    p = _policy(rate=100.0, burst=100.0, revisit_after=100.0)
    like_find_node, error_204 = _contact(1), _contact(2)
    p.add_contacts([like_find_node, error_204], T0)
    qs = {q.node_id: q for q in p.next_queries(T0)}
    # answers like find_node: nodes, no samples
    p.on_response(qs[like_find_node.id], T0, sender_id=like_find_node.id, nodes=[_contact(3)])
    # 204: gets one find_node for its neighbours, at once
    p.on_error(qs[error_204.id], T0, 204)
    assert p.nodes[like_find_node.id].bep51 is False and p.nodes[error_204.id].bep51 is False
    later = p.next_queries(T0 + 1) + p.next_queries(T0 + p.limits.retry_after)
    kinds = {q.node_id: q.kind for q in later}
    assert kinds[error_204.id] is QueryKind.FIND_NODE
    assert like_find_node.id not in kinds
    assert _contact(3).id in kinds  # learned from the reply
    for q in later:
        p.on_response(q, T0 + 20, sender_id=q.node_id)
    # at the revisit: find_node again, never sample_infohashes
    revisit = p.next_queries(T0 + 200)
    assert {q.node_id: q.kind for q in revisit}[like_find_node.id] is QueryKind.FIND_NODE
    assert p.counters.no_bep51 == 3  # contact 3 answered its sample like find_node too


def test_timeouts_retry_then_give_up() -> None:
    p = _policy(rate=100.0, burst=100.0, retry_after=15.0, max_failures=2)
    c = _contact(1)
    p.add_contact(c, T0)
    (q,) = p.next_queries(T0)
    p.on_timeout(q, T0 + 5)
    assert p.next_queries(T0 + 19) == []
    (q,) = p.next_queries(T0 + 20)
    p.on_timeout(q, T0 + 25)
    assert p.nodes[c.id].dead
    assert p.next_queries(T0 + 10_000) == []
    assert p.take_dirty() == []  # it never answered: nothing to store


def test_another_node_at_the_address_is_recorded_instead() -> None:
    p = _policy(rate=100.0, burst=100.0)
    c = _contact(1)
    p.add_contact(c, T0)
    (q,) = p.next_queries(T0)
    other = b"\x07" * 20
    p.on_response(q, T0, sender_id=other, samples=[], num=0, interval=60)
    assert p.nodes[c.id].dead
    assert p.nodes[other].first_seen == T0 and p.nodes[other].addr == c.addr
    assert [r.node_id for r in p.take_dirty()] == [other]


def test_restored_nodes_wait_for_their_next_visit() -> None:
    p = _policy(rate=100.0, burst=100.0)
    waiting = NodeRecord(b"\x01" * 20, ("10.1.1.1", 1), T0 - 100, T0 - 50, None, True, T0 + 600, 21600, 3)
    due = NodeRecord(b"\x02" * 20, ("10.1.1.2", 1), T0 - 100, T0 - 50, None, True, T0 - 1, 21600, 3)
    p.restore(waiting, T0)
    p.restore(due, T0)
    p.add_contact(Contact(waiting.node_id, waiting.addr), T0)  # rediscovered: still waits
    assert [q.node_id for q in p.next_queries(T0)] == [due.node_id]
    assert [q.node_id for q in p.next_queries(T0 + 600)] == [waiting.node_id]
    assert p.counters.answered == 2 and p.counters.bep51 == 2


def test_dirty_records_carry_what_the_store_needs() -> None:
    p = _policy(rate=100.0, burst=100.0)
    c = _contact(1)
    p.add_contact(c, T0)
    (q,) = p.next_queries(T0)
    p.on_response(q, T0 + 1, sender_id=c.id, samples=[b"a" * 20], num=1, interval=300, version=b"UT\x00\x01")
    (rec,) = p.take_dirty()
    assert rec == NodeRecord(c.id, c.addr, T0 + 1, T0 + 1, b"UT\x00\x01", True,
                             T0 + 1 + p.limits.revisit_after, 300, 1)
    assert p.take_dirty() == []


def test_ip_budget_memory_is_swept() -> None:
    p = _policy(rate=10_000.0, burst=10_000.0)
    p.add_contacts([_contact(i) for i in range(1000)], T0)
    for q in p.next_queries(T0):
        p.on_response(q, T0, sender_id=q.node_id)
    assert len(p._ips) == 1000
    p.next_queries(T0 + 30)
    assert len(p._ips) == 0


def test_answers_to_unknown_queries_are_ignored() -> None:
    p = _policy()
    stray = CrawlQuery(QueryKind.SAMPLE, b"\x09" * 20, ("10.0.0.9", 1), b"\x00" * 20)
    assert p.on_response(stray, T0, sender_id=stray.node_id) is None
    assert p.on_timeout(stray, T0) is None and p.on_error(stray, T0) is None
    assert p.in_flight == 0


def test_our_own_node_is_never_visited() -> None:
    p = _policy(rate=100.0, burst=100.0)
    me = _contact(99)
    p.exclude.add(me.id)
    assert not p.add_contact(me, T0)
    c = _contact(1)
    p.add_contact(c, T0)
    (q,) = p.next_queries(T0)
    assert p.on_response(q, T0, sender_id=me.id) is None  # our own answer, at another's address
    assert me.id not in p.nodes


def test_an_ipv6_slash_64_shares_one_budget() -> None:
    """libtorrent counts IPv6 senders by /64: so does the policy's per-IP budget."""
    p = _policy(rate=1000.0, burst=1000.0, per_ip_rate=2.0, per_ip_burst=4.0)
    same64 = [Contact(bytes([i]) * 20, (f"fd00:1:2:3::{i + 1:x}", 6881)) for i in range(10)]
    other = Contact(b"\xee" * 20, ("fd00:1:2:4::1", 6881))
    p.add_contacts(same64 + [other], T0)
    sent = p.next_queries(T0)
    assert sum(q.addr[0].startswith("fd00:1:2:3:") for q in sent) == 4  # the burst, for the whole /64
    assert other.id in {q.node_id for q in sent}
