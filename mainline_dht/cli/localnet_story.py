"""``mainline-dht demo`` and ``testnet``: a DHT of our own nodes on loopback.

Owns: the demo story (start a network, announce a demo infohash from some
nodes, look it up from a fresh node with live progress, print what happened)
and the long-running test network. Writes to the terminal: called by the
command line (:mod:`mainline_dht.cli.demo`) only; the library never imports it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import sys
from typing import Final

import trio

from ._common import EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OK, Status, emit, format_address, run_until_signal
from .peers import lookup_and_print
from ..wire.contact import Address
from ..runtime.localnet import DEFAULT_BASE, open_local_network
from ..runtime.node import open_node

__all__ = ["run_demo", "run_testnet", "demo_info_hash", "DEMO_ANNOUNCERS", "DEMO_PEER_PORT"]

#: How many nodes announce the demo infohash.
DEMO_ANNOUNCERS: Final = 5
#: The peer port the first announcer announces; the others count up from it.
DEMO_PEER_PORT: Final = 50000
#: Seconds the demo's lookup may take at most (on loopback it takes milliseconds).
DEMO_LOOKUP_TIMEOUT: Final = 30.0


def demo_info_hash(seed: int) -> bytes:
    """The 20-byte infohash the demo announces and finds (stable for a seed)."""
    return hashlib.sha1(f"mainline-dht demo {seed}".encode()).digest()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _span(first: Address, last: Address, shared: bool) -> str:
    if shared:
        return f"{first[0]}, distinct ports"
    if first[1] == last[1]:
        return f"{first[0]} .. {last[0]}, port {first[1]}"
    return f"{first[0]} .. {last[0]}"


async def run_demo(
    n: int, *, seed: int = 0, json_out: bool = False, base: Address = (DEFAULT_BASE[0], 0), ipv6: bool = False
) -> int:
    """Run the demo: a network of ``n`` nodes, announces, one lookup; then shut down.

    Args:
        n: nodes in the network (at least 2).
        seed: seeds node IDs, the announcers' choice and the infohash.
        json_out: print the lookup's events as JSON lines on stdout.
        base: the first node's loopback address (see
            :func:`~mainline_dht.runtime.localnet.open_local_network`); port 0 gives
            every node a free port, so the demo never collides with a DHT
            client running on 6881.
        ipv6: run the network over IPv6 on ``::1`` (BEP 32), one port per node.

    Returns:
        The exit status: 0 when the lookup found every announced peer, 1 when
        it missed some, 130 when interrupted (Ctrl-C, SIGTERM).

    Raises:
        OSError: a loopback address could not be bound.
    """
    status = Status(sys.stderr, enabled=sys.stderr.isatty() and not json_out)
    info_hash = demo_info_hash(seed)
    start = trio.current_time()
    code = EXIT_INTERRUPTED

    def joined(done: int, total: int) -> None:
        status.show(f"{done}/{total} nodes joined")

    async def story() -> None:
        nonlocal code
        _say(f"starting {n} DHT nodes on loopback...")
        async with open_local_network(n, seed=seed, base=base, progress=joined, ipv6=ipv6) as net:
            status.clear()
            nodes = net.nodes
            sizes = sorted(len(node.table) for node in nodes)
            where = _span(nodes[0].local_address, nodes[-1].local_address, net.shared_ip)
            _say(f"{n} nodes up on {where} in {trio.current_time() - start:.1f} s; routing tables hold "
                 f"{sizes[len(sizes) // 2]} contacts (median; {sizes[0]} to {sizes[-1]})")
            if net.unjoined:
                _say(f"({net.unjoined} nodes found no one to join in time; they keep trying)")

            rng = random.Random(seed)
            announcers = rng.sample(nodes[1:], min(DEMO_ANNOUNCERS, n - 1))
            expected = {(node.local_address[0], DEMO_PEER_PORT + i) for i, node in enumerate(announcers)}
            accepted: list[int] = []

            async def announce(i: int) -> None:
                accepted.append(await announcers[i].announce(info_hash, DEMO_PEER_PORT + i))

            async with trio.open_nursery() as nursery:
                for i in range(len(announcers)):
                    nursery.start_soon(announce, i)
            _say(f"{len(announcers)} nodes announced infohash {info_hash.hex()} as peers on ports "
                 f"{DEMO_PEER_PORT}-{DEMO_PEER_PORT + len(announcers) - 1} "
                 f"({sum(accepted)} announces accepted by the nodes closest to it)")

            # A transient node, so read-only (BEP 43), as ``mainline-dht peers`` is.
            config = dataclasses.replace(net.config, read_only=True)
            async with open_node(net.spare, bootstrap=(net.bootstrap_address,), config=config,
                                 rng=random.Random(f"{seed}:searcher")) as searcher:
                _say(f"a fresh node at {format_address(searcher.local_address)}, knowing only "
                     f"{format_address(net.bootstrap_address)}, looks it up:")
                result = await lookup_and_print(searcher, info_hash, json_out=json_out, status=status,
                                                timeout=DEMO_LOOKUP_TIMEOUT)
            if result.code == EXIT_INTERRUPTED:
                return
            found = len(expected & set(result.peers))
            if json_out:
                emit({"event": "demo", "nodes": n, "info_hash": info_hash.hex(), "announced": len(expected),
                      "found": found, "elapsed": round(trio.current_time() - start, 3)})
            _say(f"found {found} of {len(expected)} announced peers; shutting down")
            code = EXIT_OK if found == len(expected) else EXIT_NOT_FOUND

    if await run_until_signal(story):
        status.clear()
        _say("interrupted; shut down")
    return code


async def run_testnet(n: int, *, seed: int = 0, base: Address = DEFAULT_BASE, ipv6: bool = False) -> int:
    """Keep a loopback network of ``n`` nodes up until SIGINT or SIGTERM.

    Prints the bootstrap address as ``IP:PORT`` (``[::1]:PORT`` with ``ipv6``)
    on the first line of stdout (for programs to read), and a human note on stderr.

    Returns:
        0 (stopped by a signal).

    Raises:
        OSError: a loopback address could not be bound.
    """
    status = Status(sys.stderr, enabled=sys.stderr.isatty())

    def joined(done: int, total: int) -> None:
        status.show(f"{done}/{total} nodes joined")

    async def serve() -> None:
        _say(f"starting {n} DHT nodes on loopback...")
        async with open_local_network(n, seed=seed, base=base, progress=joined, ipv6=ipv6) as net:
            status.clear()
            boot = format_address(net.bootstrap_address)
            where = _span(net.nodes[0].local_address, net.nodes[-1].local_address, net.shared_ip)
            print(boot, flush=True)
            _say(f"{n} nodes up on {where}. Join with --bootstrap {boot} "
                 f"(libtorrent: dht_bootstrap_nodes={boot}). Ctrl-C to stop.")
            await trio.sleep_forever()

    await run_until_signal(serve)
    status.clear()
    _say("stopped")
    return EXIT_OK
