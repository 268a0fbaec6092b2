"""Interop with libtorrent, the reference DHT, on loopback.

Issue "The trio node" (Interop): our node queries libtorrent sessions with every
BEP 5/51 query and checks their replies; libtorrent queries us (lookups,
liveness checks, announce_peer with our tokens, sample_infohashes, bootstrap)
and accepts our replies; our node ends up in their routing tables.

Issue "The get_peers lookup engine" (Interop): on a loopback network of 32
libtorrent sessions, the real ``mainline-dht peers`` command finds the peers
libtorrent announced, and libtorrent's own ``dht_get_peers`` finds a peer our
node announced.

libtorrent sessions are set up by :mod:`mainline_dht.testing.libtorrent_net`:
explicit ``listen_interfaces`` on 127.0.x.y (free ports), ``dht_restrict_routing_ips``
and ``dht_restrict_search_ips`` off (every node shares 127.0.0.0/8) and
``dht_block_ratelimit`` raised. libtorrent is synchronous, so every call into it
from trio goes through ``trio.to_thread.run_sync``. The tests skip, with the
reason, only when libtorrent cannot be imported.

One test keeps libtorrent's default per-IP rate limit instead, to show that our
node's join and lookups stay under it.

Addresses: 127.0.60.x (small swarm), 127.0.61.x (32-session swarm) and 127.0.62.x
(rate-limited swarm), distinct from the other test files' ranges. The whole file takes a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from mainline_dht.wire.contact import Address
from mainline_dht.errors import KRPCError, QueryTimeout
from mainline_dht.wire.krpc import AnnouncePeer, FindNode, GetPeers, SampleInfohashes
from mainline_dht.runtime import aio
from mainline_dht.runtime.node import DHTNode, open_node
from libtorrent_net import LibtorrentSwarm, libtorrent_available, start_swarm

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not libtorrent_available(), reason="libtorrent is not installed: pip install libtorrent"),
]

REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL_SWARM = 8
BIG_SWARM = 32
#: Seconds any one test may take (real clock; the tests take well under a second each).
TEST_DEADLINE = 20.0

T = TypeVar("T")


def _ih(name: str) -> bytes:
    return hashlib.sha1(f"test_interop_libtorrent {name}".encode()).digest()


def _neighbour(node_id: bytes) -> bytes:
    """An infohash closer to ``node_id`` than any other node ID is (bar a 1-in-2**159 chance)."""
    return node_id[:-1] + bytes([node_id[-1] ^ 1])


async def _lt(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking libtorrent helper call in a worker thread."""
    return await trio.to_thread.run_sync(fn, *args)


def _check_settings(swarm: LibtorrentSwarm) -> None:
    """The conditions the interop tests rely on are in force in every session."""
    for i in range(len(swarm)):
        s = swarm.session(i).get_settings()
        assert s["dht_restrict_routing_ips"] is False
        assert s["dht_restrict_search_ips"] is False
        assert s["dht_block_ratelimit"] >= 1000
        assert s["listen_interfaces"].startswith(swarm.addresses[i][0] + ":")


# Each test gets its own swarm: a node of ours that a test closes would stay in a
# shared swarm's tables, and libtorrent lookups wait for a dead node among the
# closest until its query times out (seconds), which would slow later tests.


@pytest.fixture
def small_swarm() -> Iterator[LibtorrentSwarm]:
    with start_swarm(SMALL_SWARM, first_ip="127.0.60.1", port=0, seed=60) as swarm:
        swarm.wait_for_tables(min_nodes=SMALL_SWARM - 1, timeout=10.0)
        _check_settings(swarm)
        yield swarm


@pytest.fixture
def big_swarm() -> Iterator[LibtorrentSwarm]:
    with start_swarm(BIG_SWARM, first_ip="127.0.61.1", port=0, seed=61) as swarm:
        swarm.wait_for_tables(min_nodes=16, timeout=10.0)
        _check_settings(swarm)
        yield swarm


def _members(swarm: LibtorrentSwarm) -> dict[Address, bytes]:
    """Every session's address -> its current node ID."""
    return {swarm.addresses[i]: swarm.node_id(i) for i in range(len(swarm))}


async def _wait_in_tables(swarm: LibtorrentSwarm, node: DHTNode) -> list[int]:
    """Wait until our node (ID at our address) is in the routing table of every
    session; return the sessions that still lack it when the deadline passes."""
    entry = (node.node_id, node.local_address)
    missing = list(range(len(swarm)))
    with trio.move_on_after(10.0):
        while missing:
            missing = [i for i in missing if entry not in await _lt(swarm.routing_table, i)]
            if missing:
                await trio.sleep(0.05)
    return missing


# --- issue "The trio node": we query libtorrent ------------------------------------------


async def test_libtorrent_answers_every_query_we_send(small_swarm: LibtorrentSwarm) -> None:
    sw = small_swarm
    ih = _ih("we query")
    members = await _lt(_members, sw)
    with trio.fail_after(TEST_DEADLINE):
        async with open_node(("127.0.60.201", 0), bootstrap=(), rng=random.Random(1)) as node:
            me = node.local_address
            target = sw.addresses[3]

            # ping: their ID, their version, and our address as they see it (BEP 42 ip)
            resp = await node.ping(target)
            assert resp.sender_id == members[target]
            assert resp.version is not None and resp.version[:2] == b"LT"
            assert resp.ip == me

            # find_node: 8 contacts, every one a real swarm member at its own address
            # (or our node: libtorrent checks a querier and adds it to its table at once)
            resp = await node.query(target, FindNode(node.node_id))
            assert resp.sender_id == members[target]
            assert len(resp.nodes) == 8
            known = {**members, me: node.node_id}
            for contact in resp.nodes:
                assert known.get(contact.addr) == contact.id, contact

            # get_peers for an infohash nobody announced: a token and nodes, no values
            resp = await node.query(target, GetPeers(ih))
            token = resp.token
            assert token
            assert resp.values == ()
            assert len(resp.nodes) == 8

            # announce_peer: libtorrent checks the token and stores nothing without it...
            with pytest.raises(KRPCError) as refused:
                await node.query(target, AnnouncePeer(ih, 4242, bytes(len(token))))
            assert refused.value.code == 203
            assert (await node.query(target, GetPeers(ih))).values == ()
            # ...and accepts the one it gave us
            resp = await node.query(target, AnnouncePeer(ih, 4242, token))
            assert resp.sender_id == members[target]
            seen = await _lt(sw.incoming_announces, 3)
            assert (me[0], 4242) in [(a.ip, a.port) for a in seen if a.info_hash == ih]

            # get_peers now returns us as a peer
            resp = await node.query(target, GetPeers(ih))
            assert resp.values == ((me[0], 4242),)

            # BEP 51 sample_infohashes: the infohash we stored, its count and interval
            resp = await node.query(target, SampleInfohashes(ih))
            assert resp.samples is not None and ih in resp.samples
            assert resp.num == len(resp.samples) >= 1
            assert resp.interval is not None and resp.interval > 0
            assert len(resp.nodes) == 8

            assert node.proto.stats.errors_received == 1  # the bad token, nothing else
            assert node.proto.stats.timeouts == 0


# --- issue "The trio node": libtorrent queries us ----------------------------------------


async def test_our_node_enters_every_libtorrent_routing_table(small_swarm: LibtorrentSwarm) -> None:
    sw = small_swarm
    with trio.fail_after(TEST_DEADLINE):
        async with open_node(("127.0.60.202", 0), bootstrap=(), rng=random.Random(2)) as node:
            before = await _lt(lambda: [sw.counters(i) for i in range(len(sw))])
            for i in range(len(sw)):
                await _lt(sw.add_node, i, node.local_address)
            assert await _wait_in_tables(sw, node) == []

            stats = node.proto.stats
            # libtorrent checks a new contact with get_peers, not ping
            assert stats.queries_by_method.get(b"get_peers", 0) >= len(sw)
            assert stats.replies_sent == stats.queries_received
            assert stats.errors_sent == 0
            assert stats.malformed == 0
            # and we learned of them in turn (one entry per session)
            assert len(node.table) == len(sw)
            # libtorrent dropped none of our datagrams as malformed
            after = await _lt(lambda: [sw.counters(i) for i in range(len(sw))])
            assert all((a - b).messages_in_dropped == 0 for a, b in zip(after, before))


async def test_libtorrent_announces_to_us_and_samples_us(small_swarm: LibtorrentSwarm) -> None:
    sw = small_swarm
    with trio.fail_after(TEST_DEADLINE):
        async with open_node(("127.0.60.203", 0), bootstrap=(), rng=random.Random(3)) as node:
            me = node.local_address
            for i in range(len(sw)):
                await _lt(sw.add_node, i, me)
            assert await _wait_in_tables(sw, node) == []
            stats = node.proto.stats

            # The infohash is our node's neighbour, so we are the closest node that gives
            # a token and libtorrent must announce to us. (With a random infohash we
            # may be 9th of 9: libtorrent 2.1.1 keeps its own node in its lookups and
            # announces to itself.)
            ih = _neighbour(node.node_id)
            announcer = 5
            sent = await _lt(sw.announce, announcer, ih, 6005)
            assert sent == 8
            assert stats.announces_accepted == 1
            assert stats.bad_tokens == 0
            assert stats.queries_by_method.get(b"announce_peer") == 1
            now = trio.current_time()
            assert node.proto.peer_store.get(ih, now, random.Random(0), 50) == [(sw.addresses[announcer][0], 6005)]

            # BEP 51: libtorrent parses our sample_infohashes reply
            result = await _lt(sw.sample_infohashes, 2, me, ih)
            assert result.samples == [ih]
            assert result.num_infohashes == 1
            assert result.interval == node.proto.config.sample_interval
            assert len(result.nodes) == 8
            assert stats.queries_by_method.get(b"sample_infohashes") == 1
            assert stats.errors_sent == 0


async def test_libtorrent_bootstraps_from_us_and_reads_our_values(small_swarm: LibtorrentSwarm) -> None:
    sw = small_swarm
    with trio.fail_after(TEST_DEADLINE):
        async with (
            open_node(("127.0.60.204", 0), bootstrap=(sw.addresses[0],), rng=random.Random(4)) as node,
            open_node(("127.0.60.205", 0), bootstrap=(), rng=random.Random(5)) as other,
        ):
            await node.bootstrap(timeout=5.0)
            me = node.local_address
            # An infohash next to our node ID: any lookup of it must end at our node.
            ih = _neighbour(node.node_id)
            # A peer stored at our node only: our second node announces to it directly.
            token = (await other.query(me, GetPeers(ih))).token
            assert token is not None
            await other.query(me, AnnouncePeer(ih, 7777, token))
            assert node.proto.stats.announces_accepted == 1

            # A new libtorrent session whose only way in is our node, as its router.
            def fresh_lookup() -> tuple[int, list[Address]]:
                with start_swarm(1, first_ip="127.0.60.40", port=0, routers=[me], warm_up=False) as fresh:
                    found = fresh.get_peers(0, ih, timeout=5.0)
                    return fresh.table_size(0), found.peers

            queries_before = node.proto.stats.queries_received
            table_size, peers = await _lt(fresh_lookup)
            assert peers == [(other.local_address[0], 7777)]  # parsed from our 'values'
            assert table_size >= 1  # it learned the swarm from our 'nodes'
            assert node.proto.stats.queries_received > queries_before


# --- issue "The get_peers lookup engine" ----------------------------------------------


async def test_cli_peers_finds_what_libtorrent_announced(big_swarm: LibtorrentSwarm) -> None:
    sw = big_swarm
    ih = _ih("cli")
    announcers = {7: 6007, 19: 6019, 28: 6028}
    with trio.fail_after(TEST_DEADLINE):
        for i, port in announcers.items():
            assert await _lt(sw.announce, i, ih, port) > 0
        expected = {(sw.addresses[i][0], port) for i, port in announcers.items()}
        host, port = sw.addresses[0]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        argv = [
            sys.executable, "-m", "mainline_dht", "peers", ih.hex(),
            "--bootstrap", f"{host}:{port}", "--json", "--bind", "127.0.61.200:0", "--timeout", "15",
        ]  # fmt: skip
        proc = await trio.run_process(argv, env=env, cwd=REPO_ROOT, capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    peers = [(e["ip"], e["port"]) for e in lines if e["event"] == "peer"]
    assert len(peers) == len(set(peers))  # each peer reported once
    assert set(peers) == expected
    done = lines[-1]
    assert done["event"] == "done"
    assert done["peers"] == len(expected)
    assert done["timed_out"] is False
    assert done["timeouts"] == 0
    assert 0 < done["replies"] <= done["queries"]
    assert done["first_peer"] is not None


async def test_libtorrent_finds_the_peer_we_announce(big_swarm: LibtorrentSwarm) -> None:
    sw = big_swarm
    ih = _ih("we announce")
    with trio.fail_after(TEST_DEADLINE):
        async with open_node(("127.0.61.201", 0), bootstrap=(sw.addresses[1],), rng=random.Random(6)) as node:
            await node.bootstrap(timeout=5.0)
            me = node.local_address
            accepted = await node.announce(ih, 4711)
            assert accepted == node.proto.config.k
            received = [
                a for i in range(len(sw)) for a in await _lt(sw.incoming_announces, i) if a.info_hash == ih
            ]
            assert len(received) == accepted
            assert {(a.ip, a.port) for a in received} == {(me[0], 4711)}
            # libtorrent's own lookup, from sessions spread over the swarm
            for i in (2, 15, 30):
                result = await _lt(sw.get_peers, i, ih)
                assert result.stats.completed
                assert result.peers == [(me[0], 4711)]


def test_the_asyncio_node_finds_libtorrent_peers_and_libtorrent_finds_its_peer(big_swarm: LibtorrentSwarm) -> None:
    """The same two checks for the asyncio node (mainline_dht.aio), under asyncio.run:
    it finds the peers libtorrent announced, and libtorrent finds the peer it announces."""
    sw = big_swarm
    theirs, ours = _ih("asyncio theirs"), _ih("asyncio ours")
    announcers = {5: 6105, 23: 6123}
    for i, port in announcers.items():
        assert sw.announce(i, theirs, port) > 0
    expected = {(sw.addresses[i][0], port) for i, port in announcers.items()}

    async def main() -> None:
        async with aio.open_node(("127.0.61.202", 0), bootstrap=(sw.addresses[1],), rng=random.Random(11)) as node:
            await node.bootstrap(timeout=5.0)
            found = [peer async for peer in node.get_peers(theirs)]
            assert len(found) == len(set(found)) and set(found) == expected
            me = node.local_address
            accepted = await node.announce(ours, 4712)
            assert accepted == node.proto.config.k
            received = [
                a for i in range(len(sw)) for a in await asyncio.to_thread(sw.incoming_announces, i) if a.info_hash == ours
            ]
            assert len(received) == accepted
            assert {(a.ip, a.port) for a in received} == {(me[0], 4712)}
            for i in (2, 15, 30):
                result = await asyncio.to_thread(sw.get_peers, i, ours)
                assert result.stats.completed
                assert result.peers == [(me[0], 4712)]

    async def bounded() -> None:
        await asyncio.wait_for(main(), TEST_DEADLINE)

    asyncio.run(bounded())


# --- politeness: libtorrent's own rate limit -----------------------------------------------


async def test_libtorrent_rate_limit_never_bans_our_node() -> None:
    """libtorrent ignores an IP for 5 minutes once it sends 50 queries in 10 s
    (``dht_block_ratelimit`` 5, its default). A swarm keeps that default here:
    a flooding node is banned (the control), while our node joins, runs lookups
    and announces, and every session still answers it afterwards."""
    ih = _ih("polite")
    settings = {"dht_block_ratelimit": 5, "dht_block_timeout": 300}
    with start_swarm(16, first_ip="127.0.62.1", port=0, seed=62, settings=settings) as sw:
        await _lt(sw.wait_for_tables, 12, 10.0)
        assert all(sw.session(i).get_settings()["dht_block_ratelimit"] == 5 for i in range(len(sw)))
        with trio.fail_after(TEST_DEADLINE):
            # Our node, going about its business.
            async with open_node(("127.0.62.201", 0), bootstrap=(sw.addresses[1],), rng=random.Random(8)) as node:
                await node.bootstrap(timeout=5.0)
                rng = random.Random(9)
                for _ in range(10):
                    async with node.get_peers(rng.randbytes(20)) as peers:
                        async for _ in peers:
                            pass
                assert await node.announce(ih, 4000) == node.proto.config.k
                assert node.stats.queries_sent > 5 * len(sw)
                for addr in sw.addresses:
                    await node.ping(addr)  # a banned node would time out here
            # The control: 80 pings at once from another IP get that IP banned.
            async with open_node(("127.0.62.250", 0), bootstrap=(), rng=random.Random(7)) as rude:
                answered = 0

                async def ping() -> None:
                    nonlocal answered
                    with contextlib.suppress(QueryTimeout):
                        await rude.ping(sw.addresses[0], timeout=1.0)  # loopback answers take < 10 ms
                        answered += 1

                async with trio.open_nursery() as nursery:
                    for _ in range(80):
                        nursery.start_soon(ping)
                assert answered < 80
                with pytest.raises(QueryTimeout):
                    await rude.ping(sw.addresses[0], timeout=1.0)
