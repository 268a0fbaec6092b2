"""Dual-stack nodes (BEP 32) on the in-memory network, under trio's virtual clock.

A mixed network: some nodes IPv4 only, some IPv6 only, some both. Lookups find
the peers announced in either overlay, and a peer of one family only where
that family's overlay has it. Outcomes only, never task interleavings.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from mainline_dht.errors import LocalProtocolError
from mainline_dht.runtime.node import DHTNode, open_node
from mainline_dht.runtime.state_file import load_state
from mainline_dht.testing import LinkModel, MemoryNetwork, open_memory_network
from mainline_dht.wire.contact import Address
from mainline_dht.wire.krpc import FindNode

VIRTUAL_LIMIT = 3600.0


def v4(i: int) -> Address:
    return (f"10.0.{i // 250}.{i % 250 + 1}", 6881)


def v6(i: int) -> Address:
    return (f"fd00::{i + 1:x}", 6881)


@dataclass
class Mixed:
    net: MemoryNetwork
    v4_only: list[DHTNode]
    v6_only: list[DHTNode]
    dual: list[DHTNode]


@asynccontextmanager
async def mixed_network(per_kind: int = 8, *, seed: int = 0) -> AsyncIterator[Mixed]:
    """``per_kind`` nodes of each kind; every node joins through dual-stack node 0's sockets."""
    async with open_memory_network(rng=random.Random(seed), link=LinkModel(median_rtt=0.05)) as net:
        async with AsyncExitStack() as stack:
            out = Mixed(net, [], [], [])
            seed4, seed6 = v4(0), v6(0)
            n = 0
            for kind in ("dual", "v4", "v6"):
                for _ in range(per_kind):
                    transports = []
                    if kind in ("dual", "v4"):
                        transports.append(net.open_transport(v4(n)))
                    if kind in ("dual", "v6"):
                        transports.append(net.open_transport(v6(n)))
                    boot = [a for a in (seed4, seed6) if a not in (v4(n), v6(n))]
                    node = await stack.enter_async_context(
                        open_node(transport=transports, bootstrap=boot, rng=random.Random(f"{seed}:{n}"))
                    )
                    {"dual": out.dual, "v4": out.v4_only, "v6": out.v6_only}[kind].append(node)
                    n += 1
            everyone = out.dual + out.v4_only + out.v6_only
            for node in everyone[1:]:
                await node.bootstrap()
            # A second round fills the tables of the first joiners.
            for node in everyone:
                await node.refresh_buckets(not_full=True)
            yield out


async def peers_of(node: DHTNode, info_hash: bytes) -> set[Address]:
    async with node.get_peers(info_hash) as stream:
        return {p async for p in stream}


async def test_mixed_network_lookups_find_peers_in_either_overlay(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with mixed_network() as m:
            dual, only4, only6 = m.dual, m.v4_only, m.v6_only
            assert [o.family for o in dual[1].overlays] == [4, 6]
            assert [o.family for o in only6[0].overlays] == [6]
            # Each overlay's tables hold their own family only, and fill up.
            for node in dual + only4 + only6:
                for o in node.overlays:
                    assert len(o.table) >= 8
                    assert all((":" in e.addr[0]) == (o.family == 6) for e in o.table)
            ih_dual = hashlib.sha1(b"announced by a dual-stack node").digest()
            ih_v6 = hashlib.sha1(b"announced over IPv6 only").digest()
            ih_v4 = hashlib.sha1(b"announced over IPv4 only").digest()
            assert await dual[3].announce(ih_dual, 7000) >= 8  # 8 closest in each overlay
            assert await only6[2].announce(ih_v6, 7006) > 0
            assert await only4[2].announce(ih_v4, 7004) > 0
            both = {(v4(3)[0], 7000), (v6(3)[0], 7000)}
            peer6 = {(only6[2].local_address[0], 7006)}
            peer4 = {(only4[2].local_address[0], 7004)}
            # A dual-stack node finds peers of both families, each once.
            assert await peers_of(dual[5], ih_dual) == both
            assert await peers_of(dual[5], ih_v6) == peer6
            assert await peers_of(dual[5], ih_v4) == peer4
            # A single-family node finds the peers its overlay has, and only those.
            assert await peers_of(only4[5], ih_dual) == {(v4(3)[0], 7000)}
            assert await peers_of(only6[5], ih_dual) == {(v6(3)[0], 7000)}
            assert await peers_of(only6[5], ih_v6) == peer6
            assert await peers_of(only4[5], ih_v6) == set()
            assert await peers_of(only6[5], ih_v4) == set()
            # The merged stream reports each overlay's lookup, and their sum.
            async with dual[6].get_peers(ih_dual) as stream:
                found = [p async for p in stream]
            assert sorted(found) == sorted(both) and len(found) == 2
            per_family = stream.stats_by_family
            assert set(per_family) == {4, 6} and all(s.replies > 0 for s in per_family.values())
            assert stream.stats.replies == sum(s.replies for s in per_family.values())
            assert stream.stats.peers == 2 and stream.stats.elapsed is not None


async def test_queries_go_out_through_the_overlay_of_the_address_family(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with mixed_network(per_kind=3) as m:
            a = m.dual[1]
            only4 = m.v4_only[0]
            r6 = await a.ping(m.v6_only[0].local_address)
            assert r6.sender_id == m.v6_only[0].node_id and r6.ip == a.overlay(6).local_address  # type: ignore[union-attr]
            r4 = await a.ping(only4.local_address)
            assert r4.ip == a.local_address
            # find_node works in either overlay; the IPv6 one returns IPv6 contacts.
            found = await a.find_node(m.v6_only[1].node_id, family=6)
            assert found and all(":" in c.addr[0] for c in found)
            resp = await a.query(m.dual[0].overlay(6).local_address, FindNode(a.node_id))  # type: ignore[union-attr]
            assert resp.nodes6 and not resp.nodes
            resp = await a.sample_infohashes(m.v6_only[0].local_address)
            assert resp.num == 0
            # A single-family node says plainly that it cannot reach the other family.
            with pytest.raises(LocalProtocolError, match="no IPv6 socket"):
                await only4.ping(m.v6_only[0].local_address)
            with pytest.raises(LocalProtocolError):
                await only4.find_node(a.node_id, family=6)


async def test_the_memory_network_hands_out_fresh_ipv6_addresses(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_network(rng=random.Random(0)) as net:
        t4, t6a, t6b = net.open_transport(), net.open_transport(family=6), net.open_transport(family=6)
        assert t4.local_address[0].startswith("10.")
        assert (t6a.local_address[0], t6b.local_address[0]) == ("fd00::1", "fd00::2")
        async with open_node(transport=[t6a, t4], bootstrap=(), rng=random.Random(1)) as a:
            async with open_node(transport=t6b, bootstrap=(), rng=random.Random(2)) as b:
                assert [o.family for o in a.overlays] == [4, 6]
                assert (await b.ping(t6a.local_address)).sender_id == a.overlay(6).node_id  # type: ignore[union-attr]


async def test_one_transport_per_family(autojump_clock: trio.testing.MockClock) -> None:
    async with open_memory_network(rng=random.Random(0)) as net:
        with pytest.raises(LocalProtocolError):
            async with open_node(transport=[net.open_transport(v4(1)), net.open_transport(v4(2))], bootstrap=()):
                pass


async def test_a_dual_stack_node_saves_both_tables_and_rejoins_from_them(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    state = tmp_path / "dual.dat"
    with trio.fail_after(VIRTUAL_LIMIT):
        async with mixed_network(per_kind=4) as m:
            net = m.net
            transports = [net.open_transport(("10.9.0.1", 6881)), net.open_transport(("fd00::9:1", 6881))]
            boot = [m.dual[0].local_address, m.dual[0].overlay(6).local_address]  # type: ignore[union-attr]
            async with open_node(transport=transports, bootstrap=boot, state_path=state, rng=random.Random(9)) as a:
                await a.bootstrap()
                ids = {o.family: o.node_id for o in a.overlays}
                sizes = {o.family: len(o.table) for o in a.overlays}
            for t in transports:
                await t.aclose()
            saved = load_state(state)
            assert saved.ids == ids and {f: len(c) for f, c in saved.contacts.items()} == sizes
            assert all(":" in c.addr[0] for c in saved.contacts[6]) and sizes[6] > 0 and sizes[4] > 0
            # Restarted without routers: each overlay rejoins from its own saved contacts.
            transports = [net.open_transport(("10.9.0.1", 6881)), net.open_transport(("fd00::9:1", 6881))]
            async with open_node(transport=transports, bootstrap=(), state_path=state, rng=random.Random(10)) as b:
                assert {o.family: o.node_id for o in b.overlays} == ids
                await b.bootstrap()
                assert all(len(o.table) > 0 for o in b.overlays)
                assert all((":" in e.addr[0]) == (o.family == 6) for o in b.overlays for e in o.table)


async def test_an_overlay_without_routers_retries_quietly_while_the_other_works(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with mixed_network(per_kind=3) as m:
            net = m.net
            transports = [net.open_transport(("10.8.0.1", 6881)), net.open_transport(("fd00::8:1", 6881))]
            # Only an IPv4 router: the IPv6 overlay has nothing to join through.
            async with open_node(transport=transports, bootstrap=[m.dual[0].local_address], rng=random.Random(3)) as a:
                await a.bootstrap()
                assert len(a.table) > 0 and len(a.overlay(6).table) == 0  # type: ignore[union-attr]
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="mainline_dht.runtime.node"):
                    await trio.sleep(120)
                retries = [r for r in caplog.records if "IPv6:" in r.getMessage()]
                assert retries and all(r.levelno == logging.INFO for r in retries)
