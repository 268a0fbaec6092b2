"""Tests of mainline_dht.runtime.node on the in-memory network, under trio's virtual clock.

Every test takes pytest-trio's ``autojump_clock`` fixture (MockClock with
autojump_threshold=0), so latencies and timeouts cost no wall time, and runs
inside a ``trio.fail_after`` on that virtual clock, so a lost reply fails the
test instead of hanging it. Randomness comes from seeded ``random.Random``s.
Assertions are on outcomes (peer found, table filled, counts), never on the
exact interleaving of tasks, which trio randomises.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from mainline_dht.wire.contact import Address
import mainline_dht.runtime.node as node_module
from mainline_dht.errors import BootstrapError, KRPCError, LocalProtocolError, QueryTimeout
from mainline_dht.wire.krpc import AnnouncePeer, FindNode, GetPeers, Ping, SampleInfohashes, UnknownQuery
from mainline_dht.runtime.node import MAINTENANCE_INTERVAL, DHTNode, open_node
from mainline_dht.core.node_id import is_id_valid_for_ip
from mainline_dht.core.protocol import DEFAULT_QUERY_TIMEOUT, NodeConfig
from mainline_dht.runtime.state_file import load_contacts
from mainline_dht.testing import LinkModel, MemoryNetwork, Packet, open_memory_network
from mainline_dht.testing._sim import SimNetwork, open_sim_network

#: Simulated seconds any one test may take.
VIRTUAL_LIMIT = 3600.0
INFO_HASH = hashlib.sha1(b"test_node_memory").digest()


@asynccontextmanager
async def two_nodes(
    *, link: LinkModel = LinkModel(median_rtt=0.05, sigma=0.0)
) -> AsyncIterator[tuple[MemoryNetwork, DHTNode, DHTNode]]:
    async with open_memory_network(rng=random.Random(0), link=link) as net, AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            open_node(transport=net.open_transport(), bootstrap=(), rng=random.Random("a"))
        )
        b = await stack.enter_async_context(
            open_node(transport=net.open_transport(), bootstrap=(), rng=random.Random("b"))
        )
        yield net, a, b


@asynccontextmanager
async def sim(n: int, *, seed: int = 0, join: str = "prefill", **kw: object) -> AsyncIterator[SimNetwork]:
    link = kw.pop("link", LinkModel(median_rtt=0.1))
    async with open_sim_network(n, seed=seed, link=link, join=join, **kw) as net:  # type: ignore[arg-type]
        yield net


# --- single queries --------------------------------------------------------------------------


async def test_query_and_ping_return_responses(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with two_nodes() as (_, a, b):
            start = trio.current_time()
            resp = await a.ping(b.local_address)
            assert resp.sender_id == b.node_id
            assert resp.ip == a.local_address  # BEP 42 as b saw us
            assert trio.current_time() - start == pytest.approx(0.05)
            resp = await a.query(b.local_address, FindNode(a.node_id))
            assert resp.sender_id == b.node_id
            resp = await a.query(b.local_address, GetPeers(INFO_HASH))
            assert resp.token is not None and resp.values == ()
            token = resp.token
            resp = await a.query(b.local_address, AnnouncePeer(INFO_HASH, 4444, token))
            assert b.proto.peer_store.num_peers == 1
            resp = await a.query(b.local_address, GetPeers(INFO_HASH))
            assert resp.values == ((a.local_address[0], 4444),)
            resp = await a.sample_infohashes(b.local_address)
            assert resp.samples == (INFO_HASH,) and resp.num == 1
            # Both ended up in each other's tables (b verified a with a ping).
            await trio.sleep(1.0)
            assert b.node_id in a.table and a.node_id in b.table


async def test_the_receive_loop_survives_an_internal_error(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with two_nodes() as (_, a, b):
            real = b.proto.receive_datagram

            def fragile(data: bytes, addr: tuple[str, int], now: float) -> None:
                if data == b"boom":
                    raise RuntimeError("a bug in the core")
                real(data, addr, now)

            monkeypatch.setattr(b.proto, "receive_datagram", fragile)
            a.transport.send(b"boom", b.local_address)
            resp = await a.ping(b.local_address)
            assert resp.sender_id == b.node_id
            assert b.internal_errors == 1


async def test_query_timeout_when_the_remote_is_dead(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with two_nodes() as (net, a, b):
            await a.ping(b.local_address)
            net.set_dead(b.local_address)
            start = trio.current_time()
            with pytest.raises(QueryTimeout) as info:
                await a.ping(b.local_address)
            assert info.value.addr == b.local_address and info.value.method == b"ping"
            assert trio.current_time() - start == pytest.approx(DEFAULT_QUERY_TIMEOUT)
            with pytest.raises(QueryTimeout):
                await a.query(b.local_address, FindNode(INFO_HASH), timeout=1.5)
            assert trio.current_time() - start == pytest.approx(DEFAULT_QUERY_TIMEOUT + 1.5)
            assert a.proto.outstanding == 0
            # Alive again: answers again.
            net.set_dead(b.local_address, False)
            assert (await a.ping(b.local_address)).sender_id == b.node_id


async def test_krpc_error_for_an_error_reply(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with two_nodes() as (_, a, b):
            with pytest.raises(KRPCError) as info:
                await a.query(b.local_address, UnknownQuery(b"frob"))
            assert info.value.code == 204 and info.value.addr == b.local_address
            with pytest.raises(KRPCError) as info:
                await a.query(b.local_address, AnnouncePeer(INFO_HASH, 4444, b"wrong token"))
            assert info.value.code == 203
            assert b.proto.peer_store.num_peers == 0
            # Unknown methods carrying a target are answered like find_node.
            resp = await a.query(b.local_address, UnknownQuery(b"frob", INFO_HASH))
            assert resp.sender_id == b.node_id


async def test_a_node_answers_one_ip_within_its_budget(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with two_nodes() as (_, a, b):
            burst = int(b.proto.config.query_burst_per_ip)
            answered = 0

            async def one() -> None:
                nonlocal answered
                try:
                    await a.ping(b.local_address)
                    answered += 1
                except QueryTimeout:
                    pass

            async with trio.open_nursery() as nursery:
                for _ in range(burst + 30):
                    nursery.start_soon(one)
            # The first `burst` queries are answered (one of them may be a's own
            # verification ping of b); the rest arrive within the same few
            # milliseconds, before the bucket refills a single token.
            st = b.stats
            assert st.replies_sent == burst and burst - 1 <= answered <= burst
            # The rest are dropped before they are decoded: not even counted as received.
            assert st.queries_received == burst and st.queries_rate_limited >= 30
            assert a.stats.timeouts == burst + 30 - answered


async def test_query_refuses_caller_mistakes(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with two_nodes() as (_, a, b):
            with pytest.raises(LocalProtocolError):
                await a.query((b.local_address[0], 0), Ping())
            with pytest.raises(LocalProtocolError):
                async with a.get_peers(b"short"):
                    pass  # pragma: no cover
            with pytest.raises(LocalProtocolError):
                await a.announce(INFO_HASH, port=70000)


async def test_a_cancelled_query_leaves_nothing_outstanding(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with two_nodes() as (net, a, b):
            net.set_dead(b.local_address)
            with trio.move_on_after(1.0):
                await a.ping(b.local_address)
            assert a.proto.outstanding == 0 and not a._waiters


# --- lookups ---------------------------------------------------------------------------------


async def test_get_peers_streams_each_peer_once_as_it_arrives(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(200, seed=1) as net:
            nodes = net.nodes
            announcers = nodes[10:15]
            expected = set()
            for i, node in enumerate(announcers):
                assert await node.announce(INFO_HASH, 7000 + i) >= 6
                expected.add((node.local_address[0], 7000 + i))
            seeker = nodes[100]
            got: list[tuple[float, Address]] = []
            async with seeker.get_peers(INFO_HASH) as stream:
                async for peer in stream:
                    got.append((trio.current_time(), peer))
            peers = [p for _, p in got]
            assert len(peers) == len(set(peers))  # each peer once, though many nodes hold it
            assert set(peers) == expected
            st = stream.stats
            assert st.finished_at is not None and st.first_peer_at is not None
            # The first peer reached us the moment its reply landed, well before the end.
            assert got[0][0] == st.first_peer_at
            assert st.first_peer_at < st.finished_at
            assert got[0][0] - st.started_at < st.finished_at - st.started_at - 0.05
            assert stream.peers == peers


async def test_a_slow_reader_sees_when_each_peer_was_found(autojump_clock: trio.testing.MockClock) -> None:
    # The reader takes peers long after they arrived, even after the lookup ended:
    # found_at() still tells when the lookup received each, never after it finished.
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(200, seed=1) as net:
            for i, node in enumerate(net.nodes[10:13]):
                assert await node.announce(INFO_HASH, 7000 + i) >= 6
            read_at: dict[Address, float] = {}
            async with net.nodes[100].get_peers(INFO_HASH) as stream:
                async for peer in stream:
                    await trio.sleep(10.0)
                    read_at[peer] = trio.current_time()
            st = stream.stats
            assert len(read_at) == 3 and st.finished_at is not None and st.first_peer_at is not None
            found = {p: stream.found_at(p) for p in read_at}
            assert min(found.values()) == st.first_peer_at
            assert all(st.started_at <= at <= st.finished_at < read_at[p] for p, at in found.items())
            with pytest.raises(KeyError):
                stream.found_at(("192.0.2.1", 1))


async def test_announce_then_another_node_finds_the_peer(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(150, seed=2) as net:
            a, b = net.nodes[3], net.nodes[120]
            acks = await a.announce(INFO_HASH, 51413)
            assert 6 <= acks <= 8
            holders = [n for n in net.nodes if n.proto.peer_store.num_peers]
            assert len(holders) == acks
            found = []
            async with b.get_peers(INFO_HASH) as stream:
                async for peer in stream:
                    found.append(peer)
            assert found == [(a.local_address[0], 51413)]
            # implied_port: the holders store our UDP source port.
            acks = await b.announce(INFO_HASH)
            assert acks >= 6
            async with a.get_peers(INFO_HASH) as stream:
                seen = {peer async for peer in stream}
            assert b.local_address in seen


async def test_refreshing_the_buckets_that_are_not_full(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(200, seed=4) as net:
            async with open_node(transport=net.net.open_transport(), bootstrap=(), rng=random.Random(4)) as node:
                table = node.proto.table
                now = trio.current_time()
                for c in net.contacts[:3]:
                    table.heard_from(c, now, responded=True)
                # Three contacts, one bucket (ours): that bucket is searched too.
                assert len(table.buckets) == 1
                assert await node.refresh_buckets(not_full=True) == 1
                assert len(table) > table.k
                # With a table past k, our own bucket is left to the lookup of our
                # own ID; only the other buckets that are not full are refreshed.
                own = table.bucket_for(node.node_id)
                not_full = [b for b in table.buckets if len(b.entries) < table.k and b is not own]
                assert await node.refresh_buckets(not_full=True) == len(not_full)


async def test_find_node_converges_on_the_closest(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(200, seed=3) as net:
            target = random.Random(9).randbytes(20)
            found = await net.nodes[0].find_node(target)
            t = int.from_bytes(target, "big")
            truth = sorted((c for c in net.contacts if c.id != net.nodes[0].node_id), key=lambda c: int.from_bytes(c.id, "big") ^ t)
            assert [c.id for c in found] == [c.id for c in truth[:8]]


async def test_cancelling_a_lookup_midway_leaves_no_queries_behind(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(200, seed=4, dead_fraction=0.3) as net:
            for i, node in enumerate(net.nodes[:6]):
                await node.announce(INFO_HASH, 6000 + i)
            seeker = net.nodes[-1]
            assert seeker.proto.outstanding == 0
            async with seeker.get_peers(INFO_HASH) as stream:
                async for _ in stream:
                    # Midway: queries are in flight, some to dead nodes.
                    assert not stream.lookup.done and seeker.proto.outstanding > 0
                    break
            assert not seeker._waiters  # every query task of the lookup is gone
            # The queries it left behind run out in the core (a late answer may
            # start verification pings, which run out too): nothing stays in flight.
            with trio.fail_after(60.0):
                while seeker.proto.outstanding:
                    await trio.sleep(1.0)


async def test_an_exception_inside_get_peers_propagates_as_itself(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(50, seed=5) as net:
            with pytest.raises(KeyError, match="mine"):
                async with net.nodes[0].get_peers(INFO_HASH) as stream:
                    async for _ in stream:
                        pass
                    raise KeyError("mine")


# --- joining -----------------------------------------------------------------------------------


async def test_bootstrap_error_names_what_was_tried(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_memory_network(rng=random.Random(0)) as net:
            dead = ("10.99.0.1", 6881)
            net.set_dead(dead)
            async with open_node(transport=net.open_transport(), bootstrap=(dead, ("10.99.0.2", 25401)), rng=random.Random(1)) as node:
                start = trio.current_time()
                with pytest.raises(BootstrapError) as info:
                    await node.bootstrap(timeout=4.0)
                message = str(info.value)
                assert "10.99.0.1:6881" in message and "10.99.0.2:25401" in message
                assert "--bootstrap" in message
                assert trio.current_time() - start <= 4.0 + DEFAULT_QUERY_TIMEOUT
                assert not node.joined.is_set()
            async with open_node(transport=net.open_transport(), bootstrap=(), rng=random.Random(2)) as node:
                with pytest.raises(BootstrapError, match="no bootstrap nodes"):
                    await node.bootstrap(timeout=1.0)


async def test_bootstrap_error_says_when_no_router_resolved(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def offline(addr: tuple[str, int], **_: object) -> tuple[str, int]:
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(node_module, "resolve_address", offline)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_memory_network(rng=random.Random(0)) as net:
            async with open_node(
                transport=net.open_transport(), bootstrap=(("router.example", 6881),), rng=random.Random(1)
            ) as node:
                with pytest.raises(BootstrapError, match="resolved") as info:
                    await node.bootstrap(timeout=2.0)
                assert "router.example:6881" in str(info.value) and "--bootstrap" in str(info.value)


async def test_bootstrap_joins_through_a_router_that_stays_out_of_the_table(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(100, seed=6) as net:
            router = net.nodes[0]
            async with open_node(
                transport=net.net.open_transport(), bootstrap=(router.local_address,), rng=random.Random(7)
            ) as node:
                size = await node.bootstrap()
                assert size >= 16 and node.joined.is_set()
                assert router.node_id not in node.table  # BEP 5: routers stay out
                # ... even when the router queries us (we would otherwise verify it).
                await router.ping(node.local_address)
                await trio.sleep(2.0)
                assert router.node_id not in node.table
                # The newcomer is known to others now (they verified it).
                assert sum(node.node_id in n.table for n in net.nodes) >= 8


async def test_join_in_background_logs_instead_of_raising(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_memory_network(rng=random.Random(0)) as net:
            with caplog.at_level(logging.WARNING, logger="mainline_dht.runtime.node"):
                async with open_node(
                    transport=net.open_transport(),
                    bootstrap=(("10.99.0.1", 6881),),
                    rng=random.Random(1),
                    join=True,
                    bootstrap_timeout=2.0,
                ) as node:
                    await trio.sleep(5.0)
                    assert not node.joined.is_set()
            assert any("--bootstrap" in r.getMessage() for r in caplog.records)


async def test_a_node_whose_table_runs_empty_bootstraps_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(60, seed=8) as net:
            router = net.nodes[0]
            net.net.set_dead(router.local_address)  # down at first
            with caplog.at_level(logging.WARNING, logger="mainline_dht.runtime.node"):
                async with open_node(
                    transport=net.net.open_transport(),
                    bootstrap=(router.local_address,),
                    rng=random.Random(9),
                    bootstrap_timeout=3.0,
                ) as node:
                    # Maintenance tries, fails (logged) and backs off.
                    await trio.sleep(MAINTENANCE_INTERVAL + 3.0 + 1.0)
                    assert len(node.table) == 0
                    assert any("retrying" in r.getMessage().lower() for r in caplog.records)
                    net.net.set_dead(router.local_address, False)
                    with trio.fail_after(120.0):
                        while len(node.table) < 8:
                            await trio.sleep(1.0)
                    # Lose every contact: maintenance notices and joins again.
                    while len(node.table):  # (replacements step in for removed entries)
                        for entry in list(node.table):
                            node.table.remove(entry.id)
                    start = trio.current_time()
                    while len(node.table) < 8:
                        await trio.sleep(0.5)
                    assert trio.current_time() - start <= MAINTENANCE_INTERVAL + 5.0


async def test_a_250_node_network_fills_its_tables_by_bootstrapping(autojump_clock: trio.testing.MockClock) -> None:
    # Short latencies: the same joins, fewer distinct arrival instants (faster to simulate).
    # 250 nodes: tables several buckets deep (mean ~45 contacts) at a quarter of 500 nodes'
    # CPU time (joins cost about n²); test_simulation's churn test joins newcomers into 600
    # nodes. Joining all at once through one node meets the strangers' reply budget: over
    # seeds 10-19, a few nodes per seed end with one full bucket (8) and none near their
    # own ID, which a later bucket refresh mends; none ends with fewer.
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(250, seed=10, join="bootstrap", link=LinkModel(median_rtt=0.02)) as net:
            sizes = [len(n.table) for n in net.nodes]
            assert min(sizes) >= 8, sorted(sizes)[:10]
            assert sum(sizes) / len(sizes) >= 20
            assert all(n.joined.is_set() for n in net.nodes[1:])


# --- the node's lifetime -----------------------------------------------------------------------


async def test_open_node_raises_the_users_own_exception(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_memory_network(rng=random.Random(0)) as net:
            transport = net.open_transport()
            with pytest.raises(ValueError, match="mine") as info:
                async with open_node(transport=transport, bootstrap=(), rng=random.Random(1)):
                    raise ValueError("mine")
            assert type(info.value) is ValueError  # not an ExceptionGroup
            # A transport handed in stays the caller's: still open.
            assert not transport.closed


async def test_open_node_exits_cleanly(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_memory_network(rng=random.Random(0)) as net:
            a_t, b_t = net.open_transport(), net.open_transport()
            async with open_node(transport=b_t, bootstrap=(), rng=random.Random(2)) as b:
                async with open_node(transport=a_t, bootstrap=(), rng=random.Random(1)) as a:
                    await a.ping(b.local_address)
                    await trio.sleep(2 * MAINTENANCE_INTERVAL)  # background tasks run meanwhile
                # a is gone: its address no longer answers (its tasks stopped reading).
                with pytest.raises(QueryTimeout):
                    await b.ping(a_t.local_address, timeout=1.0)
                assert a_t.queued == 1 and not a_t.closed  # the ping waits, unread


async def test_serve_node_hands_back_a_running_node(autojump_clock: trio.testing.MockClock) -> None:
    from mainline_dht.runtime.node import serve_node

    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_memory_network(rng=random.Random(0)) as net, trio.open_nursery() as nursery:
            a = await nursery.start(
                lambda task_status: serve_node(
                    transport=net.open_transport(), bootstrap=(), rng=random.Random(1), task_status=task_status
                )
            )
            async with open_node(transport=net.open_transport(), bootstrap=(), rng=random.Random(2)) as b:
                assert (await b.ping(a.local_address)).sender_id == a.node_id
            nursery.cancel_scope.cancel()


async def test_sample_infohashes_query_over_memory(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with two_nodes() as (_, a, b):
            resp = await a.query(b.local_address, SampleInfohashes(INFO_HASH))
            assert resp.samples == () and resp.num == 0 and resp.interval == NodeConfig().sample_interval


async def test_a_dead_node_left_behind_by_a_lookup_still_counts_as_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # With early finish a lookup ends while its query to a dead node is still out;
    # that query must still time out in the core and count against the node.
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(300, seed=11, dead_fraction=0.3) as net:
            dead_ids = {c.id for c in net.dead}
            node = net.nodes[1]
            victim = next(entry for entry in node.table if entry.id in dead_ids)
            assert victim.failures == 0
            await node.find_node(victim.id)
            await trio.sleep(DEFAULT_QUERY_TIMEOUT + 1.0)
            entry = node.table.get(victim.id)
            assert entry is None or entry.failures >= 1
            assert node.proto.outstanding == 0


async def test_bootstrap_asks_again_when_the_first_queries_are_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with sim(50, seed=12) as net:
            router = net.nodes[0]
            dropped: list[object] = []

            def lose_first_to_router(packet: Packet) -> Packet | None:
                if packet.destination == router.local_address and not dropped:
                    dropped.append(packet)
                    return None
                return packet

            net.net.route_packet = lose_first_to_router
            async with open_node(
                transport=net.net.open_transport(), bootstrap=(router.local_address,), rng=random.Random(13)
            ) as node:
                size = await node.bootstrap(timeout=10.0)
                assert dropped and size >= 8


# --- BEP 42 -----------------------------------------------------------------------------------


async def test_a_node_takes_a_bep42_id_for_the_address_others_see(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Public-looking addresses (BEP 42 exempts local ones); the memory network
    # never lets a packet out. The other nodes keep their IDs, to keep this about ours.
    keep = NodeConfig(bep42_node_id=False)
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_memory_network(rng=random.Random(0), link=LinkModel(median_rtt=0.05)) as net:
            async with AsyncExitStack() as stack:
                others: list[DHTNode] = []
                for i in range(40):
                    transport = net.open_transport((f"21.0.{i + 1}.1", 6881))  # one vote per /24
                    others.append(
                        await stack.enter_async_context(
                            open_node(transport=transport, bootstrap=(), config=keep, rng=random.Random(i))
                        )
                    )
                for other in others[1:]:
                    other.bootstrap_nodes = (others[0].local_address,)
                    await other.bootstrap()
                state = tmp_path / "table.dat"
                async with open_node(
                    transport=net.open_transport(("21.9.9.9", 6881)),
                    bootstrap=(others[0].local_address,),
                    state_path=state,
                    rng=random.Random(99),
                ) as node:
                    old_id = node.node_id
                    assert not is_id_valid_for_ip(old_id, "21.9.9.9")
                    await node.bootstrap()
                    await trio.sleep(30.0)  # the lookup of the new ID, and the save
                    assert node.external_ip == "21.9.9.9"
                    assert node.node_id != old_id and is_id_valid_for_ip(node.node_id, "21.9.9.9")
                    assert node.table.own_id == node.node_id and len(node.table) >= 16
                    assert load_contacts(state)[0] == node.node_id
                    resp = await others[5].ping(node.local_address)
                    assert resp.sender_id == node.node_id
                    # A good entry keeps its ID against a newcomer at its address (no
                    # hijacking), so the nodes that knew us keep the old ID while it
                    # is good; once it is questionable (15 minutes), their check
                    # ping hears the new ID and the entry changes hands.
                    await trio.sleep(20 * 60.0)
                    assert not [o for o in others if old_id in o.proto.table]
                    new_int = int.from_bytes(node.node_id, "big")
                    closest = sorted(others, key=lambda o: int.from_bytes(o.node_id, "big") ^ new_int)[:8]
                    assert sum(node.node_id in o.proto.table for o in closest) >= 6
