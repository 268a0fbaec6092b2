"""Compare our get_peers lookup with libtorrent's on one loopback network of libtorrent nodes.

Starts ``--sessions`` libtorrent sessions on 127.0.70.x (free ports), lets
``--announcers`` random sessions announce each of ``--infohashes`` infohashes, then
looks every infohash up four ways:

In that order: once a node of ours closes, its entry in libtorrent's tables is dead,
and a libtorrent lookup that reaches it waits for the query to time out (1 to 15 s).

1. **libtorrent, warm session**: ``dht_get_peers`` from session 0, which announced
   nothing and has been in the network since the start (its table holds most nodes);
2. **libtorrent, fresh session**: a new session whose only contact is session 1 (as
   its router), looking up right after its socket is up; one session per infohash,
   run read-only (``dht_read_only``) so the closed ones leave no dead entries behind.
   Its counters also include the start-up bootstrap lookup it runs meanwhile;
3. **ours, after bootstrap**: one node of ours, bootstrapped via session 1 (own-ID
   lookup plus refresh of the buckets that are not full), then the lookups one
   after the other;
4. **ours, fresh node**: a new node (empty table) per infohash, bootstrapped via
   session 1 the way ``mainline-dht peers`` is: the lookup itself starts from the
   router. It reuses the address and node ID of (3), so the libtorrent tables that
   hold it stay valid (a closed node would stall their lookups).

For each it prints medians over the infohashes: time to first peer, time to
completion, the lookup's get_peers queries, every query the node sent meanwhile
(libtorrent's liveness checks and our verification pings included), and the share of
lookups that found every announced peer; then the ratios ours / libtorrent (3 vs 1,
4 vs 2).

Loopback round trips are tens of microseconds, so the times measure processing (Python
and trio for us, C++ plus alert polling through the Python bindings for libtorrent),
not network latency: on the internet, round trips of 50-500 ms and timeouts dominate
and the query counts matter more than these times.

Usage (from the repository root)::

    PYTHONPATH=. python tools/bench_interop_lookup.py                 # 60 sessions, 20 infohashes
    PYTHONPATH=. python tools/bench_interop_lookup.py --sessions 40 --infohashes 10
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mainline_dht.wire.contact import Address  # noqa: E402
from mainline_dht.runtime.node import DHTNode, open_node  # noqa: E402
from mainline_dht.core.node_id import random_node_id  # noqa: E402
from libtorrent_net import LibtorrentSwarm, libtorrent_available, start_swarm  # noqa: E402

#: First address of the swarm; far from the test files' ranges (127.0.5.x, 127.0.60.x, 127.0.61.x).
FIRST_IP = "127.0.70.1"
#: Our node's address (its port is picked once and reused).
OUR_IP = "127.0.71.1"
#: Address of the fresh libtorrent sessions (one at a time).
FRESH_LT_IP = "127.0.71.2"
#: Seconds a single lookup may take before it counts as cut short.
LOOKUP_TIMEOUT = 15.0
#: Seconds between checks for the end of a libtorrent lookup (it posts no alert when
#: one ends), so this bounds the precision of libtorrent's completion time.
LT_POLL_INTERVAL = 0.0005


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """One lookup's figures (seconds, counts)."""

    first_peer: float | None
    elapsed: float
    lookup_queries: int
    all_queries: int
    found_all: bool


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1000:.2f} ms"
    return f"{value:g}"


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """Medians of one method's samples."""

    name: str
    n: int
    first_peer: float | None
    elapsed: float | None
    elapsed_max: float
    lookup_queries: float | None
    all_queries: float | None
    found_all: float
    no_peer: int

    @classmethod
    def of(cls, name: str, samples: list[Sample]) -> Summary:
        firsts = [s.first_peer for s in samples if s.first_peer is not None]
        return cls(
            name=name,
            n=len(samples),
            first_peer=_median(firsts),
            elapsed=_median([s.elapsed for s in samples]),
            elapsed_max=max(s.elapsed for s in samples),
            lookup_queries=_median([s.lookup_queries for s in samples]),
            all_queries=_median([s.all_queries for s in samples]),
            found_all=sum(s.found_all for s in samples) / max(1, len(samples)),
            no_peer=len(samples) - len(firsts),
        )


# --- libtorrent -------------------------------------------------------------------------


def lt_warm(swarm: LibtorrentSwarm, i: int, ih: bytes, expected: set[Address]) -> Sample:
    r = swarm.get_peers(i, ih, timeout=LOOKUP_TIMEOUT, poll_interval=LT_POLL_INTERVAL)
    return Sample(
        r.first_peer_elapsed, r.elapsed, r.stats.get_peers_sent, r.stats.queries_sent, expected <= set(r.peers)
    )


def lt_fresh(router: Address, ih: bytes, expected: set[Address]) -> Sample:
    with start_swarm(
        1, first_ip=FRESH_LT_IP, port=0, routers=[router], warm_up=False, settings={"dht_read_only": True}
    ) as fresh:
        return lt_warm(fresh, 0, ih, expected)


# --- ours -------------------------------------------------------------------------------


async def our_lookup(node: DHTNode, ih: bytes, expected: set[Address]) -> Sample:
    sent_before = node.proto.stats.queries_sent
    async with node.get_peers(ih) as stream:
        with trio.move_on_after(LOOKUP_TIMEOUT):
            async for _ in stream:
                pass
    s = stream.stats
    elapsed = s.elapsed if s.elapsed is not None else LOOKUP_TIMEOUT
    return Sample(
        s.time_to_first_peer,
        elapsed,
        s.queries,
        node.proto.stats.queries_sent - sent_before,
        expected <= set(stream.peers),
    )


async def run_ours(
    router: Address, jobs: list[tuple[bytes, set[Address]]], seed: int
) -> tuple[list[Sample], list[Sample], int]:
    """Return (after-bootstrap samples, fresh-node samples, table size after bootstrap)."""
    node_id = random_node_id(random.Random(f"{seed}:our-id"))
    after: list[Sample] = []
    async with open_node((OUR_IP, 0), bootstrap=(router,), node_id=node_id, rng=random.Random(f"{seed}:ours")) as node:
        bind = node.local_address
        await node.bootstrap(timeout=5.0)
        table_size = len(node.table)
        for ih, expected in jobs:
            after.append(await our_lookup(node, ih, expected))
    fresh: list[Sample] = []
    for k, (ih, expected) in enumerate(jobs):
        async with open_node(bind, bootstrap=(router,), node_id=node_id, rng=random.Random(f"{seed}:fresh:{k}")) as node:
            fresh.append(await our_lookup(node, ih, expected))
    return after, fresh, table_size


# --- the run ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=60, help="libtorrent sessions (default 60)")
    parser.add_argument("--infohashes", type=int, default=20, help="infohashes looked up (default 20)")
    parser.add_argument("--announcers", type=int, default=2, help="sessions announcing each infohash (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print the summaries as one JSON line")
    args = parser.parse_args(argv)
    if not libtorrent_available():
        print("libtorrent is not installed: pip install libtorrent", file=sys.stderr)
        return 2
    if args.sessions < args.announcers + 2:
        parser.error("--sessions must exceed --announcers by 2 (session 0 looks up, 1 is the router)")

    t0 = time.perf_counter()
    rng = random.Random(f"{args.seed}:bench")
    with start_swarm(args.sessions, first_ip=FIRST_IP, port=0, seed=args.seed) as swarm:
        sizes = swarm.wait_for_tables(min_nodes=min(args.sessions - 1, 20), timeout=20.0)
        # Session 0 looks up and announces nothing; session 1 is the way in for fresh nodes.
        jobs: list[tuple[bytes, set[Address]]] = []
        for k in range(args.infohashes):
            ih = hashlib.sha1(f"bench_interop_lookup {args.seed} {k}".encode()).digest()
            expected: set[Address] = set()
            for j, i in enumerate(rng.sample(range(1, args.sessions), args.announcers)):
                port = 10000 + 10 * k + j
                swarm.announce(i, ih, port, timeout=LOOKUP_TIMEOUT)
                expected.add((swarm.addresses[i][0], port))
            jobs.append((ih, expected))
        sizes = swarm.table_sizes()
        print(
            f"# {args.sessions} libtorrent sessions on {FIRST_IP}..; routing tables {min(sizes)}-{max(sizes)} "
            f"nodes (mean {statistics.mean(sizes):.1f}); {args.infohashes} infohashes, {args.announcers} "
            f"announcers each; set up in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        router = swarm.addresses[1]
        # libtorrent first: once our node closes, its entry in libtorrent's tables is
        # dead, and libtorrent lookups that reach it wait for its query to time out.
        lt_warm_samples = [lt_warm(swarm, 0, ih, exp) for ih, exp in jobs]
        lt_fresh_samples = [lt_fresh(router, ih, exp) for ih, exp in jobs]
        after, fresh, table_size = trio.run(run_ours, router, jobs, args.seed)

    summaries = [
        Summary.of("libtorrent, warm session", lt_warm_samples),
        Summary.of("libtorrent, fresh session", lt_fresh_samples),
        Summary.of(f"ours, after bootstrap ({table_size} contacts)", after),
        Summary.of("ours, fresh node (CLI-style)", fresh),
    ]
    header = (
        f"{'method':<40} {'first peer':>11} {'done':>10} {'done max':>10} {'get_peers':>9} {'all sent':>8} "
        f"{'found all':>9}"
    )
    print("\n# medians over the infohashes (time to first peer, to completion; queries per lookup), and the slowest")
    print(header)
    for s in summaries:
        print(
            f"{s.name:<40} {_fmt(s.first_peer, 'ms'):>11} {_fmt(s.elapsed, 'ms'):>10} {_fmt(s.elapsed_max, 'ms'):>10} "
            f"{_fmt(s.lookup_queries):>9} {_fmt(s.all_queries):>8} {s.found_all:>8.0%}"
            + (f"  ({s.no_peer} without a peer)" if s.no_peer else "")
        )

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or not b else f"{a / b:.2f}"

    print("\n# ratios ours / libtorrent")
    print(f"{'pair':<40} {'first peer':>11} {'done':>10} {'get_peers':>9} {'all sent':>8}")
    for ours, theirs, label in ((summaries[2], summaries[0], "after bootstrap / warm"),
                                (summaries[3], summaries[1], "fresh / fresh")):  # fmt: skip
        print(
            f"{label:<40} {ratio(ours.first_peer, theirs.first_peer):>11} {ratio(ours.elapsed, theirs.elapsed):>10} "
            f"{ratio(ours.lookup_queries, theirs.lookup_queries):>9} {ratio(ours.all_queries, theirs.all_queries):>8}"
        )
    print(
        "\n# Loopback round trips are ~0 (tens of microseconds): the times above measure processing"
        "\n# (Python/trio for us; C++ plus alert polling through the Python bindings for libtorrent),"
        f"\n# not the network. libtorrent's 'done' is detected by polling every {LT_POLL_INTERVAL * 1000:g} ms."
        "\n# 'get_peers' = the lookup's own queries (libtorrent: its get_peers counter,"
        "\n# which includes liveness checks sent meanwhile); 'all sent' = every query the node sent during"
        "\n# the lookup (our verification pings included). A fresh libtorrent session runs its start-up"
        "\n# bootstrap lookup (get_peers of its own ID) meanwhile, and those queries are counted too;"
        "\n# our fresh node does not bootstrap first (as 'mainline-dht peers')."
        f"\n# total wall time {time.perf_counter() - t0:.1f} s"
    )
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in summaries]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
