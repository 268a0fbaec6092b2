"""Fetching a torrent's info dictionary from its peers, over trio TCP.

Owns: the connections of a metadata fetch. :func:`fetch_metadata` looks up the
infohash's peers through a running :class:`~mainline_dht.runtime.node.DHTNode`
(its public ``get_peers``, as any program would), connects to several at once,
and lets a :class:`~.pool.MetadataPool` decide what to ask whom. Every step has
a timeout; every byte a peer sends goes through :mod:`.peer_wire`. The first
verified dictionary ends the fetch and closes the other connections.

This module decides nothing about the protocol: the pool and the wire module do.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Final

import trio

from ..errors import MetadataNotFound, PeerProtocolError
from ..runtime.node import DHTNode
from ..wire.contact import Address
from .info import DEFAULT_MAX_METADATA_SIZE, TorrentInfo, parse_info_untrusted
from .peer_wire import (
    EXTENDED,
    EXTENSION_HANDSHAKE_ID,
    UT_METADATA,
    KeepAlive,
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
from .pool import MetadataPool

__all__ = [
    "fetch_metadata",
    "fetch_metadata_from_peers",
    "FetchStats",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_STEP_TIMEOUT",
    "DEFAULT_MAX_PEERS",
]

log = logging.getLogger(__name__)

#: Peers connected to at once.
DEFAULT_CONCURRENCY: Final = 8
#: Seconds to open a TCP connection.
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
#: Seconds a peer may take for each step: its handshake, its extension
#: handshake, each piece we asked for.
DEFAULT_STEP_TIMEOUT: Final = 10.0
#: Distinct peers tried per fetch, at most.
DEFAULT_MAX_PEERS: Final = 200
#: The ``ut_metadata`` message ID we ask peers to send to us under (BEP 10: our choice).
OUR_UT_METADATA_ID: Final = 3
#: Messages (of other kinds: bitfield, have...) a peer may send before its
#: extension handshake.
MAX_MESSAGES_BEFORE_EXTENSION_HANDSHAKE: Final = 64
#: Bytes read from a socket at a time.
RECEIVE_SIZE: Final = 64 * 1024
#: Our BEP 10 ``v``.
CLIENT_NAME: Final = "mainline-dht"


@dataclass(slots=True)
class FetchStats:
    """What a fetch did; pass one in to read it afterwards, even on failure.

    Attributes:
        peers_found: distinct peer addresses received.
        connected: peers that completed the BitTorrent handshake.
        no_metadata: peers without ``ut_metadata`` or a usable ``metadata_size``.
        rejected: ``ut_metadata`` reject messages received.
        failed: peers that could not be reached, timed out or broke the protocol.
        dropped: peers that sent wrong metadata (their addresses).
        lookup_replies: DHT nodes that answered the lookup (``fetch_metadata`` only).
        source: the peer that completed the dictionary.
    """

    peers_found: int = 0
    connected: int = 0
    no_metadata: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: list[Address] = field(default_factory=list)
    lookup_replies: int = 0
    source: Address | None = None


class _PeerDone(Exception):
    """This peer has nothing more to give (not a fault)."""


class _Changes:
    """Wakes idle connections when the pool changes (a piece, a reject, a peer gone)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


async def fetch_metadata(
    node: DHTNode,
    info_hash: bytes,
    *,
    sha256: bytes | None = None,
    timeout: float = 60.0,
    max_size: int = DEFAULT_MAX_METADATA_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    step_timeout: float = DEFAULT_STEP_TIMEOUT,
    max_peers: int = DEFAULT_MAX_PEERS,
    stats: FetchStats | None = None,
    on_peer: Callable[[Address], None] | None = None,
    rng: random.Random | None = None,
) -> TorrentInfo:
    """Look up ``info_hash``'s peers on the DHT and fetch its info dictionary from them.

    Args:
        node: a running :class:`~mainline_dht.runtime.node.DHTNode`.
        info_hash: the 20-byte DHT infohash (for a v2 torrent, the first 20
            bytes of its SHA-256 infohash).
        sha256: the full v2 infohash when the target was a ``btmh`` (BEP 52):
            the dictionary is then checked with SHA-256 instead of SHA-1.
        timeout: seconds for the whole fetch, lookup included.
        max_size: the largest ``metadata_size`` accepted (bytes; 10 MiB by default).
        concurrency: peers connected to at once.
        connect_timeout: seconds per TCP connect.
        step_timeout: seconds per protocol step of one peer.
        max_peers: distinct peers tried at most.
        stats: filled in as the fetch goes.
        on_peer: called with each distinct peer address the lookup finds.
        rng: for our peer ID (default: the OS's generator).

    Returns:
        The verified :class:`TorrentInfo`, with ``source`` and ``peers`` set.

    Raises:
        MetadataNotFound: no peer gave a verified dictionary in time
            (``exc.stats`` says what was tried).
        LocalProtocolError: ``info_hash`` is not 20 bytes.
    """
    stats = stats if stats is not None else FetchStats()
    with trio.move_on_after(timeout):
        async with node.get_peers(info_hash) as stream:
            try:
                return await fetch_metadata_from_peers(
                    info_hash,
                    stream,
                    sha256=sha256,
                    max_size=max_size,
                    concurrency=concurrency,
                    connect_timeout=connect_timeout,
                    step_timeout=step_timeout,
                    max_peers=max_peers,
                    stats=stats,
                    on_peer=on_peer,
                    rng=rng,
                )
            finally:
                stats.lookup_replies = stream.stats.replies
    raise MetadataNotFound(_failure_message(stats, f"within {timeout:g} s"), stats)


def _failure_message(stats: FetchStats, when: str) -> str:
    return (
        f"no peer gave the metadata {when}: {stats.peers_found} peers found, {stats.connected} connected, "
        f"{stats.no_metadata} without ut_metadata, {stats.rejected} rejects, {len(stats.dropped)} sent wrong data"
    )


async def fetch_metadata_from_peers(
    info_hash: bytes,
    peers: AsyncIterable[Address],
    *,
    sha256: bytes | None = None,
    max_size: int = DEFAULT_MAX_METADATA_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    step_timeout: float = DEFAULT_STEP_TIMEOUT,
    max_peers: int = DEFAULT_MAX_PEERS,
    stats: FetchStats | None = None,
    on_peer: Callable[[Address], None] | None = None,
    rng: random.Random | None = None,
) -> TorrentInfo:
    """Fetch an info dictionary from the peers ``peers`` yields (as they arrive).

    The same as :func:`fetch_metadata` without the lookup: for callers that
    know peers already. It returns when a dictionary verifies, and raises
    :class:`MetadataNotFound` once ``peers`` is exhausted and every peer has
    been tried. Put a timeout around it (``trio.move_on_after``) for an
    endless ``peers``.
    """
    if len(info_hash) != 20:
        raise ValueError("info_hash must be 20 bytes")
    stats = stats if stats is not None else FetchStats()
    rng = rng if rng is not None else random.SystemRandom()
    peer_id = b"-MD0001-" + rng.randbytes(12)
    pool = MetadataPool(info_hash, sha256=sha256, max_size=max_size)
    found: list[Address] = []
    result: list[tuple[bytes, Address]] = []
    changes = _Changes()

    send, receive = trio.open_memory_channel[Address](math.inf)

    async def produce() -> None:
        async with send:
            seen: set[Address] = set()
            async for addr in peers:
                if addr in seen or addr[1] == 0:
                    continue
                seen.add(addr)
                found.append(addr)
                stats.peers_found += 1
                if on_peer is not None:
                    on_peer(addr)
                send.send_nowait(addr)
                if len(seen) >= max_peers:
                    break

    async def work() -> None:
        async for addr in receive:
            try:
                info = await _fetch_from_peer(
                    addr, info_hash, peer_id, pool, stats, changes,
                    connect_timeout=connect_timeout, step_timeout=step_timeout,
                )
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, PeerProtocolError) as exc:
                log.debug("peer %s: %s", addr, exc)
                stats.failed += 1
                info = None
            except _PeerDone as exc:
                log.debug("peer %s: %s", addr, exc)
                info = None
            finally:
                pool.remove_peer(addr)  # its outstanding pieces go to the other peers
                changes.notify()
            if info is not None:
                result.append((info, addr))
                nursery.cancel_scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with receive:
            async with trio.open_nursery() as workers:
                for _ in range(concurrency):
                    workers.start_soon(work)
        nursery.cancel_scope.cancel()  # workers done: stop the lookup too

    if not result:
        raise MetadataNotFound(_failure_message(stats, "from any peer"), stats)
    info, source = result[0]
    stats.source = source
    parsed = parse_info_untrusted(info, info_hash, max_size=max_size)
    return TorrentInfo(
        info_hash=parsed.info_hash,
        name=parsed.name,
        length=parsed.length,
        files=parsed.files,
        piece_length=parsed.piece_length,
        info=parsed.info,
        version=parsed.version,
        source=source,
        peers=tuple(found),
    )


async def _fetch_from_peer(
    addr: Address,
    info_hash: bytes,
    peer_id: bytes,
    pool: MetadataPool,
    stats: FetchStats,
    changes: _Changes,
    *,
    connect_timeout: float,
    step_timeout: float,
) -> bytes | None:
    """Talk to one peer until the dictionary is whole, the peer is useless, or it fails.

    Returns:
        The verified dictionary if this peer's piece completed it, else ``None``.

    Raises:
        OSError, trio.BrokenResourceError: connection trouble.
        PeerProtocolError: the peer broke the protocol or timed out.
        _PeerDone: the peer has nothing (more) to give.
    """
    with trio.fail_after(connect_timeout):
        try:
            stream = await trio.open_tcp_stream(addr[0], addr[1])
        except trio.TooSlowError:
            raise PeerProtocolError("connect timed out") from None
    async with stream:
        reader = MessageReader()

        # A deadline for each step, which only progress moves: messages we
        # ignore (keep-alives, have...) cannot keep a peer on forever.
        deadline = trio.current_time() + step_timeout

        async def receive(what: str) -> None:
            with trio.move_on_at(deadline) as scope:
                data = await stream.receive_some(RECEIVE_SIZE)
            if scope.cancelled_caught:
                raise PeerProtocolError(f"no {what} within {step_timeout:g} s")
            if not data:
                raise PeerProtocolError(f"connection closed before {what}")
            reader.feed(data)

        await stream.send_all(encode_handshake(info_hash, peer_id))
        while (hs := reader.next_handshake()) is None:
            await receive("handshake")
        if hs.info_hash != info_hash:
            raise PeerProtocolError("handshake for another infohash")
        stats.connected += 1
        deadline = trio.current_time() + step_timeout
        if not hs.supports_extensions:
            stats.no_metadata += 1
            raise _PeerDone("no extension protocol (BEP 10)")
        await stream.send_all(encode_extension_handshake({UT_METADATA: OUR_UT_METADATA_ID}, client=CLIENT_NAME))

        # the peer's extension handshake, skipping other messages (bitfield, have...)
        ext = None
        for _ in range(MAX_MESSAGES_BEFORE_EXTENSION_HANDSHAKE):
            while (msg := reader.next_message()) is None:
                await receive("extension handshake")
            if isinstance(msg, KeepAlive) or msg.id != EXTENDED or not msg.payload:
                continue
            if msg.payload[0] == EXTENSION_HANDSHAKE_ID:
                ext = decode_extension_handshake_untrusted(msg.payload[1:])
                break
        if ext is None:
            raise PeerProtocolError("no extension handshake")
        their_id = ext.ut_metadata
        if their_id is None or ext.metadata_size is None:
            stats.no_metadata += 1
            raise _PeerDone("no ut_metadata or metadata_size")
        if not pool.add_peer(addr, ext.metadata_size):
            stats.no_metadata += 1
            raise _PeerDone(f"metadata_size {ext.metadata_size} refused (cap {pool.max_size})")

        while True:
            if addr not in pool:
                raise PeerProtocolError("dropped: sent wrong metadata")
            if pool.outstanding(addr) == 0:
                deadline = trio.current_time() + step_timeout  # a fresh request, a fresh step
            while (piece := pool.next_request(addr)) is not None:
                await stream.send_all(encode_metadata_message(MetadataRequest(piece), their_id))
            if pool.outstanding(addr) == 0:
                if pool.result is not None:
                    return None
                if not pool.others_busy(addr):
                    raise _PeerDone("nothing left to ask for")
                with trio.move_on_after(step_timeout):  # idle until another peer's pieces land
                    await changes.wait()
                continue
            while (msg := reader.next_message()) is None:
                await receive("metadata piece")
            if isinstance(msg, KeepAlive) or msg.id != EXTENDED or not msg.payload:
                continue
            if msg.payload[0] == EXTENSION_HANDSHAKE_ID:
                continue  # BEP 10 allows repeating it; we keep the first
            if msg.payload[0] != OUR_UT_METADATA_ID:
                continue  # another extension's message
            m = decode_metadata_message_untrusted(msg.payload[1:])
            if isinstance(m, MetadataRequest):  # we have nothing to give
                await stream.send_all(encode_metadata_message(MetadataReject(m.piece), their_id))
            elif isinstance(m, MetadataReject):
                deadline = trio.current_time() + step_timeout
                stats.rejected += 1
                pool.on_reject(addr, m.piece)
                changes.notify()
            else:
                assert isinstance(m, MetadataData)
                deadline = trio.current_time() + step_timeout
                outcome = pool.on_data(addr, m.piece, m.total_size, m.data)
                changes.notify()
                for bad in outcome.dropped:
                    stats.dropped.append(_address(bad))
                    log.info("dropped peer %s: it sent wrong metadata", bad)
                if outcome.info is not None:
                    stats.source = addr
                    return outcome.info


def _address(peer: Hashable) -> Address:
    assert isinstance(peer, tuple)
    return (str(peer[0]), int(peer[1]))
