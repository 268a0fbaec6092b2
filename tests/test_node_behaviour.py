"""Tests of mainline_dht.core.behaviour through NodeProtocol: the node's own rules, pure.

Lookups driven by the core, the bootstrap plan, the refresh, maintenance and save
schedule, and the announce choice, on cores linked by the fake wire of
tests/helpers.py with scripted time: no trio, no sockets, no clock.
"""

from __future__ import annotations

import random

import pytest

from helpers import Datagram, ProtocolNet, closest_ids, drain_events, make_core
from mainline_dht.core.behaviour import (
    BOOTSTRAP_RETRY_PAUSE,
    MAINTENANCE_INTERVAL,
    PARALLEL_REFRESHES,
    QUESTIONABLE_PINGS_PER_ROUND,
    REBOOTSTRAP_BACKOFF,
    SAVE_INTERVAL,
)
from mainline_dht.core.events import (
    AnnounceFinished,
    BootstrapDue,
    BootstrapFailure,
    BootstrapFinished,
    Event,
    ExternalAddressChanged,
    LookupFinished,
    LookupPeersFound,
    RefreshFinished,
    SaveDue,
)
from mainline_dht.core.protocol import NodeConfig, NodeProtocol
from mainline_dht.errors import LocalProtocolError
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Address, Contact
from mainline_dht.wire.krpc import FindNode, GetPeers, Ping, pack_peer

INFO_HASH = bytes(range(20))


def _addr(i: int) -> Address:
    return (f"10.0.{i // 250}.{i % 250 + 1}", 6881)


def _net(n: int, *, seed: int = 0, fill: bool = True) -> ProtocolNet:
    """``n`` cores; with ``fill``, each table holds a random third of the others as answered contacts."""
    net = ProtocolNet()
    for i in range(n):
        net.add(_addr(i), make_core(f"{seed}:{i}"))
    if fill:
        rng = random.Random(seed)
        contacts = [net.contact(a) for a in net.cores]
        for core in net.cores.values():
            for c in rng.sample(contacts, n // 3):
                if c.id != core.node_id:
                    core.table.heard_from(c, net.now, responded=True)
    return net


def _queries(log: list[Datagram], method: bytes, src: Address | None = None) -> list[Datagram]:
    return [
        d
        for d in log
        if d.message.get(b"y") == b"q" and d.message.get(b"q") == method and (src is None or d.source == src)
    ]


def _events_of(core: NodeProtocol, kind: type) -> list[Event]:
    return [e for e in drain_events(core) if type(e) is kind]


# --- lookups --------------------------------------------------------------------------------


def test_a_find_node_lookup_runs_in_the_core_and_converges() -> None:
    net = _net(60, seed=1)
    a = net.cores[_addr(0)]
    target = random.Random(5).randbytes(20)
    op = a.start_lookup(target, FindNode(target), net.now)
    net.deliver()
    events = drain_events(a)
    [finished] = [e for e in events if type(e) is LookupFinished]
    assert finished.op == op and finished.target == target and finished.at == net.now
    others = [c.node_id for addr, c in net.cores.items() if addr != _addr(0)]
    assert [c.id for c, _ in finished.closest] == closest_ids(others, target, 8)
    assert finished.replies == len(_queries(net.log, b"find_node", _addr(0)))
    assert a.lookup(op) is not None and a.lookup(op).done  # type: ignore[union-attr]
    assert a.outstanding == 0
    # The lookup went through the target's bucket: it counts as refreshed.
    assert a.table.buckets_to_refresh(net.now + 15 * 60 - 1) == []


def test_announce_goes_to_the_closest_with_tokens_and_get_peers_streams_the_peer() -> None:
    net = _net(60, seed=2)
    a, b = net.cores[_addr(3)], net.cores[_addr(40)]
    op = a.start_announce(INFO_HASH, 51413, net.now)
    net.deliver()
    [done] = _events_of(a, AnnounceFinished)
    assert done.op == op and done.sent == 8 and done.accepted == 8
    holders = [addr for addr, c in net.cores.items() if c.peer_store.num_peers]
    announced_to = [d.destination for d in _queries(net.log, b"announce_peer", _addr(3))]
    assert sorted(holders) == sorted(announced_to)
    everyone = [c.node_id for addr, c in net.cores.items() if addr != _addr(3)]
    assert sorted(net.cores[h].node_id for h in holders) == sorted(closest_ids(everyone, INFO_HASH, 8))

    op = b.start_lookup(INFO_HASH, GetPeers(INFO_HASH), net.now)
    net.deliver()
    events = [e for e in drain_events(b) if getattr(e, "op", None) == op]
    assert type(events[0]) is LookupPeersFound and events[0].peers == ((_addr(3)[0], 51413),)
    assert [type(e) for e in events[1:]] == [LookupFinished]  # each peer once, though 8 nodes hold it
    lookup = b.lookup(op)
    assert lookup is not None and lookup.peers == [(_addr(3)[0], 51413)]


def test_announce_with_a_finished_lookup_uses_its_responders_and_checks_the_port() -> None:
    net = _net(40, seed=3)
    a = net.cores[_addr(0)]
    with pytest.raises(LocalProtocolError):
        a.start_announce(INFO_HASH, 70000, net.now)
    with pytest.raises(LocalProtocolError):
        a.start_announce(b"short", 1, net.now)
    op = a.start_lookup(INFO_HASH, GetPeers(INFO_HASH), net.now)
    net.deliver()
    lookup = a.lookup(op)
    assert lookup is not None and lookup.done
    drain_events(a)
    before = len(_queries(net.log, b"get_peers", _addr(0)))
    a.start_announce(INFO_HASH, None, net.now, lookup=lookup)
    net.deliver()
    assert len(_queries(net.log, b"get_peers", _addr(0))) == before  # no second lookup
    sent = _queries(net.log, b"announce_peer", _addr(0))
    assert [d.destination for d in sent] == [c.addr for c, tok in lookup.closest_responders(8) if tok]
    assert all(d.message[b"a"][b"implied_port"] == 1 for d in sent)
    [done] = _events_of(a, AnnounceFinished)
    assert done.accepted == len(sent) == 8


def test_dead_nodes_hold_a_lookup_only_until_their_soft_and_hard_timeouts() -> None:
    net = _net(40, seed=4)
    a = net.cores[_addr(0)]
    # Half the network goes silent: their datagrams are lost.
    dead = {_addr(i) for i in range(1, 40, 2)}
    target = random.Random(1).randbytes(20)
    op = a.start_lookup(target, FindNode(target), net.now)

    def drop(d: Datagram) -> bool:
        return d.destination in dead

    finished: list[Event] = []
    for _ in range(100):
        net.deliver(drop=drop)
        finished += [e for e in drain_events(a) if type(e) is LookupFinished]
        if finished:
            break
        t = a.get_timer()
        assert t is not None
        # The core names the next soft timeout (before the hard one, 3 s on).
        assert t <= net.now + a.config.lookup_query_timeout
        net.now = t
        a.handle_timer(t)
    [done] = finished
    assert done.op == op  # type: ignore[union-attr]
    assert all(c.addr not in dead for c, _ in done.closest)  # type: ignore[union-attr]
    stats = a.lookup(op).stats  # type: ignore[union-attr]
    assert stats.soft_timeouts > 0 and stats.finished_at is not None
    assert stats.finished_at - stats.started_at < a.config.lookup_query_timeout * 3


def test_an_abandoned_lookup_reports_nothing_and_its_queries_run_out() -> None:
    net = _net(40, seed=5)
    a = net.cores[_addr(0)]
    op = a.start_lookup(INFO_HASH, GetPeers(INFO_HASH), net.now)
    assert a.outstanding > 0
    a.abandon(op)
    net.deliver()
    assert [e for e in drain_events(a) if getattr(e, "op", None) == op] == []
    assert a.outstanding == 0  # the answers were taken (and taught the table)
    assert a.lookup(op) is None


def test_a_lookup_with_nothing_to_ask_finishes_at_once() -> None:
    a = make_core("alone")
    op = a.start_lookup(INFO_HASH, GetPeers(INFO_HASH), 0.0)
    [finished] = drain_events(a)
    assert finished == LookupFinished(op, INFO_HASH, (), 0, 0.0)
    assert a.datagrams_to_send() == []
    lookup = a.lookup(op)
    assert lookup is not None and lookup.done


# --- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_pings_saved_contacts_then_asks_the_routers_and_refreshes() -> None:
    net = _net(50, seed=6)
    router_addr = _addr(0)
    newcomer_addr = ("10.9.0.1", 6881)
    new = net.add(newcomer_addr, make_core("new"))
    saved = [net.contact(_addr(i)) for i in (5, 6)]
    new.configure_bootstrap(saved, routers_configured=True)
    op = new.start_bootstrap(net.now, timeout=5.0, wait_for_routers=True)
    out = new.datagrams_to_send()
    # Saved contacts are pinged at once; the lookup waits for the routers.
    assert sorted(dst for _, dst in out) == sorted(c.addr for c in saved)
    assert all(b"4:ping" in data for data, _ in out)
    for data, dst in out:
        net.cores[dst].receive_datagram(data, newcomer_addr, net.now)
    new.set_routers([router_addr], net.now)
    assert new.routers == [router_addr]
    net.deliver()
    [done] = _events_of(new, BootstrapFinished)
    assert done == BootstrapFinished(op, None, len(new.table), 2, 1, net.now)
    assert new.joined and len(new.table) >= 16
    # The router was asked (find_node of our ID) but never entered the table.
    to_router = [d for d in _queries(net.log, b"find_node", newcomer_addr) if d.destination == router_addr]
    assert to_router and to_router[0].message[b"a"][b"target"] == new.node_id
    assert all(e.addr != router_addr for e in new.table)
    # The refresh after joining searched the buckets that were not full.
    assert len({d.message[b"a"][b"target"] for d in _queries(net.log, b"find_node", newcomer_addr)}) > 1


def test_a_silent_router_gets_retries_until_the_timeout_then_the_failure_is_data() -> None:
    net = ProtocolNet()
    a = net.add(_addr(0), make_core("a"))
    a.configure_bootstrap([], routers_configured=True)
    router = ("10.8.0.1", 6881)  # no core there: every query vanishes
    a.set_routers([router], net.now)
    op = a.start_bootstrap(net.now, timeout=10.0)
    for _ in range(200):
        net.deliver()
        events = drain_events(a)
        if any(type(e) is BootstrapFinished for e in events):
            break
        t = a.get_timer()
        assert t is not None and t > net.now
        net.now = t
        a.handle_timer(t)
    [done] = [e for e in events if type(e) is BootstrapFinished]
    assert done == BootstrapFinished(op, BootstrapFailure.NO_ANSWER, 0, 0, 1, 10.0)
    asked = [d for d in net.log if d.destination == router]
    # A new try each time the last one timed out (3 s), after a pause of 0.5 s:
    # at 0, 3.5 and 7; the deadline at 10 ends the third.
    assert a.config.lookup_query_timeout == 3.0 and BOOTSTRAP_RETRY_PAUSE == 0.5
    assert len(asked) == 3
    assert not a.joined and a.rejoin_delay == REBOOTSTRAP_BACKOFF[0]


def test_no_resolved_router_and_no_saved_contact_is_a_distinct_failure() -> None:
    a = make_core("a")
    a.configure_bootstrap([], routers_configured=True)
    op = a.start_bootstrap(0.0, timeout=3.0, wait_for_routers=True)
    assert drain_events(a) == []
    a.set_routers([], 1.0)
    assert drain_events(a) == [BootstrapFinished(op, BootstrapFailure.NOTHING_RESOLVED, 0, 0, 0, 1.0)]


def test_saved_contacts_that_answer_are_enough_to_join_without_routers() -> None:
    net = _net(30, seed=7)
    new = net.add(("10.9.0.1", 6881), make_core("new"))
    saved = [net.contact(_addr(i)) for i in range(10)]
    new.configure_bootstrap(saved, routers_configured=False)
    op = new.start_bootstrap(net.now, timeout=5.0)
    net.deliver()
    [done] = _events_of(new, BootstrapFinished)
    assert done.op == op and done.failure is None and done.saved_contacts == 10 and done.routers == 0
    assert len(new.table) >= 10


# --- refresh, maintenance, saving --------------------------------------------------------------


def test_refresh_runs_at_most_the_parallel_limit_of_lookups_at_once() -> None:
    net = _net(60, seed=8)
    a = net.add(("10.9.0.1", 6881), make_core("fresh"))
    for i in range(3):
        a.table.heard_from(net.contact(_addr(i)), net.now, responded=True)
    a.table.heard_from(net.contact(_addr(3)), net.now, responded=True)
    # Many buckets far from our ID, each with one contact: all "not full".
    op = a.start_refresh(net.now, not_full=True)
    first = a.datagrams_to_send()
    targets = {bytes(Datagram(("10.9.0.1", 6881), dst, data).message[b"a"][b"target"]) for data, dst in first}
    assert 1 <= len(targets) <= PARALLEL_REFRESHES
    for data, dst in first:
        net.cores[dst].receive_datagram(data, ("10.9.0.1", 6881), net.now)
    net.deliver()
    [done] = _events_of(a, RefreshFinished)
    assert done.op == op and done.buckets >= 1


def test_maintenance_pings_questionable_contacts_and_refreshes_idle_buckets_once_joined() -> None:
    net = _net(60, seed=9)
    a = net.cores[_addr(0)]
    a.configure_bootstrap([], routers_configured=False)
    net.now = 16 * 60.0  # every contact has been silent for 15 minutes: questionable
    a.handle_timer(net.now)
    sent = [Datagram(_addr(0), dst, data) for data, dst in a.datagrams_to_send()]
    pings = [d for d in sent if d.message[b"q"] == b"ping"]
    assert len(pings) == QUESTIONABLE_PINGS_PER_ROUND
    assert not [d for d in sent if d.message[b"q"] == b"find_node"]  # not joined: no refresh
    # Once joined, idle buckets are refreshed too (two per round at most).
    b = net.cores[_addr(1)]
    b.configure_bootstrap([], routers_configured=False)
    b.start_bootstrap(0.0, timeout=1.0)
    net.now = 0.0
    net.deliver()
    assert b.joined
    drain_events(b)
    net.now = 20 * 60.0
    b.handle_timer(net.now)
    sent = [Datagram(_addr(1), dst, data) for data, dst in b.datagrams_to_send()]
    targets = {bytes(d.message[b"a"][b"target"]) for d in sent if d.message[b"q"] == b"find_node"}
    assert 1 <= len(targets) <= 2


def test_an_empty_table_asks_for_a_bootstrap_with_backoff_and_saving_is_scheduled() -> None:
    a = make_core("a", now=0.0)
    a.configure_bootstrap([], routers_configured=True)
    a.handle_timer(MAINTENANCE_INTERVAL)
    assert drain_events(a) == [BootstrapDue(MAINTENANCE_INTERVAL)]
    # The bootstrap fails (the router is silent): the next request waits for the backoff.
    a.set_routers([("10.8.0.1", 6881)], MAINTENANCE_INTERVAL)
    a.start_bootstrap(MAINTENANCE_INTERVAL, timeout=1.0)
    now = MAINTENANCE_INTERVAL
    while not any(type(e) is BootstrapFinished for e in drain_events(a)):
        t = a.get_timer()
        assert t is not None
        now = t
        a.handle_timer(now)
    assert now == MAINTENANCE_INTERVAL + 1.0
    a.handle_timer(2 * MAINTENANCE_INTERVAL)  # 9 s after the failure: backoff is 5 s, so due
    assert drain_events(a) == [BootstrapDue(2 * MAINTENANCE_INTERVAL)]
    # A node with a table asks for a save every SAVE_INTERVAL.
    b = make_core("b")
    b.table.heard_from(Contact(bytes(20), ("10.0.0.9", 6881)), 0.0, responded=True)
    saves: list[float] = []
    t = 0.0
    while t < 2 * SAVE_INTERVAL + MAINTENANCE_INTERVAL:
        t += MAINTENANCE_INTERVAL
        b.handle_timer(t)
        saves += [e.at for e in drain_events(b) if type(e) is SaveDue]
        b.datagrams_to_send()
    assert saves == [SAVE_INTERVAL, 2 * SAVE_INTERVAL]
    # Saved contacts and an empty table: keep the file as it was.
    c = make_core("c")
    assert c.save_wanted()
    c.configure_bootstrap([Contact(bytes(20), ("10.0.0.9", 6881))], routers_configured=False)
    assert not c.save_wanted()


def test_lookups_seed_from_the_routers_only_while_the_table_is_thin() -> None:
    a = make_core("a")
    a.configure_bootstrap([], routers_configured=True)
    assert a.wants_routers
    router = ("10.8.0.1", 6881)
    a.set_routers([router], 0.0)
    assert not a.wants_routers
    a.start_lookup(INFO_HASH, GetPeers(INFO_HASH), 0.0)
    assert [dst for _, dst in a.datagrams_to_send()] == [router]
    rng = random.Random(3)
    for i in range(20):
        a.table.heard_from(Contact(rng.randbytes(20), _addr(i)), 0.0, responded=True)
    a.start_lookup(INFO_HASH, GetPeers(INFO_HASH), 0.0)
    assert router not in [dst for _, dst in a.datagrams_to_send()]
    # Routers never enter the table, however they reach us.
    assert router in a.router_addresses


def test_bootstrap_timer_is_part_of_get_timer() -> None:
    a = make_core("a", config=NodeConfig())
    a.configure_bootstrap([], routers_configured=True)
    a.set_routers([("10.8.0.1", 6881)], 0.0)
    a.start_bootstrap(0.0, timeout=0.2)
    # The first wake-up: the lookup's soft timeout or the bootstrap deadline, whichever is first.
    assert a.get_timer() == pytest.approx(0.2)
    a.handle_timer(0.2)
    # Nothing answered by the deadline: no time left for a retry, the bootstrap fails.
    assert [type(e) for e in drain_events(a)] == [BootstrapFinished]


def test_a_new_bep42_node_id_is_looked_up_then_the_table_refreshed_and_saved() -> None:
    a = make_core("bep42")
    rng = random.Random(4)
    for i in range(40):
        a.table.heard_from(Contact(rng.randbytes(20), (f"10.1.{i}.1", 6881)), 0.0, responded=True)
    old_id = a.node_id
    for i in range(10):  # ten repliers agree on our public address
        src = (f"10.2.{i}.1", 6881)
        key = a.send_query(Ping(), src, 1.0)
        a.datagrams_to_send()
        reply = {b"t": key[0], b"y": b"r", b"r": {b"id": rng.randbytes(20)}, b"ip": pack_peer(("21.43.65.87", 6881))}
        a.receive_datagram(bencode.encode(reply), src, 1.0)
    [changed] = [e for e in drain_events(a) if type(e) is ExternalAddressChanged]
    assert changed.new_node_id == a.node_id != old_id
    # The core looks its new ID up by itself, at once.
    sent = [Datagram(("10.0.0.1", 6881), dst, data) for data, dst in a.datagrams_to_send()]
    lookups = [d for d in sent if d.message[b"q"] == b"find_node"]
    assert lookups and all(d.message[b"a"][b"target"] == a.node_id for d in lookups)
    # Nobody answers (the contacts are made up): the lookup ends by timeouts, the
    # buckets that are not full are refreshed, then the core asks for a save.
    now, saves = 1.0, []
    for _ in range(1000):
        t = a.get_timer()
        assert t is not None
        now = t
        a.handle_timer(now)
        a.datagrams_to_send()
        saves = [e for e in drain_events(a) if type(e) is SaveDue]
        if saves:
            break
    assert saves and saves[0].at < 60.0  # (long before the save schedule's 300 s)


def test_an_announce_the_network_lost_is_sent_once_more() -> None:
    """A lost ``announce_peer`` (or its answer) costs the store unless it is sent again."""
    net = _net(60, seed=2)
    a = net.cores[_addr(3)]
    op = a.start_announce(INFO_HASH, 51413, net.now)
    lost: list[Address] = []

    def drop(d: Datagram) -> bool:
        if not lost and d.message.get(b"q") == b"announce_peer":
            lost.append(d.destination)
            return True
        return False

    net.deliver(drop=drop)
    assert lost and _events_of(a, AnnounceFinished) == []
    net.advance(a.config.lookup_query_timeout + 0.01)
    [done] = _events_of(a, AnnounceFinished)
    assert done.op == op and done.sent == 8 and done.accepted == 8
    assert len(_queries(net.log, b"announce_peer", _addr(3))) == 9
    assert [d.destination for d in _queries(net.log, b"announce_peer", _addr(3))].count(lost[0]) == 2
    assert net.cores[lost[0]].peer_store.num_peers == 1


def test_an_announce_asks_the_lookups_stragglers_again_and_stores_on_the_closest() -> None:
    """With early finish, a lookup leaves behind a close node whose answer was lost;
    the announce asks it again for a token, so the peer lands on the k closest."""
    net = _net(60, seed=2)
    a = net.cores[_addr(3)]
    everyone = {c.node_id: addr for addr, c in net.cores.items() if addr != _addr(3)}
    closest = [everyone[i] for i in closest_ids(list(everyone), INFO_HASH, 8)]
    victim = closest[0]
    dropped: list[Datagram] = []

    def drop(d: Datagram) -> bool:
        if not dropped and d.source == victim and d.destination == _addr(3) and b"token" in d.message.get(b"r", {}):
            dropped.append(d)  # its get_peers answer
            return True
        return False

    op = a.start_lookup(INFO_HASH, GetPeers(INFO_HASH), net.now)
    for _ in range(50):
        net.deliver(drop=drop)
        if _events_of(a, LookupFinished):
            break
        t = a.get_timer()
        assert t is not None
        net.now = t
        a.handle_timer(t)
    lookup = a.lookup(op)
    assert dropped and lookup is not None and lookup.done
    assert victim in [x.addr for x in lookup.stragglers(8)]
    assert victim not in [x.addr for x, _ in lookup.closest_responders(8)]
    asked = len([d for d in _queries(net.log, b"get_peers", _addr(3)) if d.destination == victim])
    a.start_announce(INFO_HASH, 51413, net.now, lookup=lookup)
    net.deliver()
    [done] = _events_of(a, AnnounceFinished)
    assert len([d for d in _queries(net.log, b"get_peers", _addr(3)) if d.destination == victim]) == asked + 1
    holders = sorted(addr for addr, core in net.cores.items() if core.peer_store.num_peers)
    assert holders == sorted(closest) and done.accepted == 8
