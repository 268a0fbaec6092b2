"""``mainline-dht demo`` and the loopback network under it (:mod:`mainline_dht.runtime.localnet`).

Real UDP on 127.0.72.x only, with free ports, so these tests never collide with
a DHT client on 6881 or with other tests' address ranges.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
from collections.abc import Iterator

import pytest

from mainline_dht import cli
from mainline_dht.runtime import localnet
from mainline_dht.cli.localnet_story import DEMO_ANNOUNCERS, DEMO_PEER_PORT, demo_info_hash
from mainline_dht.runtime.localnet import loopback_addresses, loopback_ips, open_local_network


def _demo(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["demo", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_demo_finds_every_announced_peer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _demo(capsys, "--nodes", "60", "--base", "127.0.72.1", "--seed", "3")
    assert code == cli.EXIT_OK
    peers = out.splitlines()
    assert len(peers) == DEMO_ANNOUNCERS
    assert {p.split(":")[1] for p in peers} == {str(DEMO_PEER_PORT + i) for i in range(DEMO_ANNOUNCERS)}
    assert all(p.startswith("127.0.72.") for p in peers)
    assert "60 nodes up on 127.0.72.1 .. 127.0.72.60" in err
    assert f"announced infohash {demo_info_hash(3).hex()}" in err
    assert "a fresh node at 127.0.72.61:" in err  # outside the network's addresses
    assert f"{DEMO_ANNOUNCERS} peers in " in err and "replies" in err
    assert f"found {DEMO_ANNOUNCERS} of {DEMO_ANNOUNCERS} announced peers" in err


def test_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _demo(capsys, "--nodes", "40", "--base", "127.0.72.101", "--json")
    assert code == cli.EXIT_OK
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["peer"] * DEMO_ANNOUNCERS + ["done", "demo"]
    done, demo = events[-2:]
    assert done["peers"] == DEMO_ANNOUNCERS and done["timeouts"] == 0
    assert demo["nodes"] == 40 and demo["found"] == demo["announced"] == DEMO_ANNOUNCERS
    assert demo["info_hash"] == demo_info_hash(0).hex()


def test_demo_where_only_127_0_0_1_is_routed(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localnet, "can_bind", lambda ip: False)
    code, out, err = _demo(capsys, "--nodes", "30")
    assert code == cli.EXIT_OK
    assert "30 nodes up on 127.0.0.1, distinct ports" in err
    assert all(p.startswith("127.0.0.1:") for p in out.splitlines())
    assert len(out.splitlines()) == DEMO_ANNOUNCERS


def test_demo_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.72.200", 0))
        port = taken.getsockname()[1]
        code, out, err = _demo(capsys, "--nodes", "3", "--base", f"127.0.72.200:{port}")
    assert code == cli.EXIT_ERROR
    assert err.endswith(f"mainline-dht: error: cannot bind UDP 127.0.72.200:{port}: the port is in use "
                        "(by another DHT node or client?); choose another with --base IP:PORT\n")


def test_demo_info_hash_is_stable_per_seed() -> None:
    assert demo_info_hash(0) == demo_info_hash(0)
    assert demo_info_hash(0) != demo_info_hash(1)
    assert len(demo_info_hash(5)) == 20


# --- localnet -----------------------------------------------------------------------


def test_loopback_ips_skip_network_and_broadcast_octets() -> None:
    assert loopback_ips("127.0.1.253", 4) == ["127.0.1.253", "127.0.1.254", "127.0.2.1", "127.0.2.2"]


@pytest.mark.parametrize("first", ["10.0.0.1", "::1", "127.0.0.x"])
def test_loopback_ips_refuse_other_addresses(first: str) -> None:
    with pytest.raises(ValueError):
        loopback_ips(first, 1)


def test_loopback_ips_stay_inside_127_slash_8() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        loopback_ips("127.255.255.250", 10)


def test_loopback_addresses_shared_ip_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localnet, "can_bind", lambda ip: False)
    addrs, shared = loopback_addresses(3, base=("127.0.1.1", 6881))
    assert shared
    assert addrs == [("127.0.0.1", 6881), ("127.0.0.1", 0), ("127.0.0.1", 0)]


def test_loopback_addresses_distinct_ips() -> None:
    addrs, shared = loopback_addresses(3, base=("127.0.72.150", 0))
    assert not shared
    assert addrs == [("127.0.72.150", 0), ("127.0.72.151", 0), ("127.0.72.152", 0)]


async def test_open_local_network_joins_every_node() -> None:
    joined: list[tuple[int, int]] = []
    async with open_local_network(25, seed=9, base=("127.0.72.160", 0),
                                  progress=lambda d, t: joined.append((d, t))) as net:
        ips = [node.local_address[0] for node in net.nodes]
        assert ips == loopback_ips("127.0.72.160", 25)
        assert len({node.node_id for node in net.nodes}) == 25
        assert all(len(node.table) > 0 for node in net.nodes)
        assert net.unjoined == 0 and not net.shared_ip
        assert net.bootstrap_address == net.nodes[0].local_address
        assert net.spare == ("127.0.72.185", 0) and net.spare[0] not in ips
    assert joined[-1] == (25, 25) and [d for d, _ in joined] == list(range(1, 26))


async def test_open_local_network_rejects_no_nodes() -> None:
    with pytest.raises(ValueError):
        async with open_local_network(0):
            pass  # pragma: no cover


class _ClosedAfterOneLine(io.StringIO):
    """A stdout whose reader goes away after the first line, as ``| head -1`` does."""

    def write(self, text: str) -> int:
        if "\n" in self.getvalue():
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_demo_stops_quietly_when_stdout_is_closed(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = _ClosedAfterOneLine()
    monkeypatch.setattr(sys, "stdout", stdout)
    code = cli.main(["demo", "--nodes", "20", "--base", "127.0.72.230", "--json"])
    assert code == cli.EXIT_BROKEN_PIPE
    assert json.loads(stdout.getvalue())["event"] == "peer"
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" not in err
