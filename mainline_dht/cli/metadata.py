"""``mainline-dht metadata``: fetch a torrent's info dictionary from its peers and print what it holds.

Exit status: 0 found; 1 no peer gave it (or none was found) in time; 2 errors
(bad target, no DHT node answered, a file that cannot be written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import trio

from ..errors import MetadataNotFound
from ..metadata import DEFAULT_MAX_METADATA_SIZE, FetchStats, TorrentInfo, encode_torrent_file, fetch_metadata
from ..runtime.atomic_file import write_atomically
from ..wire.contact import Address
from ..wire.target import TargetError, parse_target_hashes
from ._common import (
    terminal_safe,
    EXIT_NOT_FOUND,
    EXIT_OK,
    PROGRESS_INTERVAL,
    TRANSIENT,
    CLIError,
    Parents,
    Status,
    bootstrap_nodes,
    emit,
    format_address,
    format_seconds,
    add_bind_option,
    int_in_range,
    nothing_answered,
    open_cli_node,
    plural,
    positive_seconds_arg,
    say,
)
from .. import __version__


def format_size(n: int) -> str:
    """``1536`` → ``"1.5 KiB"``; bytes below 1 KiB as they are."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _files_json(info: TorrentInfo) -> list[dict[str, Any]]:
    return [{"path": "/".join(f.path), "length": f.length} for f in info.files]


def save_torrent(info: TorrentInfo, path: Path) -> None:
    """Write ``info`` as a trackerless ``.torrent`` at ``path``, atomically.

    Raises:
        CLIError: the file cannot be written.
    """
    nodes: tuple[Address, ...] = info.peers or ((info.source,) if info.source else ())
    data = encode_torrent_file(info.info, nodes=nodes, created_by=f"mainline-dht {__version__}")
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None


async def cmd_metadata(args: argparse.Namespace) -> int:
    try:
        target = parse_target_hashes(args.target)
    except TargetError as exc:
        raise CLIError(str(exc)) from None
    routers, tried = await bootstrap_nodes(args)
    status = Status(sys.stderr, enabled=sys.stderr.isatty() and not args.json)
    stats = FetchStats()
    info: TorrentInfo | None = None
    async with open_cli_node(args.bind, bootstrap=routers, config=TRANSIENT) as node:
        if not args.json:
            say(f"fetching the metadata of {target.info_hash.hex()} via {tried}")
        started = trio.current_time()

        async def progress() -> None:
            while True:
                status.show(f"{plural(stats.peers_found, 'peer')} found, {stats.connected} connected, "
                            f"{stats.rejected} rejects; {trio.current_time() - started:.1f} s")
                await trio.sleep(PROGRESS_INTERVAL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(progress)
            try:
                info = await fetch_metadata(
                    node, target.info_hash, sha256=target.sha256, timeout=args.timeout,
                    max_size=args.max_size, stats=stats,
                )
            except MetadataNotFound:
                info = None
            finally:
                nursery.cancel_scope.cancel()
        elapsed = trio.current_time() - started
    status.clear()

    if info is None and stats.lookup_replies == 0 and stats.peers_found == 0:
        raise nothing_answered(tried, elapsed)
    if info is not None and args.save is not None:
        save_torrent(info, args.save)
    dropped = [format_address(a) for a in stats.dropped]
    if args.json:
        if info is not None:
            emit({"event": "metadata", "infohash": target.info_hash.hex(), "name": info.name,
                  "length": info.length, "files": _files_json(info), "piece_length": info.piece_length,
                  "version": info.version,
                  "from": format_address(info.source) if info.source else None})
        emit({"event": "done", "found": info is not None, "elapsed": round(elapsed, 4),
              "peers": stats.peers_found, "connected": stats.connected, "rejects": stats.rejected,
              "dropped": dropped, "saved": str(args.save) if info is not None and args.save else None})
    else:
        if info is not None:
            print(f"name: {terminal_safe(info.name)}")
            print(f"size: {format_size(info.length)} ({info.length} bytes) in {plural(len(info.files), 'file')}, "
                  f"pieces of {format_size(info.piece_length)}")
            for f in info.files:
                print(f"{f.length:>15}  {terminal_safe('/'.join(f.path))}")
            line = f"metadata from {format_address(info.source) if info.source else '?'} in {format_seconds(elapsed)}"
        else:
            line = f"no peer gave the metadata in {format_seconds(elapsed)}"
        line += (f"; {plural(stats.peers_found, 'peer')} found, {stats.connected} connected, "
                 f"{stats.no_metadata} without metadata, {plural(stats.rejected, 'reject')}")
        if dropped:
            line += f"; dropped for wrong data: {', '.join(dropped)}"
        if info is not None and args.save is not None:
            line += f"; saved {args.save}"
        say(line)
    return EXIT_OK if info is not None else EXIT_NOT_FOUND


def register(sub: Any, parents: Parents) -> None:
    """Add the command's parser to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "metadata",
        parents=[parents.common, parents.bootstrap],
        help="fetch a torrent's name and files from its peers (BEP 9)",
        description="Look up the peers of a torrent on the DHT, fetch its info dictionary from them "
        "(BEP 9/10 over TCP), check it against the infohash, and print the name, size and files.",
        epilog="Exit status: 0 found; 1 no peer gave the metadata in time; 2 error "
        "(bad target, nothing answered); 130 interrupted.",
    )
    p.add_argument("target", metavar="TARGET",
                   help="infohash (40 hex, 32 base32, or 64 hex for v2) or magnet link (btih or btmh)")
    add_bind_option(p, 0, "local UDP address of the DHT node")
    p.add_argument("--timeout", metavar="S", type=positive_seconds_arg, default=60.0,
                   help="give up after S seconds (default 60)")
    p.add_argument("--max-size", metavar="BYTES",
                   type=int_in_range(1, 1 << 30, "a number of bytes", "must be 1 to 1073741824"),
                   default=DEFAULT_MAX_METADATA_SIZE,
                   help=f"refuse info dictionaries larger than BYTES (default {DEFAULT_MAX_METADATA_SIZE})")
    p.add_argument("--save", metavar="FILE.torrent", type=Path,
                   help="write a .torrent: the info dictionary as received, and the peers' addresses "
                   "(no tracker)")
    p.add_argument("--json", action="store_true",
                   help='print JSON lines: {"event": "metadata", ...} when found, then {"event": "done", ...}')
    p.set_defaults(run=cmd_metadata)
