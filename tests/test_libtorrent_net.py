"""Tests for mainline_dht.testing.libtorrent_net: a libtorrent swarm on loopback.

The swarm tests need libtorrent (pip ``libtorrent``) and skip without it; they
bind free ports on 127.0.5.x only. The whole file takes about a second.
"""

from __future__ import annotations

import hashlib
import ipaddress
import sys
from collections.abc import Iterator

import pytest

import libtorrent_net
from libtorrent_net import (
    DHTCounters,
    LibtorrentSwarm,
    libtorrent_available,
    start_swarm,
)

needs_libtorrent = pytest.mark.skipif(
    not libtorrent_available(), reason="libtorrent is not installed: pip install libtorrent"
)

SWARM_SIZE = 8
INFO_HASH = hashlib.sha1(b"mainline_dht test_libtorrent_net").digest()
ANNOUNCED_PORT = 4242


# -- without libtorrent ---------------------------------------------------------


def test_loopback_addresses_count_up_and_skip_network_and_broadcast_octets() -> None:
    ips = libtorrent_net._loopback_addresses("127.0.1.253", 4)
    assert ips == ["127.0.1.253", "127.0.1.254", "127.0.2.1", "127.0.2.2"]


def test_loopback_addresses_refuse_non_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        libtorrent_net._loopback_addresses("10.0.0.1", 1)


def test_loopback_addresses_refuse_to_leave_127_slash_8() -> None:
    with pytest.raises(ValueError, match="127.0.0.0/8"):
        libtorrent_net._loopback_addresses("127.255.255.250", 10)


def test_missing_libtorrent_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "libtorrent", None)  # makes `import libtorrent` fail
    monkeypatch.delenv("CI", raising=False)
    assert not libtorrent_available()
    with pytest.raises(RuntimeError, match="pip install libtorrent"):
        start_swarm(2)


def test_missing_libtorrent_is_an_error_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI must run the interop tests: there a missing libtorrent fails them instead of skipping them.
    monkeypatch.setitem(sys.modules, "libtorrent", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match="pip install libtorrent"):
        libtorrent_available()


def test_counters_subtract_field_by_field() -> None:
    before = DHTCounters.from_session_stats({"dht.dht_get_peers_out": 3, "dht.dht_ping_out": 1})
    after = DHTCounters.from_session_stats({"dht.dht_get_peers_out": 10, "dht.dht_ping_out": 1})
    delta = after - before
    assert delta.get_peers_out == 7
    assert delta.ping_out == 0
    assert delta.queries_out == 7


def test_start_swarm_rejects_empty_swarm() -> None:
    with pytest.raises(ValueError):
        start_swarm(0)


# -- with libtorrent ----------------------------------------------------------------


@pytest.fixture(scope="module")
def swarm() -> Iterator[LibtorrentSwarm]:
    if not libtorrent_available():
        pytest.skip("libtorrent is not installed: pip install libtorrent")
    with start_swarm(SWARM_SIZE, first_ip="127.0.5.1", port=0, seed=1) as sw:
        sw.wait_for_tables(min_nodes=4, timeout=15.0)
        yield sw


@pytest.mark.interop
@needs_libtorrent
def test_swarm_binds_one_loopback_address_per_node(swarm: LibtorrentSwarm) -> None:
    addrs = swarm.addresses
    assert len(addrs) == len(swarm) == SWARM_SIZE
    assert len({ip for ip, _ in addrs}) == SWARM_SIZE
    for ip, port in addrs:
        assert ipaddress.ip_address(ip).is_loopback
        assert 0 < port < 65536


@pytest.mark.interop
@needs_libtorrent
def test_routing_tables_hold_other_swarm_members(swarm: LibtorrentSwarm) -> None:
    table = swarm.routing_table(3)
    assert len(table) >= 4
    members = set(swarm.addresses)
    own = swarm.node_id(3)
    for nid, addr in table:
        assert len(nid) == 20 and nid != own
        assert addr in members and addr != swarm.addresses[3]


@pytest.mark.interop
@needs_libtorrent
def test_announce_from_one_node_is_found_by_another(swarm: LibtorrentSwarm) -> None:
    sent = swarm.announce(0, INFO_HASH, ANNOUNCED_PORT)
    assert sent >= 1  # announce_peer queries libtorrent sent to the closest nodes
    seen = [a for i in range(len(swarm)) for a in swarm.incoming_announces(i)]
    assert any(a.info_hash == INFO_HASH and a.port == ANNOUNCED_PORT for a in seen)

    result = swarm.get_peers(SWARM_SIZE - 1, INFO_HASH, timeout=10.0)
    assert result.stats.completed
    assert (swarm.addresses[0][0], ANNOUNCED_PORT) in result.peers
    assert result.first_peer_elapsed is not None
    assert result.first_peer_elapsed <= result.elapsed
    assert result.stats.get_peers_sent >= 1
    assert result.stats.replies_with_peers >= 1


@pytest.mark.interop
@needs_libtorrent
def test_get_peers_for_unknown_hash_finds_nothing_but_still_queries(swarm: LibtorrentSwarm) -> None:
    result = swarm.get_peers(2, hashlib.sha1(b"nobody has this").digest())
    peers, _elapsed, first, stats = result
    assert stats.completed and peers == [] and first is None
    assert stats.get_peers_sent >= 1
    assert stats.replies_with_peers == 0


@pytest.mark.interop
@needs_libtorrent
def test_sample_infohashes_reply_is_reported(swarm: LibtorrentSwarm) -> None:
    target = swarm.addresses[1]
    reply = swarm.sample_infohashes(4, target, bytes(20))
    assert reply.addr == target
    assert reply.num_infohashes >= len(reply.samples)
    assert reply.interval > 0
    assert all(len(s) == 20 for s in reply.samples)


@pytest.mark.interop
@needs_libtorrent
def test_get_peers_rejects_bad_hash_length(swarm: LibtorrentSwarm) -> None:
    with pytest.raises(ValueError):
        swarm.get_peers(0, b"short")


@needs_libtorrent
def test_close_is_idempotent() -> None:
    sw = start_swarm(1, first_ip="127.0.5.100", port=0, warm_up=False)
    assert sw.node_id(0) and len(sw.node_id(0)) == 20
    sw.close()
    sw.close()
    assert len(sw) == 0
