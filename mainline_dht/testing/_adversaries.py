"""Hostile nodes for simulations: sybils and poisoners on the in-memory network.

Owns: small KRPC answering loops that stand in for attackers, each on its own
:class:`~mainline_dht.testing._memory_net.MemoryTransport`. They are not our node with
options: they are what the honest nodes must withstand.

- :class:`Sybils` is one colluding group. Each member answers ``ping`` under its own
  (random) ID, like a node; every ``find_node``, ``get_peers`` or other query with a
  target is answered with ``k`` members of the group under made-up IDs placed very
  close to that target, and never with peers. A member asked about a target answers
  under the made-up ID the group hands out for it (the ID is a function of target and
  address, so the group agrees without talking), so a lookup that asks it sees the ID
  it was promised. ``announce_peer`` is acknowledged and dropped. The group lives in a
  few IPv4 /24s, as an attacker with a handful of networks would.
- :class:`Poisoner` keeps a routing table like an honest node and answers ``find_node``
  and ``get_peers`` with its closest contacts, but every ``get_peers`` reply also
  carries junk peers (addresses that belong to no one), and announces are dropped.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

import trio

from ..core.routing_table import RoutingTable
from ..errors import DHTError
from ..wire.contact import Address, Contact
from ..wire.krpc import (
    AnnouncePeer,
    FindNode,
    GetPeers,
    QueryMessage,
    ResponseMessage,
    SampleInfohashes,
    UnknownQuery,
    decode_message_untrusted,
    encode_message,
)
from ._memory_net import MemoryTransport

__all__ = ["Poisoner", "Sybils", "SYBIL_CLOSENESS_BITS", "sybil_address"]

#: Made-up sybil IDs differ from the target only in their lowest this many bits: far
#: closer than any honest node of a network below 2**100 nodes.
SYBIL_CLOSENESS_BITS = 32

_TOKEN = b"sybil-token"


def sybil_address(j: int) -> Address:
    """The address of the ``j``-th sybil: 254 per /24, in 172.16.0.0/12 (memory only)."""
    block, host = divmod(j, 254)
    return (f"172.16.{block}.{host + 1}", 6881)


def _target_of(query: object) -> bytes | None:
    if isinstance(query, (FindNode, SampleInfohashes)):
        return query.target
    if isinstance(query, (GetPeers, AnnouncePeer)):
        return query.info_hash
    if isinstance(query, UnknownQuery):
        return query.target
    return None


class Sybils:
    """A colluding group of sybil nodes (see the module docstring).

    Args:
        members: each member's (random) own ID and address; one transport per member is
            opened by :meth:`serve`.
        rng: chooses which members a reply names.
        k: contacts per reply.
    """

    def __init__(self, members: Sequence[Contact], *, rng: random.Random, k: int = 8) -> None:
        self.members = list(members)
        self._addrs = [c.addr for c in self.members]
        self._rng = rng
        self._k = k
        # Each member's place next to any target: the low bits its made-up IDs differ in.
        self._offset = {
            c.addr: 1 + int.from_bytes(hashlib.sha1(repr(c.addr).encode()).digest()[:8], "big")
            % ((1 << SYBIL_CLOSENESS_BITS) - 1)
            for c in self.members
        }
        self.queries = 0

    def fake_id(self, target: bytes, addr: Address) -> bytes:
        """The ID the group claims for ``addr`` next to ``target``."""
        return (int.from_bytes(target, "big") ^ self._offset[addr]).to_bytes(20, "big")

    def answer(self, me: Contact, msg: QueryMessage) -> ResponseMessage:
        """The reply of member ``me`` to a query."""
        self.queries += 1
        target = _target_of(msg.query)
        if target is None:  # ping, or an unknown query without a target
            return ResponseMessage(msg.tid, me.id)
        sender = self.fake_id(target, me.addr)
        if isinstance(msg.query, AnnouncePeer):
            return ResponseMessage(msg.tid, sender)
        named = self._rng.sample(self._addrs, min(self._k, len(self._addrs)))
        nodes = tuple(Contact(self.fake_id(target, a), a) for a in named if a != me.addr)
        token = _TOKEN if isinstance(msg.query, GetPeers) else None
        return ResponseMessage(msg.tid, sender, nodes=nodes, token=token)

    async def serve(self, transport: MemoryTransport, me: Contact) -> None:
        """Answer every query arriving on ``transport`` as member ``me``, until closed."""
        await _serve(transport, lambda msg: self.answer(me, msg))


class Poisoner:
    """A node that routes honestly but answers ``get_peers`` with junk peers.

    Args:
        me: its ID and address.
        table: its routing table (fill it as an honest node's is filled).
        rng: draws the junk.
        junk_peers: junk peers per ``get_peers`` reply.
        k: contacts per reply.
    """

    def __init__(self, me: Contact, table: RoutingTable, *, rng: random.Random, junk_peers: int = 32, k: int = 8) -> None:
        self.me = me
        self.table = table
        self._rng = rng
        self._junk = junk_peers
        self._k = k
        self.queries = 0

    def junk(self) -> tuple[Address, ...]:
        """Peers that belong to no one: 10.254.0.0/16, ports below 1024 (memory only)."""
        r = self._rng
        return tuple((f"10.254.{r.randrange(256)}.{r.randrange(1, 255)}", r.randrange(1, 1024)) for _ in range(self._junk))

    def answer(self, msg: QueryMessage) -> ResponseMessage:
        """Its reply to a query."""
        self.queries += 1
        target = _target_of(msg.query)
        if target is None or isinstance(msg.query, AnnouncePeer):
            return ResponseMessage(msg.tid, self.me.id)
        nodes = tuple(self.table.closest(target, self._k))
        if isinstance(msg.query, GetPeers):
            return ResponseMessage(msg.tid, self.me.id, nodes=nodes, values=self.junk(), token=_TOKEN)
        return ResponseMessage(msg.tid, self.me.id, nodes=nodes)

    async def serve(self, transport: MemoryTransport) -> None:
        """Answer every query arriving on ``transport``, until it is closed."""
        await _serve(transport, self.answer)


async def _serve(transport: MemoryTransport, answer: Callable[[QueryMessage], ResponseMessage]) -> None:
    try:
        while True:
            for data, source in await transport.receive_batch():
                try:
                    msg = decode_message_untrusted(data)
                except DHTError:
                    continue
                if isinstance(msg, QueryMessage):
                    transport.send(encode_message(answer(msg)), source)
    except trio.ClosedResourceError:
        return
