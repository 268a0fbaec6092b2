"""A simulated DHT to crawl: a mix of clients, some storing infohashes, some with BEP 51.

Owns: :func:`open_crawl_network`, which builds an :func:`open_sim_network` where a
share of the live nodes answer ``sample_infohashes`` (BEP 51) and the others
answer it like ``find_node`` or with error 204, as clients without BEP 51 do;
where a share of the nodes store infohashes (a few store more than one reply's
worth, so that re-asking on ``num`` matters); and a crawler node joined to it.
:class:`CrawlTruth` holds what a perfect crawl would find, for tests and
``tools/bench_crawl.py`` to measure coverage against.

Run it under ``trio.testing.MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ..core.protocol import NodeConfig
from ..runtime.node import DHTNode, open_node
from ..wire.contact import Address
from ._memory_net import LinkModel
from ._sim import SimNetwork, open_sim_network, prefill_tables

__all__ = ["CrawlNetwork", "CrawlTruth", "open_crawl_network"]

#: The crawler's address on the simulated network (outside the nodes' 10.x range).
CRAWLER_ADDRESS: Address = ("192.0.2.1", 6881)


@dataclass
class CrawlTruth:
    """What there is to find."""

    live: dict[bytes, Address]
    """Live nodes: ID -> address."""
    bep51: set[bytes]
    """IDs of live nodes that answer ``sample_infohashes``."""
    held: dict[bytes, set[bytes]]
    """Infohash -> IDs of the nodes that store it."""

    @property
    def bep51_infohashes(self) -> set[bytes]:
        """Infohashes held by at least one BEP 51 node: what sampling can find."""
        return {h for h, holders in self.held.items() if holders & self.bep51}


@dataclass
class CrawlNetwork:
    """A running simulated network, its truth and a crawler node on it."""

    sim: SimNetwork
    truth: CrawlTruth
    crawler: DHTNode


@asynccontextmanager
async def open_crawl_network(
    n: int,
    *,
    seed: int = 0,
    dead_fraction: float = 0.1,
    loss: float = 0.02,
    bep51_share: float = 0.6,
    find_node_share: float = 0.5,
    storing_share: float = 0.3,
    big_store_share: float = 0.1,
    sample_interval: int = 60,
    crawler_config: NodeConfig | None = None,
    crawler_seed: int | None = None,
) -> AsyncIterator[CrawlNetwork]:
    """Build the network and a crawler node whose table is filled as a joined node's would be.

    Args:
        n: nodes, dead ones included.
        seed: seeds everything.
        dead_fraction: share of nodes that never answer (stale contacts in tables).
        loss: share of datagrams lost.
        bep51_share: share of live nodes that answer ``sample_infohashes``.
        find_node_share: of the others, the share that answer it like
            ``find_node``; the rest answer error 204.
        storing_share: share of live nodes that store infohashes: 1-20 each,
            except ``big_store_share`` of them that store 21-60 (more than one
            BEP 51 reply holds).
        sample_interval: the BEP 51 ``interval`` the nodes give (seconds).
        crawler_config: the crawler node's settings.
        crawler_seed: seeds the crawler node (default: from ``seed``).
    """
    rng = random.Random(f"{seed}:crawl-net")
    modes: dict[int, NodeConfig] = {}
    kinds = {"samples": NodeConfig(sample_interval=sample_interval),
             "nodes": NodeConfig(sample_infohashes="nodes"),
             "error": NodeConfig(sample_infohashes="error")}
    for i in range(n):
        if rng.random() < bep51_share:
            modes[i] = kinds["samples"]
        else:
            modes[i] = kinds["nodes"] if rng.random() < find_node_share else kinds["error"]
    link = LinkModel(median_rtt=0.1, loss=loss)
    async with open_sim_network(n, seed=seed, link=link, dead_fraction=dead_fraction,
                                config_for=modes.__getitem__) as sim:
        live = {node.node_id: node.local_address for node in sim.nodes}
        bep51 = {node.node_id for node in sim.nodes if node.proto.config.sample_infohashes == "samples"}
        held: dict[bytes, set[bytes]] = {}
        now = trio.current_time()
        counter = 0
        for node in sim.nodes:
            if rng.random() >= storing_share:
                continue
            count = rng.randint(21, 60) if rng.random() < big_store_share else rng.randint(1, 20)
            for _ in range(count):
                counter += 1
                h = hashlib.sha1(f"{seed}:infohash:{counter}".encode()).digest()
                node.proto.peer_store.add(h, (f"10.200.{counter // 250 % 250}.{counter % 250 + 1}", 6881), now)
                held.setdefault(h, set()).add(node.node_id)
        transport = sim.net.open_transport(CRAWLER_ADDRESS)
        crawler_rng = random.Random(f"{seed if crawler_seed is None else crawler_seed}:crawler")
        async with open_node(transport=transport, bootstrap=(), config=crawler_config, rng=crawler_rng) as crawler:
            prefill_tables([crawler], sim.contacts, rng=crawler_rng, now=trio.current_time())
            yield CrawlNetwork(sim, CrawlTruth(live, bep51, held), crawler)
