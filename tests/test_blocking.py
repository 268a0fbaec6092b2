"""Tests of mainline_dht.blocking: the trio node on a background thread, called from threads.

Rules: our nodes on 127.0.80.x only (the network from 127.0.80.1, the nodes
under test from 127.0.80.100), every port 0; where the system routes only
127.0.0.1 everything shares it. Assertions are on outcomes, never on wall time;
each wait on another thread is bounded.
"""

from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import mainline_dht.blocking
import mainline_dht.runtime.blocking
from mainline_dht import BootstrapError, KRPCError, LocalProtocolError, QueryTimeout
from mainline_dht.blocking import Node, NodeClosedError
from mainline_dht.runtime.state_file import load_contacts
from mainline_dht.wire.bencode import decode_untrusted, encode
from mainline_dht.wire.contact import Address
from loopback import LoopbackRange
from netthread import ThreadedNetwork, local_network_thread

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0  # seconds any thread or subprocess may take at most; loopback needs far less


#: The i-th node under test's address: 127.0.80.(100 + i).
bind = LoopbackRange("127.0.80", first=100)
_SPREAD = bind.spread


def info_hash(name: str) -> bytes:
    return hashlib.sha1(name.encode()).digest()


@pytest.fixture
def net() -> Iterator[ThreadedNetwork]:
    """A fresh network per test: nodes a test closed would slow the next test's lookups."""
    with local_network_thread(20, base=("127.0.80.1", 0), seed=80) as threaded:
        yield threaded


def open_node(net: ThreadedNetwork, i: int, **options: object) -> Node:
    options.setdefault("bootstrap", [net.bootstrap_address])
    options.setdefault("config", net.net.config)
    options.setdefault("rng", random.Random(f"blocking:{i}"))
    return Node(bind(i), **options)  # type: ignore[arg-type]


def test_lookups_from_four_threads_at_once(net: ThreadedNetwork) -> None:
    hashes = [info_hash(f"four threads {t}") for t in range(4)]
    expected: list[set[Address]] = []
    for t, h in enumerate(hashes):
        peers = set()
        for j in range(2):  # two announcers per infohash
            i = 1 + 2 * t + j
            assert net.announce(i, h, 41000 + 10 * t + j) > 0
            peers.add((net.net.nodes[i].local_address[0], 41000 + 10 * t + j))
        expected.append(peers)

    results: list[object] = [None] * 4
    start = threading.Barrier(4)
    with open_node(net, 0) as node:

        def lookup(t: int) -> None:
            try:
                start.wait(WAIT)
                if t % 2:
                    results[t] = set(node.get_peers(hashes[t], timeout=WAIT))
                else:
                    results[t] = set(node.iter_peers(hashes[t], timeout=WAIT))
            except BaseException as exc:
                results[t] = exc

        threads = [threading.Thread(target=lookup, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in threads)
        assert results == expected
        assert node.stats().responses_received > 0


def test_announce_then_find(net: ThreadedNetwork) -> None:
    h = info_hash("announce then find")
    with open_node(net, 1) as announcer, open_node(net, 2) as seeker:
        assert announcer.bootstrap() > 0
        assert announcer.announce(h, port=42001) > 0
        assert seeker.get_peers(h, timeout=WAIT) == [(announcer.local_address[0], 42001)]
        # implied_port: the receivers take our UDP source port (one entry per IP per
        # torrent: it replaces the first announce's)
        assert announcer.announce(h) > 0
        found = set(seeker.get_peers(h, timeout=WAIT))
        assert found == {announcer.local_address}


def _feeds(node: Node) -> int:
    """``iter_peers`` lookups still running in ``node``."""
    tasks = node._runner._tasks
    assert tasks is not None
    return len(tasks.child_tasks)


def test_iter_peers_stops_its_lookup_when_the_reader_leaves(net: ThreadedNetwork,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    h = info_hash("leave early")
    for i in range(1, 6):
        net.announce(i, h, 43000 + i)
    # With room for one waiting peer, the lookup of five is still running (held
    # up by its reader) when the reader leaves after the first.
    monkeypatch.setattr(mainline_dht.runtime.blocking, "PEER_BUFFER", 1)
    with open_node(net, 3, join=False) as node:
        peers = node.iter_peers(h, timeout=WAIT)
        first = next(peers)
        assert first[1] in range(43001, 43006)
        assert _feeds(node) == 1
        peers.close()  # returns once the lookup has stopped
        assert _feeds(node) == 0
        with pytest.raises(StopIteration):
            next(peers)

        with node.iter_peers(h, timeout=WAIT) as peers:
            for peer in peers:
                break
            assert _feeds(node) == 1
        assert _feeds(node) == 0

        for peer in node.iter_peers(h, timeout=WAIT):
            break  # the iterator is dropped here: it stops its lookup without waiting
        for _ in range(int(WAIT / 0.01)):
            if _feeds(node) == 0:
                break
            threading.Event().wait(0.01)
        assert _feeds(node) == 0
        # the node carries on, and a reader that stays gets every peer
        assert set(node.iter_peers(h, timeout=WAIT)) == {(net.net.nodes[i].local_address[0], 43000 + i)
                                                         for i in range(1, 6)}


def test_iter_peers_checks_the_info_hash_at_once(net: ThreadedNetwork) -> None:
    with open_node(net, 4, join=False) as node:
        with pytest.raises(LocalProtocolError):
            node.iter_peers(b"short")
        with pytest.raises(LocalProtocolError):
            node.get_peers(b"short")
        with pytest.raises(LocalProtocolError):
            node.announce(info_hash("bad port"), port=0)


def test_errors_keep_their_types(net: ThreadedNetwork) -> None:
    """QueryTimeout, KRPCError and BootstrapError reach the caller as themselves, not in a group."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as grumpy:
        silent.bind((bind(9)[0], 0))
        grumpy.bind((bind(10)[0], 0))
        grumpy.settimeout(WAIT)

        def answer_with_an_error() -> None:
            data, addr = grumpy.recvfrom(2048)
            query = decode_untrusted(data)
            grumpy.sendto(encode({b"t": query[b"t"], b"y": b"e", b"e": [202, b"busy"]}), addr)

        server = threading.Thread(target=answer_with_an_error)
        server.start()
        with open_node(net, 5, bootstrap=[silent.getsockname()], join=False) as node:
            with pytest.raises(KRPCError) as krpc:
                node.ping(grumpy.getsockname())
            assert (krpc.value.code, krpc.value.message) == (202, "busy")
            with pytest.raises(QueryTimeout):
                node.ping(silent.getsockname(), timeout=0.2)
            with pytest.raises(BootstrapError):
                node.bootstrap(timeout=0.2)
        server.join(WAIT)


def test_close_is_idempotent_and_use_after_close_raises(net: ThreadedNetwork) -> None:
    node = open_node(net, 6)
    assert node.ping(net.bootstrap_address).sender_id == net.net.nodes[0].node_id
    closers = [threading.Thread(target=node.close) for _ in range(3)]
    for thread in closers:
        thread.start()
    for thread in closers:
        thread.join(WAIT)
    node.close()
    assert node.closed
    for call in (lambda: node.get_peers(info_hash("closed")), node.stats, lambda: node.ping(net.bootstrap_address),
                 lambda: node.iter_peers(info_hash("closed")), lambda: node.announce(info_hash("closed"))):
        with pytest.raises(NodeClosedError, match="closed"):
            call()
    with node:  # leaving the block closes it again: harmless
        pass


def test_close_from_another_thread_ends_a_call_in_flight(net: ThreadedNetwork) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((bind(9)[0], 0))
        node = open_node(net, 7, join=False)
        outcome: list[BaseException] = []

        def wait_for_silence() -> None:
            try:
                node.ping(silent.getsockname(), timeout=WAIT)
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=wait_for_silence)
        caller.start()
        for _ in range(int(WAIT / 0.01)):  # until the ping is in flight
            if node._runner._calls:
                break
            threading.Event().wait(0.01)
        node.close()
        caller.join(WAIT)
        assert [type(exc) for exc in outcome] == [NodeClosedError]


def test_bind_error_is_raised_by_the_constructor() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((bind(11)[0], 0))
        with pytest.raises(OSError):
            Node(taken.getsockname(), bootstrap=[], join=False)


def test_node_left_open_stops_and_saves_at_interpreter_exit(net: ThreadedNetwork, tmp_path: Path) -> None:
    """A program that never calls close() exits promptly, and the exit saves its routing table."""
    state = tmp_path / "dht.dat"
    host, port = net.bootstrap_address
    program = textwrap.dedent(f"""
        import mainline_dht.blocking
        node = mainline_dht.blocking.Node(({bind(12)[0]!r}, 0), bootstrap=[({host!r}, {port})],
                                          state_path={str(state)!r}, config=None if {_SPREAD} else
                                          mainline_dht.NodeConfig(max_per_ip=None, query_rate_per_ip=None))
        print(node.bootstrap(), flush=True)
        keep = node  # still referenced at exit: only the exit hook can stop it
    """)
    proc = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                          timeout=WAIT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 0
    assert proc.stderr == ""
    _, contacts = load_contacts(state)
    assert len(contacts) > 0


def test_public_module_names() -> None:
    assert mainline_dht.blocking.Node is Node
    assert set(mainline_dht.blocking.__all__) <= set(dir(mainline_dht.blocking))


def test_a_node_that_crashed_says_why(net: ThreadedNetwork) -> None:
    node = open_node(net, 13, join=False)

    async def crash() -> None:
        raise RuntimeError("a bug in the node")

    # A task of the node's own fails (as a bug would): the node stops, and every
    # later call says so, with the bug as the cause.
    node._runner.start_task(lambda nursery: nursery.start_soon(crash))
    node._runner.thread.join(WAIT)
    assert node.closed
    with pytest.raises(NodeClosedError, match="stopped on an error") as closed:
        node.stats()
    assert isinstance(closed.value.__cause__, RuntimeError)
    node.close()


def test_dual_stack_node_finds_peers_in_both_families(net: ThreadedNetwork) -> None:
    h = info_hash("dual stack")
    with local_network_thread(10, base=("127.0.80.1", 0), seed=86, ipv6=True) as net6:
        assert net.announce(1, h, 47001) > 0
        assert net6.announce(1, h, 47002) > 0
        with Node([bind(15), ("::1", 0)], bootstrap=[net.bootstrap_address, net6.bootstrap_address],
                  config=net.net.config, rng=random.Random("blocking:15")) as node:
            assert [a[0] for a in node.local_addresses] == [bind(15)[0], "::1"]
            assert node.local_address == node.local_addresses[0]
            assert set(node.get_peers(h, timeout=WAIT)) == {(net.net.nodes[1].local_address[0], 47001),
                                                            ("::1", 47002)}


def test_iter_peers_stats_tell_no_peers_from_no_answer(net: ThreadedNetwork) -> None:
    h = info_hash("stats")
    net.announce(2, h, 48000)
    with open_node(net, 16) as node:
        with node.iter_peers(h, timeout=WAIT) as peers:
            assert list(peers) == [(net.net.nodes[2].local_address[0], 48000)]
        assert peers.stats.replies > 0 and peers.stats.peers == 1 and peers.stats.finished_at is not None
        with node.iter_peers(info_hash("nobody has this"), timeout=WAIT) as peers:
            assert list(peers) == []
        assert peers.stats.replies > 0 and peers.stats.peers == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((bind(9)[0], 0))
        with open_node(net, 17, bootstrap=[silent.getsockname()], join=False) as node:
            with node.iter_peers(h, timeout=0.3) as peers:
                assert list(peers) == []
                assert peers.stats.queries >= 1
            assert peers.stats.replies == 0  # nothing answered: not the same as "no peers"
