"""The ``mainline-dht`` command line.

Owns: argument parsing, the subcommands ``peers`` (look up peers for an
infohash or magnet link), ``node`` (run a long-lived node), ``ping`` (one
node), and the entry points of ``demo`` and ``testnet`` (in
:mod:`mainline_dht.demo`), and turning expected failures into one-line
messages. This module and :mod:`mainline_dht.demo` are the only ones that
write to the terminal; the library never imports them.

Output: results go to stdout (peers one per line, or JSON lines with
``--json``); progress, summaries and errors go to stderr. A live progress line
is drawn only when stderr is a terminal.

Exit status: 0 success; 1 a lookup completed without peers (or the demo missed
some); 2 errors (bad arguments, nothing answered, a port in use); 130
interrupted; 141 stdout was closed early (``| head``).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import trio

from . import __version__
from .runtime import node as _node  # resolve_address is looked up at call time, so tests can replace it
from .wire.contact import Address
from .errors import DHTError, KRPCError, QueryTimeout, StateFileError
from .core.lookup import LookupStats
from .runtime.node import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_BOOTSTRAP_TIMEOUT,
    DHTNode,
    collapse_single_errors,
    default_state_path,
    open_node,
    parse_address,
)
from .core.protocol import NodeConfig
from .runtime.state_file import load_contacts
from .wire.target import TargetError, parse_target

__all__ = [
    "main",
    "build_parser",
    "CLIError",
    "LookupResult",
    "Status",
    "emit",
    "format_seconds",
    "lookup_and_print",
    "run_until_signal",
]

EXIT_OK: Final = 0
EXIT_NOT_FOUND: Final = 1
EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130
#: As a shell reports a command killed by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE: Final = 141

#: Seconds between status lines of ``mainline-dht node``.
STATUS_INTERVAL: Final = 5.0
#: Seconds between redraws of the live progress line.
PROGRESS_INTERVAL: Final = 0.1
#: The first loopback address of ``demo`` and ``testnet`` networks.
LOCALNET_FIRST_IP: Final = "127.0.1.1"

#: The configuration of short-lived nodes (``peers``, ``ping``): BEP 43 read-only,
#: so that other nodes do not keep us in their routing tables after we exit.
TRANSIENT: Final = NodeConfig(read_only=True)

log = logging.getLogger(__name__)


class CLIError(Exception):
    """An expected failure: printed as one ``mainline-dht: error: ...`` line, exit status 2."""


# --- terminal output ----------------------------------------------------------------


class Status:
    """One self-overwriting progress line on a terminal; silent when disabled.

    Hand-written because it is one line of text: a progress-bar library would
    add a dependency for less than this class does.
    """

    #: The line on screen, cleared before an error or interruption is printed.
    active: Status | None = None

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._width = 0

    def show(self, text: str) -> None:
        """Replace the line with ``text``."""
        if not self.enabled:
            return
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)
        Status.active = self

    def clear(self) -> None:
        """Erase the line (before printing anything else on the terminal)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
        if Status.active is self:
            Status.active = None


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON object as a line on stdout."""
    print(json.dumps(obj), flush=True)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def format_seconds(seconds: float) -> str:
    """``0.0023`` → ``"2.3 ms"``, ``4.56`` → ``"4.56 s"``, ``312`` → ``"312 s"``."""
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 100.0:
        return f"{seconds:.2f} s"
    return f"{seconds:.0f} s"


def _format_address(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}es" if word.endswith(("s", "sh")) else f"{n} {word}s"


# --- argument types -----------------------------------------------------------------


def _local_address(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _remote_address(text: str) -> Address:
    addr = _local_address(text)
    if addr[1] == 0:
        raise argparse.ArgumentTypeError(f"port must be 1-65535 in {text!r}")
    return addr


def _loopback_base(text: str) -> tuple[str, int | None]:
    """``IP`` or ``IP:PORT`` of a loopback IPv4 address; the port is ``None`` when left out."""
    from .runtime.localnet import loopback_ips

    if ":" in text:
        ip, port = _local_address(text)
        base: tuple[str, int | None] = (ip, port)
    else:
        base = (text, None)
    try:
        loopback_ips(base[0], 1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return base


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _int_in_range(lo: int, hi: int, what: str, out_of_range: str) -> Callable[[str], int]:
    """An argparse type: a whole number from ``lo`` to ``hi``, else ``out_of_range`` as the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{out_of_range}: {text!r}")
        return value

    return parse


_port = _int_in_range(1, 65535, "a port number", "port must be 1-65535")
_node_count = _int_in_range(2, 20000, "a whole number", "must be between 2 and 20000")


# --- the parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="mainline-dht",
        description="Talk to the BitTorrent Mainline DHT (BEP 5): find peers for a torrent, "
        "run a node, or try it all on a DHT of our own on loopback.",
        epilog="Try 'mainline-dht demo' for a self-contained tour (no internet needed). "
        "'mainline-dht COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="print debug logs on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=argparse.SUPPRESS,
                        help="print debug logs on stderr")
    boot = argparse.ArgumentParser(add_help=False)
    boot.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        type=_remote_address,
        action="append",
        help="a node to join the DHT through; repeat for several. Replaces the default routers ("
        + ", ".join(_format_address(a) for a in DEFAULT_BOOTSTRAP)
        + ")",
    )

    p = sub.add_parser(
        "peers",
        parents=[common, boot],
        help="find peers for an infohash or magnet link",
        description="Look up the peers of a torrent on the DHT and print each as it arrives (IP:PORT "
        "on stdout), then a summary on stderr. Optionally announce ourselves as a peer too.",
        epilog="Exit status: 0 peers found; 1 the lookup finished without peers; 2 error "
        "(bad target, nothing answered); 130 interrupted.",
    )
    p.add_argument("target", metavar="TARGET",
                   help="infohash (40 hex or 32 base32 characters) or magnet link (quote it in the shell)")
    p.add_argument("--bind", metavar="IP:PORT", type=_local_address, default=("0.0.0.0", 0),
                   help="local UDP address to send from (default 0.0.0.0 and any free port)")
    p.add_argument("--timeout", metavar="S", type=_positive_float, default=60.0,
                   help="stop the lookup after S seconds (default 60)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--announce", metavar="PORT", type=_port,
                       help="after the lookup, announce that we serve the torrent on TCP/uTP port PORT")
    group.add_argument("--announce-implied", action="store_true",
                       help="after the lookup, announce us on the port the DHT sees our UDP packets come "
                       "from (BEP 5 implied_port, for clients behind NAT)")
    p.add_argument("--json", action="store_true",
                   help='print JSON lines: {"event": "peer", ...} per peer, then {"event": "done", ...}')

    p = sub.add_parser(
        "node",
        parents=[common, boot],
        help="run a DHT node until Ctrl-C",
        description="Run a long-lived DHT node: it answers other nodes' queries, keeps its routing "
        "table fresh, prints a status line every few seconds and saves its routing table on exit "
        "(Ctrl-C or SIGTERM), so the next start rejoins without the routers.",
        epilog="Exit status: 0 stopped by Ctrl-C or SIGTERM; 2 error (the port is in use, say).",
    )
    p.add_argument("--bind", metavar="IP:PORT", type=_local_address, default=("0.0.0.0", 6881),
                   help="local UDP address (default 0.0.0.0:6881)")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--state", metavar="PATH", type=Path,
                       help=f"routing-table file to load and save (default {default_state_path()})")
    state.add_argument("--no-state", action="store_true", help="neither load nor save a routing-table file")
    p.add_argument("--json", action="store_true", help="print events and status as JSON lines")
    p.add_argument("--status-interval", metavar="S", type=_positive_float, default=STATUS_INTERVAL,
                   help=argparse.SUPPRESS)

    p = sub.add_parser(
        "ping",
        parents=[common],
        help="ping one DHT node: its ID, client version and round-trip time",
        description="Send a KRPC ping to one DHT node and print its node ID, client version, "
        "round-trip time and the address it sees us at.",
        epilog="Exit status: 0 it answered; 2 no answer in time, or another error.",
    )
    p.add_argument("address", metavar="HOST:PORT", type=_remote_address, help="the node to ping")
    p.add_argument("--bind", metavar="IP:PORT", type=_local_address, default=("0.0.0.0", 0),
                   help="local UDP address to send from (default 0.0.0.0 and any free port)")
    p.add_argument("--timeout", metavar="S", type=_positive_float, default=5.0,
                   help="seconds to wait for the answer (default 5)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="a whole DHT on loopback: start nodes, announce, look up (no internet needed)",
        description="Start N DHT nodes on distinct loopback addresses (127.0.1.1, 127.0.1.2, ...; "
        "127.0.0.1 on distinct ports where the system routes no other), let a few announce a demo "
        "infohash, then look it up from a fresh node with live progress, print the peers and the "
        "lookup's figures, and shut down. Real UDP; nothing leaves this machine.",
        epilog="Exit status: 0 every announced peer was found; 1 some were missed; 2 error.",
    )
    p.add_argument("--nodes", metavar="N", type=_node_count, default=300, help="nodes in the network (default 300)")
    p.add_argument("--seed", metavar="S", type=int, default=0,
                   help="seed for node IDs, the announcers and the infohash (default 0)")
    p.add_argument("--base", metavar="IP[:PORT]", type=_loopback_base, default=(LOCALNET_FIRST_IP, None),
                   help=f"the first node's loopback address; the others count up from it "
                   f"(default {LOCALNET_FIRST_IP}, each node on a free port)")
    p.add_argument("--json", action="store_true", help="print the lookup's events as JSON lines, then a summary")

    p = sub.add_parser(
        "testnet",
        parents=[common],
        help="keep a DHT of our nodes up on loopback for other programs to join",
        description="Start N DHT nodes on loopback and keep them running until Ctrl-C (or SIGTERM), so "
        "other programs (another mainline-dht, libtorrent, any client) can join through the "
        "bootstrap address printed on the first line of stdout.",
        epilog="Exit status: 0 stopped by Ctrl-C or SIGTERM; 2 error (the port is in use, say).",
    )
    p.add_argument("--nodes", metavar="N", type=_node_count, default=100, help="nodes in the network (default 100)")
    p.add_argument("--seed", metavar="S", type=int, default=0, help="seed for the node IDs (default 0)")
    p.add_argument("--base", metavar="IP[:PORT]", type=_loopback_base, default=(LOCALNET_FIRST_IP, None),
                   help=f"the first node's address, which others bootstrap from; the others count up "
                   f"from its IP on the same port (default {LOCALNET_FIRST_IP}:6881)")
    return parser


# --- shared helpers -----------------------------------------------------------------


def _bind_error(what: str, exc: OSError, option: str) -> CLIError:
    """A one-line message for a UDP address that cannot be bound."""
    if exc.errno == errno.EADDRINUSE:
        reason = f"the port is in use (by another DHT node or client?); choose another with {option}"
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason = f"no such address on this machine; choose another with {option}"
    elif exc.errno == errno.EACCES:
        reason = "permission denied (ports below 1024 need privileges)"
    else:
        reason = exc.strerror or str(exc)
    return CLIError(f"cannot bind UDP {what}: {reason}")


@asynccontextmanager
async def _open_cli_node(bind: Address, **options: Any) -> AsyncIterator[DHTNode]:
    """:func:`open_node`, with binding failures turned into :class:`CLIError`."""
    async with AsyncExitStack() as stack:
        try:
            node = await stack.enter_async_context(open_node(bind, **options))
        except OSError as exc:
            if exc.filename is not None:  # the state file, not the socket
                raise CLIError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
            raise _bind_error(_format_address(bind), exc, "--bind IP:PORT") from None
        log.debug("node %s bound to %s", node.node_id.hex(), _format_address(node.local_address))
        yield node


async def _resolve_all(addrs: Sequence[Address]) -> tuple[list[tuple[Address, Address]], list[str]]:
    """Resolve host names concurrently, within the bootstrap timeout.

    Returns:
        ``(given, resolved)`` pairs for the names that resolved, and a
        ``"host: reason"`` line for each that did not.
    """
    results: dict[int, Address] = {}
    failures: dict[int, str] = {}

    async def one(i: int, addr: Address) -> None:
        try:
            results[i] = await _node.resolve_address(addr)
        except OSError as exc:
            failures[i] = f"{addr[0]}: {exc.strerror or exc}"

    with trio.move_on_after(DEFAULT_BOOTSTRAP_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i, addr in enumerate(addrs):
                nursery.start_soon(one, i, addr)
    for i, addr in enumerate(addrs):
        if i not in results and i not in failures:
            failures[i] = f"{addr[0]}: no answer from DNS within {DEFAULT_BOOTSTRAP_TIMEOUT:g} s"
    return [(addrs[i], results[i]) for i in sorted(results)], [failures[i] for i in sorted(failures)]


def _unresolved_message(failures: list[str]) -> str:
    reasons = {f.split(": ", 1)[1] for f in failures}
    if len(reasons) == 1:
        names = ", ".join(f.split(": ", 1)[0] for f in failures)
        detail = f"{names}: {reasons.pop()}"
    else:
        detail = "; ".join(failures)
    return (f"cannot resolve any bootstrap node ({detail}). Are you offline? "
            "Pass a reachable node with --bootstrap HOST:PORT.")


def _describe(given: Address, resolved: Address) -> str:
    if given == resolved:
        return _format_address(given)
    return f"{_format_address(given)} ({resolved[0]})"


async def run_until_signal(body: Callable[[], Awaitable[object]]) -> bool:
    """Run ``body`` until it returns or SIGINT/SIGTERM arrives.

    Returns:
        Whether a signal stopped it.
    """
    stopped = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with collapse_single_errors(), trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal stopped
                async for _ in signals:
                    stopped = True
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            await body()
            nursery.cancel_scope.cancel()
    return stopped


# --- peers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LookupResult:
    """What :func:`lookup_and_print` did.

    Attributes:
        code: the exit status (0 peers found, 1 none, 130 interrupted).
        peers: the peers found, in arrival order.
        elapsed: seconds the lookup ran.
        stats: the lookup's counters.
        announced: nodes that accepted our announce, or ``None`` if we did not announce.
    """

    code: int
    peers: list[Address]
    elapsed: float
    stats: LookupStats
    announced: int | None


async def lookup_and_print(
    node: DHTNode,
    info_hash: bytes,
    *,
    json_out: bool,
    status: Status,
    timeout: float,
    announce: bool = False,
    announce_port: int | None = None,
    tried: str | None = None,
    header: str | None = None,
) -> LookupResult:
    """Run a ``get_peers`` lookup, print each peer as it arrives, then a summary.

    Ctrl-C stops the lookup early (the summary is still printed). Elapsed times
    count from the start of the lookup, in seconds.

    Args:
        node: a running node.
        info_hash: the 20-byte infohash.
        json_out: print JSON lines on stdout instead of text.
        status: the live progress line.
        timeout: seconds after which the lookup is stopped.
        announce: announce ourselves afterwards (BEP 5 ``announce_peer``).
        announce_port: our peer port; ``None`` means ``implied_port``.
        tried: how to name the bootstrap nodes in the "nothing answered" error.
        header: a line for stderr once Ctrl-C is handled (not printed with ``json_out``).

    Raises:
        CLIError: no node answered at all.
    """
    peers: list[Address] = []
    interrupted = False
    stream = None
    announced: int | None = None
    current = trio.CancelScope()  # what Ctrl-C cancels: the lookup, then the announce

    async def on_signal(signals: AsyncIterator[int]) -> None:
        nonlocal interrupted
        async for _ in signals:
            interrupted = True
            current.cancel()

    async def progress() -> None:
        while stream is not None:
            s = stream.stats
            status.show(f"asked {s.queries} nodes: {s.replies} replies, {s.timeouts} timeouts; "
                        f"{_plural(len(peers), 'peer')}; {trio.current_time() - s.started_at:.1f} s")
            await trio.sleep(PROGRESS_INTERVAL)

    async with AsyncExitStack() as stack, collapse_single_errors(), trio.open_nursery() as outer:
        if threading.current_thread() is threading.main_thread():
            signals = stack.enter_context(trio.open_signal_receiver(signal.SIGINT))
            outer.start_soon(on_signal, signals)
        if header is not None and not json_out:
            _say(header)
        with trio.move_on_after(timeout) as limit, current:
            async with node.get_peers(info_hash) as stream:
                started = stream.stats.started_at
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(progress)
                    async for ip, port in stream:
                        peers.append((ip, port))
                        if json_out:
                            emit({"event": "peer", "ip": ip, "port": port,
                                  "elapsed": round(stream.found_at((ip, port)) - started, 4)})
                        else:
                            status.clear()
                            print(_format_address((ip, port)), flush=True)
                    nursery.cancel_scope.cancel()
        ended = trio.current_time()
        status.clear()
        if stream is not None and announce and not interrupted and stream.stats.replies:
            current = trio.CancelScope()
            with current:
                status.show("announcing...")
                announced = await node.announce(info_hash, announce_port, stream=stream)
            status.clear()
        outer.cancel_scope.cancel()

    if stream is None:  # stopped before the lookup began
        raise CLIError("interrupted" if interrupted else f"no lookup within {timeout:g} s")
    stats = stream.stats
    timed_out = limit.cancelled_caught and not interrupted
    elapsed = (stats.finished_at if stats.finished_at is not None else ended) - stats.started_at
    if stats.replies == 0 and not peers and not interrupted:
        names = tried or ", ".join(_format_address(a) for a in node.bootstrap_nodes) or "no bootstrap nodes"
        raise CLIError(
            f"no DHT node answered within {format_seconds(elapsed)} (tried {names}). "
            "Check your network, or pass a reachable node with --bootstrap HOST:PORT."
        )
    first = None if stats.first_peer_at is None else stats.first_peer_at - stats.started_at
    if json_out:
        emit({"event": "done", "peers": len(peers), "queries": stats.queries, "replies": stats.replies,
              "timeouts": stats.timeouts, "elapsed": round(elapsed, 4),
              "first_peer": None if first is None else round(first, 4), "announced": announced,
              "timed_out": timed_out, "interrupted": interrupted})
    else:
        if peers:
            line = f"{_plural(len(peers), 'peer')} in {format_seconds(elapsed)}"
            if first is not None:
                line += f" (first after {format_seconds(first)})"
        else:
            line = f"no peers found in {format_seconds(elapsed)}"
        line += f"; asked {stats.queries} nodes: {stats.replies} replies, {stats.timeouts} timeouts"
        if timed_out:
            line += f"; stopped at the {timeout:g} s limit (--timeout)"
        if interrupted:
            line += "; interrupted"
        if announced is not None:
            line += f"; announce accepted by {_plural(announced, 'node')}"
        _say(line)
    code = EXIT_INTERRUPTED if interrupted else EXIT_OK if peers else EXIT_NOT_FOUND
    return LookupResult(code, peers, elapsed, stats, announced)


async def cmd_peers(args: argparse.Namespace) -> int:
    try:
        info_hash = parse_target(args.target)
    except TargetError as exc:
        raise CLIError(str(exc)) from None
    given = tuple(args.bootstrap) if args.bootstrap else DEFAULT_BOOTSTRAP
    resolved, failures = await _resolve_all(given)
    if not resolved:
        raise CLIError(_unresolved_message(failures))
    for failure in failures:
        log.warning("cannot resolve bootstrap node %s", failure)
    tried = ", ".join(_describe(g, r) for g, r in resolved)
    log.debug("bootstrap nodes: %s", tried)
    status = Status(sys.stderr, enabled=sys.stderr.isatty() and not args.json)
    async with _open_cli_node(args.bind, bootstrap=[r for _, r in resolved], config=TRANSIENT) as node:
        result = await lookup_and_print(
            node,
            info_hash,
            json_out=args.json,
            status=status,
            timeout=args.timeout,
            announce=args.announce is not None or args.announce_implied,
            announce_port=args.announce,
            tried=tried,
            header=f"looking up peers for {info_hash.hex()} via {tried}",
        )
    return result.code


# --- ping ---------------------------------------------------------------------------


def _describe_version(version: bytes | None) -> tuple[str | None, str]:
    """(client code or None, human text) of a KRPC ``v`` value (2-byte client + 2-byte version)."""
    if not version:
        return None, "none"
    code = version[:2]
    if len(version) >= 2 and all(0x20 < b < 0x7F for b in code):
        client = code.decode("ascii")
        rest = version[2:].hex()
        return client, f"{client} {rest}" if rest else client
    return None, version.hex()


async def cmd_ping(args: argparse.Namespace) -> int:
    given: Address = args.address
    try:
        addr = await _node.resolve_address(given)
    except OSError as exc:
        raise CLIError(f"cannot resolve {given[0]}: {exc.strerror or exc}") from None
    shown = _describe(given, addr)
    async with _open_cli_node(args.bind, bootstrap=(), config=TRANSIENT) as node:
        start = trio.current_time()
        try:
            resp = await node.ping(addr, timeout=args.timeout)
        except QueryTimeout:
            raise CLIError(f"no answer from {shown} within {args.timeout:g} s "
                           "(is a DHT node listening there, and is UDP let through?)") from None
        except KRPCError as exc:
            raise CLIError(f"{shown} answered with KRPC error {exc.code}: {exc.message}") from None
        rtt = trio.current_time() - start
    client, version = _describe_version(resp.version)
    seen = None if resp.ip is None else _format_address(resp.ip)
    if args.json:
        emit({"address": _format_address(addr), "host": given[0], "id": resp.sender_id.hex(),
              "version": resp.version.hex() if resp.version else None, "client": client,
              "rtt": round(rtt, 6), "ip": seen})
    else:
        line = f"{shown}: id {resp.sender_id.hex()}, version {version}, rtt {format_seconds(rtt)}"
        if seen is not None:
            line += f", sees us as {seen}"
        print(line, flush=True)
    return EXIT_OK


# --- node ---------------------------------------------------------------------------


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _print_status(node: DHTNode, uptime: float, json_out: bool) -> None:
    s = node.stats
    if json_out:
        emit({"event": "status", "uptime": round(uptime, 1), "joined": node.joined.is_set(),
              "id": node.node_id.hex(), "external_ip": node.external_ip, **dataclasses.asdict(s)})
        return
    line = (f"{_uptime(uptime)}  {_plural(s.table_size, 'contact')} ({s.good} good, {s.questionable} "
            f"questionable) in {_plural(s.buckets, 'bucket')}; queries received {s.queries_received}, "
            f"sent {s.queries_sent} ({s.timeouts} timed out); storing {_plural(s.stored_peers, 'peer')} "
            f"for {_plural(s.infohashes, 'infohash')}")
    if node.external_ip is not None:
        line += f"; seen as {node.external_ip}"
    if not node.joined.is_set():
        line += "; not joined yet"
    print(line, flush=True)


def _saved_contacts(state: Path | None) -> int:
    """How many contacts the state file holds (0 when there is none or it is unreadable)."""
    if state is None or not state.exists():
        return 0
    try:
        return len(load_contacts(state)[1])
    except (OSError, StateFileError):
        return 0  # open_node warns and starts afresh


async def cmd_node(args: argparse.Namespace) -> int:
    state: Path | None = None if args.no_state else (args.state or default_state_path())
    if state is not None:
        try:
            state.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"cannot create the directory for {state}: {exc.strerror or exc}") from None
    saved = _saved_contacts(state)
    bootstrap = tuple(args.bootstrap) if args.bootstrap else DEFAULT_BOOTSTRAP
    json_out: bool = args.json
    async with _open_cli_node(args.bind, bootstrap=bootstrap, state_path=state) as node:
        host, port = node.local_address
        if json_out:
            emit({"event": "started", "id": node.node_id.hex(), "address": _format_address((host, port)),
                  "state": None if state is None else str(state), "saved_contacts": saved})
        else:
            print(f"node {node.node_id.hex()} on UDP {_format_address((host, port))}; "
                  f"{f'routing table file {state}' if state else 'no routing table file'}; Ctrl-C to stop",
                  flush=True)
        start = trio.current_time()

        async def run() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(join)
                node_id = node.node_id
                while True:
                    await trio.sleep(args.status_interval)
                    if node.node_id != node_id and not json_out:  # (JSON status lines carry the ID)
                        node_id = node.node_id
                        print(f"node ID is now {node_id.hex()}: BEP 42's choice for our address "
                              f"{node.external_ip}", flush=True)
                    _print_status(node, trio.current_time() - start, json_out)

        async def join() -> None:
            if not saved:
                _, failures = await _resolve_all(bootstrap)
                if len(failures) == len(bootstrap):
                    log.warning("%s The node keeps trying.", _unresolved_message(failures))
                    return  # the node's maintenance re-bootstraps while the table is empty
            try:
                await node.bootstrap()
            except DHTError as exc:
                log.warning("%s The node keeps trying.", exc)

        await run_until_signal(run)
        contacts = len(node.table)
    if json_out:
        emit({"event": "stopped", "contacts": contacts, "state": None if state is None else str(state)})
    elif state is not None and contacts:
        print(f"stopped; {_plural(contacts, 'contact')} saved to {state}", flush=True)
    else:
        print("stopped", flush=True)
    return EXIT_OK


# --- demo and testnet ---------------------------------------------------------------


async def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    ip, port = args.base
    try:
        return await run_demo(args.nodes, seed=args.seed, json_out=args.json, base=(ip, port or 0))
    except OSError as exc:
        if exc.filename is None:  # not a bind failure of open_local_network
            raise
        raise _bind_error(exc.filename, exc, "--base IP:PORT") from None


async def cmd_testnet(args: argparse.Namespace) -> int:
    from .demo import run_testnet
    from .runtime.localnet import DEFAULT_BASE_PORT

    ip, port = args.base
    port = DEFAULT_BASE_PORT if port is None else port
    try:
        return await run_testnet(args.nodes, seed=args.seed, base=(ip, port))
    except OSError as exc:
        if exc.filename is None:  # not a bind failure of open_local_network
            raise
        raise _bind_error(exc.filename, exc, "--base IP:PORT") from None


COMMANDS: Final[dict[str, Callable[[argparse.Namespace], Awaitable[int]]]] = {
    "peers": cmd_peers,
    "node": cmd_node,
    "ping": cmd_ping,
    "demo": cmd_demo,
    "testnet": cmd_testnet,
}


# --- entry point --------------------------------------------------------------------


class _Formatter(logging.Formatter):
    """``mainline-dht: warning: ...`` by default; timestamps and logger names with ``-v``."""

    def __init__(self, verbose: bool) -> None:
        if verbose:
            super().__init__("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        else:
            super().__init__("mainline-dht: %(levelname)s: %(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if not self.verbose:
            record = logging.makeLogRecord(record.__dict__)
            record.levelname = record.levelname.lower()
        return super().format(record)


def _configure_logging(verbosity: int) -> None:
    """Send the library's logs to stderr: warnings, or everything with ``-v``."""
    logger = logging.getLogger("mainline_dht")
    for handler in list(logger.handlers):
        if getattr(handler, "_mainline_dht_cli", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._mainline_dht_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter(verbosity > 0))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING)


def _error(text: str) -> None:
    if Status.active is not None:
        Status.active.clear()
    print(f"mainline-dht: error: {text}", file=sys.stderr, flush=True)


def _expected(exc: BaseException) -> BaseException | None:
    """The failure to report from ``exc``: itself, or the lone expected one in a group."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions]
        if len(leaves) != 1:
            ki = exc.subgroup(KeyboardInterrupt)
            return KeyboardInterrupt() if ki is not None else None
        exc = leaves[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    _configure_logging(args.verbose + getattr(args, "sub_verbose", 0))
    try:
        return trio.run(COMMANDS[args.command], args)
    except BaseException as raised:  # noqa: BLE001 - sorted below; anything unexpected is re-raised
        exc = _expected(raised)
        if isinstance(exc, BrokenPipeError):  # stdout closed early (| head): stop quietly
            try:  # so that the interpreter's final flush does not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass  # not a real file
            return EXIT_BROKEN_PIPE
        if isinstance(exc, KeyboardInterrupt):
            _error("interrupted")
            return EXIT_INTERRUPTED
        if isinstance(exc, (CLIError, DHTError)):
            _error(str(exc))
            return EXIT_ERROR
        if isinstance(exc, OSError):
            _error(exc.strerror or str(exc))
            return EXIT_ERROR
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
