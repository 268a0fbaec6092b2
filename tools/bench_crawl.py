"""Crawl a simulated DHT with our crawler and with a naive baseline, in the same run.

The network (mainline_dht.testing._crawl_sim): N nodes, 10% dead, 2% loss, 60% of
the live nodes answering BEP 51 ``sample_infohashes`` (the rest like ``find_node``
or with error 204), 30% storing infohashes (a tenth of those more than one reply
holds). Both crawlers start from a joined node's routing table, at the same
global rate, under trio's virtual clock.

- ours: ``mainline_dht.crawl.crawl`` with its defaults;
- baseline: ``find_node`` toward a random target to every node it hears of, then
  one ``sample_infohashes`` per node that answered.

Printed per crawler: queries (everything its node sent: lookups and pings
included), new nodes per query, infohashes per query, coverage of the live nodes
and of the infohashes BEP 51 nodes hold, and the queries and simulated seconds
to 95% node coverage (and queries per live node at that point).

Usage: python tools/bench_crawl.py [--nodes 5000] [--seed 1] [--rate 250] [--duration 600]

With ``--fleet 1,2,4`` it measures fleets instead (tools/bench_fleet.py): for each
size, that many crawler processes sharing one PostgreSQL database crawl one
loopback network of our nodes (``--fleet-nodes``), in real time.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mainline_dht.crawl.crawler import InfohashFound, NodeFound, crawl  # noqa: E402
from mainline_dht.errors import KRPCError, LocalProtocolError, QueryTimeout  # noqa: E402
from mainline_dht.runtime.node import DHTNode, open_node  # noqa: E402
from mainline_dht.testing._crawl_sim import CrawlTruth, open_crawl_network  # noqa: E402
from mainline_dht.testing._sim import prefill_tables  # noqa: E402
from mainline_dht.wire.contact import Contact  # noqa: E402
from mainline_dht.wire.krpc import FindNode, SampleInfohashes  # noqa: E402

T0 = 1_700_000_000.0


@dataclass
class Result:
    name: str
    queries: int = 0
    nodes: int = 0
    infohashes: int = 0
    bep51_infohashes: int = 0
    q95: int | None = None
    t95: float | None = None
    elapsed: float = 0.0
    wall: float = 0.0


class Tracker:
    """Coverage as discoveries arrive; records when 95% of the live nodes are found."""

    def __init__(self, name: str, node: DHTNode, truth: CrawlTruth) -> None:
        self.r = Result(name)
        self.node = node
        self.truth = truth
        self.base = node.proto.stats.queries_sent
        self.start = trio.current_time()
        self.live_found: set[bytes] = set()
        self.hashes: set[bytes] = set()
        self.bep51 = truth.bep51_infohashes

    def queries(self) -> int:
        return self.node.proto.stats.queries_sent - self.base

    def node_found(self, node_id: bytes) -> None:
        if node_id in self.truth.live and node_id not in self.live_found:
            self.live_found.add(node_id)
            if self.r.q95 is None and len(self.live_found) >= 0.95 * len(self.truth.live):
                self.r.q95 = self.queries()
                self.r.t95 = trio.current_time() - self.start

    def hash_found(self, h: bytes) -> None:
        self.hashes.add(h)

    def finish(self) -> Result:
        r = self.r
        r.queries = self.queries()
        r.nodes = len(self.live_found)
        r.infohashes = len(self.hashes)
        r.bep51_infohashes = len(self.hashes & self.bep51)
        r.elapsed = trio.current_time() - self.start
        return r


async def run_ours(node: DHTNode, truth: CrawlTruth, rate: float, duration: float) -> Result:
    tr = Tracker("ours (crawl)", node, truth)
    async with crawl(node, rate=rate, duration=duration, stop_when_idle=600.0, rng=random.Random(7),
                     wall_clock=lambda: T0 + trio.current_time()) as found:
        async for item in found:
            if isinstance(item, NodeFound):
                tr.node_found(item.node_id)
            elif isinstance(item, InfohashFound):
                tr.hash_found(item.info_hash)
    return tr.finish()


async def run_baseline(node: DHTNode, truth: CrawlTruth, rate: float, duration: float) -> Result:
    tr = Tracker("baseline (find_node, then one sample each)", node, truth)
    rng = random.Random(8)
    seen: set[bytes] = {node.node_id}
    todo: deque[Contact] = deque()
    for entry in node.proto.table:
        seen.add(entry.contact.id)
        todo.append(entry.contact)
    answered: list[Contact] = []
    pending = 0
    changed = trio.Event()

    async def find(c: Contact) -> None:
        nonlocal pending, changed
        try:
            resp = await node.query(c.addr, FindNode(rng.randbytes(20)), node_id=c.id)
        except (QueryTimeout, KRPCError, LocalProtocolError):
            pass
        else:
            answered.append(c)
            tr.node_found(resp.sender_id)
            for n in resp.nodes:
                if n.id not in seen:
                    seen.add(n.id)
                    todo.append(n)
        pending -= 1
        changed.set()

    async def sample(c: Contact) -> None:
        try:
            resp = await node.query(c.addr, SampleInfohashes(rng.randbytes(20)), node_id=c.id)
        except (QueryTimeout, KRPCError, LocalProtocolError):
            return
        for h in resp.samples or ():
            tr.hash_found(h)

    with trio.move_on_after(duration):
        async with trio.open_nursery() as nursery:
            while todo or pending:
                if not todo:
                    changed = trio.Event()
                    await changed.wait()
                    continue
                pending += 1
                nursery.start_soon(find, todo.popleft())
                await trio.sleep(1 / rate)
        async with trio.open_nursery() as nursery:
            for c in answered:
                nursery.start_soon(sample, c)
                await trio.sleep(1 / rate)
    return tr.finish()


async def bench(n: int, seed: int, rate: float, duration: float) -> list[Result]:
    results = []
    async with open_crawl_network(n, seed=seed) as cn:
        truth = cn.truth
        print(f"network: {n} nodes, {len(truth.live)} live, {len(truth.bep51)} with BEP 51, "
              f"{len(truth.held)} infohashes stored, {len(truth.bep51_infohashes)} of them by BEP 51 nodes; "
              f"rate {rate:g} queries/s", flush=True)
        wall = time.perf_counter()
        r = await run_ours(cn.crawler, truth, rate, duration)
        r.wall = time.perf_counter() - wall
        results.append(r)
        transport = cn.sim.net.open_transport(("192.0.2.2", 6881))
        brng = random.Random(f"{seed}:baseline")
        async with open_node(transport=transport, bootstrap=(), rng=brng) as base:
            prefill_tables([base], cn.sim.contacts, rng=brng, now=trio.current_time())
            wall = time.perf_counter()
            r = await run_baseline(base, truth, rate, duration)
            r.wall = time.perf_counter() - wall
            results.append(r)
        live = len(truth.live)
        bep51 = len(truth.bep51_infohashes)
        print(f"{'crawler':44} {'queries':>8} {'nodes/q':>8} {'ih/q':>7} {'nodes':>7} {'BEP51 ih':>9} "
              f"{'q to 95%':>9} {'q/node':>7} {'s to 95%':>9} {'sim s':>7} {'wall s':>7}")
        for r in results:
            q95 = "-" if r.q95 is None else str(r.q95)
            per = "-" if r.q95 is None else f"{r.q95 / live:.2f}"
            t95 = "-" if r.t95 is None else f"{r.t95:.1f}"
            print(f"{r.name:44} {r.queries:8d} {r.nodes / max(1, r.queries):8.3f} "
                  f"{r.infohashes / max(1, r.queries):7.3f} {r.nodes / live:7.1%} {r.bep51_infohashes / bep51:9.1%} "
                  f"{q95:>9} {per:>7} {t95:>9} {r.elapsed:7.1f} {r.wall:7.1f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--duration", type=float, default=600.0, help="simulated seconds per crawler at most")
    parser.add_argument("--fleet", metavar="W,W,...", default=None,
                        help="measure fleets of W crawler processes on PostgreSQL instead (e.g. 1,2,4)")
    parser.add_argument("--fleet-nodes", type=int, default=2000, help="nodes of the loopback network (--fleet)")
    parser.add_argument("--fleet-duration", type=float, default=120.0, help="seconds per fleet at most (--fleet)")
    args = parser.parse_args()
    if args.fleet is not None:
        from bench_fleet import bench_fleet

        sizes = [int(w) for w in args.fleet.split(",") if w.strip()]
        bench_fleet(sizes, args.fleet_nodes, args.fleet_duration, args.rate)
        return
    trio.run(bench, args.nodes, args.seed, args.rate, args.duration,
             clock=trio.testing.MockClock(autojump_threshold=0))


if __name__ == "__main__":
    main()
