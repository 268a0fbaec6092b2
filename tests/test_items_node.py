"""BEP 44 and BEP 33 on the trio node, over the simulated network (virtual clock).

Our nodes put and get immutable and mutable items among themselves: the item
is stored on the k closest nodes, found by another node, the highest valid
``seq`` wins, forged replies are ignored; and a scrape counts the seeds and
downloaders announced. Outcomes only, never task interleavings.
"""

from __future__ import annotations

import hashlib
import random

import pytest
import trio
import trio.testing

from mainline_dht.core import items
from mainline_dht.core.items import MutableItem
from mainline_dht.core.protocol import NodeConfig
from mainline_dht.errors import LocalProtocolError
from mainline_dht.testing import LinkModel
from mainline_dht.testing._sim import open_sim_network

VIRTUAL_LIMIT = 3600.0
SEED = bytes(range(32))
N = 60


def _closest(net, target: bytes, k: int = 8) -> set:  # type: ignore[no-untyped-def]
    ids = sorted(net.nodes, key=lambda n: int.from_bytes(n.node_id, "big") ^ int.from_bytes(target, "big"))
    return {n.local_address for n in ids[:k]}


async def test_immutable_put_then_get_from_another_node(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_sim_network(N, seed=44, link=LinkModel(median_rtt=0.1, sigma=0.0)) as net:
            writer, reader = net.nodes[0], net.nodes[-1]
            target = await writer.put_immutable(b"Hello World!")
            assert target.hex() == "e5f96f6f38320f0f33959cb4d3d656452117aadb"  # BEP 44 test vector 3
            holders = {n.local_address for n in net.nodes if target in n.proto.item_store}
            assert len(holders) >= 6 and holders <= _closest(net, target, 9) | {writer.local_address}
            found = await reader.get_immutable(target)
            assert found is not None and found.value == b"Hello World!" and found.seq is None
            assert found.source in holders
            assert await reader.get_immutable(hashlib.sha1(b"nothing").digest()) is None


async def test_mutable_put_get_update_and_salt(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_sim_network(N, seed=45, link=LinkModel(median_rtt=0.1, sigma=0.0)) as net:
            writer, reader = net.nodes[1], net.nodes[-2]
            pk = items.public_key_for(SEED)
            first = await writer.put_mutable(SEED, b"v1")
            assert first.seq == 1 and first.stored >= 6 and first.target == items.mutable_target(pk)
            found = await reader.get_mutable(pk)
            assert found is not None and (found.value, found.seq) == (b"v1", 1)
            # An update takes the next seq by itself; the reader sees only the newest.
            second = await writer.put_mutable(SEED, [1, b"two"])
            assert second.seq == 2 and second.stored >= 6
            found = await reader.get_mutable(pk)
            assert found is not None and (found.value, found.seq) == ([1, b"two"], 2)
            # A lower seq is refused everywhere (302); a stale cas too (301).
            stale = await writer.put_mutable(SEED, b"old", seq=1)
            assert stale.stored == 0 and stale.errors.get(302, 0) >= 6
            wrong_cas = await writer.put_mutable(SEED, b"v3", cas=1)
            assert wrong_cas.stored == 0 and wrong_cas.errors.get(301, 0) >= 6
            right_cas = await writer.put_mutable(SEED, b"v3", cas=2)
            assert right_cas.stored >= 6 and right_cas.seq == 3
            # Salt: another item under the same key.
            salted = await writer.put_mutable(SEED, b"salted", salt=b"foobar")
            assert salted.target == items.mutable_target(pk, b"foobar") and salted.stored >= 6
            found = await reader.get_mutable(pk, b"foobar")
            assert found is not None and found.value == b"salted"
            found = await reader.get_mutable(pk)
            assert found is not None and found.value == b"v3"


async def test_a_forged_or_older_copy_never_wins(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_sim_network(N, seed=46, link=LinkModel(median_rtt=0.1, sigma=0.0)) as net:
            writer, reader = net.nodes[2], net.nodes[-3]
            pk = items.public_key_for(SEED)
            target = items.mutable_target(pk)
            await writer.put_mutable(SEED, b"genuine", seq=5)
            holders = [n for n in net.nodes if target in n.proto.item_store]
            # A hostile holder serves a higher seq with a bad signature, another an old valid copy.
            genuine = holders[0].proto.item_store.get(target, trio.current_time())
            assert isinstance(genuine, MutableItem)
            forged = MutableItem(pk, b"7:forged!", 9, genuine.signature)
            old = MutableItem.create(SEED, b"3:old", 4)
            for store, item in ((holders[0].proto.item_store, forged), (holders[1].proto.item_store, old)):
                store._items[target] = (item, trio.current_time(), "10.0.0.1")
            result = await reader.get_item(target, public_key=pk)
            assert result.found is not None and (result.found.value, result.found.seq) == (b"genuine", 5)
            assert result.invalid >= 1
            with pytest.raises(LocalProtocolError):
                await reader.get_item(target, public_key=items.public_key_for(bytes(32)))


async def test_scrape_estimates_seeds_and_downloaders(autojump_clock: trio.testing.MockClock) -> None:
    info_hash = hashlib.sha1(b"scrape me").digest()
    with trio.fail_after(VIRTUAL_LIMIT):
        # One address per node (the simulated network gives each node its own IP).
        async with open_sim_network(N, seed=47, link=LinkModel(median_rtt=0.1, sigma=0.0)) as net:
            seeds, leechers = net.nodes[:12], net.nodes[12:32]
            for node in seeds:
                assert await node.announce(info_hash, 6881, seed=True) > 0
            for node in leechers:
                assert await node.announce(info_hash, 6881) > 0
            reader = net.nodes[-1]
            async with reader.get_peers(info_hash, scrape=True) as stream:
                async for _ in stream:
                    pass
            est = stream.scrape
            assert est is not None and est.responders >= 6
            assert abs(est.seeds - 12) <= 1.5 and abs(est.downloaders - 20) <= 2
