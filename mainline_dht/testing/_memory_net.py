"""An in-memory datagram network for tests and simulations under trio's MockClock.

This module owns :class:`MemoryNetwork`, its :class:`MemoryTransport` endpoints (which implement
:class:`mainline_dht.runtime.transport.DatagramTransport`), the :class:`LinkModel` of latency, loss and
duplication, and the :class:`Packet` value seen by the ``route_packet`` hook. No packet ever
touches a real socket: the 10.x.y.z addresses it hands out exist only in memory.

It may import trio, the standard library and :mod:`mainline_dht.runtime.transport` /
:mod:`mainline_dht.wire.contact`; it must not import the protocol layers or the node.

Design (after trio's private ``FakeNet``, written afresh):

- Every random draw (loss, duplication, one-way latency) happens in ``send``, from the network's
  ``rng``, so the packet schedule is fixed at send time rather than by which task runs first.
- Packets wait in one heap ordered by ``(deliver_at, seq)``; ONE delivery task per network
  (:meth:`MemoryNetwork.run`) pops them when their time comes and puts them in the destination's
  bounded queue. There is no task per packet or per link, so 10,000 transports and millions of
  packets cost heap operations only. Run the delivery task with ``await nursery.start(net.run)``
  or use :func:`open_memory_network`, which runs it for the duration of an ``async with``.
- Use it with ``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``
  fixture): simulated latency then takes no wall time.
"""

from __future__ import annotations

import errno
import heapq
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, NoReturn, final

import trio

from ..wire.contact import Address
from ..runtime.transport import DEFAULT_RECEIVE_BATCH, ClosingContext, TransportStats

__all__ = [
    "DEFAULT_QUEUE_LIMIT",
    "DEFAULT_RESOLUTION",
    "MAX_UDP_PAYLOAD",
    "LinkModel",
    "MemoryNetwork",
    "MemoryTransport",
    "NetworkStats",
    "Packet",
    "open_memory_network",
]

#: Datagrams a transport's receive queue holds before further arrivals are dropped (counted in
#: ``NetworkStats.overflowed``). Plays the part of a socket's receive buffer: 4096 datagrams is
#: about what a 4 MiB kernel buffer holds with per-packet overhead, and it bounds memory.
DEFAULT_QUEUE_LIMIT: Final = 4096

#: Largest datagram ``MemoryTransport.send`` accepts, in bytes: the IPv4 UDP payload limit
#: (65,535 − 20 IP header − 8 UDP header). Longer ones are dropped as ``send_dropped``, as a
#: real socket fails them with EMSGSIZE.
MAX_UDP_PAYLOAD: Final = 65507

#: Granularity of delivery times, in seconds: arrival times are rounded up to a multiple of it.
#: Every distinct arrival time costs a few trio scheduler passes (clock jump, delivery task,
#: receiving task), so packets sharing a tick are delivered in one pass; 1 ms (a 1 kHz timer
#: tick) makes large simulations an order of magnitude faster while changing latencies of tens
#: of milliseconds by under 1 ms. 0 keeps exact times.
DEFAULT_RESOLUTION: Final = 0.001

#: Port given to addresses the network assigns itself (BEP 5 clients conventionally use 6881).
AUTO_PORT: Final = 6881


@dataclass(frozen=True, slots=True)
class LinkModel:
    """How the network treats every packet: latency, loss and duplication.

    Each packet's one-way latency is drawn independently, log-normal with median
    ``median_rtt / 2``, so a round trip's median is close to ``median_rtt`` (slightly above for
    large ``sigma``, because a sum of two log-normals is skewed). Independent draws also mean
    packets can overtake each other, as on the Internet.
    """

    median_rtt: float = 0.1
    """Median round-trip time, in seconds (0 delivers at the instant of sending)."""

    sigma: float = 0.5
    """Spread of the log-normal latency (standard deviation of its logarithm); 0 = constant."""

    loss: float = 0.0
    """Probability in [0, 1] that a packet is lost."""

    duplicate: float = 0.0
    """Probability in [0, 1] that a packet that is not lost arrives twice (independent delays)."""

    def __post_init__(self) -> None:
        if not (self.median_rtt >= 0.0 and math.isfinite(self.median_rtt)):
            raise ValueError(f"median_rtt must be a finite number >= 0, not {self.median_rtt!r}")
        if not (self.sigma >= 0.0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be a finite number >= 0, not {self.sigma!r}")
        for name in ("loss", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {value!r}")

    def draw_latency(self, rng: random.Random) -> float:
        """Draw one packet's one-way latency, in seconds.

        Args:
            rng: the source of randomness (one ``gauss`` draw, none when ``sigma`` is 0).

        Returns:
            A latency >= 0: ``median_rtt / 2`` times ``exp(N(0, sigma))``.
        """
        median = self.median_rtt / 2.0
        if self.sigma == 0.0 or median == 0.0:
            return median
        return median * math.exp(rng.gauss(0.0, self.sigma))


@dataclass(frozen=True, slots=True)
class Packet:
    """One datagram in flight, as the ``route_packet`` hook sees it."""

    source: Address
    """The sender's address (a hook may spoof another)."""

    destination: Address
    """Where the packet is going."""

    payload: bytes
    """The datagram's bytes."""

    deliver_at: float
    """When it arrives, in trio time (seconds); a time in the past means at once."""


#: ``route_packet`` hook type: return the packet (unchanged, or altered with
#: ``dataclasses.replace``) to deliver it, or ``None`` to drop it.
RoutePacket = Callable[[Packet], Packet | None]


@dataclass(slots=True)
class NetworkStats:
    """Counters of a :class:`MemoryNetwork`, in packets. Mutable: the network increments them.

    ``sent`` = everything offered; a packet then ends in exactly one of ``lost``, ``from_dead``,
    ``routed_away``, ``to_dead``, ``to_unknown``, ``firewalled``, ``overflowed`` or
    ``delivered`` -- except that a duplicated packet (``duplicated``) has two copies to count,
    and packets still in flight are in none yet.
    """

    sent: int = 0
    """Datagrams handed to the network by open transports."""

    delivered: int = 0
    """Datagrams put into a destination's receive queue."""

    lost: int = 0
    """Dropped by the link model's ``loss`` draw."""

    duplicated: int = 0
    """Extra copies made by the link model's ``duplicate`` draw."""

    from_dead: int = 0
    """Sent by a dead address; they vanish."""

    to_dead: int = 0
    """Arrived for a dead address; they vanish."""

    to_unknown: int = 0
    """Arrived for an address with no open transport."""

    firewalled: int = 0
    """Arrived at a firewalled address from one it had not sent to."""

    overflowed: int = 0
    """Arrived at a transport whose receive queue was full."""

    routed_away: int = 0
    """Dropped by the ``route_packet`` hook (it returned ``None``)."""


@final
class MemoryTransport(ClosingContext):
    """One endpoint on a :class:`MemoryNetwork`; implements ``DatagramTransport``.

    Made by :meth:`MemoryNetwork.open_transport`, never directly. Received datagrams wait in a
    queue bounded by the network's ``queue_limit``.
    """

    __slots__ = ("_closed", "_lot", "_net", "_queue", "local_address", "stats")

    local_address: Address
    stats: TransportStats

    def __init__(self, net: MemoryNetwork, addr: Address) -> None:
        self._net = net
        self.local_address = addr
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self.stats = TransportStats()

    @property
    def closed(self) -> bool:
        """Whether the transport was closed (by :meth:`aclose` or ``MemoryNetwork.remove``)."""
        return self._closed

    @property
    def queued(self) -> int:
        """Datagrams waiting in the receive queue."""
        return len(self._queue)

    def send(self, data: bytes, addr: Address) -> None:
        """Hand one datagram to the network now; never blocks, never raises for network reasons.

        The datagram may then be lost, duplicated, delayed, blocked or dropped, as the network
        decides (see :class:`NetworkStats`); ``stats.sent`` counts it either way, as a kernel
        accepting a UDP datagram says nothing about its fate.

        Args:
            data: the datagram; longer than :data:`MAX_UDP_PAYLOAD` bytes is dropped and
                counted in ``stats.send_dropped``.
            addr: the destination (host, port).

        Raises:
            trio.ClosedResourceError: after :meth:`aclose` or ``MemoryNetwork.remove``.
        """
        if self._closed:
            raise trio.ClosedResourceError("the transport was closed")
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) > MAX_UDP_PAYLOAD:
            self.stats.send_dropped += 1
            return
        self.stats.sent += 1
        self._net._send(self.local_address, addr, data)

    async def receive_batch(self, max_count: int = DEFAULT_RECEIVE_BATCH) -> list[tuple[bytes, Address]]:
        """Wait for at least one datagram, then return all queued ones, up to ``max_count``.

        Args:
            max_count: the most datagrams to return (at least 1).

        Returns:
            A non-empty list of (payload, source address) in arrival order.

        Raises:
            trio.ClosedResourceError: once the transport is closed, including while waiting.
            ValueError: if ``max_count`` < 1.
        """
        if max_count < 1:
            raise ValueError("max_count must be at least 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        queue = self._queue
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the transport was closed")
            if queue:
                if len(queue) <= max_count:
                    batch = list(queue)
                    queue.clear()
                else:
                    popleft = queue.popleft
                    batch = [popleft() for _ in range(max_count)]
                self.stats.received += len(batch)
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            await self._lot.park()
            waited = True

    def _deliver(self, payload: bytes, source: Address, limit: int) -> bool:
        """Queue one arriving datagram; False if the queue is full."""
        queue = self._queue
        if len(queue) >= limit:
            return False
        queue.append((payload, source))
        if self._lot:
            self._lot.unpark_all()
        return True

    def _close(self) -> None:
        """Mark closed and wake waiting receivers (they raise ClosedResourceError)."""
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._lot.unpark_all()

    async def aclose(self) -> None:
        """Close and leave the network; idempotent. Packets to the address then vanish."""
        if not self._closed:
            self._close()
            self._net._detach(self)
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryTransport {self.local_address[0]}:{self.local_address[1]} {state}>"


# Heap entries: (deliver_at, seq, source, destination, payload). seq is unique, so tuples never
# compare beyond it, and packets due at the same instant leave in the order they were sent.
_Entry = tuple[float, int, Address, Address, bytes]


@final
class MemoryNetwork:
    """A simulated datagram network of :class:`MemoryTransport` endpoints.

    Example::

        async with open_memory_network(rng=random.Random(0)) as net:
            a = net.open_transport()
            b = net.open_transport()
            a.send(b"ping", b.local_address)
            [(data, source)] = await b.receive_batch()

    Failure modes, each keyed by address and kept until changed (also across ``remove`` and a
    later ``open_transport`` of the same address):

    - dead (:meth:`set_dead`): packets to it vanish, so it never answers, and packets it sends
      vanish too. Its transport stays open, so the node using it keeps running unaware.
    - firewalled (:meth:`set_firewalled`): it receives only from addresses it has sent to since
      it became firewalled (an endpoint-dependent NAT whose mappings never expire; a new
      transport at the address starts with none).

    Churn: :meth:`remove` (or the transport's ``aclose``) takes an address off the network;
    packets to it vanish until a new transport opens there.

    Attributes:
        link: the :class:`LinkModel` applied to each packet at send time; may be replaced at any
            moment (e.g. to cut the network: ``LinkModel(loss=1.0)``).
        route_packet: optional hook called in ``send`` with each :class:`Packet` the link model
            lets through (both copies of a duplicate); return it, an altered copy
            (``dataclasses.replace``: other payload, source, destination or time) or ``None`` to
            drop it.
        stats: the :class:`NetworkStats` counters.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        link: LinkModel = LinkModel(),
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        resolution: float = DEFAULT_RESOLUTION,
    ) -> None:
        """Create an empty network; start delivery with :meth:`run`.

        Args:
            rng: source of every random draw (loss, duplication, latency); seed it for
                reproducible packet schedules.
            link: the latency/loss/duplication model.
            queue_limit: datagrams each transport's receive queue holds (see
                :data:`DEFAULT_QUEUE_LIMIT`).
            resolution: arrival times are rounded up to a multiple of this many seconds
                (see :data:`DEFAULT_RESOLUTION`); 0 for exact times.

        Raises:
            ValueError: if ``queue_limit`` < 1 or ``resolution`` < 0.
        """
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        if not (resolution >= 0.0 and math.isfinite(resolution)):
            raise ValueError(f"resolution must be a finite number >= 0, not {resolution!r}")
        self.resolution = resolution
        self._rng = rng
        self.link = link
        self.queue_limit = queue_limit
        self.route_packet: RoutePacket | None = None
        self.stats = NetworkStats()
        self._transports: dict[Address, MemoryTransport] = {}
        self._dead: set[Address] = set()
        # Firewalled address -> the addresses it has sent to (its open pinholes).
        self._pinholes: dict[Address, set[Address]] = {}
        self._heap: list[_Entry] = []
        self._seq = 0
        self._next_host = 0
        self._next_host6 = 0
        self._running = False
        self._sleep_scope: trio.CancelScope | None = None

    # -- endpoints ---------------------------------------------------------------------------

    def open_transport(self, addr: Address | None = None, *, family: int = 4) -> MemoryTransport:
        """Attach a new transport to the network.

        Args:
            addr: the (host, port) to take, or ``None`` to be given a fresh one
                (10.0.0.1:6881, 10.0.0.2:6881, ...; never reused in this network's lifetime,
                and never real traffic: these addresses exist only in memory).
            family: the family of a fresh address: 4, or 6 for ``[fd00::1]:6881``,
                ``[fd00::2]:6881``, ... (BEP 32: a dual-stack node takes one of each).

        Returns:
            The open transport.

        Raises:
            OSError: (EADDRINUSE) if an open transport already has ``addr``.
            ValueError: if ``addr`` is not a (str, port 1-65535) pair.
        """
        if addr is None:
            addr = self._fresh_address() if family == 4 else self._fresh_address6()
        else:
            host, port = addr
            if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"address must be (host: str, port: 1-65535), not {addr!r}")
            addr = (host, port)
            if addr in self._transports:
                raise OSError(errno.EADDRINUSE, f"address already in use: {addr[0]}:{addr[1]}")
        transport = MemoryTransport(self, addr)
        self._transports[addr] = transport
        return transport

    def _fresh_address(self) -> Address:
        while True:
            self._next_host += 1
            n = self._next_host
            if n >= 1 << 24:
                raise OSError(errno.EADDRNOTAVAIL, "no automatic addresses left in 10.0.0.0/8")
            if n & 0xFF in (0, 0xFF):
                continue
            addr = (f"10.{n >> 16}.{(n >> 8) & 0xFF}.{n & 0xFF}", AUTO_PORT)
            if addr not in self._transports:
                return addr

    def _fresh_address6(self) -> Address:
        while True:
            self._next_host6 += 1
            addr = (f"fd00::{self._next_host6:x}", AUTO_PORT)
            if addr not in self._transports:
                return addr

    def remove(self, addr: Address) -> None:
        """Take the transport at ``addr`` off the network and close it (churn).

        Its receivers get ``ClosedResourceError``, its ``send`` raises from now on, and
        packets to the address vanish (``to_unknown``) until a new transport opens there.
        A firewalled address loses its pinholes. No-op if nothing is open at ``addr``.
        """
        transport = self._transports.pop(addr, None)
        if transport is not None:
            transport._close()
        if addr in self._pinholes:
            self._pinholes[addr] = set()

    def _detach(self, transport: MemoryTransport) -> None:
        addr = transport.local_address
        if self._transports.get(addr) is transport:
            self.remove(addr)

    def __contains__(self, addr: object) -> bool:
        """Whether an open transport has ``addr``."""
        return addr in self._transports

    def __len__(self) -> int:
        """The number of open transports."""
        return len(self._transports)

    def transport(self, addr: Address) -> MemoryTransport | None:
        """The open transport at ``addr``, or ``None``."""
        return self._transports.get(addr)

    # -- failure modes -----------------------------------------------------------------------

    def set_dead(self, addr: Address, dead: bool = True) -> None:
        """Make ``addr`` dead (packets to and from it vanish) or alive again."""
        if dead:
            self._dead.add(addr)
        else:
            self._dead.discard(addr)

    def is_dead(self, addr: Address) -> bool:
        """Whether ``addr`` is dead."""
        return addr in self._dead

    def set_firewalled(self, addr: Address, firewalled: bool = True) -> None:
        """Firewall ``addr`` (it then hears only from addresses it has sent to) or open it.

        Firewalling an already firewalled address keeps its pinholes.
        """
        if firewalled:
            self._pinholes.setdefault(addr, set())
        else:
            self._pinholes.pop(addr, None)

    def is_firewalled(self, addr: Address) -> bool:
        """Whether ``addr`` is firewalled."""
        return addr in self._pinholes

    # -- the wire ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Packets sent but not yet delivered (or dropped at delivery)."""
        return len(self._heap)

    def _send(self, source: Address, destination: Address, payload: bytes) -> None:
        """Apply the link model and schedule the packet: all random draws happen here."""
        stats = self.stats
        stats.sent += 1
        if source in self._dead:
            stats.from_dead += 1
            return
        pinholes = self._pinholes.get(source)
        if pinholes is not None:
            pinholes.add(destination)
        link = self.link
        rng = self._rng
        if link.loss and rng.random() < link.loss:
            stats.lost += 1
            return
        copies = 1
        if link.duplicate and rng.random() < link.duplicate:
            copies = 2
            stats.duplicated += 1
        now = trio.current_time()
        hook = self.route_packet
        resolution = self.resolution
        for _ in range(copies):
            deliver_at = now + link.draw_latency(rng)
            if resolution:
                deliver_at = math.ceil(deliver_at / resolution) * resolution
            if hook is None:
                self._schedule(deliver_at, source, destination, payload)
                continue
            packet = hook(Packet(source, destination, payload, deliver_at))
            if packet is None:
                stats.routed_away += 1
            else:
                self._schedule(packet.deliver_at, packet.source, packet.destination, packet.payload)

    def _schedule(self, deliver_at: float, source: Address, destination: Address, payload: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deliver_at, self._seq, source, destination, payload))
        scope = self._sleep_scope
        if scope is not None and deliver_at < scope.deadline:
            scope.deadline = deliver_at  # wake the delivery task earlier

    def _deliver_due(self, now: float) -> None:
        """Deliver every packet due at or before ``now``, in (deliver_at, seq) order."""
        heap = self._heap
        heappop = heapq.heappop
        transports = self._transports
        dead = self._dead
        pinholes = self._pinholes
        stats = self.stats
        limit = self.queue_limit
        while heap and heap[0][0] <= now:
            _, _, source, destination, payload = heappop(heap)
            if destination in dead:
                stats.to_dead += 1
                continue
            transport = transports.get(destination)
            if transport is None:
                stats.to_unknown += 1
                continue
            if pinholes:
                allowed = pinholes.get(destination)
                if allowed is not None and source not in allowed:
                    stats.firewalled += 1
                    continue
            if transport._deliver(payload, source, limit):
                stats.delivered += 1
            else:
                stats.overflowed += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Deliver packets as their time comes, forever: the network's one delivery task.

        Start it with ``await nursery.start(net.run)`` (or use :func:`open_memory_network`);
        cancel the nursery to stop it. Packets sent while it is not running wait in the heap.

        Raises:
            RuntimeError: if this network's delivery task is already running.
        """
        if self._running:
            raise RuntimeError("this MemoryNetwork's delivery task is already running")
        self._running = True
        try:
            task_status.started()
            heap = self._heap
            while True:
                self._deliver_due(trio.current_time())
                with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                    self._sleep_scope = scope
                    await trio.sleep_forever()
                self._sleep_scope = None
        finally:
            self._sleep_scope = None
            self._running = False

    def __repr__(self) -> str:
        return f"<MemoryNetwork {len(self._transports)} transports, {len(self._heap)} packets in flight>"


@asynccontextmanager
async def open_memory_network(
    *,
    rng: random.Random,
    link: LinkModel = LinkModel(),
    queue_limit: int = DEFAULT_QUEUE_LIMIT,
    resolution: float = DEFAULT_RESOLUTION,
) -> AsyncIterator[MemoryNetwork]:
    """Create a :class:`MemoryNetwork` and run its delivery task for the ``async with`` block.

    Args:
        rng: source of every random draw (see :class:`MemoryNetwork`).
        link: the latency/loss/duplication model.
        queue_limit: datagrams each transport's receive queue holds.
        resolution: granularity of arrival times, in seconds (0 = exact).

    Yields:
        The running network. On exit delivery stops; transports stay as they are.

    An exception from the block propagates as itself, not wrapped in an ExceptionGroup.
    """
    net = MemoryNetwork(rng=rng, link=link, queue_limit=queue_limit, resolution=resolution)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            try:
                yield net
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The delivery task never fails, so a group holds the block's own exception: unwrap it
        # so callers can catch what they raised (cf. trio-websocket's open_websocket).
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context
