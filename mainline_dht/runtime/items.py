"""BEP 44 on the trio node, requesting side: get and put items.

Owns: the node methods that store and fetch items. A ``get`` is a lookup whose
queries are ``get`` (``Get(target)``); every reply is checked by the pure
:class:`~mainline_dht.core.items.ItemSearch` before its item counts. A ``put``
runs that lookup (or reuses one) and then sends ``put`` to the k closest nodes
that answered with a token, as an announce does. The rules live in the core
(:mod:`mainline_dht.core.items`); this module only awaits.

:class:`ItemsMixin` is mixed into :class:`~mainline_dht.runtime.node.DHTNode`; it
relies on the node's lookup primitive ``_lookup_with_replies`` and on ``query``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from ..core.items import (
    FoundItem,
    ImmutableItem,
    Item,
    ItemSearch,
    MutableItem,
    immutable_target,
    mutable_target,
    public_key_for,
    put_query,
)
from ..core.lookup import Lookup
from ..errors import KRPCError, LocalProtocolError, QueryTimeout
from ..wire import bencode
from ..wire.contact import Contact
from ..wire.krpc import Get, Query, ResponseMessage

from ..wire.contact import Address

if TYPE_CHECKING:
    from ..core.protocol import NodeProtocol

__all__ = ["ItemsMixin", "GetResult", "PutResult"]

log = logging.getLogger(__name__)

#: Seconds before an unanswered ``put`` is sent once more (then it waits for the
#: node's query timeout). The node answered our ``get`` moments before, so a reply
#: later than this is most likely lost: tools/bench_items.py (2,000 nodes, 20% dead,
#: 5% loss, median RTT 0.1 s) puts in a median of 20 RTTs (immutable) and 19
#: (mutable) with 1 s, against 40 and 58 when resent only after 5 s.
PUT_RETRY_AFTER: float = 1.0


@dataclass(frozen=True, slots=True)
class GetResult:
    """What a ``get`` lookup found.

    Attributes:
        target: the target looked up.
        found: the item (verified; the highest ``seq`` for a mutable one), or ``None``.
        copies: replies that carried a valid copy (any ``seq``).
        invalid: replies whose item failed verification (ignored).
        queries: queries the lookup sent.
        replies: answers it received.
        holders: the nodes whose reply carried a valid copy.
        lookup: the finished lookup (its closest nodes and their tokens).
    """

    target: bytes
    found: FoundItem | None
    copies: int
    invalid: int
    queries: int
    replies: int
    holders: frozenset[Address] = field(repr=False)
    lookup: Lookup = field(repr=False)


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a ``put`` achieved.

    Attributes:
        target: where the item is stored.
        seq: the mutable item's sequence number (``None`` for an immutable item).
        stored: nodes that accepted the put.
        sent: puts sent (the k closest nodes that gave a token).
        errors: KRPC error code -> how many nodes answered with it (e.g. 302).
        queries: queries the lookup before the puts sent.
        replies: answers that lookup received.
    """

    target: bytes
    seq: int | None
    stored: int
    sent: int
    errors: dict[int, int]
    queries: int
    replies: int


class ItemsMixin:
    """BEP 44 ``get``/``put`` for :class:`~mainline_dht.runtime.node.DHTNode`."""

    proto: NodeProtocol

    if TYPE_CHECKING:

        async def _lookup_with_replies(
            self, target: bytes, query: Query, on_reply: Callable[[Contact, ResponseMessage, float], bool]
        ) -> Lookup: ...

        async def query(
            self,
            addr: Address,
            query: Query,
            *,
            node_id: bytes | None = None,
            timeout: float | None = None,
            learn: bool = True,
            abandon_on_cancel: bool = False,
        ) -> ResponseMessage: ...

    async def get_item(
        self, target: bytes, *, public_key: bytes | None = None, salt: bytes = b"", stop_when_found: bool = True
    ) -> GetResult:
        """Look up the item stored under ``target`` and verify what comes back.

        An immutable item's lookup ends at the first valid copy (when
        ``stop_when_found``); a mutable item's lookup runs to the end, and the
        highest ``seq`` with a valid signature wins.

        Args:
            target: the 20-byte target.
            public_key: for a mutable item, the 32-byte ed25519 key expected.
            salt: the mutable item's salt.
            stop_when_found: end an immutable item's lookup at the first valid copy.

        Raises:
            LocalProtocolError: a bad target, or a key and salt that do not give it.
        """
        if type(target) is not bytes or len(target) != 20:
            raise LocalProtocolError("target must be 20 bytes")
        search = ItemSearch(target, public_key=public_key, salt=salt)
        holders: set[Address] = set()
        stop = stop_when_found and public_key is None

        def on_reply(contact: Contact, resp: ResponseMessage, now: float) -> bool:
            before = search.copies
            search.offer(resp.value, resp.public_key, resp.seq, resp.signature, contact.addr, now)
            if search.copies > before:
                holders.add(contact.addr)
            return stop and search.best is not None

        lookup = await self._lookup_with_replies(target, Get(target), on_reply)
        s = lookup.stats
        return GetResult(
            target, search.best, search.copies, search.invalid, s.queries, s.replies, frozenset(holders), lookup
        )

    async def get_immutable(self, target: bytes) -> FoundItem | None:
        """Fetch the immutable item stored under ``target`` (its SHA-1 checked), or ``None``."""
        return (await self.get_item(target)).found

    async def get_mutable(self, public_key: bytes, salt: bytes = b"") -> FoundItem | None:
        """Fetch the mutable item of ``public_key`` and ``salt``: the highest ``seq`` whose
        signature verifies, or ``None``."""
        if type(public_key) is not bytes or len(public_key) != 32:
            raise LocalProtocolError("an ed25519 public key is 32 bytes")
        return (await self.get_item(mutable_target(public_key, salt), public_key=public_key, salt=salt)).found

    async def put(self, item: Item, *, cas: int | None = None, lookup: GetResult | None = None) -> PutResult:
        """Store ``item`` on the k closest nodes that give a token (BEP 44 ``put``).

        Args:
            item: an :class:`ImmutableItem` or a signed :class:`MutableItem`.
            cas: for a mutable item, the ``seq`` it must replace; sent only to the
                nodes that returned the item in the lookup (BEP 44).
            lookup: a finished full ``get`` lookup of the same target to reuse.

        Raises:
            LocalProtocolError: a mutable item whose signature does not verify.
        """
        if isinstance(item, MutableItem) and not item.verify():
            raise LocalProtocolError("the item's signature does not verify")
        target = item.target
        if lookup is None:
            if isinstance(item, MutableItem):
                lookup = await self.get_item(target, public_key=item.public_key, salt=item.salt)
            else:
                lookup = await self.get_item(target, stop_when_found=False)
        holders = lookup.holders
        k = self.proto.config.k
        targets = [(c, tok) for c, tok in lookup.lookup.closest_responders(k) if tok]
        stored = 0
        errors: dict[int, int] = {}

        async def one(contact: Contact, token: bytes) -> None:
            nonlocal stored
            q = put_query(item, token, cas=cas if contact.addr in holders else None)
            try:
                try:
                    # A put is idempotent: send it again after a short wait rather than
                    # let one lost datagram hold the put for the whole query timeout.
                    await self.query(contact.addr, q, timeout=PUT_RETRY_AFTER)
                except QueryTimeout:
                    await self.query(contact.addr, q, node_id=contact.id)
            except KRPCError as exc:
                errors[exc.code] = errors.get(exc.code, 0) + 1
                log.debug("put to %s refused: %s", contact.addr, exc)
                return
            except (QueryTimeout, LocalProtocolError) as exc:
                log.debug("put to %s failed: %s", contact.addr, exc)
                return
            stored += 1

        async with trio.open_nursery() as nursery:
            for contact, token in targets:
                nursery.start_soon(one, contact, token)
        seq = item.seq if isinstance(item, MutableItem) else None
        return PutResult(target, seq, stored, len(targets), errors, lookup.queries, lookup.replies)

    async def put_immutable(self, value: object) -> bytes:
        """Store ``value`` (anything bencode holds: bytes, int, list, dict) as an immutable item.

        Returns:
            Its target, the SHA-1 of the bencoded value.

        Raises:
            LocalProtocolError: the bencoded value is over 1,000 bytes.
        """
        encoded = _encode(value)
        await self.put(ImmutableItem(encoded))
        return immutable_target(encoded)

    async def put_mutable(
        self, private_key: bytes, value: object, salt: bytes = b"", seq: int | None = None, cas: int | None = None
    ) -> PutResult:
        """Sign ``value`` with ``private_key`` (a 32-byte ed25519 seed) and store it.

        Args:
            private_key: the 32-byte ed25519 private key seed.
            value: anything bencode holds.
            salt: stores one of many items under one key (at most 64 bytes).
            seq: the sequence number; default one more than the highest valid
                one the lookup finds (1 when there is none).
            cas: compare-and-swap: the ``seq`` this put must replace.

        Raises:
            LocalProtocolError: bad key, value over 1,000 bytes, salt over 64 bytes.
        """
        encoded = _encode(value)
        public_key = public_key_for(private_key)
        target = mutable_target(public_key, salt)
        found = await self.get_item(target, public_key=public_key, salt=salt)
        if seq is None:
            seq = 1 if found.found is None or found.found.seq is None else found.found.seq + 1
        item = MutableItem.create(private_key, encoded, seq, salt)
        return await self.put(item, cas=cas, lookup=found)


def _encode(value: object) -> bytes:
    try:
        encoded = bencode.encode(value)
    except TypeError as exc:
        raise LocalProtocolError(str(exc)) from None
    if len(encoded) > 1000:
        raise LocalProtocolError(f"the bencoded value is {len(encoded)} bytes; BEP 44 allows 1000")
    return encoded
