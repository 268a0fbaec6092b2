"""The part of the BitTorrent peer wire protocol a metadata fetch speaks, without I/O.

Owns: the handshake (BEP 3, with BEP 10's extension bit), length-prefixed
message framing with a bounded length, the BEP 10 extension handshake, and
BEP 9's ``ut_metadata`` request, data and reject messages. Bytes in, values
out; values in, bytes out. Must not import trio, socket, time or os: the
fetcher (:mod:`.fetcher`) does the I/O.

Every ``*_untrusted`` function takes a stranger's bytes, decodes bencode only
through :func:`mainline_dht.wire.bencode.decode_untrusted`, and raises only
:class:`~mainline_dht.errors.PeerProtocolError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from ..errors import DecodeError, PeerProtocolError
from ..wire import bencode

__all__ = [
    "PROTOCOL_NAME",
    "HANDSHAKE_LENGTH",
    "METADATA_PIECE_SIZE",
    "MAX_MESSAGE_LENGTH",
    "EXTENDED",
    "EXTENSION_HANDSHAKE_ID",
    "UT_METADATA",
    "Handshake",
    "KeepAlive",
    "Message",
    "ExtensionHandshake",
    "MetadataRequest",
    "MetadataData",
    "MetadataReject",
    "MetadataMessage",
    "MessageReader",
    "encode_handshake",
    "decode_handshake_untrusted",
    "encode_message",
    "encode_extended",
    "encode_extension_handshake",
    "decode_extension_handshake_untrusted",
    "encode_metadata_message",
    "decode_metadata_message_untrusted",
    "metadata_piece_count",
    "metadata_piece_length",
]

#: BEP 3: the handshake starts with the length-prefixed protocol name.
PROTOCOL_NAME: Final = b"\x13BitTorrent protocol"
#: 1 + 19 name bytes + 8 reserved + 20 infohash + 20 peer ID.
HANDSHAKE_LENGTH: Final = 68
#: BEP 9: metadata moves in pieces of 16 KiB; only the last may be shorter.
METADATA_PIECE_SIZE: Final = 16 * 1024
#: The longest message (after its 4-byte length) we accept. A ``ut_metadata``
#: data message is 16 KiB plus a small dictionary; a ``bitfield`` of a torrent
#: with 2 million pieces is 256 KiB, more than any real torrent we know needs.
#: Longer messages are refused before they are buffered.
MAX_MESSAGE_LENGTH: Final = 256 * 1024
#: BEP 10: the message ID of every extension message.
EXTENDED: Final = 20
#: BEP 10: the extended message ID of the extension handshake.
EXTENSION_HANDSHAKE_ID: Final = 0
#: BEP 9: the extension's name in the ``m`` dictionary.
UT_METADATA: Final = b"ut_metadata"
#: The longest extension handshake we decode. Real ones are a few hundred bytes.
MAX_EXTENSION_HANDSHAKE: Final = 64 * 1024
#: BEP 10's extension bit: reserved byte 5 (counting from 0), value 0x10.
_EXTENSION_BYTE: Final = 5
_EXTENSION_MASK: Final = 0x10

_LENGTH = struct.Struct(">I")

# BEP 9 msg_type values.
_REQUEST: Final = 0
_DATA: Final = 1
_REJECT: Final = 2


# --- values ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """A BEP 3 handshake.

    Attributes:
        info_hash: the 20-byte infohash the connection is about.
        peer_id: the sender's 20-byte peer ID.
        reserved: the 8 reserved bytes (extension bits).
    """

    info_hash: bytes
    peer_id: bytes
    reserved: bytes = bytes(8)

    def __post_init__(self) -> None:
        if len(self.info_hash) != 20 or len(self.peer_id) != 20 or len(self.reserved) != 8:
            raise ValueError("a handshake needs a 20-byte infohash, a 20-byte peer ID and 8 reserved bytes")

    @property
    def supports_extensions(self) -> bool:
        """Whether the sender set BEP 10's extension bit."""
        return bool(self.reserved[_EXTENSION_BYTE] & _EXTENSION_MASK)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A zero-length message (BEP 3 keep-alive)."""


@dataclass(frozen=True, slots=True)
class Message:
    """Any other framed message: its one-byte ID and its payload."""

    id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ExtensionHandshake:
    """A BEP 10 extension handshake.

    Attributes:
        extensions: the ``m`` dictionary: extension name -> the message ID the
            sender wants to *receive* it under; 0 means disabled.
        metadata_size: BEP 9's ``metadata_size`` (bytes), if sent.
        client: the ``v`` client name, if sent.
    """

    extensions: dict[bytes, int] = field(default_factory=dict)
    metadata_size: int | None = None
    client: str | None = None

    @property
    def ut_metadata(self) -> int | None:
        """The ID to send ``ut_metadata`` messages under, or ``None`` if unsupported."""
        value = self.extensions.get(UT_METADATA, 0)
        return value or None


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    """BEP 9 ``msg_type`` 0: please send metadata piece ``piece``."""

    piece: int


@dataclass(frozen=True, slots=True)
class MetadataData:
    """BEP 9 ``msg_type`` 1: metadata piece ``piece`` of a ``total_size``-byte info dictionary."""

    piece: int
    total_size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MetadataReject:
    """BEP 9 ``msg_type`` 2: the sender will not send piece ``piece``."""

    piece: int


MetadataMessage = MetadataRequest | MetadataData | MetadataReject


# --- handshake -------------------------------------------------------------------


def encode_handshake(info_hash: bytes, peer_id: bytes, *, extensions: bool = True) -> bytes:
    """Return the 68-byte handshake, with BEP 10's extension bit set when ``extensions``.

    Raises:
        ValueError: ``info_hash`` or ``peer_id`` is not 20 bytes.
    """
    reserved = bytearray(8)
    if extensions:
        reserved[_EXTENSION_BYTE] |= _EXTENSION_MASK
    hs = Handshake(info_hash, peer_id, bytes(reserved))
    return PROTOCOL_NAME + hs.reserved + hs.info_hash + hs.peer_id


def decode_handshake_untrusted(data: bytes) -> Handshake:
    """Decode the 68-byte handshake a peer sent.

    Raises:
        PeerProtocolError: not 68 bytes, or not the BitTorrent protocol.
    """
    if len(data) != HANDSHAKE_LENGTH:
        raise PeerProtocolError(f"handshake of {len(data)} bytes, expected {HANDSHAKE_LENGTH}")
    if not data.startswith(PROTOCOL_NAME):
        raise PeerProtocolError("not a BitTorrent handshake")
    return Handshake(info_hash=data[28:48], peer_id=data[48:68], reserved=data[20:28])


# --- framing ---------------------------------------------------------------------


def encode_message(message_id: int, payload: bytes = b"") -> bytes:
    """Frame one message: 4-byte big-endian length, the ID byte, the payload."""
    if not 0 <= message_id <= 255:
        raise ValueError(f"message ID {message_id} is not a byte")
    return _LENGTH.pack(1 + len(payload)) + bytes((message_id,)) + payload


def encode_extended(extended_id: int, payload: bytes) -> bytes:
    """Frame one BEP 10 extension message (ID 20, then the extended ID byte)."""
    if not 0 <= extended_id <= 255:
        raise ValueError(f"extended message ID {extended_id} is not a byte")
    return encode_message(EXTENDED, bytes((extended_id,)) + payload)


class MessageReader:
    """Split a peer's byte stream into a handshake, then messages.

    Feed bytes as they arrive with :meth:`feed`; call :meth:`next_handshake`
    once, then :meth:`next_message` until it returns ``None`` (more bytes
    needed). A message longer than ``max_length`` raises as soon as its length
    prefix is read, so the buffer never holds more than one message of at most
    ``max_length`` bytes plus what the last :meth:`feed` brought.
    """

    def __init__(self, *, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._buffer = bytearray()
        self._max_length = max_length
        self._handshake_done = False

    @property
    def buffered(self) -> int:
        """How many bytes wait in the buffer."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._buffer += data

    def next_handshake(self) -> Handshake | None:
        """Return the peer's handshake once 68 bytes are in, else ``None``.

        Raises:
            PeerProtocolError: the bytes are not a BitTorrent handshake.
        """
        if self._handshake_done:
            raise RuntimeError("the handshake was already read")
        if len(self._buffer) >= len(PROTOCOL_NAME) and not self._buffer.startswith(PROTOCOL_NAME):
            raise PeerProtocolError("not a BitTorrent handshake")
        if len(self._buffer) < HANDSHAKE_LENGTH:
            return None
        data = bytes(self._buffer[:HANDSHAKE_LENGTH])
        del self._buffer[:HANDSHAKE_LENGTH]
        self._handshake_done = True
        return decode_handshake_untrusted(data)

    def next_message(self) -> KeepAlive | Message | None:
        """Return the next complete message, or ``None`` when more bytes are needed.

        Raises:
            PeerProtocolError: a length prefix above ``max_length``.
        """
        if not self._handshake_done:
            raise RuntimeError("read the handshake first")
        if len(self._buffer) < 4:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > self._max_length:
            raise PeerProtocolError(f"message of {length} bytes is longer than {self._max_length}")
        if len(self._buffer) < 4 + length:
            return None
        if length == 0:
            del self._buffer[:4]
            return KeepAlive()
        message = Message(self._buffer[4], bytes(self._buffer[5 : 4 + length]))
        del self._buffer[: 4 + length]
        return message


# --- BEP 10 extension handshake ---------------------------------------------------


def encode_extension_handshake(
    extensions: dict[bytes, int],
    *,
    metadata_size: int | None = None,
    client: str | None = None,
) -> bytes:
    """Return a framed extension handshake.

    Args:
        extensions: extension name -> the ID we want to receive it under.
        metadata_size: the info dictionary's size, for a peer that has it (BEP 9).
        client: our client name and version (``v``).
    """
    body: dict[bytes, object] = {b"m": dict(extensions)}
    if metadata_size is not None:
        body[b"metadata_size"] = metadata_size
    if client is not None:
        body[b"v"] = client.encode("utf-8")
    return encode_extended(EXTENSION_HANDSHAKE_ID, bencode.encode(body))


def decode_extension_handshake_untrusted(payload: bytes) -> ExtensionHandshake:
    """Decode the bencoded body of an extension handshake (after the extended ID byte).

    Unknown keys are ignored; malformed optional ones (``v``, an ``m`` entry
    that is not a small integer) are ignored too, as BEP 10 asks. A
    ``metadata_size`` that is not a non-negative integer counts as absent.

    Raises:
        PeerProtocolError: not a bencoded dictionary, larger than
            :data:`MAX_EXTENSION_HANDSHAKE`, or an ``m`` that is not a dictionary.
    """
    try:
        body = bencode.decode_untrusted(payload, max_size=MAX_EXTENSION_HANDSHAKE)
    except DecodeError as exc:
        raise PeerProtocolError(f"malformed extension handshake: {exc}") from None
    if type(body) is not dict:
        raise PeerProtocolError("extension handshake is not a dictionary")
    m = body.get(b"m", {})
    if type(m) is not dict:
        raise PeerProtocolError("extension handshake's 'm' is not a dictionary")
    extensions = {name: value for name, value in m.items() if type(value) is int and 0 <= value <= 255}
    size = body.get(b"metadata_size")
    metadata_size = size if type(size) is int and size >= 0 else None
    v = body.get(b"v")
    client = v.decode("utf-8", "replace")[:100] if type(v) is bytes else None
    return ExtensionHandshake(extensions, metadata_size, client)


# --- BEP 9 ut_metadata -------------------------------------------------------------


def metadata_piece_count(total_size: int) -> int:
    """How many 16 KiB pieces carry a ``total_size``-byte info dictionary."""
    return -(-total_size // METADATA_PIECE_SIZE)


def metadata_piece_length(total_size: int, piece: int) -> int:
    """The exact length piece ``piece`` of a ``total_size``-byte info dictionary has.

    Raises:
        ValueError: ``piece`` is out of range.
    """
    if not 0 <= piece < metadata_piece_count(total_size):
        raise ValueError(f"piece {piece} of a {total_size}-byte info dictionary does not exist")
    return min(METADATA_PIECE_SIZE, total_size - piece * METADATA_PIECE_SIZE)


def encode_metadata_message(message: MetadataMessage, extended_id: int) -> bytes:
    """Return a framed ``ut_metadata`` message, sent under the peer's ``extended_id``."""
    if isinstance(message, MetadataRequest):
        body = bencode.encode({b"msg_type": _REQUEST, b"piece": message.piece})
    elif isinstance(message, MetadataReject):
        body = bencode.encode({b"msg_type": _REJECT, b"piece": message.piece})
    else:
        body = bencode.encode(
            {b"msg_type": _DATA, b"piece": message.piece, b"total_size": message.total_size}
        ) + message.data
    return encode_extended(extended_id, body)


def decode_metadata_message_untrusted(payload: bytes) -> MetadataMessage:
    """Decode a ``ut_metadata`` message body (after the extended ID byte).

    A data message is a bencoded dictionary followed by the raw piece; its end
    is found with :func:`~mainline_dht.wire.bencode.value_end_untrusted`. The
    payload is one framed message, so its length is already bounded by
    :data:`MAX_MESSAGE_LENGTH`. Bytes after a request's or reject's dictionary,
    or a data piece longer than 16 KiB, are errors.

    Raises:
        PeerProtocolError: malformed bencode, a missing or mistyped
            ``msg_type``/``piece``/``total_size``, or an unknown ``msg_type``.
    """
    try:
        end = bencode.value_end_untrusted(payload)
        body = bencode.decode_untrusted(payload[:end], max_size=len(payload))
    except DecodeError as exc:
        raise PeerProtocolError(f"malformed ut_metadata message: {exc}") from None
    if type(body) is not dict:
        raise PeerProtocolError("ut_metadata message is not a dictionary")
    msg_type = body.get(b"msg_type")
    piece = body.get(b"piece")
    if type(msg_type) is not int or type(piece) is not int or piece < 0:
        raise PeerProtocolError("ut_metadata message without an integer msg_type and piece")
    rest = payload[end:]
    if msg_type == _DATA:
        total_size = body.get(b"total_size")
        if type(total_size) is not int or total_size < 0:
            raise PeerProtocolError("ut_metadata data message without a total_size")
        if len(rest) > METADATA_PIECE_SIZE:
            raise PeerProtocolError(f"ut_metadata piece of {len(rest)} bytes is longer than 16 KiB")
        return MetadataData(piece, total_size, rest)
    if rest:
        raise PeerProtocolError("bytes after a ut_metadata request or reject")
    if msg_type == _REQUEST:
        return MetadataRequest(piece)
    if msg_type == _REJECT:
        return MetadataReject(piece)
    raise PeerProtocolError(f"unknown ut_metadata msg_type {msg_type}")
