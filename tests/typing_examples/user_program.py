# mypy: disallow-any-expr
"""A program written the way a user of mainline-dht would write one.

It uses all three runtimes: trio, asyncio (mainline_dht.aio) and threads
(mainline_dht.blocking). tests/test_typing.py checks it with ``mypy --strict``
plus ``disallow-any-expr``: any value it gets from the library that mypy sees as
``Any`` (a public name that lost its types) is an error. ``assert_type`` pins the types a caller relies on.
The same test runs it against a loopback network, so the program is also right.

Usage: ``python user_program.py HOST:PORT`` (a node of the network to join).
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import threading
from typing import assert_type

import trio

import mainline_dht
import mainline_dht.aio
import mainline_dht.blocking
from mainline_dht import (
    Address,
    BootstrapError,
    Contact,
    DHTError,
    DHTNode,
    KRPCError,
    LookupStats,
    NodeStats,
    PeerStream,
    QueryTimeout,
    ResponseMessage,
    open_node,
    parse_address,
    parse_target,
)

INFO_HASH = parse_target(hashlib.sha1(b"user program").hexdigest())
PEER_PORT = 51413


async def with_trio(bootstrap: Address) -> list[Address]:
    """Join, announce, look up, ping: the trio API."""
    found: list[Address] = []
    async with open_node(("127.0.0.1", 0), bootstrap=[bootstrap]) as node:
        assert_type(node, DHTNode)
        try:
            size = await node.bootstrap(timeout=10)
        except BootstrapError as exc:
            print(f"could not join: {exc}", file=sys.stderr)
            raise
        assert_type(size, int)
        accepted = await node.announce(INFO_HASH, port=PEER_PORT)
        assert_type(accepted, int)
        async with node.get_peers(INFO_HASH) as peers:
            assert_type(peers, PeerStream)
            async for ip, port in peers:
                assert_type(ip, str)
                assert_type(port, int)
                found.append((ip, port))
        stats = peers.stats
        assert_type(stats, LookupStats)
        assert_type(stats.queries, int)
        try:
            reply = await node.ping(bootstrap, timeout=5)
        except QueryTimeout as exc:
            assert_type(exc.addr, tuple[str, int])
            raise
        except KRPCError as exc:
            assert_type(exc.code, int)
            raise
        assert_type(reply, ResponseMessage)
        assert_type(reply.sender_id, bytes)
        closest = await node.find_node(INFO_HASH)
        assert_type(closest, list[Contact])
        node_stats = node.stats
        assert_type(node_stats, NodeStats)
        assert_type(node_stats.table_size, int)
        assert_type(node.node_id, bytes)
        assert_type(node.local_address, Address)
    return found


async def with_asyncio(bootstrap: Address) -> list[Address]:
    """The same on asyncio: mainline_dht.aio."""
    found: list[Address] = []
    async with mainline_dht.aio.open_node(("127.0.0.1", 0), bootstrap=[bootstrap]) as node:
        assert_type(node, mainline_dht.aio.AsyncioNode)
        assert_type(await node.bootstrap(timeout=10), int)
        async with node.get_peers(INFO_HASH) as peers:
            assert_type(peers, mainline_dht.aio.PeerStream)
            async for ip, port in peers:
                assert_type(ip, str)
                assert_type(port, int)
                found.append((ip, port))
        assert_type(peers.stats, LookupStats)
        assert_type(await node.announce(INFO_HASH, port=PEER_PORT), int)
        assert_type(await node.ping(bootstrap), ResponseMessage)
        assert_type(await node.find_node(INFO_HASH), list[Contact])
        assert_type(await node.sample_infohashes(bootstrap), ResponseMessage)
        assert_type(node.stats, NodeStats)
    return found


def with_threads(bootstrap: Address) -> list[Address]:
    """The same from threads: mainline_dht.blocking."""
    results: list[list[Address]] = []
    with mainline_dht.blocking.Node(("127.0.0.1", 0), bootstrap=[bootstrap]) as node:
        assert_type(node, mainline_dht.blocking.Node)

        def look_up() -> None:
            results.append(node.get_peers(INFO_HASH, timeout=30))

        workers = [threading.Thread(target=look_up) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        with node.iter_peers(INFO_HASH, timeout=30) as stream:
            assert_type(stream, mainline_dht.blocking.PeerIterator)
            for peer in stream:
                assert_type(peer, Address)
        assert_type(stream.stats, LookupStats)
        assert_type(node.announce(INFO_HASH), int)
        assert_type(node.ping(bootstrap), ResponseMessage)
        assert_type(node.stats(), NodeStats)
        assert_type(node.bootstrap(), int)
        assert_type(node.find_node(INFO_HASH), list[Contact])
    try:
        node.stats()
    except mainline_dht.NodeClosedError as exc:
        assert_type(exc, mainline_dht.NodeClosedError)
        assert isinstance(exc, DHTError)
    else:
        raise AssertionError("a closed node answered")
    return [peer for peers in results for peer in peers]


def main() -> None:
    bootstrap = parse_address(sys.argv[1])
    assert_type(bootstrap, Address)
    from_trio = trio.run(with_trio, bootstrap)
    from_asyncio = asyncio.run(with_asyncio(bootstrap))
    from_threads = with_threads(bootstrap)
    print(f"trio: {len(from_trio)} peers; asyncio: {len(from_asyncio)} peers; threads: {len(from_threads)} peers")


if __name__ == "__main__":
    main()
