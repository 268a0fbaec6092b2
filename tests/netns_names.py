"""Run inside a private network namespace by tests/test_netns_ipv6.py (not a test module).

The namespace's /etc/hosts gives ``v6only.test`` an AAAA record alone and
``dual.test`` an A and an AAAA record. A dual-stack node serves on
198.18.0.1 and fd00::1 (port 6881). Checks name resolution per family and that
``mainline-dht ping`` and ``peers --bootstrap`` reach nodes by those names.
Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import trio

from mainline_dht.runtime.node import open_node, resolve_address, resolve_addresses

REPO = Path(__file__).resolve().parent.parent
INFO_HASH = bytes(range(20))


async def cli(*argv: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await trio.run_process(
        [sys.executable, "-m", "mainline_dht", *argv], env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def main() -> None:
    out: dict[str, object] = {}
    out["dual"] = await resolve_addresses(("dual.test", 6881))
    out["v6only"] = await resolve_addresses(("v6only.test", 6881))
    out["v6only_any"] = await resolve_address(("v6only.test", 6881))
    try:
        await resolve_address(("v6only.test", 6881), family=4)
        out["v6only_as_v4"] = "resolved"
    except OSError:
        out["v6only_as_v4"] = "no A record"
    with trio.fail_after(60):
        async with open_node([("198.18.0.1", 6881), ("fd00::1", 6881)], bootstrap=(), rng=random.Random(1)) as server:
            async with open_node([("198.18.0.2", 6881), ("fd00::2", 6881)], bootstrap=(), rng=random.Random(2)) as peer:
                # Each overlay of the server learns the peer node, and the peer announces in both.
                for o in peer.overlays:
                    await o.ping(server.overlay(o.family).local_address)  # type: ignore[union-attr]
                await peer.announce(INFO_HASH, 7000)
                code, stdout, _ = await cli("ping", "v6only.test:6881", "--json", "--bind", "[fd00::3]:0",
                                            "--bind", "198.18.0.3:0")
                out["ping"] = [code, json.loads(stdout) if code == 0 else None]
                code, stdout, err = await cli("peers", INFO_HASH.hex(), "--bootstrap", "dual.test:6881", "--json",
                                              "--bind", "[fd00::3]:0", "--bind", "198.18.0.3:0", "--timeout", "10")
                out["peers"] = [code, sorted([e["ip"], e["port"]] for e in map(json.loads, stdout.splitlines())
                                              if e["event"] == "peer"), err[-500:]]
    print(json.dumps(out))


trio.run(main)
