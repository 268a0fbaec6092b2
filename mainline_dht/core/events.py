"""Events the protocol core reports to the layer that drives it.

Pure values; imports only the message and contact types. Two kinds: the outcome of
one query the runtime sent itself (keyed by :data:`TransactionKey`), and the
progress of an operation the core runs on its own (keyed by :data:`OperationId`):
lookups, bootstraps, bucket refreshes and announces, plus the schedule's requests
(:class:`SaveDue`, :class:`BootstrapDue`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

from ..wire.contact import Address, Contact
from ..wire.krpc import ErrorMessage, Query, ResponseMessage

#: A transaction is named by its ID and the address it was sent to (BEP 5:
#: replies are matched on both, so a stranger cannot answer for someone else).
TransactionKey = tuple[bytes, Address]


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A reply to one of our queries arrived.

    Attributes:
        key: the transaction it answers.
        query: what we asked.
        response: the reply.
        rtt: round-trip time in seconds.
    """

    key: TransactionKey
    query: Query
    response: ResponseMessage
    rtt: float


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """The remote answered one of our queries with a KRPC error."""

    key: TransactionKey
    query: Query
    error: ErrorMessage


@dataclass(frozen=True, slots=True)
class QueryTimedOut:
    """No reply to one of our queries before its deadline."""

    key: TransactionKey
    query: Query


@dataclass(frozen=True, slots=True)
class PeerAnnounced:
    """A remote node announced a peer to us with a valid token (BEP 5 ``announce_peer``)."""

    info_hash: bytes
    peer: Address
    seed: bool


@dataclass(frozen=True, slots=True)
class InfohashQueried:
    """A remote node asked us for the peers of an infohash (BEP 5 ``get_peers``).

    Reported for every ``get_peers`` query we answer, so that a crawler learns
    the infohashes others look for (``announce_peer`` is :class:`PeerAnnounced`).

    Attributes:
        info_hash: the infohash asked for.
        sender_id: the querier's node ID.
        addr: the querier's address.
    """

    info_hash: bytes
    sender_id: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class ExternalAddressChanged:
    """The nodes that answer us agree on a new external IP address for us (BEP 42 ``ip``).

    Attributes:
        ip: the address they report.
        new_node_id: the BEP 42 node ID we took for it, or ``None`` if we kept
            ours (it is valid for ``ip`` already, ``ip`` is a local address, or
            the node is configured to keep its ID).
    """

    ip: str
    new_node_id: bytes | None


#: Names one operation the core runs (a lookup, bootstrap, refresh or announce).
OperationId = int


@dataclass(frozen=True, slots=True)
class LookupPeersFound:
    """A ``get_peers`` lookup received peers it had not seen before.

    Attributes:
        op: the lookup.
        peers: the new peers, in arrival order.
        at: when the reply carrying them arrived (the driver's clock).
    """

    op: OperationId
    peers: tuple[Address, ...]
    at: float


@dataclass(frozen=True, slots=True)
class LookupReplied:
    """A lookup started with ``report_replies`` received an answer (any answer).

    For queries whose replies carry more than nodes and peers: BEP 33 bloom
    filters, BEP 44 items. The answer's nodes, peers and token are the lookup's
    already.

    Attributes:
        op: the lookup.
        contact: who answered.
        response: the answer.
        at: when it arrived.
    """

    op: OperationId
    contact: Contact
    response: ResponseMessage
    at: float


@dataclass(frozen=True, slots=True)
class LookupFinished:
    """A lookup is over (see :attr:`~mainline_dht.core.lookup.Lookup.done`).

    Attributes:
        op: the lookup.
        target: the ID or infohash looked up.
        closest: the k closest nodes that answered, closest first, each with
            the announce token it gave (``None`` for ``find_node``).
        replies: answers the lookup received.
        at: when it finished.
    """

    op: OperationId
    target: bytes
    closest: tuple[tuple[Contact, bytes | None], ...]
    replies: int
    at: float


class BootstrapFailure(enum.Enum):
    """Why a bootstrap failed: data the runtime turns into a ``BootstrapError`` message."""

    NOTHING_RESOLVED = "no bootstrap node resolved to an address, and no saved contacts"
    NO_ANSWER = "no node answered within the bootstrap timeout"


@dataclass(frozen=True, slots=True)
class BootstrapFinished:
    """A bootstrap (joining the network) is over.

    Attributes:
        op: the bootstrap.
        failure: ``None`` when a node answered and the table was filled.
        contacts: contacts in the routing table now.
        saved_contacts: saved contacts the node started with (tried first).
        routers: router addresses known (tried).
        at: when it finished.
    """

    op: OperationId
    failure: BootstrapFailure | None
    contacts: int
    saved_contacts: int
    routers: int
    at: float


@dataclass(frozen=True, slots=True)
class RefreshFinished:
    """A bucket refresh is over: ``buckets`` buckets were each searched by a lookup."""

    op: OperationId
    buckets: int
    at: float


@dataclass(frozen=True, slots=True)
class AnnounceFinished:
    """An announce is over: ``accepted`` of the ``sent`` ``announce_peer`` queries were answered."""

    op: OperationId
    accepted: int
    sent: int
    at: float


@dataclass(frozen=True, slots=True)
class SaveDue:
    """The save schedule says: write the routing table to the state file now."""

    at: float


@dataclass(frozen=True, slots=True)
class BootstrapDue:
    """The routing table ran empty: bootstrap again (the core applied its backoff)."""

    at: float


Event = Union[
    ResponseReceived,
    ErrorReceived,
    QueryTimedOut,
    PeerAnnounced,
    InfohashQueried,
    ExternalAddressChanged,
    LookupPeersFound,
    LookupReplied,
    LookupFinished,
    BootstrapFinished,
    RefreshFinished,
    AnnounceFinished,
    SaveDue,
    BootstrapDue,
]
