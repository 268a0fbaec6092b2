"""The ``mainline-dht`` command line, run as a user runs it.

Most tests call :func:`mainline_dht.cli.main` in-process against a small DHT of
our nodes on 127.0.71.x, run by :func:`open_local_network` in a thread of its
own (``main`` starts its own trio run). The commands that run until a signal
(``node``, ``testnet``, an interrupted ``peers``) run as subprocesses.

Network rules: loopback only (127.0.70.x node, 127.0.71.x peers/ping,
127.0.73.x testnet); the default bootstrap routers are never contacted: the
test that uses them replaces the resolver, so no name resolves.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

import mainline_dht
from mainline_dht import cli
from mainline_dht.runtime import node as node_module
from mainline_dht.wire.contact import Address
from mainline_dht.runtime.node import DEFAULT_BOOTSTRAP
from mainline_dht.runtime.state_file import load_contacts

from netthread import local_network_thread

REPO = Path(__file__).resolve().parent.parent
#: The infohash one node of the test network announces, and the port it announces.
INFO_HASH = bytes.fromhex("c0ffee00" * 5)
PEER_PORT = 4321
#: Nobody listens here (the discard port on an unused loopback address).
DEAD = "127.0.71.250:9"


@dataclass(frozen=True)
class Net:
    bootstrap: Address
    first_id: bytes
    peer: Address


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    """A 30-node DHT on 127.0.71.1-30 (free ports), one node announcing INFO_HASH."""
    with local_network_thread(30, seed=71, base=("127.0.71.1", 0)) as threaded:
        assert threaded.announce(5, INFO_HASH, PEER_PORT) > 0
        nodes = threaded.net.nodes
        yield Net(threaded.bootstrap_address, nodes[0].node_id, (nodes[5].local_address[0], PEER_PORT))


def _addr(a: Address) -> str:
    return f"{a[0]}:{a[1]}"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _spawn(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mainline_dht", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )


def _read_line(stream: IO[str] | None, timeout: float) -> str:
    """One line from a subprocess pipe, or fail after ``timeout`` seconds."""
    assert stream is not None
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return stream.readline()


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[int, str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"did not stop on signal {sig}: {err}") from None
    return proc.returncode, out, err


# --- help, version, parsing ---------------------------------------------------------


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("peers", "node", "ping", "demo", "testnet"):
        assert command in out
    assert "--version" in out and "--verbose" in out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("peers", ["TARGET", "--bootstrap", "--bind", "--timeout", "--announce", "--announce-implied", "--json",
                   "Exit status"]),
        ("node", ["--bind", "0.0.0.0:6881", "--bootstrap", "--state", "--no-state", "--json"]),
        ("ping", ["HOST:PORT", "--timeout", "--json"]),
        ("demo", ["--nodes", "--seed", "--base", "--json"]),
        ("testnet", ["--nodes", "--seed", "--base"]),
    ],
)
def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str], command: str, expected: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in expected:
        assert word in out, word
    assert "--status-interval" not in out  # a testing knob, hidden


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"mainline-dht {mainline_dht.__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EXIT_ERROR
    assert "COMMAND" in capsys.readouterr().err


def test_python_dash_m_help() -> None:
    done = subprocess.run([sys.executable, "-m", "mainline_dht", "--help"], capture_output=True, text=True,
                          env=_env(), cwd=REPO, timeout=30)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: mainline-dht")


def test_verbose_is_accepted_before_and_after_the_command() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["-v", "ping", "127.0.0.1:1"]).verbose == 1
    args = parser.parse_args(["ping", "127.0.0.1:1", "-v"])
    assert args.verbose + args.sub_verbose == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["peers", "abc", "--bootstrap", "nohostport"], "expected HOST:PORT"),
        (["peers", "abc", "--timeout", "-1"], "positive number"),
        (["peers", "abc", "--announce", "0"], "port must be 1-65535"),
        (["peers", "abc", "--announce", "1", "--announce-implied"], "not allowed with"),
        (["ping", "127.0.0.1:0"], "port must be 1-65535"),
        (["demo", "--nodes", "1"], "between 2 and 20000"),
        (["demo", "--base", "10.0.0.1"], "not a loopback address"),
        (["node", "--state", "x", "--no-state"], "not allowed with"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --- peers --------------------------------------------------------------------------


def test_peers_prints_each_peer_and_a_summary(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "peers", INFO_HASH.hex(), "--bootstrap", _addr(net.bootstrap))
    assert code == cli.EXIT_OK
    assert out.splitlines() == [_addr(net.peer)]
    assert f"looking up peers for {INFO_HASH.hex()} via {_addr(net.bootstrap)}" in err
    assert "1 peer in " in err and "replies" in err


def test_peers_accepts_a_magnet_link(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    magnet = f"magnet:?xt=urn:btih:{INFO_HASH.hex().upper()}&dn=test"
    code, out, _ = _run(capsys, "peers", magnet, "--bootstrap", _addr(net.bootstrap))
    assert code == cli.EXIT_OK
    assert _addr(net.peer) in out


def test_peers_json_lines(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "peers", INFO_HASH.hex(), "--bootstrap", _addr(net.bootstrap), "--json")
    assert code == cli.EXIT_OK
    assert err == ""  # nothing but JSON, and that on stdout
    events = _json_lines(out)
    peer, done = events
    assert peer["event"] == "peer" and (peer["ip"], peer["port"]) == net.peer
    assert isinstance(peer["elapsed"], float)
    assert done["event"] == "done"
    assert {"peers", "queries", "replies", "timeouts", "elapsed", "first_peer", "announced"} <= done.keys()
    assert done["peers"] == 1 and done["announced"] is None and done["timed_out"] is False
    assert done["replies"] > 0 and done["queries"] >= done["replies"]  # type: ignore[operator]
    assert 0 <= done["first_peer"] <= done["elapsed"]  # type: ignore[operator]
    assert peer["elapsed"] <= done["elapsed"]  # type: ignore[operator]


def test_peers_without_peers_exits_1(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "peers", "11" * 20, "--bootstrap", _addr(net.bootstrap))
    assert code == cli.EXIT_NOT_FOUND
    assert out == ""
    assert "no peers found" in err


def test_peers_without_peers_json(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "peers", "12" * 20, "--bootstrap", _addr(net.bootstrap), "--json")
    assert code == cli.EXIT_NOT_FOUND
    [done] = _json_lines(out)
    assert done["event"] == "done" and done["peers"] == 0 and done["first_peer"] is None


def test_peers_announce_then_found(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    target = "13" * 20
    code, out, _ = _run(capsys, "peers", target, "--bootstrap", _addr(net.bootstrap), "--bind", "127.0.71.201:0",
                        "--announce", "5555", "--json")
    assert code == cli.EXIT_NOT_FOUND  # nobody had announced before us
    [done] = _json_lines(out)
    assert done["announced"] and done["announced"] > 0  # type: ignore[operator]
    code, out, _ = _run(capsys, "peers", target, "--bootstrap", _addr(net.bootstrap))
    assert code == cli.EXIT_OK
    assert "127.0.71.201:5555" in out.splitlines()


def test_peers_announce_implied_uses_our_udp_port(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    target = "14" * 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a free port to bind to next
        s.bind(("127.0.71.202", 0))
        port = s.getsockname()[1]
    code, _, err = _run(capsys, "peers", target, "--bootstrap", _addr(net.bootstrap),
                        "--bind", f"127.0.71.202:{port}", "--announce-implied")
    assert code == cli.EXIT_NOT_FOUND
    assert "announce accepted by" in err
    code, out, _ = _run(capsys, "peers", target, "--bootstrap", _addr(net.bootstrap))
    assert f"127.0.71.202:{port}" in out.splitlines()


def test_peers_bad_target(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "peers", "not-a-hash", "--bootstrap", DEAD)
    assert code == cli.EXIT_ERROR
    assert out == ""
    assert err.startswith("mainline-dht: error: not an infohash or magnet link")
    assert len(err.splitlines()) == 1


def test_peers_nothing_answers(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    resolved: list[Address] = []
    real = node_module.resolve_address

    async def recording(addr: Address, **kw: Any) -> Address:
        resolved.append(addr)
        return await real(addr, **kw)

    monkeypatch.setattr(node_module, "resolve_address", recording)
    code, out, err = _run(capsys, "peers", INFO_HASH.hex(), "--bootstrap", DEAD, "--timeout", "1", "--json")
    assert code == cli.EXIT_ERROR
    assert out == ""
    assert "mainline-dht: error: no DHT node answered" in err
    assert DEAD in err and "--bootstrap HOST:PORT" in err
    # --bootstrap replaces the default routers: they are neither resolved nor named.
    assert set(resolved) == {("127.0.71.250", 9)}
    assert "router.bittorrent.com" not in err


def test_default_bootstrap_routers() -> None:
    assert DEFAULT_BOOTSTRAP == (
        ("dht.libtorrent.org", 25401),
        ("dht.transmissionbt.com", 6881),
        ("router.bittorrent.com", 6881),
        ("router.utorrent.com", 6881),
    )


def test_peers_offline_with_default_routers(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[Address, object]] = []

    async def no_dns(addr: Address, *, family: object = None) -> Address:
        asked.append((addr, family))
        raise OSError(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(node_module, "resolve_address", no_dns)
    code, out, err = _run(capsys, "peers", INFO_HASH.hex())
    assert code == cli.EXIT_ERROR
    assert out == ""
    # BEP 32: each default router is asked for its A and its AAAA record.
    assert sorted(asked) == sorted((a, f) for a in DEFAULT_BOOTSTRAP for f in (4, 6))
    assert "cannot resolve any bootstrap node" in err and "Temporary failure in name resolution" in err
    for host, _ in DEFAULT_BOOTSTRAP:
        assert host in err
    assert "--bootstrap HOST:PORT" in err


def test_peers_port_in_use(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "peers", INFO_HASH.hex(), "--bootstrap", _addr(net.bootstrap),
                        "--bind", _addr(net.bootstrap))
    assert code == cli.EXIT_ERROR
    assert err == f"mainline-dht: error: cannot bind UDP {_addr(net.bootstrap)}: the port is in use " \
                  "(by another DHT node or client?); choose another with --bind IP:PORT\n"


def test_peers_ctrl_c_prints_the_summary() -> None:
    proc = _spawn("peers", INFO_HASH.hex(), "--bootstrap", DEAD)
    assert "looking up peers" in _read_line(proc.stderr, 20)
    code, out, err = _stop(proc)
    assert code == cli.EXIT_INTERRUPTED
    assert out == ""
    assert "no peers found" in err and err.rstrip().endswith("; interrupted")
    assert "Traceback" not in err


# --- ping ---------------------------------------------------------------------------


def test_ping(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "ping", _addr(net.bootstrap))
    assert code == cli.EXIT_OK
    assert out.startswith(f"{_addr(net.bootstrap)}: id {net.first_id.hex()}, version MD ")
    assert " rtt " in out and "sees us as 127." in out


def test_ping_json(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "ping", _addr(net.bootstrap), "--json")
    assert code == cli.EXIT_OK
    [reply] = _json_lines(out)
    assert reply["id"] == net.first_id.hex()
    assert reply["address"] == _addr(net.bootstrap)
    assert reply["client"] == "MD" and isinstance(reply["version"], str)
    assert isinstance(reply["rtt"], float) and reply["rtt"] > 0


def test_ping_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "ping", DEAD, "--timeout", "0.3")
    assert code == cli.EXIT_ERROR
    assert out == ""
    assert err == f"mainline-dht: error: no answer from {DEAD} within 0.3 s " \
                  "(is a DHT node listening there, and is UDP let through?)\n"


def test_ping_unresolvable(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_dns(addr: Address, **_: object) -> Address:
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(node_module, "resolve_address", no_dns)
    code, _, err = _run(capsys, "ping", "nowhere.invalid:6881")
    assert code == cli.EXIT_ERROR
    assert err == "mainline-dht: error: cannot resolve nowhere.invalid: Name or service not known\n"


# --- node ---------------------------------------------------------------------------


def test_node_runs_until_ctrl_c_and_saves_its_table(net: Net, tmp_path: Path) -> None:
    state = tmp_path / "sub" / "table.dat"
    proc = _spawn("node", "--bind", "127.0.70.1:0", "--bootstrap", _addr(net.bootstrap), "--state", str(state),
                  "--status-interval", "0.2")
    banner = _read_line(proc.stdout, 20)
    assert banner.startswith("node ") and "on UDP 127.0.70.1:" in banner and str(state) in banner
    deadline = time.monotonic() + 20
    while True:  # status lines until the node has joined
        line = _read_line(proc.stdout, max(0.1, deadline - time.monotonic()))
        assert " contact" in line and "queries received" in line, line
        if "not joined" not in line and not line.split()[1] == "0":
            break
    code, out, err = _stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
    contacts = int(out.strip().splitlines()[-1].split()[1])
    assert out.strip().endswith(f"saved to {state}")
    _, saved = load_contacts(state)
    assert len(saved) >= contacts > 0


def test_node_json_and_sigterm(net: Net, tmp_path: Path) -> None:
    proc = _spawn("node", "--bind", "127.0.70.2:0", "--bootstrap", _addr(net.bootstrap), "--no-state", "--json",
                  "--status-interval", "0.2")
    started = json.loads(_read_line(proc.stdout, 20))
    assert started["event"] == "started" and started["state"] is None
    assert str(started["address"]).startswith("127.0.70.2:")
    status = json.loads(_read_line(proc.stdout, 20))
    assert status["event"] == "status" and "table_size" in status
    # A loopback address is exempt from BEP 42: the node keeps its ID.
    assert status["id"] == started["id"] and status["external_ip"] in (None, "127.0.70.2")
    code, out, _ = _stop(proc, signal.SIGTERM)
    assert code == 0
    assert _json_lines(out)[-1]["event"] == "stopped"


def test_node_port_in_use(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "node", "--bind", _addr(net.bootstrap), "--no-state")
    assert code == cli.EXIT_ERROR
    assert "cannot bind UDP" in err and "in use" in err


# --- testnet ------------------------------------------------------------------------


def test_testnet_serves_other_commands(capsys: pytest.CaptureFixture[str]) -> None:
    proc = _spawn("testnet", "--nodes", "20", "--base", "127.0.73.1:0")
    try:
        address = _read_line(proc.stdout, 30).strip()
        assert address.startswith("127.0.73.1:")
        code, out, _ = _run(capsys, "ping", address)
        assert code == cli.EXIT_OK and out.startswith(address)
        code, _, err = _run(capsys, "peers", "15" * 20, "--bootstrap", address, "--announce", "7777")
        assert code == cli.EXIT_NOT_FOUND and "announce accepted by" in err
        code, out, _ = _run(capsys, "peers", "15" * 20, "--bootstrap", address)
        assert code == cli.EXIT_OK and out.splitlines() and out.split(":")[-1].strip() == "7777"
    finally:
        code, _, err = _stop(proc)
    assert code == 0, err
    assert "Join with --bootstrap " + address in err and err.rstrip().endswith("stopped")


# --- terminal helpers ---------------------------------------------------------------


def test_status_line_overwrites_itself_and_clears() -> None:
    stream = io.StringIO()
    status = cli.Status(stream, enabled=True)
    status.show("asked 10 nodes")
    status.show("asked 9")
    status.clear()
    assert stream.getvalue() == "\rasked 10 nodes" + "\rasked 9" + " " * 7 + "\r" + " " * 7 + "\r"


def test_status_line_disabled_writes_nothing() -> None:
    stream = io.StringIO()
    status = cli.Status(stream, enabled=False)
    status.show("x")
    status.clear()
    assert stream.getvalue() == ""


@pytest.mark.parametrize(("seconds", "text"), [(0.0023, "2.3 ms"), (4.567, "4.57 s"), (312.4, "312 s")])
def test_format_seconds(seconds: float, text: str) -> None:
    assert cli.format_seconds(seconds) == text
