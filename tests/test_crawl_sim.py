"""The crawler on simulated networks (mainline_dht.crawl.crawler over mainline_dht.testing).

Everything runs under trio's MockClock (``autojump_clock``): minutes of simulated
crawling cost seconds of wall time. The networks mix clients as the live DHT
does: some answer ``sample_infohashes`` (BEP 51), others answer it like
``find_node`` or with error 204; some store infohashes, a few more than one
reply holds; 10% of the nodes are dead and 2% of the datagrams are lost.
"""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from mainline_dht.crawl.crawler import Crawl, InfohashFound, NodeFound, crawl
from mainline_dht.crawl.policy import CrawlLimits
from mainline_dht.crawl.sqlite_store import SQLiteStore
from mainline_dht.testing._crawl_sim import CRAWLER_ADDRESS, open_crawl_network
from mainline_dht.testing._memory_net import Packet

from helpers import max_in_window

#: Unix time at the simulation's start (the crawl's wall clock is this plus trio's clock).
T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def _quick_gil_handoff() -> Iterator[None]:
    """Let the crawl's store thread take the GIL back at once, so that its writes stay short.

    The crawl writes SQLite from a worker thread (``trio.to_thread``), and the virtual
    clock jumps ahead whenever trio has nothing to do but wait for that thread. sqlite3
    lets go of the GIL for every row and gets it back only when the simulation, which
    holds it meanwhile, reaches the next switch interval (5 ms): one flush of thousands
    of rows took seconds, and a crawl of 30 virtual seconds ran the simulated network for
    15 to 30 virtual minutes (11 to 250 s of CPU, from run to run). With a 10 µs interval
    the writes take milliseconds and the crawl's virtual time is about its duration.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


async def test_crawl_of_5000_nodes_finds_nodes_infohashes_and_the_size(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_crawl_network(5000, seed=1, sample_interval=10) as cn:
        # Every query the crawler's address sends, by destination IP: lookups and
        # the node's own pings included, not only the crawl's queries.
        sent: dict[str, list[float]] = defaultdict(list)

        def watch(packet: Packet) -> Packet:
            if packet.source == CRAWLER_ADDRESS and b"1:y1:q" in packet.payload:
                sent[packet.destination[0]].append(trio.current_time())
            return packet

        cn.sim.net.route_packet = watch
        store = SQLiteStore(tmp_path / "crawl.sqlite3")
        nodes: set[bytes] = set()
        infohashes: set[bytes] = set()
        async with crawl(cn.crawler, duration=30.0, rate=1000.0, store=store, rng=random.Random(2),
                         wall_clock=lambda: T0 + trio.current_time()) as found:
            async for item in found:
                if isinstance(item, NodeFound):
                    assert item.node_id not in nodes
                    nodes.add(item.node_id)
                else:
                    assert isinstance(item, InfohashFound) and item.info_hash not in infohashes
                    infohashes.add(item.info_hash)
        truth = cn.truth
        stats = found.stats
    live = set(truth.live)
    assert len(nodes & live) >= 0.95 * len(live)
    bep51_held = truth.bep51_infohashes
    assert len(infohashes & bep51_held) >= 0.90 * len(bep51_held)
    assert stats.estimate is not None
    assert abs(stats.estimate.nodes / len(live) - 1) <= 0.15
    # Polite: the crawl's rate, and far from libtorrent's 50 queries in 10 s to any IP.
    assert stats.queries <= 1000 * 30 + 100
    assert max(max_in_window(times) for times in sent.values()) < 50
    # No BEP 51 is remembered: nodes that answered 204 or like find_node are marked so.
    counts = store.counts()
    # (a node whose first answer came as the crawl stopped is stored, its event not sent)
    assert counts.nodes == stats.nodes >= len(nodes) >= counts.nodes - 20
    assert counts.infohashes >= len(infohashes) >= counts.infohashes - 20
    stored = list(store.load_nodes())
    assert all(r.bep51 == (r.node_id in truth.bep51) for r in stored if r.bep51 is not None)
    assert sum(r.bep51 is not None for r in stored) >= 0.95 * len(stored)
    store.close()


async def test_a_second_run_does_not_re_ask_nodes_before_their_interval(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Three runs on one database, as a crawler restarted a minute and an hour
    later would make them (the wall clock the crawl sees jumps; the simulated
    network need not run for that hour)."""
    path = tmp_path / "crawl.sqlite3"
    limits = CrawlLimits(revisit_after=3600.0)
    async with open_crawl_network(300, seed=4, sample_interval=3600) as cn:
        samples_to: list[str] = []

        def watch(packet: Packet) -> Packet:
            if packet.source == CRAWLER_ADDRESS and b"17:sample_infohashes" in packet.payload:
                samples_to.append(packet.destination[0])
            return packet

        async def run(store: SQLiteStore, later: float, **options: Any) -> Crawl:
            start = trio.current_time()
            async with crawl(cn.crawler, rate=500.0, store=store, estimate_lookups=4, limits=limits,
                             rng=random.Random(later),
                             wall_clock=lambda: T0 + later + trio.current_time() - start, **options) as found:
                async for _ in found:
                    pass
            return found

        cn.sim.net.route_packet = watch
        store = SQLiteStore(path)
        first = await run(store, 0.0, stop_when_idle=600.0)
        store.close()
        assert first.stats.bep51_nodes > 50 and len(samples_to) >= first.stats.bep51_nodes
        # A minute later, a new run on the same database: every node gave a one-hour
        # interval (or is revisited hourly), so none is asked again.
        samples_to.clear()
        store = SQLiteStore(path)
        restored = {r.node_id: r for r in store.load_nodes()}
        assert len(restored) == first.stats.nodes
        second = await run(store, 60.0, stop_when_idle=600.0)
        assert second.stats.crawl_queries <= 0.1 * first.stats.crawl_queries
        assert set(samples_to) & {r.addr[0] for r in restored.values()} == set()
        # An hour on, they are due again.
        third = await run(store, 3700.0, duration=30.0)
        assert third.stats.bep51_nodes >= 0.9 * first.stats.bep51_nodes
        store.close()


async def test_passive_learning_from_queries_our_node_receives(autojump_clock: trio.testing.MockClock) -> None:
    async with open_crawl_network(200, seed=6, dead_fraction=0.0, loss=0.0) as cn:
        wanted = b"\x42" * 20
        announced = b"\x43" * 20
        seen: list[InfohashFound] = []
        async with crawl(cn.crawler, rate=200.0, duration=30.0, estimate_lookups=0,
                         rng=random.Random(1), wall_clock=lambda: T0 + trio.current_time()) as found:

            async def ask() -> None:
                await trio.sleep(1.0)
                asker = cn.sim.nodes[3]
                from mainline_dht.wire.krpc import AnnouncePeer, GetPeers

                reply = await asker.query(cn.crawler.local_address, GetPeers(wanted))
                await asker.query(cn.crawler.local_address, GetPeers(announced))
                assert reply.token is not None
                token = (await asker.query(cn.crawler.local_address, GetPeers(announced))).token
                assert token is not None
                await asker.query(cn.crawler.local_address, AnnouncePeer(announced, 5555, token))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                async for item in found:
                    if isinstance(item, InfohashFound) and item.passive:
                        seen.append(item)
        assert {i.info_hash for i in seen} == {wanted, announced}
        assert all(i.source[0] == cn.sim.nodes[3].local_address[0] for i in seen)
        assert found.stats.passive_infohashes == 2
        # the hooks are gone once the crawl ends
        assert cn.crawler._queried_callbacks == [] and cn.crawler._announce_callbacks == []


async def test_a_dual_stack_crawl_reaches_both_families(autojump_clock: trio.testing.MockClock) -> None:
    """BEP 32: from a dual-stack node the crawl follows ``nodes6`` too, finds
    IPv6-only nodes, and learns from queries that reach its IPv6 socket."""
    from mainline_dht.runtime.node import open_node
    from mainline_dht.testing import LinkModel, open_memory_network
    from mainline_dht.wire.krpc import GetPeers

    def v4(i: int) -> tuple[str, int]:
        return (f"10.0.0.{i + 1}", 6881)

    def v6(i: int) -> tuple[str, int]:
        return (f"fd00::{i + 1:x}", 6881)

    async with open_memory_network(rng=random.Random(0), link=LinkModel(median_rtt=0.05)) as net:
        async with AsyncExitStack() as stack:
            kinds = ["dual"] * 6 + ["v4"] * 8 + ["v6"] * 8
            nodes = []
            for n, kind in enumerate(kinds):
                transports = []
                if kind in ("dual", "v4"):
                    transports.append(net.open_transport(v4(n)))
                if kind in ("dual", "v6"):
                    transports.append(net.open_transport(v6(n)))
                boot = [a for a in (v4(0), v6(0)) if a not in (v4(n), v6(n))]
                nodes.append(await stack.enter_async_context(
                    open_node(transport=transports, bootstrap=boot, rng=random.Random(f"d:{n}"))))
            for node in nodes[1:]:
                await node.bootstrap()
            for node in nodes:
                await node.refresh_buckets(not_full=True)
            me = await stack.enter_async_context(open_node(
                transport=[net.open_transport(v4(100)), net.open_transport(v6(100))],
                bootstrap=[v4(0), v6(0)], rng=random.Random("me")))
            wanted = b"\x66" * 20
            found: set[tuple[str, int]] = set()
            passive: set[bytes] = set()
            with trio.fail_after(3600):
                async with crawl(me, stop_when_idle=600.0, estimate_lookups=2, rng=random.Random(1),
                                 wall_clock=lambda: T0 + trio.current_time()) as stream:

                    async def ask_over_ipv6() -> None:
                        await trio.sleep(1.0)
                        await nodes[-1].query(v6(100), GetPeers(wanted))  # an IPv6-only node asks us

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(ask_over_ipv6)
                        async for item in stream:
                            if isinstance(item, NodeFound):
                                found.add(item.addr)
                            elif item.passive:
                                passive.add(item.info_hash)
            v6_only = {nodes[n].local_address for n, k in enumerate(kinds) if k == "v6"}
            v4_only = {nodes[n].local_address for n, k in enumerate(kinds) if k == "v4"}
            assert v6_only <= found and v4_only <= found
            assert passive == {wanted}
