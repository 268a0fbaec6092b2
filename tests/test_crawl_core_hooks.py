"""What the crawler needs from the protocol core: the InfohashQueried event and the
NodeConfig.sample_infohashes modes that simulate clients without BEP 51."""

from __future__ import annotations

import pytest

from helpers import ask, drain_events, make_core, raw_query
from mainline_dht.core.events import InfohashQueried
from mainline_dht.core.protocol import NodeConfig

ADDR = ("10.1.2.3", 6881)
TARGET = b"\x5a" * 20


def test_get_peers_queries_are_reported_when_asked_for() -> None:
    core = make_core(1)
    ask(core, raw_query(b"get_peers", {b"info_hash": TARGET}), ADDR, 0.5)
    assert not any(isinstance(e, InfohashQueried) for e in drain_events(core))  # off by default
    core.report_infohash_queries = True
    ask(core, raw_query(b"get_peers", {b"info_hash": TARGET}, sender=b"\x22" * 20), ADDR, 1.0)
    ask(core, raw_query(b"find_node", {b"target": TARGET}), ADDR, 1.0)
    events = [e for e in drain_events(core) if isinstance(e, InfohashQueried)]
    assert events == [InfohashQueried(TARGET, b"\x22" * 20, ADDR)]


@pytest.mark.parametrize(
    ("mode", "expect"),
    [("samples", "samples"), ("nodes", "nodes"), ("error", 204)],
)
def test_sample_infohashes_modes(mode: str, expect: object) -> None:
    core = make_core(2, config=NodeConfig(sample_infohashes=mode))  # type: ignore[arg-type]
    core.peer_store.add(TARGET, ("10.9.9.9", 1), 0.0)
    (reply,) = ask(core, raw_query(b"sample_infohashes", {b"target": TARGET}), ADDR, 1.0)
    if expect == 204:
        assert reply[b"y"] == b"e" and reply[b"e"][0] == 204
    elif expect == "nodes":
        assert reply[b"y"] == b"r" and b"nodes" in reply[b"r"] and b"samples" not in reply[b"r"]
    else:
        assert reply[b"r"][b"samples"] == TARGET and reply[b"r"][b"num"] == 1
