#!/usr/bin/env python3
"""Capture real KRPC datagrams exchanged with libtorrent on loopback, as test fixtures.

Starts a small dual-stack libtorrent swarm (127.0.1.x plus [::1]) and then:

(a) *queries* libtorrent node 0 from a plain UDP socket on 127.0.2.1:6882 with every
    query type, valid and invalid, saving each raw request as
    ``query_<name>.bin`` and the raw answer as ``response_<name>.bin`` or
    ``error_<code>_<name>.bin``;
(b) *serves* libtorrent from a second socket on 127.0.2.2:6882: the swarm is told
    about it (``add_dht_node``, and a fresh session uses it as its router), we
    answer minimally but validly, and save the first query of each kind as
    ``incoming_query_<kind>.bin``.

Every file is described in ``<out>/index.json``. Nothing leaves 127.0.0.0/8.

Usage (from the repository root)::

    python tools/capture_fixtures.py [--out fixtures/libtorrent] [--port 6881]

Node IDs, tokens and transaction IDs chosen by libtorrent are random, so each
run writes different bytes with the same structure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mainline_dht.wire.bencode import decode_untrusted, encode  # noqa: E402
from mainline_dht.errors import DecodeError  # noqa: E402
from libtorrent_net import LibtorrentSwarm, start_swarm  # noqa: E402

Address = tuple[str, int]

QUERIER_IP = "127.0.2.1"
RESPONDER_IP = "127.0.2.2"
QUERIER_ID = hashlib.sha1(b"mainline_dht capture_fixtures querier").digest()
RESPONDER_ID = hashlib.sha1(b"mainline_dht capture_fixtures responder").digest()
IH_WITH_PEERS = hashlib.sha1(b"mainline_dht fixture: infohash with peers").digest()
IH_UNKNOWN = hashlib.sha1(b"mainline_dht fixture: infohash nobody has").digest()
IH_INCOMING = hashlib.sha1(b"mainline_dht fixture: infohash for incoming announce").digest()
TARGET = hashlib.sha1(b"mainline_dht fixture: find_node target").digest()
RESPONDER_TOKEN = b"tok1"
REPLY_TIMEOUT = 2.0  # seconds


def compact(addr: Address) -> bytes:
    """BEP 5 compact peer info (IPv4: 6 bytes, IPv6: 18 bytes)."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    return socket.inet_pton(family, addr[0]) + addr[1].to_bytes(2, "big")


class Recorder:
    """Writes fixture files and remembers a description of each."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.index: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def save(self, name: str, data: bytes, description: str, sender: str) -> None:
        with self.lock:
            (self.out / name).write_bytes(data)
            entry: dict[str, Any] = {"description": description, "sender": sender, "bytes": len(data)}
            try:
                msg = decode_untrusted(data)
                entry["strict_decode"] = "ok"
            except DecodeError as exc:
                msg = None
                entry["strict_decode"] = f"rejected: {exc}"
            if isinstance(msg, dict):
                entry["keys"] = sorted(k.decode("latin-1") for k in msg)
                for inner in (b"a", b"r"):
                    if isinstance(msg.get(inner), dict):
                        entry[f"{inner.decode()}_keys"] = sorted(k.decode("latin-1") for k in msg[inner])
                if isinstance(msg.get(b"e"), list):
                    entry["e"] = [x.decode("latin-1") if isinstance(x, bytes) else x for x in msg[b"e"]]
            self.index[name] = entry

    def write_index(self) -> None:
        (self.out / "index.json").write_text(json.dumps(self.index, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------
# (a) we query libtorrent
# ---------------------------------------------------------------------------


def query_cases(token_holder: dict[str, bytes]) -> list[tuple[str, str, Any]]:
    """Return (name, description, message or callable building it) for part (a)."""

    def q(method: bytes, args: dict[bytes, Any], **top: Any) -> dict[bytes, Any]:
        msg: dict[bytes, Any] = {b"y": b"q", b"q": method, b"a": args}
        for k, v in top.items():
            msg[k.encode()] = v
        return msg

    me = {b"id": QUERIER_ID}
    return [
        ("ping", "ping", q(b"ping", dict(me))),
        ("ping_read_only", "ping with BEP 43 ro=1", q(b"ping", dict(me), ro=1)),
        ("find_node", "find_node for a random target", q(b"find_node", {**me, b"target": TARGET})),
        (
            "find_node_want_n4_n6",
            "find_node with BEP 32 want=[n4, n6]",
            q(b"find_node", {**me, b"target": TARGET, b"want": [b"n4", b"n6"]}),
        ),
        ("get_peers_nodes", "get_peers for an infohash nobody announced", q(b"get_peers", {**me, b"info_hash": IH_UNKNOWN})),
        ("get_peers_values", "get_peers for an infohash three peers announced", q(b"get_peers", {**me, b"info_hash": IH_WITH_PEERS})),
        (
            "get_peers_want_n4_n6",
            "get_peers with want=[n4, n6]",
            q(b"get_peers", {**me, b"info_hash": IH_UNKNOWN, b"want": [b"n4", b"n6"]}),
        ),
        (
            "get_peers_scrape",
            "get_peers with BEP 33 scrape=1 for the announced infohash",
            q(b"get_peers", {**me, b"info_hash": IH_WITH_PEERS, b"scrape": 1}),
        ),
        (
            "announce_peer",
            "announce_peer with the token from get_peers_values",
            lambda: q(
                b"announce_peer",
                {**me, b"info_hash": IH_WITH_PEERS, b"port": 51413, b"token": token_holder["token"]},
            ),
        ),
        (
            "announce_peer_implied_port",
            "announce_peer with implied_port=1",
            lambda: q(
                b"announce_peer",
                {**me, b"info_hash": IH_WITH_PEERS, b"port": 1, b"implied_port": 1, b"token": token_holder["token"]},
            ),
        ),
        (
            "announce_peer_bad_token",
            "announce_peer with a token libtorrent never issued",
            q(b"announce_peer", {**me, b"info_hash": IH_WITH_PEERS, b"port": 51413, b"token": b"nope"}),
        ),
        (
            "announce_peer_missing_token",
            "announce_peer without a token",
            q(b"announce_peer", {**me, b"info_hash": IH_WITH_PEERS, b"port": 51413}),
        ),
        ("sample_infohashes", "BEP 51 sample_infohashes", q(b"sample_infohashes", {**me, b"target": TARGET})),
        ("unknown_method", "an unknown method with only an id", q(b"frobnicate", dict(me))),
        (
            "unknown_method_with_target",
            "an unknown method carrying a target (libtorrent answers like find_node)",
            q(b"frobnicate", {**me, b"target": TARGET}),
        ),
        (
            "unknown_method_with_info_hash",
            "an unknown method carrying an info_hash (libtorrent answers like get_peers)",
            q(b"frobnicate", {**me, b"info_hash": IH_WITH_PEERS}),
        ),
        ("get_peers_missing_info_hash", "get_peers without info_hash", q(b"get_peers", dict(me))),
        (
            "get_peers_short_info_hash",
            "get_peers with a 19-byte info_hash",
            q(b"get_peers", {**me, b"info_hash": IH_UNKNOWN[:19]}),
        ),
        ("find_node_missing_target", "find_node without target", q(b"find_node", dict(me))),
        ("ping_missing_id", "ping whose a dict has no id", q(b"ping", {})),
        ("ping_short_id", "ping with a 19-byte id", q(b"ping", {b"id": QUERIER_ID[:19]})),
        ("ping_missing_a", "ping without the a dict", {b"y": b"q", b"q": b"ping"}),
        ("ping_a_not_dict", "ping whose a is a list", {b"y": b"q", b"q": b"ping", b"a": [QUERIER_ID]}),
        ("query_missing_q", "y=q without a method name", {b"y": b"q", b"a": dict(me)}),
        ("missing_y", "a ping without y", {b"q": b"ping", b"a": dict(me)}),
        ("get_immutable", "BEP 44 get for an item nobody stored", q(b"get", {**me, b"target": TARGET})),
    ]


def run_queries(sock: socket.socket, target: Address, rec: Recorder) -> list[str]:
    """Part (a): send every case to ``target``, save requests and replies."""
    token_holder: dict[str, bytes] = {}
    notes: list[str] = []
    for n, (name, description, build) in enumerate(query_cases(token_holder)):
        msg = build() if callable(build) else build
        tid = n.to_bytes(2, "big")
        msg[b"t"] = tid
        data = encode(msg)
        sock.sendto(data, target)
        rec.save(f"query_{name}.bin", data, f"sent by us: {description}", "us")
        reply = receive_reply(sock, target, tid)
        if reply is None:
            notes.append(f"{name}: no reply")
            rec.index[f"query_{name}.bin"]["reply"] = None
            continue
        decoded = decode_untrusted(reply)
        if decoded.get(b"y") == b"e":
            code = decoded[b"e"][0]
            out = f"error_{code}_{name}.bin"
        else:
            out = f"response_{name}.bin"
            token = decoded.get(b"r", {}).get(b"token")
            if name == "get_peers_values" and token:
                token_holder["token"] = token
        rec.save(out, reply, f"libtorrent's reply to query_{name}.bin ({description})", "libtorrent")
        rec.index[f"query_{name}.bin"]["reply"] = out
        notes.append(f"{name}: {out}")
    return notes


def receive_reply(sock: socket.socket, source: Address, tid: bytes) -> bytes | None:
    deadline = time.monotonic() + REPLY_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data, addr = sock.recvfrom(65536)
        except TimeoutError:
            return None
        if addr[:2] != source:
            continue
        try:
            msg = decode_untrusted(data)
        except DecodeError:
            return data
        if isinstance(msg, dict) and msg.get(b"t") == tid:
            return data
    return None


# ---------------------------------------------------------------------------
# (b) libtorrent queries us
# ---------------------------------------------------------------------------


class Responder:
    """Answers libtorrent's queries minimally and saves the first of each kind."""

    def __init__(self, sock: socket.socket, rec: Recorder | None, nodes: bytes) -> None:
        self.sock = sock
        self.rec = rec
        self.nodes = nodes
        self.seen: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.handle(data, (addr[0], addr[1]))

    def handle(self, data: bytes, addr: Address) -> None:
        try:
            msg = decode_untrusted(data)
        except DecodeError:
            self.record("undecodable", data, addr)
            return
        if not isinstance(msg, dict) or msg.get(b"y") != b"q":
            self.record(f"non_query_{msg.get(b'y', b'?').decode(errors='replace')}", data, addr)
            return
        method = msg.get(b"q", b"?").decode("ascii", "replace")
        args = msg.get(b"a", {})
        kind = method
        if method == "get_peers" and args.get(b"bs") == 1:
            kind = "get_peers_bootstrap"
        self.record(kind, data, addr)
        r: dict[bytes, Any] = {b"id": RESPONDER_ID}
        if method in ("find_node", "get_peers", "sample_infohashes", "get"):
            r[b"nodes"] = self.nodes
        if method in ("get_peers", "get"):
            r[b"token"] = RESPONDER_TOKEN
        if method == "sample_infohashes":
            r.update({b"interval": 60, b"num": 0, b"samples": b""})
        if method in ("ping", "find_node", "get_peers", "announce_peer", "sample_infohashes", "get"):
            reply: dict[bytes, Any] = {b"t": msg.get(b"t", b""), b"y": b"r", b"r": r, b"ip": compact(addr)}
        else:
            reply = {b"t": msg.get(b"t", b""), b"y": b"e", b"e": [204, b"Method Unknown"]}
        self.sock.sendto(encode(reply), addr)

    def record(self, kind: str, data: bytes, addr: Address) -> None:
        count = self.seen.get(kind, 0)
        self.seen[kind] = count + 1
        if count == 0 and self.rec is not None:
            self.rec.save(
                f"incoming_query_{kind}.bin",
                data,
                f"sent by libtorrent ({addr[0]}:{addr[1]}) to our responder: {kind}",
                "libtorrent",
            )


def run_incoming(swarm: LibtorrentSwarm, responder_addr: Address, responder: Responder, port: int) -> list[str]:
    """Part (b): make libtorrent talk to our responder."""
    responder.thread.start()
    for i in range(len(swarm)):
        swarm.add_node(i, responder_addr)
    time.sleep(0.5)
    # a lookup and an announce from node 1; we are one of the few nodes, so among the 8 closest
    swarm.get_peers(1, IH_INCOMING, timeout=5.0)
    swarm.announce(1, IH_INCOMING, 6881, timeout=5.0)
    try:
        swarm.sample_infohashes(1, responder_addr, TARGET, timeout=3.0)
    except TimeoutError:
        pass
    # a fresh session with our responder as its only router: the bootstrap query
    with start_swarm(1, first_ip="127.0.1.20", port=port, routers=[responder_addr], warm_up=False):
        time.sleep(1.0)
    time.sleep(0.5)
    responder.stop.set()
    responder.thread.join()
    return [f"incoming {k}: {v}" for k, v in sorted(responder.seen.items())]


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("fixtures/libtorrent"))
    parser.add_argument("--port", type=int, default=6881, help="libtorrent's IPv4 UDP port (default 6881; ours is PORT+1)")
    parser.add_argument("--port6", type=int, default=6891, help="first [::1] port of the swarm (default 6891)")
    parser.add_argument("--nodes", type=int, default=4, help="libtorrent sessions (default 4)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.bin"):
        old.unlink()
    rec = Recorder(args.out)

    # our sockets use another port than libtorrent's, so ports in the captures
    # (libtorrent echoes the querier's port in r.p) are unambiguous
    our_port = args.port + 1
    querier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    querier.bind((QUERIER_IP, our_port))
    responder_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    responder_sock.bind((RESPONDER_IP, our_port))
    responder_addr: Address = (RESPONDER_IP, our_port)

    t0 = time.monotonic()
    with start_swarm(args.nodes, port=args.port, ipv6_port=args.port6, seed=0) as swarm:
        # IPv4 and IPv6 tables together (the stats cover both families)
        swarm.wait_for_tables(2 * (args.nodes - 1), timeout=20.0)
        print(f"swarm of {args.nodes} up in {time.monotonic() - t0:.2f} s: {swarm.addresses} {swarm.addresses6}")
        for k in range(1, args.nodes):
            swarm.announce(k, IH_WITH_PEERS, 6000 + k)
        target = swarm.addresses[0]
        nodes = b"".join(nid + compact(addr) for nid, addr in swarm.routing_table(0))[: 8 * 26]
        notes = run_queries(querier, target, rec)
        # libtorrent now has the querier in its tables: keep it answering (without
        # recording), or part (b)'s lookups would wait for it to time out.
        helper = Responder(querier, None, nodes)
        helper.thread.start()
        notes += run_incoming(swarm, responder_addr, Responder(responder_sock, rec, nodes), args.port)
        helper.stop.set()
        helper.thread.join()
    rec.write_index()
    for line in notes:
        print(line)
    rejected = {k: v["strict_decode"] for k, v in rec.index.items() if v["strict_decode"] != "ok"}
    print(f"{len(rec.index)} files in {args.out}; strict decoder rejected: {rejected or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
