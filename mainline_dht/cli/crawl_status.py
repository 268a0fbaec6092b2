"""``mainline-dht crawl-status``: a fleet of crawlers at a glance, from its PostgreSQL database."""

from __future__ import annotations

import argparse
import time
from typing import Any

import trio

from ..crawl.fleet import DEFAULT_LEASE_TTL
from ..crawl.postgres_store import PARTITIONS, FleetStatus, PostgresStore
from ..crawl.store import StoreError
from ._common import EXIT_OK, CLIError, Parents, emit, plural, positive_seconds_arg


def _rate(queries: int, seconds: float) -> float:
    return queries / seconds if seconds > 0 else 0.0


def _print(status: FleetStatus) -> None:
    c = status.counts
    print(f"{plural(c.nodes, 'node')} ({c.bep51_nodes} with BEP 51), {plural(c.infohashes, 'infohash')}; "
          f"partitions: {status.leased} of {PARTITIONS} leased, {status.expired} expired, {status.free} free; "
          f"frontier {plural(status.frontier, 'node')}")
    if not status.workers:
        print("no workers yet")
        return
    for w in status.workers:
        up = w.last_seen - w.started
        state = "alive" if w.alive else f"silent for {status.now - w.last_seen:.0f} s"
        print(f"  {w.name:<20} {state:<18} {w.partitions:>3} partitions  "
              f"{plural(w.nodes, 'node')}, {plural(w.infohashes, 'infohash')}, "
              f"{w.queries} queries ({_rate(w.queries, up):.0f}/s)"
              + (f"  at {w.address}" if w.address else ""))


async def cmd_crawl_status(args: argparse.Namespace) -> int:
    def read() -> FleetStatus:
        store = PostgresStore(args.db)
        try:
            return store.status(live_within=args.live_within)
        finally:
            store.close()

    if "://" not in args.db:
        raise CLIError("crawl-status reads a fleet's PostgreSQL database: --db postgresql://...")
    try:
        status = await trio.to_thread.run_sync(read)
    except StoreError as exc:
        raise CLIError(f"{exc}. Check the URL, and that the server runs.") from None
    if args.json:
        c = status.counts
        emit({"event": "status", "time": round(time.time(), 3), "nodes": c.nodes, "bep51_nodes": c.bep51_nodes,
              "infohashes": c.infohashes, "partitions": {"leased": status.leased, "expired": status.expired,
                                                         "free": status.free},
              "frontier": status.frontier,
              "workers": [{"name": w.name, "alive": w.alive, "partitions": w.partitions, "address": w.address,
                           "queries": w.queries, "nodes": w.nodes, "infohashes": w.infohashes,
                           "queries_per_second": round(_rate(w.queries, w.last_seen - w.started), 1),
                           "last_seen_ago": round(status.now - w.last_seen, 1)} for w in status.workers]})
    else:
        _print(status)
    return EXIT_OK


def register(sub: Any, parents: Parents) -> None:
    """Add the command's parser to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "crawl-status",
        parents=[parents.common],
        help="show a fleet of crawlers sharing a PostgreSQL database",
        description="Print the progress of the crawlers that share one PostgreSQL crawl database "
        "(mainline-dht crawl --db postgresql://... --worker-name NAME): nodes and infohashes found, "
        "the partitions of the keyspace each worker leases, and their query rates.",
        epilog="Exit status: 0 printed; 2 error (the database cannot be reached).",
    )
    p.add_argument("--db", metavar="URL", required=True, help="the fleet's database: postgresql://...")
    p.add_argument("--live-within", metavar="S", type=positive_seconds_arg, default=DEFAULT_LEASE_TTL,
                   help=f"a worker silent for longer counts as gone (default {DEFAULT_LEASE_TTL:g})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_crawl_status)
