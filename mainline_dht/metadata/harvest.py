"""Fetching the metadata of many infohashes at a bounded rate, for crawlers.

Owns: :class:`MetadataHarvester`, a queue of infohashes that a crawler offers
as it finds them, and the task that fetches their info dictionaries (with
:func:`~.fetcher.fetch_metadata`) at most ``rate`` new fetches a second and
``concurrency`` at a time. Every bound is explicit: the queue drops offers
when full, and the memory of infohashes already offered is capped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

from ..errors import DHTError
from .fetcher import fetch_metadata
from .info import DEFAULT_MAX_METADATA_SIZE, TorrentInfo

__all__ = ["MetadataHarvester", "HarvestStats", "DEFAULT_HARVEST_RATE", "DEFAULT_HARVEST_CONCURRENCY"]

log = logging.getLogger(__name__)

#: New fetches started per second, by default. Each fetch is a DHT lookup (tens
#: of queries) and a few TCP connections, so this is the crawler's politeness knob.
DEFAULT_HARVEST_RATE: Final = 1.0
#: Fetches in progress at once, by default.
DEFAULT_HARVEST_CONCURRENCY: Final = 4
#: Seconds one fetch may take, lookup included.
DEFAULT_HARVEST_TIMEOUT: Final = 30.0
#: Infohashes waiting for a fetch; further offers are dropped (and counted).
DEFAULT_QUEUE_SIZE: Final = 10_000
#: Infohashes remembered as offered (so each is fetched once); the oldest are forgotten.
DEFAULT_MEMORY: Final = 1_000_000

Fetch = Callable[..., Awaitable[TorrentInfo]]


@dataclass(slots=True)
class HarvestStats:
    """Counters of a harvester.

    Attributes:
        offered: distinct infohashes offered.
        dropped: offers refused because the queue was full.
        started: fetches started.
        found: fetches that returned a verified dictionary.
        not_found: fetches that ended without one.
    """

    offered: int = 0
    dropped: int = 0
    started: int = 0
    found: int = 0
    not_found: int = 0


class MetadataHarvester:
    """Fetch the metadata of infohashes offered one by one, politely.

    Usage::

        harvester = MetadataHarvester(node, rate=2.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(harvester.run, on_torrent)
            harvester.offer(info_hash)   # from the crawl, as it finds them

    Args:
        node: a running :class:`~mainline_dht.runtime.node.DHTNode`.
        rate: new fetches per second, at most.
        concurrency: fetches at once, at most.
        timeout: seconds per fetch.
        max_size: the largest info dictionary accepted (bytes).
        queue_size: offers waiting at most.
        memory: infohashes remembered as already offered.
        fetch: the fetch function (tests pass their own); called as
            ``fetch(node, info_hash, timeout=..., max_size=...)``.
    """

    def __init__(
        self,
        node: Any,
        *,
        rate: float = DEFAULT_HARVEST_RATE,
        concurrency: int = DEFAULT_HARVEST_CONCURRENCY,
        timeout: float = DEFAULT_HARVEST_TIMEOUT,
        max_size: int = DEFAULT_MAX_METADATA_SIZE,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        memory: int = DEFAULT_MEMORY,
        fetch: Fetch = fetch_metadata,
    ) -> None:
        if not rate > 0 or concurrency < 1 or queue_size < 1 or memory < 1:
            raise ValueError("rate, concurrency, queue_size and memory must be positive")
        self.node = node
        self.rate = rate
        self.timeout = timeout
        self.max_size = max_size
        self.stats = HarvestStats()
        self._fetch = fetch
        self._slots = trio.Semaphore(concurrency)
        self._send, self._receive = trio.open_memory_channel[bytes](queue_size)
        self._seen: dict[bytes, None] = {}  # insertion-ordered: the oldest go first
        self._memory = memory

    def offer(self, info_hash: bytes) -> bool:
        """Queue ``info_hash`` for a fetch, unless it was offered before or the queue is full.

        Never blocks. Returns whether it was queued.
        """
        if len(info_hash) != 20 or info_hash in self._seen:
            return False
        try:
            self._send.send_nowait(info_hash)
        except trio.WouldBlock:
            self.stats.dropped += 1
            return False
        self._seen[info_hash] = None
        if len(self._seen) > self._memory:
            del self._seen[next(iter(self._seen))]
        self.stats.offered += 1
        return True

    async def run(self, on_torrent: Callable[[TorrentInfo], Awaitable[None]]) -> None:
        """Fetch queued infohashes until cancelled; hand each verified result to ``on_torrent``.

        ``on_torrent`` runs in the harvester's tasks; an exception from it
        ends the harvest (a store that cannot be written should stop the crawl).
        """
        interval = 1.0 / self.rate
        async with trio.open_nursery() as nursery:
            next_start = trio.current_time()
            async for info_hash in self._receive:
                await trio.sleep_until(next_start)
                await self._slots.acquire()
                next_start = trio.current_time() + interval
                self.stats.started += 1
                nursery.start_soon(self._one, info_hash, on_torrent)

    async def _one(self, info_hash: bytes, on_torrent: Callable[[TorrentInfo], Awaitable[None]]) -> None:
        try:
            try:
                info = await self._fetch(self.node, info_hash, timeout=self.timeout, max_size=self.max_size)
            except DHTError as exc:
                log.debug("no metadata for %s: %s", info_hash.hex(), exc)
                self.stats.not_found += 1
                return
            self.stats.found += 1
            await on_torrent(info)
        finally:
            self._slots.release()
