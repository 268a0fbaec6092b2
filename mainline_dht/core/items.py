"""BEP 44 items: arbitrary data stored in the DHT, immutable or signed and mutable.

Owns: item targets (SHA-1 of the bencoded value; SHA-1 of the public key and
salt), the signed buffer and ed25519 signing and verification, the rules a
storing node applies to a ``put`` (sizes, signature, sequence numbers, compare
and swap) with their error codes, and :class:`ItemStore`, the bounded store of
items with expiry. The trio node and the protocol core use it; it does no I/O.

Values travel as their bencoded bytes (``value`` below): BEP 44 hashes and
signs "the verbatim bencoded representation as it appeared in the message".
Our decoder of untrusted bytes accepts only canonical bencode (sorted, unique
keys; no leading zeros), whose re-encoding is the same bytes, so re-encoding a
decoded ``v`` gives the verbatim bytes.

ed25519 comes from PyNaCl (libsodium): see ``pyproject.toml`` and
``tools/bench_ed25519.py`` for why that library. A crypto import is pure: it
reads no clock and no entropy (keys are made from a 32-byte seed the caller
passes).

Pure: must not import trio, socket, time, asyncio or os.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

from ..errors import DecodeError, LocalProtocolError
from ..wire import bencode
from ..wire.krpc import Get, Put

__all__ = [
    "ItemErrorCode",
    "ItemError",
    "ImmutableItem",
    "MutableItem",
    "ItemStore",
    "get_reply_fields",
    "store_put",
    "FoundItem",
    "ItemSearch",
    "put_query",
    "immutable_target",
    "mutable_target",
    "signature_buffer",
    "public_key_for",
    "sign",
    "verify",
    "MAX_VALUE_SIZE",
    "MAX_SALT_SIZE",
    "MAX_SEQ",
    "DEFAULT_ITEM_TTL",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_ITEMS_PER_IP",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "SEED_SIZE",
]

#: BEP 44: storing nodes may refuse a ``v`` whose bencoded form is longer (bytes).
MAX_VALUE_SIZE: Final = 1000
#: BEP 44: "The salt string MUST NOT be longer than 64 bytes."
MAX_SALT_SIZE: Final = 64
#: BEP 44: sequence numbers "SHOULD not exceed MAX_INT64"; we refuse larger ones and negatives.
MAX_SEQ: Final = 2**63 - 1
#: BEP 44: items "MAY expire in 2 hours" without a re-put (seconds).
DEFAULT_ITEM_TTL: Final = 2 * 3600.0
#: Items stored at once. libtorrent's ``dht_max_dht_items`` default is 700; at up to
#: ~1.2 kB each (value, key, signature, salt, bookkeeping) 1,000 items stay near 1 MB.
DEFAULT_MAX_ITEMS: Final = 1000
#: Items whose latest writer is one IP address. A node answering ``get`` hands any
#: IP a token, so without this one host could fill the store and push out every
#: other writer's items; beyond it that IP's oldest item goes first.
DEFAULT_MAX_ITEMS_PER_IP: Final = 50
#: ed25519 sizes (bytes).
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
SEED_SIZE: Final = 32


class ItemErrorCode(IntEnum):
    """The KRPC error codes BEP 44 adds (and 203 for a malformed ``put``)."""

    PROTOCOL = 203
    VALUE_TOO_BIG = 205
    INVALID_SIGNATURE = 206
    SALT_TOO_BIG = 207
    CAS_MISMATCH = 301
    SEQ_TOO_LOW = 302


class ItemError(Exception):
    """A ``put`` the storing node refuses, with the KRPC error code to answer.

    Attributes:
        code: the :class:`ItemErrorCode`.
        message: a short text for the error reply.
    """

    def __init__(self, code: ItemErrorCode, message: str) -> None:
        super().__init__(f"{int(code)} {message}")
        self.code = code
        self.message = message


# --- targets, the signed buffer, signatures -----------------------------------------


def immutable_target(value: bytes) -> bytes:
    """Return the target of an immutable item: the SHA-1 of its bencoded ``value``."""
    return hashlib.sha1(value).digest()


def mutable_target(public_key: bytes, salt: bytes = b"") -> bytes:
    """Return the target of a mutable item: the SHA-1 of the public key followed by the salt."""
    return hashlib.sha1(public_key + salt).digest()


def signature_buffer(value: bytes, seq: int, salt: bytes = b"") -> bytes:
    """Return the bytes BEP 44 signs: ``[4:salt<n>:<salt>]3:seqi<seq>e1:v`` and the bencoded value.

    The salt part is there only for a non-empty salt (an empty salt is no salt).
    """
    head = b"4:salt%d:%b" % (len(salt), salt) if salt else b""
    return b"%b3:seqi%de1:v%b" % (head, seq, value)


def public_key_for(seed: bytes) -> bytes:
    """Return the 32-byte ed25519 public key of a 32-byte private key seed.

    Raises:
        LocalProtocolError: ``seed`` is not 32 bytes.
    """
    return bytes(_signing_key(seed).verify_key)


def sign(seed: bytes, value: bytes, seq: int, salt: bytes = b"") -> bytes:
    """Sign a mutable item's value, sequence number and salt with a private key seed.

    Returns:
        The 64-byte ed25519 signature of :func:`signature_buffer`.

    Raises:
        LocalProtocolError: ``seed`` is not 32 bytes.
    """
    return bytes(_signing_key(seed).sign(signature_buffer(value, seq, salt)).signature)


def verify(public_key: bytes, signature: bytes, value: bytes, seq: int, salt: bytes = b"") -> bool:
    """Return whether ``signature`` is ``public_key``'s signature of the item (never raises)."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        VerifyKey(public_key).verify(signature_buffer(value, seq, salt), signature)
    except (BadSignatureError, NaclValueError, TypeError):
        # A key that is not a curve point raises ValueError, a forgery BadSignatureError.
        return False
    return True


def _signing_key(seed: bytes) -> SigningKey:
    if type(seed) is not bytes or len(seed) != SEED_SIZE:
        raise LocalProtocolError(f"an ed25519 private key seed is {SEED_SIZE} bytes")
    return SigningKey(seed)


# --- items ---------------------------------------------------------------------------


def check_value(value: bytes) -> None:
    """Check a bencoded value a ``put`` carries: one well-formed value of at most 1,000 bytes.

    Raises:
        ItemError: 205 when it is too long, 203 when it is not bencode.
    """
    if len(value) > MAX_VALUE_SIZE:
        raise ItemError(ItemErrorCode.VALUE_TOO_BIG, f"v is {len(value)} bytes; at most {MAX_VALUE_SIZE}")
    try:
        bencode.decode_untrusted(value)
    except DecodeError:
        raise ItemError(ItemErrorCode.PROTOCOL, "v is not bencoded") from None


@dataclass(frozen=True, slots=True)
class ImmutableItem:
    """An immutable item: stored under the SHA-1 of its bencoded ``value``.

    Attributes:
        value: the bencoded value, verbatim.
    """

    value: bytes

    @property
    def target(self) -> bytes:
        """The 20-byte key the item is stored under."""
        return immutable_target(self.value)


@dataclass(frozen=True, slots=True)
class MutableItem:
    """A mutable item: a value signed by an ed25519 key, stored under SHA-1(key + salt).

    The constructor checks sizes only; :meth:`verify` checks the signature.

    Attributes:
        public_key: the 32-byte ed25519 public key (``k``).
        value: the bencoded value, verbatim (``v``).
        seq: the sequence number (``seq``), 0 to 2**63 - 1.
        signature: the 64-byte signature (``sig``).
        salt: the salt (``salt``), empty for none.
    """

    public_key: bytes
    value: bytes
    seq: int
    signature: bytes
    salt: bytes = b""

    def __post_init__(self) -> None:
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise LocalProtocolError(f"public key must be {PUBLIC_KEY_SIZE} bytes")
        if len(self.signature) != SIGNATURE_SIZE:
            raise LocalProtocolError(f"signature must be {SIGNATURE_SIZE} bytes")
        if type(self.seq) is not int or not 0 <= self.seq <= MAX_SEQ:
            raise LocalProtocolError(f"seq must be 0 to {MAX_SEQ}")

    @classmethod
    def create(cls, seed: bytes, value: bytes, seq: int, salt: bytes = b"") -> MutableItem:
        """Sign ``value`` (bencoded) with the private key ``seed`` and make the item.

        Raises:
            LocalProtocolError: bad seed, sequence number, or a value or salt over the limits.
        """
        if len(value) > MAX_VALUE_SIZE:
            raise LocalProtocolError(f"the bencoded value is {len(value)} bytes; BEP 44 allows {MAX_VALUE_SIZE}")
        if len(salt) > MAX_SALT_SIZE:
            raise LocalProtocolError(f"the salt is {len(salt)} bytes; BEP 44 allows {MAX_SALT_SIZE}")
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise LocalProtocolError(f"seq must be 0 to {MAX_SEQ}")
        return cls(public_key_for(seed), value, seq, sign(seed, value, seq, salt), salt)

    @property
    def target(self) -> bytes:
        """The 20-byte key the item is stored under."""
        return mutable_target(self.public_key, self.salt)

    def verify(self) -> bool:
        """Return whether the signature is valid for the key, value, sequence number and salt."""
        return verify(self.public_key, self.signature, self.value, self.seq, self.salt)


Item = ImmutableItem | MutableItem


# --- the store -----------------------------------------------------------------------


class ItemStore:
    """Items put to us, with expiry and bounds (the storing side of BEP 44).

    Every item lives ``ttl`` seconds after its latest accepted ``put`` (a re-put
    of the same item refreshes it). Bounds: ``max_items`` in all, and
    ``max_items_per_ip`` per writer IP; past either, the least recently put item
    (of the store, or of that IP) is dropped.

    Args:
        ttl: seconds an item lives without a re-put.
        max_items: items kept in all.
        max_items_per_ip: items kept whose latest writer is one IP.

    Raises:
        ValueError: a bound or the ttl is not positive.
    """

    __slots__ = ("_ttl", "_max_items", "_max_per_ip", "_items", "_by_ip")

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_ITEM_TTL,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_items_per_ip: int = DEFAULT_MAX_ITEMS_PER_IP,
    ) -> None:
        if min(max_items, max_items_per_ip) < 1 or not ttl > 0:
            raise ValueError("item-store limits and ttl must be positive")
        self._ttl = float(ttl)
        self._max_items = max_items
        self._max_per_ip = max_items_per_ip
        # target -> (item, put_at, writer IP), least recently put first.
        self._items: OrderedDict[bytes, tuple[Item, float, str]] = OrderedDict()
        # writer IP -> its targets, least recently put first.
        self._by_ip: dict[str, OrderedDict[bytes, None]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, target: object) -> bool:
        return target in self._items

    @property
    def ttl(self) -> float:
        """Seconds an item lives after its latest put."""
        return self._ttl

    def get(self, target: bytes, now: float) -> Item | None:
        """Return the unexpired item stored under ``target``, or ``None`` (an expired one is dropped)."""
        entry = self._items.get(target)
        if entry is None:
            return None
        if entry[1] <= now - self._ttl:
            self._drop(target)
            return None
        return entry[0]

    def put_immutable(self, value: bytes, ip: str, now: float) -> bytes:
        """Store an immutable item from a ``put`` (token already checked).

        Args:
            value: the bencoded ``v``, verbatim.
            ip: the writer's IP address.
            now: current time (seconds).

        Returns:
            The item's target.

        Raises:
            ItemError: 205 value too big, 203 not bencode.
        """
        check_value(value)
        item = ImmutableItem(value)
        target = item.target
        self._store(target, item, ip, now)
        return target

    def put_mutable(self, item: MutableItem, ip: str, now: float, *, cas: int | None = None) -> bytes:
        """Store a mutable item from a ``put`` (token already checked), as BEP 44 rules.

        The checks, in order: value size (205), salt size (207), signature (206),
        then against the stored item: ``cas`` differs from its sequence number
        (301), a lower sequence number (302), the same sequence number with
        another value (302: BEP 44 says such a put MUST be rejected). The same
        item again refreshes its expiry. ``cas`` is ignored when nothing is stored.

        Returns:
            The item's target.

        Raises:
            ItemError: with the code to answer.
        """
        check_value(item.value)
        if len(item.salt) > MAX_SALT_SIZE:
            raise ItemError(ItemErrorCode.SALT_TOO_BIG, f"salt is {len(item.salt)} bytes; at most {MAX_SALT_SIZE}")
        if not item.verify():
            raise ItemError(ItemErrorCode.INVALID_SIGNATURE, "invalid signature")
        target = item.target
        stored = self.get(target, now)
        if isinstance(stored, MutableItem):
            if cas is not None and cas != stored.seq:
                raise ItemError(ItemErrorCode.CAS_MISMATCH, f"cas {cas} does not match seq {stored.seq}")
            if item.seq < stored.seq:
                raise ItemError(ItemErrorCode.SEQ_TOO_LOW, f"seq {item.seq} is lower than {stored.seq}")
            if item.seq == stored.seq and item.value != stored.value:
                raise ItemError(ItemErrorCode.SEQ_TOO_LOW, f"seq {item.seq} is already stored with another value")
        self._store(target, item, ip, now)
        return target

    def expire(self, now: float) -> int:
        """Drop every item whose latest put is ``ttl`` seconds old or older.

        Returns:
            How many items were dropped.
        """
        cutoff = now - self._ttl
        dropped = 0
        items = self._items
        while items:
            target, (_, put_at, _) = next(iter(items.items()))
            if put_at > cutoff:
                break
            self._drop(target)
            dropped += 1
        return dropped

    def _store(self, target: bytes, item: Item, ip: str, now: float) -> None:
        if target in self._items:
            self._drop(target)
        mine = self._by_ip.setdefault(ip, OrderedDict())
        if len(mine) >= self._max_per_ip:
            self._drop(next(iter(mine)))
            mine = self._by_ip.setdefault(ip, OrderedDict())
        if len(self._items) >= self._max_items:
            self._drop(next(iter(self._items)))
            mine = self._by_ip.setdefault(ip, OrderedDict())
        self._items[target] = (item, now, ip)
        mine[target] = None

    def _drop(self, target: bytes) -> None:
        _, _, ip = self._items.pop(target)
        mine = self._by_ip[ip]
        del mine[target]
        if not mine:
            del self._by_ip[ip]


# --- serving get and put (called by the protocol core) -------------------------------


def get_reply_fields(store: ItemStore, query: Get, now: float) -> dict[bytes, object]:
    """The item fields of our reply to a ``get`` (the core adds ``id``, ``nodes``, ``token``).

    An immutable item: ``v``. A mutable one: ``seq``, and ``k``, ``v``, ``sig``
    unless the query's ``seq`` shows the asker already has this sequence number
    or a later one (BEP 44). Nothing stored: no fields.
    """
    item = store.get(query.target, now)
    if item is None:
        return {}
    if isinstance(item, ImmutableItem):
        return {b"v": bencode.decode_untrusted(item.value)}
    r: dict[bytes, object] = {b"seq": item.seq}
    if query.seq is None or item.seq > query.seq:
        r[b"v"] = bencode.decode_untrusted(item.value)
        r[b"k"] = item.public_key
        r[b"sig"] = item.signature
    return r


def store_put(store: ItemStore, query: Put, ip: str, now: float) -> bytes:
    """Apply a ``put`` whose token was valid to ``store``.

    Returns:
        The target the item is stored under.

    Raises:
        ItemError: the put is refused; answer with its code.
    """
    if query.public_key is None:
        return store.put_immutable(query.value, ip, now)
    assert query.signature is not None and query.seq is not None  # Put's constructor checks
    item = MutableItem(query.public_key, query.value, query.seq, query.signature, query.salt)
    return store.put_mutable(item, ip, now, cas=query.cas)


# --- the requesting side ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FoundItem:
    """An item a ``get`` lookup received and verified.

    Attributes:
        target: the target looked up.
        item: the item (its hash, or its key, salt and signature, checked).
        source: the address of the node whose reply carried it.
        at: when that reply arrived (the driver's clock).
    """

    target: bytes
    item: Item
    source: tuple[str, int]
    at: float

    @property
    def value(self) -> object:
        """The item's value, decoded from bencode."""
        return bencode.decode_untrusted(self.item.value)

    @property
    def seq(self) -> int | None:
        """The sequence number of a mutable item; ``None`` for an immutable one."""
        return self.item.seq if isinstance(self.item, MutableItem) else None


class ItemSearch:
    """What a ``get`` lookup learns from the replies it receives (BEP 44, requesting side).

    Every reply is checked before its item counts: an immutable value must hash
    to the target; a mutable one must carry the expected key (the target is
    SHA-1(key + salt)) and a valid signature over value, ``seq`` and salt. The
    highest valid ``seq`` wins; replies that fail a check are counted and dropped.

    Args:
        target: the target looked up.
        public_key: for a mutable item, the key expected (32 bytes); ``None`` for
            an immutable item.
        salt: the mutable item's salt (the reply does not repeat it).

    Raises:
        LocalProtocolError: ``public_key`` and ``salt`` do not give ``target``.
    """

    def __init__(self, target: bytes, *, public_key: bytes | None = None, salt: bytes = b"") -> None:
        if public_key is not None and mutable_target(public_key, salt) != target:
            raise LocalProtocolError("the target is not SHA-1(public key + salt)")
        self.target = target
        self.public_key = public_key
        self.salt = salt
        #: The best item found so far (the immutable one; the highest valid seq).
        self.best: FoundItem | None = None
        #: Replies whose item failed verification.
        self.invalid = 0
        #: Replies that carried a valid item (any seq).
        self.copies = 0

    def offer(self, response_value: bytes | None, public_key: bytes | None, seq: int | None,
              signature: bytes | None, source: tuple[str, int], now: float) -> FoundItem | None:
        """Check the item fields of one ``get`` reply.

        Args:
            response_value: the reply's ``v`` (bencoded), ``None`` when absent.
            public_key, seq, signature: the reply's ``k``, ``seq``, ``sig``.
            source: the replying node's address.
            now: when the reply arrived.

        Returns:
            The item when it is valid and better than any before (an immutable
            item: the first valid one; a mutable one: a higher ``seq``), else ``None``.
        """
        if response_value is None:
            return None
        if self.public_key is None:
            if immutable_target(response_value) != self.target:
                self.invalid += 1
                return None
            self.copies += 1
            if self.best is not None:
                return None
            self.best = FoundItem(self.target, ImmutableItem(response_value), source, now)
            return self.best
        if (
            public_key != self.public_key
            or seq is None
            or signature is None
            or len(response_value) > MAX_VALUE_SIZE
            or not verify(self.public_key, signature, response_value, seq, self.salt)
        ):
            self.invalid += 1
            return None
        self.copies += 1
        if self.best is not None and self.best.seq is not None and seq <= self.best.seq:
            return None
        item = MutableItem(self.public_key, response_value, seq, signature, self.salt)
        self.best = FoundItem(self.target, item, source, now)
        return self.best


def put_query(item: Item, token: bytes, *, cas: int | None = None) -> Put:
    """The ``put`` that stores ``item`` on a node that gave us ``token``."""
    if isinstance(item, ImmutableItem):
        return Put(token, item.value)
    return Put(token, item.value, item.public_key, item.seq, item.signature, item.salt, cas)
