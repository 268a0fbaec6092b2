"""Test helpers: NodeProtocol cores linked over a fake wire, with scripted time.

Pure: no trio, no sockets, no clock. The design follows h11's ``ConnectionPair``
and aioquic's ``transfer()``: each core has an address, datagrams it queues are
moved by :func:`deliver_all` to the core at their destination (or recorded as
undeliverable), until no core has anything left to send.

Raw KRPC helpers (:func:`raw_query`, :func:`decode`) let tests speak to a core
as a stranger would, byte for byte, and inspect what it answers.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Address, Contact
from mainline_dht.core.events import Event
from mainline_dht.wire.krpc import Query
from mainline_dht.core.protocol import NodeConfig, NodeProtocol

__all__ = [
    "Datagram",
    "ProtocolNet",
    "ProtocolPair",
    "deliver_all",
    "drain_events",
    "make_core",
    "node_id",
    "raw_query",
    "decode",
    "ask",
    "closest_ids",
    "max_in_window",
]


@dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram that crossed the fake wire."""

    source: Address
    destination: Address
    data: bytes

    @property
    def message(self) -> dict[bytes, Any]:
        """The datagram decoded as a bencoded dict."""
        return decode(self.data)


def node_id(n: int) -> bytes:
    """A 20-byte node ID whose integer value is ``n`` (easy to reason about distances)."""
    return n.to_bytes(20, "big")


def make_core(seed: int | str, *, id: bytes | None = None, config: NodeConfig | None = None, now: float = 0.0) -> NodeProtocol:
    """A core with a seeded rng (and a random ID drawn from it unless given)."""
    rng = random.Random(seed)
    return NodeProtocol(id if id is not None else rng.randbytes(20), config=config, rng=rng, now=now)


def drain_events(core: NodeProtocol) -> list[Event]:
    """Every event the core has queued, oldest first."""
    out: list[Event] = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


def deliver_all(
    cores: Mapping[Address, NodeProtocol],
    now: float,
    *,
    drop: Callable[[Datagram], bool] | None = None,
    max_rounds: int = 1000,
) -> list[Datagram]:
    """Move every queued datagram to its destination core until the wire is quiet.

    Args:
        cores: the cores by their address; a datagram's source is the address of
            the core that queued it.
        now: the time every delivery happens at (seconds, scripted).
        drop: return ``True`` to lose a datagram (it is still logged).
        max_rounds: a bound against endless ping-pong (a bug, so it raises).

    Returns:
        Every datagram sent, in the order sent, including those to addresses no
        core holds (they vanish) and dropped ones.
    """
    log: list[Datagram] = []
    for _ in range(max_rounds):
        batch = [Datagram(src, dst, data) for src, core in cores.items() for data, dst in core.datagrams_to_send()]
        if not batch:
            return log
        log.extend(batch)
        for d in batch:
            target = cores.get(d.destination)
            if target is not None and not (drop is not None and drop(d)):
                target.receive_datagram(d.data, d.source, now)
    raise AssertionError(f"the wire is still busy after {max_rounds} rounds")


@dataclass
class ProtocolNet:
    """Several cores on one fake wire, sharing a scripted clock ``now``."""

    cores: dict[Address, NodeProtocol] = field(default_factory=dict)
    now: float = 0.0
    log: list[Datagram] = field(default_factory=list)

    def add(self, addr: Address, core: NodeProtocol) -> NodeProtocol:
        self.cores[addr] = core
        return core

    def contact(self, addr: Address) -> Contact:
        return Contact(self.cores[addr].node_id, addr)

    def deliver(self, *, drop: Callable[[Datagram], bool] | None = None) -> list[Datagram]:
        """:func:`deliver_all` at ``now``; the datagrams are also appended to :attr:`log`."""
        sent = deliver_all(self.cores, self.now, drop=drop)
        self.log.extend(sent)
        return sent

    def advance(self, seconds: float) -> None:
        """Move the clock on and fire every core's due timers (repeatedly, as a driver would)."""
        end = self.now + seconds
        while True:
            due = [t for c in self.cores.values() if (t := c.get_timer()) is not None and t <= end]
            if not due:
                break
            self.now = max(self.now, min(due))
            for core in self.cores.values():
                t = core.get_timer()
                if t is not None and t <= self.now:
                    core.handle_timer(self.now)
            self.deliver()
        self.now = end

    def query(self, src: Address, query: Query, dst: Address, **kwargs: Any) -> tuple[bytes, Address]:
        """Send a query from ``src`` to ``dst`` and deliver until quiet; return the key."""
        key = self.cores[src].send_query(query, dst, self.now, **kwargs)
        self.deliver()
        return key


class ProtocolPair(ProtocolNet):
    """Two cores, ``a`` at :attr:`A` and ``b`` at :attr:`B`."""

    A: Address = ("10.0.0.1", 6881)
    B: Address = ("10.0.0.2", 6881)

    def __init__(self, *, config_a: NodeConfig | None = None, config_b: NodeConfig | None = None, now: float = 0.0) -> None:
        super().__init__(now=now)
        self.a = self.add(self.A, make_core("a", config=config_a, now=now))
        self.b = self.add(self.B, make_core("b", config=config_b, now=now))


def raw_query(
    method: bytes,
    args: Mapping[bytes, Any],
    *,
    tid: bytes = b"tx",
    sender: bytes | None = None,
    extra: Mapping[bytes, Any] | None = None,
) -> bytes:
    """A bencoded KRPC query as a stranger would send it.

    Args:
        method: the ``q`` value.
        args: the ``a`` dict; ``id`` is added from ``sender`` unless present
            (pass ``sender=b""`` together with no ``id`` to send none).
        tid: the ``t`` value.
        sender: the querier's node ID (default: 20 bytes of 0x11).
        extra: more top-level keys (``ro``, ``v``, ...).
    """
    a = dict(args)
    if b"id" not in a and sender != b"":
        a[b"id"] = sender if sender is not None else b"\x11" * 20
    d: dict[bytes, Any] = {b"t": tid, b"y": b"q", b"q": method, b"a": a}
    if extra:
        d.update(extra)
    return bencode.encode(d)


def decode(data: bytes) -> dict[bytes, Any]:
    """Decode a datagram a core sent (trusted: our own encoder made it)."""
    value = bencode.decode_untrusted(data)
    assert isinstance(value, dict)
    return value


def ask(core: NodeProtocol, data: bytes, addr: Address, now: float) -> list[dict[bytes, Any]]:
    """Feed one raw datagram from ``addr``; return the decoded replies sent back to ``addr``.

    Datagrams to other addresses (verification pings to ``addr`` included, which
    are queries) are filtered: only ``y`` = ``r`` / ``e`` messages to ``addr`` return.
    Everything else the core queued is discarded.
    """
    core.receive_datagram(data, addr, now)
    out = []
    for payload, dst in core.datagrams_to_send():
        msg = decode(payload)
        if dst == addr and msg.get(b"y") in (b"r", b"e"):
            out.append(msg)
    return out


def max_in_window(times: Iterable[float], window: float = 10.0) -> int:
    """The most of ``times`` in any ``window`` seconds (half-open: ``[t, t + window)``).

    How a rate limit that counts queries per sliding window sees them (libtorrent
    bans at 50 in 10 s).
    """
    q: deque[float] = deque()
    best = 0
    for t in sorted(times):
        q.append(t)
        while q[0] <= t - window:
            q.popleft()
        best = max(best, len(q))
    return best


def closest_ids(ids: Iterable[bytes], target: bytes, count: int) -> list[bytes]:
    """The ``count`` IDs nearest ``target`` by XOR, nearest first (brute force)."""
    t = int.from_bytes(target, "big")
    return sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ t)[:count]
