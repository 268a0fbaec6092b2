"""The trio crawler: runs a :class:`~.policy.CrawlPolicy` on a running DHT node.

Owns: sending the queries the policy chooses through the node's public API
(:meth:`DHTNode.query`, :meth:`DHTNode.find_node`), feeding the answers back,
passive learning (``get_peers`` and ``announce_peer`` queries our node
receives, through :meth:`DHTNode.on_infohash_queried` and
:meth:`DHTNode.on_peer_announced`), the size-estimate lookups, batched writes to
a :class:`~.store.CrawlStore`, and the stream of discoveries.

Usage::

    async with open_node(("0.0.0.0", 6881)) as node:
        async with crawl(node, duration=600) as found:
            async for item in found:
                if isinstance(item, NodeFound): ...
                elif isinstance(item, InfohashFound): ...
        print(found.stats)

It decides nothing itself: whom to ask, what and when is the policy's.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final, Union

import trio

from ..core.events import InfohashQueried, PeerAnnounced
from ..errors import BootstrapError, KRPCError, LocalProtocolError, QueryTimeout
from ..runtime.node import DHTNode, collapse_single_errors
from ..wire.contact import Address, Contact
from ..wire.krpc import FindNode, SampleInfohashes
from .estimate import SizeEstimate, closest_distances, estimate_size
from .policy import CrawlLimits, CrawlPolicy, CrawlQuery, CrawlScope, QueryKind
from .store import CrawlStore, InfohashReport, NodeRecord

__all__ = ["Crawl", "CrawlStats", "Discovery", "InfohashFound", "NodeFound", "crawl"]

log = logging.getLogger(__name__)

#: Seconds between batched writes to the store.
FLUSH_INTERVAL: Final = 1.0
#: Sightings buffered before a write is due regardless of the interval.
FLUSH_BATCH: Final = 20_000
#: Lookups toward random targets at the start, for the size estimate. 32 targets
#: with 16 nodes each put the median within about +-6% (see :mod:`.estimate`).
DEFAULT_ESTIMATE_LOOKUPS: Final = 32
#: Of those, run at once.
ESTIMATE_PARALLEL: Final = 4
#: Seconds between further estimate lookups during a long crawl.
ESTIMATE_EVERY: Final = 30.0
#: Targets kept for the estimate (the newest).
ESTIMATE_TARGETS_KEPT: Final = 256
#: Nodes around each target that go into its estimate: the lookup's closest that
#: answered, joined with the nodes the crawl saw answer.
ESTIMATE_NODES: Final = 16
#: Seconds between recomputations of the estimate (it sorts every known ID).
ESTIMATE_REFRESH: Final = 2.0
#: Discoveries waiting for the reader before the crawl waits for it.
DISCOVERY_BUFFER: Final = 4096
#: Infohashes learned from received queries, waiting to be handled (a flood beyond is dropped).
PASSIVE_BUFFER: Final = 65536
#: The shortest (seconds): the budgets then hold a whole query, whatever the rounding.
MIN_SLEEP: Final = 0.001
#: The longest the main loop sleeps without looking at the clock (seconds).
MAX_SLEEP: Final = 0.5


@dataclass(frozen=True, slots=True)
class NodeFound:
    """A node answered the crawl for the first time (in this run)."""

    node_id: bytes
    addr: Address
    version: bytes | None


@dataclass(frozen=True, slots=True)
class InfohashFound:
    """An infohash the crawl had not seen before.

    Attributes:
        info_hash: the 20-byte infohash.
        source: the address of the node that sampled it to us, or of the node
            whose ``get_peers``/``announce_peer`` query taught it (``passive``).
        passive: learned from a query our node received, not from BEP 51.
    """

    info_hash: bytes
    source: Address
    passive: bool


Discovery = Union[NodeFound, InfohashFound]


@dataclass(frozen=True, slots=True)
class CrawlStats:
    """Figures of a crawl (this run).

    Attributes:
        nodes: distinct nodes that answered.
        bep51_nodes: of those, nodes that answer ``sample_infohashes``.
        infohashes: distinct infohashes seen (sampled or passive).
        passive_infohashes: of those, first seen in queries our node received.
        queries: queries our node sent (crawl, lookups and the node's own upkeep).
        crawl_queries: of those, the crawl's own ``sample_infohashes``/``find_node``.
        responses, errors, timeouts: the answers to the crawl's own queries.
        elapsed: seconds since the crawl started.
        estimate: the network's estimated size, or ``None`` before the first lookups end.
    """

    nodes: int
    bep51_nodes: int
    infohashes: int
    passive_infohashes: int
    queries: int
    crawl_queries: int
    responses: int
    errors: int
    timeouts: int
    elapsed: float
    estimate: SizeEstimate | None

    @property
    def queries_per_second(self) -> float:
        """Queries sent per second of the crawl so far (0 before any time has passed)."""
        return self.queries / self.elapsed if self.elapsed > 0 else 0.0


class Crawl:
    """A running crawl: an async iterator of :data:`Discovery` items, and its :attr:`stats`."""

    def __init__(
        self,
        node: DHTNode,
        policy: CrawlPolicy,
        store: CrawlStore | None,
        *,
        wall_clock: Callable[[], float],
        estimate_lookups: int,
        stop_when_idle: float | None,
        receive: trio.MemoryReceiveChannel[Discovery],
    ) -> None:
        self.node = node
        self.policy = policy
        self.store = store
        self._wall = wall_clock
        self._estimate_lookups = estimate_lookups
        self._stop_when_idle = stop_when_idle
        self._receive = receive
        self._error: BaseException | None = None
        self._infohashes: set[bytes] = set()
        self._passive_new = 0
        self._reports: list[InfohashReport] = []
        self._passive: deque[tuple[bytes, Address]] = deque(maxlen=PASSIVE_BUFFER)
        self._wake = trio.Event()
        self._started = trio.current_time()
        self._queries_base = node.proto.stats.queries_sent
        self._accounted = 0
        self._targets: deque[tuple[bytes, list[bytes]]] = deque(maxlen=ESTIMATE_TARGETS_KEPT)
        self._lookup_ids: set[bytes] = set()
        self._estimate: SizeEstimate | None = None
        self._estimate_at = -math.inf
        self._estimate_stale = True
        self._initial_estimates_done = estimate_lookups <= 0
        self.finished = False
        self._ended: float | None = None
        self._nodes_this_run = 0
        self._bep51_this_run = 0
        self._sampled_this_run: set[bytes] = set()
        self._answered_this_run: set[bytes] = set()
        #: Whether the node can reach IPv6 contacts (``nodes6``, BEP 32).
        self._ipv6 = node.overlay(6) is not None

    # --- the stream ---------------------------------------------------------------------

    def __aiter__(self) -> Crawl:
        return self

    async def __anext__(self) -> Discovery:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None

    @property
    def stats(self) -> CrawlStats:
        """The crawl's figures so far."""
        c = self.policy.counters
        return CrawlStats(
            nodes=self._nodes_this_run,
            bep51_nodes=self._bep51_this_run,
            infohashes=len(self._infohashes),
            passive_infohashes=self._passive_new,
            queries=self.node.proto.stats.queries_sent - self._queries_base,
            crawl_queries=c.queries,
            responses=c.responses,
            errors=c.errors,
            timeouts=c.timeouts,
            elapsed=(trio.current_time() if self._ended is None else self._ended) - self._started,
            estimate=self.estimate(),
        )

    # --- the size estimate ----------------------------------------------------------------

    def estimate(self) -> SizeEstimate | None:
        """The network's size from the estimate lookups and the nodes the crawl saw answer."""
        now = trio.current_time()
        if self._estimate_stale and now - self._estimate_at >= ESTIMATE_REFRESH and self._targets:
            ids = {n.node_id for n in self.policy.nodes.values() if n.first_seen is not None and not n.dead}
            ids |= self._lookup_ids
            ordered = sorted(int.from_bytes(i, "big") for i in ids)
            samples = [closest_distances(int.from_bytes(t, "big"), ordered, ESTIMATE_NODES) for t, _ in self._targets]
            self._estimate = estimate_size(samples)
            self._estimate_at = now
            self._estimate_stale = False
        return self._estimate

    async def _estimate_loop(self) -> None:
        rng = self.policy.rng

        async def one() -> None:
            target = rng.randbytes(20)
            closest = await self.node.find_node(target)
            self._lookup_ids.update(c.id for c in closest)
            self._targets.append((target, [c.id for c in closest]))
            self._estimate_stale = True
            self.policy.add_contacts(closest, self._wall())
            self._wake.set()

        limiter = trio.CapacityLimiter(ESTIMATE_PARALLEL)

        async def limited() -> None:
            async with limiter:
                await one()

        async with trio.open_nursery() as nursery:
            for _ in range(self._estimate_lookups):
                nursery.start_soon(limited)
        self._initial_estimates_done = True
        self._wake.set()
        while True:
            await trio.sleep(ESTIMATE_EVERY)
            await one()

    # --- steering from outside (a fleet worker) ----------------------------------------------

    def add_nodes(self, contacts: list[Contact], records: list[NodeRecord]) -> int:
        """Give the crawl nodes to visit: unverified ``contacts`` and ``records`` of
        known nodes (visited when their ``next_visit`` comes). Those outside the
        policy's scope are ignored. Returns how many were new."""
        now = self._wall()
        before = len(self.policy.nodes)
        for record in records:
            self.policy.restore(record, now)
        self.policy.add_contacts(contacts, now)
        self._wake.set()
        return len(self.policy.nodes) - before

    # --- running ----------------------------------------------------------------------------

    def _on_queried(self, event: InfohashQueried) -> None:
        self._passive.append((event.info_hash, event.addr))
        self._wake.set()

    def _on_announced(self, event: PeerAnnounced) -> None:
        self._passive.append((event.info_hash, event.peer))
        self._wake.set()

    def _charge_others(self, now: float) -> None:
        """Charge the queries our node sent outside the policy (lookups, pings) to the global budget."""
        sent = self.node.proto.stats.queries_sent - self._queries_base
        others = sent - self.policy.counters.queries
        if others > self._accounted:
            self.policy.charge(others - self._accounted, now)
            self._accounted = others

    async def _ask(self, q: CrawlQuery, send: trio.MemorySendChannel[Discovery]) -> None:
        policy = self.policy
        query = SampleInfohashes(q.target) if q.kind is QueryKind.SAMPLE else FindNode(q.target)
        try:
            resp = await self.node.query(q.addr, query, node_id=q.node_id)
        except QueryTimeout:
            policy.on_timeout(q, self._wall())
        except KRPCError as exc:
            errored = policy.on_error(q, self._wall(), exc.code)
            if errored is not None and errored.node_id not in self._answered_this_run:
                self._answered_this_run.add(errored.node_id)
                self._nodes_this_run += 1
                self._wake.set()
                await send.send(NodeFound(errored.node_id, errored.addr, errored.version))
        except LocalProtocolError as exc:  # too many queries in flight: try again later
            log.debug("cannot send to %s: %s", q.addr, exc)
            policy.on_timeout(q, self._wall())
        else:
            now = self._wall()
            nodes = resp.nodes + resp.nodes6 if resp.nodes6 and self._ipv6 else resp.nodes
            outcome = policy.on_response(
                q, now, sender_id=resp.sender_id, nodes=nodes, samples=resp.samples,
                num=resp.num, interval=resp.interval, version=resp.version,
            )
            if outcome is not None:
                node = outcome.node
                new_node = node.node_id not in self._answered_this_run
                if new_node:
                    self._answered_this_run.add(node.node_id)
                    self._nodes_this_run += 1
                    self._estimate_stale = True
                if node.bep51 is True and node.node_id not in self._sampled_this_run:
                    self._sampled_this_run.add(node.node_id)
                    self._bep51_this_run += 1
                reports = self._reports
                for h in outcome.samples:
                    reports.append(InfohashReport(h, now, node.node_id))
                self._wake.set()
                if new_node:
                    await send.send(NodeFound(node.node_id, node.addr, node.version))
                for h in outcome.samples:
                    if h not in self._infohashes:
                        self._infohashes.add(h)
                        await send.send(InfohashFound(h, q.addr, False))
                return
        self._wake.set()

    async def _drain_passive(self, send: trio.MemorySendChannel[Discovery]) -> None:
        passive = self._passive
        now = self._wall()
        while passive:
            h, source = passive.popleft()
            self._reports.append(InfohashReport(h, now, None))
            if h not in self._infohashes:
                self._infohashes.add(h)
                self._passive_new += 1
                await send.send(InfohashFound(h, source, True))

    async def flush(self) -> None:
        """Write what changed since the last flush to the store (one transaction)."""
        if self.store is None:
            self.policy.take_dirty()
            self._reports = []
            return
        nodes = self.policy.take_dirty()
        reports, self._reports = self._reports, []
        if nodes or reports:
            await trio.to_thread.run_sync(self.store.write, nodes, reports)

    async def _flush_loop(self) -> None:
        while True:
            with trio.move_on_after(FLUSH_INTERVAL):
                while len(self._reports) < FLUSH_BATCH:
                    await trio.sleep(FLUSH_INTERVAL / 10)
            await self.flush()

    async def run(self, send: trio.MemorySendChannel[Discovery]) -> None:
        """Crawl until cancelled (or idle, with ``stop_when_idle``)."""
        policy = self.policy
        node = self.node
        unsubscribe = [node.on_infohash_queried(self._on_queried), node.on_peer_announced(self._on_announced)]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._estimate_loop)
                nursery.start_soon(self._flush_loop)
                while True:
                    now = self._wall()
                    policy.exclude.add(node.node_id)  # (BEP 42 may change it during the crawl)
                    self._charge_others(now)
                    for q in policy.next_queries(now):
                        nursery.start_soon(self._ask, q, send)
                    await self._drain_passive(send)
                    if (
                        self._stop_when_idle is not None
                        and self._initial_estimates_done
                        and policy.idle(now, self._stop_when_idle)
                    ):
                        break
                    self._wake = trio.Event()
                    wake = policy.next_wakeup()
                    pause = MAX_SLEEP if wake is None else min(MAX_SLEEP, max(MIN_SLEEP, wake - now))
                    with trio.move_on_after(pause):
                        await self._wake.wait()
                nursery.cancel_scope.cancel()
        finally:
            for off in unsubscribe:
                off()


@asynccontextmanager
async def crawl(
    node: DHTNode,
    *,
    duration: float | None = None,
    rate: float = 250.0,
    store: CrawlStore | None = None,
    limits: CrawlLimits | None = None,
    estimate_lookups: int = DEFAULT_ESTIMATE_LOOKUPS,
    stop_when_idle: float | None = None,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
    scope: CrawlScope | None = None,
) -> AsyncIterator[Crawl]:
    """Crawl the DHT through ``node``: stream each new node and infohash as it is found.

    The crawl joins the network first if ``node``'s table is empty, resumes from
    ``store`` (nodes whose ``next_visit`` has not come are not asked again), and
    runs until ``duration`` passes, the ``async with`` block exits, or (with
    ``stop_when_idle``) nothing is left to do soon. The store then receives a
    last batch. ``node`` should be a full node (not read-only): the crawl answers
    the queries of the nodes it visits as any node does.

    Args:
        node: a running node.
        duration: seconds to crawl (``None``: until the block exits).
        rate: queries per second, everything our node sends together.
        store: where to keep and resume the crawl (``None``: nothing is kept).
        limits: the policy's other tunables (``rate`` overrides theirs).
        estimate_lookups: lookups toward random targets for the size estimate.
        stop_when_idle: end when nothing is due within this many seconds
            (every node visited and waiting for its ``interval``).
        rng: randomness (default ``random.SystemRandom()``).
        wall_clock: Unix time, for the visit times kept in the store.
        scope: visit only the part of the keyspace this owns (a fleet worker's
            partitions, see :mod:`.fleet`); nodes outside it are set aside
            for :meth:`CrawlPolicy.take_foreign`.

    Raises:
        BootstrapError: the node's table was empty, nothing was restored, and no
            bootstrap node answered.
        StoreError: the store failed.
    """
    rng = rng or random.SystemRandom()
    limits = replace(limits or CrawlLimits(), rate=rate)
    policy = CrawlPolicy(rng=rng, now=wall_clock(), limits=limits)
    policy.exclude.add(node.node_id)
    policy.scope = scope
    if store is not None:
        records = await trio.to_thread.run_sync(lambda: list(store.load_nodes()))
        now = wall_clock()
        for record in records:
            policy.restore(record, now)
        log.info("resuming: %d nodes from %s", len(records), store.location)
    if all(len(overlay.proto.table) == 0 for overlay in node.overlays):
        try:
            await node.bootstrap()
        except BootstrapError:
            if not policy.nodes:
                raise
            log.warning("no bootstrap node answered; crawling the %d stored nodes", len(policy.nodes))
    for overlay in node.overlays:  # both routing tables of a dual-stack node (BEP 32)
        policy.add_contacts([entry.contact for entry in overlay.proto.table], wall_clock())
    send, receive = trio.open_memory_channel[Discovery](DISCOVERY_BUFFER)
    crawler = Crawl(node, policy, store, wall_clock=wall_clock, estimate_lookups=estimate_lookups,
                    stop_when_idle=stop_when_idle, receive=receive)

    async def run() -> None:
        async with send:
            try:
                with trio.move_on_after(math.inf if duration is None else duration):
                    await crawler.run(send)
            except Exception as exc:  # handed to the reader, not into an ExceptionGroup
                crawler._error = exc
            finally:
                crawler.finished = True
                crawler._ended = trio.current_time()
                with trio.CancelScope(shield=True):
                    try:
                        await crawler.flush()
                    except Exception as exc:
                        if crawler._error is None:
                            crawler._error = exc

    async with collapse_single_errors(), trio.open_nursery() as nursery:
        nursery.start_soon(run)
        try:
            yield crawler
        finally:
            nursery.cancel_scope.cancel()
