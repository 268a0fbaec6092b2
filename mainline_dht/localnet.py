"""A real DHT of our own nodes on loopback UDP, for ``demo`` and ``testnet``.

Owns: choosing loopback addresses, starting N nodes in one trio run and joining
them into one network through the first node. Traffic never leaves 127.0.0.0/8.

Where the system routes only 127.0.0.1 (macOS), the nodes share that address on
distinct ports, with the routing table's one-entry-per-IP rule relaxed for this
private network alone.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import trio

from .contact import Address
from .node import DHTNode, open_node
from .protocol import NodeConfig

__all__ = ["LocalNetwork", "open_local_network", "loopback_addresses", "DEFAULT_BASE_PORT"]

log = logging.getLogger(__name__)

#: The port every node uses when each has its own loopback address.
DEFAULT_BASE_PORT = 6881
#: Nodes that join at the same time; more only adds contention on two cores.
JOIN_CONCURRENCY = 32
#: Nodes that join one at a time before the rest join in parallel.
FIRST_WAVE = 16


def _can_bind(ip: str) -> bool:
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


def loopback_addresses(n: int, *, port: int = DEFAULT_BASE_PORT, first: int = 256 + 1) -> tuple[list[Address], bool]:
    """Pick ``n`` loopback addresses for a local network.

    Returns:
        The addresses, and whether they share one IP (distinct ports on
        127.0.0.1, where the system routes no other loopback address).
    """
    if _can_bind("127.0.1.1"):
        addrs = []
        i = first
        while len(addrs) < n:
            b2, b3 = divmod(i, 256)
            if 0 < b3 < 255 and b2 < 256:
                addrs.append((f"127.0.{b2}.{b3}", port))
            i += 1
        return addrs, False
    return [("127.0.0.1", 0) for _ in range(n)], True


@dataclass
class LocalNetwork:
    """A running loopback network of our nodes."""

    nodes: list[DHTNode]
    shared_ip: bool
    config: NodeConfig
    seed: int

    @property
    def bootstrap_address(self) -> Address:
        """The address other programs can join through (the first node)."""
        return self.nodes[0].local_address


@asynccontextmanager
async def open_local_network(
    n: int,
    *,
    seed: int = 0,
    port: int = DEFAULT_BASE_PORT,
    progress: Callable[[int, int], None] | None = None,
) -> AsyncIterator[LocalNetwork]:
    """Start ``n`` nodes on loopback and join them into one DHT.

    Args:
        n: number of nodes (at least 1).
        seed: seeds each node's randomness, so IDs repeat from run to run.
        port: the UDP port of each node (when each has its own loopback IP).
        progress: called with (joined, n) as nodes join.

    Raises:
        OSError: an address could not be bound (e.g. the port is taken).
        ValueError: ``n`` < 1.
    """
    if n < 1:
        raise ValueError("a network needs at least one node")
    addrs, shared = loopback_addresses(n, port=port)
    config = NodeConfig(max_per_ip=None) if shared else NodeConfig()
    async with AsyncExitStack() as stack:
        nodes: list[DHTNode] = []
        for i, addr in enumerate(addrs):
            bootstrap = () if i == 0 else (nodes[0].local_address,)
            node = await stack.enter_async_context(
                open_node(addr, bootstrap=bootstrap, config=config, rng=random.Random(f"{seed}:{i}"))
            )
            nodes.append(node)
        joined = 1
        if progress:
            progress(joined, n)
        limiter = trio.CapacityLimiter(JOIN_CONCURRENCY)

        async def join(node: DHTNode) -> None:
            nonlocal joined
            async with limiter:
                await node.bootstrap(timeout=5.0)
            joined += 1
            if progress:
                progress(joined, n)

        # The first few join one by one, so the first node's table holds
        # someone for the next to learn of; the rest join in parallel.
        for node in nodes[1:FIRST_WAVE]:
            await join(node)
        async with trio.open_nursery() as nursery:
            for node in nodes[FIRST_WAVE:]:
                nursery.start_soon(join, node)
        yield LocalNetwork(nodes, shared, config, seed)
