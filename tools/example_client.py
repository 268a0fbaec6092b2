"""A program shaped like a torrent client, using the thread node (mainline_dht.blocking).

It keeps one DHT node running, with a state file so that a restart rejoins
without the routers, and shares it between two threads, as a client would:

- the seeding thread announces one infohash (``--seed``) at once and then every
  15 minutes, since nodes forget a peer that stays silent for about 30 minutes;
- the downloading thread looks up the peers of another infohash (``--want``) at
  once and then every 5 minutes, and prints each new peer as it arrives.

Try it against a test network: start ``mainline-dht testnet`` in one terminal,
then run two clients that want what the other seeds::

    python tools/example_client.py --bootstrap 127.0.1.1:6881 --bind 127.0.0.1:0 \\
        --state a.dat --seed aaaa... --want bbbb... --peer-port 6001
    python tools/example_client.py --bootstrap 127.0.1.1:6881 --bind 127.0.0.1:0 \\
        --state b.dat --seed bbbb... --want aaaa... --peer-port 6002

Without ``--bootstrap`` it joins the public DHT (bind ``0.0.0.0`` then). It
prints what happens on stdout, and stops after ``--duration`` seconds (once its
first announce and lookup have finished) or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
import time
from typing import Final

from mainline_dht import DEFAULT_BOOTSTRAP, Address, DHTError, NodeClosedError, parse_address, parse_target
from mainline_dht.blocking import Node

#: Seconds between announces: nodes keep a peer for about 30 minutes.
ANNOUNCE_INTERVAL: Final = 15 * 60.0
#: Seconds between lookups of the infohash we want.
LOOKUP_INTERVAL: Final = 5 * 60.0
#: Seconds one lookup may run.
LOOKUP_TIMEOUT: Final = 60.0
#: The infohashes used when none is given (stand-ins for real torrents).
DEFAULT_SEED: Final = hashlib.sha1(b"mainline-dht example client: seeding").hexdigest()
DEFAULT_WANT: Final = hashlib.sha1(b"mainline-dht example client: downloading").hexdigest()

_print_lock = threading.Lock()


def say(text: str) -> None:
    """Print one line; the threads share stdout."""
    with _print_lock:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def seeding(node: Node, info_hash: bytes, port: int, stop: threading.Event, first_done: threading.Event) -> None:
    """Announce ``info_hash`` now and every ANNOUNCE_INTERVAL seconds until ``stop``."""
    try:
        while True:
            try:
                accepted = node.announce(info_hash, port=port)
                say(f"announced {info_hash.hex()} on port {port}: {accepted} nodes accepted")
            except NodeClosedError:
                return
            except DHTError as exc:
                say(f"announce failed: {exc}")
            first_done.set()
            if stop.wait(ANNOUNCE_INTERVAL):
                return
    finally:
        first_done.set()


def downloading(node: Node, info_hash: bytes, stop: threading.Event, first_done: threading.Event) -> None:
    """Look up ``info_hash`` now and every LOOKUP_INTERVAL seconds, printing new peers."""
    known: set[Address] = set()
    try:
        while True:
            found = 0
            try:
                with node.iter_peers(info_hash, timeout=LOOKUP_TIMEOUT) as peers:
                    for peer in peers:
                        found += 1
                        if peer not in known:
                            known.add(peer)
                            say(f"peer for {info_hash.hex()}: {peer[0]}:{peer[1]}")
                answered = peers.stats.replies
                if answered == 0:
                    say(f"lookup of {info_hash.hex()}: no node answered (check --bootstrap and the network)")
                else:
                    say(f"lookup of {info_hash.hex()} done: {found} peers from {answered} nodes that answered, "
                        f"{len(known)} known in all")
            except NodeClosedError:
                return
            except DHTError as exc:
                say(f"lookup failed: {exc}")
            first_done.set()
            if stop.wait(LOOKUP_INTERVAL):
                return
    finally:
        first_done.set()


def infohash_arg(text: str) -> bytes:
    try:
        return parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def address_arg(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", metavar="HOST:PORT", type=address_arg, action="append",
                        help="a node to join through; repeat for several (default: the public routers)")
    parser.add_argument("--bind", metavar="IP:PORT", type=address_arg, default=("0.0.0.0", 6881),
                        help="the node's UDP address (default 0.0.0.0:6881)")
    parser.add_argument("--state", metavar="PATH", default="example-client-dht.dat",
                        help="the routing-table file (default example-client-dht.dat)")
    parser.add_argument("--duration", metavar="S", type=float, default=None,
                        help="stop after S seconds (default: run until Ctrl-C)")
    parser.add_argument("--seed", metavar="INFOHASH", type=infohash_arg, default=parse_target(DEFAULT_SEED),
                        help="the infohash to announce (hex, base32 or magnet)")
    parser.add_argument("--want", metavar="INFOHASH", type=infohash_arg, default=parse_target(DEFAULT_WANT),
                        help="the infohash to find peers for")
    parser.add_argument("--peer-port", metavar="PORT", type=int, default=51413,
                        help="the TCP port our peer would listen on (default 51413)")
    args = parser.parse_args(argv)

    bootstrap = args.bootstrap or list(DEFAULT_BOOTSTRAP)
    start = time.monotonic()
    stop = threading.Event()
    try:
        node = Node(args.bind, bootstrap=bootstrap, state_path=args.state)
    except OSError as exc:
        print(f"example_client: cannot bind {args.bind[0]}:{args.bind[1]}: {exc}", file=sys.stderr)
        return 2
    with node:
        host, port = node.local_address
        say(f"node {node.node_id.hex()} on {host}:{port}; routing table file {args.state}")
        announced, looked_up = threading.Event(), threading.Event()
        workers = [
            threading.Thread(target=seeding, args=(node, args.seed, args.peer_port, stop, announced), name="seeding"),
            threading.Thread(target=downloading, args=(node, args.want, stop, looked_up), name="downloading"),
        ]
        for worker in workers:
            worker.start()
        try:
            stop.wait(args.duration)
            announced.wait()
            looked_up.wait()
        except KeyboardInterrupt:
            say("interrupted")
        stop.set()
        stats = node.stats()
    # Leaving the block closed the node (a call still running ends with NodeClosedError).
    for worker in workers:
        worker.join()
    say(f"stopped after {time.monotonic() - start:.0f} s; {stats.table_size} contacts in the routing table, "
        f"saved to {args.state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
