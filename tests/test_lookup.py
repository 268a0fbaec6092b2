"""Tests of mainline_dht.core.lookup: the pure iterative lookup, driven with scripted time.

No trio here. Small hand-written scenarios use IDs whose distance to an all-zero target
is their integer value; the convergence tests run the lookup against a synthetic
2,000-node network whose nodes hold Kademlia-style routing tables, with an event queue
standing in for the network.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mainline_dht.wire.contact import Address, Contact, distance
from mainline_dht.errors import LocalProtocolError
from mainline_dht.core.lookup import (
    DEFAULT_ALPHA,
    DEFAULT_EARLY_FINISH,
    DEFAULT_K,
    DEFAULT_SOFT_TIMEOUT,
    UNKNOWN_ID,
    Lookup,
    LookupStats,
)

ZERO = bytes(20)


def nid(n: int) -> bytes:
    """A node ID at distance ``n`` from the all-zero target."""
    return n.to_bytes(20, "big")


def c(n: int, port: int | None = None, host: str = "10.0.0.1") -> Contact:
    """Contact with ID ``nid(n)`` at its own address (port derived from ``n``)."""
    return Contact(nid(n), (host, port if port is not None else 1000 + n))


def ids(contacts: list[Contact]) -> list[int]:
    return [int.from_bytes(x.id, "big") for x in contacts]


# --- a synthetic network ------------------------------------------------------------


@dataclass
class FakeNode:
    contact: Contact
    latency: float
    alive: bool = True
    known: list[Contact] = field(default_factory=list)
    #: What this node answers from: ``known`` minus the dead nodes it has noticed.
    believed: list[Contact] = field(default_factory=list)
    peers: dict[bytes, list[Address]] = field(default_factory=dict)

    def closest_known(self, target: bytes, n: int = 8) -> list[Contact]:
        """The ``n`` closest contacts of the full table (stale entries included)."""
        return sorted(self.known, key=lambda x: distance(x.id, target))[:n]

    def answer(self, target: bytes, n: int = 8) -> list[Contact]:
        """What this node answers to find_node/get_peers: its closest believed-good nodes."""
        return sorted(self.believed, key=lambda x: distance(x.id, target))[:n]


class FakeNetwork:
    """``n`` nodes with random IDs and Kademlia-style tables.

    Each node knows up to 8 random nodes per bucket, its 16 nearest neighbours and 4
    random nodes. Nodes die after the tables fill: a node's own table (used to seed
    lookups started from it) keeps every dead entry, while its answers name a quarter
    of them (entries it has not yet noticed are dead), so lookups meet dead nodes.
    """

    def __init__(self, n: int, *, seed: int, dead_fraction: float = 0.0) -> None:
        rng = random.Random(seed)
        values = sorted({rng.getrandbits(160) for _ in range(n)})
        self.nodes: list[FakeNode] = []
        self.by_addr: dict[Address, FakeNode] = {}
        for i, v in enumerate(values):
            addr = (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 6881)
            node = FakeNode(Contact(v.to_bytes(20, "big"), addr), latency=rng.uniform(0.02, 0.4))
            self.nodes.append(node)
            self.by_addr[addr] = node
        for node in self.nodes:
            x = int.from_bytes(node.contact.id, "big")
            known: set[int] = set()
            for b in range(160):
                shift = 159 - b
                lo = ((x >> shift) ^ 1) << shift
                i, j = bisect.bisect_left(values, lo), bisect.bisect_left(values, lo + (1 << shift))
                known.update(rng.sample(range(i, j), min(8, j - i)))
                # Stop once no other node shares a (b + 1)-bit prefix with us.
                same_lo = (x >> shift) << shift
                if bisect.bisect_left(values, same_lo + (1 << shift)) - bisect.bisect_left(
                    values, same_lo
                ) == 1:
                    break
            # The 16 nearest neighbours (they lie within a few places in sorted order).
            pos = bisect.bisect_left(values, x)
            window = range(max(0, pos - 40), min(len(values), pos + 41))
            known.update(sorted(window, key=lambda i: values[i] ^ x)[1:17])
            known.update(rng.randrange(len(values)) for _ in range(4))
            node.known = [self.nodes[i].contact for i in sorted(known) if self.nodes[i] is not node]
        for node in rng.sample(self.nodes, int(n * dead_fraction)):
            node.alive = False
        for node in self.nodes:
            # A quarter of the dead entries have not been noticed yet (stale).
            node.believed = [
                x for x in node.known if self.by_addr[x.addr].alive or rng.random() < 0.25
            ]

    def closest(self, target: bytes, n: int = 8, *, exclude: bytes | None = None) -> list[Contact]:
        """The true ``n`` closest live nodes to ``target``."""
        live = [x.contact for x in self.nodes if x.alive and x.contact.id != exclude]
        return sorted(live, key=lambda x: distance(x.id, target))[:n]

    def store(self, info_hash: bytes, peers: list[Address], n: int = 8) -> None:
        """Put ``peers`` on the ``n`` closest nodes to ``info_hash`` (as announces would)."""
        for contact in self.closest(info_hash, n):
            self.by_addr[contact.addr].peers[info_hash] = list(peers)


@dataclass
class Run:
    now: float
    max_active: int
    new_peers: list[Address]
    queried: list[Contact]


def drive(
    lookup: Lookup,
    net: FakeNetwork,
    *,
    now: float = 0.0,
    hard_timeout: float = 5.0,
    latency: dict[Address, float] | None = None,
) -> Run:
    """Run ``lookup`` to completion against ``net``, checking the alpha bound at every step."""
    heap: list[tuple[float, int, bool, Contact]] = []
    seq = itertools.count()
    run = Run(now, 0, [], [])

    def check() -> None:
        assert lookup.active <= lookup.alpha
        assert lookup.active <= lookup.in_flight
        run.max_active = max(run.max_active, lookup.active)

    for _ in range(100_000):
        if lookup.done:
            break
        for contact in lookup.next_queries(now):
            run.queried.append(contact)
            node = net.by_addr.get(contact.addr)
            if node is None or not node.alive:
                heapq.heappush(heap, (now + hard_timeout, next(seq), False, contact))
            else:
                delay = (latency or {}).get(contact.addr, node.latency)
                heapq.heappush(heap, (now + delay, next(seq), True, contact))
        check()
        deadline = lookup.next_deadline()
        assert heap or deadline is not None, "lookup stalled"
        if heap and (deadline is None or heap[0][0] <= deadline):
            now, _, ok, contact = heapq.heappop(heap)
            if ok:
                node = net.by_addr[contact.addr]
                run.new_peers += lookup.on_response(
                    contact,
                    now,
                    nodes=node.answer(lookup.target),
                    values=node.peers.get(lookup.target, []),
                    token=b"tok" + contact.addr[0].encode(),
                    responder_id=node.contact.id,
                )
            else:
                lookup.on_failure(contact, now)
        else:
            assert deadline is not None
            now = deadline
            lookup.handle_timer(now)
        check()
    assert lookup.done, "lookup did not terminate"
    run.now = now
    return run


@pytest.fixture(scope="module")
def net() -> FakeNetwork:
    return FakeNetwork(2000, seed=1)


@pytest.fixture(scope="module")
def dead_net() -> FakeNetwork:
    return FakeNetwork(2000, seed=2, dead_fraction=0.2)


def start(
    net: FakeNetwork, target: bytes, rng: random.Random, **kwargs: object
) -> tuple[Lookup, bytes]:
    """A lookup from a random live node, seeded with the 8 closest nodes it knows.

    Returns the lookup and the starting node's ID.
    """
    me = rng.choice([x for x in net.nodes if x.alive])
    lookup = Lookup(
        target,
        me.closest_known(target),
        now=0.0,
        own_id=me.contact.id,
        **kwargs,  # type: ignore[arg-type]
    )
    return lookup, me.contact.id


# --- convergence on the synthetic network ------------------------------------------


def test_converges_to_true_closest_nodes(net: FakeNetwork) -> None:
    rng = random.Random(10)
    for _ in range(10):
        target = rng.randbytes(20)
        lookup, own = start(net, target, rng)
        run = drive(lookup, net)
        got = [contact for contact, _ in lookup.closest_responders()]
        assert got == net.closest(target, exclude=own)
        assert lookup.stats.finished_at == run.now
        assert lookup.stats.elapsed == run.now
        assert run.max_active == DEFAULT_ALPHA


def test_queries_per_lookup_are_bounded(net: FakeNetwork) -> None:
    rng = random.Random(11)
    counts = []
    for _ in range(20):
        lookup, _ = start(net, rng.randbytes(20), rng)
        drive(lookup, net)
        counts.append(lookup.stats.queries)
    assert max(counts) < 60
    assert sum(counts) / len(counts) < 40


def test_finds_values_stored_at_closest_nodes(net: FakeNetwork) -> None:
    rng = random.Random(12)
    info_hash = rng.randbytes(20)
    peers = [(f"192.0.2.{i}", 6000 + i) for i in range(1, 31)]
    net.store(info_hash, peers)
    try:
        lookup, _ = start(net, info_hash, rng)
        run = drive(lookup, net)
        assert sorted(run.new_peers) == sorted(peers)  # each peer reported exactly once
        assert sorted(lookup.peers) == sorted(peers)
        assert lookup.stats.peers == len(peers)
        first = lookup.stats.time_to_first_peer
        assert first is not None and 0 < first <= run.now
        tokens = [token for _, token in lookup.closest_responders()]
        assert all(t is not None and t.startswith(b"tok") for t in tokens)
    finally:
        for node in net.nodes:
            node.peers.pop(info_hash, None)


def test_converges_with_twenty_percent_dead_nodes(dead_net: FakeNetwork) -> None:
    rng = random.Random(13)
    timeouts = 0
    for _ in range(10):
        target = rng.randbytes(20)
        lookup, own = start(dead_net, target, rng)
        drive(lookup, dead_net)
        got = [contact for contact, _ in lookup.closest_responders()]
        assert got == dead_net.closest(target, exclude=own)
        assert lookup.stats.queries < 80
        assert lookup.stats.queries == (
            lookup.stats.replies + lookup.stats.timeouts + lookup.in_flight
        )
        timeouts += lookup.stats.timeouts + lookup.in_flight  # failed, or left behind
    assert timeouts >= 10  # dead nodes were in the way, and skipped


def test_slow_nodes_do_not_block_progress(net: FakeNetwork) -> None:
    """With every seed slow, soft timeouts let the lookup move on, and still converge.

    Without early_finish: half the nodes answer after 3 s, far past the soft timeout,
    and the lookup waits for those among the k closest.
    """
    rng = random.Random(14)
    target = rng.randbytes(20)
    lookup, own = start(net, target, rng, early_finish=False)
    slow = {x.contact.addr: 3.0 for x in net.nodes[: len(net.nodes) // 2]}
    run = drive(lookup, net, latency=slow)
    assert lookup.stats.soft_timeouts > 0
    assert run.max_active <= DEFAULT_ALPHA
    got = [contact for contact, _ in lookup.closest_responders()]
    assert got == net.closest(target, exclude=own)


# --- scripted scenarios ---------------------------------------------------------------


def test_defaults() -> None:
    assert DEFAULT_K == 8
    assert DEFAULT_SOFT_TIMEOUT == 0.5
    lookup = Lookup(ZERO, [c(1)], now=0.0)
    assert lookup.k == DEFAULT_K and lookup.alpha == DEFAULT_ALPHA
    assert lookup.target == ZERO


def test_no_seeds_is_done_at_once() -> None:
    lookup = Lookup(ZERO, [], now=7.0)
    assert lookup.done
    assert lookup.stats.finished_at == 7.0
    assert lookup.stats.elapsed == 0.0
    assert lookup.next_queries(7.0) == []
    assert lookup.next_deadline() is None
    assert lookup.closest_responders() == []


def test_seeds_added_later_reopen_an_unstarted_lookup() -> None:
    lookup = Lookup(ZERO, [], now=0.0)
    assert lookup.done
    assert not lookup.add_candidate(c(1, port=0))
    assert lookup.done
    assert lookup.add_candidates([c(2), c(1), c(2)]) == 2
    assert not lookup.done
    assert lookup.stats.finished_at is None
    assert ids(lookup.next_queries(0.1)) == [1, 2]
    assert lookup.add_candidate(c(3))  # while running, too
    lookup.on_response(c(1), 0.2)
    lookup.on_response(c(2), 0.2)
    assert ids(lookup.next_queries(0.2)) == [3]
    lookup.on_response(c(3), 0.3)
    assert lookup.done
    # Once a query was sent, done is final.
    assert not lookup.add_candidate(c(4))
    assert lookup.done and lookup.next_queries(0.4) == []


def test_max_queries_zero_is_not_reopened() -> None:
    lookup = Lookup(ZERO, [], now=0.0, max_queries=0)
    assert not lookup.add_candidate(c(1))
    assert lookup.done


def test_only_invalid_seeds_is_done_at_once() -> None:
    lookup = Lookup(ZERO, [c(1, port=0), Contact(b"short", ("10.0.0.1", 1))], now=0.0)
    assert lookup.done


def test_queries_closest_first_and_respects_alpha() -> None:
    lookup = Lookup(ZERO, [c(n) for n in (9, 3, 7, 1, 5)], now=0.0, alpha=2)
    assert ids(lookup.next_queries(0.0)) == [1, 3]
    assert lookup.next_queries(0.1) == []
    assert (lookup.active, lookup.in_flight, lookup.stats.queries) == (2, 2, 2)
    lookup.on_response(c(3), 0.2)
    assert ids(lookup.next_queries(0.2)) == [5]
    assert lookup.active == 2


def test_returned_closer_nodes_are_queried_first() -> None:
    lookup = Lookup(ZERO, [c(100), c(200)], now=0.0, alpha=1, k=2)
    assert ids(lookup.next_queries(0.0)) == [100]
    lookup.on_response(c(100), 0.1, nodes=[c(50), c(10), c(300)])
    assert ids(lookup.next_queries(0.1)) == [10]
    lookup.on_response(c(10), 0.2, nodes=[c(5)])
    assert ids(lookup.next_queries(0.2)) == [5]
    lookup.on_response(c(5), 0.3)
    # The 2 closest (5, 10) answered: done, though 50, 200 and 300 were never asked.
    assert lookup.done
    assert ids([x for x, _ in lookup.closest_responders()]) == [5, 10, 100]
    assert lookup.stats.finished_at == 0.3


def test_soft_timeout_frees_slot_and_late_answer_counts() -> None:
    lookup = Lookup(ZERO, [c(1), c(2)], now=0.0, alpha=1, k=2, soft_timeout=1.0)
    assert ids(lookup.next_queries(0.0)) == [1]
    assert lookup.next_queries(0.5) == []
    assert lookup.next_deadline() == 1.0
    lookup.handle_timer(0.999)
    assert lookup.active == 1
    lookup.handle_timer(1.0)
    assert (lookup.active, lookup.in_flight, lookup.stats.soft_timeouts) == (0, 1, 1)
    assert lookup.next_deadline() is None
    assert ids(lookup.next_queries(1.0)) == [2]
    assert lookup.next_deadline() == 2.0
    lookup.on_response(c(2), 1.2)
    assert not lookup.done  # node 1 is among the k closest and still pending
    new = lookup.on_response(c(1), 2.5, values=[("192.0.2.1", 6881)], token=b"t1")
    assert new == [("192.0.2.1", 6881)]
    assert lookup.stats.replies == 2
    assert lookup.stats.first_peer_at == 2.5
    assert lookup.closest_responders() == [(c(1), b"t1"), (c(2), None)]
    assert lookup.done


def test_next_queries_applies_due_soft_timeouts_itself() -> None:
    lookup = Lookup(ZERO, [c(1), c(2)], now=0.0, alpha=1)
    lookup.next_queries(0.0)
    assert ids(lookup.next_queries(1.5)) == [2]
    assert lookup.stats.soft_timeouts == 1


def test_soft_timed_out_node_does_not_count_towards_window() -> None:
    """With k = 1 and the closest node slow, the next one is asked as a hedge."""
    lookup = Lookup(ZERO, [c(1), c(2), c(3)], now=0.0, alpha=2, k=1, soft_timeout=1.0, early_finish=False)
    assert ids(lookup.next_queries(0.0)) == [1]  # one active node fills the k = 1 window
    assert ids(lookup.next_queries(1.0)) == [2]
    lookup.on_response(c(2), 1.1)
    assert not lookup.done  # 1 is still pending and closer
    assert lookup.next_queries(1.1) == []  # 2 answered: the window is full
    lookup.on_failure(c(1), 4.0)
    assert lookup.done
    assert lookup.closest_responders() == [(c(2), None)]


def test_failures_are_skipped() -> None:
    lookup = Lookup(ZERO, [c(n) for n in range(1, 6)], now=0.0, alpha=3, k=2)
    assert ids(lookup.next_queries(0.0)) == [1, 2]  # two active fill k = 2
    lookup.on_failure(c(1), 0.1)
    lookup.on_failure(c(2), 0.2, error=True)
    assert (lookup.stats.timeouts, lookup.stats.errors) == (1, 1)
    assert ids(lookup.next_queries(0.2)) == [3, 4]
    lookup.on_response(c(3), 0.3)
    lookup.on_response(c(4), 0.3)
    assert lookup.done
    assert ids([x for x, _ in lookup.closest_responders()]) == [3, 4]
    # A second report about the same contact changes nothing.
    lookup.on_failure(c(3), 0.4)
    assert lookup.stats.timeouts == 1


def test_all_failed_is_done() -> None:
    lookup = Lookup(ZERO, [c(1), c(2)], now=0.0)
    lookup.next_queries(0.0)
    lookup.on_failure(c(1), 5.0)
    assert not lookup.done
    lookup.on_failure(c(2), 5.0)
    assert lookup.done
    assert lookup.closest_responders() == []


def test_duplicate_peers_reported_once() -> None:
    lookup = Lookup(ZERO, [c(1), c(2)], now=0.0)
    lookup.next_queries(0.0)
    p1, p2, p3 = ("192.0.2.1", 1), ("192.0.2.2", 2), ("192.0.2.3", 3)
    assert lookup.on_response(c(1), 0.1, values=[p1, p2, p1]) == [p1, p2]
    assert lookup.on_response(c(2), 0.2, values=[p2, p3, p1]) == [p3]
    assert lookup.peers == [p1, p2, p3]
    assert lookup.stats.peers == 3
    assert lookup.stats.first_peer_at == 0.1
    assert lookup.stats.time_to_first_peer == pytest.approx(0.1)


def test_bad_peers_are_ignored() -> None:
    lookup = Lookup(ZERO, [c(1)], now=0.0)
    lookup.next_queries(0.0)
    good = ("192.0.2.1", 1)
    bad = [("192.0.2.2", 0), ("192.0.2.3", 65536), ("", 5), ("192.0.2.4",), "x"]
    assert lookup.on_response(c(1), 0.1, values=[*bad, good]) == [good]  # type: ignore[list-item]
    assert lookup.stats.first_peer_at == 0.1


def test_own_id_bad_ports_bad_ids_and_duplicates_ignored() -> None:
    own = nid(2)
    seeds = [
        c(1),
        Contact(own, ("10.0.0.2", 5)),  # our own ID
        c(3, port=0),  # bad ports
        c(4, port=65536),
        Contact(b"\x00" * 19, ("10.0.0.3", 6)),  # not 20 bytes
        Contact(nid(1), ("10.0.0.4", 7)),  # duplicate ID at another address
        c(6),
    ]
    lookup = Lookup(ZERO, seeds, now=0.0, own_id=own)
    assert lookup.candidate_count == 2
    assert ids(lookup.next_queries(0.0)) == [1, 6]


def test_same_address_sybils_ignored() -> None:
    lookup = Lookup(ZERO, [c(100, port=1)], now=0.0, alpha=1)
    lookup.next_queries(0.0)
    sybils = [Contact(nid(n), ("10.0.0.9", 9)) for n in range(50, 60)]
    # Also a node claiming the address we already asked.
    lookup.on_response(c(100, port=1), 0.1, nodes=[Contact(nid(1), ("10.0.0.1", 1)), *sybils])
    assert lookup.candidate_count == 2  # 100 and the first ID seen for 10.0.0.9:9
    assert ids(lookup.next_queries(0.1)) == [50]


def test_malformed_node_entries_ignored() -> None:
    lookup = Lookup(ZERO, [c(100)], now=0.0)
    lookup.next_queries(0.0)
    junk: list[object] = [
        None,
        b"ab",
        (nid(1),),
        (nid(2), ("10.0.0.1", "80")),
        (nid(3), ["10.0.0.1", 80]),
        (nid(4), ("10.0.0.1", True)),
        ("x" * 20, ("10.0.0.1", 81)),
        Contact(nid(5), ("10.0.0.7", 82)),
    ]
    lookup.on_response(c(100), 0.1, nodes=junk)  # type: ignore[arg-type]
    assert ids(lookup.next_queries(0.1)) == [5]


def test_hostile_response_keeps_candidates_bounded() -> None:
    rng = random.Random(5)
    lookup = Lookup(ZERO, [c(1 << 150, port=1)], now=0.0, k=8, alpha=5)
    lookup.next_queries(0.0)
    flood = [
        Contact(rng.randbytes(20), (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 1 + i % 60000))
        for i in range(10_000)
    ]
    lookup.on_response(c(1 << 150, port=1), 0.1, nodes=flood)
    assert lookup.candidate_count <= 64 + 1
    # What is kept is the closest of the flood.
    best = sorted(flood, key=lambda x: distance(x.id, ZERO))[:5]
    assert lookup.next_queries(0.1) == best
    # A second flood cannot grow it either.
    more = [
        Contact(rng.randbytes(20), (f"10.200.{i >> 8}.{i & 255}", 7)) for i in range(10_000)
    ]
    lookup.on_response(best[0], 0.2, nodes=more)
    assert lookup.candidate_count <= 64 + 1 + 5


def test_max_candidates_drops_farthest_unqueried() -> None:
    lookup = Lookup(ZERO, [c(n) for n in range(10, 20)], now=0.0, k=4, alpha=4, max_candidates=4)
    assert lookup.candidate_count == 4
    assert ids(lookup.next_queries(0.0)) == [10, 11, 12, 13]
    lookup.on_response(c(10), 0.1, nodes=[c(n) for n in (30, 1, 40, 2, 3, 4, 5)])
    # Unqueried kept: the closest 4 of those offered; the queried 4 stay as well.
    assert lookup.candidate_count == 8
    assert ids(lookup.next_queries(0.1)) == [1]
    for n in (11, 12, 13):
        lookup.on_response(c(n), 0.2)
    assert ids(lookup.next_queries(0.2)) == [2, 3, 4]


def test_max_queries_stops_lookup() -> None:
    lookup = Lookup(ZERO, [c(n) for n in range(1, 20)], now=0.0, alpha=3, max_queries=4)
    assert len(lookup.next_queries(0.0)) == 3
    lookup.on_response(c(1), 0.1)
    assert ids(lookup.next_queries(0.1)) == [4]
    lookup.on_response(c(2), 0.2)
    assert lookup.next_queries(0.2) == []
    lookup.on_response(c(3), 0.3)
    assert not lookup.done  # 4 still in flight
    lookup.on_failure(c(4), 0.4)
    assert lookup.done
    assert lookup.stats.queries == 4


def test_max_queries_zero_is_done_at_once() -> None:
    lookup = Lookup(ZERO, [c(1)], now=0.0, max_queries=0)
    assert lookup.done
    assert lookup.next_queries(0.0) == []


def test_max_queries_on_network(net: FakeNetwork) -> None:
    lookup, _ = start(net, random.Random(15).randbytes(20), random.Random(16), max_queries=7)
    drive(lookup, net)
    assert lookup.done
    assert lookup.stats.queries == 7


def test_responder_with_other_id_is_rekeyed() -> None:
    lookup = Lookup(ZERO, [c(1), c(50)], now=0.0, alpha=2, k=2)
    lookup.next_queries(0.0)
    p = ("192.0.2.1", 1)
    # The host we thought was 1 answers as 40: its nodes and values still count.
    assert lookup.on_response(
        c(1), 0.1, nodes=[c(30)], values=[p], token=b"t", responder_id=nid(40)
    ) == [p]
    assert lookup.stats.replies == 1
    assert ids(lookup.next_queries(0.1)) == [30]
    # Someone else telling us about ID 1 at that host, or a new ID there, is ignored.
    lookup.on_response(c(50), 0.2, nodes=[c(1), Contact(nid(2), c(1).addr)])
    assert lookup.next_queries(0.2) == []
    lookup.on_response(c(30), 0.3)
    assert lookup.done
    assert lookup.closest_responders() == [
        (c(30), None),
        (Contact(nid(40), c(1).addr), b"t"),
        (c(50), None),
    ]


def test_responder_claiming_known_or_own_id_is_dropped() -> None:
    lookup = Lookup(ZERO, [c(1), c(2), c(3), c(9)], now=0.0, own_id=nid(99), alpha=3, k=3)
    assert ids(lookup.next_queries(0.0)) == [1, 2, 3]
    lookup.on_response(c(1), 0.1, responder_id=nid(2))  # 2 is someone else's
    lookup.on_response(c(3), 0.1, responder_id=nid(99), token=b"x")  # that is us
    # Those hosts are never candidates again, under any ID.
    lookup.on_response(c(2), 0.2, nodes=[Contact(nid(4), c(1).addr), Contact(nid(5), c(3).addr)])
    assert lookup.closest_responders() == [(c(2), None)]
    assert lookup.stats.replies == 3
    assert ids(lookup.next_queries(0.2)) == [9]


def test_unsolicited_answers_are_ignored() -> None:
    lookup = Lookup(ZERO, [c(1), c(2)], now=0.0, alpha=1)
    lookup.next_queries(0.0)
    assert lookup.on_response(c(2), 0.1, values=[("192.0.2.1", 1)]) == []  # never asked
    assert lookup.on_response(c(1, port=9), 0.1) == []  # right ID, wrong address
    assert lookup.on_response(Contact(b"bad", ("10.0.0.1", 1)), 0.1) == []
    assert lookup.stats.replies == 0
    lookup.on_response(c(1), 0.2)
    assert lookup.on_response(c(1), 0.3, nodes=[c(0)]) == []  # answered twice
    assert lookup.stats.replies == 1


def test_late_answer_after_done_still_yields_peers() -> None:
    lookup = Lookup(ZERO, [c(n) for n in range(1, 4)], now=0.0, alpha=3, k=1)
    # k = 1: the window fills on the first active query; a soft timeout widens it.
    assert ids(lookup.next_queries(0.0)) == [1]
    assert ids(lookup.next_queries(1.0)) == [2]
    lookup.on_response(c(1), 1.1)
    assert lookup.done
    assert lookup.next_queries(1.1) == []
    assert lookup.next_deadline() is None
    p = ("192.0.2.9", 9)
    count = lookup.candidate_count
    assert lookup.on_response(c(2), 1.5, values=[p], nodes=[c(0)]) == [p]
    assert lookup.candidate_count == count  # nodes are no longer merged
    assert lookup.closest_responders() == [(c(1), None), (c(2), None)]
    assert lookup.stats.finished_at == 1.1


def test_routers_are_asked_first_and_never_returned() -> None:
    router = ("203.0.113.1", 6881)
    lookup = Lookup(ZERO, [c(100)], now=0.0, alpha=2, k=2, routers=[router, router])
    first = lookup.next_queries(0.0)
    assert first == [Contact(UNKNOWN_ID, router), c(100)]
    # A router's reply merges nodes; a node claiming the router's address is ignored.
    lookup.on_response(
        first[0], 0.1, nodes=[c(1), Contact(nid(2), router)], responder_id=nid(7), token=b"r"
    )
    assert ids(lookup.next_queries(0.1)) == [1]
    lookup.on_response(c(1), 0.2)
    lookup.on_response(c(100), 0.2)
    assert lookup.done
    assert lookup.closest_responders() == [(c(1), None), (c(100), None)]
    assert lookup.stats.replies == 3


def test_routers_only_bootstrap() -> None:
    router = ("203.0.113.1", 6881)
    lookup = Lookup(ZERO, [], now=0.0, routers=[router])
    assert not lookup.done
    [r] = lookup.next_queries(0.0)
    lookup.on_response(r, 0.1, nodes=[c(1), c(2)])
    assert ids(lookup.next_queries(0.1)) == [1, 2]


def test_max_queries_counts_routers() -> None:
    routers = [("203.0.113.1", 6881), ("203.0.113.2", 6881)]
    lookup = Lookup(ZERO, [c(1)], now=0.0, routers=routers, max_queries=1)
    [query] = lookup.next_queries(0.0)
    assert query == Contact(UNKNOWN_ID, routers[0])
    lookup.on_response(query, 0.1, nodes=[c(2)])
    assert lookup.done


def test_failed_routers_only_is_done() -> None:
    lookup = Lookup(ZERO, [], now=0.0, routers=[("203.0.113.1", 6881), ("bad", 0)])
    queries = lookup.next_queries(0.0)
    assert len(queries) == 1
    lookup.on_failure(queries[0], 15.0)
    assert lookup.done
    assert lookup.stats.timeouts == 1


def test_next_deadline_tracks_oldest_active_query() -> None:
    lookup = Lookup(ZERO, [c(n) for n in range(1, 5)], now=0.0, alpha=2, soft_timeout=1.0)
    assert lookup.next_deadline() is None
    lookup.next_queries(0.0)
    lookup.on_response(c(1), 0.3)
    lookup.next_queries(0.3)  # asks 3; 2 still active since 0.0
    assert lookup.next_deadline() == 1.0
    lookup.on_response(c(2), 0.5)
    assert lookup.next_deadline() == 1.3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": b"short"},
        {"own_id": b"x"},
        {"k": 0},
        {"alpha": 0},
        {"soft_timeout": 0.0},
        {"max_queries": -1},
        {"max_candidates": 3},
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object]) -> None:
    target = kwargs.pop("target", ZERO)
    with pytest.raises(LocalProtocolError):
        Lookup(target, [c(1)], now=0.0, **kwargs)  # type: ignore[arg-type]


def test_stats_properties_unknown_until_known() -> None:
    running = LookupStats(started_at=5.0)
    assert running.elapsed is None
    assert running.time_to_first_peer is None
    finished = LookupStats(started_at=5.0, first_peer_at=6.0, finished_at=7.5)
    assert (finished.elapsed, finished.time_to_first_peer) == (2.5, 1.0)


# --- random interleavings -------------------------------------------------------------

SMALL_NET = FakeNetwork(60, seed=3, dead_fraction=0.2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), k=st.integers(1, 8), alpha=st.integers(1, 5))
def test_random_interleavings_terminate_within_alpha(data: st.DataObject, k: int, alpha: int) -> None:
    target = data.draw(st.binary(min_size=20, max_size=20), label="target")
    seeds = data.draw(st.lists(st.sampled_from([x.contact for x in SMALL_NET.nodes]), max_size=8))
    routers = data.draw(st.lists(st.sampled_from([("203.0.113.1", 1), ("203.0.113.2", 2)])))
    max_queries = data.draw(st.none() | st.integers(0, 40), label="max_queries")
    now = 0.0
    lookup = Lookup(
        target, seeds, now=now, k=k, alpha=alpha, max_queries=max_queries, routers=routers
    )
    pending: list[Contact] = []
    asked: set[Address] = set()
    limit = len(SMALL_NET.nodes) + len(routers)
    for _ in range(10 * limit):
        if lookup.done:
            break
        if not pending or data.draw(st.booleans(), label="ask"):
            new = lookup.next_queries(now)
            assert not ({x.addr for x in new} & asked), "an address was asked twice"
            asked |= {x.addr for x in new}
            pending += new
            assert pending, "not done, nothing in flight, yet nothing to ask"
        assert lookup.active <= alpha
        now += data.draw(st.sampled_from([0.0, 0.1, 0.6, 1.0, 2.5]), label="dt")
        lookup.handle_timer(now)
        assert lookup.active <= alpha
        contact = pending.pop(data.draw(st.integers(0, len(pending) - 1), label="which"))
        node = SMALL_NET.by_addr.get(contact.addr)
        outcome = data.draw(st.sampled_from(["reply", "fail", "error"]), label="outcome")
        if node is None or not node.alive or outcome != "reply":
            lookup.on_failure(contact, now, error=outcome == "error")
        else:
            lookup.on_response(
                contact,
                now,
                nodes=node.answer(target),
                values=[("192.0.2.1", 1)] if data.draw(st.booleans(), label="values") else [],
                responder_id=node.contact.id,
            )
        assert lookup.active <= alpha
        assert lookup.in_flight == len(pending)
    assert lookup.done
    assert lookup.stats.finished_at is not None
    assert lookup.stats.queries <= limit
    if max_queries is not None:
        assert lookup.stats.queries <= max_queries
    assert lookup.next_queries(now) == []


# --- early_finish: leave stragglers past the soft timeout behind ----------------------


def test_early_finish_leaves_straggler_past_soft_timeout() -> None:
    lookup = Lookup(
        ZERO, [c(n) for n in (1, 2, 3, 4)], now=0.0, alpha=4, k=2, soft_timeout=1.0, early_finish=True
    )
    assert lookup.early_finish
    assert ids(lookup.next_queries(0.0)) == [1, 2]  # two active fill the k = 2 window
    lookup.on_response(c(2), 0.1)
    assert lookup.next_queries(0.1) == []
    # 1 is closer and still active (younger than the soft timeout): wait for it.
    assert not lookup.done
    assert lookup.next_deadline() == 1.0
    lookup.handle_timer(1.0)
    assert not lookup.done  # only one of the k = 2 has answered
    assert ids(lookup.next_queries(1.0)) == [3]  # the hedge
    lookup.on_response(c(3), 1.1)
    # 1 straggles, and the k closest that answered (2, 3) are known.
    assert lookup.done
    assert lookup.stats.finished_at == 1.1
    assert lookup.in_flight == 1
    assert lookup.next_queries(1.1) == []
    assert ids([x for x, _ in lookup.closest_responders()]) == [2, 3]
    # Its late answer still yields peers, as after any finish.
    p = ("192.0.2.7", 7)
    assert lookup.on_response(c(1), 2.0, values=[p]) == [p]
    assert lookup.stats.finished_at == 1.1


def test_without_early_finish_straggler_holds_lookup_until_hard_timeout() -> None:
    lookup = Lookup(
        ZERO, [c(n) for n in (1, 2, 3, 4)], now=0.0, alpha=4, k=2, soft_timeout=1.0, early_finish=False
    )
    assert not lookup.early_finish
    lookup.next_queries(0.0)
    lookup.on_response(c(2), 0.1)
    assert ids(lookup.next_queries(1.0)) == [3]
    lookup.on_response(c(3), 1.1)
    assert lookup.next_queries(1.1) == []
    assert not lookup.done
    lookup.on_failure(c(1), 3.0)
    assert lookup.done
    assert lookup.stats.finished_at == 3.0


def test_early_finish_rechecks_when_a_soft_timeout_passes() -> None:
    """A closer candidate turning straggler, with no answer arriving, ends the lookup."""
    lookup = Lookup(
        ZERO, [c(10), c(20), c(30)], now=0.0, alpha=3, k=2, soft_timeout=1.0, early_finish=True
    )
    assert ids(lookup.next_queries(0.0)) == [10, 20]
    lookup.on_response(c(20), 0.5, nodes=[c(5)])
    assert ids(lookup.next_queries(0.5)) == [5]
    assert lookup.next_queries(1.0) == []  # 10 straggles; 5 (active) and 20 fill the window
    lookup.on_response(c(10), 1.2)  # 10 answers late
    assert not lookup.done  # 5 is closer and active
    assert lookup.next_deadline() == 1.5
    lookup.handle_timer(1.5)
    assert lookup.done
    assert lookup.stats.finished_at == 1.5
    assert ids([x for x, _ in lookup.closest_responders()]) == [10, 20]


def test_early_finish_waits_for_closer_unqueried_and_active_candidates() -> None:
    lookup = Lookup(ZERO, [c(10), c(20)], now=0.0, alpha=1, k=1, soft_timeout=1.0, early_finish=True)
    assert ids(lookup.next_queries(0.0)) == [10]
    lookup.handle_timer(1.0)  # 10 straggles; nobody has answered yet
    assert not lookup.done
    assert ids(lookup.next_queries(1.0)) == [20]
    lookup.on_response(c(20), 1.1, nodes=[c(5)])
    assert not lookup.done  # 5 is closer and unqueried
    assert ids(lookup.next_queries(1.1)) == [5]
    lookup.handle_timer(1.5)
    assert not lookup.done  # 5 is closer and active
    lookup.handle_timer(2.1)
    assert lookup.done  # 10 and 5 both straggle behind 20
    assert lookup.closest_responders() == [(c(20), None)]


def test_early_finish_needs_k_answers() -> None:
    lookup = Lookup(ZERO, [c(1), c(2), c(3)], now=0.0, alpha=3, k=3, soft_timeout=1.0, early_finish=True)
    lookup.next_queries(0.0)
    lookup.on_response(c(3), 0.1)
    lookup.handle_timer(1.0)
    assert not lookup.done  # one answer of the three needed; the stragglers may yet answer
    lookup.on_failure(c(1), 3.0)
    lookup.on_failure(c(2), 3.0)
    assert lookup.done


def test_early_finish_same_result_sooner_on_dead_network(dead_net: FakeNetwork) -> None:
    """Dead nodes never answer, so leaving them behind changes the result of no lookup."""
    saved = 0.0
    for i in range(10):
        target = random.Random(f"early:{i}").randbytes(20)
        runs = []
        for early in (False, True):
            lookup, own = start(dead_net, target, random.Random(f"early:{i}"), early_finish=early)
            run = drive(lookup, dead_net, hard_timeout=5.0)
            assert [x for x, _ in lookup.closest_responders()] == dead_net.closest(target, exclude=own)
            runs.append(run.now)
        assert runs[1] <= runs[0]
        saved += runs[0] - runs[1]
    assert saved > 10.0  # several lookups waited seconds for a dead node without it


def test_early_finish_is_the_default() -> None:
    assert DEFAULT_EARLY_FINISH is True
    assert Lookup(ZERO, [c(1)], now=0.0).early_finish


def test_early_finish_with_slow_nodes_trades_closeness_for_time(net: FakeNetwork) -> None:
    """Nodes answering after 3 s are left behind: k answers, sooner, nearly as close."""
    rng = random.Random(14)
    target = rng.randbytes(20)
    slow = {x.contact.addr: 3.0 for x in net.nodes[: len(net.nodes) // 2]}
    patient, own = start(net, target, random.Random(15), early_finish=False)
    eager, _ = start(net, target, random.Random(15), early_finish=True)
    patient_run = drive(patient, net, latency=slow)
    eager_run = drive(eager, net, latency=slow)
    true_closest = net.closest(target, exclude=own)
    got = [x for x, _ in eager.closest_responders()]
    assert len(got) == DEFAULT_K
    assert eager_run.now < patient_run.now
    assert [x for x, _ in patient.closest_responders()] == true_closest
    # The fast half of the true closest nodes is still found.
    fast_closest = [x for x in true_closest if x.addr not in slow]
    assert set(fast_closest) <= set(got)


# --- per-contact soft timeouts and known-fast candidates first -------------------------


def test_each_query_gets_its_own_soft_timeout() -> None:
    timeouts = {1: 0.2, 2: 0.9}
    lookup = Lookup(
        ZERO,
        [c(1), c(2), c(3)],
        now=0.0,
        alpha=2,
        k=3,
        soft_timeout=0.5,
        soft_timeout_for=lambda contact: timeouts.get(ids([contact])[0], math.nan),
    )
    assert ids(lookup.next_queries(0.0)) == [1, 2]
    assert lookup.next_deadline() == pytest.approx(0.2)
    # At 0.2 the query to 1 stops holding its slot; 3 (not a number: the fixed 0.5 s) is asked.
    assert ids(lookup.next_queries(0.2)) == [3]
    assert lookup.next_deadline() == pytest.approx(0.7)
    assert lookup.stats.soft_timeouts == 1


def test_known_fast_candidates_are_asked_first_within_a_distance_tier() -> None:
    # Distances 8-15 share one bit length; 16 is a farther tier.
    rtts = {13: 0.05, 11: 0.2, 16: 0.01}
    seeds = [c(n) for n in (8, 9, 10, 11, 12, 13, 16)]
    lookup = Lookup(ZERO, seeds, now=0.0, alpha=3, k=8, expected_rtt=lambda x: rtts.get(ids([x])[0], math.inf))
    # 13 (fastest) and 11 jump ahead of the unknown 8; 16 never jumps its tier.
    assert ids(lookup.next_queries(0.0)) == [13, 11, 8]
    for n in (13, 11, 8):
        lookup.on_response(c(n), 0.05)
    assert ids(lookup.next_queries(0.05)) == [9, 10, 12]


def test_without_rtt_hints_the_order_is_distance_only() -> None:
    seeds = [c(n) for n in (8, 9, 10, 11, 12, 13)]
    lookup = Lookup(ZERO, seeds, now=0.0, alpha=3, k=8)
    assert ids(lookup.next_queries(0.0)) == [8, 9, 10]


def test_candidates_asked_ahead_still_count_once_towards_the_window() -> None:
    rtts = {12: 0.01, 13: 0.02}
    seeds = [c(n) for n in (8, 9, 10, 11, 12, 13)]
    lookup = Lookup(ZERO, seeds, now=0.0, alpha=6, k=3, expected_rtt=lambda x: rtts.get(ids([x])[0], math.inf))
    # The window holds k = 3 candidates: the two fast ones and the closest unknown.
    assert ids(lookup.next_queries(0.0)) == [12, 13, 8]
    assert lookup.in_flight == 3


def test_reserve_routers_wait_while_the_seeds_answer() -> None:
    router = ("10.9.9.9", 6881)
    lookup = Lookup(ZERO, [c(n) for n in range(1, 9)], now=0.0, alpha=8, k=2, reserve_routers=[router])
    assert ids(lookup.next_queries(0.0)) == [1, 2]  # the window: k = 2
    lookup.on_response(c(1), 0.1)
    lookup.on_response(c(2), 0.1)
    assert lookup.done and not lookup.reserve_used
    assert lookup.stats.queries == 2


def test_reserve_routers_are_asked_when_too_few_seeds_answer() -> None:
    router = ("10.9.9.9", 6881)
    lookup = Lookup(ZERO, [c(1), c(2)], now=0.0, alpha=8, k=2, soft_timeout=0.5, reserve_routers=[router])
    assert ids(lookup.next_queries(0.0)) == [1, 2]
    lookup.on_response(c(1), 0.1)
    # 2 is silent: once it passes the soft timeout nothing is active, one answer is too few.
    assert lookup.next_queries(0.3) == []
    assert lookup.next_queries(0.5) == [Contact(UNKNOWN_ID, router)]
    assert lookup.reserve_used
    lookup.on_response(Contact(UNKNOWN_ID, router), 0.6, nodes=[c(3)])
    assert ids(lookup.next_queries(0.6)) == [3]


def test_reserve_routers_keep_a_lookup_whose_seeds_all_failed_open() -> None:
    router = ("10.9.9.9", 6881)
    lookup = Lookup(ZERO, [c(1)], now=0.0, k=2, reserve_routers=[router])
    lookup.next_queries(0.0)
    lookup.on_failure(c(1), 3.0)
    assert not lookup.done
    assert lookup.next_queries(3.0) == [Contact(UNKNOWN_ID, router)]
    # Without seeds at all, the reserve is asked at once, as routers are.
    empty = Lookup(ZERO, [], now=0.0, reserve_routers=[router])
    assert not empty.done and empty.next_queries(0.0) == [Contact(UNKNOWN_ID, router)]


# --- stragglers (what an announce asks again) --------------------------------------


def test_stragglers_are_the_unanswered_among_the_k_closest() -> None:
    lookup = Lookup(ZERO, [c(n) for n in (1, 2, 3, 4, 5)], now=0.0, alpha=5, k=2, soft_timeout=1.0, early_finish=True)
    assert ids(lookup.next_queries(0.0)) == [1, 2]
    lookup.on_response(c(2), 0.1, token=b"t")
    assert ids(lookup.next_queries(1.5)) == [3]  # 1 is past the soft timeout
    assert ids(lookup.next_queries(2.6)) == [4]  # and so is 3
    lookup.on_response(c(4), 2.7, token=b"t")
    assert lookup.done  # early finish: 1 and 3 are left behind
    assert ids([x for x, _ in lookup.closest_responders(2)]) == [2, 4]
    # 1 and 3 rank before the second responder; 5 is beyond the k closest.
    assert ids(lookup.stragglers(2)) == [1, 3]
    # A late answer (an announce's second ask) makes a straggler a responder.
    lookup.on_response(c(1), 2.0, token=b"late")
    assert lookup.closest_responders(2) == [(c(1), b"late"), (c(2), b"t")]
    assert ids(lookup.stragglers(2)) == []
    lookup.on_failure(c(3), 3.0)
    assert ids(lookup.stragglers(3)) == []
