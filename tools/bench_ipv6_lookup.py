#!/usr/bin/env python3
"""IPv6 lookup figures beside IPv4 on one loopback network (BEP 32).

Starts ``--sessions`` dual-stack libtorrent sessions (IPv4 on 127.0.65.x, IPv6 on
``[::1]`` with one port each; free ports), lets ``--announcers`` random sessions
announce each of ``--infohashes`` infohashes (libtorrent announces in both of
its DHTs), then looks every infohash up with three nodes of ours, each joined
through session 1 first:

1. **IPv4 only**: bound to 127.0.65.250, looking in the IPv4 overlay;
2. **IPv6 only**: bound to ``[::1]``, looking in the IPv6 overlay;
3. **dual-stack**: both sockets; one ``get_peers`` runs in both overlays at once
   and merges the peers.

Every node runs with the one-address settings (no per-IP table or query limit),
as all IPv6 nodes share ``::1``. For each it prints medians (and 90th
percentiles) over the infohashes: time to first peer, time to completion,
get_peers queries sent by the lookup, and the share of lookups that found every
announced peer of their family (both families for the dual-stack node).

Loopback round trips are tens of microseconds: times measure processing, not
network latency; the query counts are what carries over to the internet.

Usage (from the repository root)::

    PYTHONPATH=. python tools/bench_ipv6_lookup.py                   # 40 sessions, 20 infohashes
    PYTHONPATH=. python tools/bench_ipv6_lookup.py --sessions 30 --infohashes 10
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from libtorrent_net import start_swarm  # noqa: E402
from mainline_dht.core.protocol import NodeConfig  # noqa: E402
from mainline_dht.runtime.node import DHTNode, open_node  # noqa: E402
from mainline_dht.wire.contact import Address  # noqa: E402

SHARED_ADDRESS = NodeConfig(max_per_ip=None, query_rate_per_ip=None)


@dataclass
class Sample:
    first_peer: float | None
    elapsed: float
    queries: int
    complete: bool


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


async def lookup(node: DHTNode, ih: bytes, expected: set[Address]) -> Sample:
    async with node.get_peers(ih) as stream:
        found = {p async for p in stream}
    s = stream.stats
    assert s.elapsed is not None
    return Sample(s.time_to_first_peer, s.elapsed, s.queries, expected <= found)


def summary(name: str, samples: list[Sample]) -> str:
    firsts = [s.first_peer for s in samples if s.first_peer is not None]
    elapsed = [s.elapsed for s in samples]
    queries = [float(s.queries) for s in samples]
    complete = sum(s.complete for s in samples) / len(samples)
    return (
        f"{name:<12} first peer {_ms(statistics.median(firsts) if firsts else None)} "
        f"(p90 {_ms(_pct(firsts, 0.9))}); done {_ms(statistics.median(elapsed))} (p90 {_ms(_pct(elapsed, 0.9))}); "
        f"queries {statistics.median(queries):.0f} (p90 {_pct(queries, 0.9):.0f}); "
        f"found all {complete:.0%}"
    )


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    ihs = [hashlib.sha1(f"bench_ipv6_lookup {args.seed} {i}".encode()).digest() for i in range(args.infohashes)]
    with start_swarm(args.sessions, first_ip="127.0.65.1", port=0, ipv6_port=0, seed=args.seed) as sw:
        await trio.to_thread.run_sync(sw.wait_for_tables, args.sessions, 20.0)
        expected4: dict[bytes, set[Address]] = {}
        expected6: dict[bytes, set[Address]] = {}
        for n, ih in enumerate(ihs):
            chosen = rng.sample(range(2, args.sessions), args.announcers)
            for k, i in enumerate(chosen):
                port = 10000 + n * 10 + k
                await trio.to_thread.run_sync(lambda: sw.announce(i, ih, port))
                expected4.setdefault(ih, set()).add((sw.addresses[i][0], port))
                expected6.setdefault(ih, set()).add(("::1", port))
        boot4, boot6 = sw.addresses[1], sw.addresses6[1]
        results: dict[str, list[Sample]] = {"IPv4 only": [], "IPv6 only": [], "dual-stack": []}
        async with (
            open_node(("127.0.65.250", 0), bootstrap=(boot4,), config=SHARED_ADDRESS, rng=random.Random(4)) as n4,
            open_node(("::1", 0), bootstrap=(boot6,), config=SHARED_ADDRESS, rng=random.Random(6)) as n6,
            open_node(
                [("127.0.65.251", 0), ("::1", 0)], bootstrap=(boot4, boot6), config=SHARED_ADDRESS, rng=random.Random(46)
            ) as dual,
        ):
            for node in (n4, n6, dual):
                await node.bootstrap(timeout=5.0)
            tables = {
                "IPv4 only": len(n4.table),
                "IPv6 only": len(n6.table),
                "dual-stack": "+".join(str(len(o.table)) for o in dual.overlays),
            }
            for ih in ihs:
                results["IPv4 only"].append(await lookup(n4, ih, expected4[ih]))
                results["IPv6 only"].append(await lookup(n6, ih, expected6[ih]))
                results["dual-stack"].append(await lookup(dual, ih, expected4[ih] | expected6[ih]))
    print(
        f"{args.sessions} dual-stack libtorrent sessions (127.0.65.x and [::1]), {args.infohashes} infohashes "
        f"announced by {args.announcers} sessions each; our nodes joined via session 1 "
        f"(tables: {tables})"
    )
    for name, samples in results.items():
        print(summary(name, samples))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--infohashes", type=int, default=20)
    parser.add_argument("--announcers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return trio.run(run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
