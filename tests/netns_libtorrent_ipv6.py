"""Run inside a private network namespace by tests/test_netns_ipv6.py (not a test module).

libtorrent sessions on distinct IPv6 addresses (fd00:0:0:N::1, one /64 each, port 6881) with
libtorrent's stock per-IP rules put back (one routing-table entry per IP range,
its 5-queries-a-second rate limit, verified node IDs preferred), and our node on
fd00:0:0:100::1 with the production configuration. Our node joins through session 0,
announces, looks up what libtorrent announced; libtorrent looks up ours. Prints
one JSON object with the outcomes.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from libtorrent_net import start_swarm  # noqa: E402
from mainline_dht.runtime.node import open_node  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 12
OURS = ("fd00:0:0:100::1", 6881)
IH_THEIRS = hashlib.sha1(b"netns libtorrent announces").digest()
IH_OURS = hashlib.sha1(b"netns we announce").digest()
#: libtorrent's defaults, which tools/libtorrent_net.py relaxes for one shared address.
STOCK = {
    "dht_restrict_routing_ips": True,
    "dht_restrict_search_ips": True,
    "dht_block_ratelimit": 5,
    "dht_prefer_verified_node_ids": True,
}


async def main() -> None:
    out: dict[str, object] = {}
    ips = [f"fd00:0:0:{i + 1:x}::1" for i in range(N)]  # one /64 each, as libtorrent restricts per /64
    with start_swarm(N, port=6881, ipv6_only=True, ipv6_addresses=ips, seed=7, settings=STOCK) as sw:
        await trio.to_thread.run_sync(sw.wait_for_tables, N // 2, 15.0)
        out["stock"] = all(sw.session(i).get_settings()["dht_block_ratelimit"] == 5 for i in range(N))
        for i in (3, 7):
            await trio.to_thread.run_sync(lambda: sw.announce(i, IH_THEIRS, 6000 + i))
        with trio.fail_after(60):
            async with open_node(OURS, bootstrap=(sw.addresses[0],), rng=random.Random(5)) as node:
                await node.bootstrap(timeout=5.0)
                out["our_table"] = len(node.table)
                async with node.get_peers(IH_THEIRS) as stream:
                    out["we_found"] = sorted([[ip, port] async for ip, port in stream])
                out["accepted"] = await node.announce(IH_OURS, 4711)
                found = []
                for i in (2, 9):
                    result = await trio.to_thread.run_sync(lambda: sw.get_peers(i, IH_OURS))
                    found.append(sorted([list(p) for p in result.peers]))
                out["they_found"] = found
                entry = (node.node_id, OURS)
                tables = await trio.to_thread.run_sync(lambda: [sw.routing_table(i) for i in range(N)])
                out["in_their_tables"] = sum(entry in t for t in tables)
                out["timeouts"] = node.stats.timeouts
    print(json.dumps(out))


trio.run(main)
