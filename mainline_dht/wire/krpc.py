"""KRPC messages (BEP 5): typed, immutable values, and their wire encoding.

Owns: the message dataclasses, their validation, compact node/peer formats, and
``encode_message`` / ``decode_message_untrusted``. Pure: must not import trio,
socket, time or the routing/lookup modules.

Decoding follows "strict on structure, liberal on extras": unknown keys are
ignored (forward compatibility), optional fields that are malformed (``v``,
``ip``) are dropped, but a message whose required fields are missing or of the
wrong type or length raises :class:`~mainline_dht.errors.DecodeError`. When the
faulty message was a query and its ``t`` could be read, the error carries that
``tid`` and ``is_query=True`` so the caller can answer with error 203.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, Union

from . import bencode
from .contact import ID_LENGTH, Address, Contact
from ..errors import DecodeError, LocalProtocolError

__all__ = [
    "ErrorCode",
    "Ping",
    "FindNode",
    "GetPeers",
    "AnnouncePeer",
    "SampleInfohashes",
    "Get",
    "Put",
    "UnknownQuery",
    "Query",
    "QueryMessage",
    "ResponseMessage",
    "ErrorMessage",
    "Message",
    "encode_message",
    "decode_message_untrusted",
    "decode_value_untrusted",
    "query_fields_untrusted",
    "WANT_VALUES",
    "QUERY_PING",
    "QUERY_FIND_NODE",
    "QUERY_GET_PEERS",
    "pack_peer",
    "unpack_peer_untrusted",
    "pack_nodes",
    "unpack_nodes_untrusted",
    "pack_peers",
    "method_of",
]


class ErrorCode(IntEnum):
    """KRPC error codes (BEP 5)."""

    GENERIC = 201
    SERVER = 202
    PROTOCOL = 203
    METHOD_UNKNOWN = 204


#: Longest transaction ID we accept (bytes). BEP 5 suggests 2; clients use up to 4-8.
MAX_TID_LENGTH: Final = 64
#: Longest token we accept or hand out (bytes). libtorrent uses 4, others up to 20.
MAX_TOKEN_LENGTH: Final = 64
#: Longest ``v`` (client version) we keep. BEP 5 specifies 4; be liberal.
MAX_VERSION_LENGTH: Final = 64
#: Compact sizes (BEP 5, BEP 32).
COMPACT_PEER_V4: Final = 6
COMPACT_PEER_V6: Final = 18
COMPACT_NODE_V4: Final = ID_LENGTH + COMPACT_PEER_V4
COMPACT_NODE_V6: Final = ID_LENGTH + COMPACT_PEER_V6


# --- queries -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """``ping``: are you there? (BEP 5)"""

    method = b"ping"


@dataclass(frozen=True, slots=True)
class FindNode:
    """``find_node``: the 8 closest nodes to ``target`` you know (BEP 5)."""

    target: bytes
    method = b"find_node"

    def __post_init__(self) -> None:
        _check_id(self.target, "target")


@dataclass(frozen=True, slots=True)
class GetPeers:
    """``get_peers``: peers for ``info_hash``, or nodes closer to it (BEP 5).

    ``scrape`` and ``noseed`` are BEP 33's flags.
    """

    info_hash: bytes
    scrape: bool = False
    noseed: bool = False
    method = b"get_peers"

    def __post_init__(self) -> None:
        _check_id(self.info_hash, "info_hash")


@dataclass(frozen=True, slots=True)
class AnnouncePeer:
    """``announce_peer``: I am a peer for ``info_hash`` on ``port`` (BEP 5).

    With ``implied_port`` the responder uses the query's UDP source port and
    ignores ``port``. ``seed`` is BEP 33's flag.
    """

    info_hash: bytes
    port: int
    token: bytes
    implied_port: bool = False
    seed: bool = False
    method = b"announce_peer"

    def __post_init__(self) -> None:
        _check_id(self.info_hash, "info_hash")
        if not self.implied_port and not 0 < self.port < 65536:
            raise LocalProtocolError(f"port must be 1-65535, not {self.port}")
        if not 0 <= self.port < 65536:
            raise LocalProtocolError(f"port must be 0-65535, not {self.port}")
        if not 0 < len(self.token) <= MAX_TOKEN_LENGTH:
            raise LocalProtocolError(f"token must be 1-{MAX_TOKEN_LENGTH} bytes, not {len(self.token)}")


@dataclass(frozen=True, slots=True)
class SampleInfohashes:
    """``sample_infohashes``: a sample of the infohashes you store (BEP 51)."""

    target: bytes
    method = b"sample_infohashes"

    def __post_init__(self) -> None:
        _check_id(self.target, "target")


@dataclass(frozen=True, slots=True)
class Get:
    """``get``: the item stored under ``target``, or nodes closer to it (BEP 44).

    ``seq``: send the value only if its sequence number is higher (mutable items).
    """

    target: bytes
    seq: int | None = None
    method = b"get"

    def __post_init__(self) -> None:
        _check_id(self.target, "target")


@dataclass(frozen=True, slots=True)
class Put:
    """``put``: store an item (BEP 44). Immutable when ``public_key`` is ``None``.

    Attributes:
        token: the write token a ``get`` reply gave us.
        value: the bencoded ``v``, verbatim (it is what is hashed and signed).
        public_key: ``k``, the 32-byte ed25519 key of a mutable item.
        seq: ``seq`` of a mutable item.
        signature: ``sig``, 64 bytes, of a mutable item.
        salt: ``salt`` of a mutable item (empty: none).
        cas: ``cas``, the sequence number the put expects to replace.
    """

    token: bytes
    value: bytes
    public_key: bytes | None = None
    seq: int | None = None
    signature: bytes | None = None
    salt: bytes = b""
    cas: int | None = None
    method = b"put"

    def __post_init__(self) -> None:
        if not 0 < len(self.token) <= MAX_TOKEN_LENGTH:
            raise LocalProtocolError(f"token must be 1-{MAX_TOKEN_LENGTH} bytes, not {len(self.token)}")
        if self.public_key is not None and (
            len(self.public_key) != 32 or self.signature is None or len(self.signature) != 64 or self.seq is None
        ):
            raise LocalProtocolError("a mutable put needs a 32-byte key, a 64-byte signature and seq")


@dataclass(frozen=True, slots=True)
class UnknownQuery:
    """A query whose method we do not implement.

    ``target`` holds the 20-byte ``target`` or ``info_hash`` argument when the
    query had one: like libtorrent, we then answer it as ``find_node`` so newer
    methods degrade gracefully. Without one, the answer is error 204.
    """

    method: bytes
    target: bytes | None = None


Query = Union[Ping, FindNode, GetPeers, AnnouncePeer, SampleInfohashes, Get, Put, UnknownQuery]

#: BEP 32 ``want`` entries: IPv4 nodes, IPv6 nodes.
WANT_VALUES: Final = frozenset({b"n4", b"n6"})


@dataclass(frozen=True, slots=True)
class QueryMessage:
    """A KRPC query (``y`` = ``q``).

    Attributes:
        tid: transaction ID, echoed by the reply.
        sender_id: the querier's node ID (``a.id``).
        query: what is asked.
        read_only: BEP 43 ``ro`` = 1: do not put the sender in a routing table.
        want: BEP 32 ``want`` (``{b"n4"}``, ``{b"n6"}`` or both), ``None`` when absent.
        version: the ``v`` field (client code and version), ``None`` when absent.
    """

    tid: bytes
    sender_id: bytes
    query: Query
    read_only: bool = False
    want: frozenset[bytes] | None = None
    version: bytes | None = None


@dataclass(frozen=True, slots=True)
class ResponseMessage:
    """A KRPC response (``y`` = ``r``). Which fields are set depends on the query.

    Attributes:
        tid: the transaction ID of the query this answers.
        sender_id: the responder's node ID (``r.id``).
        nodes: compact IPv4 contacts (``nodes``).
        nodes6: compact IPv6 contacts (``nodes6``, BEP 32).
        values: peers (``values``), for ``get_peers``.
        token: the write token (``token``), for ``get_peers``.
        samples: infohashes (BEP 51 ``samples``), ``None`` when absent.
        num: how many infohashes the responder stores (BEP 51), ``None`` when absent.
        interval: seconds before asking the responder again (BEP 51), ``None`` when absent.
        ip: our own address as the responder saw it (BEP 42 ``ip``), ``None`` when absent.
        version: the ``v`` field.
        bloom_seeds: BEP 33 ``BFsd`` (256 bytes), ``None`` when absent.
        bloom_peers: BEP 33 ``BFpe`` (256 bytes), ``None`` when absent.
        value: BEP 44 ``v``, bencoded verbatim, ``None`` when absent.
        public_key: BEP 44 ``k`` (32 bytes), ``None`` when absent.
        seq: BEP 44 ``seq``, ``None`` when absent.
        signature: BEP 44 ``sig`` (64 bytes), ``None`` when absent.
    """

    tid: bytes
    sender_id: bytes
    nodes: tuple[Contact, ...] = ()
    nodes6: tuple[Contact, ...] = ()
    values: tuple[Address, ...] = ()
    token: bytes | None = None
    samples: tuple[bytes, ...] | None = None
    num: int | None = None
    interval: int | None = None
    ip: Address | None = None
    version: bytes | None = None
    bloom_seeds: bytes | None = None
    bloom_peers: bytes | None = None
    value: bytes | None = None
    public_key: bytes | None = None
    seq: int | None = None
    signature: bytes | None = None


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """A KRPC error (``y`` = ``e``): ``e`` = [code, message]."""

    tid: bytes
    code: int
    message: str
    ip: Address | None = None
    version: bytes | None = None


Message = Union[QueryMessage, ResponseMessage, ErrorMessage]


def method_of(query: Query) -> bytes:
    """Return the wire method name of ``query`` (e.g. ``b"get_peers"``)."""
    return query.method


# --- compact formats -------------------------------------------------------------------


def pack_peer(addr: Address) -> bytes:
    """Pack ``(ip, port)`` as compact peer info: 6 bytes (IPv4) or 18 bytes (IPv6).

    Raises:
        LocalProtocolError: the address is not an IP address or the port is out of range.
    """
    host, port = addr
    if not 0 <= port < 65536:
        raise LocalProtocolError(f"port out of range: {port}")
    try:
        packed = _pack_ip(host)
    except ValueError:
        raise LocalProtocolError(f"not an IP address: {host!r}") from None
    return packed + port.to_bytes(2, "big")


def _pack_ip(host: str) -> bytes:
    if ":" in host:
        return ipaddress.IPv6Address(host).packed
    parts = host.split(".")
    if len(parts) != 4:
        raise ValueError(host)
    return bytes(map(int, parts))  # raises ValueError for out-of-range or junk


def _unpack_ip(data: bytes) -> str:
    if len(data) == 4:
        return f"{data[0]}.{data[1]}.{data[2]}.{data[3]}"
    return str(ipaddress.IPv6Address(data))


def unpack_peer_untrusted(data: bytes) -> Address:
    """Unpack 6- or 18-byte compact peer info.

    Raises:
        DecodeError: wrong length.
    """
    n = len(data)
    if n == COMPACT_PEER_V4:
        return (f"{data[0]}.{data[1]}.{data[2]}.{data[3]}", (data[4] << 8) | data[5])
    if n == COMPACT_PEER_V6:
        return (str(ipaddress.IPv6Address(data[:16])), (data[16] << 8) | data[17])
    raise DecodeError(f"compact peer info must be 6 or 18 bytes, not {n}")


def pack_peers(peers: list[Address] | tuple[Address, ...]) -> list[bytes]:
    """Pack peers for a ``values`` list."""
    return [pack_peer(p) for p in peers]


def pack_nodes(contacts: list[Contact] | tuple[Contact, ...], *, ipv6: bool = False) -> bytes:
    """Concatenate compact node info (26 bytes IPv4 / 38 bytes IPv6) for ``nodes``/``nodes6``.

    Contacts of the other address family are skipped.

    Raises:
        LocalProtocolError: a node ID is not 20 bytes, or an address cannot be packed.
    """
    out = []
    for node_id, addr in contacts:
        if (":" in addr[0]) != ipv6:
            continue
        _check_id(node_id, "node ID")
        out.append(node_id + pack_peer(addr))
    return b"".join(out)


def unpack_nodes_untrusted(data: bytes, *, ipv6: bool = False) -> tuple[Contact, ...]:
    """Split compact node info into contacts.

    Raises:
        DecodeError: the length is not a multiple of 26 (38 for IPv6).
    """
    size = COMPACT_NODE_V6 if ipv6 else COMPACT_NODE_V4
    if len(data) % size:
        raise DecodeError(f"compact node info length {len(data)} is not a multiple of {size}")
    if ipv6:
        return tuple(
            Contact(data[i : i + 20], unpack_peer_untrusted(data[i + 20 : i + size]))
            for i in range(0, len(data), size)
        )
    return tuple(
        Contact(
            data[i : i + 20],
            (f"{data[i + 20]}.{data[i + 21]}.{data[i + 22]}.{data[i + 23]}", (data[i + 24] << 8) | data[i + 25]),
        )
        for i in range(0, len(data), size)
    )


# --- encoding --------------------------------------------------------------------------


def encode_message(msg: Message) -> bytes:
    """Encode a message as one bencoded KRPC datagram.

    Raises:
        LocalProtocolError: a field cannot be represented (a node ID that is not
            20 bytes, a bad address, ...).
    """
    if not isinstance(msg, ErrorMessage):
        _check_id(msg.sender_id, "sender_id")
    if isinstance(msg, ResponseMessage):
        r: dict[bytes, Any] = {b"id": msg.sender_id}
        if msg.nodes:
            r[b"nodes"] = pack_nodes(msg.nodes)
        if msg.nodes6:
            r[b"nodes6"] = pack_nodes(msg.nodes6, ipv6=True)
        if msg.values:
            r[b"values"] = pack_peers(msg.values)
        if msg.token is not None:
            r[b"token"] = msg.token
        if msg.samples is not None:
            r[b"samples"] = b"".join(msg.samples)
        if msg.num is not None:
            r[b"num"] = msg.num
        if msg.interval is not None:
            r[b"interval"] = msg.interval
        if msg.bloom_seeds is not None:
            r[b"BFsd"] = msg.bloom_seeds
        if msg.bloom_peers is not None:
            r[b"BFpe"] = msg.bloom_peers
        if msg.value is not None:
            r[b"v"] = bencode.decode_untrusted(msg.value)
        if msg.public_key is not None:
            r[b"k"] = msg.public_key
        if msg.seq is not None:
            r[b"seq"] = msg.seq
        if msg.signature is not None:
            r[b"sig"] = msg.signature
        d: dict[bytes, Any] = {b"t": msg.tid, b"y": b"r", b"r": r}
    elif isinstance(msg, QueryMessage):
        d = {b"t": msg.tid, b"y": b"q", b"q": msg.query.method, b"a": _query_args(msg)}
        if msg.read_only:
            d[b"ro"] = 1
    else:
        d = {b"t": msg.tid, b"y": b"e", b"e": [int(msg.code), msg.message.encode("utf-8")]}
    if msg.version is not None:
        d[b"v"] = msg.version
    if not isinstance(msg, QueryMessage) and msg.ip is not None:
        d[b"ip"] = pack_peer(msg.ip)
    return bencode.encode(d)


def _query_args(msg: QueryMessage) -> dict[bytes, Any]:
    q = msg.query
    a: dict[bytes, Any] = {b"id": msg.sender_id}
    if isinstance(q, (FindNode, SampleInfohashes)):
        a[b"target"] = q.target
    elif isinstance(q, GetPeers):
        a[b"info_hash"] = q.info_hash
        if q.scrape:
            a[b"scrape"] = 1
        if q.noseed:
            a[b"noseed"] = 1
    elif isinstance(q, AnnouncePeer):
        a[b"info_hash"] = q.info_hash
        a[b"port"] = q.port
        a[b"token"] = q.token
        if q.implied_port:
            a[b"implied_port"] = 1
        if q.seed:
            a[b"seed"] = 1
    elif isinstance(q, Get):
        a[b"target"] = q.target
        if q.seq is not None:
            a[b"seq"] = q.seq
    elif isinstance(q, Put):
        a[b"token"] = q.token
        a[b"v"] = bencode.decode_untrusted(q.value)
        if q.public_key is not None:
            a[b"k"] = q.public_key
            a[b"seq"] = q.seq
            a[b"sig"] = q.signature
            if q.salt:
                a[b"salt"] = q.salt
            if q.cas is not None:
                a[b"cas"] = q.cas
    elif isinstance(q, UnknownQuery) and q.target is not None:
        a[b"target"] = q.target
    if msg.want is not None:
        a[b"want"] = sorted(msg.want)
    return a


# --- decoding --------------------------------------------------------------------------


def decode_message_untrusted(data: bytes) -> Message:
    """Decode and validate one KRPC datagram from the network.

    Raises:
        DecodeError: the datagram is not valid bencode or not a valid KRPC
            message. ``tid`` and ``is_query`` are set when the message was a
            query whose transaction ID could be read (answer it with 203).
            No other exception escapes.
    """
    return decode_value_untrusted(bencode.decode_untrusted(data))


def decode_value_untrusted(value: Any) -> Message:
    """Validate a datagram already decoded by :func:`bencode.decode_untrusted`.

    :func:`decode_message_untrusted` is this after the bencode step; a caller that
    looked at the decoded value first (:func:`query_fields_untrusted`) uses it so
    the bytes are decoded only once.

    Raises:
        DecodeError: as :func:`decode_message_untrusted`.
    """
    if type(value) is not dict:
        raise DecodeError("KRPC message is not a dictionary")
    tid = value.get(b"t")
    if type(tid) is not bytes or len(tid) > MAX_TID_LENGTH:
        raise DecodeError("missing or invalid transaction ID 't'")
    y = value.get(b"y")
    version = value.get(b"v")
    if type(version) is not bytes or len(version) > MAX_VERSION_LENGTH:
        version = None
    if y == b"q":
        try:
            return _decode_query(value, tid, version)
        except DecodeError as exc:
            raise DecodeError(str(exc), tid=tid, is_query=True) from None
    if y == b"r":
        return _decode_response(value, tid, version)
    if y == b"e":
        return _decode_error(value, tid, version)
    raise DecodeError(f"unknown message type 'y': {_describe(y)}", tid=tid)


#: :func:`query_fields_untrusted` kinds.
QUERY_PING: Final = 0
QUERY_FIND_NODE: Final = 1
QUERY_GET_PEERS: Final = 2

#: The hot queries' method names, as the constants :func:`query_fields_untrusted` returns.
_METHOD_PING: Final = b"ping"
_METHOD_FIND_NODE: Final = b"find_node"
_METHOD_GET_PEERS: Final = b"get_peers"


def query_fields_untrusted(value: Any) -> tuple[int, bytes, bytes, bytes, bytes | None, bool] | None:
    """Read a valid ``ping``, ``find_node`` or plain ``get_peers`` query without building objects.

    The serving hot path: most datagrams a node receives are these three queries,
    and answering them needs only a few fields. This checks exactly what
    :func:`decode_value_untrusted` checks for them; anything else (another
    method, BEP 33's ``scrape``/``noseed``, a response, a missing or malformed
    field) returns ``None``, and the
    caller then asks :func:`decode_value_untrusted` for the message or the error.
    Whenever this returns fields, :func:`decode_value_untrusted` would return a
    :class:`QueryMessage` with the same ``tid``, ``sender_id``, target and
    ``read_only``. Never raises.

    Args:
        value: the output of :func:`bencode.decode_untrusted`.

    Returns:
        ``(kind, method, tid, sender_id, target, read_only)``: ``kind`` is
        :data:`QUERY_PING`, :data:`QUERY_FIND_NODE` or :data:`QUERY_GET_PEERS`;
        ``target`` is the 20-byte ``target`` or ``info_hash`` (``None`` for
        ``ping``); ``read_only`` is BEP 43's ``ro`` = 1. Or ``None``.
    """
    if type(value) is not dict or value.get(b"y") != b"q":
        return None
    tid = value.get(b"t")
    args = value.get(b"a")
    if type(tid) is not bytes or len(tid) > MAX_TID_LENGTH or type(args) is not dict:
        return None
    sender = args.get(b"id")
    if type(sender) is not bytes or len(sender) != ID_LENGTH:
        return None
    method = value.get(b"q")
    if method == _METHOD_PING:
        kind = QUERY_PING
        method = _METHOD_PING
        target = None
    else:
        if method == _METHOD_FIND_NODE:
            kind = QUERY_FIND_NODE
            method = _METHOD_FIND_NODE
            target = args.get(b"target")
        elif method == _METHOD_GET_PEERS:
            if b"scrape" in args or b"noseed" in args:
                return None  # BEP 33 flags: answered off the hot path
            kind = QUERY_GET_PEERS
            method = _METHOD_GET_PEERS
            target = args.get(b"info_hash")
        else:
            return None
        if type(target) is not bytes or len(target) != ID_LENGTH:
            return None
    ro = value.get(b"ro")
    return (kind, method, tid, sender, target, type(ro) is int and ro == 1)


def _describe(value: Any) -> str:
    """Describe an untrusted value for an error message: bounded, never recursive."""
    if type(value) is bytes:
        return repr(value[:16])
    return type(value).__name__


def _decode_ip_field(value: dict[bytes, Any]) -> Address | None:
    ip = value.get(b"ip")
    if type(ip) is bytes and len(ip) in (COMPACT_PEER_V4, COMPACT_PEER_V6):
        return unpack_peer_untrusted(ip)
    return None


def _get_id(args: dict[bytes, Any], key: bytes) -> bytes:
    v = args.get(key)
    if type(v) is not bytes:
        raise DecodeError(f"missing or invalid {key.decode()!r}")
    if len(v) != ID_LENGTH:
        raise DecodeError(f"{key.decode()!r} must be {ID_LENGTH} bytes, not {len(v)}")
    return v


def _flag(args: dict[bytes, Any], key: bytes) -> bool:
    v = args.get(key)
    return type(v) is int and v != 0


def _decode_query(value: dict[bytes, Any], tid: bytes, version: bytes | None) -> QueryMessage:
    method = value.get(b"q")
    if type(method) is not bytes:
        raise DecodeError("missing or invalid method 'q'")
    args = value.get(b"a")
    if type(args) is not dict:
        raise DecodeError("missing or invalid arguments 'a'")
    sender = _get_id(args, b"id")
    query: Query
    if method == b"ping":
        query = _PING
    elif method == b"find_node":
        query = FindNode(_get_id(args, b"target"))
    elif method == b"get_peers":
        query = GetPeers(_get_id(args, b"info_hash"), _flag(args, b"scrape"), _flag(args, b"noseed"))
    elif method == b"announce_peer":
        query = _decode_announce(args)
    elif method == b"sample_infohashes":
        query = SampleInfohashes(_get_id(args, b"target"))
    elif method == b"get":
        seq = args.get(b"seq")
        query = Get(_get_id(args, b"target"), seq if type(seq) is int else None)
    elif method == b"put":
        query = _decode_put(args)
    else:
        target = args.get(b"target", args.get(b"info_hash"))
        if type(target) is not bytes or len(target) != ID_LENGTH:
            target = None
        query = UnknownQuery(method, target)
    want = args.get(b"want")
    want_set: frozenset[bytes] | None = None
    if type(want) is list:
        want_set = frozenset(w for w in want if type(w) is bytes and w in WANT_VALUES)
    ro = value.get(b"ro")
    return QueryMessage(tid, sender, query, type(ro) is int and ro == 1, want_set, version)


_PING: Final = Ping()


def _decode_announce(args: dict[bytes, Any]) -> AnnouncePeer:
    info_hash = _get_id(args, b"info_hash")
    implied = _flag(args, b"implied_port")
    port = args.get(b"port")
    if type(port) is not int:
        if not implied or port is not None:
            raise DecodeError("missing or invalid 'port'")
        port = 0
    elif not implied and not 0 < port < 65536:
        raise DecodeError(f"'port' out of range: {port}")
    elif implied and not 0 <= port < 65536:
        port = 0  # ignored anyway when implied_port is set
    token = args.get(b"token")
    if type(token) is not bytes or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        raise DecodeError("missing or invalid 'token'")
    return AnnouncePeer(info_hash, port, token, implied, _flag(args, b"seed"))


def _decode_put(args: dict[bytes, Any]) -> Put:
    """A BEP 44 ``put``'s arguments. Sizes of ``v`` and ``salt`` are the store's
    business (it answers 205/207); only the shape is checked here (else 203)."""
    token = args.get(b"token")
    if type(token) is not bytes or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        raise DecodeError("missing or invalid 'token'")
    if b"v" not in args:
        raise DecodeError("missing 'v'")
    value = bencode.encode(args[b"v"])  # canonical input: the verbatim bytes
    key = args.get(b"k")
    if key is None:
        return Put(token, value)
    seq = args.get(b"seq")
    sig = args.get(b"sig")
    salt = args.get(b"salt", b"")
    cas = args.get(b"cas")
    if type(key) is not bytes or len(key) != 32:
        raise DecodeError("'k' must be a 32-byte ed25519 public key")
    if type(sig) is not bytes or len(sig) != 64:
        raise DecodeError("'sig' must be a 64-byte ed25519 signature")
    if type(seq) is not int or not 0 <= seq < 2**63:
        raise DecodeError("'seq' must be an integer from 0 to 2**63 - 1")
    if type(salt) is not bytes:
        raise DecodeError("'salt' must be a byte string")
    if cas is not None and (type(cas) is not int or not 0 <= cas < 2**63):
        raise DecodeError("'cas' must be an integer from 0 to 2**63 - 1")
    return Put(token, value, key, seq, sig, salt, cas)


def _decode_response(value: dict[bytes, Any], tid: bytes, version: bytes | None) -> ResponseMessage:
    r = value.get(b"r")
    if type(r) is not dict:
        raise DecodeError("missing or invalid response 'r'", tid=tid)
    try:
        sender = _get_id(r, b"id")
        nodes: tuple[Contact, ...] = ()
        raw = r.get(b"nodes")
        if raw is not None:
            if type(raw) is not bytes:
                raise DecodeError("'nodes' is not a byte string")
            nodes = unpack_nodes_untrusted(raw)
        nodes6: tuple[Contact, ...] = ()
        raw = r.get(b"nodes6")
        if raw is not None:
            if type(raw) is not bytes:
                raise DecodeError("'nodes6' is not a byte string")
            nodes6 = unpack_nodes_untrusted(raw, ipv6=True)
        values: tuple[Address, ...] = ()
        raw = r.get(b"values")
        if raw is not None:
            if type(raw) is not list or any(type(v) is not bytes for v in raw):
                raise DecodeError("'values' is not a list of byte strings")
            values = tuple(unpack_peer_untrusted(v) for v in raw)
        token = r.get(b"token")
        if token is not None and (type(token) is not bytes or len(token) > MAX_TOKEN_LENGTH):
            raise DecodeError("invalid 'token'")
        samples: tuple[bytes, ...] | None = None
        raw = r.get(b"samples")
        if raw is not None:
            if type(raw) is not bytes or len(raw) % ID_LENGTH:
                raise DecodeError("'samples' is not a multiple of 20 bytes")
            samples = tuple(raw[i : i + ID_LENGTH] for i in range(0, len(raw), ID_LENGTH))
        num = _optional_count(r, b"num")
        interval = _optional_count(r, b"interval")
        bfsd = r.get(b"BFsd")
        bfpe = r.get(b"BFpe")
        # BEP 44 get replies; malformed optional item fields are dropped, and the
        # requester verifies what remains (target hash, signature) before use.
        item_v = bencode.encode(r[b"v"]) if b"v" in r else None
        item_k = r.get(b"k")
        item_seq = r.get(b"seq")
        item_sig = r.get(b"sig")
    except DecodeError as exc:
        raise DecodeError(str(exc), tid=tid) from None
    return ResponseMessage(
        tid,
        sender,
        nodes,
        nodes6,
        values,
        token,
        samples,
        num,
        interval,
        _decode_ip_field(value),
        version,
        bfsd if type(bfsd) is bytes and len(bfsd) == 256 else None,
        bfpe if type(bfpe) is bytes and len(bfpe) == 256 else None,
        item_v,
        item_k if type(item_k) is bytes and len(item_k) == 32 else None,
        item_seq if type(item_seq) is int and 0 <= item_seq < 2**63 else None,
        item_sig if type(item_sig) is bytes and len(item_sig) == 64 else None,
    )


def _optional_count(r: dict[bytes, Any], key: bytes) -> int | None:
    v = r.get(key)
    if v is None:
        return None
    if type(v) is not int or v < 0:
        raise DecodeError(f"{key.decode()!r} is not a non-negative integer")
    return v


def _decode_error(value: dict[bytes, Any], tid: bytes, version: bytes | None) -> ErrorMessage:
    # BEP 5: 'e' is a list whose first element is the integer code and whose
    # second is the message string; both are required. Extra elements are ignored.
    e = value.get(b"e")
    if type(e) is not list or len(e) < 2 or type(e[0]) is not int or type(e[1]) is not bytes:
        raise DecodeError("missing or invalid error 'e' (expected [code, message])", tid=tid)
    return ErrorMessage(tid, e[0], e[1].decode("utf-8", "replace"), _decode_ip_field(value), version)


def _check_id(value: bytes, name: str) -> None:
    if type(value) is not bytes or len(value) != ID_LENGTH:
        raise LocalProtocolError(f"{name} must be {ID_LENGTH} bytes")
