"""The ``mainline-dht`` command line. The only module that writes to the terminal.

Subcommands: ``peers`` (look up peers for an infohash or magnet link), ``node``
(run a long-lived node), ``ping`` (one node), ``demo`` (a whole DHT on loopback,
then a lookup in it) and ``testnet`` (keep such a network up for other programs).

Exit status: 0 success; 1 a lookup completed without peers; 2 errors (bad
arguments, nothing answered, a port in use); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import trio

from . import __version__
from .contact import Address
from .errors import BootstrapError, DHTError, KRPCError, QueryTimeout
from .lookup import LookupStats
from .node import DEFAULT_BOOTSTRAP, DHTNode, default_state_path, open_node, parse_address, resolve_address
from .target import TargetError, parse_target

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

#: Seconds between status lines of ``mainline-dht node``.
STATUS_INTERVAL = 5.0


class Status:
    """One self-overwriting status line on stderr when it is a terminal; silent otherwise.

    Hand-written because it is one line of text: a progress-bar library would
    add a dependency for less than this class does.
    """

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._width = 0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


# --- argument types -----------------------------------------------------------------


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535: {text!r}")
    return value


def _node_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 2 <= value <= 20000:
        raise argparse.ArgumentTypeError("--nodes must be between 2 and 20000")
    return value


def _bootstrap_help() -> str:
    return ", ".join(f"{h}:{p}" for h, p in DEFAULT_BOOTSTRAP)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="mainline-dht",
        description="Talk to the BitTorrent Mainline DHT (BEP 5): find peers for an infohash, "
        "run a node, or try it all on a local demo network.",
        epilog="Run 'mainline-dht demo' for a self-contained tour on loopback (no internet needed).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug) to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    boot = argparse.ArgumentParser(add_help=False)
    boot.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        type=_address,
        action="append",
        help=f"node to join through; repeat for several; replaces the defaults ({_bootstrap_help()})",
    )

    p = sub.add_parser(
        "peers",
        parents=[boot],
        help="look up peers for an infohash or magnet link",
        description="Find peers for a torrent on the DHT and print them as they arrive.",
        epilog="Exit status: 0 peers found, 1 lookup finished without peers, 2 error.",
    )
    p.add_argument("target", metavar="TARGET", help="40-hex or 32-base32 infohash, or a magnet link")
    p.add_argument("--bind", metavar="IP:PORT", type=_address, default=("0.0.0.0", 0),
                   help="local UDP address (default 0.0.0.0 and any free port)")
    p.add_argument("--timeout", metavar="S", type=_positive_float, default=60.0,
                   help="give up on the lookup after S seconds (default 60)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--announce", metavar="PORT", type=_port, help="also announce us as a peer on PORT")
    group.add_argument("--announce-implied", action="store_true",
                       help="also announce us, with the port the DHT sees our packets come from")
    p.add_argument("--json", action="store_true", help="print one JSON object per line, for programs")

    p = sub.add_parser(
        "node",
        parents=[boot],
        help="run a DHT node until Ctrl-C",
        description="Run a long-lived DHT node that answers queries, keeps its routing table fresh "
        "and saves it on exit. Prints a status line every few seconds.",
    )
    p.add_argument("--bind", metavar="IP:PORT", type=_address, default=("0.0.0.0", 6881),
                   help="local UDP address (default 0.0.0.0:6881)")
    p.add_argument("--state", metavar="PATH", help=f"routing-table file (default {default_state_path()})")
    p.add_argument("--no-state", action="store_true", help="neither read nor write a routing-table file")
    p.add_argument("--json", action="store_true", help="status as JSON lines on stdout")

    p = sub.add_parser(
        "ping",
        help="ping one DHT node and print its ID, version and round-trip time",
        description="Send a KRPC ping to HOST:PORT.",
    )
    p.add_argument("address", metavar="HOST:PORT", type=_address)
    p.add_argument("--bind", metavar="IP:PORT", type=_address, default=("0.0.0.0", 0))
    p.add_argument("--timeout", metavar="S", type=_positive_float, default=5.0, help="seconds to wait (default 5)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser(
        "demo",
        help="start a DHT of our own nodes on loopback, announce, and look up (no internet needed)",
        description="Start N nodes on distinct 127.0.x.y addresses, let some announce a demo "
        "infohash, then look it up from a fresh node with live progress, and shut down.",
    )
    p.add_argument("--nodes", metavar="N", type=_node_count, default=300, help="nodes in the network (default 300)")
    p.add_argument("--seed", metavar="S", type=int, default=0, help="seed for node IDs and the demo infohash")
    p.add_argument("--json", action="store_true", help="print lookup events as JSON lines")

    p = sub.add_parser(
        "testnet",
        help="keep a loopback DHT of our nodes up and print its bootstrap address",
        description="Start N nodes on loopback and keep them running until Ctrl-C, so other "
        "programs (another mainline-dht, libtorrent, any client) can join it.",
    )
    p.add_argument("--nodes", metavar="N", type=_node_count, default=100, help="nodes (default 100)")
    p.add_argument("--seed", metavar="S", type=int, default=0)
    p.add_argument("--port", metavar="PORT", type=_port, default=6881, help="UDP port of each node (default 6881)")
    return parser


# --- commands -----------------------------------------------------------------------


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def _summary(stats: LookupStats) -> dict[str, Any]:
    return {
        "queries": stats.queries,
        "replies": stats.replies,
        "timeouts": stats.timeouts,
        "elapsed": round(stats.elapsed or 0.0, 4),
        "first_peer": None if stats.first_peer_at is None else round(stats.first_peer_at - stats.started_at, 4),
    }


async def _lookup_and_print(
    node: DHTNode,
    info_hash: bytes,
    *,
    json_out: bool,
    status: Status,
    timeout: float,
    announce_port: int | None,
    announce: bool,
) -> tuple[int, list[Address]]:
    """Run a lookup, print each peer as it arrives and a summary; return (exit status, peers)."""
    start = trio.current_time()
    peers_found = 0
    announced: int | None = None
    with trio.move_on_after(timeout) as scope:
        async with node.get_peers(info_hash) as stream:

            async def progress() -> None:
                while True:
                    s = stream.stats
                    status.show(f"asked {s.queries} nodes, {s.replies} replies, {s.timeouts} timeouts, "
                                f"{peers_found} peers, {trio.current_time() - start:.1f} s")
                    await trio.sleep(0.1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(progress)
                async for ip, port in stream:
                    peers_found += 1
                    elapsed = round(trio.current_time() - start, 4)
                    if json_out:
                        _emit({"event": "peer", "ip": ip, "port": port, "elapsed": elapsed})
                    else:
                        status.clear()
                        print(f"{ip}:{port}" if ":" not in ip else f"[{ip}]:{port}", flush=True)
                nursery.cancel_scope.cancel()
        if announce:
            status.show("announcing...")
            announced = await node.announce(info_hash, announce_port, stream=stream)
    status.clear()
    stats = stream.stats
    if stats.replies == 0 and not peers_found:
        tried = ", ".join(f"{h}:{p}" for h, p in node.bootstrap_nodes) or "no bootstrap nodes"
        raise BootstrapError(
            f"no DHT node answered (tried {tried}). Check the network, or pass a reachable node with "
            "--bootstrap HOST:PORT."
        )
    summary = _summary(stats)
    if json_out:
        _emit({"event": "done", "peers": peers_found, **summary, "announced": announced,
               "timed_out": scope.cancelled_caught})
    else:
        first = summary["first_peer"]
        line = (f"{peers_found} peers in {summary['elapsed']:.2f} s"
                f"{f' (first after {first:.2f} s)' if first is not None else ''}; "
                f"{stats.queries} queries, {stats.replies} replies, {stats.timeouts} timeouts")
        if scope.cancelled_caught:
            line += f"; stopped at the {timeout:g} s limit"
        if announced is not None:
            line += f"; announced to {announced} nodes"
        print(line, file=sys.stderr, flush=True)
    return (EXIT_OK if peers_found else EXIT_NOT_FOUND), stream.peers


async def cmd_peers(args: argparse.Namespace) -> int:
    info_hash = parse_target(args.target)
    status = Status(sys.stderr, sys.stderr.isatty() and not args.json)
    bootstrap = tuple(args.bootstrap) if args.bootstrap else DEFAULT_BOOTSTRAP
    async with open_node(args.bind, bootstrap=bootstrap) as node:
        code, _ = await _lookup_and_print(
            node,
            info_hash,
            json_out=args.json,
            status=status,
            timeout=args.timeout,
            announce_port=args.announce,
            announce=args.announce is not None or args.announce_implied,
        )
    return code


async def cmd_ping(args: argparse.Namespace) -> int:
    addr = await resolve_address(args.address)
    async with open_node(args.bind, bootstrap=()) as node:
        start = trio.current_time()
        resp = await node.ping(addr, timeout=args.timeout)
        rtt = trio.current_time() - start
    version = resp.version.hex() if resp.version else None
    client = resp.version[:2].decode("ascii", "replace") if resp.version else None
    if args.json:
        _emit({"address": f"{addr[0]}:{addr[1]}", "id": resp.sender_id.hex(), "version": version,
               "client": client, "rtt": round(rtt, 6), "ip": None if resp.ip is None else f"{resp.ip[0]}:{resp.ip[1]}"})
    else:
        print(f"{addr[0]}:{addr[1]}  id {resp.sender_id.hex()}  version "
              f"{f'{client} ({version})' if version else 'none'}  rtt {rtt * 1000:.1f} ms")
    return EXIT_OK


async def cmd_node(args: argparse.Namespace) -> int:
    state = None if args.no_state else (args.state or default_state_path())
    if state is not None:
        os.makedirs(os.path.dirname(os.path.abspath(state)), exist_ok=True)
    bootstrap = tuple(args.bootstrap) if args.bootstrap else DEFAULT_BOOTSTRAP
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(args.bind, bootstrap=bootstrap, state_path=state, join=True) as node:
            bind = node.local_address
            print(f"node {node.node_id.hex()} on {bind[0]}:{bind[1]}"
                  f"{f', state {state}' if state else ''}; Ctrl-C to stop", file=sys.stderr, flush=True)
            start = trio.current_time()
            with trio.move_on_after(math.inf) as scope:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        scope.cancel()
                        return

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stop_on_signal)
                    while True:
                        await trio.sleep(STATUS_INTERVAL)
                        _print_status(node, trio.current_time() - start, args.json)
    print(f"stopped{f'; routing table saved to {state}' if state else ''}", file=sys.stderr, flush=True)
    return EXIT_OK


def _print_status(node: DHTNode, uptime: float, json_out: bool) -> None:
    s = node.stats
    if json_out:
        _emit({"event": "status", "uptime": round(uptime, 1), **dataclasses.asdict(s)})
        return
    print(f"[{uptime:7.0f} s] table {s.table_size} ({s.good} good, {s.questionable} questionable) "
          f"in {s.buckets} buckets; queries in {s.queries_received}, out {s.queries_sent}, "
          f"timeouts {s.timeouts}; {s.stored_peers} peers for {s.infohashes} infohashes",
          file=sys.stderr, flush=True)


async def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return await run_demo(args.nodes, seed=args.seed, json_out=args.json)


async def cmd_testnet(args: argparse.Namespace) -> int:
    from .demo import run_testnet

    return await run_testnet(args.nodes, seed=args.seed, port=args.port)


COMMANDS = {"peers": cmd_peers, "node": cmd_node, "ping": cmd_ping, "demo": cmd_demo, "testnet": cmd_testnet}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return trio.run(COMMANDS[args.command], args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:  # pragma: no cover - the library collapses single errors
        if group.subgroup(KeyboardInterrupt) is not None:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise
    except (TargetError, BootstrapError, QueryTimeout, KRPCError, DHTError) as exc:
        print(f"mainline-dht: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"mainline-dht: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
