"""Whole-network scenarios on the in-memory network, under trio's virtual clock.

Owns: building an N-node DHT of real :class:`~mainline_dht.runtime.node.DHTNode`
objects over a :class:`MemoryNetwork`, announcing infohashes, running lookups
and collecting per-lookup figures.

Joining: :func:`open_sim_network` fills every routing table with the contacts a
node would have learned by bootstrapping and refreshing its buckets: for each
bucket range of the node's table, up to k random nodes of the network that fall
in it, each entered as having answered a query (``heard_from(responded=True)``),
so the table's own BEP 5 rules (splitting, per-IP limit) decide what stays. This
is the documented faster equivalent of N bootstrap lookups (N x ~50 queries);
``join="bootstrap"`` does the real thing instead, for smaller networks. Dead
nodes appear in tables (stale contacts, as on the live DHT) but never answer.

Adversaries (:mod:`._adversaries`): ``sybil_fraction`` of the nodes are one colluding
sybil group (in a few /24s of their own) and ``poisoner_fraction`` answer ``get_peers``
with junk peers. They are in the honest nodes' tables like anyone else. Honest nodes
each get an IPv4 /24 of their own (10.X.Y.h), as random hosts on the Internet would;
scenario runs apply the lookup's /24 diversity rule to these private addresses
(``NodeConfig.lookup_diversity_local``), since they stand for public ones.

Run it under ``trio.testing.MockClock(autojump_threshold=0)`` so timeouts cost
no wall time (``trio.run(..., clock=MockClock(autojump_threshold=0))``).

Determinism: every random choice is seeded from the scenario's seed, and so is
the order in which trio runs the tasks that are ready at the same instant (trio
shuffles it on purpose; see :func:`seed_trio_scheduler`). The same scenario
therefore gives the same figures on every run, whatever ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib
import logging
import math
import random
import statistics
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import trio

from ..wire.contact import Address, Contact
from ..runtime.node import DHTNode, open_node
from ..core.node_id import random_node_id
from ..core.protocol import NodeConfig
from ..core.routing_table import RoutingTable
from ._adversaries import Poisoner, Sybils, sybil_address
from ._memory_net import LinkModel, MemoryNetwork, open_memory_network

__all__ = [
    "Scenario",
    "LookupOutcome",
    "ScenarioResult",
    "SimNetwork",
    "open_sim_network",
    "run_scenario",
    "prefill_tables",
    "seed_trio_scheduler",
]

log = logging.getLogger(__name__)


def seed_trio_scheduler(seed: int | str) -> bool:
    """Make trio run simultaneously ready tasks in an order drawn from ``seed``.

    trio deliberately varies that order from run to run (so programs do not come
    to rely on it), which makes a large simulation's figures vary too. trio has
    the switch that its Hypothesis integration uses for reproducible runs: ready
    tasks are taken in creation order and then shuffled by trio's own random
    generator; this turns it on and seeds that generator. It stays on for the
    rest of the process, which only costs a sort per scheduling batch. trio
    offers no public interface for this, so a trio without it is reported and
    the simulation runs as before.

    Returns:
        Whether the scheduler is now seeded.
    """
    try:
        trio_run: object = importlib.import_module("trio._core._run")
    except ImportError:  # pragma: no cover - a trio that moved its scheduler
        trio_run = None
    scheduler_rng = getattr(trio_run, "_r", None)
    if not hasattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING") or not isinstance(scheduler_rng, random.Random):
        log.warning("this trio cannot be made to schedule deterministically; simulation figures may vary between runs")
        return False
    setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)
    scheduler_rng.seed(f"{seed}:trio-scheduler")
    return True


@dataclass(frozen=True, slots=True)
class Scenario:
    """A simulated network and the work to do on it."""

    nodes: int = 1000
    """Nodes in the network, dead ones included."""
    dead_fraction: float = 0.2
    """Share of nodes that never answer (their contacts are in others' tables)."""
    loss: float = 0.05
    """Share of datagrams lost on every link."""
    median_rtt: float = 0.1
    """Median round-trip time (seconds); one-way latency is log-normal around half of it."""
    sigma: float = 0.5
    """Spread of the one-way latency (standard deviation of its logarithm, see ``LinkModel``)."""
    infohashes: int = 20
    """Infohashes announced, each by ``announcers_per_infohash`` live nodes."""
    announcers_per_infohash: int = 1
    lookups: int = 100
    """``get_peers`` lookups run (from random live nodes, for random announced infohashes)."""
    concurrent_lookups: int = 20
    """Lookups in progress at once."""
    alpha: int | None = None
    """Lookup parallelism (``None``: the engine's default)."""
    soft_timeout: float | None = None
    """Lookup soft timeout in seconds (``None``: the engine's default)."""
    query_timeout: float | None = None
    """Lookup hard timeout in seconds (``NodeConfig.lookup_query_timeout``; ``None``: default)."""
    early_finish: bool | None = None
    """The lookup's ``early_finish`` rule (``None``: the engine's default)."""
    max_queries: int | None = None
    """Queries one lookup may send (``None``: the node's default)."""
    join: str = "prefill"
    """``"prefill"`` (fast, see the module doc) or ``"bootstrap"`` (real bootstrap lookups)."""
    seed: int = 0
    sybil_fraction: float = 0.0
    """Share of nodes that are colluding sybils (see :mod:`._adversaries`)."""
    poisoner_fraction: float = 0.0
    """Share of nodes that answer ``get_peers`` with junk peers."""
    junk_peers: int = 32
    """Junk peers per poisoner reply."""
    diversity_local: bool = True
    """``NodeConfig.lookup_diversity_local``: apply the lookup's /24 rule to the sim's
    private addresses, which stand for public ones (``False``: the rule is off here)."""
    adaptive_timeouts: bool | None = None
    """``NodeConfig.adaptive_timeouts`` (``None``: the default). A ``soft_timeout``
    given above fixes the soft timeout whatever this says."""
    recent_contacts: int | None = None
    """``NodeConfig.recent_contacts``, the size of the cache of contacts that answered
    (``None``: the default; 0: no cache)."""
    heard_contacts: int | None = None
    """``NodeConfig.heard_contacts``, the size of the cache of contacts named in
    answers (``None``: the default; 0: no such cache)."""
    clients: int | None = None
    """How many live nodes run the measured lookups (``None``: any live node, each
    lookup from a random one). With a few clients, each runs many lookups, as a
    long-running node of a torrent client does."""
    warmup_lookups: int = 0
    """``get_peers`` lookups of random, never-announced infohashes each client runs
    before the measured ones (only with ``clients``): what a node that has been up
    for a while has behind it."""


@dataclass(frozen=True, slots=True)
class LookupOutcome:
    """Figures of one ``get_peers`` lookup."""

    found: bool
    first_peer: float | None
    elapsed: float
    queries: int
    replies: int
    timeouts: int
    soft_timeouts: int = 0
    """Queries that outlived the lookup's soft timeout (answered late, failed, or left behind)."""
    first_found: float | None = None
    """Seconds to the first *announced* peer (``first_peer`` counts junk too)."""


@dataclass
class ScenarioResult:
    """Every lookup's figures, with summaries."""

    scenario: Scenario
    outcomes: list[LookupOutcome]
    announce_acks: list[int]
    packets: int
    sybil_queries: int = 0
    """Queries the sybils answered."""
    poisoner_queries: int = 0
    """Queries the poisoners answered."""

    @property
    def success_rate(self) -> float:
        return sum(o.found for o in self.outcomes) / max(1, len(self.outcomes))

    def _quantile(self, values: Sequence[float], q: float) -> float:
        if not values:
            return math.nan
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, float]:
        """Success rate, median/p95 times (seconds and median RTTs), queries per lookup."""
        firsts = [o.first_peer for o in self.outcomes if o.first_peer is not None]
        found = [o.first_found for o in self.outcomes if o.first_found is not None]
        ends = [o.elapsed for o in self.outcomes]
        queries = [o.queries for o in self.outcomes]
        rtt = self.scenario.median_rtt
        s = {
            "lookups": float(len(self.outcomes)),
            "success": self.success_rate,
            "first_peer_median": self._quantile(firsts, 0.5),
            "first_peer_p95": self._quantile(firsts, 0.95),
            "first_found_median": self._quantile(found, 0.5),
            "first_found_p95": self._quantile(found, 0.95),
            "done_median": self._quantile(ends, 0.5),
            "done_p95": self._quantile(ends, 0.95),
            "queries_median": self._quantile(queries, 0.5),
            "queries_mean": statistics.fmean(queries) if queries else math.nan,
            "queries_p95": self._quantile(queries, 0.95),
        }
        for key in ("first_peer_median", "first_peer_p95", "first_found_median", "first_found_p95", "done_median", "done_p95"):
            s[key + "_rtts"] = s[key] / rtt
        return s


@dataclass
class SimNetwork:
    """A running simulated DHT."""

    net: MemoryNetwork
    nodes: list[DHTNode]
    """The live nodes."""
    dead: list[Contact]
    """Contacts that never answer."""
    contacts: list[Contact] = field(default_factory=list)
    """Every node, live and dead, adversaries included."""
    sybils: Sybils | None = None
    """The sybil group, if any."""
    poisoners: list[Poisoner] = field(default_factory=list)


def prefill_tables(nodes: Sequence[DHTNode], everyone: Sequence[Contact], *, rng: random.Random, now: float) -> None:
    """Fill each node's routing table as bootstrapping and bucket refreshes would.

    For each bucket-sized ID range around a node's own ID (sharing d leading bits
    with it, differing at bit d), up to k random members of ``everyone`` in that
    range are offered to the table as nodes that answered a query.
    """
    ordered = sorted(everyone, key=lambda c: c.id)
    ids = [int.from_bytes(c.id, "big") for c in ordered]
    for node in nodes:
        _prefill_one(node.proto.table, ordered, ids, rng=rng, now=now)


def _prefill_one(table: RoutingTable, ordered: Sequence[Contact], ids: Sequence[int], *, rng: random.Random, now: float) -> None:
    """Offer ``table`` up to k members of ``ordered`` per bucket range (see :func:`prefill_tables`)."""
    k = table.k
    own = int.from_bytes(table.own_id, "big")
    for depth in range(160):
        shift = 159 - depth
        # IDs that share `depth` leading bits with ours and differ at the next bit.
        prefix = (own >> shift) ^ 1
        lo = prefix << shift
        hi = lo + (1 << shift)
        i, j = bisect.bisect_left(ids, lo), bisect.bisect_left(ids, hi)
        if j > i:
            for index in rng.sample(range(i, j), min(k, j - i)):
                table.heard_from(ordered[index], now, responded=True)
        # Stop once no one else shares our prefix this deep.
        same_lo = (own >> shift) << shift
        a, b = bisect.bisect_left(ids, same_lo), bisect.bisect_left(ids, same_lo + (1 << shift))
        if b - a <= 1:
            break


#: Nodes that join one at a time before the rest join in parallel (as localnet does).
_FIRST_WAVE = 16


def _address(i: int) -> Address:
    # 10.0.0.0/8 addresses, memory only: the in-memory network never touches a socket.
    # A /24 per node (65,536 of them; then the host byte goes on), as random hosts
    # on the Internet would be; 10.254/16 and 10.255/16 are left for junk peers.
    host, net = divmod(i, 254 * 256)
    return (f"10.{net // 256}.{net % 256}.{host + 1}", 6881)


@asynccontextmanager
async def open_sim_network(
    n: int,
    *,
    seed: int = 0,
    link: LinkModel | None = None,
    dead_fraction: float = 0.0,
    config: NodeConfig | None = None,
    join: str = "prefill",
    config_for: Callable[[int], NodeConfig | None] | None = None,
    sybil_fraction: float = 0.0,
    poisoner_fraction: float = 0.0,
    junk_peers: int = 32,
) -> AsyncIterator[SimNetwork]:
    """Build and run an ``n``-node DHT on an in-memory network.

    Args:
        n: nodes, dead ones included.
        seed: seeds the network's and every node's randomness (node ``i`` gets
            ``random.Random(f"{seed}:{i}")``).
        link: latency, loss and duplication of every link.
        dead_fraction: share of nodes that never answer.
        config: protocol settings of every live node.
        join: ``"prefill"`` or ``"bootstrap"`` (see the module docstring).
        config_for: node index -> its settings, for a network of mixed clients
            (overrides ``config``; ``None`` from it means the default settings).
        sybil_fraction: share of nodes that are one colluding sybil group.
        poisoner_fraction: share of nodes that answer ``get_peers`` with junk peers.
        junk_peers: junk peers per poisoner reply.
    """
    seed_trio_scheduler(seed)
    rng = random.Random(f"{seed}:net")
    async with open_memory_network(rng=rng, link=link or LinkModel()) as net, AsyncExitStack() as stack:
        contacts = []
        for i in range(n):
            addr = _address(i + 1)
            contacts.append(Contact(random_node_id(random.Random(f"{seed}:{i}:id")), addr))
        dead_count = int(round(n * dead_fraction))
        dead_idx = set(rng.sample(range(1, n), min(dead_count, n - 1))) if dead_count else set()
        # Adversaries: drawn from their own stream, so the rest of the network is the
        # same network with or without them.
        adv_rng = random.Random(f"{seed}:adversaries")
        alive = [i for i in range(1, n) if i not in dead_idx]
        sybil_count = min(len(alive), int(round(n * sybil_fraction)))
        poisoner_count = min(len(alive) - sybil_count, int(round(n * poisoner_fraction)))
        chosen = adv_rng.sample(alive, sybil_count + poisoner_count)
        sybil_idx = chosen[:sybil_count]
        poisoner_idx = set(chosen[sybil_count:])
        for j, i in enumerate(sorted(sybil_idx)):
            contacts[i] = Contact(contacts[i].id, sybil_address(j))
        sybil_set = set(sybil_idx)
        sybils = Sybils([contacts[i] for i in sorted(sybil_idx)], rng=random.Random(f"{seed}:sybils")) if sybil_idx else None
        adversaries = await stack.enter_async_context(trio.open_nursery())
        stack.callback(adversaries.cancel_scope.cancel)
        nodes: list[DHTNode] = []
        dead: list[Contact] = []
        poisoners: list[Poisoner] = []
        for i, contact in enumerate(contacts):
            if i in dead_idx:
                net.set_dead(contact.addr, True)
                dead.append(contact)
                continue
            if i in sybil_set:
                assert sybils is not None
                adversaries.start_soon(sybils.serve, net.open_transport(contact.addr), contact)
                continue
            if i in poisoner_idx:
                table = RoutingTable(contact.id, now=trio.current_time())
                poisoner = Poisoner(contact, table, rng=random.Random(f"{seed}:{i}:poison"), junk_peers=junk_peers)
                poisoners.append(poisoner)
                adversaries.start_soon(poisoner.serve, net.open_transport(contact.addr))
                continue
            transport = net.open_transport(contact.addr)
            node = await stack.enter_async_context(
                open_node(
                    transport=transport,
                    node_id=contact.id,
                    bootstrap=(),
                    config=config if config_for is None else config_for(i),
                    rng=random.Random(f"{seed}:{i}"),
                )
            )
            nodes.append(node)
        sim = SimNetwork(net, nodes, dead, contacts, sybils, poisoners)
        if join == "prefill":
            prefill_tables(nodes, contacts, rng=rng, now=trio.current_time())
            if poisoners:
                ordered = sorted(contacts, key=lambda c: c.id)
                ids = [int.from_bytes(c.id, "big") for c in ordered]
                for poisoner in poisoners:
                    _prefill_one(poisoner.table, ordered, ids, rng=adv_rng, now=trio.current_time())
        elif join == "bootstrap":
            first = nodes[0]
            limiter = trio.CapacityLimiter(64)

            async def join_one(node: DHTNode) -> None:
                async with limiter:
                    node.bootstrap_nodes = (first.local_address,)
                    await node.bootstrap()

            # The first few join one by one, so the first node's table holds someone
            # for the next to learn of (all at once, they would each find only the
            # first node and stop there); the rest join in parallel.
            for node in nodes[1:_FIRST_WAVE]:
                await join_one(node)
            async with trio.open_nursery() as nursery:
                for node in nodes[_FIRST_WAVE:]:
                    nursery.start_soon(join_one, node)
        else:
            raise ValueError(f"join must be 'prefill' or 'bootstrap', not {join!r}")
        yield sim


async def run_scenario(scenario: Scenario) -> ScenarioResult:
    """Build the scenario's network, announce, run the lookups; return the figures."""
    link = LinkModel(median_rtt=scenario.median_rtt, sigma=scenario.sigma, loss=scenario.loss)
    lookup_options: dict[str, object] = {}
    if scenario.alpha is not None:
        lookup_options["alpha"] = scenario.alpha
    if scenario.soft_timeout is not None:
        lookup_options["soft_timeout"] = scenario.soft_timeout
    if scenario.early_finish is not None:
        lookup_options["early_finish"] = scenario.early_finish
    if scenario.max_queries is not None:
        lookup_options["max_queries"] = scenario.max_queries
    # The sim's private addresses stand for public ones: the /24 diversity rule applies.
    config_options: dict[str, object] = {"lookup_diversity_local": scenario.diversity_local}
    if scenario.query_timeout is not None:
        config_options["lookup_query_timeout"] = scenario.query_timeout
    if scenario.adaptive_timeouts is not None:
        config_options["adaptive_timeouts"] = scenario.adaptive_timeouts
    if scenario.recent_contacts is not None:
        config_options["recent_contacts"] = scenario.recent_contacts
    if scenario.heard_contacts is not None:
        config_options["heard_contacts"] = scenario.heard_contacts
    config = NodeConfig(**config_options)  # type: ignore[arg-type]
    rng = random.Random(f"{scenario.seed}:scenario")
    async with open_sim_network(
        scenario.nodes,
        seed=scenario.seed,
        link=link,
        dead_fraction=scenario.dead_fraction,
        config=config,
        join=scenario.join,
        sybil_fraction=scenario.sybil_fraction,
        poisoner_fraction=scenario.poisoner_fraction,
        junk_peers=scenario.junk_peers,
    ) as sim:
        nodes = sim.nodes
        hashes = [hashlib.sha1(f"{scenario.seed}:{i}".encode()).digest() for i in range(scenario.infohashes)]
        expected: dict[bytes, set[Address]] = {}
        acks: list[int] = []

        async def announce(node: DHTNode, info_hash: bytes, port: int) -> None:
            # Announce after a lookup with the scenario's options, as a node with
            # those defaults would.
            async with node.get_peers(info_hash, **lookup_options) as stream:
                async for _ in stream:
                    pass
            acks.append(await node.announce(info_hash, port, stream=stream))

        async with trio.open_nursery() as nursery:
            for h in hashes:
                for node in rng.sample(nodes, scenario.announcers_per_infohash):
                    port = rng.randrange(1024, 65535)
                    expected.setdefault(h, set()).add((node.local_address[0], port))
                    nursery.start_soon(announce, node, h, port)
        outcomes: list[LookupOutcome] = []
        limiter = trio.CapacityLimiter(scenario.concurrent_lookups)
        clients = nodes if scenario.clients is None else rng.sample(nodes, min(scenario.clients, len(nodes)))
        if scenario.clients is not None and scenario.warmup_lookups > 0:

            async def warm_up(node: DHTNode, info_hash: bytes) -> None:
                async with limiter:
                    async with node.get_peers(info_hash, **lookup_options) as stream:
                        async for _ in stream:
                            pass

            async with trio.open_nursery() as nursery:
                for node in clients:
                    for _ in range(scenario.warmup_lookups):
                        nursery.start_soon(warm_up, node, rng.randbytes(20))

        async def lookup(node: DHTNode, info_hash: bytes) -> None:
            async with limiter:
                found = False
                first_found: float | None = None
                start = trio.current_time()
                async with node.get_peers(info_hash, **lookup_options) as stream:
                    async for peer in stream:
                        if peer in expected[info_hash]:
                            if not found:
                                first_found = trio.current_time() - start
                            found = True
                st = stream.stats
                outcomes.append(
                    LookupOutcome(
                        found=found,
                        first_peer=st.time_to_first_peer,
                        elapsed=st.elapsed or 0.0,
                        queries=st.queries,
                        replies=st.replies,
                        timeouts=st.timeouts,
                        soft_timeouts=st.soft_timeouts,
                        first_found=first_found,
                    )
                )

        async with trio.open_nursery() as nursery:
            for _ in range(scenario.lookups):
                nursery.start_soon(lookup, rng.choice(clients), rng.choice(hashes))
        return ScenarioResult(
            scenario,
            outcomes,
            acks,
            sim.net.stats.sent,
            sybil_queries=sim.sybils.queries if sim.sybils is not None else 0,
            poisoner_queries=sum(p.queries for p in sim.poisoners),
        )
