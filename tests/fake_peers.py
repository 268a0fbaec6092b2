"""BitTorrent peers of our own on loopback TCP that serve (or refuse, or spoil) metadata.

Each behaves one way, so a test can build a swarm of good and bad peers:
``"good"`` serves every piece; ``"silent"`` accepts the connection and never
says a word; ``"handshake-only"`` answers the handshake and then nothing;
``"reject"`` rejects every ``ut_metadata`` request; ``"corrupt"`` serves pieces
of the right length with flipped bytes; ``"no-extensions"`` clears BEP 10's bit;
``"oversize"`` announces a ``metadata_size`` above any cap; ``"garbage"`` sends
a message longer than the framing allows; ``"chatty"`` answers requests
with nothing but keep-alives and ``have`` messages, forever.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import trio

from mainline_dht.metadata.peer_wire import (
    EXTENDED,
    EXTENSION_HANDSHAKE_ID,
    METADATA_PIECE_SIZE,
    UT_METADATA,
    MessageReader,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_extension_handshake_untrusted,
    decode_metadata_message_untrusted,
    encode_extension_handshake,
    encode_handshake,
    encode_metadata_message,
)
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Address

#: The ID our fake peers want ut_metadata messages under (any byte but 0 works).
FAKE_UT_METADATA_ID = 7


def make_info(name: bytes = b"fake torrent", files: int = 3, *, size: int = 40_000, seed: int = 0) -> bytes:
    """A v1 multi-file info dictionary of about ``size`` bytes (the ``pieces`` string fills it)."""
    rng = random.Random(seed)
    entries = [{b"length": 1000 * (i + 1), b"path": [b"dir", f"file{i}.bin".encode()]} for i in range(files)]
    pieces = rng.randbytes(max(20, (size // 20) * 20))
    return bencode.encode({b"files": entries, b"name": name, b"piece length": 16384, b"pieces": pieces})


def info_hash_of(info: bytes) -> bytes:
    return hashlib.sha1(info).digest()


@dataclass
class FakePeer:
    """One fake peer; ``address`` is set once it listens. ``requests`` counts what it was asked."""

    info: bytes
    behaviour: str = "good"
    address: Address = ("", 0)
    requests: list[int] = field(default_factory=list)
    connections: int = 0

    async def serve(self, host: str, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=host)
        self.address = (host, listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            task_status.started(self.address)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            async with stream:
                await self._talk(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _talk(self, stream: trio.SocketStream) -> None:
        if self.behaviour == "silent":
            await trio.sleep_forever()
        reader = MessageReader()
        while (hs := reader.next_handshake()) is None:
            data = await stream.receive_some(65536)
            if not data:
                return
            reader.feed(data)
        await stream.send_all(
            encode_handshake(hs.info_hash, b"-FAKE00-" + bytes(12), extensions=self.behaviour != "no-extensions")
        )
        if self.behaviour == "handshake-only":
            await trio.sleep_forever()
        if self.behaviour == "no-extensions":
            await trio.sleep_forever()
        if self.behaviour == "garbage":
            await stream.send_all(b"\xff\xff\xff\xff" + b"x" * 100)
            await trio.sleep_forever()
        size = 1 << 40 if self.behaviour == "oversize" else len(self.info)
        await stream.send_all(b"\x00\x00\x00\x05\x05" + b"\xff" * 4)  # a bitfield first, as real clients send
        await stream.send_all(
            encode_extension_handshake({UT_METADATA: FAKE_UT_METADATA_ID}, metadata_size=size, client="fake")
        )
        their_id = None
        while True:
            msg = reader.next_message()
            if msg is None:
                data = await stream.receive_some(65536)
                if not data:
                    return
                reader.feed(data)
                continue
            if not hasattr(msg, "id") or msg.id != EXTENDED:
                continue
            if msg.payload[0] == EXTENSION_HANDSHAKE_ID:
                their_id = decode_extension_handshake_untrusted(msg.payload[1:]).ut_metadata
                continue
            if msg.payload[0] != FAKE_UT_METADATA_ID or their_id is None:
                continue
            m = decode_metadata_message_untrusted(msg.payload[1:])
            if not isinstance(m, MetadataRequest):
                continue
            self.requests.append(m.piece)
            if self.behaviour == "chatty":
                while True:
                    await stream.send_all(b"\x00\x00\x00\x00" + b"\x00\x00\x00\x05\x04\x00\x00\x00\x01")
                    await trio.sleep(0.05)
            if self.behaviour == "reject":
                await stream.send_all(encode_metadata_message(MetadataReject(m.piece), their_id))
                continue
            piece = self.info[m.piece * METADATA_PIECE_SIZE : (m.piece + 1) * METADATA_PIECE_SIZE]
            if self.behaviour == "corrupt":
                piece = bytes(b ^ 0x5A for b in piece)
            await stream.send_all(encode_metadata_message(MetadataData(m.piece, size, piece), their_id))
