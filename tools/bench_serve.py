"""How many queries per second one node answers on one core, beside two yardsticks.

Usage (from the repository root)::

    /tmp/venv/bin/python tools/bench_serve.py            # ours, echo baseline, libtorrent
    /tmp/venv/bin/python tools/bench_serve.py --only ours --profile   # cProfile of our server
    /tmp/venv/bin/python tools/bench_serve.py --runtime trio,asyncio  # our node on both runtimes

One run measures three servers in turn, each in its own process pinned to core 0,
against one blasting process pinned to core 1:

* ``ours``: :func:`mainline_dht.runtime.node.open_node` over the real UDP transport, its
  routing table pre-filled with a realistic table (about 8 contacts per bucket,
  buckets down to depth ~25, as a node on the live DHT holds) through
  ``table.heard_from(..., responded=True)``. The contacts' addresses lie in
  127.0.30.0/23 and nothing listens there; the node only ever sends them as data
  in ``nodes``. No bootstrap routers, so the node sends nothing on its own.
  Its per-IP query budget stays on, raised to a rate no blaster reaches (as
  libtorrent's is below), so the cost of checking it is in the figure.
* ``ours-asyncio`` (with ``--runtime ...,asyncio``): the same node and table on asyncio
  (:func:`mainline_dht.runtime.aio.open_node`: an ``asyncio.DatagramProtocol``, the
  same I/O-free core), measured the same way in the same run.
* ``echo``: a raw-socket echo server in plain Python with the same drain-the-queue
  loop (wait until readable, then ``recvfrom``/``sendto`` until EAGAIN). It does
  no work per datagram, so it is the upper bound for Python on this machine.
* ``libtorrent``: one libtorrent session's DHT node (if libtorrent imports), with
  every rate limit raised, its table filled the same way (the fake contacts are
  sockets this script binds and that answer libtorrent's pings), and alerts off.

The blaster sends a fixed mix of pre-encoded queries (1/3 ``ping``, 1/3
``find_node``, 1/3 ``get_peers``, half of those for infohashes with stored peers)
from 16 sockets on 127.0.20.1-16, each with its own node ID, keeping at most
``--window`` queries in flight (a closed loop: it measures the server's capacity,
not the kernel's drop behaviour). Before the timed part it announces 16 peers for
each of 64 infohashes through the wire (``get_peers`` for a token, then
``announce_peer``) and checks one answer to each query type with our decoder.
It counts replies (``y`` = ``r``) in a fixed window after a warm-up and reads the
server's CPU time from ``/proc`` over the same window. Two figures per server: replies per
wall-clock second, which depends on the window, on wake-up latency between the
cores and on whatever else runs on the machine, and replies per second of the
server's own CPU time (what one whole core answers), the steadier of the two.

Every datagram goes to or comes from 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing as mp
import os
import platform
import pstats
import random
import select
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mainline_dht.wire import bencode  # noqa: E402
from mainline_dht.wire.krpc import (  # noqa: E402
    FindNode,
    GetPeers,
    QueryMessage,
    ResponseMessage,
    decode_message_untrusted,
    encode_message,
)

SERVER_CORE = 0
BLASTER_CORE = 1
SERVER_IPS = {"ours": "127.0.10.1", "echo": "127.0.10.2", "libtorrent": "127.0.10.3", "ours-asyncio": "127.0.10.4"}
#: ``--runtime`` name -> the server kind that runs our node on it.
RUNTIME_KINDS = {"trio": "ours", "asyncio": "ours-asyncio"}
#: Source addresses of the blaster: one socket and one node ID each.
BLASTER_IPS = [f"127.0.20.{i}" for i in range(1, 17)]
#: Where the libtorrent server's fake contacts listen (and ours' fake contacts claim to).
FAKE_NET = "127.0.{}.{}"
#: Contacts generated per bucket depth, for depths 0 .. FILL_DEPTH - 1.
FILL_PER_DEPTH = 10
FILL_DEPTH = 25
#: Infohashes given stored peers (each by every blaster source: 16 peers).
STORED_INFOHASHES = 64
#: Pre-encoded queries per blaster socket (tids differ within a socket's pool).
POOL_PER_SOCKET = 4096
SOCKET_BUFFER = 4 * 1024 * 1024
#: Queries in flight at most. Wake-ups between the two cores are slow on this VM (neither
#: process was busy with 256 in flight); 1,024 keep the server fed and still fit the
#: server's 4 MiB receive buffer (no datagram lost in any run).
DEFAULT_WINDOW = 1024
#: Seconds without any reply after which the queries in flight count as lost. Long
#: enough that a server descheduled by other load on a shared machine is not "lossy".
LOSS_TIMEOUT = 0.25


#: Niceness increment for the server and blaster processes (``--nice``; negative needs root).
NICE = int(os.environ.get("BENCH_SERVE_NICE", "0"))


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})
    if NICE:
        try:
            os.nice(NICE)
        except OSError as exc:
            print(f"cannot renice by {NICE}: {exc}", file=sys.stderr)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_busy(core: int) -> tuple[float, float]:
    """(busy, total) seconds of one core since boot, from /proc/stat (softirq counts as busy)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(x) for x in line.split()[1:]]
            idle = ticks[3] + ticks[4]
            tck = os.sysconf("SC_CLK_TCK")
            return (sum(ticks[:8]) - idle) / tck, sum(ticks[:8]) / tck
    return float("nan"), float("nan")


def _ids_by_depth(own: bytes, rng: random.Random) -> list[bytes]:
    """IDs sharing exactly d leading bits with ``own``, FILL_PER_DEPTH per depth d.

    That is what a BEP 5 table of a node on a big network looks like: about k
    contacts in each bucket from the far half of the space down to our own.
    """
    own_int = int.from_bytes(own, "big")
    out = []
    for depth in range(FILL_DEPTH):
        for _ in range(FILL_PER_DEPTH):
            flip = 1 << (159 - depth)
            low = rng.getrandbits(159 - depth)
            value = ((own_int ^ flip) >> (160 - depth - 1) << (160 - depth - 1)) | low
            out.append(value.to_bytes(20, "big"))
    return out


def _fake_addresses(n: int) -> list[tuple[str, int]]:
    return [(FAKE_NET.format(30 + i // 250, 1 + i % 250), 40000 + i) for i in range(n)]


# --- servers ------------------------------------------------------------------------------------


def serve_ours(conn: Connection, host: str, profile: str | None) -> None:
    """Our node, pinned to one core, until the parent says stop."""
    _pin(SERVER_CORE)
    import trio

    from mainline_dht.wire.contact import Contact
    from mainline_dht.runtime.node import open_node
    from mainline_dht.core.protocol import NodeConfig

    # The per-IP budget is checked for every query, but 16 blaster IPs never exhaust
    # it; the global budget for strangers (reply_rate) would cap the figure itself.
    config = NodeConfig(query_rate_per_ip=1e12, query_burst_per_ip=1e12, reply_rate=None)

    async def main() -> None:
        async with open_node((host, 0), bootstrap=(), config=config) as node:
            table = node.proto.table
            now = trio.current_time()
            rng = random.Random(1)
            for node_id, addr in zip(
                _ids_by_depth(node.node_id, rng), _fake_addresses(FILL_DEPTH * FILL_PER_DEPTH), strict=True
            ):
                table.heard_from(Contact(node_id, addr), now, responded=True)
            conn.send(("ready", node.local_address, node.node_id, len(table)))
            while not conn.poll():
                await trio.sleep(0.1)
            conn.recv()
            s = node.proto.stats
            conn.send(
                {
                    "queries": s.queries_received,
                    "replies": s.replies_sent,
                    "errors": s.errors_sent,
                    "malformed": s.malformed,
                    "rate_limited": s.queries_rate_limited,
                    "send_dropped": node.transport.stats.send_dropped,
                    "table": len(table),
                    "stored_peers": node.proto.peer_store.num_peers,
                }
            )

    if profile:
        prof = cProfile.Profile()
        prof.enable()
        trio.run(main)
        prof.disable()
        prof.dump_stats(profile)
    else:
        trio.run(main)


def serve_ours_asyncio(conn: Connection, host: str, profile: str | None) -> None:
    """Our node on asyncio (mainline_dht.aio, the same core), pinned to one core, until the parent says stop."""
    _pin(SERVER_CORE)
    import asyncio

    from mainline_dht.core.protocol import NodeConfig
    from mainline_dht.runtime.aio import open_node
    from mainline_dht.wire.contact import Contact

    config = NodeConfig(query_rate_per_ip=1e12, query_burst_per_ip=1e12, reply_rate=None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with open_node((host, 0), bootstrap=(), config=config) as node:
            table = node.proto.table
            now = loop.time()
            rng = random.Random(1)
            for node_id, addr in zip(
                _ids_by_depth(node.node_id, rng), _fake_addresses(FILL_DEPTH * FILL_PER_DEPTH), strict=True
            ):
                table.heard_from(Contact(node_id, addr), now, responded=True)
            conn.send(("ready", node.local_address, node.node_id, len(table)))
            while not conn.poll():
                await asyncio.sleep(0.1)
            conn.recv()
            s = node.proto.stats
            conn.send(
                {
                    "queries": s.queries_received,
                    "replies": s.replies_sent,
                    "errors": s.errors_sent,
                    "malformed": s.malformed,
                    "rate_limited": s.queries_rate_limited,
                    "send_dropped": node.send_dropped,
                    "table": len(table),
                    "stored_peers": node.proto.peer_store.num_peers,
                }
            )

    if profile:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(main())
        prof.disable()
        prof.dump_stats(profile)
    else:
        asyncio.run(main())


def serve_echo(conn: Connection, host: str, profile: str | None) -> None:
    """A raw-socket echo server: wait readable, then recvfrom/sendto until EAGAIN."""
    _pin(SERVER_CORE)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.bind((host, 0))
    sock.setblocking(False)
    conn.send(("ready", sock.getsockname(), None, 0))
    recvfrom, sendto = sock.recvfrom, sock.sendto
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    echoed = 0
    next_check = time.monotonic() + 0.1
    while True:
        ep.poll(0.1)
        while True:
            try:
                data, addr = recvfrom(65536)
            except BlockingIOError:
                break
            try:
                sendto(data, addr)
            except OSError:
                pass
            echoed += 1
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.1
            if conn.poll():
                break
    conn.recv()
    conn.send({"queries": echoed, "replies": echoed})
    sock.close()


def serve_libtorrent(conn: Connection, host: str, profile: str | None) -> None:
    """One libtorrent DHT node with its rate limits raised."""
    _pin(SERVER_CORE)
    from libtorrent_net import import_libtorrent, start_swarm

    lt = import_libtorrent()
    big = 2**31 - 1
    swarm = start_swarm(
        1,
        first_ip=host,
        port=0,
        warm_up=False,
        settings={
            # (the helper already raises dht_block_ratelimit to 1,000,000 packets/s per IP;
            # libtorrent 2.1.1 blocks every source after one packet when it is set to 2**31 - 1)
            "dht_upload_rate_limit": big,
            "upload_rate_limit": 0,
            "download_rate_limit": 0,
            "dht_max_peers": 1000,
            "dht_max_torrents": 10000,
            "recv_socket_buffer_size": SOCKET_BUFFER,
            "send_socket_buffer_size": SOCKET_BUFFER,
        },
    )
    with swarm:
        ses = swarm.session(0)
        conn.send(("ready", swarm.addresses[0], swarm.node_id(0), 0))
        while True:
            cmd = conn.recv()
            if cmd[0] == "add":
                for addr in cmd[1]:
                    swarm.add_node(0, addr)
                conn.send("ok")
            elif cmd[0] == "table":
                conn.send(swarm.table_size(0))
            elif cmd[0] == "quiet":
                # No alerts while measuring: a client's default mask is errors only.
                ses.apply_settings({"alert_mask": int(lt.alert.category_t.error_notification)})
                conn.send("ok")
            else:
                ses.apply_settings({"alert_mask": int(lt.alert.category_t.stats_notification)})
                counters = swarm.counters(0)
                conn.send({"counters": str(counters), "table": swarm.table_size(0)})
                return


SERVERS = {"ours": serve_ours, "echo": serve_echo, "libtorrent": serve_libtorrent, "ours-asyncio": serve_ours_asyncio}


def _fill_libtorrent(conn: Connection, own: bytes, seconds: float = 3.0) -> int:
    """Give libtorrent a realistic table: bind fake contacts that answer its queries."""
    rng = random.Random(2)
    ids = _ids_by_depth(own, rng)
    addrs = _fake_addresses(len(ids))
    socks = {}
    for node_id, addr in zip(ids, addrs, strict=True):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(addr)
        s.setblocking(False)
        socks[s.fileno()] = (s, node_id)
    ep = select.epoll()
    for fd in socks:
        ep.register(fd, select.EPOLLIN)
    conn.send(("add", addrs))
    conn.recv()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for fd, _ in ep.poll(0.05):
                s, node_id = socks[fd]
                while True:
                    try:
                        data, src = s.recvfrom(65536)
                    except BlockingIOError:
                        break
                    try:
                        msg = decode_message_untrusted(data)
                    except Exception:
                        continue
                    if type(msg) is QueryMessage:
                        token = b"tok" if isinstance(msg.query, GetPeers) else None
                        s.sendto(encode_message(ResponseMessage(msg.tid, node_id, token=token)), src)
        conn.send(("table",))
        return int(conn.recv())
    finally:
        for s, _ in socks.values():
            s.close()


# --- the blaster --------------------------------------------------------------------------------


@dataclass
class BlastResult:
    replies: int
    errors: int
    lost: int
    seconds: float
    server_cpu: float
    blaster_cpu: float
    core_busy: float
    blaster_core_busy: float
    checks: dict[str, str]

    @property
    def rate(self) -> float:
        """Replies per second of wall time."""
        return self.replies / self.seconds

    @property
    def per_cpu_second(self) -> float:
        """Replies per second of the server's own CPU time: what one whole core would answer."""
        return self.replies / (self.server_cpu * self.seconds)

    @property
    def others(self) -> float:
        """Share of the server's core not charged to the server (other processes, interrupts)."""
        return max(0.0, self.core_busy - self.server_cpu)


def _query(tid: bytes, sender: bytes, q: bytes, a: dict[bytes, Any]) -> bytes:
    return bencode.encode({b"t": tid, b"y": b"q", b"q": q, b"a": {b"id": sender, **a}})


def _roundtrip(sock: socket.socket, data: bytes, server: tuple[str, int], tid: bytes) -> dict[bytes, Any]:
    """Send one query and wait (up to 2 s) for the reply with its tid; return the reply dict."""
    sock.sendto(data, server)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        r, _, _ = select.select([sock], [], [], 0.05)
        if not r:
            continue
        reply, _ = sock.recvfrom(65536)
        value = bencode.decode_untrusted(reply)
        if value.get(b"t") == tid and value.get(b"y") in (b"r", b"e"):
            return value  # type: ignore[no-any-return]
    raise TimeoutError(f"no reply to {data[:40]!r}")


def blast(
    conn: Connection,
    kind: str,
    server: tuple[str, int],
    server_pid: int,
    window: int,
    warmup: float,
    measure: float,
    fresh_ids: bool,
) -> None:
    """The blasting process: set up, check, then measure replies per second."""
    _pin(BLASTER_CORE)
    rng = random.Random(7)
    socks = []
    ids = []
    for ip in BLASTER_IPS:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        s.bind((ip, 0))
        socks.append(s)
        ids.append(rng.randbytes(20))
    stored = [rng.randbytes(20) for _ in range(STORED_INFOHASHES)]
    checks: dict[str, str] = {}
    if kind != "echo":
        # Announce every stored infohash from every source, the way a peer would.
        tid_n = 0
        for j, s in enumerate(socks):
            for ih in stored:
                tid_n += 1
                tid = b"s" + tid_n.to_bytes(3, "big")
                r = _roundtrip(s, _query(tid, ids[j], b"get_peers", {b"info_hash": ih}), server, tid)
                token = r[b"r"][b"token"]
                tid = b"a" + tid_n.to_bytes(3, "big")
                r = _roundtrip(
                    s,
                    _query(tid, ids[j], b"announce_peer", {b"info_hash": ih, b"port": 6881 + j, b"token": token}),
                    server,
                    tid,
                )
                if r.get(b"y") != b"r":
                    raise RuntimeError(f"announce refused: {r!r}")
        # One checked answer per query type, through our own strict decoder.
        s = socks[0]
        for name, q, a in (
            ("ping", b"ping", {}),
            ("find_node", b"find_node", {b"target": rng.randbytes(20)}),
            ("get_peers", b"get_peers", {b"info_hash": stored[0]}),
        ):
            s.sendto(_query(b"chk!", ids[0], q, a), server)
            s.settimeout(2.0)
            while True:
                reply = s.recv(65536)
                msg = decode_message_untrusted(reply)
                if msg.tid == b"chk!":
                    break
            assert isinstance(msg, ResponseMessage), msg
            checks[name] = f"{len(reply)} B, {len(msg.nodes)} nodes" + (
                f", {len(msg.values)} values" if name == "get_peers" else ""
            )
    for s in socks:
        s.setblocking(False)
    # Pre-encoded pools, one per socket: tids are a 4-byte counter.
    pools = []
    for j in range(len(socks)):
        pool = []
        for n in range(POOL_PER_SOCKET):
            tid = n.to_bytes(4, "big")
            sender = rng.randbytes(20) if fresh_ids else ids[j]
            pick = rng.randrange(6)
            if pick < 2:
                pool.append(_query(tid, sender, b"ping", {}))
            elif pick < 4:
                pool.append(_query(tid, sender, b"find_node", {b"target": rng.randbytes(20)}))
            elif pick == 4:
                pool.append(_query(tid, sender, b"get_peers", {b"info_hash": rng.choice(stored)}))
            else:
                pool.append(_query(tid, sender, b"get_peers", {b"info_hash": rng.randbytes(20)}))
        pools.append(pool)
    # Drain leftovers (replies to the checks, verification pings).
    for s in socks:
        try:
            while True:
                s.recvfrom(65536)
        except BlockingIOError:
            pass
    ep = select.epoll()
    by_fd = {}
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s.recvfrom
    sends = [(s.sendto, pool) for s, pool in zip(socks, pools, strict=True)]
    nsocks = len(socks)
    count_all = kind == "echo"
    inflight = 0
    sent = 0
    replies = errors = lost = 0
    t0 = time.monotonic()
    t_start = t0 + warmup
    t_end = t_start + measure
    measuring = False
    start_replies = start_errors = start_lost = 0
    cpu0 = bcpu0 = busy0 = total0 = bbusy0 = btotal0 = 0.0
    me = os.getpid()
    while True:
        room = window - inflight
        if room > 0:
            for _ in range(room):
                sendto, pool = sends[sent % nsocks]
                try:
                    sendto(pool[(sent // nsocks) % POOL_PER_SOCKET], server)
                except BlockingIOError:
                    lost += 1
                    inflight -= 1
                sent += 1
            inflight += room
        events = ep.poll(LOSS_TIMEOUT)
        if not events:
            # Nothing for a while with queries out: count them lost and refill the window.
            lost += inflight
            inflight = 0
        for fd, _ in events:
            recvfrom = by_fd[fd]
            while True:
                try:
                    data, _ = recvfrom(65536)
                except BlockingIOError:
                    break
                if count_all or data.endswith(b"1:y1:re"):
                    replies += 1
                    inflight -= 1
                elif data.endswith(b"1:y1:ee"):
                    errors += 1
                    inflight -= 1
        if inflight < 0:
            inflight = 0
        now = time.monotonic()
        if not measuring and now >= t_start:
            measuring = True
            start_replies, start_errors, start_lost = replies, errors, lost
            cpu0, bcpu0, t_start = _cpu_seconds(server_pid), _cpu_seconds(me), now
            busy0, total0 = _core_busy(SERVER_CORE)
            bbusy0, btotal0 = _core_busy(BLASTER_CORE)
        elif measuring and now >= t_end:
            seconds = now - t_start
            result = BlastResult(
                replies - start_replies,
                errors - start_errors,
                lost - start_lost,
                seconds,
                (_cpu_seconds(server_pid) - cpu0) / seconds,
                (_cpu_seconds(me) - bcpu0) / seconds,
                (_core_busy(SERVER_CORE)[0] - busy0) / (_core_busy(SERVER_CORE)[1] - total0),
                (_core_busy(BLASTER_CORE)[0] - bbusy0) / (_core_busy(BLASTER_CORE)[1] - btotal0),
                checks,
            )
            break
    for s in socks:
        s.close()
    conn.send(result)


# --- orchestration ------------------------------------------------------------------------------


def run_one(kind: str, args: argparse.Namespace, ctx: Any) -> tuple[BlastResult, dict[str, Any], str]:
    parent, child = ctx.Pipe()
    profile = str(Path(args.profile_out).resolve()) if (args.profile and kind.startswith("ours")) else None
    proc = ctx.Process(target=SERVERS[kind], args=(child, SERVER_IPS[kind], profile), daemon=True)
    proc.start()
    try:
        if not parent.poll(20):
            raise RuntimeError(f"{kind} server did not start")
        _, addr, node_id, table = parent.recv()
        note = ""
        if kind.startswith("ours"):
            note = f"table {table} contacts"
        if kind == "libtorrent":
            table = _fill_libtorrent(parent, node_id)
            parent.send(("quiet",))
            parent.recv()
            note = f"table {table} contacts"
        bparent, bchild = ctx.Pipe()
        blaster = ctx.Process(
            target=blast,
            args=(bchild, kind, tuple(addr), proc.pid, args.window, args.warmup, args.seconds, args.fresh_ids),
            daemon=True,
        )
        blaster.start()
        deadline = time.monotonic() + 60 + args.warmup + args.seconds
        while not bparent.poll(0.2):
            if not blaster.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the blaster failed against {kind}")
        result: BlastResult = bparent.recv()
        blaster.join(5)
        parent.send(("stop",))
        stats = parent.recv() if parent.poll(20) else {}
        proc.join(10)
        return result, stats, note
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="ours,echo,libtorrent", help="servers to measure, comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window (s)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up before the window (s)")
    parser.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help="queries in flight at most (more hides wake-up latency; the server sockets hold 4 MiB)",
    )
    parser.add_argument(
        "--fresh-ids",
        action="store_true",
        help="a new querier node ID for (nearly) every query: every querier is a stranger to the table",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness increment for server and blaster (e.g. -10 as root, on a machine shared with other work)",
    )
    parser.add_argument(
        "--runtime",
        default="trio",
        help="runtimes our node is measured on, comma-separated: trio (the 'ours' row), asyncio "
        "(the 'ours-asyncio' row: mainline_dht.aio over the same core); e.g. --runtime trio,asyncio",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile our server and print the top functions")
    parser.add_argument("--profile-out", default="/tmp/bench_serve.prof")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    runtimes = [r.strip() for r in args.runtime.split(",") if r.strip()]
    unknown = [r for r in runtimes if r not in RUNTIME_KINDS]
    if unknown:
        parser.error(f"unknown runtime(s) {', '.join(unknown)}: choose from {', '.join(RUNTIME_KINDS)}")
    if "ours" in kinds:  # our node, once per runtime asked for, in its place
        i = kinds.index("ours")
        kinds[i : i + 1] = [RUNTIME_KINDS[r] for r in runtimes]
    # Spawned children read it at import time.
    os.environ["BENCH_SERVE_NICE"] = str(args.nice)
    if "libtorrent" in kinds:
        from libtorrent_net import libtorrent_available

        if not libtorrent_available():
            print("libtorrent not importable: skipping it")
            kinds.remove("libtorrent")
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 cores; server and blaster share one")
    ctx = mp.get_context("spawn")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"server on core {SERVER_CORE}, blaster on core {BLASTER_CORE}; window {args.window}, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s measured"
    )
    print(
        "mix: 1/3 ping, 1/3 find_node, 1/3 get_peers (half for infohashes with 16 stored peers), from "
        + ("a new node ID per query" if args.fresh_ids else f"{len(BLASTER_IPS)} queriers")
        + (f"; niceness {args.nice:+d}" if args.nice else "")
    )
    results: dict[str, BlastResult] = {}
    for kind in kinds:
        result, stats, note = run_one(kind, args, ctx)
        results[kind] = result
        checks = "; ".join(f"{k}: {v}" for k, v in result.checks.items())
        print(f"  {kind}: {note}{'; ' if note and checks else ''}{checks}")
        if kind.startswith("ours"):
            print(f"    server counters: {stats}")
    print()
    print(
        f"{'server':<14}{'answered/s':>12}{'per CPU-s':>12}{'errors':>8}{'lost':>7}"
        f"{'server CPU':>12}{'other':>7}{'blaster CPU':>13}"
    )
    for kind, r in results.items():
        print(
            f"{kind:<14}{r.rate:>12,.0f}{r.per_cpu_second:>12,.0f}{r.errors:>8}{r.lost:>7}"
            f"{r.server_cpu:>11.0%}{r.others:>7.0%}{r.blaster_cpu:>12.0%}"
        )
    print(
        "(answered/s: replies per wall-clock second; per CPU-s: replies per second of the server's own\n"
        " CPU time, i.e. one whole core; other: time of the server's core not charged to the server\n"
        " process: other processes, and interrupt work)"
    )
    ours = results.get("ours")
    if ours is not None:
        print()
        for other in ("echo", "libtorrent"):
            if other in results:
                o = results[other]
                print(
                    f"ours / {other}: {ours.rate / o.rate:.2f} (wall), "
                    f"{ours.per_cpu_second / o.per_cpu_second:.2f} (per CPU-s)"
                )
        verdict = "meets" if ours.rate >= 50_000 else "misses"
        print(f"target 50,000 queries/s on one core: {verdict} ({ours.rate:,.0f}/s wall, {ours.per_cpu_second:,.0f} per CPU-s)")
    for kind, r in results.items():
        blaster_other = max(0.0, r.blaster_core_busy - r.blaster_cpu)
        if r.core_busy < 0.9:
            why = (
                f"other work took {blaster_other:.0%} of the blaster's core"
                if blaster_other > 0.1
                else "the closed loop left it idle"
            )
            print(f"note: the server core was {r.core_busy:.0%} busy during {kind} ({why}): the blaster set its figure")
        elif r.others > 0.1:
            print(f"note: {r.others:.0%} of the server core went elsewhere during {kind}")
    if "ours" in results and "ours-asyncio" in results:
        t, a = results["ours"], results["ours-asyncio"]
        print(
            f"asyncio / trio (our node, same core): {a.rate / t.rate:.2f} (wall), "
            f"{a.per_cpu_second / t.per_cpu_second:.2f} (per CPU-s)"
        )
    if args.profile and any(k.startswith("ours") for k in results):
        out = io.StringIO()
        pstats.Stats(args.profile_out, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())


if __name__ == "__main__":
    main()
