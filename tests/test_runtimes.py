"""The behaviour that matters, on both runtimes: the trio node and the asyncio node.

Each test body is written once against what the two nodes share (``open_node``,
``bootstrap``, ``get_peers`` as ``async with ... as peers: async for peer in peers``,
``announce``, ``find_node``, ``ping``, ``stats``, the state file) and runs under
``trio.run`` and under ``asyncio.run`` through the ``rt`` fixture. Real UDP on
127.0.52.x (127.0.0.1 where only that is routed), port 0, the real clock, and a
timeout around each run; assertions are on outcomes, never on wall time.
"""

from __future__ import annotations

import os

import asyncio
import random
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from mainline_dht.core.protocol import NodeConfig
from mainline_dht.errors import BootstrapError, QueryTimeout
from mainline_dht.runtime import aio
from mainline_dht.runtime import node as trio_node
from mainline_dht.runtime.state_file import load_contacts
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Address

from loopback import LoopbackRange

TIMEOUT = 30.0  # seconds of real time per test; loopback needs far less
INFO_HASH = bytes(range(140, 160))
NETWORK = 12  # nodes per test network


#: The i-th node's bind address: 127.0.52.i.
bind = LoopbackRange("127.0.52")
_SPREAD = bind.spread


def _config() -> NodeConfig:
    # Where everything shares 127.0.0.1, the table must take one address many times.
    return NodeConfig() if _SPREAD else NodeConfig(max_per_ip=None, query_rate_per_ip=None)


class Runtime:
    """What a test body needs from a runtime: run, open a node, sleep, run tasks at once."""

    name: str

    def run(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        raise NotImplementedError

    def open_node(self, bind: Address, **options: Any) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def gather(self, coros: Sequence[Awaitable[Any]]) -> list[Any]:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError


class TrioRuntime(Runtime):
    name = "trio"

    def run(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            with trio.fail_after(TIMEOUT):
                await body()

        trio.run(main)

    def open_node(self, bind: Address, **options: Any) -> AbstractAsyncContextManager[Any]:
        return trio_node.open_node(bind, **options)

    async def gather(self, coros: Sequence[Awaitable[Any]]) -> list[Any]:
        results: list[Any] = [None] * len(coros)

        async def one(i: int, c: Awaitable[Any]) -> None:
            results[i] = await c

        async with trio.open_nursery() as nursery:
            for i, c in enumerate(coros):
                nursery.start_soon(one, i, c)
        return results

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


class AsyncioRuntime(Runtime):
    name = "asyncio"

    def run(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            await asyncio.wait_for(body(), TIMEOUT)

        asyncio.run(main())

    def open_node(self, bind: Address, **options: Any) -> AbstractAsyncContextManager[Any]:
        return aio.open_node(bind, **options)

    async def gather(self, coros: Sequence[Awaitable[Any]]) -> list[Any]:
        return list(await asyncio.gather(*coros))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.fixture(params=[TrioRuntime(), AsyncioRuntime()], ids=lambda r: r.name)
def rt(request: pytest.FixtureRequest) -> Runtime:
    runtime: Runtime = request.param
    return runtime


async def receive(rt: Runtime, sock: socket.socket) -> bytes:
    """One datagram from a non-blocking socket, polling without blocking the event loop."""
    while True:
        try:
            return sock.recv(2048)
        except BlockingIOError:
            await rt.sleep(0.01)


@asynccontextmanager
async def network(rt: Runtime, n: int = NETWORK, *, first: int = 1) -> AsyncIterator[list[Any]]:
    """``n`` nodes of the runtime on loopback; the first is the others' router, and all joined."""
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                rt.open_node(bind(first), bootstrap=(), rng=random.Random(f"rt:{first}"), config=_config())
            )
        ]
        router = nodes[0].local_address
        for i in range(first + 1, first + n):
            nodes.append(
                await stack.enter_async_context(
                    rt.open_node(
                        bind(i), bootstrap=(router,), rng=random.Random(f"rt:{i}"), config=_config(), bootstrap_timeout=5.0
                    )
                )
            )
        # Join one after another, then refresh: every table holds most of the network.
        for node in nodes[1:]:
            await node.bootstrap()
        await rt.gather([node.refresh_buckets(not_full=True) for node in nodes])
        yield nodes


def test_join_lookup_and_announce(rt: Runtime) -> None:
    async def body() -> None:
        async with network(rt) as nodes:
            assert all(len(n.table) >= 4 for n in nodes), [len(n.table) for n in nodes]
            assert all(n.joined.is_set() for n in nodes[1:])
            a, b = nodes[2], nodes[-1]
            acks = await a.announce(INFO_HASH, 51413)
            assert acks >= 6
            holders = [n for n in nodes if n.stats.stored_peers]
            assert len(holders) == acks
            found = []
            async with b.get_peers(INFO_HASH) as peers:
                async for peer in peers:
                    found.append(peer)
            assert found == [(a.local_address[0], 51413)]
            st = peers.stats
            assert st.finished_at is not None and st.first_peer_at is not None
            assert peers.found_at(found[0]) == st.first_peer_at
            # implied_port: the holders store our UDP source port.
            assert await b.announce(INFO_HASH) >= 6
            seen = []
            async with a.get_peers(INFO_HASH) as peers:
                async for peer in peers:
                    seen.append(peer)
            assert b.local_address in seen
            # find_node converges on the nodes closest to the target.
            target = random.Random(7).randbytes(20)
            closest = await nodes[5].find_node(target)
            t = int.from_bytes(target, "big")
            truth = sorted(
                (n.node_id for n in nodes if n is not nodes[5]), key=lambda i: int.from_bytes(i, "big") ^ t
            )
            # (A lost datagram may leave one of the eight out; the closest is never missed.)
            ids = [c.id for c in closest]
            assert ids[0] == truth[0] and len(set(ids) & set(truth[:8])) >= 6
            reply = await a.ping(b.local_address)
            assert reply.sender_id == b.node_id

    rt.run(body)


def test_restart_from_the_state_file_without_routers(rt: Runtime, tmp_path: Path) -> None:
    state = tmp_path / "dht.dat"

    async def body() -> None:
        async with network(rt, 8) as nodes:
            router = nodes[0].local_address
            async with rt.open_node(
                bind(30), bootstrap=(router,), state_path=state, rng=random.Random("rt:30"), config=_config()
            ) as node:
                await node.bootstrap()
                first_id = node.node_id
                assert len(node.table) >= 4
            own, saved = load_contacts(state)
            assert own == first_id and len(saved) >= 4
            # Back, with no routers at all: the saved contacts are enough to join.
            async with rt.open_node(
                bind(30), bootstrap=(), state_path=state, rng=random.Random("rt:30b"), config=_config()
            ) as node:
                assert node.node_id == first_id
                assert await node.bootstrap() >= 4
                assert node.joined.is_set()

    rt.run(body)


def test_garbage_datagrams_are_dropped_and_the_node_carries_on(rt: Runtime) -> None:
    async def body() -> None:
        async with rt.open_node(bind(40), bootstrap=(), rng=random.Random("rt:40"), config=_config()) as node:
            addr = node.local_address
            rng = random.Random(1)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((bind(41)[0], 0))
                s.setblocking(False)
                # A malformed query with a transaction ID gets a KRPC error (203) back.
                bad = bencode.encode({b"t": b"xy", b"y": b"q", b"q": b"find_node", b"a": {b"id": b"abc"}})
                s.sendto(bad, addr)
                reply = await receive(rt, s)
                assert b"1:y1:e" in reply and b"i203e" in reply
                # Then a burst of garbage (under the per-IP budget: these are dropped as
                # malformed, not as a flood).
                garbage = [rng.randbytes(rng.randrange(1, 300)) for _ in range(12)]
                garbage += [b"", b"d", b"de", b"le", b"i1e", b"d1:y1:qe", b"d1:t2:ab1:y1:q1:q4:pinge"]
                for g in garbage:
                    s.sendto(g, addr)
            # Still serving: another node pings it.
            async with rt.open_node(bind(42), bootstrap=(), rng=random.Random("rt:42"), config=_config()) as other:
                assert (await other.ping(addr)).sender_id == node.node_id
            st = node.stats
            assert st.malformed >= len(garbage) - 1 and st.internal_errors == 0 and st.queries_rate_limited == 0

    rt.run(body)


def test_bootstrap_failure_is_a_bootstrap_error(rt: Runtime) -> None:
    async def body() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind((bind(50)[0], 0))  # bound, never answers
            async with rt.open_node(
                bind(51), bootstrap=(silent.getsockname(),), rng=random.Random("rt:51"), config=_config()
            ) as node:
                with pytest.raises(BootstrapError, match="--bootstrap"):
                    await node.bootstrap(timeout=0.5)
                assert not node.joined.is_set()
                with pytest.raises(QueryTimeout):
                    await node.ping(silent.getsockname(), timeout=0.2)

    rt.run(body)


def test_the_asyncio_node_runs_without_trio() -> None:
    code = (
        "import asyncio, sys\n"
        "from mainline_dht import aio\n"
        "async def main():\n"
        "    async with aio.open_node(('127.0.0.1', 0), bootstrap=()) as a, aio.open_node(('127.0.0.1', 0), bootstrap=()) as b:\n"
        "        r = await a.ping(b.local_address)\n"
        "        assert r.sender_id == b.node_id\n"
        "asyncio.run(main())\n"
        "assert 'trio' not in sys.modules, 'trio was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback() and not os.environ.get("CI"), reason="no ::1 on this host")
def test_an_ipv6_node_answers_on_ipv6(rt: Runtime) -> None:
    async def body() -> None:
        async with rt.open_node(("::1", 0), bootstrap=(), rng=random.Random("rt:v6a"), config=_config()) as a:
            async with rt.open_node(("::1", 0), bootstrap=(), rng=random.Random("rt:v6b"), config=_config()) as b:
                assert a.local_address[0] == "::1"
                assert (await a.ping(b.local_address)).sender_id == b.node_id
                st = b.stats
                assert st.queries_received >= 1 and st.replies_sent == st.queries_received

    rt.run(body)


def test_leaving_get_peers_early_stops_the_lookup(rt: Runtime) -> None:
    async def body() -> None:
        async with network(rt, 10, first=60) as nodes:
            for i, n in enumerate(nodes[1:4]):
                assert await n.announce(INFO_HASH, 7000 + i) >= 6
            seeker = nodes[-1]
            async with seeker.get_peers(INFO_HASH) as peers:
                async for _ in peers:
                    break  # one peer is enough
            assert not seeker._ops  # the lookup was abandoned: no handler waits for it
            assert peers.stats.peers >= 1
            # The queries it left behind run out in the core.
            for _ in range(500):
                if seeker.stats.outstanding == 0:
                    break
                await rt.sleep(0.01)
            assert seeker.stats.outstanding == 0

    rt.run(body)
