#!/usr/bin/env python3
"""Capture real KRPC datagrams exchanged with libtorrent over IPv6 (BEP 32), as test fixtures.

Starts an IPv6-only libtorrent swarm on ``[::1]`` (one port per session, as
libtorrent needs on one shared address) and then, as ``capture_fixtures.py``
does over IPv4:

(a) *queries* libtorrent node 0 from a plain UDP socket on ``[::1]`` with the
    queries whose answers differ over IPv6 (``find_node``, ``get_peers`` with
    IPv6 peers, ``want``, ...), saving each request as ``query_<name>.bin`` and
    the answer as ``response_<name>.bin``;
(b) *serves* libtorrent from a second ``[::1]`` socket, added to every session,
    saving the first query of each kind libtorrent sends it as
    ``incoming_query_<kind>.bin``.

Every file is described in ``<out>/index.json``. Nothing leaves ``::1``.

Usage (from the repository root)::

    python tools/capture_fixtures_ipv6.py [--out fixtures/libtorrent_ipv6] [--port 6991]
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from capture_fixtures import (  # noqa: E402
    IH_INCOMING,
    IH_WITH_PEERS,
    TARGET,
    Recorder,
    Responder,
    run_queries,
)
from libtorrent_net import start_swarm  # noqa: E402

#: The cases of capture_fixtures.py worth capturing again over IPv6.
CASES = {
    "ping",
    "find_node",
    "find_node_want_n4_n6",
    "get_peers_nodes",
    "get_peers_values",
    "get_peers_want_n4_n6",
    "announce_peer",
    "sample_infohashes",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("fixtures/libtorrent_ipv6"))
    parser.add_argument("--port", type=int, default=6991, help="first [::1] port of the swarm (default 6991)")
    parser.add_argument("--nodes", type=int, default=4, help="libtorrent sessions (default 4)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.bin"):
        old.unlink()
    rec = Recorder(args.out)
    querier = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    querier.bind(("::1", args.port + args.nodes))
    responder_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    responder_sock.bind(("::1", args.port + args.nodes + 1))
    responder_addr = ("::1", args.port + args.nodes + 1)

    import capture_fixtures

    # run_queries sends capture_fixtures.query_cases: here only the CASES.
    original = capture_fixtures.query_cases
    capture_fixtures.query_cases = lambda holder: [c for c in original(holder) if c[0] in CASES]  # type: ignore[assignment]
    with start_swarm(args.nodes, port=args.port, ipv6_only=True, seed=0) as swarm:
        swarm.wait_for_tables(args.nodes - 1, timeout=20.0)
        print(f"IPv6 swarm of {args.nodes}: {swarm.addresses}")
        for k in range(1, args.nodes):
            swarm.announce(k, IH_WITH_PEERS, 6000 + k)
        notes = run_queries(querier, swarm.addresses[0], rec)
        helper = Responder(querier, None, b"")  # keeps answering libtorrent, unrecorded
        helper.thread.start()
        responder = Responder(responder_sock, rec, b"")
        responder.thread.start()
        for i in range(len(swarm)):
            swarm.add_node(i, responder_addr)
        time.sleep(0.5)
        swarm.get_peers(1, IH_INCOMING, timeout=5.0)
        swarm.announce(1, IH_INCOMING, 6881, timeout=5.0)
        try:
            swarm.sample_infohashes(1, responder_addr, TARGET, timeout=3.0)
        except TimeoutError:
            pass
        time.sleep(0.5)
        for r in (responder, helper):
            r.stop.set()
            r.thread.join()
        notes += [f"incoming {k}: {v}" for k, v in sorted(responder.seen.items())]
    capture_fixtures.query_cases = original  # type: ignore[assignment]
    rec.write_index()
    for line in notes:
        print(line)
    print(f"{len(rec.index)} files in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
