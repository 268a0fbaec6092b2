"""``mainline-dht peers``: look up the peers of an infohash or magnet link, print each as it arrives.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..core.lookup import LookupStats
from ..core.scrape import ScrapeEstimate
from ..errors import StateFileError
from ..runtime.contact_file import default_contact_file, load_cached_contacts, restore_contacts, save_cached_contacts
from ..runtime.node import DHTNode, collapse_single_errors
from ..wire.contact import Address, Contact, family_of
from ..wire.target import TargetError, parse_target
from ._common import (
    EXIT_INTERRUPTED,
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
    log,
    nothing_answered,
    open_cli_node,
    plural,
    port_arg,
    positive_seconds_arg,
    say,
)

@dataclass(frozen=True, slots=True)
class LookupResult:
    """What :func:`lookup_and_print` did.

    Attributes:
        code: the exit status (0 peers found, 1 none, 130 interrupted).
        peers: the peers found, in arrival order.
        elapsed: seconds the lookup ran.
        stats: the lookup's counters.
        announced: nodes that accepted our announce, or ``None`` if we did not announce.
        scrape: BEP 33 estimates of seeds and downloaders, or ``None`` without ``scrape``.
    """

    code: int
    peers: list[Address]
    elapsed: float
    stats: LookupStats
    announced: int | None
    scrape: ScrapeEstimate | None = None


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
    scrape: bool = False,
    seed: bool = False,
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
        scrape: ask for BEP 33 bloom filters and report seeds and downloaders.
        seed: announce as a seed (BEP 33 ``seed`` = 1).

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
                        f"{plural(len(peers), 'peer')}; {trio.current_time() - s.started_at:.1f} s")
            await trio.sleep(PROGRESS_INTERVAL)

    async with AsyncExitStack() as stack, collapse_single_errors(), trio.open_nursery() as outer:
        if threading.current_thread() is threading.main_thread():
            signals = stack.enter_context(trio.open_signal_receiver(signal.SIGINT))
            outer.start_soon(on_signal, signals)
        if header is not None and not json_out:
            say(header)
        with trio.move_on_after(timeout) as limit, current:
            async with node.get_peers(info_hash, scrape=scrape) as stream:
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
                            print(format_address((ip, port)), flush=True)
                    nursery.cancel_scope.cancel()
        ended = trio.current_time()
        status.clear()
        if stream is not None and announce and not interrupted and stream.stats.replies:
            current = trio.CancelScope()
            with current:
                status.show("announcing...")
                announced = await node.announce(info_hash, announce_port, stream=stream, seed=seed)
            status.clear()
        outer.cancel_scope.cancel()

    if stream is None:  # stopped before the lookup began
        raise CLIError("interrupted" if interrupted else f"no lookup within {timeout:g} s")
    stats = stream.stats
    timed_out = limit.cancelled_caught and not interrupted
    elapsed = (stats.finished_at if stats.finished_at is not None else ended) - stats.started_at
    if stats.replies == 0 and not peers and not interrupted:
        names = tried or ", ".join(format_address(a) for a in node.bootstrap_nodes) or "no bootstrap nodes"
        raise nothing_answered(names, elapsed)
    first = None if stats.first_peer_at is None else stats.first_peer_at - stats.started_at
    estimate = stream.scrape
    if json_out:
        done: dict[str, Any] = {
            "event": "done", "peers": len(peers), "queries": stats.queries, "replies": stats.replies,
            "timeouts": stats.timeouts, "elapsed": round(elapsed, 4),
            "first_peer": None if first is None else round(first, 4), "announced": announced,
            "timed_out": timed_out, "interrupted": interrupted,
            # BEP 32: each overlay's own lookup (a dual-stack node runs one per family).
            "families": {str(f): {"queries": s.queries, "replies": s.replies, "timeouts": s.timeouts,
                                  "peers": sum(1 for p in peers if (":" in p[0]) == (f == 6))}
                         for f, s in stream.stats_by_family.items()}}
        if estimate is not None:
            done["seeds"] = round(estimate.seeds, 1)
            done["downloaders"] = round(estimate.downloaders, 1)
        emit(done)
    else:
        if peers:
            line = f"{plural(len(peers), 'peer')} in {format_seconds(elapsed)}"
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
            line += f"; announce accepted by {plural(announced, 'node')}"
        if estimate is not None:
            line += (f"; scrape of {plural(estimate.responders, 'node')}: about {estimate.seeds:.0f} seeds "
                     f"and {estimate.downloaders:.0f} downloaders")
        say(line)
    code = EXIT_INTERRUPTED if interrupted else EXIT_OK if peers else EXIT_NOT_FOUND
    return LookupResult(code, peers, elapsed, stats, announced, estimate)


async def cmd_peers(args: argparse.Namespace) -> int:
    try:
        info_hash = parse_target(args.target)
    except TargetError as exc:
        raise CLIError(str(exc)) from None
    if args.seed and args.announce is None and not args.announce_implied:
        raise CLIError("--seed goes with --announce PORT or --announce-implied")
    routers, tried = await bootstrap_nodes(args)
    log.debug("bootstrap nodes: %s", tried)
    status = Status(sys.stderr, enabled=sys.stderr.isatty() and not args.json)
    cache_path: Path | None = None if args.no_cache else (args.cache_file or default_contact_file())
    cached = _load_cache(cache_path)
    via = f"{plural(len(cached), 'cached contact')}, then {tried}" if cached else tried
    async with open_cli_node(args.bind, bootstrap=routers, config=TRANSIENT) as node:
        started = trio.current_time()
        caches = {o.family: o.proto.recent for o in node.overlays if o.proto.recent is not None}
        for family, recent in caches.items():
            # Lookups start from these; the routers are asked only if too few answer.
            restore_contacts(recent, [c for c in cached if family_of(c[0].addr[0]) == family], as_of=started - 1.0)
        result = await lookup_and_print(
            node,
            info_hash,
            json_out=args.json,
            status=status,
            timeout=args.timeout,
            announce=args.announce is not None or args.announce_implied,
            announce_port=args.announce,
            tried=via,
            header=f"looking up peers for {info_hash.hex()} via {via}",
            scrape=args.scrape,
            seed=args.seed,
        )
        if cache_path is not None and caches:
            try:
                saved = save_cached_contacts(caches.values(), cache_path, since=started, now=trio.current_time())
                log.debug("saved %s to %s", plural(saved, "contact"), cache_path)
            except OSError as exc:
                log.warning("cannot save the contact cache %s: %s", cache_path, exc)
    return result.code


def _load_cache(path: Path | None) -> list[tuple[Contact, float | None]]:
    """The contacts saved by the last run, or none (a bad file is reported, then ignored)."""
    if path is None or not path.exists():
        return []
    try:
        cached = load_cached_contacts(path)
    except (OSError, StateFileError) as exc:
        log.warning("ignoring the contact cache: %s", exc)
        return []
    log.debug("%s cached in %s", plural(len(cached), "contact"), path)
    return cached


def register(sub: Any, parents: Parents) -> None:
    """Add the command's parser to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "peers",
        parents=[parents.common, parents.bootstrap],
        help="find peers for an infohash or magnet link",
        description="Look up the peers of a torrent on the DHT and print each as it arrives (IP:PORT "
        "on stdout), then a summary on stderr. Optionally announce ourselves as a peer too.",
        epilog="Exit status: 0 peers found; 1 the lookup finished without peers; 2 error "
        "(bad target, nothing answered); 130 interrupted.",
    )
    p.add_argument("target", metavar="TARGET",
                   help="infohash (40 hex or 32 base32 characters) or magnet link (quote it in the shell)")
    add_bind_option(p, 0, "local UDP address to look up from")
    p.add_argument("--timeout", metavar="S", type=positive_seconds_arg, default=60.0,
                   help="stop the lookup after S seconds (default 60)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--announce", metavar="PORT", type=port_arg,
                       help="after the lookup, announce that we serve the torrent on TCP/uTP port PORT")
    group.add_argument("--announce-implied", action="store_true",
                       help="after the lookup, announce us on the port the DHT sees our UDP packets come "
                       "from (BEP 5 implied_port, for clients behind NAT)")
    p.add_argument("--seed", action="store_true",
                   help="announce as a seed, one with the whole torrent (BEP 33 seed = 1)")
    p.add_argument("--scrape", action="store_true",
                   help="ask the nodes for BEP 33 bloom filters and estimate the swarm's seeds and downloaders")
    p.add_argument("--json", action="store_true",
                   help='print JSON lines: {"event": "peer", ...} per peer, then {"event": "done", ...} '
                   '(with "seeds" and "downloaders" under --scrape)')
    p.add_argument("--cache-file", metavar="FILE", type=Path, default=None,
                   help="where to keep the contacts that answered, to start the next run from them "
                   "(default: contacts.dat in the user data directory, e.g. ~/.local/share/mainline-dht)")
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the contact cache: start from the bootstrap routers")
    p.set_defaults(run=cmd_peers)
