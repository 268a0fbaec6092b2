"""Hostile traffic: every limit and defence of the node, proved quickly.

The inbound policy (per-IP budgets with bans, the global reply budget served by
trust, dropping before decoding), the bounds on what a stranger can grow, and
the isolation of the receive loop from user callbacks and bugs.
"""

from __future__ import annotations

import logging
import random
from contextlib import AsyncExitStack

import pytest
import trio
import trio.testing

from helpers import ask, make_core, raw_query
from mainline_dht.core import protocol as protocol_module
from mainline_dht.core.events import ResponseReceived
from mainline_dht.core.protocol import NodeConfig
from mainline_dht.core.routing_table import RoutingTable
from mainline_dht.runtime.node import open_node
from mainline_dht.testing import LinkModel, open_memory_network
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Contact
from mainline_dht.wire.krpc import AnnouncePeer, GetPeers, Ping

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
    assert limiter is not None and limiter.banned(FLOODER[0], 0.0) and limiter.reply_tokens(0.0) < 5
    key = core.send_query(Ping(), FLOODER, 0.0)
    core.datagrams_to_send()
    core.receive_datagram(_response(key[0], b"\x05" * 20), FLOODER, 0.1)
    events = []
    while (e := core.next_event()) is not None:
        events.append(e)
    assert [type(e) for e in events] == [ResponseReceived]
    # Queries from the pending address are still charged (and refused while banned).
    key2 = core.send_query(Ping(), FLOODER, 0.2)
    assert ask(core, raw_query(b"ping", {}), FLOODER, 0.3) == []
    core.cancel(key2)
    assert sum(core._pending_addrs.values()) == core.outstanding  # bookkeeping follows the queries


def test_a_spoofed_flood_is_not_reflected_and_table_contacts_are_served_first() -> None:
    cfg = NodeConfig(reply_rate=200, reply_burst=200)
    core = make_core("s", config=cfg)
    honest = Contact(b"\x33" * 20, ("10.1.2.3", 6881))
    core.table.heard_from(honest, 0.0, responded=True)
    assert core.table.has_ip(honest.addr[0])
    answered_spoofed = answered_honest = 0
    # 5 s of 4,000 datagrams a second from 20,000 distinct sources, and the honest contact at 20/s.
    for ms in range(5_000):
        now = ms / 1000
        for j in range(4):
            i = ms * 4 + j
            src = (f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 1000 + j)
            answered_spoofed += len(ask(core, raw_query(b"find_node", {b"target": INFO_HASH}), src, now))
        if ms % 50 == 0:
            answered_honest += len(ask(core, raw_query(b"ping", {}, sender=honest.id), honest.addr, now))
    assert answered_honest == 100
    # At most the global budget was answered: we reflect 200 replies a second, not 4,000.
    assert answered_spoofed <= 200 + 5 * 200
    assert core.stats.queries_rate_limited >= 20_000 - answered_spoofed - 100


def test_a_heavy_honest_source_is_answered_beside_a_flood() -> None:
    core = make_core("s")
    answered = sent = 0
    for ms in range(10_000):  # 10 s
        now = ms / 1000
        for j in range(3):  # 3,000 a second from 30 flooding sources
            ask(core, raw_query(b"ping", {}), (f"10.88.0.{(ms * 3 + j) % 30}", 6881), now)
        if ms % 50 == 0:  # 20 a second from one (NAT) address, never in our table
            sent += 1
            answered += len(ask(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH}), ("10.9.9.9", 7000), now))
    assert answered == sent == 200


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
    )
    limiter = make_core("s", config=cfg).query_limiter
    assert limiter is not None
    assert (limiter.rate, limiter.burst, limiter.ban_seconds, limiter.max_tracked) == (7, 9, 11, 13)
    assert (limiter.reply_rate, limiter.reply_burst) == (17, 19)


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
