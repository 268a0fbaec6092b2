"""A real DHT of our own nodes on loopback UDP, for ``demo``, ``testnet`` and tests.

Owns: choosing loopback addresses, starting N nodes in one trio run and joining
them into one network through the first node. Traffic never leaves 127.0.0.0/8.

Each node gets its own loopback IP (127.0.1.1, 127.0.1.2, ... by default), as
nodes on a real network have: BEP 5 routing tables keep one entry per IP.
Where the system routes only 127.0.0.1 (macOS), the nodes share that address on
distinct ports, with the routing table's one-entry-per-IP rule relaxed for this
private network alone. An IPv6 network (BEP 32) is built the same way on ``::1``:
one address, one port per node.

Must not import: the command line (``cli``, ``demo``); this module never prints.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Final

import trio

from ..wire.contact import Address
from ..errors import BootstrapError
from .node import DHTNode, collapse_single_errors, serve_node
from ..core.protocol import NodeConfig
from .transport import UDPTransport, open_udp_transport

__all__ = [
    "DEFAULT_BASE",
    "DEFAULT_BASE_PORT",
    "LocalNetwork",
    "can_bind",
    "loopback_addresses",
    "loopback_ips",
    "open_local_network",
]

log = logging.getLogger(__name__)

#: The port every node uses when each has its own loopback address (BEP 5's customary port).
DEFAULT_BASE_PORT: Final = 6881
#: The first node's address; the others count up from its IP. 127.0.0.x is left
#: to other programs (and 127.0.0.1 to the fallback of a shared address).
DEFAULT_BASE: Final[Address] = ("127.0.1.1", DEFAULT_BASE_PORT)
#: The shared address where the system routes no other loopback IP (macOS).
SHARED_IP: Final = "127.0.0.1"
#: The one IPv6 loopback address, which an IPv6 local network shares.
IPV6_LOOPBACK: Final = "::1"
#: Nodes that join at the same time; more only adds contention on two cores.
JOIN_CONCURRENCY: Final = 32
#: Nodes that join one at a time before the rest join in parallel.
FIRST_WAVE: Final = 16
#: Seconds a node waits for its first answer when joining (a loopback round trip
#: takes well under a millisecond; this only bounds a broken setup).
JOIN_TIMEOUT: Final = 5.0

_LOOPBACK: Final = ipaddress.IPv4Network("127.0.0.0/8")


def can_bind(ip: str) -> bool:
    """Whether the system lets us bind a UDP socket to ``ip`` (any port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((ip, 0))
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
            return False
        raise
    finally:
        s.close()
    return True


def loopback_ips(first: str, n: int) -> list[str]:
    """``n`` loopback IPs counting up from ``first``, skipping .0 and .255 last octets.

    Raises:
        ValueError: ``first`` is not an IPv4 loopback address, or the range
            would leave 127.0.0.0/8.
    """
    try:
        ip = ipaddress.IPv4Address(first)
    except ValueError:
        raise ValueError(f"not an IPv4 address: {first!r}") from None
    if ip not in _LOOPBACK:
        raise ValueError(f"{first} is not a loopback address (127.0.0.0/8)")
    ips: list[str] = []
    value = int(ip)
    end = int(_LOOPBACK.broadcast_address)
    while len(ips) < n:
        if value >= end:
            raise ValueError(f"{n} addresses from {first} do not fit in 127.0.0.0/8")
        if 0 < value & 0xFF < 255:
            ips.append(str(ipaddress.IPv4Address(value)))
        value += 1
    return ips


def loopback_addresses(n: int, *, base: Address = DEFAULT_BASE) -> tuple[list[Address], bool]:
    """Pick ``n`` loopback addresses for a local network.

    Args:
        n: how many addresses.
        base: the first address; the others take the following IPs with the
            same port (port 0: each node gets a free port from the system).

    Returns:
        The addresses, and whether they share one IP: where the system routes
        only 127.0.0.1, every node uses 127.0.0.1, the first on ``base``'s port
        and the others on free ports.

    Raises:
        ValueError: ``base`` is not a loopback IPv4 address or the range
            overflows 127.0.0.0/8.
    """
    ip, port = base
    ips = loopback_ips(ip, n)
    probe = next((i for i in ips if i != SHARED_IP), None)
    if probe is None or can_bind(probe):
        return [(i, port) for i in ips], False
    log.info("the system routes no loopback address but %s: the nodes share it", SHARED_IP)
    return [(SHARED_IP, port)] + [(SHARED_IP, 0)] * (n - 1), True


@dataclass
class LocalNetwork:
    """A running loopback network of our nodes.

    Attributes:
        nodes: the nodes, the bootstrap node first.
        shared_ip: whether all nodes share 127.0.0.1 (on distinct ports).
        config: the protocol configuration the nodes run with; a node joining
            from outside should use it too (it relaxes the one-entry-per-IP rule
            on a shared IP).
        seed: the seed the nodes' randomness came from.
        spare: a loopback address (port 0) that no node of the network uses,
            for another node to join from.
        unjoined: nodes whose join found no answer in time (they keep trying).
    """

    nodes: list[DHTNode]
    shared_ip: bool
    config: NodeConfig
    seed: int
    spare: Address
    unjoined: int = 0

    @property
    def bootstrap_address(self) -> Address:
        """The address other programs can join through (the first node)."""
        return self.nodes[0].local_address


@asynccontextmanager
async def open_local_network(
    n: int,
    *,
    seed: int = 0,
    base: Address = DEFAULT_BASE,
    progress: Callable[[int, int], None] | None = None,
    ipv6: bool = False,
) -> AsyncIterator[LocalNetwork]:
    """Start ``n`` nodes on loopback and join them into one DHT.

    Every address is bound first, so a port in use fails at once. Each node
    then starts just before it joins (at most :data:`JOIN_CONCURRENCY` at a
    time, through the first node), so that no node sits unjoined long enough
    for its maintenance to start bootstrapping on its own.

    Args:
        n: number of nodes (at least 1).
        seed: seeds each node's randomness, so IDs repeat from run to run.
        base: the first node's address; the others count up from its IP on
            the same port (port 0: free ports). See :func:`loopback_addresses`.
        progress: called with (joined, n) as nodes join.
        ipv6: an IPv6 network on ``::1`` (BEP 32): the first node on ``base``'s
            port, the others on free ports; ``base``'s IP is not used.

    Raises:
        OSError: an address could not be bound (the port is taken, say); its
            ``filename`` is the address as ``"IP:PORT"``.
        ValueError: ``n`` < 1, or ``base`` is not a usable loopback address.
    """
    if n < 1:
        raise ValueError("a network needs at least one node")
    if ipv6:
        addrs, shared = [(IPV6_LOOPBACK, base[1])] + [(IPV6_LOOPBACK, 0)] * n, True
    else:
        addrs, shared = loopback_addresses(n + 1, base=base)
    addrs, spare = addrs[:n], (addrs[n][0], 0)
    # One address for every node: the per-IP rules would see one host.
    config = NodeConfig(max_per_ip=None, query_rate_per_ip=None, peer_store_per_ip=False) if shared else NodeConfig()
    async with AsyncExitStack() as stack:
        transports: list[UDPTransport] = []
        for addr in addrs:
            try:
                transport = await open_udp_transport(addr[0], addr[1])
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror or str(exc), f"{addr[0]}:{addr[1]}") from None
            stack.push_async_callback(transport.aclose)
            transports.append(transport)

        async with collapse_single_errors(), trio.open_nursery() as nursery:

            async def start(i: int) -> DHTNode:
                transport = transports[i]
                node: DHTNode = await nursery.start(
                    functools.partial(
                        serve_node,
                        transport.local_address,
                        transport=transport,
                        bootstrap=() if i == 0 else (transports[0].local_address,),
                        config=config,
                        rng=random.Random(f"{seed}:{i}"),
                        join=False,
                    )
                )
                return node

            nodes = [await start(0)]
            joined = 1
            unjoined = 0
            if progress:
                progress(joined, n)
            limiter = trio.CapacityLimiter(JOIN_CONCURRENCY)

            async def join(i: int) -> None:
                nonlocal joined, unjoined
                async with limiter:
                    node = nodes[i] = await start(i)
                    try:
                        await node.bootstrap(timeout=JOIN_TIMEOUT)
                    except BootstrapError as exc:
                        # Not fatal: the node's maintenance retries while its table is empty.
                        log.info("node %s:%d did not join: %s", *node.local_address, exc)
                        unjoined += 1
                joined += 1
                if progress:
                    progress(joined, n)

            nodes += [nodes[0]] * (n - 1)  # placeholders, replaced as each node starts
            # The first few join one by one, so the first node's table holds
            # someone for the next to learn of; the rest join in parallel.
            for i in range(1, min(FIRST_WAVE, n)):
                await join(i)
            async with trio.open_nursery() as joins:
                for i in range(FIRST_WAVE, n):
                    joins.start_soon(join, i)
            try:
                yield LocalNetwork(nodes, shared, config, seed, spare, unjoined)
            finally:
                nursery.cancel_scope.cancel()
