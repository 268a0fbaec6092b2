"""Fetching metadata over real TCP on loopback from peers of our own (tests/fake_peers.py),
some good, some silent, some rejecting, one corrupt; and ``mainline-dht metadata``
against a DHT of our nodes whose peers are fake peers.

Network rules: loopback only (127.0.74.x), free ports, real clock with short
step timeouts and an absolute ``fail_after`` per test.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

import mainline_dht
from mainline_dht import cli
from mainline_dht.errors import MetadataNotFound
from mainline_dht.metadata import FetchStats, fetch_metadata_from_peers
from mainline_dht.runtime.localnet import open_local_network
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Address

from fake_peers import FakePeer, info_hash_of, make_info

INFO = make_info(b"swarm test", files=4, size=50_000)  # 4 pieces
IH = info_hash_of(INFO)


async def start(nursery: trio.Nursery, behaviour: str, i: int, info: bytes = INFO) -> FakePeer:
    peer = FakePeer(info, behaviour)
    await nursery.start(peer.serve, f"127.0.74.{i}")
    return peer


async def addresses(*peers: FakePeer) -> AsyncIterator[Address]:
    for p in peers:
        yield p.address


async def test_swarm_of_bad_peers_still_gives_the_metadata_and_drops_the_corrupt_one() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            bad = [await start(nursery, b, i + 1) for i, b in enumerate(
                ["silent", "handshake-only", "reject", "reject", "corrupt", "no-extensions", "oversize", "garbage"])]
            good = await start(nursery, "good", 20)
            corrupt = bad[4]
            stats = FetchStats()

            async def peers() -> AsyncIterator[Address]:
                for p in bad:
                    yield p.address
                # the good peer turns up only once the corrupt one has been caught
                while not stats.dropped:
                    await trio.sleep(0.01)
                yield good.address

            info = await fetch_metadata_from_peers(IH, peers(), stats=stats, step_timeout=1.0, concurrency=12)
            assert info.info == INFO and info.name == "swarm test" and len(info.files) == 4
            assert info.source == good.address
            assert stats.dropped == [corrupt.address]
            assert sorted(corrupt.requests) == [0, 1, 2, 3]  # it was asked, and its answer was refused
            assert stats.rejected >= 4 and stats.peers_found == 9
            assert bad[2].requests and bad[3].requests  # the rejecting peers were asked
            nursery.cancel_scope.cancel()


async def test_good_and_corrupt_peers_at_once_give_the_right_dictionary() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            peers = [await start(nursery, b, 30 + i) for i, b in enumerate(["corrupt", "good", "corrupt", "good"])]
            stats = FetchStats()
            info = await fetch_metadata_from_peers(IH, addresses(*peers), stats=stats, step_timeout=2.0)
            assert info.info == INFO and info.source in (peers[1].address, peers[3].address)
            assert set(stats.dropped) <= {peers[0].address, peers[2].address}
            nursery.cancel_scope.cancel()


async def test_only_bad_peers_raise_metadata_not_found() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            peers = [await start(nursery, b, 40 + i) for i, b in enumerate(["reject", "corrupt", "handshake-only"])]
            stats = FetchStats()
            with pytest.raises(MetadataNotFound) as exc:
                await fetch_metadata_from_peers(IH, addresses(*peers), stats=stats, step_timeout=0.5)
            assert exc.value.stats is stats
            assert stats.dropped == [peers[1].address] and stats.rejected >= 1
            assert "1 sent wrong data" in str(exc.value)
            nursery.cancel_scope.cancel()


async def test_keep_alives_do_not_keep_a_peer_that_never_answers() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            peer = await start(nursery, "chatty", 45)
            stats = FetchStats()
            with pytest.raises(MetadataNotFound):  # within one step's timeout, not at fail_after
                await fetch_metadata_from_peers(IH, addresses(peer), stats=stats, step_timeout=0.5)
            assert peer.requests and stats.failed == 1
            nursery.cancel_scope.cancel()


async def test_nobody_listening_raises_metadata_not_found() -> None:
    async def nobody() -> AsyncIterator[Address]:
        yield ("127.0.74.50", 9)  # the discard port; nothing listens

    with trio.fail_after(10):
        with pytest.raises(MetadataNotFound):
            await fetch_metadata_from_peers(IH, nobody(), step_timeout=0.5)


async def test_the_size_cap_refuses_big_dictionaries() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            peer = await start(nursery, "good", 51)
            stats = FetchStats()
            with pytest.raises(MetadataNotFound):
                await fetch_metadata_from_peers(IH, addresses(peer), max_size=len(INFO) - 1, stats=stats)
            assert stats.no_metadata == 1 and peer.requests == []
            nursery.cancel_scope.cancel()


# --- the command line, against a DHT of our nodes ----------------------------------------


@pytest.fixture(scope="module")
def swarm_net() -> Iterator[tuple[Address, list[Address]]]:
    """A 6-node DHT on 127.0.74.101+; two nodes announce fake peers (one good, one silent) on their IPs."""
    ready: queue.Queue[object] = queue.Queue()

    def run() -> None:
        async def serve() -> None:
            async with open_local_network(6, seed=74, base=("127.0.74.101", 0)) as lnet:
                async with trio.open_nursery() as nursery:
                    served = []
                    for node, behaviour in ((lnet.nodes[2], "good"), (lnet.nodes[4], "silent")):
                        peer = FakePeer(INFO, behaviour)
                        addr = await nursery.start(peer.serve, node.local_address[0])
                        assert await node.announce(IH, addr[1]) > 0
                        served.append(addr)
                    with trio.CancelScope() as scope:
                        ready.put(((lnet.bootstrap_address, served), trio.lowlevel.current_trio_token(), scope))
                        await trio.sleep_forever()
                    nursery.cancel_scope.cancel()

        try:
            trio.run(serve)
        except BaseException as exc:  # handed to the test thread
            ready.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    item = ready.get(timeout=60)
    if isinstance(item, BaseException):
        raise item
    assert isinstance(item, tuple)
    value, token, scope = item
    yield value
    trio.from_thread.run_sync(scope.cancel, trio_token=token)
    thread.join(timeout=10)


def _bootstrap(net: tuple[Address, list[Address]]) -> str:
    host, port = net[0]
    return f"{host}:{port}"


def test_cli_metadata_json_and_save(swarm_net: tuple[Address, list[Address]], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "out.torrent"
    code = cli.main(["metadata", IH.hex(), "--bootstrap", _bootstrap(swarm_net), "--timeout", "20",
                     "--json", "--save", str(saved)])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in lines] == ["metadata", "done"]
    meta, done = lines
    assert meta["infohash"] == IH.hex() and meta["name"] == "swarm test"
    assert meta["files"] == [{"path": f"dir/file{i}.bin", "length": 1000 * (i + 1)} for i in range(4)]
    assert meta["length"] == 10_000 and meta["from"] == "%s:%d" % swarm_net[1][0]
    assert done["found"] is True and done["saved"] == str(saved)
    torrent = saved.read_bytes()
    decoded = bencode.decode_untrusted(torrent, max_size=len(torrent))
    assert info_hash_of(bencode.encode(decoded[b"info"])) == IH
    assert b"announce" not in decoded
    assert [(h.decode(), p) for h, p in decoded[b"nodes"]][0] in swarm_net[1]


def test_cli_metadata_text(swarm_net: tuple[Address, list[Address]], capsys: pytest.CaptureFixture[str]) -> None:
    magnet = f"magnet:?xt=urn:btih:{IH.hex()}&dn=x"
    code = cli.main(["metadata", magnet, "--bootstrap", _bootstrap(swarm_net), "--timeout", "20"])
    captured = capsys.readouterr()
    assert code == 0
    assert "name: swarm test" in captured.out and "dir/file3.bin" in captured.out and "4000" in captured.out
    assert "metadata from" in captured.err


def test_cli_metadata_not_found_exits_1(swarm_net: tuple[Address, list[Address]],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["metadata", "ab" * 20, "--bootstrap", _bootstrap(swarm_net), "--timeout", "3", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and lines[-1]["event"] == "done" and lines[-1]["found"] is False


def test_cli_metadata_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["metadata", "not-a-hash"]) == 2
    assert "not an infohash" in capsys.readouterr().err
    # nothing answers on the discard port
    assert cli.main(["metadata", "ab" * 20, "--bootstrap", "127.0.74.250:9", "--timeout", "2"]) == 2
    assert "no DHT node answered" in capsys.readouterr().err


def test_fetch_metadata_is_public() -> None:
    assert mainline_dht.fetch_metadata is not None and "fetch_metadata" in mainline_dht.__all__
    assert "TorrentInfo" in mainline_dht.__all__


def test_metadata_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["metadata", "--help"])
    out = capsys.readouterr().out
    for word in ("TARGET", "--bootstrap", "--timeout", "--save", "--json", "--max-size", "Exit status"):
        assert word in out, word
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "metadata" in capsys.readouterr().out
