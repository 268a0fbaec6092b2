"""Time from magnet link to metadata on a loopback network: ours against libtorrent's, in one run.

A swarm of libtorrent sessions on 127.0.77.x serves as the DHT; a few of them
seed each round's torrent (made fresh per round, so nothing is cached). Then,
for the same magnet link:

* ours: ``fetch_metadata`` on a node of ours that joined the DHT beforehand
  (lookup + TCP + BEP 9), and the same including a cold start (open the node,
  join through one session, then fetch);
* libtorrent: ``add_torrent`` with the magnet URI on a session that does not
  seed it, until ``metadata_received_alert``.

Usage::

    python tools/bench_metadata.py [--rounds 5] [--sessions 16] [--seeds 3] [--files 200]

Prints one line per round and the medians. Loopback only.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from libtorrent_seed import MadeTorrent, make_torrent, seed, start_seed_swarm, wait_announced  # noqa: E402

from mainline_dht import fetch_metadata, open_node, parse_target_hashes  # noqa: E402
from mainline_dht.core.protocol import NodeConfig  # noqa: E402
from mainline_dht.runtime.node import DHTNode  # noqa: E402


def libtorrent_magnet_seconds(swarm: object, i: int, magnet: str, save: Path, timeout: float = 30.0) -> float:
    """Seconds from add_torrent(magnet) on session i to its metadata_received_alert."""
    import libtorrent as lt

    ses = swarm.session(i)  # type: ignore[attr-defined]
    ses.pop_alerts()
    atp = lt.parse_magnet_uri(magnet)
    atp.save_path = str(save)
    start = time.perf_counter()
    handle = ses.add_torrent(atp)
    deadline = start + timeout
    try:
        while time.perf_counter() < deadline:
            ses.wait_for_alert(50)
            for alert in ses.pop_alerts():
                if isinstance(alert, lt.metadata_received_alert):
                    return time.perf_counter() - start
        raise TimeoutError(f"libtorrent got no metadata in {timeout} s")
    finally:
        ses.remove_torrent(handle)


async def ours_seconds(node: DHTNode, magnet: str) -> float:
    target = parse_target_hashes(magnet)
    start = trio.current_time()
    info = await fetch_metadata(node, target.info_hash, sha256=target.sha256, timeout=30.0)
    assert info.name
    return trio.current_time() - start


async def ours_cold_seconds(bootstrap: tuple[str, int], magnet: str) -> float:
    target = parse_target_hashes(magnet)
    start = trio.current_time()
    async with open_node(("127.0.0.1", 0), bootstrap=[bootstrap], config=NodeConfig(read_only=True)) as node:
        info = await fetch_metadata(node, target.info_hash, sha256=target.sha256, timeout=30.0)
    assert info.name
    return trio.current_time() - start


def make_round_torrent(root: Path, k: int, files: int, rng: random.Random) -> MadeTorrent:
    contents = {f"dir{j % 10}/file{j:05d}.bin": rng.randbytes(rng.randrange(1000, 4000)) for j in range(files)}
    return make_torrent(root / f"round{k}", f"bench round {k}", contents, kind="v1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--files", type=int, default=200, help="files per torrent (sets the info dictionary's size)")
    args = ap.parse_args()
    rng = random.Random(77)
    ours_warm: list[float] = []
    ours_cold: list[float] = []
    lts: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, start_seed_swarm(args.sessions, first_ip="127.0.77.1", seed=77) as swarm:
        swarm.wait_for_tables(min_nodes=min(8, args.sessions - 1), timeout=10.0)
        asker = args.sessions - 1
        bootstrap = swarm.addresses[0]

        async def run_all() -> None:
            async with open_node(("127.0.0.1", 0), bootstrap=[bootstrap], config=NodeConfig(read_only=True)) as node:
                await node.bootstrap()
                for k in range(args.rounds):
                    torrent = make_round_torrent(Path(tmp), k, args.files, rng)
                    handles = [await trio.to_thread.run_sync(seed, swarm, s, torrent)
                               for s in range(1, 1 + args.seeds)]
                    await trio.to_thread.run_sync(
                        lambda: wait_announced(swarm, asker, torrent.info_hash, args.seeds, handles=handles))
                    magnet = f"magnet:?xt=urn:btih:{torrent.info_hash.hex()}"
                    size = len(torrent.data)
                    warm = await ours_seconds(node, magnet)
                    cold = await ours_cold_seconds(bootstrap, magnet)
                    lt_s = await trio.to_thread.run_sync(
                        libtorrent_magnet_seconds, swarm, asker - 1, magnet, Path(tmp) / f"lt{k}")
                    for s, h in zip(range(1, 1 + args.seeds), handles):
                        swarm.session(s).remove_torrent(h)
                    ours_warm.append(warm)
                    ours_cold.append(cold)
                    lts.append(lt_s)
                    print(f"round {k}: .torrent {size} B, {args.files} files: ours {warm * 1000:.1f} ms "
                          f"(cold start {cold * 1000:.1f} ms), libtorrent {lt_s * 1000:.1f} ms", flush=True)

        trio.run(run_all)
    print(f"median over {args.rounds} rounds, {args.sessions} libtorrent sessions, {args.seeds} seeds: "
          f"ours {statistics.median(ours_warm) * 1000:.1f} ms (joined node), "
          f"{statistics.median(ours_cold) * 1000:.1f} ms (cold start incl. join); "
          f"libtorrent add_torrent(magnet) -> metadata_received_alert {statistics.median(lts) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
