"""Tests of mainline_dht.runtime.node over real UDP sockets on loopback.

Rules: 127.0.0.0/8 only (our own nodes on 127.0.51.x, local networks from
127.0.50.1 up, every port 0 so the system picks a free one; where the system
routes only 127.0.0.1 everything shares it), the real trio clock, and a short
``trio.fail_after`` around each test so a lost datagram fails fast instead of
hanging. Assertions are on outcomes, never on wall time.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from mainline_dht.errors import KRPCError
from mainline_dht.wire.krpc import AnnouncePeer, FindNode, GetPeers, SampleInfohashes, UnknownQuery, unpack_nodes_untrusted
from mainline_dht.runtime.localnet import open_local_network
from mainline_dht.runtime.node import DHTNode, open_node
from mainline_dht.runtime.state_file import load_contacts

from loopback import LoopbackRange

TIMEOUT = 10.0  # seconds of real time per test; loopback needs far less
INFO_HASH = bytes(range(100, 120))


#: Our i-th node's bind address: 127.0.51.i.
bind = LoopbackRange("127.0.51")


@asynccontextmanager
async def node(i: int, **options: object) -> AsyncIterator[DHTNode]:
    options.setdefault("bootstrap", ())
    options.setdefault("rng", random.Random(f"udp:{i}"))
    async with open_node(bind(i), **options) as n:  # type: ignore[arg-type]
        yield n


async def wait_until(predicate: object, *, poll: float = 0.01) -> None:
    while not predicate():  # type: ignore[operator]
        await trio.sleep(poll)


async def test_two_nodes_find_each_other() -> None:
    with trio.fail_after(TIMEOUT):
        async with node(1) as a, node(2) as b:
            assert a.local_address[1] != 0 and a.local_address[0] == bind(1)[0]
            resp = await b.ping(a.local_address)
            assert resp.sender_id == a.node_id
            assert resp.ip == b.local_address  # BEP 42: a saw our real address
            b.bootstrap_nodes = (a.local_address,)
            size = await b.bootstrap(timeout=5.0)
            assert size >= 1 and b.joined.is_set()
            # a verified b with a ping (b queried it); b learned a from that ping.
            await wait_until(lambda: a.node_id in b.table and b.node_id in a.table)


async def test_a_local_network_fills_its_tables() -> None:
    with trio.fail_after(2 * TIMEOUT):
        async with open_local_network(40, seed=3, base=("127.0.50.1", 0)) as net:
            assert net.unjoined == 0
            assert len({n.local_address for n in net.nodes}) == 40
            sizes = [len(n.table) for n in net.nodes]
            assert min(sizes) >= 8, sorted(sizes)
            # Everyone is known: each node is in someone else's table, but the
            # first, which everyone joined through: it served as their bootstrap
            # router, and BEP 5 keeps routers out of routing tables.
            known = {e.id for n in net.nodes for e in n.table}
            assert known == {n.node_id for n in net.nodes[1:]}
            # A lookup over the real network finds the true closest nodes.
            target = random.Random(1).randbytes(20)
            found = await net.nodes[7].find_node(target)
            t = int.from_bytes(target, "big")
            truth = sorted((n.node_id for n in net.nodes if n is not net.nodes[7]), key=lambda i: int.from_bytes(i, "big") ^ t)
            assert [c.id for c in found] == truth[:8]


async def test_every_query_kind_is_answered_over_udp() -> None:
    with trio.fail_after(TIMEOUT):
        async with node(3) as a, node(4) as b, node(5) as c:
            addr = a.local_address
            await c.ping(addr)  # a learns c (after verifying it)
            await wait_until(lambda: c.node_id in a.table)
            resp = await b.query(addr, FindNode(c.node_id))
            assert resp.sender_id == a.node_id
            assert [x.id for x in resp.nodes] == [c.node_id]  # b itself may not be listed yet
            resp = await b.query(addr, GetPeers(INFO_HASH))
            assert resp.token and resp.values == ()
            assert c.node_id in {x.id for x in resp.nodes}
            await b.query(addr, AnnouncePeer(INFO_HASH, 6999, resp.token))
            resp = await b.query(addr, AnnouncePeer(INFO_HASH, 0, resp.token, implied_port=True))
            resp = await c.query(addr, GetPeers(INFO_HASH))
            # One entry per IP per torrent: b's second announce replaced its first.
            assert resp.values == (b.local_address,)
            resp = await c.query(addr, SampleInfohashes(INFO_HASH))
            assert resp.samples == (INFO_HASH,) and resp.num == 1 and resp.interval is not None
            assert resp.nodes
            with pytest.raises(KRPCError) as info:
                await b.query(addr, UnknownQuery(b"vote"))
            assert info.value.code == 204
            with pytest.raises(KRPCError) as info:
                await c.query(addr, AnnouncePeer(INFO_HASH, 6999, b"stolen"))
            assert info.value.code == 203
            resp = await b.query(addr, UnknownQuery(b"vote", INFO_HASH))  # like find_node
            assert resp.sender_id == a.node_id and resp.nodes
            stats = a.stats
            assert stats.announces_accepted == 2 and stats.stored_peers == 1  # one per IP per torrent


async def test_garbage_datagrams_do_not_kill_the_receive_loop() -> None:
    with trio.fail_after(TIMEOUT):
        async with node(6) as a, node(7) as b:
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with sock:
                await sock.bind((bind(8)[0], 0))
                junk = [
                    b"",
                    b"\x00",
                    b"not bencode",
                    b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",  # bad id: a 203 comes back
                    b"i42e",
                    b"d" * 3000,
                    os.urandom(1400),
                    os.urandom(60000),
                ]
                for data in junk:
                    await sock.sendto(data, a.local_address)
                # The malformed query with a readable tid is answered with 203.
                with trio.fail_after(2.0):
                    reply, _ = await sock.recvfrom(2048)
                assert b"203" in reply and b"2:aa" in reply
                await wait_until(lambda: a.stats.malformed >= len(junk) - 1)
            # Still alive and answering.
            resp = await b.ping(a.local_address)
            assert resp.sender_id == a.node_id
            assert a.stats.malformed >= len(junk) - 1


# --- restarting with the state file ---------------------------------------------------------------


async def test_restart_with_the_state_file_rejoins_without_routers(tmp_path: Path) -> None:
    state = tmp_path / "routing-table.dat"
    with trio.fail_after(3 * TIMEOUT):
        async with open_local_network(12, seed=4, base=("127.0.50.101", 0)) as net:
            async with node(20, bootstrap=(net.bootstrap_address,), state_path=state) as a:
                await a.bootstrap(timeout=5.0)
                first_id = a.node_id
                known = len(a.table)
                assert known >= 8
            # Saved on exit, atomically: the file and nothing else.
            assert sorted(p.name for p in tmp_path.iterdir()) == [state.name]
            saved_id, contacts = load_contacts(state)
            assert saved_id == first_id and len(contacts) == known
            # The same ID comes back, and the saved contacts alone rejoin the network.
            async with node(20, rng=random.Random("other seed"), state_path=state) as a:
                assert a.node_id == first_id
                assert a.bootstrap_nodes == ()
                size = await a.bootstrap(timeout=5.0)
                assert size >= 8
                # Others learn the restarted node at its new address.
                await wait_until(lambda: sum(a.node_id in n.table for n in net.nodes) >= 1)
            assert sorted(p.name for p in tmp_path.iterdir()) == [state.name]


async def test_a_corrupt_state_file_means_a_fresh_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "routing-table.dat"
    state.write_bytes(b"\x00\xffgarbage\x13" * 10)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, logger="mainline_dht.runtime.node"):
        async with node(9, state_path=state) as a, node(10) as b:
            assert any("state file" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
            assert len(a.table) == 0
            # A working node: it answers, and it saves a good file on exit.
            assert (await b.ping(a.local_address)).sender_id == a.node_id
            fresh_id = a.node_id
        saved_id, _ = load_contacts(state)
        assert saved_id == fresh_id
        # The bad file was moved aside, not overwritten.
        [aside] = tmp_path.glob("routing-table.dat.corrupt-*")
        assert aside.read_bytes() == b"\x00\xffgarbage\x13" * 10


async def test_a_state_file_of_another_kind_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "routing-table.dat"
    state.write_bytes(b"d5:nodesle7:versioni99ee")  # valid bencode, unknown version
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, logger="mainline_dht.runtime.node"):
        async with node(11, state_path=state) as a:
            assert a.node_id != bytes(20)
        assert any("version" in r.getMessage() for r in caplog.records)
    assert load_contacts(state)[0] == a.node_id


async def test_own_udp_transport_is_closed_on_exit() -> None:
    with trio.fail_after(TIMEOUT):
        async with node(12) as a:
            transport = a.transport
            addr = a.local_address
        assert transport.closed  # type: ignore[attr-defined]
        # The address is free again.
        async with open_node(addr, bootstrap=(), rng=random.Random(0)) as again:
            assert again.local_address == addr


async def test_find_node_reply_over_udp_is_compact(tmp_path: Path) -> None:
    """Raw bytes on the wire: a stranger's find_node gets a compact 26-byte-per-node reply."""
    from mainline_dht.wire import bencode

    with trio.fail_after(TIMEOUT):
        async with node(13) as a, node(14) as b:
            await b.ping(a.local_address)
            await wait_until(lambda: b.node_id in a.table)
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with sock:
                await sock.bind((bind(15)[0], 0))
                query = {b"t": b"xy", b"y": b"q", b"q": b"find_node", b"a": {b"id": b"\x01" * 20, b"target": b.node_id}}
                await sock.sendto(bencode.encode(query), a.local_address)
                while True:  # (a verification ping of us may come first)
                    data, _ = await sock.recvfrom(2048)
                    reply = bencode.decode_untrusted(data)
                    assert isinstance(reply, dict)
                    if reply[b"y"] != b"q":
                        break
            assert reply[b"t"] == b"xy" and reply[b"y"] == b"r"
            nodes = unpack_nodes_untrusted(reply[b"r"][b"nodes"])
            assert [(x.id, x.addr) for x in nodes] == [(b.node_id, b.local_address)]
