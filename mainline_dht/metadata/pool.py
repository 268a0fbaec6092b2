"""Which metadata piece to ask which peer for, and when the info dictionary is whole.

Owns: the bookkeeping of a metadata fetch from several peers at once (BEP 9),
without I/O. Each connected peer that supports ``ut_metadata`` is added with
the ``metadata_size`` it announced; the pool hands out pieces nobody has yet,
then (near the end) pieces another peer is slow to send; it assembles them and
checks the hash. It decides which peers misbehaved:

* a piece of the wrong length, or a size above the cap: that peer is dropped;
* a dictionary that fails its hash: when one peer sent every piece, it is
  dropped; when several did, nobody can be blamed yet, so the pieces are
  discarded and from then on every peer must send the whole dictionary itself
  (pieces are kept per peer), and the first peer whose own set fails is dropped.

Peers that announce different sizes work on different assemblies: a lying
peer cannot spoil the pieces of honest ones. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final

from .info import DEFAULT_MAX_METADATA_SIZE, verify_info
from .peer_wire import metadata_piece_count, metadata_piece_length

__all__ = ["MetadataPool", "MAX_REQUESTS_PER_PEER", "PieceResult"]

#: How many ``ut_metadata`` requests one peer may have outstanding. libtorrent
#: pipelines a few; more would only make a slow peer hold more pieces back.
MAX_REQUESTS_PER_PEER: Final = 2


@dataclass(slots=True)
class _Assembly:
    """The pieces of one info dictionary of ``size`` bytes."""

    size: int
    pieces: dict[int, bytes] = field(default_factory=dict)
    sources: dict[int, Hashable] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return metadata_piece_count(self.size)

    @property
    def complete(self) -> bool:
        return len(self.pieces) == self.count

    def join(self) -> bytes:
        return b"".join(self.pieces[i] for i in range(self.count))


@dataclass(slots=True)
class _Peer:
    size: int
    requested: set[int] = field(default_factory=set)
    rejected: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class PieceResult:
    """What one received piece led to.

    Attributes:
        info: the verified info dictionary, once complete; else ``None``.
        dropped: peers found to have sent wrong data (drop their connections).
    """

    info: bytes | None = None
    dropped: tuple[Hashable, ...] = ()


class MetadataPool:
    """Piece assignment and assembly for one infohash, across peers.

    Args:
        info_hash: the 20-byte infohash (SHA-1 checked unless ``sha256`` is given).
        sha256: the full v2 infohash (BEP 52); the SHA-256 of the dictionary must match.
        max_size: the largest ``metadata_size`` accepted (bytes).
        max_requests_per_peer: outstanding requests per peer.
    """

    def __init__(
        self,
        info_hash: bytes,
        *,
        sha256: bytes | None = None,
        max_size: int = DEFAULT_MAX_METADATA_SIZE,
        max_requests_per_peer: int = MAX_REQUESTS_PER_PEER,
    ) -> None:
        self.info_hash = info_hash
        self.sha256 = sha256
        self.max_size = max_size
        self.max_requests_per_peer = max_requests_per_peer
        self._peers: dict[Hashable, _Peer] = {}
        self._shared: dict[int, _Assembly] = {}
        #: sizes whose shared assembly failed its hash: each peer assembles alone
        self._solo_sizes: set[int] = set()
        self._solo: dict[Hashable, _Assembly] = {}
        self.dropped: set[Hashable] = set()
        self.result: bytes | None = None

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def add_peer(self, peer: Hashable, metadata_size: int) -> bool:
        """Register a peer that announced ``metadata_size`` (BEP 10 handshake).

        Returns:
            False (and the peer is not added) when the size is 0, above the
            cap, or the peer was dropped before.
        """
        if peer in self.dropped or not 0 < metadata_size <= self.max_size:
            return False
        self._peers[peer] = _Peer(metadata_size)
        return True

    def remove_peer(self, peer: Hashable) -> None:
        """Forget a peer (closed, timed out); its outstanding pieces go to others.

        An assembly no remaining peer works on is freed, so memory stays within
        one ``max_size`` per connected peer however many sizes peers claim.
        """
        state = self._peers.pop(peer, None)
        self._solo.pop(peer, None)
        if state is not None and not any(o.size == state.size for o in self._peers.values()):
            self._shared.pop(state.size, None)

    def _assembly(self, peer: Hashable, state: _Peer) -> _Assembly:
        if state.size in self._solo_sizes:
            if peer not in self._solo:
                self._solo[peer] = _Assembly(state.size)
            return self._solo[peer]
        if state.size not in self._shared:
            self._shared[state.size] = _Assembly(state.size)
        return self._shared[state.size]

    def next_request(self, peer: Hashable) -> int | None:
        """The next piece to request from ``peer``, or ``None`` (nothing useful to ask now).

        A piece nobody has asked for comes first; then one that is outstanding
        at another peer and that this peer has not refused (so that one silent
        peer cannot stall the fetch). The caller sends the request.
        """
        state = self._peers.get(peer)
        if state is None or self.result is not None or len(state.requested) >= self.max_requests_per_peer:
            return None
        assembly = self._assembly(peer, state)
        in_flight: set[int] = set()
        for other, o in self._peers.items():
            if other != peer and o.size == state.size:
                in_flight |= o.requested
        fallback = None
        for piece in range(assembly.count):
            if piece in assembly.pieces or piece in state.requested or piece in state.rejected:
                continue
            if piece not in in_flight or state.size in self._solo_sizes:
                state.requested.add(piece)
                return piece
            if fallback is None:
                fallback = piece
        if fallback is not None:
            state.requested.add(fallback)
        return fallback

    def outstanding(self, peer: Hashable) -> int:
        """How many requests to ``peer`` await an answer."""
        state = self._peers.get(peer)
        return 0 if state is None else len(state.requested)

    def on_reject(self, peer: Hashable, piece: int) -> None:
        """``peer`` refused ``piece``: never ask it for that piece again."""
        state = self._peers.get(peer)
        if state is not None:
            state.requested.discard(piece)
            state.rejected.add(piece)

    def on_data(self, peer: Hashable, piece: int, total_size: int, data: bytes) -> PieceResult:
        """Take a piece ``peer`` sent.

        A piece we did not ask this peer for is ignored. A piece whose
        ``total_size`` differs from the peer's announced size, or whose length
        is wrong, drops the peer.

        Returns:
            The verified dictionary once complete, and any peers to drop.
        """
        state = self._peers.get(peer)
        if state is None or self.result is not None or piece not in state.requested:
            return PieceResult()
        state.requested.discard(piece)
        if total_size != state.size or len(data) != metadata_piece_length(state.size, piece):
            return PieceResult(dropped=self._drop([peer]))
        assembly = self._assembly(peer, state)
        if piece in assembly.pieces:
            return PieceResult()  # a duplicate near the end: another peer was faster
        assembly.pieces[piece] = data
        assembly.sources[piece] = peer
        if not assembly.complete:
            return PieceResult()
        info = assembly.join()
        if verify_info(info, self.info_hash, sha256=self.sha256):
            self.result = info
            return PieceResult(info=info)
        contributors = set(assembly.sources.values())
        assembly.pieces.clear()
        assembly.sources.clear()
        if len(contributors) == 1:
            return PieceResult(dropped=self._drop(contributors))
        self._solo_sizes.add(state.size)
        self._shared.pop(state.size, None)
        for other in self._peers.values():  # start again, each peer on its own
            if other.size == state.size:
                other.rejected.clear()
        return PieceResult()

    def _drop(self, peers: set[Hashable] | list[Hashable]) -> tuple[Hashable, ...]:
        for p in peers:
            self.dropped.add(p)
            self.remove_peer(p)
        return tuple(peers)

    def others_busy(self, peer: Hashable) -> bool:
        """Whether any other peer has requests outstanding (a hash failure may
        yet discard pieces, and give an idle peer something to do)."""
        return any(state.requested for other, state in self._peers.items() if other != peer)

    def useless(self, peer: Hashable) -> bool:
        """Whether ``peer`` has nothing outstanding and nothing left to give."""
        state = self._peers.get(peer)
        if state is None:
            return True
        if state.requested:
            return False
        assembly = self._assembly(peer, state)
        return all(p in assembly.pieces or p in state.rejected for p in range(assembly.count))
