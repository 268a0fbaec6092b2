"""Hostile traffic against a running node: does it keep serving, within bounded memory and CPU?

Starts ``mainline-dht node --bind 127.0.90.1:PORT`` as a subprocess and, for a bounded
time, floods it from a separate process while one well-behaved client (a DHTNode in this
process, which the node verifies into its routing table) pings it 20 times a second.

Two modes, run one after the other on a fresh node each:

* ``plain``: a flood from ``--sources`` loopback addresses (16 by default) far above the
  per-IP budget: malformed datagrams (truncated, wrong types, huge lengths, deep nesting,
  the bencode hang input ``d1:a1:b-6:``), announces with forged tokens, announce,
  find_node and get_peers floods with random IDs, unsolicited replies and errors.
* ``spoofed``: the same mix from ``--spoofed-sources`` distinct source addresses (50,000
  by default), each sending rarely: what a flood with forged source addresses looks like
  to the node. Every 127.x.y.z address is local, so the sender picks the source of each
  datagram (``IP_PKTINFO``) and the node sees real, distinct sources.

Printed per mode: datagrams sent, the honest client's answered share, whether the node is
alive (its process, and a final ping), its RSS before and after (``/proc/PID/status``),
its CPU per datagram (``/proc/PID/stat``), and its own counters. Loopback only; every
loop is bounded by ``--duration``.

Usage::

    python tools/hostile.py                      # both modes, 25 s each at 5,000/s
    python tools/hostile.py --mode spoofed --duration 10 --rate 3000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from mainline_dht.errors import DHTError
from mainline_dht.runtime.node import open_node
from mainline_dht.wire.bencode import encode

NODE_IP = "127.0.90.1"
HONEST_IP = "127.0.0.1"
DEAD_IP = "127.0.90.2"
#: Linux's IP_PKTINFO (the socket module does not export it everywhere).
IP_PKTINFO = 8
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- what the flood sends ------------------------------------------------------------------


def hostile_payloads(rng: random.Random, n: int = 4096) -> list[bytes]:
    """``n`` hostile datagrams of every kind, in a shuffled order."""

    def nid() -> bytes:
        return rng.randbytes(20)

    def tid() -> bytes:
        return rng.randbytes(2)

    def query(method: bytes, args: dict[bytes, object]) -> bytes:
        a = {b"id": nid(), **args}
        return encode({b"t": tid(), b"y": b"q", b"q": method, b"a": a})

    kinds = [
        # truncated queries
        lambda: (q := query(b"find_node", {b"target": nid()}))[: rng.randrange(1, len(q))],
        # wrong types
        lambda: encode({b"t": 5, b"y": b"q", b"q": b"ping", b"a": [1, 2]}),
        lambda: encode({b"t": tid(), b"y": b"q", b"q": b"get_peers", b"a": {b"id": 7, b"info_hash": [b"x"]}}),
        lambda: encode([b"q", b"ping", {b"id": nid()}]),
        # huge lengths
        lambda: b"d1:t" + str(rng.randrange(10**9, 10**12)).encode() + b":aa1:y1:qe",
        lambda: b"d1:ti" + b"9" * 5000 + b"e1:y1:qe",
        # deep nesting
        lambda: b"l" * 20000 + b"e" * 20000,
        lambda: b"d1:a" * 3000 + b"i1e" + b"e" * 3000,
        # the bencode hang input
        lambda: b"d1:a1:b-6:",
        # forged tokens / announce flood
        lambda: query(b"announce_peer", {b"info_hash": nid(), b"port": rng.randrange(1, 65536), b"token": rng.randbytes(8)}),
        lambda: query(b"announce_peer", {b"info_hash": nid(), b"implied_port": 1, b"port": 1, b"token": rng.randbytes(20)}),
        # find_node / get_peers / ping floods (valid queries, random IDs)
        lambda: query(b"find_node", {b"target": nid()}),
        lambda: query(b"get_peers", {b"info_hash": nid()}),
        lambda: query(b"ping", {}),
        lambda: query(b"sample_infohashes", {b"target": nid()}),
        # unsolicited replies and errors
        lambda: encode({b"t": tid(), b"y": b"r", b"r": {b"id": nid(), b"nodes": rng.randbytes(26 * 8)}}),
        lambda: encode({b"t": tid(), b"y": b"r", b"r": {b"id": nid(), b"values": [rng.randbytes(6) for _ in range(50)]}}),
        lambda: encode({b"t": tid(), b"y": b"e", b"e": [201, b"\x1b[31mred\x1b[0m"]}),
    ]
    out = [kinds[i % len(kinds)]() for i in range(n)]
    rng.shuffle(out)
    return out


def flood(dst: tuple[str, int], sources: list[str], rate: float, duration: float, seed: int, result: "multiprocessing.Queue[int]") -> None:
    """Send hostile datagrams to ``dst`` at ``rate`` a second for ``duration`` s, cycling the sources."""
    rng = random.Random(seed)
    payloads = hostile_payloads(rng)
    anc = [[(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("@I4s4s", 0, socket.inet_aton(ip), bytes(4)))] for ip in sources]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    sent = 0
    start = time.perf_counter()
    tick = 0.01
    per_tick = rate * tick
    due = 0.0
    np, ns = len(payloads), len(anc)
    i = j = 0
    while True:
        now = time.perf_counter() - start
        if now >= duration:
            break
        due += per_tick
        while due >= 1:
            due -= 1
            try:
                sock.sendmsg([payloads[i]], anc[j], 0, dst)
                sent += 1
            except BlockingIOError:
                pass  # the kernel's buffer is full: the datagram is lost, as on a real link
            except OSError:
                pass
            i = i + 1 if i + 1 < np else 0
            j = j + 1 if j + 1 < ns else 0
        pause = tick - (time.perf_counter() - start - now)
        if pause > 0:
            time.sleep(pause)
    sock.close()
    result.put(sent)


def source_ips(count: int, second_octet: int) -> list[str]:
    """``count`` distinct loopback addresses 127.<second_octet..>.x.y (never .0 or .255 hosts)."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        b2 = second_octet + (i >> 16)
        b3 = (i >> 8) & 255
        b4 = i & 255
        i += 1
        if b4 in (0, 255) or b2 > 254:
            continue
        out.append(f"127.{b2}.{b3}.{b4}")
    return out


# --- the node under test -------------------------------------------------------------------


def free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """The process's user and system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3; utime and stime are fields 14 and 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


@dataclass
class Figures:
    mode: str
    sources: int
    sent: int
    honest_sent: int
    honest_answered: int
    alive: bool
    rss_before_kb: int
    rss_after_kb: int
    cpu_user: float
    cpu_system: float
    status: dict[str, object]

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_user + self.cpu_system

    @property
    def cpu_us_per_datagram(self) -> float:
        return self.cpu_seconds / max(1, self.sent + self.honest_sent) * 1e6


async def run_mode(mode: str, sources: list[str], args: argparse.Namespace) -> Figures:
    node_port = free_port(NODE_IP)
    async with open_node((HONEST_IP, 0), bootstrap=(), rng=random.Random(1)) as honest:
        cmd = [
            sys.executable, "-m", "mainline_dht", "node", "--bind", f"{NODE_IP}:{node_port}", "--no-state",
            # Nothing listens at the bootstrap address: the node meets the honest client
            # only as a querier, and verifies it into its table (bootstrap routers never enter).
            "--json", "--status-interval", "1", "--bootstrap", f"{DEAD_IP}:9",
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        status: dict[str, object] = {}

        async def read_status() -> None:
            assert proc.stdout is not None
            while True:
                line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "status":
                    status.clear()
                    status.update(event)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_status)
                target = (NODE_IP, node_port)
                with trio.fail_after(20):
                    while True:
                        try:
                            await honest.ping(target, timeout=0.5)
                            break
                        except DHTError:
                            await trio.sleep(0.2)
                await trio.sleep(3.0)  # the node joins through the honest client, and settles
                rss_before = rss_kb(proc.pid)
                cpu_before = cpu_seconds(proc.pid)

                queue: multiprocessing.Queue[int] = multiprocessing.Queue()
                flooder = multiprocessing.Process(
                    target=flood, args=(target, sources, args.rate, args.duration, args.seed, queue), daemon=True
                )
                flooder.start()
                honest_sent = honest_answered = 0

                async def one_ping() -> None:
                    nonlocal honest_answered
                    try:
                        await honest.ping(target, timeout=3.0)
                        honest_answered += 1
                    except DHTError:
                        pass

                async with trio.open_nursery() as pings:
                    interval = 1.0 / args.honest_rate
                    next_at = trio.current_time()
                    end = next_at + args.duration
                    while next_at < end:
                        await trio.sleep_until(next_at)
                        pings.start_soon(one_ping)
                        honest_sent += 1
                        next_at += interval
                sent = await trio.to_thread.run_sync(queue.get)
                flooder.join()
                cpu_after = cpu_seconds(proc.pid)
                rss_after = rss_kb(proc.pid)
                await trio.sleep(1.5)  # one more status line
                alive = proc.poll() is None
                if alive:
                    try:
                        await honest.ping(target, timeout=3.0)
                    except DHTError:
                        alive = False
                nursery.cancel_scope.cancel()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return Figures(mode, len(sources), sent, honest_sent, honest_answered, alive, rss_before, rss_after,
                   cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1], dict(status))


def report(f: Figures) -> None:
    s = f.status
    share = f.honest_answered / max(1, f.honest_sent)
    print(f"== {f.mode}: {f.sources:,} source addresses", flush=True)
    print(f"  hostile datagrams sent      {f.sent:,}")
    print(f"  honest client answered      {f.honest_answered}/{f.honest_sent} = {share:.2%}")
    print(f"  node alive                  {'yes' if f.alive else 'NO'}; internal errors "
          f"{s.get('internal_errors', '?')}, callback errors {s.get('callback_errors', '?')}")
    print(f"  node RSS                    {f.rss_before_kb / 1024:.1f} MB -> {f.rss_after_kb / 1024:.1f} MB "
          f"({(f.rss_after_kb - f.rss_before_kb) / 1024:+.1f} MB)")
    print(f"  node CPU                    {f.cpu_seconds:.2f} s = {f.cpu_us_per_datagram:.1f} us per datagram"
          f" (user {f.cpu_user:.2f} s, kernel {f.cpu_system:.2f} s)")
    print(f"  node counters               dropped unread {s.get('queries_rate_limited', '?')}, "
          f"replies {s.get('replies_sent', '?')}, errors sent {s.get('errors_sent', '?')}, "
          f"malformed {s.get('malformed', '?')}, queries (pings) sent {s.get('queries_sent', '?')}, "
          f"stored peers {s.get('stored_peers', '?')}, "
          f"table {s.get('table_size', '?')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("plain", "spoofed", "both"), default="both")
    parser.add_argument("--duration", type=float, default=25.0, help="seconds of flood per mode (default 25)")
    parser.add_argument("--rate", type=float, default=5000.0, help="hostile datagrams a second (default 5,000)")
    parser.add_argument("--sources", type=int, default=16, help="source addresses of the plain flood (default 16)")
    parser.add_argument("--spoofed-sources", type=int, default=50_000,
                        help="distinct source addresses of the spoofed flood (default 50,000)")
    parser.add_argument("--honest-rate", type=float, default=20.0, help="the honest client's pings a second (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600] seconds")
    modes = ["plain", "spoofed"] if args.mode == "both" else [args.mode]
    results: list[Figures] = []
    for mode in modes:
        sources = source_ips(args.sources, 1) if mode == "plain" else source_ips(args.spoofed_sources, 16)
        f = trio.run(run_mode, mode, sources, args)
        report(f)
        results.append(f)
    if len(results) == 2:
        plain, spoofed = results
        ratio = spoofed.cpu_us_per_datagram / max(1e-9, plain.cpu_us_per_datagram)
        print(f"== spoofed / plain CPU per datagram: {ratio:.2f}x", flush=True)


if __name__ == "__main__":
    main()
