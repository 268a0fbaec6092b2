"""Run inside a private network namespace by tests/test_netns_ipv6.py (not a test module).

N dual-stack nodes, node i on 198.18.0.(i+1) and fd00::(i+1), port 6881, with the
production configuration (one table entry per IP, per-IP query budgets). All
join through node 0; three announce one infohash, one announces another over
IPv6 only (an IPv6-only node), and the last node (dual-stack) and an
IPv4-only node look both up. Prints one JSON object with what they found.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from contextlib import AsyncExitStack

import trio

from mainline_dht.runtime.node import open_node

N = int(sys.argv[1]) if len(sys.argv) > 1 else 16
PORT = 6881
IH_DUAL = hashlib.sha1(b"netns dual").digest()
IH_V6 = hashlib.sha1(b"netns v6 only").digest()


def v4(i: int) -> tuple[str, int]:
    return (f"198.18.0.{i + 1}", PORT)


def v6(i: int) -> tuple[str, int]:
    return (f"fd00::{i + 1:x}", PORT)


async def main() -> None:
    out: dict[str, object] = {}
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            nodes = []
            for i in range(N):
                if i == N - 2:
                    bind = [v6(i)]  # IPv6 only
                elif i == N - 3:
                    bind = [v4(i)]  # IPv4 only
                else:
                    bind = [v4(i), v6(i)]
                boot = [] if i == 0 else [v4(0), v6(0)]
                node = await stack.enter_async_context(
                    open_node(bind, bootstrap=boot, rng=random.Random(f"netns:{i}"), bootstrap_timeout=5.0)
                )
                nodes.append(node)
            for node in nodes[1:]:
                await node.bootstrap()
            for node in nodes:
                await node.refresh_buckets(not_full=True)
            out["tables"] = {
                f"{i}": {str(o.family): len(o.table) for o in node.overlays} for i, node in enumerate(nodes)
            }
            out["ipv6_entries_distinct_ips"] = all(
                len({e.addr[0] for e in o.table}) == len(o.table) for n in nodes for o in n.overlays
            )
            accepted = [await nodes[i].announce(IH_DUAL, 7000 + i) for i in (1, 2, 3)]
            accepted.append(await nodes[N - 2].announce(IH_V6, 7777))
            out["accepted"] = accepted

            async def found(node_index: int, ih: bytes) -> list[list[object]]:
                async with nodes[node_index].get_peers(ih) as stream:
                    return sorted([[ip, port] async for ip, port in stream])

            out["dual_finds_dual"] = await found(N - 1, IH_DUAL)
            out["dual_finds_v6"] = await found(N - 1, IH_V6)
            out["v4_only_finds_dual"] = await found(N - 3, IH_DUAL)
            out["v4_only_finds_v6"] = await found(N - 3, IH_V6)
            out["v6_only_finds_dual"] = await found(N - 2, IH_DUAL)
    print(json.dumps(out))


trio.run(main)
