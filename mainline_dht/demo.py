"""``mainline-dht demo`` and ``testnet``: a DHT of our own nodes on loopback.

Owns: the demo story (start a network, announce a demo infohash from some
nodes, look it up from a fresh node with live progress, print what happened)
and the long-running test network. Writes to the terminal: called by the CLI only.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sys

import trio

from .localnet import open_local_network
from .node import open_node

__all__ = ["run_demo", "run_testnet", "demo_info_hash"]

#: How many nodes announce the demo infohash.
DEMO_ANNOUNCERS = 5


def demo_info_hash(seed: int) -> bytes:
    """The infohash the demo announces and finds (stable for a seed)."""
    return hashlib.sha1(f"mainline-dht demo {seed}".encode()).digest()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_demo(n: int, *, seed: int = 0, json_out: bool = False) -> int:
    """Run the demo; return the exit status (0 when the lookup found every announcer)."""
    from .cli import EXIT_NOT_FOUND, EXIT_OK, Status, _lookup_and_print

    status = Status(sys.stderr, sys.stderr.isatty() and not json_out)
    info_hash = demo_info_hash(seed)
    start = trio.current_time()
    _say(f"starting {n} DHT nodes on loopback...")

    def joined(done: int, total: int) -> None:
        status.show(f"joined {done}/{total} nodes")

    async with open_local_network(n, seed=seed, progress=joined) as net:
        status.clear()
        nodes = net.nodes
        sizes = sorted(len(node.table) for node in nodes)
        where = "127.0.0.1 on distinct ports" if net.shared_ip else f"{nodes[0].local_address[0]} .. {nodes[-1].local_address[0]}"
        _say(f"{n} nodes up on {where} in {trio.current_time() - start:.1f} s; "
             f"routing tables hold {sizes[len(sizes) // 2]} contacts (median), {sizes[0]}-{sizes[-1]}")
        rng = random.Random(seed)
        announcers = rng.sample(nodes[1:], min(DEMO_ANNOUNCERS, n - 1))
        accepted = []
        async with trio.open_nursery() as nursery:
            for i, node in enumerate(announcers):

                async def announce(node=node, port=50000 + i) -> None:  # type: ignore[no-untyped-def]
                    accepted.append(await node.announce(info_hash, port))

                nursery.start_soon(announce)
        peers_expected = {(node.local_address[0], 50000 + i) for i, node in enumerate(announcers)}
        _say(f"{len(announcers)} nodes announced infohash {info_hash.hex()} "
             f"(accepted by {sum(accepted)} nodes in all)")
        bind = ("127.0.0.1", 0) if net.shared_ip else ("127.0.0.2", 0)
        async with open_node(bind, bootstrap=(net.bootstrap_address,), config=net.config,
                             rng=random.Random(f"{seed}:searcher")) as searcher:
            _say(f"a fresh node at {searcher.local_address[0]}:{searcher.local_address[1]} looks it up:")
            code, peers = await _lookup_and_print(searcher, info_hash, json_out=json_out, status=status,
                                                  timeout=30.0, announce_port=None, announce=False)
            found = set(peers)
        missing = peers_expected - found
        if json_out:
            print(json.dumps({"event": "demo", "nodes": n, "announced": len(peers_expected),
                              "found": len(peers_expected & found)}), flush=True)
        _say(f"found {len(peers_expected & found)} of {len(peers_expected)} announced peers; shutting down")
    if code == EXIT_OK and not missing:
        return EXIT_OK
    return EXIT_NOT_FOUND


async def run_testnet(n: int, *, seed: int = 0, port: int = 6881) -> int:
    """Keep a loopback network up until Ctrl-C; print its bootstrap address."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        _say(f"starting {n} DHT nodes on loopback...")
        async with open_local_network(n, seed=seed, port=port) as net:
            host, p = net.bootstrap_address
            print(f"{host}:{p}", flush=True)
            _say(f"{n} nodes up; join with --bootstrap {host}:{p} (libtorrent: dht_bootstrap_nodes={host}:{p}). "
                 "Ctrl-C to stop.")
            async for _ in signals:
                break
    _say("stopped")
    return 0
