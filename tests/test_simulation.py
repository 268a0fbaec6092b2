"""Whole-network tests of mainline_dht.testing._sim: thousands of real nodes on the memory network.

Everything runs under trio's MockClock (the ``autojump_clock`` fixture), so seconds of
simulated timeouts cost no wall time. A simulation seeds trio's scheduler too, so a
scenario's figures are the same on every run (the determinism tests); the network-level
tests still assert outcomes (peers found, query counts within bounds, announces
acknowledged) rather than exact sequences, so that they survive changes to the rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import statistics
from contextlib import AsyncExitStack

import trio
import trio.testing

from mainline_dht.wire.contact import Address
from mainline_dht.runtime.node import DEFAULT_MAX_LOOKUP_QUERIES, DHTNode, open_node
from mainline_dht.core.node_id import random_node_id
from mainline_dht.testing._memory_net import LinkModel, Packet
from mainline_dht.testing._sim import Scenario, ScenarioResult, SimNetwork, open_sim_network, run_scenario

from helpers import max_in_window


async def test_two_thousand_nodes_with_dead_nodes_and_loss(autojump_clock: trio.testing.MockClock) -> None:
    scenario = Scenario(nodes=2000, dead_fraction=0.2, loss=0.05, infohashes=20, lookups=200, seed=1)
    result = await run_scenario(scenario)
    summary = result.summary()
    assert len(result.outcomes) == 200
    assert result.success_rate >= 0.99
    queries = [o.queries for o in result.outcomes]
    assert statistics.median(queries) <= 50
    assert max(queries) <= DEFAULT_MAX_LOOKUP_QUERIES
    # Lookups converge on k = 8 answering nodes (a few run out of candidates first).
    assert statistics.median(o.replies for o in result.outcomes) >= 8
    assert min(o.replies for o in result.outcomes) >= 1
    # The dead nodes were in the way: they held slots until the soft timeout.
    assert sum(o.soft_timeouts for o in result.outcomes) >= len(result.outcomes)
    # Every announce reached several of the closest nodes (20% are dead, 5% of packets lost).
    assert len(result.announce_acks) == 20
    assert min(result.announce_acks) >= 3
    # A peer in a few round trips, the whole lookup within a few seconds (virtual time).
    assert summary["first_peer_median_rtts"] <= 4
    assert summary["done_p95"] <= 10.0
    assert all(o.first_peer is None or 0 < o.first_peer <= o.elapsed for o in result.outcomes)


def _snapshot(sim: SimNetwork) -> tuple[object, ...]:
    """What must not depend on task scheduling: IDs, dead set, every prefilled table."""
    tables = [sorted((e.id, e.addr) for e in node.table) for node in sim.nodes]
    return (
        [(c.id, c.addr) for c in sim.contacts],
        sorted(c.addr for c in sim.dead),
        [node.node_id for node in sim.nodes],
        tables,
    )


async def test_network_build_is_deterministic(autojump_clock: trio.testing.MockClock) -> None:
    snapshots = []
    for seed in (7, 7, 8):
        async with open_sim_network(300, seed=seed, dead_fraction=0.2) as sim:
            assert len(sim.nodes) == 240 and len(sim.dead) == 60
            assert all(len(node.table) >= 8 for node in sim.nodes)
            snapshots.append(_snapshot(sim))
    assert snapshots[0] == snapshots[1]
    assert snapshots[0] != snapshots[2]


def test_a_scenario_gives_the_same_figures_on_every_run() -> None:
    # Its own trio runs: inside one run the second scenario would start at another virtual time.
    scenario = Scenario(
        nodes=400, dead_fraction=0.2, loss=0.05, sybil_fraction=0.1, poisoner_fraction=0.1,
        infohashes=5, lookups=30, seed=4,
    )

    def run(s: Scenario) -> ScenarioResult:
        return trio.run(run_scenario, s, clock=trio.testing.MockClock(autojump_threshold=0))

    first, second = run(scenario), run(scenario)
    assert first.outcomes == second.outcomes and first.packets == second.packets
    assert (first.sybil_queries, first.poisoner_queries) == (second.sybil_queries, second.poisoner_queries)
    # Not a constant: another seed gives other figures.
    assert run(dataclasses.replace(scenario, seed=5)).outcomes != first.outcomes


async def test_prefill_offers_only_members_and_respects_k(autojump_clock: trio.testing.MockClock) -> None:
    async with open_sim_network(200, seed=3, join="prefill") as sim:
        members = {(c.id, c.addr) for c in sim.contacts}
        for node in sim.nodes:
            for entry in node.table:
                assert (entry.id, entry.addr) in members
                assert entry.id != node.node_id
            assert all(len(b.entries) <= node.table.k for b in node.table.buckets)


async def _lookup_finds(node: DHTNode, info_hash: bytes, expected: set[Address]) -> bool:
    found = False
    async with node.get_peers(info_hash) as stream:
        async for peer in stream:
            if peer in expected:
                found = True
    return found


async def test_lookups_succeed_through_churn(autojump_clock: trio.testing.MockClock) -> None:
    """Nodes die and new ones join over a few virtual minutes; lookups keep finding peers.

    Each wave (20 virtual seconds apart) kills 10% of the live nodes (``net.set_dead``),
    starts 20 new nodes on fresh transports that bootstrap through three random live nodes,
    has the announcers re-announce (as clients do every 15-30 minutes), then runs lookups
    from random live nodes, new ones included.
    """
    rng = random.Random("churn")
    link = LinkModel(median_rtt=0.1, loss=0.05)
    async with open_sim_network(600, seed=11, link=link, dead_fraction=0.1) as sim, AsyncExitStack() as stack:
        net = sim.net
        live: list[DHTNode] = list(sim.nodes)
        hashes = [hashlib.sha1(f"churn:{i}".encode()).digest() for i in range(8)]
        announcers = {h: rng.sample(live, 2) for h in hashes}
        joined_total = 0
        results: list[bool] = []
        new_node_results: list[bool] = []
        for wave in range(5):
            # Leave: 10% of the live nodes die (not the announcers, whose peers must exist).
            protected = {id(n) for group in announcers.values() for n in group}
            victims = rng.sample([n for n in live if id(n) not in protected], len(live) // 10)
            for node in victims:
                net.set_dead(node.local_address, True)
            live = [n for n in live if n not in victims]
            # Join: new nodes bootstrap through live nodes (one alone may lose the packet).
            newcomers: list[DHTNode] = []
            for j in range(20):
                addr = (f"10.200.{wave}.{j + 1}", 6881)
                node = await stack.enter_async_context(
                    open_node(
                        transport=net.open_transport(addr),
                        node_id=random_node_id(random.Random(f"churn:{wave}:{j}")),
                        bootstrap=tuple(n.local_address for n in rng.sample(live, 3)),
                        rng=random.Random(f"churn:{wave}:{j}:rng"),
                        join=True,  # in the background; retried if every router's answer is lost
                    )
                )
                newcomers.append(node)
            with trio.fail_after(120):  # virtual seconds
                for node in newcomers:
                    await node.joined.wait()
            assert all(len(node.table) >= 8 for node in newcomers)
            joined_total += len(newcomers)
            live += newcomers
            # Re-announce, then look up from random live nodes (a third of them newcomers).
            acks: list[int] = []

            async def announce(node: DHTNode, info_hash: bytes) -> None:
                acks.append(await node.announce(info_hash, 6000 + hashes.index(info_hash)))

            async with trio.open_nursery() as nursery:
                for h, group in announcers.items():
                    for node in group:
                        nursery.start_soon(announce, node, h)
            assert min(acks) >= 1
            expected = {
                h: {(n.local_address[0], 6000 + hashes.index(h)) for n in group} for h, group in announcers.items()
            }

            async def lookup(node: DHTNode, info_hash: bytes, is_new: bool) -> None:
                ok = await _lookup_finds(node, info_hash, expected[info_hash])
                results.append(ok)
                if is_new:
                    new_node_results.append(ok)

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(lookup, rng.choice(live), rng.choice(hashes), False)
                for _ in range(10):
                    nursery.start_soon(lookup, rng.choice(newcomers), rng.choice(hashes), True)
            await trio.sleep(20.0)
        assert joined_total == 100
        assert len(results) == 150 and len(new_node_results) == 50
        assert sum(results) / len(results) >= 0.97
        assert sum(new_node_results) / len(new_node_results) >= 0.95
        # The dead really were dead: no packet from or to them was delivered since.
        assert net.stats.to_dead > 0


def test_scenario_defaults_match_the_issue() -> None:
    s = Scenario()
    assert (s.dead_fraction, s.loss, s.median_rtt) == (0.2, 0.05, 0.1)
    assert s.alpha is None and s.soft_timeout is None and s.query_timeout is None and s.early_finish is None



async def test_a_node_stays_under_the_query_rate_other_nodes_ban_at(autojump_clock: trio.testing.MockClock) -> None:
    """Joining, lookups and 20 minutes of maintenance never send one node 50 queries in 10 s.

    libtorrent ignores an IP for 5 minutes once it has sent 50 queries in a
    10-second window (``dht_block_ratelimit`` 5/s); so does our own budget
    (mainline_dht.core.rate_limit) drop the excess. A node that crossed that line
    would lose the very neighbours its lookups need.
    """
    window, ban_at = 10.0, 50
    async with open_sim_network(300, seed=5, link=LinkModel(median_rtt=0.1, loss=0.02)) as sim:
        sent: dict[str, list[float]] = {}
        transport = sim.net.open_transport()
        me = transport.local_address

        def count_queries(packet: Packet) -> Packet:
            if packet.source == me and b"1:y1:q" in packet.payload:
                sent.setdefault(packet.destination[0], []).append(trio.current_time())
            return packet

        sim.net.route_packet = count_queries
        async with open_node(transport=transport, bootstrap=(sim.nodes[0].local_address,), rng=random.Random(9)) as node:
            await node.bootstrap()
            rng = random.Random(1)
            for _ in range(20):
                async with node.get_peers(rng.randbytes(20)) as peers:
                    async for _ in peers:
                        pass
            await trio.sleep(1200.0)  # maintenance: verification pings, a round of bucket refreshes
        assert node.stats.queries_sent > 400
    worst = max((max_in_window(times, window) for times in sent.values()), default=0)
    assert 0 < worst < ban_at // 2
