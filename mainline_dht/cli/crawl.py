"""``mainline-dht crawl``: map the DHT's nodes and infohashes into a database, politely.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from ..crawl.crawler import Crawl, CrawlStats, InfohashFound, NodeFound, crawl
from ..crawl.fleet import DEFAULT_LEASE_TTL, crawl_as_worker, default_worker_name
from ..crawl.policy import CrawlLimits
from ..crawl.postgres_store import PostgresStore
from ..crawl.store import CrawlStore, StoreError, TorrentRecord, default_db_path, open_store
from ..metadata.harvest import DEFAULT_HARVEST_RATE, MetadataHarvester
from ..metadata.info import TorrentInfo
from ..runtime.node import DEFAULT_BOOTSTRAP_TIMEOUT, DHTNode, collapse_single_errors
from ._common import (
    EXIT_OK,
    CLIError,
    Parents,
    Status,
    bootstrap_nodes,
    emit,
    format_seconds,
    local_address_arg,
    nothing_answered,
    open_cli_node,
    plural,
    positive_seconds_arg,
    say,
)

#: Seconds between redraws of the progress line (it sorts every node ID for the estimate).
CRAWL_PROGRESS_INTERVAL = 0.5


def _rate_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 100_000 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number of queries per second above 0 (at most 100000): {text!r}")
    return value


def _metadata_rate_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 100 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number of fetches per second above 0 (at most 100): {text!r}")
    return value


def _estimate_text(stats: CrawlStats) -> str:
    e = stats.estimate
    if e is None:
        return "estimating"
    return f"~{e.nodes:,.0f} nodes ({e.low:,.0f}-{e.high:,.0f})"


def _progress_line(stats: CrawlStats) -> str:
    return (f"{plural(stats.nodes, 'node')} ({stats.bep51_nodes} with BEP 51), "
            f"{plural(stats.infohashes, 'infohash')}; {stats.queries_per_second:.0f} queries/s; "
            f"network {_estimate_text(stats)}; {stats.elapsed:.0f} s")


@asynccontextmanager
async def _crawl_or_work(node: DHTNode, args: argparse.Namespace, store: CrawlStore) -> AsyncIterator[Crawl]:
    """The crawl alone, or as a fleet worker when the database is PostgreSQL."""
    limits = CrawlLimits(rate=args.rate)
    if isinstance(store, PostgresStore):
        name = args.worker_name or default_worker_name()
        if not args.json:
            say(f"worker {name}: sharing the keyspace with the other workers of {store.location}")
        async with crawl_as_worker(node, store, name, duration=args.duration, rate=args.rate, limits=limits,
                                   lease_ttl=args.lease_ttl) as worker:
            yield worker.crawl
        return
    async with crawl(node, duration=args.duration, rate=args.rate, store=store, limits=limits) as found:
        yield found


async def _run_crawl(args: argparse.Namespace, store: CrawlStore) -> int:
    routers, tried = await bootstrap_nodes(args)
    status = Status(sys.stderr, enabled=sys.stderr.isatty() and not args.json)
    interrupted = False
    stop = trio.CancelScope()
    found: Crawl | None = None

    async def on_signal(signals: Any) -> None:
        nonlocal interrupted
        async for _ in signals:
            interrupted = True
            stop.cancel()
            return

    async def progress() -> None:
        while True:
            if found is not None:
                status.show(_progress_line(found.stats))
            await trio.sleep(CRAWL_PROGRESS_INTERVAL)

    # A full node (not read-only): the crawl answers the nodes it visits, with a BEP 42 ID.
    # A short crawl does not wait longer than itself for the first answer.
    timeout = DEFAULT_BOOTSTRAP_TIMEOUT if args.duration is None else min(DEFAULT_BOOTSTRAP_TIMEOUT, args.duration)
    async with open_cli_node(args.bind, bootstrap=routers, bootstrap_timeout=timeout) as node:
        if not args.json:
            say(f"crawling via {tried} into {store.location}"
                + (f" for {format_seconds(args.duration)}" if args.duration else " until Ctrl-C"))
        async with AsyncExitStack() as stack, collapse_single_errors(), trio.open_nursery() as outer:
            if threading.current_thread() is threading.main_thread():
                signals = stack.enter_context(trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM))
                outer.start_soon(on_signal, signals)
            outer.start_soon(progress)
            harvester = None
            if args.metadata:
                harvester = MetadataHarvester(node, rate=args.metadata_rate)

                async def on_torrent(info: TorrentInfo) -> None:
                    record = TorrentRecord(info.info_hash, info.name, info.length,
                                           tuple(("/".join(f.path), f.length) for f in info.files), time.time())
                    await trio.to_thread.run_sync(store.write_torrents, [record])
                    if args.json:
                        emit({"event": "torrent", "infohash": info.info_hash.hex(), "name": info.name,
                              "length": info.length, "files": len(info.files)})

                outer.start_soon(harvester.run, on_torrent)
            with stop:
                async with _crawl_or_work(node, args, store) as found:
                    async for item in found:
                        if harvester is not None and isinstance(item, InfohashFound):
                            harvester.offer(item.info_hash)
                        if not args.json:
                            continue
                        if isinstance(item, NodeFound):
                            emit({"event": "node", "id": item.node_id.hex(), "ip": item.addr[0],
                                  "port": item.addr[1]})
                        elif isinstance(item, InfohashFound):
                            emit({"event": "infohash", "infohash": item.info_hash.hex()})
            status.clear()
            outer.cancel_scope.cancel()
        answered = node.stats.responses_received  # bootstrap, lookups and the crawl's queries
    if found is None:
        raise CLIError("interrupted before the crawl began")
    stats = found.stats
    if answered == 0:
        raise nothing_answered(tried, stats.elapsed, what="the crawl")
    estimate = stats.estimate
    if args.json:
        emit({"event": "done", "nodes": stats.nodes, "infohashes": stats.infohashes, "queries": stats.queries,
              "elapsed": round(stats.elapsed, 3),
              "estimate": None if estimate is None else round(estimate.nodes)})
    else:
        counts = await trio.to_thread.run_sync(store.counts)
        say(f"crawled {plural(stats.nodes, 'node')} ({stats.bep51_nodes} with BEP 51) and "
            f"{plural(stats.infohashes, 'infohash')} ({stats.passive_infohashes} from queries we received) "
            f"in {format_seconds(stats.elapsed)}; {stats.queries} queries ({stats.queries_per_second:.0f}/s), "
            f"{stats.timeouts} unanswered; network size {_estimate_text(stats)}"
            + ("; interrupted" if interrupted else ""))
        say(f"{store.location}: {plural(counts.nodes, 'node')} ({counts.bep51_nodes} with BEP 51), "
            f"{plural(counts.infohashes, 'infohash')} in all")
    return EXIT_OK


async def cmd_crawl(args: argparse.Namespace) -> int:
    try:
        store = await trio.to_thread.run_sync(open_store, args.db)
    except StoreError as exc:
        hint = "Check the URL, and that the server runs" if "://" in (args.db or "") else "Choose another file with --db PATH"
        raise CLIError(f"{exc}. {hint}.") from None
    if args.worker_name is not None and not isinstance(store, PostgresStore):
        store.close()
        raise CLIError("--worker-name needs a PostgreSQL database (--db postgresql://...): "
                       "workers share the work through it")
    try:
        return await _run_crawl(args, store)
    except StoreError as exc:
        raise CLIError(str(exc)) from None
    finally:
        store.close()


def register(sub: Any, parents: Parents) -> None:
    """Add the command's parser to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "crawl",
        parents=[parents.common, parents.bootstrap],
        help="map the DHT's nodes and infohashes into a database",
        description="Visit the DHT's nodes, ask each for a sample of the infohashes it stores (BEP 51), "
        "and keep them in a database that a later run resumes: nodes are not asked again before the "
        "interval they gave. Also records the infohashes other nodes look up through us. Polite: at "
        "most --rate queries a second, and at most 2 a second to any one IP.",
        epilog="Exit status: 0 the crawl ran (its duration passed, or Ctrl-C); 2 error (nothing answered, "
        "bad arguments, unusable database). The database's tables 'nodes' and 'infohashes' can be "
        "queried with sqlite3 while a crawl runs.",
    )
    p.add_argument("--bind", metavar="IP:PORT", type=local_address_arg, default=("0.0.0.0", 0),
                   help="local UDP address of the crawling node (default 0.0.0.0 and any free port)")
    p.add_argument("--duration", metavar="S", type=positive_seconds_arg, default=None,
                   help="stop after S seconds (default: run until Ctrl-C)")
    p.add_argument("--rate", metavar="QPS", type=_rate_arg, default=250.0,
                   help="queries per second at most, all nodes together (default 250)")
    p.add_argument("--db", metavar="PATH|URL", default=None,
                   help=f"the crawl database: a SQLite file path or sqlite:PATH (default {default_db_path()}), "
                   "or postgresql://... to share the work with other crawlers (pip install "
                   "'mainline-dht[postgres]')")
    p.add_argument("--worker-name", metavar="NAME", default=None,
                   help="with a PostgreSQL --db: this worker's name in the fleet (default: the host name); "
                   "workers share the keyspace through leases in the database")
    p.add_argument("--lease-ttl", metavar="S", type=positive_seconds_arg, default=DEFAULT_LEASE_TTL,
                   help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true",
                   help='print JSON lines: {"event": "node", ...} per new node, {"event": "infohash", ...} '
                   'per new infohash, then {"event": "done", ...}')
    p.add_argument("--metadata", action="store_true",
                   help="also fetch each new infohash's metadata from its peers (BEP 9) into the table "
                   "'torrents' (name, total length, files); --json adds {\"event\": \"torrent\", ...}")
    p.add_argument("--metadata-rate", metavar="N", type=_metadata_rate_arg, default=DEFAULT_HARVEST_RATE,
                   help=f"with --metadata: start at most N fetches a second (default {DEFAULT_HARVEST_RATE:g}; "
                   "each is a lookup and a few TCP connections)")
    p.set_defaults(run=cmd_crawl)

