"""A fleet of crawlers sharing one PostgreSQL database (mainline_dht.crawl.fleet).

Pure parts first (the partition scope, the policy inside a scope), then the
commands against a real throwaway PostgreSQL server, then three worker
processes crawling one loopback network of 500 of our nodes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
import trio
from postgres_server import PostgresServer

from mainline_dht import cli, open_node
from mainline_dht.crawl.fleet import PartitionScope
from mainline_dht.crawl.policy import CrawlLimits, CrawlPolicy
from mainline_dht.crawl.postgres_store import PARTITIONS, PostgresStore
from mainline_dht.crawl.store import NodeRecord
from mainline_dht.wire.contact import Contact

T0 = 1_700_000_000.0
REPO = Path(__file__).resolve().parent.parent


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _id(partition: int, rest: int = 0) -> bytes:
    return bytes([partition]) + rest.to_bytes(19, "big")


# --- pure -----------------------------------------------------------------------------


def test_scope_owns_its_partitions_only_while_the_lease_is_valid() -> None:
    clock = FakeClock()
    scope = PartitionScope(clock)
    assert not scope.owns(_id(1)) and scope.random_target(random.Random(0)) is None
    scope.update(frozenset({1, 7}), valid_until=110.0)
    assert scope.owns(_id(1)) and scope.owns(_id(7, 5)) and not scope.owns(_id(2))
    rng = random.Random(3)
    assert {scope.random_target(rng)[0] for _ in range(50)} == {1, 7}  # type: ignore[index]
    clock.now = 110.0  # the lease may have passed to another worker: hands off
    assert not scope.owns(_id(1)) and scope.random_target(rng) is None and scope.held == frozenset()
    scope.update(frozenset({2}), valid_until=200.0)
    scope.clear()
    assert not scope.owns(_id(2))


def test_policy_visits_only_its_scope_and_hands_on_the_rest() -> None:
    clock = FakeClock()
    scope = PartitionScope(clock)
    scope.update(frozenset(range(128)), valid_until=1e9)
    policy = CrawlPolicy(rng=random.Random(1), now=T0, limits=CrawlLimits(rate=1e6, burst=1e6))
    policy.scope = scope
    contacts = [Contact(_id(p, i), (f"10.1.{p}.{i + 1}", 6881)) for p in range(0, 256, 16) for i in range(3)]
    policy.add_contacts(contacts, T0)
    policy.restore(NodeRecord(_id(200), ("10.2.0.1", 1), T0, T0), T0)  # a stored node of another's partition
    queries = policy.next_queries(T0)
    assert queries and all(q.node_id[0] < 128 for q in queries)
    assert all(q.target[0] < 128 for q in queries if q.target[:15] != q.node_id[:15])  # random targets stay inside
    foreign = dict(policy.take_foreign())
    assert set(foreign) == {c.id for c in contacts if c.id[0] >= 128}
    assert policy.take_foreign() == []
    # The scope shrinks before an unvisited node's turn: it is forgotten and handed on.
    late = Contact(_id(5, 99), ("10.3.0.1", 6881))
    policy.add_contact(late, T0)
    scope.update(frozenset(range(128, 256)), valid_until=1e9)
    assert policy.next_queries(T0 + 1) == []
    assert late.id not in policy.nodes and dict(policy.take_foreign()) == {late.id: late.addr}


# --- the commands against a real server -------------------------------------------------


def _db(postgres: PostgresServer, name: str) -> str:
    return postgres.url(name)


def test_crawl_status_shows_workers_and_leases(postgres: PostgresServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = _db(postgres, "status")
    store = PostgresStore(url)
    try:
        store.heartbeat("alpha", address="127.0.0.1:1", queries=50, nodes=7, infohashes=3)
        store.lease("alpha", ttl=60, live_within=60)
        store.write([NodeRecord(_id(1), ("127.0.0.2", 2), T0, T0, bep51=True)], [])
    finally:
        store.close()
    assert cli.main(["crawl-status", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "1 node (1 with BEP 51)" in out and f"{PARTITIONS} of {PARTITIONS} leased" in out
    assert "alpha" in out and "alive" in out and "256 partitions" in out
    assert cli.main(["crawl-status", "--db", url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["nodes"] == 1 and status["partitions"] == {"leased": 256, "expired": 0, "free": 0}
    assert status["workers"][0]["name"] == "alpha" and status["workers"][0]["queries"] == 50


def test_crawl_status_errors(postgres: PostgresServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crawl-status", "--db", f"postgresql://postgres@/x?host={tmp_path}"]) == 2
    assert "cannot connect" in capsys.readouterr().err
    assert cli.main(["crawl-status", "--db", str(tmp_path / "crawl.sqlite3")]) == 2
    assert "PostgreSQL" in capsys.readouterr().err


def test_worker_name_needs_postgres(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["crawl", "--db", str(tmp_path / "c.sqlite3"), "--worker-name", "w", "--bootstrap",
                     "127.0.0.1:9", "--duration", "1"])
    assert code == 2 and "--worker-name needs a PostgreSQL database" in capsys.readouterr().err


# --- three workers, one network ------------------------------------------------------------

NODES = 500
INFOHASHES = 40
NET_BASE = "127.0.93.1"


def _start_testnet(port: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mainline_dht", "testnet", "--nodes", str(NODES), "--seed", "9",
         "--base", f"{NET_BASE}:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the bootstrap address, once every node is up
    if not first:
        proc.kill()
        raise AssertionError(f"testnet did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc


async def _announce(boot: tuple[str, int], hashes: list[bytes]) -> None:
    async with open_node(("127.0.96.1", 0), bootstrap=[boot]) as node:
        await node.bootstrap()
        async with trio.open_nursery() as nursery:
            for i, h in enumerate(hashes):
                nursery.start_soon(node.announce, h, 7000 + i)


def test_three_workers_share_a_500_node_network(postgres: PostgresServer) -> None:
    url = _db(postgres, "fleet3")
    PostgresStore(url).close()
    port = 26000 + os.getpid() % 2000
    t = time.monotonic()
    net = _start_testnet(port)
    print(f"testnet up in {time.monotonic() - t:.1f} s")
    workers: list[subprocess.Popen[str]] = []
    try:
        boot = (NET_BASE, port)
        hashes = [random.Random(i).randbytes(20) for i in range(INFOHASHES)]
        t = time.monotonic()
        trio.run(_announce, boot, hashes)
        print(f"announced in {time.monotonic() - t:.1f} s")
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for i in range(3):
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "mainline_dht", "crawl", "--db", url, "--worker-name", f"w{i}",
                 "--bootstrap", f"{boot[0]}:{boot[1]}", "--bind", f"127.0.95.{i + 1}:0", "--duration", "15",
                 "--lease-ttl", "6", "--rate", "300", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            ))
        outputs = [w.communicate(timeout=120) for w in workers]
        for w, (_, err) in zip(workers, outputs):
            assert w.returncode == 0, err
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        net.send_signal(signal.SIGINT)
        try:
            net.wait(30)
        except subprocess.TimeoutExpired:
            net.kill()
    with psycopg.connect(url) as conn:
        node_ips = {r[0] for r in conn.execute("SELECT ip FROM nodes")}
        found_hashes = {bytes(r[0]) for r in conn.execute("SELECT infohash FROM infohashes")}
        dupes = conn.execute("SELECT count(*) - count(DISTINCT id) FROM nodes").fetchone()
        log = conn.execute("SELECT partition, worker, since, until FROM lease_log ORDER BY partition, since").fetchall()
        per_worker = dict(conn.execute("SELECT name, nodes FROM workers").fetchall())
    members = {f"127.0.93.{i}" for i in range(1, 256)} | {f"127.0.94.{i}" for i in range(1, 256)}
    ours = node_ips & members
    assert len(ours) >= 0.95 * NODES, f"{len(ours)} of {NODES} nodes"
    assert len(found_hashes & set(hashes)) >= 0.95 * INFOHASHES
    assert dupes == (0,)
    assert set(per_worker) == {"w0", "w1", "w2"} and all(n > 0 for n in per_worker.values())
    # No partition was ever held by two workers at once.
    holdings: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    for partition, worker, since, until in log:
        holdings[partition].append((since, until, worker))
    assert len({w for rows in holdings.values() for _, _, w in rows}) == 3  # the work was shared
    for partition, rows in holdings.items():
        rows.sort()
        for (s1, u1, w1), (s2, u2, w2) in zip(rows, rows[1:]):
            assert s2 >= u1 or w1 == w2, f"partition {partition}: {w1} until {u1} overlaps {w2} from {s2}"
