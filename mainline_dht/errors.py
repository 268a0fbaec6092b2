"""The exception tree of mainline-dht.

Every exception the library raises on purpose derives from :class:`DHTError`.
This module imports nothing from the rest of the package at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:  # for annotations only: no import cycle at run time
    from .metadata.fetcher import FetchStats

#: ``(host, port)``; the same as :data:`mainline_dht.wire.contact.Address`, spelt
#: out here because this module imports nothing from the package.
_Address: TypeAlias = tuple[str, int]


class DHTError(Exception):
    """Base class of every error mainline-dht raises on purpose."""


class DecodeError(DHTError, ValueError):
    """Bytes from the network (or a file) are not a valid bencoded/KRPC message.

    Attributes:
        tid: the transaction ID, when it could be read before the fault was
            found, else ``None``.
        is_query: ``True`` when the message claimed to be a query (``y`` = ``q``);
            only a malformed *query* earns a 203 error reply.
    """

    def __init__(self, message: str, *, tid: bytes | None = None, is_query: bool = False) -> None:
        super().__init__(message)
        self.tid = tid
        self.is_query = is_query


class LocalProtocolError(DHTError):
    """The caller asked for something the protocol forbids (bad info_hash length, port 0...)."""


class KRPCError(DHTError):
    """The remote node answered with a KRPC error (``y`` = ``e``).

    Attributes:
        code: the error code (201 generic, 202 server, 203 protocol, 204 method unknown).
        message: the text the remote sent.
        addr: the remote address, when known.
    """

    def __init__(self, code: int, message: str, addr: _Address | None = None) -> None:
        super().__init__(f"KRPC error {code} from {addr}: {message}")
        self.code = code
        self.message = message
        self.addr = addr


class QueryTimeout(DHTError):
    """No reply arrived before the query's deadline.

    Attributes:
        addr: the address queried.
        method: the query's method name (bytes, e.g. ``b"ping"``).
    """

    def __init__(self, addr: _Address, method: bytes = b"") -> None:
        super().__init__(f"no reply from {addr} to {method.decode('ascii', 'replace') or 'query'}")
        self.addr = addr
        self.method = method


class BootstrapError(DHTError):
    """No bootstrap router or saved contact answered.

    The message names what was tried and suggests ``--bootstrap``.
    """


class StateFileError(DHTError):
    """A persisted state file is unreadable, corrupt or written by something else."""


class PeerProtocolError(DHTError):
    """A BitTorrent peer broke the peer wire protocol (BEP 3, 9, 10): an oversized
    or malformed message, a wrong infohash, metadata that fails its hash.

    The fetcher drops such a peer; the error never reaches the caller of
    ``fetch_metadata``.
    """


class MetadataNotFound(DHTError):
    """No peer gave a verified info dictionary before the fetch ended.

    Attributes:
        stats: what the fetch tried (a ``FetchStats``), for the message and for programs.
    """

    def __init__(self, message: str, stats: FetchStats | None = None) -> None:
        super().__init__(message)
        self.stats = stats


class NodeClosedError(DHTError):
    """The node was used after it was closed, or it was closed during the call.

    Raised by the thread node (:mod:`mainline_dht.blocking`): a call made after
    ``close()``, or in flight when another thread closed the node. When the
    node stopped on an error of its own, that error is the ``__cause__``.
    """
