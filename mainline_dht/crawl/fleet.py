"""A crawler that is one worker of a fleet sharing a PostgreSQL database.

Owns: a worker's life in the fleet: its heartbeat, the partitions it leases
(:meth:`.postgres_store.PostgresStore.lease`), the scope that confines its crawl
to them, handing the nodes it learns outside them to the frontier, and taking
the frontier's and the database's nodes of its own partitions. There is no
coordinator: the database decides who holds what.

Usage::

    async with open_node(("0.0.0.0", 6881)) as node:
        store = PostgresStore("postgresql://crawler@db/dht")
        async with crawl_as_worker(node, store, "worker-1", duration=3600) as found:
            async for item in found:
                ...

Safety: a worker visits a partition only while its lease is surely valid. The
scope answers "not mine" for everything once ``lease_ttl - LEASE_MARGIN``
seconds have passed since the last successful lease call began (a stalled or
cut-off worker stops by itself before its lease can pass to another), and at
once when a lease call fails.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import trio

from ..runtime.node import DHTNode, collapse_single_errors
from ..wire.contact import Contact
from .crawler import DEFAULT_ESTIMATE_LOOKUPS, Crawl, crawl
from .policy import CrawlLimits
from .postgres_store import PostgresStore
from .store import StoreError

__all__ = [
    "DEFAULT_LEASE_TTL",
    "FleetWorker",
    "PartitionScope",
    "crawl_as_worker",
    "default_worker_name",
]

log = logging.getLogger(__name__)

#: Seconds a lease lasts; a worker renews it three times within.
DEFAULT_LEASE_TTL: Final = 60.0
#: Seconds before a lease's end at which a worker stops visiting its partitions
#: if it could not renew (clock drift and a slow last query).
LEASE_MARGIN: Final = 0.2
#: Seconds between exchanges with the frontier (nodes out, nodes in).
EXCHANGE_INTERVAL: Final = 2.0
#: Frontier nodes taken in one exchange at most.
FRONTIER_BATCH: Final = 5000


def default_worker_name() -> str:
    """``<host name>``: one worker per machine unless ``--worker-name`` says otherwise."""
    return socket.gethostname() or "worker"


class PartitionScope:
    """The partitions a worker holds, as a :class:`~.policy.CrawlScope`.

    Args:
        clock: a monotonic clock (seconds) for the validity deadline.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: frozenset[int] = frozenset()
        self._ordered: list[int] = []
        self._valid_until = -math.inf

    @property
    def held(self) -> frozenset[int]:
        """The partitions held, while the lease is valid (else none)."""
        return self._held if self._clock() < self._valid_until else frozenset()

    def update(self, held: frozenset[int], valid_until: float) -> None:
        """Hold ``held`` until ``valid_until`` (on :attr:`clock`'s time line)."""
        self._held = held
        self._ordered = sorted(held)
        self._valid_until = valid_until

    def clear(self) -> None:
        """Hold nothing (a lease call failed)."""
        self.update(frozenset(), -math.inf)

    def owns(self, node_id: bytes) -> bool:
        return node_id[0] in self._held and self._clock() < self._valid_until

    def random_target(self, rng: random.Random) -> bytes | None:
        if not self._ordered or self._clock() >= self._valid_until:
            return None
        return bytes([rng.choice(self._ordered)]) + rng.randbytes(19)


@dataclass(slots=True)
class FleetWorker:
    """A running worker: the crawl, and its standing in the fleet."""

    name: str
    crawl: Crawl
    scope: PartitionScope
    lease_calls: int = 0
    lease_failures: int = 0
    frontier_out: int = 0
    frontier_in: int = 0


@asynccontextmanager
async def crawl_as_worker(
    node: DHTNode,
    store: PostgresStore,
    name: str,
    *,
    duration: float | None = None,
    rate: float = 250.0,
    limits: CrawlLimits | None = None,
    estimate_lookups: int = DEFAULT_ESTIMATE_LOOKUPS,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    exchange_interval: float = EXCHANGE_INTERVAL,
    rng: random.Random | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[FleetWorker]:
    """Crawl as worker ``name`` of the fleet sharing ``store``.

    Takes the worker's share of the partitions, crawls only the nodes in them
    (see :func:`.crawler.crawl` for the stream and its figures), renews its
    leases every ``lease_ttl / 3`` seconds (taking more when workers leave and
    giving some back when workers join), writes the nodes it learns outside
    its partitions to the frontier and visits the frontier's nodes of its own.
    On exit it gives its partitions back.

    Raises:
        StoreError: the first lease could not be taken.
        BootstrapError: as :func:`.crawler.crawl`.
    """
    scope = PartitionScope()
    address = "%s:%d" % node.local_address[:2]

    async def lease() -> None:
        started = time.monotonic()
        await trio.to_thread.run_sync(lambda: store.heartbeat(name, address=address))
        got = await trio.to_thread.run_sync(lambda: store.lease(name, ttl=lease_ttl, live_within=lease_ttl))
        scope.update(got.partitions, started + lease_ttl - LEASE_MARGIN)

    await lease()
    log.info("worker %s holds %d partitions", name, len(scope.held))
    async with crawl(node, duration=duration, rate=rate, store=store, limits=limits,
                     estimate_lookups=estimate_lookups, rng=rng, wall_clock=wall_clock, scope=scope) as found:
        worker = FleetWorker(name, found, scope, lease_calls=1)

        async def lease_loop() -> None:
            while True:
                await trio.sleep(lease_ttl / 3)
                before = scope.held
                try:
                    await lease()
                except StoreError as exc:
                    worker.lease_failures += 1
                    scope.clear()
                    log.warning("worker %s cannot renew its leases (%s); pausing its crawl", name, exc)
                    continue
                worker.lease_calls += 1
                gained = scope.held - before
                if gained:
                    records = await trio.to_thread.run_sync(lambda: list(store.load_nodes(gained)))
                    found.add_nodes([], records)
                if gained or before - scope.held:
                    log.info("worker %s holds %d partitions (%d new)", name, len(scope.held), len(gained))
                s = found.stats
                try:
                    await trio.to_thread.run_sync(
                        lambda: store.heartbeat(name, address=address, queries=s.queries, nodes=s.nodes,
                                                infohashes=s.infohashes))
                except StoreError as exc:
                    log.warning("worker %s: %s", name, exc)

        async def exchange_loop() -> None:
            while True:
                await trio.sleep(exchange_interval)
                outgoing = found.policy.take_foreign()
                try:
                    if outgoing:
                        worker.frontier_out += await trio.to_thread.run_sync(store.add_frontier, outgoing)
                    held = scope.held
                    incoming = await trio.to_thread.run_sync(store.take_frontier, held, FRONTIER_BATCH)
                except StoreError as exc:
                    log.warning("worker %s: frontier exchange failed: %s", name, exc)
                    continue
                worker.frontier_in += found.add_nodes([Contact(i, a) for i, a in incoming], [])

        try:
            async with collapse_single_errors(), trio.open_nursery() as nursery:
                nursery.start_soon(lease_loop)
                nursery.start_soon(exchange_loop)
                try:
                    yield worker
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                scope.clear()
                s = found.stats
                try:
                    await trio.to_thread.run_sync(
                        lambda: store.heartbeat(name, address=address, queries=s.queries, nodes=s.nodes,
                                                infohashes=s.infohashes))
                    await trio.to_thread.run_sync(store.add_frontier, found.policy.take_foreign())
                    await trio.to_thread.run_sync(store.release, name)
                except StoreError as exc:
                    log.warning("worker %s could not give its partitions back (%s); they expire", name, exc)
