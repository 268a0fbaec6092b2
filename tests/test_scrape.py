"""BEP 33 scrapes: the bloom filter against the BEP's test vector, the estimate,
merging, and the protocol core answering ``scrape``/``noseed`` and ``seed``.

Pure: no trio, no sockets. Addresses are 10.x.y.z and the BEP's documentation ranges.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from helpers import ask, make_core, raw_query
from mainline_dht.core.scrape import BLOOM_BYTES, BloomFilter, ScrapeCollector, estimate, merge
from mainline_dht.wire.contact import Address
from mainline_dht.wire.krpc import pack_peer, unpack_peer_untrusted

#: BEP 33's test vector: 192.0.2.0-255 and 2001:DB8::-2001:DB8::3E7 inserted.
BEP33_FILTER = bytes.fromhex(
    "F6C3F5EA A07FFD91 BDE89F77 7F26FB2B FF37BDB8 FB2BBAA2 FD3DDDE7 BACFFF75 EE7CCBAE"
    "FE5EEDB1 FBFAFF67 F6ABFF5E 43DDBCA3 FD9B9FFD F4FFD3E9 DFF12D1B DF59DB53 DBE9FA5B"
    "7FF3B8FD FCDE1AFB 8BEDD7BE 2F3EE71E BBBFE93B CDEEFE14 8246C2BC 5DBFF7E7 EFDCF24F"
    "D8DC7ADF FD8FFFDF DDFFF7A4 BBEEDF5C B95CE81F C7FCFF1F F4FFFFDF E5F7FDCB B7FD79B3"
    "FA1FC77B FE07FFF9 05B7B7FF C7FEFEFF E0B8370B B0CD3F5B 7F2BD93F EB4386CF DD6F7FD5"
    "BFAF2E9E BFFFFEEC D67ADBF7 C67F17EF D5D75EBA 6FFEBA7F FF47A91E B1BFBB53 E8ABFB57"
    "62ABE8FF 237279BF EFBFEEF5 FFC5FEBF DFE5ADFF ADFEE1FB 737FFFFB FD9F6AEF FEEE76B6"
    "FD8F72EF".replace(" ", "")
)


def bep33_ips() -> list[str]:
    v6 = int(ipaddress.IPv6Address("2001:db8::"))
    return [f"192.0.2.{i}" for i in range(256)] + [str(ipaddress.IPv6Address(v6 + i)) for i in range(0x3E8)]


def test_bloom_filter_matches_the_bep33_vector() -> None:
    ips = bep33_ips()
    assert len(ips) == 1256 and len(BEP33_FILTER) == BLOOM_BYTES
    bloom = BloomFilter.of(ips)
    assert bytes(bloom) == BEP33_FILTER
    assert bloom.estimate() == pytest.approx(1224.9308, abs=1e-4)
    assert all(ip in bloom for ip in ips)


def test_packed_and_text_addresses_are_the_same_element() -> None:
    assert bytes(BloomFilter.of(["192.0.2.7"])) == bytes(BloomFilter.of([bytes([192, 0, 2, 7])]))
    with pytest.raises(ValueError):
        BloomFilter.of([b"\x01\x02\x03"])
    with pytest.raises(ValueError):
        BloomFilter(b"\x00" * 255)


def test_estimate_of_empty_and_full_filters() -> None:
    assert BloomFilter().estimate() == 0.0  # (the BEP's clamp alone would read 0.5)
    assert BloomFilter.of(["10.0.0.1"]).estimate() == pytest.approx(1.0, abs=0.01)
    full = BloomFilter(b"\xff" * BLOOM_BYTES)
    assert 6000 < full.estimate() < 8000  # c is clamped to m - 1: finite


def test_union_of_filters_estimates_the_union_of_sets() -> None:
    ips = bep33_ips()
    halves = [BloomFilter.of(ips[:700]), BloomFilter.of(ips[500:])]  # overlapping
    merged = merge(bytes(h) for h in halves)
    assert merged == BloomFilter.of(ips)
    est = estimate([bytes(halves[0])], [bytes(halves[1])])
    assert est.seeds == pytest.approx(halves[0].estimate()) and est.responders == 1


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
def test_estimate_is_close_for_random_sets(n: int) -> None:
    rng = random.Random(n)
    ips = {f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(n)}
    est = BloomFilter.of(ips).estimate()
    assert abs(est - len(ips)) <= max(1.0, 0.1 * len(ips))


def test_collector_counts_legacy_values_as_downloaders_unless_seeds() -> None:
    """BEP 33 "Handling legacy responses": values without filters become peers, but
    an IP another node's seed filter holds stays a seed only."""
    collector = ScrapeCollector()
    collector.offer(bytes(BloomFilter.of(["10.0.0.1", "10.0.0.2"])), bytes(BloomFilter.of(["10.0.0.3"])))
    collector.offer(None, None, [("10.0.0.1", 1), ("10.0.0.4", 2), ("10.0.0.5", 3)])
    est = collector.estimate()
    assert est.responders == 1
    assert est.seeds == pytest.approx(2, abs=0.01)
    assert est.downloaders == pytest.approx(3, abs=0.02)  # 10.0.0.3, .4 and .5


# --- the core answering scrapes ------------------------------------------------------------

INFO_HASH = bytes(range(20))


def announcer(i: int) -> Address:
    return (f"10.1.{i // 250}.{i % 250 + 1}", 40000 + i)


def fill(core, seeds: int, peers: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(seeds + peers):
        addr = announcer(i)
        r = ask(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH}), addr, 0.0)[0][b"r"]
        args = {b"info_hash": INFO_HASH, b"port": addr[1], b"token": r[b"token"]}
        if i < seeds:
            args[b"seed"] = 1
        assert ask(core, raw_query(b"announce_peer", args), addr, 0.0)[0][b"y"] == b"r"


def test_scrape_reply_carries_seed_and_peer_filters() -> None:
    core = make_core("scrape")
    fill(core, seeds=30, peers=70)
    r = ask(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH, b"scrape": 1}), ("10.9.9.9", 1), 1.0)[0][b"r"]
    assert bytes(BloomFilter.of(announcer(i)[0] for i in range(30))) == r[b"BFsd"]
    assert bytes(BloomFilter.of(announcer(i)[0] for i in range(30, 100))) == r[b"BFpe"]
    assert r[b"token"] and r[b"values"]
    # Without scrape: no filters (and the hot path answers).
    r = ask(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH}), ("10.9.9.9", 1), 1.0)[0][b"r"]
    assert b"BFsd" not in r and b"BFpe" not in r


def test_scrape_of_an_unknown_infohash_has_no_filters() -> None:
    core = make_core("scrape")
    r = ask(core, raw_query(b"get_peers", {b"info_hash": b"\x07" * 20, b"scrape": 1}), ("10.9.9.9", 1), 0.0)[0][b"r"]
    assert b"BFsd" not in r and b"token" in r and b"nodes" in r


def test_noseed_fills_values_with_non_seeds_first() -> None:
    core = make_core("scrape")
    fill(core, seeds=60, peers=20)
    r = ask(core, raw_query(b"get_peers", {b"info_hash": INFO_HASH, b"noseed": 1}), ("10.9.9.9", 1), 1.0)[0][b"r"]
    got = {unpack_peer_untrusted(v) for v in r[b"values"]}
    non_seeds = {announcer(i) for i in range(60, 80)}
    assert non_seeds <= got  # all 20 non-seeds, topped up with seeds to the reply's limit
    assert len(got) == core.config.max_values_per_reply
    assert pack_peer(announcer(0))  # addresses pack (sanity of the helper)
