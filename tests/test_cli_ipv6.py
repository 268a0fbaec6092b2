"""The command line over IPv6 (BEP 32): a network of our nodes on [::1], one port each.

``ping [::1]:PORT``, ``peers`` printing ``[addr]:port`` (JSON keeps ``ip`` and
``port``), repeatable ``--bind``, the ``node`` status line with both overlays,
and ``testnet --ipv6``. Real UDP on loopback only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import pytest

from mainline_dht import cli
from mainline_dht.wire.contact import Address

from netthread import local_network_thread
from test_cli import _read_line, _spawn, _stop

INFO_HASH = hashlib.sha1(b"test_cli_ipv6").digest()
PEER_PORT = 6161


@dataclass(frozen=True)
class Net6:
    bootstrap: Address
    first_id: bytes
    peer: Address


@pytest.fixture(scope="module")
def net6() -> Iterator[Net6]:
    """A 20-node IPv6 DHT on [::1] (free ports), one node announcing INFO_HASH."""
    with local_network_thread(20, seed=66, base=("127.0.1.1", 0), ipv6=True) as threaded:
        nodes = threaded.net.nodes
        assert all(n.local_address[0] == "::1" for n in nodes)
        assert threaded.announce(5, INFO_HASH, PEER_PORT) > 0
        yield Net6(threaded.bootstrap_address, nodes[0].node_id, ("::1", PEER_PORT))


def _v6(a: Address) -> str:
    return f"[{a[0]}]:{a[1]}"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_ping_an_ipv6_node(net6: Net6, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "ping", _v6(net6.bootstrap), "--json")
    assert code == cli.EXIT_OK
    result = json.loads(out)
    assert result["id"] == net6.first_id.hex() and result["address"] == _v6(net6.bootstrap)
    assert str(result["ip"]).startswith("[::1]:")
    # With only an IPv4 socket the node says it cannot reach IPv6.
    code, _, err = _run(capsys, "ping", "--bind", "127.0.0.1:0", _v6(net6.bootstrap))
    assert code == cli.EXIT_ERROR and "no IPv6 socket" in err


def test_peers_over_ipv6_prints_bracketed_addresses(net6: Net6, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "peers", INFO_HASH.hex(), "--bootstrap", _v6(net6.bootstrap), "--timeout", "20")
    assert code == cli.EXIT_OK
    assert out.splitlines() == [_v6(net6.peer)]
    code, out, _ = _run(capsys, "peers", INFO_HASH.hex(), "--bootstrap", _v6(net6.bootstrap), "--json",
                        "--bind", "[::1]:0", "--bind", "127.0.0.1:0")
    assert code == cli.EXIT_OK
    events = [json.loads(line) for line in out.splitlines()]
    peers = [e for e in events if e["event"] == "peer"]
    assert [(e["ip"], e["port"]) for e in peers] == [net6.peer]
    done = events[-1]
    assert done["event"] == "done" and done["replies"] > 0
    # Both overlays looked; only the IPv6 one had the peer (the network is IPv6 only).
    assert set(done["families"]) == {"4", "6"}
    assert done["families"]["6"]["peers"] == 1 and done["families"]["6"]["replies"] > 0
    assert done["families"]["4"]["peers"] == 0


def test_bind_takes_one_address_per_family(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "ping", "--bind", "127.0.0.1:0", "--bind", "127.0.0.2:0", "[::1]:9")
    assert code == cli.EXIT_ERROR and "one address per family" in err


def test_node_status_shows_both_overlays(net6: Net6) -> None:
    proc = _spawn("node", "--bind", "127.0.67.9:0", "--bind", "[::1]:0", "--bootstrap", _v6(net6.bootstrap),
                  "--no-state", "--status-interval", "0.2")
    banner = _read_line(proc.stdout, 20)
    assert "on UDP 127.0.67.9:" in banner and " and [::1]:" in banner
    line = ""
    for _ in range(100):  # status lines until the IPv6 overlay has joined
        line = _read_line(proc.stdout, 20)
        if "not joined" not in line and "IPv6 0 contacts" not in line:
            break
    assert "IPv4 " in line and "IPv6 " in line and "IPv6 0 contacts" not in line, line
    code, _, _ = _stop(proc)
    assert code == cli.EXIT_OK


def test_testnet_ipv6_prints_a_bracketed_bootstrap_address() -> None:
    proc = _spawn("testnet", "--ipv6", "--nodes", "5", "--base", "127.0.1.1:0")
    first = _read_line(proc.stdout, 30).strip()
    assert first.startswith("[::1]:") and int(first.rsplit(":", 1)[1]) > 0
    code, _, err = _stop(proc)
    assert code == cli.EXIT_OK and "--bootstrap [::1]:" in err


def test_demo_ipv6_finds_every_announced_peer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "demo", "--ipv6", "--nodes", "20", "--json")
    assert code == cli.EXIT_OK, err
    events = [json.loads(line) for line in out.splitlines()]
    peers = [e for e in events if e["event"] == "peer"]
    assert peers and all(e["ip"] == "::1" for e in peers)
    summary = events[-1]
    assert summary["event"] == "demo" and summary["found"] == summary["announced"] > 0
    assert "on ::1, distinct ports" in err


def test_node_json_reports_each_overlay(net6: Net6) -> None:
    proc = _spawn("node", "--bind", "127.0.67.10:0", "--bind", "[::1]:0", "--bootstrap", _v6(net6.bootstrap),
                  "--no-state", "--json", "--status-interval", "0.2")
    started = json.loads(_read_line(proc.stdout, 20))
    assert started["event"] == "started" and len(started["addresses"]) == 2
    assert started["addresses"][0].startswith("127.0.67.10:") and started["addresses"][1].startswith("[::1]:")
    status: dict[str, object] = {}
    for _ in range(100):
        status = json.loads(_read_line(proc.stdout, 20))
        overlays = cast("list[dict[str, object]]", status["overlays"])
        if overlays[1]["table_size"]:
            break
    overlays = cast("list[dict[str, object]]", status["overlays"])
    assert [o["family"] for o in overlays] == [4, 6]
    assert cast(int, overlays[1]["table_size"]) > 0 and overlays[1]["address"] == started["addresses"][1]
    assert status["id"] == overlays[0]["id"]
    code, _, _ = _stop(proc)
    assert code == cli.EXIT_OK
