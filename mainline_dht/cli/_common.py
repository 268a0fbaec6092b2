"""What every command shares: exit statuses, terminal output, argument types,
opening a node for the command line and resolving bootstrap routers.

The command-line package is the only part of mainline-dht that writes to the
terminal. Output: results go to stdout (JSON lines with ``--json``); progress,
summaries and errors go to stderr. A live progress line is drawn only when
stderr is a terminal.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TextIO

import trio

from ..core.protocol import NodeConfig
from ..errors import LocalProtocolError
from ..runtime import node as _node  # resolve_address is looked up at call time, so tests can replace it
from ..runtime.node import DEFAULT_BOOTSTRAP, DEFAULT_BOOTSTRAP_TIMEOUT, DHTNode, collapse_single_errors, open_node, parse_address
from ..wire.contact import Address

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

log = logging.getLogger("mainline_dht.cli")


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


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def format_seconds(seconds: float) -> str:
    """``0.0023`` → ``"2.3 ms"``, ``4.56`` → ``"4.56 s"``, ``312`` → ``"312 s"``."""
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 100.0:
        return f"{seconds:.2f} s"
    return f"{seconds:.0f} s"


#: Characters of remote text shown at most (the rest is cut, with an ellipsis).
REMOTE_TEXT_LIMIT = 300


def terminal_safe(text: str, limit: int | None = REMOTE_TEXT_LIMIT) -> str:
    """Return ``text`` fit to print: control and format characters escaped, and cut.

    Everything a remote node sends (KRPC error messages, ``v`` strings, torrent
    names) goes through this before it reaches the terminal, so that no escape
    sequence (``ESC [ ...``), carriage return, bidirectional override or other
    invisible character from the network acts on the user's terminal. Such
    characters become ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``; a backslash
    stays as it is.

    Args:
        text: the untrusted text.
        limit: the most characters kept before escaping (``None``: all).
    """
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        else:
            n = ord(ch)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return "".join(out)


def format_address(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}es" if word.endswith(("s", "sh")) else f"{n} {word}s"


# --- argument types -----------------------------------------------------------------


def local_address_arg(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def remote_address_arg(text: str) -> Address:
    addr = local_address_arg(text)
    if addr[1] == 0:
        raise argparse.ArgumentTypeError(f"port must be 1-65535 in {text!r}")
    return addr


def loopback_base_arg(text: str) -> tuple[str, int | None]:
    """``IP`` or ``IP:PORT`` of a loopback IPv4 address; the port is ``None`` when left out."""
    from ..runtime.localnet import loopback_ips

    if ":" in text:
        ip, port = local_address_arg(text)
        base: tuple[str, int | None] = (ip, port)
    else:
        base = (text, None)
    try:
        loopback_ips(base[0], 1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return base


def positive_seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def int_in_range(lo: int, hi: int, what: str, out_of_range: str) -> Callable[[str], int]:
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


port_arg = int_in_range(1, 65535, "a port number", "port must be 1-65535")
node_count_arg = int_in_range(2, 20000, "a whole number", "must be between 2 and 20000")




@dataclass(frozen=True, slots=True)
class Parents:
    """Options several commands share, as argparse parent parsers."""

    common: argparse.ArgumentParser
    """``-v``, accepted after the command name too."""
    bootstrap: argparse.ArgumentParser
    """``--bootstrap HOST:PORT`` (repeatable)."""


def make_parents() -> Parents:
    """Build the shared parent parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", dest="sub_verbose", action="count", default=argparse.SUPPRESS,
                        help="print debug logs on stderr")
    boot = argparse.ArgumentParser(add_help=False)
    boot.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        type=remote_address_arg,
        action="append",
        help="a node to join the DHT through; repeat for several. Replaces the default routers ("
        + ", ".join(format_address(a) for a in DEFAULT_BOOTSTRAP)
        + ")",
    )
    return Parents(common, boot)


def bind_error(what: str, exc: OSError, option: str) -> CLIError:
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


def add_bind_option(p: argparse.ArgumentParser, port: int, what: str) -> None:
    """``--bind IP:PORT``, repeatable: one address per family (BEP 32's two overlays)."""
    default = (f"0.0.0.0:{port} and, where the host has IPv6, [::]:{port}" if port
               else "0.0.0.0 and, where the host has IPv6, [::], on free ports")
    p.add_argument("--bind", metavar="IP:PORT", type=local_address_arg, action="append",
                   help=f"{what}; repeat it with an IPv4 and an IPv6 address ([::1]:PORT) for both "
                   f"overlays (BEP 32), or give one alone for one family (default {default})")


def overlays_text(node: DHTNode) -> str:
    """``"0.0.0.0:6881 and [::]:6881"``: the addresses of the node's overlays."""
    return " and ".join(format_address(o.local_address) for o in node.overlays)


@asynccontextmanager
async def open_cli_node(bind: Sequence[Address] | None, *, port: int = 0, **options: Any) -> AsyncIterator[DHTNode]:
    """:func:`open_node` on ``--bind``'s addresses (``None``: both families on ``port``),
    with binding failures turned into :class:`CLIError`."""
    async with AsyncExitStack() as stack:
        try:
            node = await stack.enter_async_context(open_node(list(bind) if bind else None, port=port, **options))
        except OSError as exc:
            if exc.filename is not None:  # the state file, not the socket
                raise CLIError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
            shown = " and ".join(format_address(b) for b in bind) if bind else f"port {port}"
            raise bind_error(shown, exc, "--bind IP:PORT") from None
        except LocalProtocolError as exc:
            raise CLIError(f"{exc} (--bind)") from None
        log.debug("node %s bound to %s", node.node_id.hex(), overlays_text(node))
        yield node


async def resolve_all(addrs: Sequence[Address]) -> tuple[list[tuple[Address, Address]], list[str]]:
    """Resolve host names concurrently, within the bootstrap timeout.

    A name gives one pair per family it resolves in: its A and its AAAA record
    (BEP 32: the node's IPv4 and IPv6 overlays each join through their own).

    Returns:
        ``(given, resolved)`` pairs for the names that resolved, and a
        ``"host: reason"`` line for each that did not.
    """
    results: dict[int, list[Address]] = {}
    failures: dict[int, str] = {}

    async def one(i: int, addr: Address) -> None:
        try:
            results[i] = await _node.resolve_addresses(addr)
        except OSError as exc:
            failures[i] = f"{addr[0]}: {exc.strerror or exc}"

    with trio.move_on_after(DEFAULT_BOOTSTRAP_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i, addr in enumerate(addrs):
                nursery.start_soon(one, i, addr)
    for i, addr in enumerate(addrs):
        if i not in results and i not in failures:
            failures[i] = f"{addr[0]}: no answer from DNS within {DEFAULT_BOOTSTRAP_TIMEOUT:g} s"
    pairs = [(addrs[i], r) for i in sorted(results) for r in results[i]]
    return pairs, [failures[i] for i in sorted(failures)]


def unresolved_message(failures: list[str]) -> str:
    reasons = {f.split(": ", 1)[1] for f in failures}
    if len(reasons) == 1:
        names = ", ".join(f.split(": ", 1)[0] for f in failures)
        detail = f"{names}: {reasons.pop()}"
    else:
        detail = "; ".join(failures)
    return (f"cannot resolve any bootstrap node ({detail}). Are you offline? "
            "Pass a reachable node with --bootstrap HOST:PORT.")


def describe_address(given: Address, resolved: Address) -> str:
    if given == resolved:
        return format_address(given)
    return f"{format_address(given)} ({resolved[0]})"


async def bootstrap_nodes(args: argparse.Namespace) -> tuple[list[Address], str]:
    """Resolve ``--bootstrap`` (or the default routers): the addresses and how to name them.

    Names that do not resolve are logged; the rest are used.

    Raises:
        CLIError: none resolves.
    """
    given = tuple(args.bootstrap) if args.bootstrap else DEFAULT_BOOTSTRAP
    resolved, failures = await resolve_all(given)
    if not resolved:
        raise CLIError(unresolved_message(failures))
    for failure in failures:
        log.warning("cannot resolve bootstrap node %s", failure)
    return [r for _, r in resolved], ", ".join(describe_address(g, r) for g, r in resolved)


def nothing_answered(tried: str, elapsed: float | None = None, *, what: str = "") -> CLIError:
    """The error of a command that no DHT node answered: the nodes it tried, and what to do.

    Args:
        tried: how to name the bootstrap nodes (as :func:`bootstrap_nodes` names them).
        elapsed: seconds the command waited, if it says so.
        what: what went unanswered, as words after "answered" (``"the crawl"``).
    """
    answered = f"answered {what}" if what else "answered"
    within = "" if elapsed is None else f" within {format_seconds(elapsed)}"
    return CLIError(
        f"no DHT node {answered}{within} (tried {tried}). "
        "Check your network, or pass a reachable node with --bootstrap HOST:PORT."
    )


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


