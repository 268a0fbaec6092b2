"""The metadata harvester a crawler feeds: rate, concurrency, queue and memory bounds,
with a scripted fetch under trio's virtual clock; and one real fetch from a fake peer."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from mainline_dht.errors import MetadataNotFound
from mainline_dht.metadata.harvest import MetadataHarvester
from mainline_dht.metadata.info import TorrentInfo, parse_info_untrusted
from mainline_dht.runtime.localnet import open_local_network

from fake_peers import FakePeer, info_hash_of, make_info

INFO = make_info(b"harvested", files=2, size=1000)
IH = info_hash_of(INFO)


class ScriptedFetch:
    """Takes 2 virtual seconds per fetch; infohashes starting with 0xff have no metadata."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.running = 0
        self.most = 0

    async def __call__(self, node: Any, info_hash: bytes, **options: Any) -> TorrentInfo:
        self.starts.append(trio.current_time())
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await trio.sleep(2.0)
            if info_hash[0] == 0xFF:
                raise MetadataNotFound("none")
            return parse_info_untrusted(INFO, info_hash)
        finally:
            self.running -= 1


async def test_rate_and_concurrency_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    fetch = ScriptedFetch()
    harvester = MetadataHarvester(None, rate=4.0, concurrency=3, fetch=fetch)
    got: list[bytes] = []

    async def on_torrent(info: TorrentInfo) -> None:
        got.append(info.info_hash)

    hashes = [bytes([i]) * 20 for i in range(10)] + [b"\xff" * 20]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(harvester.run, on_torrent)
        for h in hashes:
            assert harvester.offer(h)
        assert not harvester.offer(hashes[0])  # offered before
        assert not harvester.offer(b"short")
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert sorted(got) == sorted(hashes[:10])
    assert harvester.stats.found == 10 and harvester.stats.not_found == 1 and harvester.stats.started == 11
    assert fetch.most == 3
    gaps = [b - a for a, b in zip(fetch.starts, fetch.starts[1:])]
    assert min(gaps) >= 0.25 - 1e-9  # 4 a second at most


async def test_a_full_queue_drops_offers_and_memory_forgets_the_oldest(autojump_clock: trio.testing.MockClock) -> None:
    harvester = MetadataHarvester(None, queue_size=2, memory=3, fetch=ScriptedFetch())
    assert harvester.offer(b"\x01" * 20) and harvester.offer(b"\x02" * 20)
    assert not harvester.offer(b"\x03" * 20)  # queue full, not run yet
    assert harvester.stats.dropped == 1 and harvester.stats.offered == 2
    async with trio.open_nursery() as nursery:
        async def ignore(info: TorrentInfo) -> None:
            pass

        nursery.start_soon(harvester.run, ignore)
        await trio.sleep(10)
        assert harvester.offer(b"\x03" * 20) and harvester.offer(b"\x04" * 20)
        assert harvester.offer(b"\x01" * 20)  # forgotten: memory holds 3
        nursery.cancel_scope.cancel()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        MetadataHarvester(None, rate=0)


async def test_harvests_from_a_real_peer_found_in_the_dht() -> None:
    with trio.fail_after(30):
        async with open_local_network(4, seed=78, base=("127.0.78.1", 0)) as lnet:
            async with trio.open_nursery() as nursery:
                announcer = lnet.nodes[1]
                peer = FakePeer(INFO)
                addr = await nursery.start(peer.serve, announcer.local_address[0])
                assert await announcer.announce(IH, addr[1]) > 0
                harvester = MetadataHarvester(lnet.nodes[3], timeout=10.0)
                done = trio.Event()
                got: list[TorrentInfo] = []

                async def on_torrent(info: TorrentInfo) -> None:
                    got.append(info)
                    done.set()

                nursery.start_soon(harvester.run, on_torrent)
                harvester.offer(IH)
                await done.wait()
                assert got[0].name == "harvested" and got[0].info == INFO and got[0].source == addr
                nursery.cancel_scope.cancel()
