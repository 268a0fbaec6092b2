"""Benchmark BEP 44 get and put latency on the simulated network, in median RTTs.

Builds an N-node DHT of real ``DHTNode`` objects on the in-memory network
(:func:`mainline_dht.testing._sim.open_sim_network`) under trio's ``MockClock``,
so virtual seconds cost no wall time. Links have log-normal latency (median RTT
``--rtt``), a share of nodes is dead and datagrams are lost (``--dead``,
``--loss``). Random live nodes put ``--items`` immutable and as many mutable items
(each put is a full ``get`` lookup, then ``put`` to the 8 closest nodes with a
token); other random live nodes then get each one.

Prints, per operation: success rate, median and 95th percentile latency in
seconds and in median RTTs, queries per operation, and nodes storing each put.

Usage (from the repository root)::

    PYTHONPATH=. python tools/bench_items.py                    # 2,000 nodes, 50 + 50 items
    PYTHONPATH=. python tools/bench_items.py --nodes 10000 --items 100
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mainline_dht.core import items  # noqa: E402
from mainline_dht.runtime import items as runtime_items  # noqa: E402
from mainline_dht.testing import LinkModel  # noqa: E402
from mainline_dht.testing._sim import open_sim_network  # noqa: E402
from mainline_dht.wire import bencode  # noqa: E402


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _row(name: str, times: list[float], queries: list[int], ok: int, total: int, rtt: float, extra: str = "") -> None:
    med, p95 = statistics.median(times) if times else float("nan"), _pct(times, 0.95)
    print(
        f"{name:<16}{ok:>4}/{total:<4}{med:>9.3f}{p95:>9.3f}{med / rtt:>9.1f}{p95 / rtt:>9.1f}"
        f"{statistics.median(queries) if queries else 0:>9.0f}{_pct([float(q) for q in queries], 0.95):>9.0f}  {extra}"
    )


async def run(args: argparse.Namespace) -> None:
    link = LinkModel(median_rtt=args.rtt, loss=args.loss)
    rng = random.Random(args.seed)
    async with open_sim_network(args.nodes, seed=args.seed, link=link, dead_fraction=args.dead) as net:
        nodes = net.nodes
        put_times: dict[str, list[float]] = {"immutable": [], "mutable": []}
        put_queries: dict[str, list[int]] = {"immutable": [], "mutable": []}
        stored: dict[str, list[int]] = {"immutable": [], "mutable": []}
        keys = [(b"bench %d" % i, rng.randbytes(32)) for i in range(args.items)]
        targets: list[tuple[str, bytes, bytes | None]] = []
        limiter = trio.CapacityLimiter(20)

        async def put_one(kind: str, value: bytes, seed: bytes) -> None:
            async with limiter:
                node = rng.choice(nodes)
                start = trio.current_time()
                if kind == "immutable":
                    result = await node.put(items.ImmutableItem(bencode.encode(value)))
                    targets.append((kind, result.target, None))
                else:
                    result = await node.put_mutable(seed, value)
                    targets.append((kind, result.target, items.public_key_for(seed)))
                put_times[kind].append(trio.current_time() - start)
                put_queries[kind].append(result.queries + result.sent)
                stored[kind].append(result.stored)

        async with trio.open_nursery() as nursery:
            for value, seed in keys:
                nursery.start_soon(put_one, "immutable", value, seed)
                nursery.start_soon(put_one, "mutable", value, seed)

        get_times: dict[str, list[float]] = {"immutable": [], "mutable": []}
        get_queries: dict[str, list[int]] = {"immutable": [], "mutable": []}
        found: dict[str, int] = {"immutable": 0, "mutable": 0}

        async def get_one(kind: str, target: bytes, public_key: bytes | None) -> None:
            async with limiter:
                node = rng.choice(nodes)
                start = trio.current_time()
                result = await node.get_item(target, public_key=public_key)
                get_times[kind].append(trio.current_time() - start)
                get_queries[kind].append(result.queries)
                found[kind] += result.found is not None

        async with trio.open_nursery() as nursery:
            for kind, target, pk in targets:
                nursery.start_soon(get_one, kind, target, pk)

    rtt = args.rtt
    print(f"{args.nodes} nodes, {args.dead:.0%} dead, {args.loss:.0%} loss, median RTT {rtt} s; "
          f"{args.items} items of each kind; unanswered puts resent after {args.put_retry:g} s")
    print(f"{'operation':<16}{'ok':>9}{'med s':>9}{'p95 s':>9}{'med RTT':>9}{'p95 RTT':>9}{'med q':>9}{'p95 q':>9}")
    for kind in ("immutable", "mutable"):
        ok = sum(1 for s in stored[kind] if s > 0)
        _row(f"put {kind}", put_times[kind], put_queries[kind], ok, len(stored[kind]), rtt,
             f"stored on median {statistics.median(stored[kind]):.0f} nodes")
        _row(f"get {kind}", get_times[kind], get_queries[kind], found[kind], len(get_times[kind]), rtt)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--rtt", type=float, default=0.1, help="median RTT in seconds (default 0.1)")
    parser.add_argument("--dead", type=float, default=0.2, help="share of dead nodes (default 0.2)")
    parser.add_argument("--loss", type=float, default=0.05, help="datagram loss (default 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--put-retry", type=float, default=runtime_items.PUT_RETRY_AFTER,
                        help="seconds before an unanswered put is resent (default %(default)s; "
                        "a large value turns the resend off)")
    args = parser.parse_args(argv)
    runtime_items.PUT_RETRY_AFTER = args.put_retry
    wall = time.perf_counter()
    trio.run(run, args, clock=trio.testing.MockClock(autojump_threshold=0))
    print(f"wall time {time.perf_counter() - wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
