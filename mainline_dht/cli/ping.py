"""``mainline-dht ping``: one node's ID, client version and round-trip time.
"""

from __future__ import annotations

import argparse
from typing import Any

import trio

from ..errors import KRPCError, LocalProtocolError, QueryTimeout
from ..runtime import node as _node  # resolve_address is looked up at call time, so tests can replace it
from ..wire.contact import Address
from ._common import (
    EXIT_OK,
    TRANSIENT,
    CLIError,
    Parents,
    describe_address,
    emit,
    format_address,
    terminal_safe,
    format_seconds,
    add_bind_option,
    open_cli_node,
    positive_seconds_arg,
    remote_address_arg,
)

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
    shown = describe_address(given, addr)
    async with open_cli_node(args.bind, bootstrap=(), config=TRANSIENT) as node:
        start = trio.current_time()
        try:
            resp = await node.ping(addr, timeout=args.timeout)
        except QueryTimeout:
            raise CLIError(f"no answer from {shown} within {args.timeout:g} s "
                           "(is a DHT node listening there, and is UDP let through?)") from None
        except KRPCError as exc:
            raise CLIError(f"{shown} answered with KRPC error {exc.code}: {terminal_safe(exc.message)}") from None
        except LocalProtocolError as exc:  # e.g. an IPv6 address, and only an IPv4 --bind
            raise CLIError(str(exc)) from None
        rtt = trio.current_time() - start
    client, version = _describe_version(resp.version)
    seen = None if resp.ip is None else format_address(resp.ip)
    if args.json:
        emit({"address": format_address(addr), "host": given[0], "id": resp.sender_id.hex(),
              "version": resp.version.hex() if resp.version else None, "client": client,
              "rtt": round(rtt, 6), "ip": seen})
    else:
        line = f"{shown}: id {resp.sender_id.hex()}, version {terminal_safe(version)}, rtt {format_seconds(rtt)}"
        if seen is not None:
            line += f", sees us as {seen}"
        print(line, flush=True)
    return EXIT_OK


def register(sub: Any, parents: Parents) -> None:
    """Add the command's parser to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "ping",
        parents=[parents.common],
        help="ping one DHT node: its ID, client version and round-trip time",
        description="Send a KRPC ping to one DHT node and print its node ID, client version, "
        "round-trip time and the address it sees us at.",
        epilog="Exit status: 0 it answered; 2 no answer in time, or another error.",
    )
    p.add_argument("address", metavar="HOST:PORT", type=remote_address_arg, help="the node to ping")
    add_bind_option(p, 0, "local UDP address to send from")
    p.add_argument("--timeout", metavar="S", type=positive_seconds_arg, default=5.0,
                   help="seconds to wait for the answer (default 5)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(run=cmd_ping)
