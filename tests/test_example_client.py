"""tools/example_client.py, the client-shaped program on mainline_dht.blocking, run
briefly against a loopback network (127.0.87.x, free ports): it finds the peer
announced for the infohash it wants, and the network finds it as a peer of the
infohash it seeds.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from mainline_dht.runtime.state_file import load_contacts
from netthread import local_network_thread

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tools" / "example_client.py"
WANT = hashlib.sha1(b"example client test: want").digest()
SEED = hashlib.sha1(b"example client test: seed").digest()


def test_example_client_finds_the_peer_and_is_found(tmp_path: Path) -> None:
    with local_network_thread(20, base=("127.0.87.1", 0), seed=84) as net:
        seeder = net.net.nodes[3]
        assert net.announce(3, WANT, 45000) > 0
        host, port = net.bootstrap_address
        result = subprocess.run(
            [sys.executable, str(CLIENT), "--bootstrap", f"{host}:{port}", "--bind", "127.0.0.1:0",
             "--state", "client.dat", "--duration", "0.5", "--want", WANT.hex(), "--seed", SEED.hex(),
             "--peer-port", "46000"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert f"peer for {WANT.hex()}: {seeder.local_address[0]}:45000\n" in out
        assert re.search(rf"announced {SEED.hex()} on port 46000: [1-9]\d* nodes accepted", out)
        assert re.search(rf"lookup of {WANT.hex()} done: 1 peers from [1-9]\d* nodes that answered", out)
        assert re.search(r"stopped after \d+ s; [1-9]\d* contacts in the routing table, saved to client\.dat", out)

        async def peers_of_seed() -> list[tuple[str, int]]:
            async with net.net.nodes[7].get_peers(SEED) as stream:
                return [peer async for peer in stream]

        assert net.run(peers_of_seed) == [("127.0.0.1", 46000)]
    _, contacts = load_contacts(tmp_path / "client.dat")
    assert contacts
