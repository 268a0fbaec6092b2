"""Events the protocol core reports to the layer that drives it.

Pure values; imports only the message and contact types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..wire.contact import Address
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


Event = Union[ResponseReceived, ErrorReceived, QueryTimedOut, PeerAnnounced, ExternalAddressChanged]
