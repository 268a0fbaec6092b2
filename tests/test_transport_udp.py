"""Tests of mainline_dht.runtime.transport over real UDP sockets.

Rules: loopback addresses only (127.0.0.x, ::1), the real trio clock, and a short absolute
``trio.fail_after`` around each test so a lost datagram fails fast instead of hanging.
"""

from __future__ import annotations

import os

import socket
import sys

import pytest
import trio
import trio.testing

from mainline_dht.wire.contact import Address
from mainline_dht.runtime.transport import (
    DEFAULT_RECEIVE_BATCH,
    DatagramTransport,
    TransportStats,
    UDPTransport,
    open_udp_transport,
)

TIMEOUT = 5.0  # seconds; generous for loopback, short enough to fail fast


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback() and not os.environ.get("CI"), reason="no IPv6 loopback on this machine")


async def _receive_n(transport: UDPTransport, n: int) -> tuple[list[tuple[bytes, Address]], list[int]]:
    """Receive exactly n datagrams; return them and the size of each batch."""
    got: list[tuple[bytes, Address]] = []
    sizes: list[int] = []
    while len(got) < n:
        batch = await transport.receive_batch()
        assert batch, "receive_batch must never return an empty batch"
        sizes.append(len(batch))
        got.extend(batch)
    return got, sizes


async def test_two_transports_exchange_datagrams() -> None:
    with trio.fail_after(TIMEOUT):
        async with await open_udp_transport("127.0.0.1", 0) as a, await open_udp_transport("127.0.0.1", 0) as b:
            assert a.local_address[0] == "127.0.0.1" and a.local_address[1] != 0
            assert a.local_address != b.local_address

            a.send(b"ping", b.local_address)
            [(data, source)] = await b.receive_batch()
            assert (data, source) == (b"ping", a.local_address)

            b.send(b"pong", source)
            [(data, source)] = await a.receive_batch()
            assert (data, source) == (b"pong", b.local_address)

            assert a.stats == TransportStats(sent=1, received=1, send_dropped=0, receive_errors=0)
            assert b.stats == TransportStats(sent=1, received=1, send_dropped=0, receive_errors=0)


async def test_transport_satisfies_the_protocol() -> None:
    async with await open_udp_transport("127.0.0.1", 0) as t:
        as_protocol: DatagramTransport = t  # mypy checks the structural match
        assert isinstance(as_protocol, DatagramTransport)
        assert repr(t).startswith("<UDPTransport 127.0.0.1:")


async def test_burst_of_1000_is_received_in_batches() -> None:
    count = 1000
    async with await open_udp_transport("127.0.0.1", 0) as a, await open_udp_transport("127.0.0.1", 0) as b:
        granted = b._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if granted < 2 * 1024 * 1024:
            pytest.skip(f"kernel granted only {granted} bytes of receive buffer; a 1000-datagram burst may overflow")
        with trio.fail_after(TIMEOUT):
            for i in range(count):
                a.send(i.to_bytes(4, "big") + b"x" * 60, b.local_address)
            got, sizes = await _receive_n(b, count)
    assert [int.from_bytes(d[:4], "big") for d, _ in got] == list(range(count))
    assert {addr for _, addr in got} == {a.local_address}
    # Everything was queued before the first receive, so the first batch is a full one.
    assert sizes[0] == DEFAULT_RECEIVE_BATCH
    assert max(sizes) <= DEFAULT_RECEIVE_BATCH
    assert b.stats.received == count and a.stats.sent == count


async def test_max_count_bounds_the_batch() -> None:
    with trio.fail_after(TIMEOUT):
        async with await open_udp_transport("127.0.0.1", 0) as a, await open_udp_transport("127.0.0.1", 0) as b:
            for i in range(10):
                a.send(bytes([i]), b.local_address)
            first = await b.receive_batch(3)
            assert [d for d, _ in first] == [b"\x00", b"\x01", b"\x02"]
            rest, _ = await _receive_n(b, 7)
            assert [d for d, _ in rest] == [bytes([i]) for i in range(3, 10)]
            with pytest.raises(ValueError):
                await b.receive_batch(0)


async def test_send_to_closed_port_does_not_raise_and_receiving_continues() -> None:
    with trio.fail_after(TIMEOUT):
        async with await open_udp_transport("127.0.0.1", 0) as a, await open_udp_transport("127.0.0.1", 0) as b:
            gone = await open_udp_transport("127.0.0.1", 0)
            gone_addr = gone.local_address
            await gone.aclose()

            for _ in range(3):
                a.send(b"into the void", gone_addr)
            await trio.sleep(0.05)  # let any ICMP port-unreachable come back
            b.send(b"still alive", a.local_address)
            a.send(b"more void", gone_addr)
            got = await a.receive_batch()
            assert got == [(b"still alive", b.local_address)]
            assert a.stats.received == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux-only")
async def test_icmp_errors_on_receive_are_counted_and_skipped() -> None:
    # With IP_RECVERR, Linux reports ICMP port-unreachable on an unconnected UDP socket as
    # ECONNREFUSED from the next recvfrom, which is how BSD/Windows behave by default.
    ip_recverr = getattr(socket, "IP_RECVERR", 11)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.setsockopt(socket.IPPROTO_IP, ip_recverr, 1)
    with trio.fail_after(TIMEOUT):
        async with UDPTransport.from_socket(raw) as a, await open_udp_transport("127.0.0.1", 0) as b:
            gone = await open_udp_transport("127.0.0.1", 0)
            gone_addr = gone.local_address
            await gone.aclose()

            a.send(b"into the void", gone_addr)
            # Wait until the error has been seen: receive_batch wakes on it, counts it, goes on
            # waiting, and returns the real datagram that follows.
            with trio.move_on_after(1.0):
                while a.stats.receive_errors == 0:
                    await trio.sleep(0.01)
                    b.send(b"nudge", a.local_address)
                    await a.receive_batch()
            assert a.stats.receive_errors >= 1
            b.send(b"after the error", a.local_address)
            while True:
                batch = await a.receive_batch()
                if (b"after the error", b.local_address) in batch:
                    break


async def test_oversize_send_is_dropped_not_raised() -> None:
    async with await open_udp_transport("127.0.0.1", 0) as a, await open_udp_transport("127.0.0.1", 0) as b:
        a.send(b"x" * 70_000, b.local_address)  # larger than any UDP payload: EMSGSIZE
        assert a.stats.send_dropped == 1 and a.stats.sent == 0
        a.send(b"fits", b.local_address)
        with trio.fail_after(TIMEOUT):
            assert await b.receive_batch() == [(b"fits", a.local_address)]


async def test_close_wakes_a_waiting_receiver() -> None:
    t = await open_udp_transport("127.0.0.1", 0)
    raised: list[BaseException] = []

    async def receiver() -> None:
        try:
            await t.receive_batch()
        except trio.ClosedResourceError as exc:
            raised.append(exc)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await t.aclose()
    assert len(raised) == 1
    assert t.closed


async def test_use_after_close_raises_closed_resource_error() -> None:
    async with await open_udp_transport("127.0.0.1", 0) as other:
        t = await open_udp_transport("127.0.0.1", 0)
        await t.aclose()
        await t.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await t.receive_batch()
        with pytest.raises(trio.ClosedResourceError):
            t.send(b"x", other.local_address)


async def test_cancelled_receive_leaves_the_transport_usable() -> None:
    with trio.fail_after(TIMEOUT):
        async with await open_udp_transport("127.0.0.1", 0) as a, await open_udp_transport("127.0.0.1", 0) as b:
            with trio.move_on_after(0.01) as scope:
                await b.receive_batch()
            assert scope.cancelled_caught
            a.send(b"later", b.local_address)
            assert await b.receive_batch() == [(b"later", a.local_address)]


async def test_receive_checkpoints_even_when_data_is_ready() -> None:
    async with await open_udp_transport("127.0.0.1", 0) as a, await open_udp_transport("127.0.0.1", 0) as b:
        a.send(b"queued", b.local_address)
        await trio.sleep(0.05)
        with trio.CancelScope() as scope:
            scope.cancel()
            await b.receive_batch()
        assert scope.cancelled_caught
        # The datagram was not consumed by the cancelled call.
        with trio.fail_after(TIMEOUT):
            assert await b.receive_batch() == [(b"queued", a.local_address)]


async def test_from_trio_socket_takes_over_the_descriptor() -> None:
    tsock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await tsock.bind(("127.0.0.1", 0))
    bound = tsock.getsockname()
    with trio.fail_after(TIMEOUT):
        async with UDPTransport.from_socket(tsock) as t, await open_udp_transport("127.0.0.1", 0) as other:
            assert t.local_address == bound
            assert tsock.fileno() == -1  # detached
            other.send(b"hi", t.local_address)
            assert await t.receive_batch() == [(b"hi", other.local_address)]


def test_from_socket_rejects_stream_sockets() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(ValueError):
            UDPTransport.from_socket(s)


async def test_bind_conflict_raises_oserror() -> None:
    async with await open_udp_transport("127.0.0.1", 0) as t:
        with pytest.raises(OSError):
            await open_udp_transport("127.0.0.1", t.local_address[1])


@needs_ipv6
async def test_ipv6_addresses_are_host_port_pairs() -> None:
    with trio.fail_after(TIMEOUT):
        async with await open_udp_transport("::1", 0) as a, await open_udp_transport("::1", 0) as b:
            assert len(a.local_address) == 2 and a.local_address[0] == "::1"
            a.send(b"six", b.local_address)
            [(data, source)] = await b.receive_batch()
            assert data == b"six"
            assert source == a.local_address
            assert type(source) is tuple and len(source) == 2


@needs_ipv6
async def test_dual_stack_socket_reports_ipv4_sources_as_ipv4() -> None:
    raw = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        raw.bind(("::", 0))  # all interfaces, but only loopback traffic is sent below
    except OSError as exc:
        raw.close()
        pytest.skip(f"no dual-stack sockets here: {exc}")
    with trio.fail_after(TIMEOUT):
        async with UDPTransport.from_socket(raw) as dual, await open_udp_transport("127.0.0.1", 0) as v4:
            v4.send(b"from v4", ("127.0.0.1", dual.local_address[1]))
            [(data, source)] = await dual.receive_batch()
            assert (data, source) == (b"from v4", v4.local_address)
            dual.send(b"back", source)  # a plain IPv4 destination on an IPv6 socket
            assert await v4.receive_batch() == [(b"back", ("127.0.0.1", dual.local_address[1]))]
