"""``mainline-dht demo`` and ``testnet``: a DHT of our own nodes on loopback.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import LOCALNET_FIRST_IP, Parents, bind_error, loopback_base_arg, node_count_arg

async def cmd_demo(args: argparse.Namespace) -> int:
    from .localnet_story import run_demo

    ip, port = args.base
    try:
        return await run_demo(args.nodes, seed=args.seed, json_out=args.json, base=(ip, port or 0), ipv6=args.ipv6)
    except OSError as exc:
        if exc.filename is None:  # not a bind failure of open_local_network
            raise
        raise bind_error(exc.filename, exc, "--base IP:PORT") from None


async def cmd_testnet(args: argparse.Namespace) -> int:
    from .localnet_story import run_testnet
    from ..runtime.localnet import DEFAULT_BASE_PORT

    ip, port = args.base
    port = DEFAULT_BASE_PORT if port is None else port
    try:
        return await run_testnet(args.nodes, seed=args.seed, base=(ip, port), ipv6=args.ipv6)
    except OSError as exc:
        if exc.filename is None:  # not a bind failure of open_local_network
            raise
        raise bind_error(exc.filename, exc, "--base IP:PORT") from None


def register(sub: Any, parents: Parents) -> None:
    """Add the command's parser to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "demo",
        parents=[parents.common],
        help="a whole DHT on loopback: start nodes, announce, look up (no internet needed)",
        description="Start N DHT nodes on distinct loopback addresses (127.0.1.1, 127.0.1.2, ...; "
        "127.0.0.1 on distinct ports where the system routes no other), let a few announce a demo "
        "infohash, then look it up from a fresh node with live progress, print the peers and the "
        "lookup's figures, and shut down. Real UDP; nothing leaves this machine.",
        epilog="Exit status: 0 every announced peer was found; 1 some were missed; 2 error.",
    )
    p.add_argument("--nodes", metavar="N", type=node_count_arg, default=300, help="nodes in the network (default 300)")
    p.add_argument("--seed", metavar="S", type=int, default=0,
                   help="seed for node IDs, the announcers and the infohash (default 0)")
    p.add_argument("--base", metavar="IP[:PORT]", type=loopback_base_arg, default=(LOCALNET_FIRST_IP, None),
                   help=f"the first node's loopback address; the others count up from it "
                   f"(default {LOCALNET_FIRST_IP}, each node on a free port)")
    p.add_argument("--json", action="store_true", help="print the lookup's events as JSON lines, then a summary")
    p.add_argument("--ipv6", action="store_true",
                   help="run the network over IPv6 (BEP 32) on [::1], one port per node (--base gives the port)")
    p.set_defaults(run=cmd_demo)

    p = sub.add_parser(
        "testnet",
        parents=[parents.common],
        help="keep a DHT of our nodes up on loopback for other programs to join",
        description="Start N DHT nodes on loopback and keep them running until Ctrl-C (or SIGTERM), so "
        "other programs (another mainline-dht, libtorrent, any client) can join through the "
        "bootstrap address printed on the first line of stdout.",
        epilog="Exit status: 0 stopped by Ctrl-C or SIGTERM; 2 error (the port is in use, say).",
    )
    p.add_argument("--nodes", metavar="N", type=node_count_arg, default=100, help="nodes in the network (default 100)")
    p.add_argument("--seed", metavar="S", type=int, default=0, help="seed for the node IDs (default 0)")
    p.add_argument("--base", metavar="IP[:PORT]", type=loopback_base_arg, default=(LOCALNET_FIRST_IP, None),
                   help=f"the first node's address, which others bootstrap from; the others count up "
                   f"from its IP on the same port (default {LOCALNET_FIRST_IP}:6881)")
    p.add_argument("--ipv6", action="store_true",
                   help="run the network over IPv6 (BEP 32) on [::1], one port per node; the first "
                   "on --base's port")
    p.set_defaults(run=cmd_testnet)
