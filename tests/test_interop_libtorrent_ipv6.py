"""Interop with libtorrent over IPv6 (BEP 32), on loopback.

libtorrent 2.1.1 sessions run their DHT over IPv6 on ``[::1]``, one port each
(``listen_interfaces='[::1]:PORT'``; ``dht_restrict_routing_ips`` off and
``dht_block_ratelimit`` raised, since all share one address: see
tools/libtorrent_net.py). On that one address our node relaxes its per-IP rules
the same way, as the loopback networks of ``demo --ipv6`` do.

- the real ``mainline-dht peers --json`` finds peers libtorrent announced over
  IPv6, and a dual-stack run finds those of both overlays;
- libtorrent finds a peer our node announced over IPv6;
- libtorrent's ``nodes6`` replies decode into its members;
- our node enters libtorrent's IPv6 routing tables.

These tests need libtorrent: they fail, never skip, without it.
"""

from __future__ import annotations

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

from libtorrent_net import LibtorrentSwarm, start_swarm
from mainline_dht.core.protocol import NodeConfig
from mainline_dht.runtime.node import DHTNode, open_node
from mainline_dht.wire.contact import Address
from mainline_dht.wire.krpc import FindNode, GetPeers

pytestmark = pytest.mark.interop

REPO_ROOT = Path(__file__).resolve().parent.parent
SWARM = 16
TEST_DEADLINE = 30.0
#: Every node on [::1]: one routing-table entry per IP and per-IP budgets would see one host.
SHARED_ADDRESS = NodeConfig(max_per_ip=None, query_rate_per_ip=None)

T = TypeVar("T")


def _ih(name: str) -> bytes:
    return hashlib.sha1(f"test_interop_libtorrent_ipv6 {name}".encode()).digest()


async def _lt(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


@pytest.fixture
def swarm6() -> Iterator[LibtorrentSwarm]:
    with start_swarm(SWARM, port=0, ipv6_only=True, seed=66) as swarm:
        swarm.wait_for_tables(min_nodes=SWARM // 2, timeout=10.0)
        for i in range(SWARM):
            s = swarm.session(i).get_settings()
            assert s["listen_interfaces"].startswith("[::1]:")
            assert s["dht_restrict_routing_ips"] is False and s["dht_block_ratelimit"] >= 1000
        assert all(a[0] == "::1" for a in swarm.addresses)
        yield swarm


def _members(swarm: LibtorrentSwarm) -> dict[Address, bytes]:
    return {swarm.addresses[i]: swarm.node_id(i) for i in range(len(swarm))}


async def _cli_peers(ih: bytes, *args: str) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    argv = [sys.executable, "-m", "mainline_dht", "peers", ih.hex(), "--json", "--timeout", "15", *args]
    proc = await trio.run_process(argv, env=env, cwd=REPO_ROOT, capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


async def test_their_nodes6_decode_and_our_node_enters_their_ipv6_tables(swarm6: LibtorrentSwarm) -> None:
    sw = swarm6
    members = await _lt(_members, sw)
    with trio.fail_after(TEST_DEADLINE):
        async with open_node(("::1", 0), bootstrap=(), config=SHARED_ADDRESS, rng=random.Random(1)) as node:
            me = node.local_address
            target = sw.addresses[3]
            resp = await node.query(target, FindNode(node.node_id))
            assert resp.sender_id == members[target]
            assert resp.nodes == () and len(resp.nodes6) == 8
            known = {**members, me: node.node_id}
            for contact in resp.nodes6:
                assert known.get(contact.addr) == contact.id, contact
            resp = await node.query(target, GetPeers(_ih("nothing")))
            assert resp.token and resp.values == () and len(resp.nodes6) == 8
            assert resp.ip == me  # BEP 42 over IPv6

            for i in range(len(sw)):
                await _lt(sw.add_node, i, me)
            entry = (node.node_id, me)
            missing = list(range(len(sw)))
            with trio.move_on_after(10.0):
                while missing:
                    missing = [i for i in missing if entry not in await _lt(sw.routing_table, i)]
                    if missing:
                        await trio.sleep(0.05)
            assert missing == []
            stats = node.proto.stats
            assert stats.queries_by_method.get(b"get_peers", 0) >= len(sw)  # their liveness check
            assert stats.errors_sent == 0 and stats.malformed == 0
            # We learned them too, in our IPv6 table.
            assert len(node.table) >= 8 and all(e.addr[0] == "::1" for e in node.table)


async def test_cli_peers_finds_what_libtorrent_announced_over_ipv6(swarm6: LibtorrentSwarm) -> None:
    sw = swarm6
    ih = _ih("cli")
    announcers = {4: 6004, 9: 6009, 13: 6013}
    with trio.fail_after(TEST_DEADLINE):
        for i, port in announcers.items():
            assert await _lt(sw.announce, i, ih, port) > 0
        host, port = sw.addresses[0]
        lines = await _cli_peers(ih, "--bootstrap", f"[{host}]:{port}", "--bind", "[::1]:0")
    peers = [(e["ip"], e["port"]) for e in lines if e["event"] == "peer"]
    assert sorted(peers) == sorted(("::1", p) for p in announcers.values())
    done = lines[-1]
    assert done["event"] == "done" and done["peers"] == 3 and done["timeouts"] == 0


async def test_libtorrent_finds_the_peer_we_announce_over_ipv6(swarm6: LibtorrentSwarm) -> None:
    sw = swarm6
    ih = _ih("we announce")
    with trio.fail_after(TEST_DEADLINE):
        async with open_node(
            ("::1", 0), bootstrap=(sw.addresses[1],), config=SHARED_ADDRESS, rng=random.Random(2)
        ) as node:
            assert node.family == 6
            await node.bootstrap(timeout=5.0)
            accepted = await node.announce(ih, 4711)
            assert accepted == node.proto.config.k
            received = [a for i in range(len(sw)) for a in await _lt(sw.incoming_announces, i) if a.info_hash == ih]
            assert len(received) == accepted
            assert {(a.ip, a.port) for a in received} == {("::1", 4711)}
            for i in (2, 8, 15):
                result = await _lt(sw.get_peers, i, ih)
                assert result.stats.completed
                assert result.peers == [("::1", 4711)]


async def test_a_dual_stack_lookup_finds_peers_of_both_libtorrent_overlays() -> None:
    """A dual-stack libtorrent swarm (127.0.66.x and [::1]); libtorrent announces in
    both of its DHTs, and our dual-stack ``peers`` finds the peer in each family."""
    ih = _ih("dual")
    with start_swarm(SWARM, first_ip="127.0.66.1", port=0, ipv6_port=0, seed=64) as sw:
        await _lt(sw.wait_for_tables, SWARM, 10.0)
        with trio.fail_after(TEST_DEADLINE):
            assert await _lt(sw.announce, 7, ih, 6007) > 0
            boot4, boot6 = sw.addresses[0], sw.addresses6[0]
            lines = await _cli_peers(
                ih, "--bootstrap", f"{boot4[0]}:{boot4[1]}", "--bootstrap", f"[{boot6[0]}]:{boot6[1]}",
                "--bind", "127.0.66.200:0", "--bind", "[::1]:0",
            )  # fmt: skip
    peers = sorted((e["ip"], e["port"]) for e in lines if e["event"] == "peer")
    assert peers == sorted([("127.0.66.8", 6007), ("::1", 6007)])
