"""Benchmark get_peers lookups on the simulated network, to choose the lookup defaults by data.

Each run builds an N-node DHT of real ``DHTNode`` objects on the in-memory network
(:func:`mainline_dht.testing._sim.run_scenario`) under trio's ``MockClock``, so virtual
seconds of timeouts cost no wall time. A share of the nodes is dead (their contacts sit in
other nodes' tables but never answer), every link loses datagrams and has log-normal
latency. Infohashes are announced by live nodes (after a lookup with the run's settings),
then ``--lookups`` get_peers lookups start from random live nodes, 20 at a time.

For every run it prints: success rate (the lookup yielded an announced peer), median and
95th percentile time to first peer and to completion (seconds, and in units of the median
RTT), queries per lookup (median and 95th percentile), announce acknowledgements, and the
run's wall time and peak memory. Sections:

1. scale: the current defaults at each ``--nodes`` size, with the lookup's
   ``early_finish`` rule off and on;
2. sweeps at ``--sweep-nodes``: alpha, soft timeout and hard (per-query) timeout, one at a
   time around the defaults, each with ``early_finish`` off and on;
3. heavy tail: the soft-timeout sweep again with a wider latency spread (sigma 1.0: RTT
   p99 around 0.7 s for a 0.1 s median), since a soft timeout tuned on a light tail would
   hedge too eagerly on the live DHT;
4. slow network: the soft-timeout sweep on a network three times slower than assumed
   (median RTT 0.3 s, sigma 1.0), where a short soft timeout (with ``early_finish``)
   would leave live nodes behind;
5. grid: alpha x soft timeout with ``early_finish`` on, on the nominal and the slow
   network, since the two settings trade against each other (both free stuck slots);
6. harsh: 40% dead nodes and 15% loss, ``early_finish`` off and on, on five seeds, to
   see whether leaving stragglers behind costs success where the nominal network never
   fails. Failures cluster on infohashes whose announce reached few nodes, so a few in
   300 lookups are noise: compare the per-seed spread with the difference;
7. adversarial: at each ``--nodes`` size, the same network (same seed) without
   adversaries, with 10% sybils, with 10% poisoners and with both (see
   ``mainline_dht/testing/_adversaries.py``), and the attack with the lookup's /24
   rule turned off. Success and time to first peer count only *announced* peers
   (poisoners' junk arrives first); queries per lookup as elsewhere.
8. compare: today's lookup (a fixed 0.5 s soft timeout, no cache of recently answering
   or named contacts) next to the new defaults (soft timeouts from measured round trips,
   lookups seeded from and ranked by those caches), in the same run, on the nominal network at
   every ``--nodes`` size; compare-slow and compare-harsh do the same on the slow network
   and on the harsh network (five seeds) at ``--sweep-nodes``. Each pair runs *cold*
   (lookups from random nodes whose tables were just filled: nothing measured, nothing
   cached) and *warm* (20 client nodes run every lookup, each after 20 lookups of random
   infohashes, as a node that has been up a while); ``--warmth`` picks one;
9. ablation: on the nominal and the harsh network, warm, what the adaptive timeout and
   the cache each contribute alone.

Targets (issue 16): on 10,000 nodes, nominal network, time to first peer median <= 2.0
and p95 <= 3.5 median RTTs; harsh network success >= 99.5 % on every seed and p95 <= 6
RTTs; queries per lookup at most 10 % above today's; on 100,000 nodes median <= 2.5 RTTs.

Usage (from the repository root)::

    PYTHONPATH=. python tools/bench_lookup.py            # everything (~17 min on 2 cores, 5.7 GB)
    PYTHONPATH=. python tools/bench_lookup.py --quick    # 1,000 nodes, 100 lookups (~1 min)
    PYTHONPATH=. python tools/bench_lookup.py --nodes 10000 --sections scale
    PYTHONPATH=. python tools/bench_lookup.py --nodes 10000,100000 --sections compare,compare-slow,compare-harsh,ablation
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import resource
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mainline_dht.core.contact_cache import DEFAULT_CACHE_CAPACITY, DEFAULT_HEARD_CAPACITY  # noqa: E402
from mainline_dht.core.lookup import DEFAULT_ALPHA, DEFAULT_EARLY_FINISH, DEFAULT_SOFT_TIMEOUT  # noqa: E402
from mainline_dht.runtime.node import DEFAULT_MAX_LOOKUP_QUERIES  # noqa: E402
from mainline_dht.core.protocol import DEFAULT_LOOKUP_QUERY_TIMEOUT  # noqa: E402
from mainline_dht.testing._sim import Scenario, ScenarioResult, run_scenario  # noqa: E402

#: Peak memory measured per simulated node (bytes): 100,000 nodes took 5.5 GB.
BYTES_PER_NODE = 56_000
#: Wall seconds per simulated node for one run on the reference machine (2 cores).
SECONDS_PER_NODE = 0.0013

SECTIONS = (
    "scale", "alpha", "soft", "hard", "tail", "slow", "grid", "harsh", "adversarial",
    "compare", "compare-slow", "compare-harsh", "ablation",
)

#: The lookup as it was before round trips were measured: a fixed soft timeout, no
#: cache of recently answering contacts (so nothing to seed from or rank by).
TODAY: dict[str, object] = {
    "soft_timeout": DEFAULT_SOFT_TIMEOUT,
    "adaptive_timeouts": False,
    "recent_contacts": 0,
    "heard_contacts": 0,
}
#: The new defaults, spelled out so that runs dedupe.
NEW: dict[str, object] = {
    "soft_timeout": None,
    "adaptive_timeouts": True,
    "recent_contacts": DEFAULT_CACHE_CAPACITY,
    "heard_contacts": DEFAULT_HEARD_CAPACITY,
}
#: One ingredient at a time (ablation).
RTT_ONLY: dict[str, object] = {"soft_timeout": None, "adaptive_timeouts": True, "recent_contacts": 0, "heard_contacts": 0}
CACHE_ONLY: dict[str, object] = {
    "soft_timeout": DEFAULT_SOFT_TIMEOUT,
    "adaptive_timeouts": False,
    "recent_contacts": DEFAULT_CACHE_CAPACITY,
    "heard_contacts": DEFAULT_HEARD_CAPACITY,
}
#: Client nodes that run the lookups of a warm run, and the lookups of random
#: infohashes each runs first (what fills a long-running node's cache).
WARM_CLIENTS = 20
WARMUP_LOOKUPS = 20
WARM: dict[str, object] = {"clients": WARM_CLIENTS, "warmup_lookups": WARMUP_LOOKUPS}
COLD: dict[str, object] = {"clients": None, "warmup_lookups": 0}
WARMTHS: dict[str, dict[str, object]] = {"cold": COLD, "warm": WARM}

HEADER = (
    f"{'setup':<14} {'nodes':>7} {'rtt':>4} {'alpha':>5} {'soft':>5} {'hard':>5} {'early':>5} {'sigma':>5} | "
    f"{'ok %':>6} | {'1st med':>13} {'1st p95':>13} | {'done med':>13} {'done p95':>13} | "
    f"{'q med':>5} {'q p95':>5} {'q max':>5} | {'acks':>4} | {'wall s':>6} {'RSS GB':>6}"
)


def _mem_available() -> int | None:
    """Bytes of memory available (Linux /proc/meminfo), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


class Bench:
    """Runs scenarios (each at most once) and prints one row per run."""

    def __init__(self, *, lookups: int, seed: int) -> None:
        self.lookups = lookups
        self.seed = seed
        self.results: dict[Scenario, tuple[ScenarioResult, float]] = {}

    def scenario(self, nodes: int, **changes: object) -> Scenario:
        """The benchmark scenario with every lookup setting spelled out (so runs dedupe)."""
        base = Scenario(
            nodes=nodes,
            dead_fraction=0.2,
            loss=0.05,
            median_rtt=0.1,
            sigma=0.5,
            infohashes=max(20, self.lookups // 10),
            lookups=self.lookups,
            alpha=DEFAULT_ALPHA,
            soft_timeout=None,
            adaptive_timeouts=True,
            recent_contacts=DEFAULT_CACHE_CAPACITY,
            heard_contacts=DEFAULT_HEARD_CAPACITY,
            query_timeout=DEFAULT_LOOKUP_QUERY_TIMEOUT,
            early_finish=DEFAULT_EARLY_FINISH,
            max_queries=DEFAULT_MAX_LOOKUP_QUERIES,
            seed=self.seed,
        )
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def run(self, scenario: Scenario, label: str = "") -> tuple[ScenarioResult, float]:
        cached = self.results.get(scenario)
        if cached is None:
            gc.collect()
            start = time.perf_counter()
            result = trio.run(run_scenario, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
            cached = (result, time.perf_counter() - start)
            self.results[scenario] = cached
        self.print_row(scenario, *cached, label=label)
        return cached

    @staticmethod
    def print_row(sc: Scenario, result: ScenarioResult, wall: float, label: str = "") -> None:
        s = result.summary()
        acks = sorted(result.announce_acks)
        acks_med = acks[len(acks) // 2] if acks else 0

        def t(key: str) -> str:
            return f"{s[key]:6.2f}s {s[key + '_rtts']:4.1f}R"

        soft = "rtt" if sc.soft_timeout is None else sc.soft_timeout
        print(
            f"{label:<14} {sc.nodes:>7} {sc.median_rtt:>4} {sc.alpha:>5} {soft:>5} {sc.query_timeout:>5} "
            f"{'on' if sc.early_finish else 'off':>5} {sc.sigma:>5} | "
            f"{100 * s['success']:6.1f} | {t('first_peer_median')} {t('first_peer_p95')} | "
            f"{t('done_median')} {t('done_p95')} | "
            f"{s['queries_median']:5.0f} {s['queries_p95']:5.0f} {max(o.queries for o in result.outcomes):5d} | {acks_med:>4} | "
            f"{wall:6.1f} {_peak_rss_gb():6.2f}",
            flush=True,
        )

    def section(self, title: str, scenarios: Iterable[Scenario]) -> None:
        print(f"\n## {title}\n{HEADER}", flush=True)
        for sc in scenarios:
            self.run(sc)


def _fits(nodes: int) -> str | None:
    """Why an ``nodes``-node run would not fit in memory, or None if it fits."""
    need = nodes * BYTES_PER_NODE
    avail = _mem_available()
    if avail is not None and need > 0.8 * avail:
        return (
            f"skipped {nodes:,} nodes: needs about {need / 1e9:.1f} GB "
            f"({BYTES_PER_NODE // 1000} KB per node), only {avail / 1e9:.1f} GB available"
        )
    return None


NOMINAL: dict[str, object] = {}
SLOW: dict[str, object] = {"median_rtt": 0.3, "sigma": 1.0}
HARSH: dict[str, object] = {"dead_fraction": 0.4, "loss": 0.15}


def _pair(bench: Bench, nodes: int, net: dict[str, object], warmth: dict[str, object], tag: str) -> tuple[ScenarioResult, ScenarioResult]:
    today, _ = bench.run(bench.scenario(nodes, **net, **warmth, **TODAY), f"today {tag}")
    new, _ = bench.run(bench.scenario(nodes, **net, **warmth, **NEW), f"new {tag}")
    return today, new


def compare(bench: Bench, nodes: Sequence[int], warmths: Sequence[str]) -> None:
    """Today's lookup next to the new defaults on the nominal network (see the module docstring)."""
    print(f"\n## compare: today (fixed soft timeout 0.5 s, no cache) and new (soft timeouts from RTTs, "
          f"recent-contacts cache, named-contacts cache); warm = {WARM_CLIENTS} clients after {WARMUP_LOOKUPS} lookups each\n{HEADER}", flush=True)
    for n in nodes:
        why = _fits(n)
        if why is not None:
            print(f"# {why}", flush=True)
            continue
        print(f"# nominal network, {n:,} nodes", flush=True)
        for tag in warmths:
            _pair(bench, n, NOMINAL, WARMTHS[tag], tag)


def compare_slow(bench: Bench, sweep_nodes: int, warmths: Sequence[str]) -> None:
    print(f"\n## compare: slow network (median RTT 0.3 s, sigma 1.0), {sweep_nodes:,} nodes\n{HEADER}", flush=True)
    for tag in warmths:
        _pair(bench, sweep_nodes, SLOW, WARMTHS[tag], tag)


def compare_harsh(bench: Bench, sweep_nodes: int, seeds: range, warmths: Sequence[str]) -> None:
    for tag in warmths:
        print(f"\n## compare: harsh network (40% dead, 15% loss), seeds {seeds[0]}-{seeds[-1]}, {tag}, "
              f"{sweep_nodes:,} nodes\n{HEADER}", flush=True)
        failed: dict[str, list[int]] = {"today": [], "new": []}
        worst: dict[str, float] = {"today": 1.0, "new": 1.0}
        for seed in seeds:
            pair = _pair(bench, sweep_nodes, {**HARSH, "seed": seed}, WARMTHS[tag], f"{tag} s{seed}")
            for name, result in zip(("today", "new"), pair):
                failed[name].append(sum(not o.found for o in result.outcomes))
                worst[name] = min(worst[name], result.success_rate)
        for name in ("today", "new"):
            print(f"# harsh {tag}, {name}: {sum(failed[name])} of {len(seeds) * bench.lookups} lookups failed "
                  f"(per seed: {', '.join(map(str, failed[name]))}); worst seed {100 * worst[name]:.1f}% success",
                  flush=True)


def ablation(bench: Bench, sweep_nodes: int, seed: int) -> None:
    """What the adaptive timeout and the cache each contribute, warm."""
    print(f"\n## ablation: warm, {sweep_nodes:,} nodes; today, +RTT timeouts only, +cache only, both (new)\n{HEADER}",
          flush=True)
    for name, net in (("nominal", NOMINAL), ("harsh", {**HARSH, "seed": seed})):
        print(f"# {name} network", flush=True)
        for label, setup in (("today", TODAY), ("+rtt", RTT_ONLY), ("+cache", CACHE_ONLY), ("new", NEW)):
            bench.run(bench.scenario(sweep_nodes, **net, **WARM, **setup), f"{label} warm")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", default=None, help="comma-separated network sizes for the scale section "
                        "(default 1000,10000,100000; --quick: 1000)")
    parser.add_argument("--sweep-nodes", type=int, default=None,
                        help="network size of the parameter sweeps (default 10000; --quick: 1000)")
    parser.add_argument("--lookups", type=int, default=None, help="lookups per run (default 300; --quick: 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of networks, loss and latency draws")
    parser.add_argument("--quick", action="store_true", help="small networks and fewer lookups")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--warmth", default="cold,warm",
                        help="compare sections: cold, warm or both (default cold,warm)")
    args = parser.parse_args(argv)
    if not set(x.strip() for x in args.warmth.split(",") if x.strip()) <= set(WARMTHS):
        parser.error("--warmth takes cold, warm or cold,warm")
    logging.basicConfig(level=logging.WARNING)

    nodes = [int(x) for x in (args.nodes or ("1000" if args.quick else "1000,10000,100000")).split(",")]
    sweep_nodes = args.sweep_nodes or (1000 if args.quick else 10000)
    lookups = args.lookups or (100 if args.quick else 300)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    for name in sections:
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")

    bench = Bench(lookups=lookups, seed=args.seed)
    print(
        f"# get_peers lookups: 20% dead nodes, 5% loss per datagram, median RTT 0.1 s (log-normal), "
        f"{lookups} lookups per run, seed {args.seed}\n"
        f"# defaults now: alpha {DEFAULT_ALPHA}, soft timeout from measured RTTs (rtt; {DEFAULT_SOFT_TIMEOUT} s "
        f"until measured), recent-contacts cache of {DEFAULT_CACHE_CAPACITY}, "
        f"named-contacts cache of {DEFAULT_HEARD_CAPACITY}, "
        f"hard timeout {DEFAULT_LOOKUP_QUERY_TIMEOUT} s, early_finish {DEFAULT_EARLY_FINISH}, "
        f"max queries {DEFAULT_MAX_LOOKUP_QUERIES}\n"
        f"# columns: 1st = time to first peer, done = time to completion (s, and R = median RTTs), "
        f"q = queries per lookup (max: against the cap), acks = median announce acks, wall = wall seconds of the run "
        f"(network build included), RSS = peak memory of the process so far",
        flush=True,
    )
    started = time.perf_counter()
    early_both = (False, True)

    if "scale" in sections:
        print(f"\n## scale: current defaults, early_finish off and on\n{HEADER}", flush=True)
        for n in nodes:
            why = _fits(n)
            if why is not None:
                print(f"# {why}", flush=True)
                continue
            print(f"# {n:,} nodes: expect about {n * SECONDS_PER_NODE:.0f} s wall per run", flush=True)
            for early in early_both:
                bench.run(bench.scenario(n, early_finish=early))

    sn = sweep_nodes
    if "alpha" in sections:
        bench.section(
            f"alpha (parallel queries), {sn:,} nodes",
            (bench.scenario(sn, alpha=a, early_finish=e) for e in early_both for a in (3, 5, 8, 12)),
        )
    if "soft" in sections:
        bench.section(
            f"soft timeout (s), {sn:,} nodes",
            (bench.scenario(sn, soft_timeout=x, early_finish=e) for e in early_both for x in (0.3, 0.5, 1.0)),
        )
    if "hard" in sections:
        bench.section(
            f"hard (per-query) timeout (s), {sn:,} nodes",
            (bench.scenario(sn, query_timeout=x, early_finish=e) for e in early_both for x in (1.5, 3.0, 5.0)),
        )
    if "tail" in sections:
        bench.section(
            f"heavy latency tail (sigma 1.0), soft timeout (s), {sn:,} nodes",
            (
                bench.scenario(sn, sigma=1.0, soft_timeout=x, early_finish=e)
                for e in early_both
                for x in (0.3, 0.5, 1.0)
            ),
        )
    if "slow" in sections:
        bench.section(
            f"slow network (median RTT 0.3 s, sigma 1.0), soft timeout (s), {sn:,} nodes",
            (
                bench.scenario(sn, median_rtt=0.3, sigma=1.0, soft_timeout=x, early_finish=e)
                for e in early_both
                for x in (0.3, 0.5, 1.0)
            ),
        )
    if "grid" in sections:
        bench.section(
            f"grid: alpha x soft timeout, early_finish on, nominal and slow network, {sn:,} nodes",
            (
                bench.scenario(sn, alpha=a, soft_timeout=x, early_finish=True, **net)
                for net in ({}, {"median_rtt": 0.3, "sigma": 1.0})
                for a in (5, 8, 12)
                for x in (0.3, 0.5, 1.0)
            ),
        )
    if "harsh" in sections:
        seeds = range(args.seed, args.seed + 5)
        print(f"\n## harsh network (40% dead, 15% loss), seeds {seeds[0]}-{seeds[-1]}, {sn:,} nodes\n{HEADER}")
        failures: dict[bool, list[int]] = {e: [] for e in early_both}
        for e in early_both:
            for seed in seeds:
                result, _ = bench.run(bench.scenario(sn, dead_fraction=0.4, loss=0.15, early_finish=e, seed=seed))
                failures[e].append(sum(not o.found for o in result.outcomes))
        for e in early_both:
            print(
                f"# early_finish {'on' if e else 'off'}: {sum(failures[e])} of {len(seeds) * lookups} lookups "
                f"failed (per seed: {', '.join(map(str, failures[e]))})",
                flush=True,
            )
    if "adversarial" in sections:
        print(
            "\n## adversarial: the same network without adversaries, with 10% sybils, 10% poisoners, both, "
            "and both with the /24 rule off\n"
            "  nodes   sybils poisoners  /24 rule |   ok % | 1st announced peer med  p95 | any peer med |  q med q p95 | acks | wall s",
            flush=True,
        )
        for n in nodes:
            why = _fits(n)
            if why is not None:
                print(f"# {why}", flush=True)
                continue
            for sybils, poisoners, rule in ((0.0, 0.0, True), (0.1, 0.0, True), (0.0, 0.1, True), (0.1, 0.1, True), (0.1, 0.1, False)):
                sc = bench.scenario(n, sybil_fraction=sybils, poisoner_fraction=poisoners, diversity_local=rule)
                gc.collect()
                start = time.perf_counter()
                result = trio.run(run_scenario, sc, clock=trio.testing.MockClock(autojump_threshold=0))
                wall = time.perf_counter() - start
                s = result.summary()
                acks = sorted(result.announce_acks)
                print(
                    f"{n:>7} {100 * sybils:>7.0f}% {100 * poisoners:>8.0f}% {'on' if rule else 'off':>9} | "
                    f"{100 * result.success_rate:6.1f} | {s['first_found_median']:10.2f}s {s['first_found_p95']:6.2f}s | "
                    f"{s['first_peer_median']:10.2f}s | {s['queries_median']:6.0f} {s['queries_p95']:5.0f} | "
                    f"{acks[len(acks) // 2] if acks else 0:>4} | {wall:6.1f}",
                    flush=True,
                )
    warmths = [x.strip() for x in args.warmth.split(",") if x.strip()]
    if "compare" in sections:
        compare(bench, nodes, warmths)
    if "compare-slow" in sections:
        compare_slow(bench, sn, warmths)
    if "compare-harsh" in sections:
        compare_harsh(bench, sn, range(args.seed, args.seed + 5), warmths)
    if "ablation" in sections:
        ablation(bench, sn, args.seed)
    print(f"\n# total wall time {time.perf_counter() - started:.0f} s, {len(bench.results)} runs", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
