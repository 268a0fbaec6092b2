"""``mainline-dht get``: fetch a BEP 44 item from the DHT, by target or by public key and salt.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from ..core.items import FoundItem, mutable_target
from ..wire.target import TargetError, parse_target
from ._common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    TRANSIENT,
    CLIError,
    Parents,
    Status,
    bootstrap_nodes,
    emit,
    format_address,
    format_seconds,
    local_address_arg,
    nothing_answered,
    open_cli_node,
    positive_seconds_arg,
    say,
)
from .put import key_seed_arg, salt_arg


def json_value(value: object) -> Any:
    """A bencoded value as JSON: byte strings as text when they are UTF-8, else ``{"hex": ...}``."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k): json_value(v)
                for k, v in value.items()}
    return value


def text_value(value: object) -> str:
    """How ``get`` prints a value: the text of a UTF-8 byte string, otherwise JSON."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return json.dumps(json_value(value))


async def cmd_get(args: argparse.Namespace) -> int:
    salt = args.salt or b""
    if args.public_key is not None:
        if args.target is not None:
            raise CLIError("give either TARGET or --public-key, not both")
        target = mutable_target(args.public_key, salt)
    else:
        if args.target is None:
            raise CLIError("give a TARGET (40 hex) or --public-key HEX64")
        if args.salt is not None:
            raise CLIError("--salt goes with --public-key")
        try:
            target = parse_target(args.target)
        except TargetError as exc:
            raise CLIError(str(exc)) from None
    routers, tried = await bootstrap_nodes(args)
    status = Status(sys.stderr, enabled=sys.stderr.isatty() and not args.json)
    found: FoundItem | None = None
    async with open_cli_node(args.bind, bootstrap=routers, config=TRANSIENT) as node:
        status.show(f"looking up {target.hex()} via {tried}...")
        start = trio.current_time()
        with trio.move_on_after(args.timeout) as limit:
            if args.public_key is None:
                search = await node.get_item(target)
            else:
                search = await node.get_item(target, public_key=args.public_key, salt=salt)
        elapsed = trio.current_time() - start
        status.clear()
    if limit.cancelled_caught:
        raise CLIError(f"the lookup did not finish within {args.timeout:g} s (--timeout)")
    if search.replies == 0:
        raise nothing_answered(tried)
    found = search.found
    if args.json:
        if found is not None:
            emit({"event": "item", "target": target.hex(), "value": json_value(found.value), "seq": found.seq,
                  "from": format_address(found.source)})
        emit({"event": "done", "found": found is not None, "queries": search.queries, "replies": search.replies,
              "invalid": search.invalid, "elapsed": round(elapsed, 4)})
    else:
        if found is not None:
            print(text_value(found.value), flush=True)
            seq = "" if found.seq is None else f", seq {found.seq}"
            say(f"found at {format_address(found.source)}{seq} in {format_seconds(elapsed)}; "
                f"asked {search.queries} nodes")
        else:
            say(f"not found in {format_seconds(elapsed)}; asked {search.queries} nodes")
        if search.invalid:
            say(f"ignored {search.invalid} replies whose item failed verification")
    return EXIT_OK if found is not None else EXIT_NOT_FOUND


def register(sub: Any, parents: Parents) -> None:
    """Add the command's parser to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "get",
        parents=[parents.common, parents.bootstrap],
        help="fetch a value stored in the DHT (BEP 44)",
        description="Look up a BEP 44 item and print its value: as text when it is a UTF-8 byte string, "
        "otherwise as JSON. An immutable item is named by its TARGET (40 hex); a mutable one by "
        "--public-key and --salt, and the highest sequence number with a valid signature wins.",
        epilog="Exit status: 0 found; 1 not found; 2 error (nothing answered, bad input).",
    )
    p.add_argument("target", metavar="TARGET", nargs="?", help="the item's target: 40 hex characters")
    p.add_argument("--public-key", metavar="HEX64", type=key_seed_arg,
                   help="fetch the mutable item signed by this 32-byte ed25519 public key")
    p.add_argument("--salt", metavar="S", type=salt_arg, help="the mutable item's salt (UTF-8)")
    p.add_argument("--bind", metavar="IP:PORT", type=local_address_arg, default=("0.0.0.0", 0),
                   help="local UDP address to send from (default 0.0.0.0 and any free port)")
    p.add_argument("--timeout", metavar="S", type=positive_seconds_arg, default=60.0,
                   help="give up after S seconds (default 60)")
    p.add_argument("--json", action="store_true",
                   help='print JSON lines: {"event": "item", ...} when found, then {"event": "done", ...}')
    p.set_defaults(run=cmd_get)
