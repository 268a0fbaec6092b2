"""Crawling libtorrent, the reference DHT, on loopback (issue: the crawler, Interop).

A swarm of libtorrent sessions on 127.0.85.x keeps libtorrent's default per-IP
rate limit (``dht_block_ratelimit`` 5: an IP that sends 50 queries in 10 s is
ignored for ``dht_block_timeout``). Some sessions announce infohashes, which the
sessions closest to them store. Our crawler, a full node on 127.0.85.201, must
find every session and every announced infohash, and still be answered by every
session afterwards (a banned IP would not be). libtorrent calls go through
``trio.to_thread.run_sync``; the test fails (never skips) when libtorrent is missing
in CI, as the other interop tests do.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio

from libtorrent_net import libtorrent_available, start_swarm
from mainline_dht.crawl.crawler import InfohashFound, NodeFound, crawl
from mainline_dht.runtime.node import open_node

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not libtorrent_available(), reason="libtorrent is not installed: pip install libtorrent"),
]

SWARM = 16
T = TypeVar("T")


async def _lt(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


async def test_crawl_finds_every_libtorrent_session_and_infohash_without_a_ban() -> None:
    settings = {"dht_block_ratelimit": 5, "dht_block_timeout": 300}
    hashes = [hashlib.sha1(f"test_interop_crawl {i}".encode()).digest() for i in range(6)]
    with start_swarm(SWARM, first_ip="127.0.85.1", port=0, seed=85, settings=settings) as sw:
        await _lt(sw.wait_for_tables, 12, 10.0)
        assert all(sw.session(i).get_settings()["dht_block_ratelimit"] == 5 for i in range(len(sw)))
        for i, h in enumerate(hashes):
            await _lt(sw.announce, i, h, 6000 + i)
        with trio.fail_after(60):
            async with open_node(("127.0.85.201", 0), bootstrap=(sw.addresses[0],), rng=random.Random(85)) as node:
                found: set[tuple[str, int]] = set()
                infohashes: set[bytes] = set()
                async with crawl(node, stop_when_idle=120.0, estimate_lookups=4, rng=random.Random(1)) as stream:
                    async for item in stream:
                        if isinstance(item, NodeFound):
                            found.add(item.addr)
                        elif isinstance(item, InfohashFound):
                            infohashes.add(item.info_hash)
                assert found >= set(sw.addresses)
                assert infohashes >= set(hashes)
                stats = stream.stats
                assert stats.bep51_nodes >= SWARM  # libtorrent answers sample_infohashes
                assert stats.queries >= 2 * SWARM
                for addr in sw.addresses:
                    await node.ping(addr, timeout=2.0)  # a banned node would time out here
