"""``mainline-dht put``: store a BEP 44 item in the DHT, immutable or signed and mutable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from ..core.items import MAX_SALT_SIZE, MAX_SEQ, MAX_VALUE_SIZE, ImmutableItem, public_key_for
from ..runtime.items import PutResult
from ..wire import bencode
from ._common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    TRANSIENT,
    CLIError,
    Parents,
    Status,
    bootstrap_nodes,
    emit,
    format_seconds,
    int_in_range,
    local_address_arg,
    nothing_answered,
    open_cli_node,
    plural,
    positive_seconds_arg,
    say,
)


def key_seed_arg(text: str) -> bytes:
    """64 hex characters: a 32-byte ed25519 private key seed (or public key)."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from None
    if len(raw) != 32:
        raise argparse.ArgumentTypeError(f"expected 64 hex characters (32 bytes), got {len(text)}")
    return raw


def salt_arg(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > MAX_SALT_SIZE:
        raise argparse.ArgumentTypeError(f"the salt is {len(raw)} bytes; BEP 44 allows {MAX_SALT_SIZE}")
    return raw


seq_arg = int_in_range(0, MAX_SEQ, "a whole number", f"must be 0 to {MAX_SEQ}")


async def cmd_put(args: argparse.Namespace) -> int:
    value = args.value.encode("utf-8")
    encoded = bencode.encode(value)
    if len(encoded) > MAX_VALUE_SIZE:
        raise CLIError(f"the value is {len(encoded)} bytes bencoded; BEP 44 allows {MAX_VALUE_SIZE}")
    if args.key_seed is None and (args.salt is not None or args.seq is not None):
        raise CLIError("--salt and --seq are for mutable items: give --key-seed too")
    routers, tried = await bootstrap_nodes(args)
    status = Status(sys.stderr, enabled=sys.stderr.isatty() and not args.json)
    async with open_cli_node(args.bind, bootstrap=routers, config=TRANSIENT) as node:
        status.show(f"storing via {tried}...")
        start = trio.current_time()
        result: PutResult | None = None
        with trio.move_on_after(args.timeout):
            if args.key_seed is None:
                result = await node.put(ImmutableItem(encoded))
            else:
                result = await node.put_mutable(args.key_seed, value, salt=args.salt or b"", seq=args.seq)
        elapsed = trio.current_time() - start
        status.clear()
    if result is None:
        raise CLIError(f"the put did not finish within {args.timeout:g} s (--timeout)")
    if result.replies == 0:
        raise nothing_answered(tried)
    public_key = None if args.key_seed is None else public_key_for(args.key_seed).hex()
    if args.json:
        emit({"event": "done", "target": result.target.hex(), "public_key": public_key, "seq": result.seq,
              "stored": result.stored, "sent": result.sent, "errors": result.errors,
              "queries": result.queries, "elapsed": round(elapsed, 4)})
    else:
        print(result.target.hex(), flush=True)
        line = f"stored on {plural(result.stored, 'node')} of {result.sent} in {format_seconds(elapsed)}"
        if public_key is not None:
            line = f"public key {public_key}, seq {result.seq}; " + line
        if result.errors:
            line += "; refused: " + ", ".join(f"{code} x{n}" for code, n in sorted(result.errors.items()))
        say(line)
    return EXIT_OK if result.stored else EXIT_NOT_FOUND


def register(sub: Any, parents: Parents) -> None:
    """Add the command's parser to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "put",
        parents=[parents.common, parents.bootstrap],
        help="store a value in the DHT (BEP 44), immutable or signed and mutable",
        description="Store VALUE (a UTF-8 string, stored as a bencoded byte string) in the DHT. Without "
        "--key-seed the item is immutable and its target is the SHA-1 of the bencoded value; with it, "
        "the item is signed with that ed25519 key and can be updated later with a higher --seq. "
        "Prints the target (40 hex) on stdout, and how many nodes stored it on stderr.",
        epilog="Exit status: 0 stored; 1 no node stored it; 2 error (nothing answered, bad input).",
    )
    p.add_argument("value", metavar="VALUE", help="the text to store (at most ~995 bytes of UTF-8)")
    p.add_argument("--key-seed", metavar="HEX64", type=key_seed_arg,
                   help="store a mutable item signed with this 32-byte ed25519 private key seed")
    p.add_argument("--salt", metavar="S", type=salt_arg,
                   help="the mutable item's salt (UTF-8, at most 64 bytes): one key, many items")
    p.add_argument("--seq", metavar="N", type=seq_arg,
                   help="the mutable item's sequence number (default: one more than the DHT has)")
    p.add_argument("--bind", metavar="IP:PORT", type=local_address_arg, default=("0.0.0.0", 0),
                   help="local UDP address to send from (default 0.0.0.0 and any free port)")
    p.add_argument("--timeout", metavar="S", type=positive_seconds_arg, default=60.0,
                   help="give up after S seconds (default 60)")
    p.add_argument("--json", action="store_true", help='print one JSON line: {"event": "done", "target": ...}')
    p.set_defaults(run=cmd_put)
