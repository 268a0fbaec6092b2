"""The fleet benchmark behind ``tools/bench_crawl.py --fleet 1,2,4``.

One loopback network of our own nodes (``mainline-dht testnet`` in a process of
its own, some infohashes announced into it), one throwaway PostgreSQL server,
and for each fleet size W a fresh database and W crawler processes
(``mainline-dht crawl --db postgresql://... --worker-name wI``), all started at
once. The database is polled every half second; printed per W: node and
infohash coverage, seconds to 95% node coverage, queries per node (everything
the workers' nodes sent, over the nodes found), and the fleet's queries per
second. Real time, real UDP on 127.0.x.y, real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postgres_server import postgres_server  # noqa: E402

from mainline_dht import open_node  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NET_BASE = "127.0.97.1"
ANNOUNCER = ("127.1.1.1", 0)
INFOHASHES = 100


@dataclass
class FleetResult:
    workers: int
    nodes: int
    infohashes: int
    t95: float | None
    elapsed: float
    queries: int

    @property
    def queries_per_node(self) -> float:
        return self.queries / self.nodes if self.nodes else float("nan")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _start_testnet(nodes: int, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mainline_dht", "testnet", "--nodes", str(nodes), "--seed", "5",
         "--base", f"{NET_BASE}:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(),
    )
    assert proc.stdout is not None
    if not proc.stdout.readline():
        proc.kill()
        raise SystemExit("the testnet did not start")
    return proc


async def _announce(boot: tuple[str, int], hashes: list[bytes]) -> None:
    async with open_node(ANNOUNCER, bootstrap=[boot]) as node:
        await node.bootstrap()
        limiter = trio.CapacityLimiter(20)

        async def one(i: int, h: bytes) -> None:
            async with limiter:
                await node.announce(h, 7000 + i)

        async with trio.open_nursery() as nursery:
            for i, h in enumerate(hashes):
                nursery.start_soon(one, i, h)


def _run_fleet(url: str, w: int, boot: tuple[str, int], members: int, hashes: set[bytes], duration: float,
               rate: float) -> FleetResult:
    from mainline_dht.crawl.postgres_store import PostgresStore

    PostgresStore(url).close()  # the schema, before the workers race to make it
    # Each worker's JSON lines go to a file: a pipe nobody reads while the fleet runs would fill
    # and stall the worker.
    outputs = [tempfile.TemporaryFile("w+") for _ in range(w)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mainline_dht", "crawl", "--db", url, "--worker-name", f"w{i}",
             "--bootstrap", f"{boot[0]}:{boot[1]}", "--bind", f"127.1.0.{i + 1}:0", "--rate", str(rate),
             "--duration", str(duration), "--lease-ttl", "6", "--json"],
            stdout=outputs[i], stderr=subprocess.DEVNULL, text=True, env=_env(),
        )
        for i in range(w)
    ]
    start = time.monotonic()
    t95: float | None = None
    with psycopg.connect(url, autocommit=True) as conn:
        while any(p.poll() is None for p in procs):
            time.sleep(0.5)
            n = conn.execute("SELECT count(*) FROM nodes WHERE port = %s", (boot[1],)).fetchone()
            if t95 is None and n is not None and n[0] >= 0.95 * members:
                t95 = time.monotonic() - start
                for p in procs:  # covered: stop the fleet (Ctrl-C: each writes its last batch)
                    p.send_signal(signal.SIGINT)
        elapsed = time.monotonic() - start
        queries = 0
        for p, output in zip(procs, outputs):
            p.wait(timeout=60)
            output.seek(0)
            for line in output.read().splitlines():
                event = json.loads(line)
                if event.get("event") == "done":
                    queries += int(event["queries"])
        found_nodes = conn.execute("SELECT count(*) FROM nodes WHERE port = %s", (boot[1],)).fetchone()
        found_hashes = {bytes(r[0]) for r in conn.execute("SELECT infohash FROM infohashes")}
    assert found_nodes is not None
    return FleetResult(w, int(found_nodes[0]), len(found_hashes & hashes), t95, elapsed, queries)


def bench_fleet(sizes: list[int], nodes: int, duration: float, rate: float) -> list[FleetResult]:
    """Run the fleet benchmark; print and return one result per fleet size."""
    port = 27000 + os.getpid() % 2000
    print(f"fleet on a loopback network of {nodes} of our nodes (one process, all on one UDP port), {INFOHASHES} infohashes "
          f"announced, a throwaway PostgreSQL; each worker at most {rate:g} queries/s, {os.cpu_count()} CPU cores")
    results: list[FleetResult] = []
    with postgres_server() as server:
        t = time.monotonic()
        net = _start_testnet(nodes, port)
        print(f"testnet up in {time.monotonic() - t:.1f} s")
        try:
            boot = (NET_BASE, port)
            hashes = [random.Random(f"fleet {i}").randbytes(20) for i in range(INFOHASHES)]
            trio.run(_announce, boot, hashes)
            print(f"{'workers':>7} {'nodes':>6} {'cover':>6} {'infohashes':>10} {'s to 95%':>8} "
                  f"{'queries':>8} {'q/node':>6} {'q/s':>6}")
            for w in sizes:
                url = server.url(f"fleet_{w}_{len(results)}")
                r = _run_fleet(url, w, boot, nodes, set(hashes), duration, rate)
                results.append(r)
                t95 = "-" if r.t95 is None else f"{r.t95:.1f}"
                print(f"{r.workers:>7} {r.nodes:>6} {r.nodes / nodes:>6.1%} {r.infohashes:>5}/{INFOHASHES:<4} "
                      f"{t95:>8} {r.queries:>8} {r.queries_per_node:>6.2f} {r.queries / r.elapsed:>6.0f}",
                      flush=True)
        finally:
            net.send_signal(signal.SIGINT)
            try:
                net.wait(30)
            except subprocess.TimeoutExpired:
                net.kill()
    return results
