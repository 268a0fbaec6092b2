"""``mainline-dht node``: a long-lived node with a status line, until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import trio

from ..errors import DHTError, StateFileError
from ..runtime.node import DEFAULT_BOOTSTRAP, DHTNode, default_state_path
from ..runtime.state_file import load_contacts
from ._common import (
    EXIT_OK,
    STATUS_INTERVAL,
    CLIError,
    Parents,
    emit,
    format_address,
    add_bind_option,
    log,
    overlays_text,
    open_cli_node,
    plural,
    positive_seconds_arg,
    resolve_all,
    run_until_signal,
    unresolved_message,
)

def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _print_status(node: DHTNode, uptime: float, json_out: bool) -> None:
    s = node.stats
    overlays = node.overlays
    if json_out:
        # The top-level figures are the first overlay's; "overlays" has each (BEP 32).
        emit({"event": "status", "uptime": round(uptime, 1), "joined": node.joined.is_set(),
              "id": node.node_id.hex(), "external_ip": node.external_ip, **dataclasses.asdict(s),
              "overlays": [{"family": o.family, "address": format_address(o.local_address),
                            "id": o.node_id.hex(), "external_ip": o.external_ip,
                            **dataclasses.asdict(o.stats)} for o in overlays]})
        return
    if len(overlays) == 1:
        line = (f"{_uptime(uptime)}  {plural(s.table_size, 'contact')} ({s.good} good, {s.questionable} "
                f"questionable) in {plural(s.buckets, 'bucket')}; queries received {s.queries_received}, "
                f"sent {s.queries_sent} ({s.timeouts} timed out); storing {plural(s.stored_peers, 'peer')} "
                f"for {plural(s.infohashes, 'infohash')}")
        if node.external_ip is not None:
            line += f"; seen as {node.external_ip}"
    else:
        parts = []
        for o in overlays:
            st = o.stats
            part = (f"IPv{o.family} {plural(st.table_size, 'contact')} ({st.good} good, "
                    f"{st.questionable} questionable) in {plural(st.buckets, 'bucket')}")
            if o.external_ip is not None:
                part += f", seen as {o.external_ip}"
            parts.append(part)
        every = [o.stats for o in overlays]
        line = (f"{_uptime(uptime)}  {'; '.join(parts)}; queries received "
                f"{sum(x.queries_received for x in every)}, sent {sum(x.queries_sent for x in every)} "
                f"({sum(x.timeouts for x in every)} timed out); storing {plural(s.stored_peers, 'peer')} "
                f"for {plural(s.infohashes, 'infohash')}")
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
    async with open_cli_node(args.bind, port=6881, bootstrap=bootstrap, state_path=state) as node:
        if json_out:
            emit({"event": "started", "id": node.node_id.hex(), "address": format_address(node.local_address),
                  "addresses": [format_address(o.local_address) for o in node.overlays],
                  "state": None if state is None else str(state), "saved_contacts": saved})
        else:
            print(f"node {node.node_id.hex()} on UDP {overlays_text(node)}; "
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
                _, failures = await resolve_all(bootstrap)
                if len(failures) == len(bootstrap):
                    log.warning("%s The node keeps trying.", unresolved_message(failures))
                    return  # the node's maintenance re-bootstraps while the table is empty
            try:
                await node.bootstrap()
            except DHTError as exc:
                log.warning("%s The node keeps trying.", exc)

        await run_until_signal(run)
        contacts = sum(len(o.table) for o in node.overlays)
    if json_out:
        emit({"event": "stopped", "contacts": contacts, "state": None if state is None else str(state)})
    elif state is not None and contacts:
        print(f"stopped; {plural(contacts, 'contact')} saved to {state}", flush=True)
    else:
        print("stopped", flush=True)
    return EXIT_OK


def register(sub: Any, parents: Parents) -> None:
    """Add the command's parser to ``sub`` (argparse subparsers)."""
    p = sub.add_parser(
        "node",
        parents=[parents.common, parents.bootstrap],
        help="run a DHT node until Ctrl-C",
        description="Run a long-lived DHT node: it answers other nodes' queries, keeps its routing "
        "table fresh, prints a status line every few seconds and saves its routing table on exit "
        "(Ctrl-C or SIGTERM), so the next start rejoins without the routers.",
        epilog="Exit status: 0 stopped by Ctrl-C or SIGTERM; 2 error (the port is in use, say).",
    )
    add_bind_option(p, 6881, "local UDP address")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--state", metavar="PATH", type=Path,
                       help=f"routing-table file to load and save (default {default_state_path()})")
    state.add_argument("--no-state", action="store_true", help="neither load nor save a routing-table file")
    p.add_argument("--json", action="store_true", help="print events and status as JSON lines")
    p.add_argument("--status-interval", metavar="S", type=positive_seconds_arg, default=STATUS_INTERVAL,
                   help=argparse.SUPPRESS)
    p.set_defaults(run=cmd_node)
