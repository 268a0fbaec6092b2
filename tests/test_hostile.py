"""Hostile traffic: every limit and defence of the node, proved quickly.

The inbound policy (per-IP budgets with bans, the global reply budget served by
trust, dropping before decoding), the bounds on what a stranger can grow, and
the isolation of the receive loop from user callbacks and bugs.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
import trio.testing

from helpers import ask, make_core, raw_query
from mainline_dht import cli
from mainline_dht.cli._common import terminal_safe
from mainline_dht.errors import DecodeError, StateFileError
from mainline_dht.runtime import state_file
from mainline_dht.runtime.atomic_file import STALE_TEMP_AGE
from mainline_dht.runtime.state_file import load_contacts, move_aside, save_table
from mainline_dht.core import protocol as protocol_module
from mainline_dht.core.events import ResponseReceived
from mainline_dht.core.external_ip import ExternalAddressVoter
from mainline_dht.core.lookup import Lookup
from mainline_dht.core.peer_store import DEFAULT_MAX_INFOHASHES_PER_IP, PeerStore
from mainline_dht.core.protocol import NodeConfig
from mainline_dht.core.routing_table import RoutingTable
from mainline_dht.runtime.node import open_node
from mainline_dht.testing import LinkModel, open_memory_network
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Contact
from mainline_dht.testing._memory_net import MemoryTransport
from mainline_dht.wire.krpc import AnnouncePeer, GetPeers, Ping, pack_peer

INFO_HASH = b"\x42" * 20
FLOODER = ("10.66.0.1", 6881)


def _response(tid: bytes, sender: bytes) -> bytes:
    return bencode.encode({b"t": tid, b"y": b"r", b"r": {b"id": sender}})


# --- the inbound policy ----------------------------------------------------------------------


def test_a_flood_is_dropped_before_it_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = 0
    real = protocol_module.decode_untrusted

    def counting(data: bytes) -> object:
        nonlocal decoded
        decoded += 1
        return real(data)

    monkeypatch.setattr(protocol_module, "decode_untrusted", counting)
    core = make_core("s")
    burst = int(core.config.query_burst_per_ip)
    # Malformed queries that would each earn a 203 error if they were read.
    bad = bencode.encode({b"t": b"aa", b"y": b"q", b"q": b"get_peers", b"a": {b"id": b"x"}})
    replies = sum(len(ask(core, bad, FLOODER, i / 10_000)) for i in range(20_000))
    assert replies == burst == decoded
    assert core.stats.malformed == burst
    assert core.stats.queries_rate_limited == 20_000 - burst
    assert core.query_limiter is not None and core.query_limiter.banned(FLOODER[0], 2.0)


def test_replies_to_our_queries_get_through_a_ban_and_a_spent_budget() -> None:
    core = make_core("s", config=NodeConfig(reply_rate=10, reply_burst=10))
    # The replier floods us first: banned, and the global budget is spent by others.
    for i in range(500):
        ask(core, raw_query(b"ping", {}), FLOODER, 0.0)
    for i in range(100):
        ask(core, raw_query(b"ping", {}), (f"10.77.0.{i}", 6881), 0.0)
    limiter = core.query_limiter
    assert limiter is not None and limiter.banned(FLOODER[0], 0.0) and limiter.reply_tokens(0.0) <= 5
    key = core.send_query(Ping(), FLOODER, 0.0)
    core.datagrams_to_send()
    # Queries from the pending address are still charged (and refused while banned).
    assert ask(core, raw_query(b"ping", {}), FLOODER, 0.05) == []
    core.receive_datagram(_response(key[0], b"\x05" * 20), FLOODER, 0.1)
    events = []
    while (e := core.next_event()) is not None:
        events.append(e)
    assert [type(e) for e in events] == [ResponseReceived]
    assert sum(core._pending_addrs.values()) == core.outstanding  # bookkeeping follows the queries
    # Its reply proved it return-routable (the flood may have been forged in its
    # name): the ban is over, and it is held to its rate instead.
    assert not limiter.banned(FLOODER[0], 0.1) and limiter.is_verified(FLOODER[0])
    answered = sum(len(ask(core, raw_query(b"ping", {}), FLOODER, 0.1 + i / 1000)) for i in range(1000))
    assert 0 < answered <= core.config.query_rate_per_ip  # type: ignore[operator]
    assert not limiter.banned(FLOODER[0], 1.1)


def test_a_spoofed_flood_is_not_reflected_and_table_contacts_are_served_first() -> None:
    cfg = NodeConfig(reply_rate=200, reply_burst=200, stranger_reply_rate=20, stranger_reply_burst=20,
                     querier_ping_rate=4, querier_ping_burst=4)
    core = make_core("s", config=cfg)
    honest = Contact(b"\x33" * 20, ("10.1.2.3", 6881))
    core.table.heard_from(honest, 0.0, responded=True)
    assert core.table.has_ip(honest.addr[0])
    answered_spoofed = answered_honest = 0
    # 5 s of 4,000 datagrams a second from 2,000 (forged) sources, each back every
    # half second, and the honest contact at 20/s.
    for ms in range(5_000):
        now = ms / 1000
        for j in range(4):
            i = (ms * 4 + j) % 2_000
            src = (f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 1000 + j)
            answered_spoofed += len(ask(core, raw_query(b"find_node", {b"target": INFO_HASH}), src, now))
        if ms % 50 == 0:
            answered_honest += len(ask(core, raw_query(b"ping", {}, sender=honest.id), honest.addr, now))
    assert answered_honest == 100
    # At most the strangers' budget was answered: we reflect 20 replies a second, not 4,000
    # (nor the 200 a second of the global budget)...
    assert answered_spoofed <= 20 + 5 * 20
    assert core.stats.queries_rate_limited >= 20_000 - answered_spoofed - 100
    # ...and send at most the queriers' 4 verification pings a second.
    assert core.stats.verification_pings <= 4 + 5 * 4
    assert core.stats.pings_rate_limited > 0


def test_an_ip_that_answered_our_query_is_served_beside_a_spoofed_flood() -> None:
    core = make_core("s", config=NodeConfig(stranger_reply_rate=10, stranger_reply_burst=10))
    crawler_target = ("10.5.5.5", 6881)
    # We query it, not to learn it: it stays out of the routing table (a crawl, a router).
    key = core.send_query(Ping(), crawler_target, 0.0, learn=False)
    core.datagrams_to_send()
    core.receive_datagram(_response(key[0], b"\x05" * 20), crawler_target, 0.1)
    assert not core.table.has_ip(crawler_target[0])
    answered = 0
    for ms in range(2_000):  # 2 s of 5,000 forged datagrams a second; it queries us 20 a second
        now = 0.2 + ms / 1000
        for j in range(5):
            i = ms * 5 + j
            ask(core, raw_query(b"ping", {}), (f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 1000), now)
        if ms % 50 == 0:
            answered += len(ask(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH}), crawler_target, now))
    assert answered == 40
    # A stranger beside it gets next to nothing.
    assert sum(len(ask(core, raw_query(b"ping", {}), ("10.6.6.6", 1), 2.2 + k / 1000)) for k in range(40)) <= 1


def test_a_flood_forged_in_a_contact_s_name_does_not_silence_it() -> None:
    core = make_core("s")
    honest = Contact(b"\x33" * 20, ("10.1.2.3", 6881))
    core.table.heard_from(honest, 0.0, responded=True)
    stranger = ("10.1.2.4", 6881)
    for i in range(3_000):  # 1 s at 3,000 a second in each of their names
        ask(core, raw_query(b"ping", {}), honest.addr, i / 3000)
        ask(core, raw_query(b"ping", {}), stranger, i / 3000)
    # A second later the contact is answered again; the stranger is ignored for minutes.
    assert ask(core, raw_query(b"ping", {}, sender=honest.id), honest.addr, 2.0)
    assert not ask(core, raw_query(b"ping", {}), stranger, 2.0)
    assert core.query_limiter is not None and core.query_limiter.bans == 1


def test_a_heavy_honest_source_is_answered_beside_a_flood() -> None:
    core = make_core("s")
    answered = sent = 0
    for ms in range(25_000):  # 15 s alone, then 10 s beside a flood
        now = ms / 1000
        if ms >= 15_000:
            for j in range(3):  # 3,000 a second from 30 flooding sources
                ask(core, raw_query(b"ping", {}), (f"10.88.0.{(ms * 3 + j) % 30}", 6881), now)
        if ms % 50 == 0:  # 20 a second from one (NAT) address, never in our table
            sent += 1
            answered += len(ask(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH}), ("10.9.9.9", 7000), now))
    assert answered == sent == 500
    assert core.stats.queries_rate_limited > 25_000


def test_the_limits_are_named_config_fields() -> None:
    cfg = NodeConfig(
        query_rate_per_ip=7,
        query_burst_per_ip=9,
        flood_ban_seconds=11,
        max_tracked_sources=13,
        reply_rate=17,
        reply_burst=19,
        new_source_reserve=0.4,
        known_source_reserve=0.1,
        stranger_reply_rate=23,
        stranger_reply_burst=29,
        known_source_after=31,
        known_source_max_gap=37,
        querier_ping_rate=41,
        querier_ping_burst=43,
    )
    core = make_core("s", config=cfg)
    limiter = core.query_limiter
    assert limiter is not None
    assert (limiter.rate, limiter.burst, limiter.ban_seconds, limiter.max_tracked) == (7, 9, 11, 13)
    assert (limiter.reply_rate, limiter.reply_burst) == (17, 19)
    assert (limiter.strangers.rate, limiter.strangers.burst) == (23, 29)
    assert (limiter.known_after, limiter.known_max_gap) == (31, 37)
    assert (core._querier_pings.rate, core._querier_pings.burst) == (41, 43)


def test_has_ip_follows_the_table() -> None:
    table = RoutingTable(b"\x00" * 20, now=0.0)
    c = Contact(b"\x80" * 20, ("10.3.3.3", 1))
    assert not table.has_ip("10.3.3.3")
    table.heard_from(c, 0.0, responded=True)
    assert table.has_ip("10.3.3.3")


# --- isolation of the receive loop -----------------------------------------------------------


async def test_a_raising_callback_cannot_stop_the_node(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mainline_dht.runtime.node")
    with trio.fail_after(60):
        async with open_memory_network(rng=random.Random(0), link=LinkModel(median_rtt=0.01, sigma=0.0)) as net:
            async with AsyncExitStack() as stack:
                a = await stack.enter_async_context(
                    open_node(transport=net.open_transport(), bootstrap=(), rng=random.Random("a"))
                )
                b = await stack.enter_async_context(
                    open_node(transport=net.open_transport(), bootstrap=(), rng=random.Random("b"))
                )
                calls = 0

                def bad(event: object) -> None:
                    nonlocal calls
                    calls += 1
                    raise RuntimeError("a user's bug")

                b.on_peer_announced(bad)
                for port in range(1000, 1020):
                    resp = await a.query(b.local_address, GetPeers(INFO_HASH))
                    assert resp.token is not None
                    await a.query(b.local_address, AnnouncePeer(INFO_HASH, port, resp.token))
                assert calls == 20 and b.stats.callback_errors == 20
                # Still serving, and the error was logged once, not 20 times.
                assert (await a.ping(b.local_address)).sender_id == b.node_id
                records = [r for r in caplog.records if "callback" in r.getMessage()]
                assert len(records) == 1


# --- bounded everything a stranger can grow --------------------------------------------------


def test_one_ip_cannot_take_over_the_peer_store() -> None:
    store = PeerStore(ttl=1e6)
    honest = [bytes([1, n]) + bytes(18) for n in range(200)]
    for n, ih in enumerate(honest):  # a real swarm: several peers each
        for j in range(3):
            store.add(ih, (f"10.5.{n}.{j}", 6881), 0.0)
    # One IP announces 2,000 made-up infohashes, within any rate limit.
    for n in range(2_000):
        store.add(n.to_bytes(20, "big"), ("10.66.6.6", 6881), 1.0 + n)
    assert store.infohashes_of("10.66.6.6") == DEFAULT_MAX_INFOHASHES_PER_IP
    assert all(ih in store for ih in honest)
    # Nor one torrent: its 500 slots hold one entry per IP, whatever the ports.
    for port in range(1, 2_000):
        store.add(honest[0], ("10.66.6.7", port), 5_000.0)
    assert len(store.get(honest[0], 5_000.0, random.Random(0), 1_000)) == 4
    assert store.get(honest[0], 5_000.0, random.Random(0), 1_000).count(("10.66.6.7", 1999)) == 1


def test_a_full_store_evicts_made_up_infohashes_before_real_swarms() -> None:
    store = PeerStore(max_infohashes=100, max_infohashes_per_ip=10)
    for n in range(60):  # 60 swarms of two peers
        ih = bytes([2, n]) + bytes(18)
        store.add(ih, (f"10.6.{n}.1", 1), 0.0)
        store.add(ih, (f"10.6.{n}.2", 1), 0.0)
    # 20 attacker addresses with 10 single-peer infohashes each fill and churn the rest.
    for round_ in range(5):
        for a in range(20):
            for n in range(10):
                store.add(bytes([3, round_, a, n]) + bytes(16), (f"10.99.{a}.1", 1), 1.0)
    assert store.num_infohashes == 100
    assert all(bytes([2, n]) + bytes(18) in store for n in range(60))


def test_a_lookup_caps_peers_per_reply_and_in_all() -> None:
    target = b"\x55" * 20
    seeds = [Contact(bytes([n]) * 20, (f"10.7.0.{n}", 6881)) for n in range(1, 60)]
    lookup = Lookup(target, seeds, now=0.0, k=8, max_peers_per_reply=100, max_peers=250)
    total = 0
    for _ in range(10):
        for contact in lookup.next_queries(0.0):
            junk = [(f"10.{total // 65536 % 256}.{i // 256 % 256}.{i % 256}", 1000 + total) for i in range(1_000)]
            new = lookup.on_response(contact, 0.0, values=junk)
            assert len(new) <= 100
            total += 1
    assert len(lookup.peers) == 250 == lookup.max_peers


def test_votes_count_once_per_ipv4_24_and_ipv6_64() -> None:
    voter = ExternalAddressVoter(min_votes=3)
    # 1,000 addresses of one /64 and one /24 are two votes, not enough.
    for i in range(500):
        assert voter.vote(f"2001:db8:1:2::{i:x}", "198.51.100.7") is None
        assert voter.vote(f"192.0.2.{i % 250}", "198.51.100.7") is None
    assert len(voter) == 2 and voter.current is None
    assert voter.vote("2001:db8:1:3::1", "198.51.100.7") == "198.51.100.7"  # another /64


async def test_a_peer_stream_is_bounded_against_junk_peers(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(120):
        async with open_memory_network(rng=random.Random(0), link=LinkModel(median_rtt=0.01, sigma=0.0)) as net:
            async with AsyncExitStack() as stack:
                a = await stack.enter_async_context(
                    open_node(transport=net.open_transport(), bootstrap=(), rng=random.Random("a"))
                )
                liars = [net.open_transport() for _ in range(3)]
                for n, t in enumerate(liars):
                    a.proto.table.heard_from(
                        Contact(bytes([0x55, n]) + bytes(18), t.local_address), trio.current_time(), responded=True
                    )

                async def lie(t: MemoryTransport, n: int) -> None:
                    # Every reply: 150 fresh junk peers, and no nodes.
                    sent = 0
                    while True:
                        for data, src in await t.receive_batch():
                            msg = bencode.decode_untrusted(data)
                            assert isinstance(msg, dict)
                            values = [pack_peer((f"10.{n}.{(sent + i) >> 8 & 255}.{(sent + i) & 255}", 80)) for i in range(150)]
                            sent += 150
                            body = {b"id": bytes([0x55, n]) + bytes(18), b"token": b"tok", b"values": values}
                            t.send(bencode.encode({b"t": msg[b"t"], b"y": b"r", b"r": body}), src)

                async with trio.open_nursery() as nursery:
                    for n, t in enumerate(liars):
                        nursery.start_soon(lie, t, n)
                    async with a.get_peers(INFO_HASH, max_peers=120) as stream:
                        got = [p async for p in stream]
                    nursery.cancel_scope.cancel()
                # 3 repliers x 150 junk peers: the reply cap (100) and the lookup cap (120) hold.
                assert len(got) == len(set(got)) == 120
                assert len(stream._found_at) == 120
                assert stream._receive.statistics().max_buffer_size == 120


# --- durable state ---------------------------------------------------------------------------


def _state_doc(nodes: list[object]) -> bytes:
    return bencode.encode({b"version": 1, b"id": b"\x07" * 20, b"nodes": nodes, b"saved": 1})


GOOD_NODE = b"\x09" * 20 + bytes([1, 2, 3, 4, 0x1A, 0xE1])


def test_a_partly_bad_state_file_keeps_its_good_entries(tmp_path: Path) -> None:
    path = tmp_path / "t.dat"
    other = b"\x0a" * 20 + bytes([5, 6, 7, 8, 0x1A, 0xE1])
    path.write_bytes(_state_doc([GOOD_NODE, 5, b"x" * 30, other]))
    own, contacts = load_contacts(path)
    assert own == b"\x07" * 20
    assert [c.addr for c in contacts] == [("1.2.3.4", 6881), ("5.6.7.8", 6881)]


async def test_a_file_that_is_not_a_state_file_is_moved_aside_never_overwritten(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    precious = tmp_path / "notes.txt"
    text = b"my notes, not a routing table\n" * 10
    precious.write_bytes(text)
    async with open_memory_network(rng=random.Random(0)) as net:
        async with open_node(
            transport=net.open_transport(), bootstrap=(), state_path=precious, wall_clock=lambda: 1_700_000_000.0
        ) as node:
            node.proto.table.heard_from(Contact(b"\x44" * 20, ("10.4.4.4", 6881)), trio.current_time(), responded=True)
    aside = tmp_path / "notes.txt.corrupt-20231114T221320Z"
    assert aside.read_bytes() == text
    assert load_contacts(precious)[1] == [Contact(b"\x44" * 20, ("10.4.4.4", 6881))]
    # A second bad file in the same second gets a name of its own.
    precious.write_bytes(b"garbage")
    assert move_aside(precious, wall_clock=lambda: 1_700_000_000.0).name == aside.name + "-1"
    assert aside.read_bytes() == text


async def test_a_bad_state_file_that_cannot_be_moved_aside_stops_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_bytes(b"keep me")

    def refuse(path: Path, **_: object) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(state_file, "move_aside", refuse)
    with pytest.raises(StateFileError, match="will not overwrite"):
        async with open_node(("127.0.0.1", 0), bootstrap=(), state_path=precious):
            pass  # pragma: no cover
    assert precious.read_bytes() == b"keep me"


_SAVER = """
import sys, time
from mainline_dht.core.routing_table import RoutingTable
from mainline_dht.runtime.state_file import save_table
from mainline_dht.wire.contact import Contact
table = RoutingTable(b"\\x01" * 20, max_per_ip=None)
for i in range(200):
    table.heard_from(Contact(bytes([i]) * 20, (f"10.0.{i}.1", 6881)), 0.0, responded=True)
n = save_table(table, sys.argv[1])
print(n, flush=True)
while True:
    save_table(table, sys.argv[1])
"""


def test_the_state_file_survives_kill_9_at_any_moment(tmp_path: Path) -> None:
    path = tmp_path / "table.dat"
    rng = random.Random(0)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        saved = int(proc.stdout.readline())
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside a save
        proc.kill()
        proc.wait()
        own, contacts = load_contacts(path)  # whole: the old file or the new one
        assert own == b"\x01" * 20 and len(contacts) == saved > 50
    # Saves killed before their rename left temporary files; once they are old, the next save removes them.
    for leftover in tmp_path.glob(".table.dat.*.tmp"):
        st = leftover.stat()
        os.utime(leftover, (st.st_atime - STALE_TEMP_AGE - 5, st.st_mtime - STALE_TEMP_AGE - 5))
    own, contacts = load_contacts(path)
    table = RoutingTable(own, max_per_ip=None)
    for contact in contacts:
        table.heard_from(contact, 0.0, responded=True)
    save_table(table, path)
    assert os.listdir(tmp_path) == ["table.dat"]


# --- terminal safety -------------------------------------------------------------------------


def test_terminal_safe_escapes_what_a_terminal_would_act_on() -> None:
    assert terminal_safe("µTorrent 3.5 ✓") == "µTorrent 3.5 ✓"
    assert terminal_safe("\x1b[2J\x1b]0;pwned\x07") == "\\x1b[2J\\x1b]0;pwned\\x07"
    assert terminal_safe("a\rb\nc\x9bd\u202ee\u2066") == "a\\x0db\\x0ac\\x9bd\\u202ee\\u2066"
    assert terminal_safe("x" * 1000) == "x" * 300 + "…"


def test_ping_escapes_the_remote_error_text(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as evil:
        evil.bind(("127.0.68.99", 0))
        evil.settimeout(10)

        def answer() -> None:
            data, src = evil.recvfrom(2048)
            tid = bencode.decode_untrusted(data)[b"t"]  # type: ignore[index]
            msg = b"\x1b]0;owned\x07\x1b[2Jgone\r"
            evil.sendto(bencode.encode({b"t": tid, b"y": b"e", b"e": [201, msg], b"v": b"\x1b[31"}), src)

        import threading

        thread = threading.Thread(target=answer)
        thread.start()
        code = cli.main(["ping", f"127.0.68.99:{evil.getsockname()[1]}", "--timeout", "5"])
        thread.join()
    out, err = capsys.readouterr()
    assert code == cli.EXIT_ERROR
    assert "\x1b" not in err + out and "\r" not in err + out and "\x07" not in err + out
    assert "\\x1b]0;owned\\x07\\x1b[2Jgone\\x0d" in err


# --- the decoder under a flood ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"l" * 30_000 + b"e" * 30_000, b"d1:a" * 5_000 + b"i1e" + b"e" * 5_000, b"d1:al" + b"l" * 40 + b"e" * 42],
)
def test_deep_nesting_is_refused_before_it_is_built(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from mainline_dht.wire import bencode as bencode_module

    built = []
    monkeypatch.setattr(bencode_module, "_bdecode", lambda d: built.append(d))
    with pytest.raises(DecodeError, match="deeper"):
        bencode_module.decode_untrusted(data)
    assert built == []
    # Big integers and strings full of b"e" are not nesting.
    monkeypatch.undo()
    deep_ok = bencode.encode([[[b"e" * 100, 10**200]] * 10])
    assert bencode_module.decode_untrusted(deep_ok) == [[[b"e" * 100, 10**200]] * 10]


def test_a_source_we_query_cannot_flood_past_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making us query it (a verification ping) does not exempt a flooder."""
    decoded = 0
    real = protocol_module.decode_untrusted

    def counting(data: bytes) -> object:
        nonlocal decoded
        decoded += 1
        return real(data)

    monkeypatch.setattr(protocol_module, "decode_untrusted", counting)
    core = make_core("s")
    key = core.send_query(Ping(), FLOODER, 0.0)
    core.datagrams_to_send()
    answered = sum(len(ask(core, raw_query(b"ping", {}), FLOODER, i / 10_000)) for i in range(5_000))
    burst = int(core.config.query_burst_per_ip)
    assert answered == decoded == burst
    # Our reply still gets through the ban, found by its transaction ID alone.
    core.receive_datagram(_response(key[0], b"\x05" * 20), FLOODER, 0.6)
    assert decoded == burst + 1 and core.stats.responses_received == 1
