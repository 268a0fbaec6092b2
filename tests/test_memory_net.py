"""Tests of mainline_dht.testing's in-memory network.

Every test that lets simulated time pass takes pytest-trio's ``autojump_clock`` fixture
(MockClock with autojump_threshold=0), so latencies cost no wall time, plus an absolute
``trio.fail_after`` on the trio clock so a lost packet fails the test instead of hanging it.
Randomness comes from seeded ``random.Random`` objects.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from mainline_dht.wire.contact import Address
from mainline_dht.testing import (
    LinkModel,
    MemoryNetwork,
    MemoryTransport,
    NetworkStats,
    Packet,
    open_memory_network,
)
from mainline_dht.runtime.transport import DatagramTransport

TIMEOUT = 600.0  # simulated seconds


async def _collect(transport: MemoryTransport, n: int) -> list[tuple[float, bytes, Address]]:
    """Receive n datagrams; return (arrival time, payload, source) for each."""
    got: list[tuple[float, bytes, Address]] = []
    while len(got) < n:
        batch = await transport.receive_batch()
        assert batch
        now = trio.current_time()
        got.extend((now, data, source) for data, source in batch)
    return got


async def _drain_for(transport: MemoryTransport, seconds: float) -> list[tuple[bytes, Address]]:
    """Receive everything that arrives within the next ``seconds`` of simulated time."""
    got: list[tuple[bytes, Address]] = []
    with trio.move_on_after(seconds):
        while True:
            got.extend(await transport.receive_batch())
    return got


# -- LinkModel --------------------------------------------------------------------------------


def test_link_model_validates() -> None:
    for bad in (
        {"median_rtt": -0.1},
        {"median_rtt": math.inf},
        {"sigma": -1.0},
        {"loss": 1.5},
        {"loss": -0.1},
        {"duplicate": 2.0},
    ):
        with pytest.raises(ValueError):
            LinkModel(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        LinkModel().loss = 0.5  # type: ignore[misc]


def test_link_model_latency_is_lognormal_around_half_the_rtt() -> None:
    rng = random.Random(1)
    link = LinkModel(median_rtt=0.2, sigma=0.5)
    draws = [link.draw_latency(rng) for _ in range(20_000)]
    assert all(d > 0 for d in draws)
    assert statistics.median(draws) == pytest.approx(0.1, rel=0.03)
    assert statistics.stdev(math.log(d) for d in draws) == pytest.approx(0.5, rel=0.03)
    assert LinkModel(median_rtt=0.2, sigma=0.0).draw_latency(rng) == 0.1


def test_network_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        MemoryNetwork(rng=random.Random(0), queue_limit=0)
    with pytest.raises(ValueError):
        MemoryNetwork(rng=random.Random(0), resolution=-1.0)


# -- basics -----------------------------------------------------------------------------------


async def test_two_transports_exchange_datagrams(autojump_clock: trio.abc.Clock) -> None:
    link = LinkModel(median_rtt=0.1, sigma=0.0)
    with trio.fail_after(TIMEOUT):
        async with open_memory_network(rng=random.Random(0), link=link) as net:
            a = net.open_transport()
            b: DatagramTransport = net.open_transport()  # mypy checks the structural match
            assert isinstance(a, DatagramTransport)
            start = trio.current_time()
            a.send(b"ping", b.local_address)
            assert await b.receive_batch() == [(b"ping", a.local_address)]
            assert trio.current_time() - start == pytest.approx(0.05)
            b.send(b"pong", a.local_address)
            assert await a.receive_batch() == [(b"pong", b.local_address)]
            assert trio.current_time() - start == pytest.approx(0.1)
            assert a.stats.sent == a.stats.received == 1
            assert net.stats == NetworkStats(sent=2, delivered=2)


async def test_auto_addresses_are_distinct_private_and_memory_only() -> None:
    net = MemoryNetwork(rng=random.Random(0))
    transports = [net.open_transport() for _ in range(1000)]
    addrs = {t.local_address for t in transports}
    assert len(addrs) == 1000 == len(net)
    for host, port in addrs:
        octets = [int(o) for o in host.split(".")]
        assert octets[0] == 10 and octets[3] not in (0, 255) and port == 6881
    explicit = net.open_transport(("192.0.2.7", 4000))
    assert explicit.local_address == ("192.0.2.7", 4000)
    assert ("192.0.2.7", 4000) in net and net.transport(("192.0.2.7", 4000)) is explicit
    with pytest.raises(OSError):
        net.open_transport(("192.0.2.7", 4000))
    with pytest.raises(ValueError):
        net.open_transport(("192.0.2.7", 0))


async def test_packets_sent_before_delivery_starts_wait(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    net = MemoryNetwork(rng=random.Random(0), link=LinkModel(median_rtt=0.02))
    a, b = net.open_transport(), net.open_transport()
    a.send(b"early", b.local_address)
    assert net.in_flight == 1
    await trio.sleep(1)
    assert b.queued == 0  # nothing delivers until the delivery task runs
    await nursery.start(net.run)
    with pytest.raises(RuntimeError):
        await nursery.start(net.run)
    with trio.fail_after(TIMEOUT):
        assert await b.receive_batch() == [(b"early", a.local_address)]
    assert net.in_flight == 0


async def test_max_count_bounds_the_batch(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0), link=LinkModel(sigma=0.0)) as net:
        a, b = net.open_transport(), net.open_transport()
        for i in range(10):
            a.send(bytes([i]), b.local_address)
        with trio.fail_after(TIMEOUT):
            first = await b.receive_batch(4)
            assert [d for d, _ in first] == [bytes([i]) for i in range(4)]
            assert [d for d, _ in await b.receive_batch()] == [bytes([i]) for i in range(4, 10)]
        with pytest.raises(ValueError):
            await b.receive_batch(0)


async def test_cancelled_receive_keeps_queued_data(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0)) as net:
        a, b = net.open_transport(), net.open_transport()
        a.send(b"kept", b.local_address)
        await trio.sleep(5)
        with trio.CancelScope() as scope:
            scope.cancel()
            await b.receive_batch()
        assert scope.cancelled_caught
        assert await b.receive_batch() == [(b"kept", a.local_address)]


async def test_oversize_send_is_dropped(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0)) as net:
        a, b = net.open_transport(), net.open_transport()
        a.send(b"x" * 65508, b.local_address)
        assert a.stats.send_dropped == 1 and a.stats.sent == 0 and net.stats.sent == 0
        buffer = bytearray(b"buffer")
        a.send(buffer, b.local_address)  # type: ignore[arg-type]  # bytes-like is copied
        buffer[:] = b"mutated"
        [(data, _)] = await b.receive_batch()
        assert type(data) is bytes and data == b"buffer"
        assert a.stats.sent == 1


async def _closing_wakes_the_receiver(transport: MemoryTransport, close: Callable[[], Awaitable[None]]) -> int:
    """Block a task in ``receive_batch``, run ``close``; return how many ClosedResourceErrors it got."""
    raised: list[BaseException] = []

    async def receiver() -> None:
        try:
            await transport.receive_batch()
        except trio.ClosedResourceError as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await close()
    return len(raised)


async def test_close_raises_closed_resource_error(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0)) as net:
        a, b = net.open_transport(), net.open_transport()
        assert await _closing_wakes_the_receiver(b, b.aclose) == 1
        assert b.closed
        await b.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await b.receive_batch()
        with pytest.raises(trio.ClosedResourceError):
            b.send(b"x", a.local_address)
        assert b.local_address not in net


async def test_open_memory_network_lets_exceptions_through_unwrapped(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with open_memory_network(rng=random.Random(0)):
            raise KeyError("mine")


# -- link model in action ---------------------------------------------------------------------


async def test_one_way_latency_statistics(autojump_clock: trio.abc.Clock) -> None:
    n = 3000
    link = LinkModel(median_rtt=0.2, sigma=0.5)
    with trio.fail_after(TIMEOUT):
        async with open_memory_network(rng=random.Random(7), link=link, resolution=0.0) as net:
            a, b = net.open_transport(), net.open_transport()
            start = trio.current_time()
            for i in range(n):
                a.send(i.to_bytes(4, "big"), b.local_address)
            got = await _collect(b, n)
    delays = [t - start for t, _, _ in got]
    assert statistics.median(delays) == pytest.approx(0.1, rel=0.05)
    assert statistics.stdev(math.log(d) for d in delays) == pytest.approx(0.5, rel=0.06)
    # Independent delays reorder packets, as on the Internet.
    order = [int.from_bytes(d, "big") for _, d, _ in got]
    assert order != sorted(order) and sorted(order) == list(range(n))


async def test_round_trip_median_is_near_configured(autojump_clock: trio.abc.Clock, nursery: trio.Nursery) -> None:
    link = LinkModel(median_rtt=0.3, sigma=0.5)
    net = MemoryNetwork(rng=random.Random(3), link=link)
    await nursery.start(net.run)
    client, server = net.open_transport(), net.open_transport()

    async def echo() -> None:
        while True:
            for data, source in await server.receive_batch():
                server.send(data, source)

    nursery.start_soon(echo)
    rtts: list[float] = []
    with trio.fail_after(TIMEOUT):
        for _ in range(1000):
            start = trio.current_time()
            client.send(b"ping", server.local_address)
            await client.receive_batch()
            rtts.append(trio.current_time() - start)
    # The sum of two log-normal one-way delays: median a little above median_rtt.
    assert 0.3 <= statistics.median(rtts) <= 0.3 * 1.2


async def test_loss_rate_is_near_configured(autojump_clock: trio.abc.Clock) -> None:
    n = 5000
    async with open_memory_network(rng=random.Random(11), link=LinkModel(loss=0.3)) as net:
        a, b = net.open_transport(), net.open_transport()
        for _ in range(n):
            a.send(b"maybe", b.local_address)
        got = await _drain_for(b, 10.0)
    assert len(got) == net.stats.delivered == n - net.stats.lost
    assert net.stats.lost / n == pytest.approx(0.3, abs=0.03)
    assert a.stats.sent == n  # the sender cannot tell


async def test_duplication_rate_is_near_configured(autojump_clock: trio.abc.Clock) -> None:
    n = 5000
    async with open_memory_network(rng=random.Random(12), link=LinkModel(duplicate=0.2)) as net:
        a, b = net.open_transport(), net.open_transport()
        for i in range(n):
            a.send(i.to_bytes(4, "big"), b.local_address)
        got = await _drain_for(b, 10.0)
    assert len(got) == n + net.stats.duplicated
    assert net.stats.duplicated / n == pytest.approx(0.2, abs=0.03)
    assert {int.from_bytes(d, "big") for d, _ in got} == set(range(n))


async def test_same_seed_gives_the_same_schedule(autojump_clock: trio.abc.Clock) -> None:
    async def schedule(seed: int) -> list[tuple[float, bytes, Address]]:
        link = LinkModel(median_rtt=0.1, loss=0.2, duplicate=0.1)
        async with open_memory_network(rng=random.Random(seed), link=link) as net:
            a, b = net.open_transport(), net.open_transport()
            start = trio.current_time()
            for i in range(200):
                a.send(i.to_bytes(2, "big"), b.local_address)
            expected = net.stats.sent - net.stats.lost + net.stats.duplicated
            return [(round(t - start, 9), d, s) for t, d, s in await _collect(b, expected)]

    with trio.fail_after(TIMEOUT):
        first = await schedule(5)
        assert await schedule(5) == first
        assert await schedule(6) != first


# -- failure modes ----------------------------------------------------------------------------


async def test_dead_node_never_answers_and_its_packets_vanish(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0)) as net:
        a, b = net.open_transport(), net.open_transport()
        net.set_dead(b.local_address)
        assert net.is_dead(b.local_address)
        a.send(b"hello?", b.local_address)
        b.send(b"can you hear me", a.local_address)
        assert await _drain_for(a, 5.0) == []
        assert b.queued == 0
        assert net.stats.to_dead == 1 and net.stats.from_dead == 1 and net.stats.delivered == 0
        assert not b.closed  # the node on it keeps running, unaware

        net.set_dead(b.local_address, False)
        a.send(b"back?", b.local_address)
        assert await b.receive_batch() == [(b"back?", a.local_address)]


async def test_packet_in_flight_to_a_node_that_dies_vanishes(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0), link=LinkModel(median_rtt=1.0, sigma=0.0)) as net:
        a, b = net.open_transport(), net.open_transport()
        a.send(b"late", b.local_address)
        await trio.sleep(0.1)
        net.set_dead(b.local_address)
        await trio.sleep(1.0)
        assert b.queued == 0 and net.stats.to_dead == 1


async def test_firewalled_node_hears_only_from_those_it_contacted(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0)) as net:
        f, a, c = net.open_transport(), net.open_transport(), net.open_transport()
        net.set_firewalled(f.local_address)
        assert net.is_firewalled(f.local_address)

        a.send(b"unsolicited", f.local_address)
        assert await _drain_for(f, 2.0) == []
        assert net.stats.firewalled == 1

        f.send(b"outbound", a.local_address)  # opens a pinhole for a
        assert await a.receive_batch() == [(b"outbound", f.local_address)]
        a.send(b"reply", f.local_address)
        c.send(b"stranger", f.local_address)
        assert await _drain_for(f, 2.0) == [(b"reply", a.local_address)]
        assert net.stats.firewalled == 2

        net.set_firewalled(f.local_address, False)
        c.send(b"now open", f.local_address)
        assert await f.receive_batch() == [(b"now open", c.local_address)]


async def test_reopened_firewalled_address_starts_without_pinholes(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0)) as net:
        f, a = net.open_transport(), net.open_transport()
        addr = f.local_address
        net.set_firewalled(addr)
        f.send(b"out", a.local_address)
        await a.receive_batch()
        await f.aclose()
        f2 = net.open_transport(addr)
        assert net.is_firewalled(addr)
        a.send(b"to the new node", addr)
        assert await _drain_for(f2, 2.0) == []


async def test_receive_queue_is_bounded(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0), queue_limit=10) as net:
        a, b = net.open_transport(), net.open_transport()
        for i in range(25):
            a.send(bytes([i]), b.local_address)
        await trio.sleep(5)
        assert b.queued == 10
        assert net.stats.overflowed == 15 and net.stats.delivered == 10
        assert len(await b.receive_batch()) == 10


async def test_route_packet_hook_can_drop_alter_delay_and_spoof(autojump_clock: trio.abc.Clock) -> None:
    link = LinkModel(median_rtt=0.1, sigma=0.0)
    async with open_memory_network(rng=random.Random(0), link=link) as net:
        a, b = net.open_transport(), net.open_transport()
        spoofed: Address = ("192.0.2.1", 1234)
        seen: list[Packet] = []

        def hook(packet: Packet) -> Packet | None:
            seen.append(packet)
            if packet.payload == b"drop":
                return None
            if packet.payload == b"alter":
                return dataclasses.replace(packet, payload=b"altered")
            if packet.payload == b"delay":
                return dataclasses.replace(packet, deliver_at=packet.deliver_at + 10.0)
            if packet.payload == b"spoof":
                return dataclasses.replace(packet, source=spoofed)
            return packet

        net.route_packet = hook
        start = trio.current_time()
        for payload in (b"drop", b"alter", b"delay", b"spoof", b"plain"):
            a.send(payload, b.local_address)
        assert [p.payload for p in seen] == [b"drop", b"alter", b"delay", b"spoof", b"plain"]
        assert seen[0] == Packet(a.local_address, b.local_address, b"drop", start + 0.05)

        got = await _collect(b, 4)
        assert [(d, s) for _, d, s in got] == [
            (b"altered", a.local_address),
            (b"spoof", spoofed),
            (b"plain", a.local_address),
            (b"delay", a.local_address),
        ]
        assert got[-1][0] - start == pytest.approx(10.05)
        assert net.stats.routed_away == 1


# -- churn ------------------------------------------------------------------------------------


async def test_remove_closes_and_a_new_transport_can_take_the_address(autojump_clock: trio.abc.Clock) -> None:
    async with open_memory_network(rng=random.Random(0)) as net:
        a, b = net.open_transport(), net.open_transport()
        addr = b.local_address

        async def remove() -> None:
            net.remove(addr)

        assert await _closing_wakes_the_receiver(b, remove) == 1
        assert b.closed and addr not in net
        net.remove(addr)  # no-op

        a.send(b"anyone?", addr)
        await trio.sleep(5)
        assert net.stats.to_unknown == 1

        b2 = net.open_transport(addr)
        a.send(b"welcome", addr)
        assert await b2.receive_batch() == [(b"welcome", a.local_address)]
        await b.aclose()  # closing the old transport must not evict the new one
        assert net.transport(addr) is b2


# -- scale ------------------------------------------------------------------------------------


async def test_ping_storm_of_1000_transports(autojump_clock: trio.abc.Clock) -> None:
    n, pings_each = 1000, 5
    link = LinkModel(median_rtt=0.1, loss=0.0)
    rng = random.Random(99)
    async with open_memory_network(rng=random.Random(42), link=link) as net:
        transports = [net.open_transport() for _ in range(n)]
        addrs = [t.local_address for t in transports]
        pongs = 0
        all_done = trio.Event()

        async def node(t: MemoryTransport) -> None:
            nonlocal pongs
            while True:
                for data, source in await t.receive_batch():
                    if data == b"ping":
                        t.send(b"pong", source)
                    else:
                        pongs += 1
                        if pongs == n * pings_each:
                            all_done.set()

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for t in transports:
                    nursery.start_soon(node, t)
                for t in transports:
                    for _ in range(pings_each):
                        t.send(b"ping", addrs[rng.randrange(n)])
                await all_done.wait()
                nursery.cancel_scope.cancel()
    assert pongs == n * pings_each
    assert net.stats.delivered == 2 * n * pings_each
    assert net.in_flight == 0
