"""Interop with libtorrent on loopback: BEP 44 items both ways, and BEP 33 scrapes.

Issue "BEP 44 items and BEP 33 scrapes" (Interop):

- libtorrent ``dht_put_immutable_item`` -> our ``get_immutable``, and our
  ``put_immutable`` -> libtorrent ``dht_get_immutable_item``;
- the same for mutable items, with and without salt (libtorrent signs with its
  64-byte expanded secret key; we sign with the 32-byte seed it comes from);
- our scrape of peers that libtorrent sessions announced, seeds and not, gives
  estimates within the bloom filter's error of the truth; and libtorrent stores
  our ``seed`` flag (another node of ours counts us as a seed from libtorrent's filters).

Sessions come from ``tools/libtorrent_net.py``; every call into libtorrent goes
through ``trio.to_thread.run_sync``. Addresses: 127.0.64.x (items) and
127.0.65.x (scrape). Fails, never skips, when libtorrent is missing.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import trio

from libtorrent_net import LibtorrentSwarm, start_swarm
from mainline_dht.core import items
from mainline_dht.runtime.node import DHTNode, open_node
from mainline_dht.wire import bencode

pytestmark = [pytest.mark.interop]

SWARM = 10
TEST_DEADLINE = 30.0
T = TypeVar("T")


async def _lt(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


def libtorrent_secret(seed: bytes) -> bytes:
    """libtorrent's 64-byte ed25519 secret key for a 32-byte seed: SHA-512(seed), clamped."""
    h = bytearray(hashlib.sha512(seed).digest())
    h[0] &= 248
    h[31] &= 63
    h[31] |= 64
    return bytes(h)


@pytest.fixture
def swarm() -> Iterator[LibtorrentSwarm]:
    with start_swarm(SWARM, first_ip="127.0.64.1", port=0, seed=64) as sw:
        sw.wait_for_tables(min_nodes=SWARM - 2, timeout=10.0)
        yield sw


async def _join(node: DHTNode, sw: LibtorrentSwarm) -> None:
    await node.bootstrap()
    # Let every session know us, as a long-running node would be known.
    for i in range(len(sw)):
        await _lt(sw.add_node, i, node.local_address)


async def test_immutable_items_both_ways(swarm: LibtorrentSwarm) -> None:
    sw = swarm
    with trio.fail_after(TEST_DEADLINE):
        async with open_node(("127.0.64.201", 0), bootstrap=[sw.addresses[0]], rng=random.Random(1)) as node:
            await _join(node, sw)
            # libtorrent puts, we get.
            target, stored = await _lt(sw.put_immutable, 2, b"from libtorrent")
            assert stored > 0 and target == items.immutable_target(b"15:from libtorrent")
            found = await node.get_immutable(target)
            assert found is not None and found.value == b"from libtorrent"
            # A structured value too (the verbatim bencoding is what is hashed).
            target, _ = await _lt(sw.put_immutable, 5, {b"a": [1, 2, b"x"], b"b": 7})
            found = await node.get_immutable(target)
            assert found is not None and found.value == {b"a": [1, 2, b"x"], b"b": 7}
            # We put, libtorrent gets.
            ours = await node.put_immutable(b"from mainline-dht")
            assert await _lt(sw.get_immutable, 7, ours) == b"from mainline-dht"
            result = await node.put(items.ImmutableItem(bencode.encode([b"list", 3])))
            assert result.stored >= 6 and result.errors == {}
            assert await _lt(sw.get_immutable, 8, result.target) == [b"list", 3]


@pytest.mark.parametrize("salt", [b"", b"foobar"])
async def test_mutable_items_both_ways(swarm: LibtorrentSwarm, salt: bytes) -> None:
    sw = swarm
    their_seed = hashlib.sha256(b"libtorrent's key").digest()
    their_pk = items.public_key_for(their_seed)
    our_seed = hashlib.sha256(b"our key").digest()
    our_pk = items.public_key_for(our_seed)
    with trio.fail_after(TEST_DEADLINE):
        async with open_node(("127.0.64.202", 0), bootstrap=[sw.addresses[0]], rng=random.Random(2)) as node:
            await _join(node, sw)
            # libtorrent puts (seq 1, then 2), we get the newest, signature checked.
            seq, stored = await _lt(sw.put_mutable, 3, libtorrent_secret(their_seed), their_pk, b"lt v1", salt)
            assert (seq, stored > 0) == (1, True)
            seq, _ = await _lt(sw.put_mutable, 4, libtorrent_secret(their_seed), their_pk, b"lt v2", salt)
            assert seq == 2
            found = await node.get_mutable(their_pk, salt)
            assert found is not None and (found.value, found.seq) == (b"lt v2", 2)
            assert found.item.target == items.mutable_target(their_pk, salt)
            # We put (seq 1, then an update), libtorrent gets the newest.
            first = await node.put_mutable(our_seed, b"ours v1", salt=salt)
            assert first.seq == 1 and first.stored >= 6 and first.errors == {}
            assert await _lt(sw.get_mutable, 6, our_pk, salt) == (b"ours v1", 1)
            second = await node.put_mutable(our_seed, b"ours v2", salt=salt)
            assert second.seq == 2 and second.stored >= 6
            assert await _lt(sw.get_mutable, 9, our_pk, salt) == (b"ours v2", 2)
            # libtorrent refuses an older seq with BEP 44's error 302, as we do.
            stale = await node.put_mutable(our_seed, b"stale", salt=salt, seq=1)
            assert stale.stored == 0 and stale.errors.get(302, 0) >= 6
            # And it continues our sequence when it re-puts under our key.
            seq, _ = await _lt(sw.put_mutable, 1, libtorrent_secret(our_seed), our_pk, b"lt under our key", salt)
            assert seq == 3
            found = await node.get_mutable(our_pk, salt)
            assert found is not None and (found.value, found.seq) == (b"lt under our key", 3)


SCRAPE_SWARM = 24
SCRAPE_SEEDS = 8


async def test_scrape_of_peers_libtorrent_announced() -> None:
    info_hash = hashlib.sha1(b"test_interop_items scrape").digest()
    with start_swarm(SCRAPE_SWARM, first_ip="127.0.65.1", port=0, seed=65) as sw:
        await _lt(sw.wait_for_tables, 16, 10.0)
        with trio.fail_after(TEST_DEADLINE):
            for i in range(SCRAPE_SWARM):
                await _lt(lambda i=i: sw.announce(i, info_hash, 6881 + i, seed=i < SCRAPE_SEEDS))
            async with open_node(("127.0.65.201", 0), bootstrap=[sw.addresses[0]], rng=random.Random(3)) as node:
                await node.bootstrap()
                async with node.get_peers(info_hash, scrape=True) as stream:
                    async for _ in stream:
                        pass
                est = stream.scrape
                assert est is not None and est.responders >= 4
                # Every session announced from its own IP: 8 seeds and 16 downloaders. With
                # m = 2048 bits and k = 2, a few dozen entries estimate within one or two.
                assert abs(est.seeds - SCRAPE_SEEDS) <= 2, est
                assert abs(est.downloaders - (SCRAPE_SWARM - SCRAPE_SEEDS)) <= 2, est
                # Our own announce as a seed is stored as one by libtorrent.
                for i in range(len(sw)):
                    await _lt(sw.add_node, i, node.local_address)
                assert await node.announce(info_hash, 7777, seed=True) > 0
            async with open_node(("127.0.65.202", 0), bootstrap=[sw.addresses[0]], rng=random.Random(4)) as other:
                await other.bootstrap()
                async with other.get_peers(info_hash, scrape=True) as stream:
                    async for _ in stream:
                        pass
                est = stream.scrape
                assert est is not None
                assert abs(est.seeds - (SCRAPE_SEEDS + 1)) <= 2, est
