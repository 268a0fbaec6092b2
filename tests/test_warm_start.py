"""``mainline-dht peers`` starts from the contacts its last run verified, not from a router.

A 30-node DHT of our nodes runs on 127.0.76.x (loopback, free ports) in a thread of
its own, with one more node acting as the bootstrap router: it answers like any node,
and its transport records the source of every datagram it receives, so a test can
tell whether a run asked it anything. Each run binds its own IP, so the record says
which run asked. The contact cache file lives in the test's temporary directory.

Run with ``-s`` to see both runs' times to the first peer (tests never assert on time).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from mainline_dht import cli
from mainline_dht.runtime.contact_file import load_cached_contacts, save_cached_contacts
from mainline_dht.core.contact_cache import RecentContacts
from mainline_dht.runtime.node import open_node
from mainline_dht.runtime.transport import DEFAULT_RECEIVE_BATCH, DatagramTransport, TransportStats, open_udp_transport
from mainline_dht.wire.contact import Address, Contact

from netthread import local_network_thread

INFO_HASH = bytes.fromhex("feed0000" * 5)
PEER_PORT = 5432


class RecordingTransport:
    """A UDP transport that remembers the source of every datagram it receives."""

    def __init__(self, inner: DatagramTransport) -> None:
        self.inner = inner
        self.sources: list[Address] = []

    @property
    def stats(self) -> TransportStats:
        return self.inner.stats

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    def send(self, data: bytes, addr: Address) -> None:
        self.inner.send(data, addr)

    async def receive_batch(self, max_count: int = DEFAULT_RECEIVE_BATCH) -> list[tuple[bytes, Address]]:
        batch = await self.inner.receive_batch(max_count)
        self.sources.extend(addr for _, addr in batch)
        return batch

    async def aclose(self) -> None:
        await self.inner.aclose()

    def asked_by(self, ip: str) -> int:
        return sum(1 for host, _ in list(self.sources) if host == ip)


@dataclass(frozen=True)
class Net:
    router: Address
    recorder: RecordingTransport
    peer: Address


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    with local_network_thread(30, seed=76, base=("127.0.76.1", 0)) as threaded:
        router, recorder = threaded.start(_serve_router, threaded.bootstrap_address)
        assert threaded.announce(7, INFO_HASH, PEER_PORT) > 0
        yield Net(router, recorder, (threaded.net.nodes[7].local_address[0], PEER_PORT))


async def _serve_router(
    bootstrap: Address, *, task_status: trio.TaskStatus[tuple[Address, RecordingTransport]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the router node on 127.0.76.100 (joined through ``bootstrap``) until cancelled."""
    recorder = RecordingTransport(await open_udp_transport("127.0.76.100", 0))
    try:
        async with open_node(transport=recorder, bootstrap=[bootstrap]) as router:
            await router.bootstrap()
            task_status.started((router.local_address, recorder))
            await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await recorder.aclose()


def _peers(capsys: pytest.CaptureFixture[str], net: Net, ip: str, *extra: str) -> tuple[int, list[dict[str, object]], str]:
    router = f"{net.router[0]}:{net.router[1]}"
    code = cli.main(["peers", INFO_HASH.hex(), "--bootstrap", router, "--bind", f"{ip}:0", "--json", *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def _peer_found(lines: list[dict[str, object]], peer: Address) -> bool:
    return any(x["event"] == "peer" and (x["ip"], x["port"]) == peer for x in lines)


def test_a_second_run_reaches_its_first_peer_without_asking_a_router(
    net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "contacts.dat"
    code, first, _ = _peers(capsys, net, "127.0.76.210", "--cache-file", str(cache))
    assert code == 0 and _peer_found(first, net.peer)
    assert net.recorder.asked_by("127.0.76.210") > 0  # a cold start needs the router
    saved = load_cached_contacts(cache)
    assert len(saved) >= 8 and net.router not in {c.addr for c, _ in saved}

    code, second, _ = _peers(capsys, net, "127.0.76.211", "--cache-file", str(cache))
    assert code == 0 and _peer_found(second, net.peer)
    assert net.recorder.asked_by("127.0.76.211") == 0  # the cached contacts sufficed
    times = [next(x for x in lines if x["event"] == "done") for lines in (first, second)]
    with capsys.disabled():
        print(
            "\nwarm start on loopback: first peer after "
            f"{times[0]['first_peer']} s (cold, via the router), {times[1]['first_peer']} s (from the cache); "
            f"queries {times[0]['queries']} / {times[1]['queries']}"
        )


def test_no_cache_starts_from_the_router_and_writes_nothing(
    net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default file (in the user data directory, a fresh one per test) is used unless --no-cache.
    code, lines, _ = _peers(capsys, net, "127.0.76.212", "--no-cache")
    assert code == 0 and _peer_found(lines, net.peer)
    assert net.recorder.asked_by("127.0.76.212") > 0
    from mainline_dht.runtime.contact_file import default_contact_file

    assert not default_contact_file().exists()
    code, lines, _ = _peers(capsys, net, "127.0.76.213")
    assert code == 0 and default_contact_file().exists()


def test_stale_cached_contacts_fall_back_to_the_router(
    net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Contacts where nobody listens any more (the discard port of unused loopback addresses).
    recent = RecentContacts()
    for i in range(20):
        recent.answered(Contact(bytes([i * 12]) * 20, (f"127.0.76.{230 + i}", 9)), 1.0, 0.001)
    cache = tmp_path / "stale.dat"
    assert save_cached_contacts(recent, cache, since=0.0, now=1.0) == 20
    code, lines, err = _peers(capsys, net, "127.0.76.214", "--cache-file", str(cache))
    assert code == 0 and _peer_found(lines, net.peer)
    assert net.recorder.asked_by("127.0.76.214") > 0
    # The file now holds the contacts that answered this run, not the stale ones.
    assert all(c.addr[1] != 9 for c, _ in load_cached_contacts(cache))


def test_a_corrupt_cache_is_reported_and_ignored(net: Net, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "corrupt.dat"
    cache.write_bytes(b"d7:versioni1e5:nodesli5eee")
    code, lines, err = _peers(capsys, net, "127.0.76.215", "--cache-file", str(cache))
    assert code == 0 and _peer_found(lines, net.peer)
    assert "ignoring the contact cache" in err
    assert len(load_cached_contacts(cache)) >= 8  # replaced by a good one
