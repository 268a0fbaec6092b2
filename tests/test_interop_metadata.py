"""``mainline-dht metadata`` against libtorrent seeds on loopback (BEP 9/10 interop).

libtorrent sessions (tools/libtorrent_seed.py) seed torrents this module makes:
one v1, one hybrid (v1 + v2) and one v2-only, announced in the sessions' DHT.
Our command line finds them through that DHT, fetches the info dictionary over
TCP from libtorrent's ut_metadata, and writes a .torrent that libtorrent loads.
The hybrid and v2 torrents are fetched from ``btmh`` magnets, so the dictionary
is checked with SHA-256.

Needs libtorrent (a test dependency): without it these tests fail, they do not skip.
Network rules: loopback only (127.0.86.x), free ports.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mainline_dht import cli
from mainline_dht.wire import bencode
from libtorrent_net import LibtorrentSwarm, import_libtorrent
from libtorrent_seed import MadeTorrent, make_torrent, seed, start_seed_swarm, wait_announced

pytestmark = [pytest.mark.interop]

SESSIONS = 8
ASKER = 7  # the session that checks the announces landed


@dataclass
class Seeded:
    swarm: LibtorrentSwarm
    v1: MadeTorrent
    hybrid: MadeTorrent
    v2: MadeTorrent

    @property
    def bootstrap(self) -> str:
        return "%s:%d" % self.swarm.addresses[0]


def _files(rng: random.Random, sizes: dict[str, int]) -> dict[str, bytes]:
    return {path: rng.randbytes(n) for path, n in sizes.items()}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    import_libtorrent()  # fails loudly when missing
    root = tmp_path_factory.mktemp("seeds")
    rng = random.Random(76)
    v1 = make_torrent(root, "plain v1", _files(rng, {"a.txt": 5000, "docs/b.bin": 40_000, "c.dat": 70_000}))
    hybrid = make_torrent(root, "hybrid \u00e9t\u00e9", _files(rng, {"x/one.bin": 30_000, "two.bin": 20_000}),
                          kind="hybrid")
    v2 = make_torrent(root, "only v2", _files(rng, {"p.bin": 17_000, "q/r.bin": 33_000}), kind="v2")
    with start_seed_swarm(SESSIONS, first_ip="127.0.86.1", seed=76) as swarm:
        swarm.wait_for_tables(min_nodes=SESSIONS - 1, timeout=10.0)
        v1_seeds = [seed(swarm, 1, v1), seed(swarm, 2, v1)]
        hybrid_seed = [seed(swarm, 3, hybrid)]
        v2_seed = [seed(swarm, 4, v2)]
        wait_announced(swarm, ASKER, v1.info_hash, 2, handles=v1_seeds)
        wait_announced(swarm, ASKER, hybrid.info_hash, 1, handles=hybrid_seed)
        assert hybrid.sha256 is not None and v2.sha256 is not None
        wait_announced(swarm, ASKER, hybrid.sha256[:20], 1, handles=hybrid_seed)
        wait_announced(swarm, ASKER, v2.sha256[:20], 1, handles=v2_seed)
        yield Seeded(swarm, v1, hybrid, v2)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, object]]]:
    code = cli.main(["metadata", *argv, "--json", "--timeout", "30"])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def _expect(torrent: MadeTorrent, event: dict[str, object]) -> None:
    assert event["event"] == "metadata"
    assert event["name"] == torrent.name
    files = event["files"]
    assert isinstance(files, list)  # in the torrent's order, which is libtorrent's choice
    assert sorted(files, key=lambda f: f["path"]) == [{"path": p, "length": n} for p, n in torrent.files]
    assert event["length"] == sum(n for _, n in torrent.files)


def test_v1_metadata_from_libtorrent_and_a_torrent_file_libtorrent_loads(
        seeded: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "v1.torrent"
    code, events = _run(capsys, seeded.v1.info_hash.hex(), "--bootstrap", seeded.bootstrap, "--save", str(saved))
    assert code == 0, events
    assert [e["event"] for e in events] == ["metadata", "done"]
    _expect(seeded.v1, events[0])
    assert events[0]["infohash"] == seeded.v1.info_hash.hex() and events[0]["version"] == 1
    assert events[0]["from"] in {"%s:%d" % seeded.swarm.addresses[i] for i in (1, 2)}
    lt = import_libtorrent()
    ti = lt.torrent_info(str(saved))
    assert bytes.fromhex(str(ti.info_hashes().v1)) == seeded.v1.info_hash
    assert ti.name() == seeded.v1.name and ti.num_files() == 3
    # no tracker; the seeds' addresses as BEP 5 nodes, which libtorrent reads
    atp = lt.load_torrent_file(str(saved))
    assert not atp.trackers
    assert {(str(h), int(p)) for h, p in atp.dht_nodes} == {seeded.swarm.addresses[i] for i in (1, 2)}


def test_hybrid_metadata_from_a_btmh_magnet_is_checked_with_sha256(
        seeded: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "hybrid.torrent"
    code, events = _run(capsys, seeded.hybrid.magnet_btmh, "--bootstrap", seeded.bootstrap, "--save", str(saved))
    assert code == 0, events
    _expect(seeded.hybrid, events[0])
    assert events[0]["version"] == 3
    lt = import_libtorrent()
    ti = lt.torrent_info(str(saved))
    assert bytes.fromhex(str(ti.info_hashes().v2)) == seeded.hybrid.sha256
    assert bytes.fromhex(str(ti.info_hashes().v1)) == seeded.hybrid.info_hash
    # and by its v1 infohash too
    code, events = _run(capsys, seeded.hybrid.info_hash.hex(), "--bootstrap", seeded.bootstrap)
    assert code == 0 and events[0]["name"] == seeded.hybrid.name


def test_v2_only_metadata_from_a_btmh_magnet(seeded: Seeded, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "v2.torrent"
    code, events = _run(capsys, seeded.v2.magnet_btmh, "--bootstrap", seeded.bootstrap, "--save", str(saved))
    assert code == 0, events
    _expect(seeded.v2, events[0])
    assert events[0]["version"] == 2
    lt = import_libtorrent()
    ti = lt.torrent_info(str(saved))
    assert bytes.fromhex(str(ti.info_hashes().v2)) == seeded.v2.sha256
    raw = saved.read_bytes()
    info = bencode.decode_untrusted(raw, max_size=len(raw))[b"info"]
    assert hashlib.sha256(bencode.encode(info)).digest() == seeded.v2.sha256


def test_a_wrong_sha256_is_never_accepted(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    """A btmh whose first 20 bytes find the v2 seed, but whose full hash is not the dictionary's."""
    assert seeded.v2.sha256 is not None
    forged = seeded.v2.sha256[:20] + bytes(12)
    code, events = _run(capsys, f"magnet:?xt=urn:btmh:1220{forged.hex()}", "--bootstrap", seeded.bootstrap)
    assert code == 1 and events[-1]["found"] is False
    assert events[-1]["dropped"]  # the seed sent a dictionary that failed the check
