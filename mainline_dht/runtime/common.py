"""What every runtime (trio, asyncio) shares and that needs no event loop.

Owns: the default routers and port, :class:`NodeStats` and how it is read from the
core, the rate-limited log of repeated errors, handing the core's events to whoever
waits for them (:class:`EventDispatch`), address parsing, and the text of a :class:`~mainline_dht.errors.BootstrapError`
built from the core's :class:`~mainline_dht.core.events.BootstrapFinished`. Imports
neither trio nor asyncio.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from ..core.events import (
    BootstrapDue,
    BootstrapFailure,
    BootstrapFinished,
    ErrorReceived,
    Event,
    InfohashQueried,
    OperationId,
    PeerAnnounced,
    QueryTimedOut,
    ResponseReceived,
    SaveDue,
    TransactionKey,
)
from ..core.protocol import NodeProtocol
from ..core.routing_table import NodeStatus
from ..errors import BootstrapError
from ..wire.contact import Address

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_PORT",
    "ERROR_LOG_INTERVAL",
    "ErrorLog",
    "EventDispatch",
    "NodeStats",
    "bootstrap_error",
    "default_state_path",
    "is_ip_literal",
    "node_stats",
    "parse_address",
]

#: The public routers that answer ``find_node`` for newcomers. They never enter a
#: routing table (BEP 5). Order: the ones observed to answer most reliably first.
DEFAULT_BOOTSTRAP: Final[tuple[Address, ...]] = (
    ("dht.libtorrent.org", 25401),
    ("dht.transmissionbt.com", 6881),
    ("router.bittorrent.com", 6881),
    ("router.utorrent.com", 6881),
)
#: The customary DHT port.
DEFAULT_PORT: Final = 6881
#: Seconds between log records of one kind of repeated error (a bug hit by every
#: datagram, a user callback that always raises); the others are only counted.
ERROR_LOG_INTERVAL: Final = 10.0


@dataclass(frozen=True, slots=True)
class NodeStats:
    """A snapshot of a node's state and counters.

    Attributes:
        table_size: contacts in the routing table.
        good, questionable, bad: contacts by BEP 5 status.
        buckets: buckets in the table.
        queries_received, replies_sent, errors_sent: incoming traffic.
        queries_sent, responses_received, errors_received, timeouts: our queries.
        malformed: datagrams dropped or answered with 203 as malformed.
        outstanding: our queries in flight.
        infohashes, stored_peers: the peer store's contents.
        announces_accepted: valid ``announce_peer`` queries received.
        queries_rate_limited: datagrams dropped unread because their source IP
            was over its budget or banned, or the global or strangers' budget was
            spent (``NodeConfig.query_rate_per_ip``, ``NodeConfig.reply_rate``,
            ``NodeConfig.stranger_reply_rate``).
        internal_errors: datagrams whose handling raised (a bug; the node carried on).
        callback_errors: exceptions raised by user callbacks such as
            :meth:`DHTNode.on_peer_announced` (the node carried on).
    """

    table_size: int
    good: int
    questionable: int
    bad: int
    buckets: int
    queries_received: int
    replies_sent: int
    errors_sent: int
    queries_sent: int
    responses_received: int
    errors_received: int
    timeouts: int
    malformed: int
    outstanding: int
    infohashes: int
    stored_peers: int
    announces_accepted: int
    queries_rate_limited: int
    internal_errors: int = 0
    callback_errors: int = 0


def node_stats(p: NodeProtocol, now: float, *, internal_errors: int = 0, callback_errors: int = 0) -> NodeStats:
    """Read a :class:`NodeStats` snapshot from the core at time ``now`` (the
    runtime adds its own error counts)."""
    s = p.stats
    counts = p.table.counts(now)
    return NodeStats(
        table_size=len(p.table),
        good=counts.get(NodeStatus.GOOD, 0),
        questionable=counts.get(NodeStatus.QUESTIONABLE, 0),
        bad=counts.get(NodeStatus.BAD, 0),
        buckets=len(p.table.buckets),
        queries_received=s.queries_received,
        replies_sent=s.replies_sent,
        errors_sent=s.errors_sent,
        queries_sent=s.queries_sent,
        responses_received=s.responses_received,
        errors_received=s.errors_received,
        timeouts=s.timeouts,
        malformed=s.malformed,
        outstanding=p.outstanding,
        infohashes=p.peer_store.num_infohashes,
        stored_peers=p.peer_store.num_peers,
        announces_accepted=s.announces_accepted,
        queries_rate_limited=s.queries_rate_limited,
        internal_errors=internal_errors,
        callback_errors=callback_errors,
    )


class ErrorLog:
    """Logs an error of one kind at most once per :data:`ERROR_LOG_INTERVAL`; counts them all."""

    __slots__ = ("what", "count", "_next_log", "_suppressed", "_log")

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        #: Errors of this kind since the node started.
        self.count = 0
        self._next_log = -math.inf
        self._suppressed = 0
        self._log = logger

    def record(self, detail: object) -> None:
        """Count the exception being handled; log it (with its traceback) unless one was logged lately."""
        self.count += 1
        now = time.monotonic()
        if now < self._next_log:
            self._suppressed += 1
            return
        self._next_log = now + ERROR_LOG_INTERVAL
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._suppressed = 0
        self._log.exception("%s: %s%s", self.what, detail, more)


#: What a runtime waits on for a query's outcome: called once with the event.
W = TypeVar("W", bound=Callable[[Event], None])


class EventDispatch(Generic[W]):
    """Hands the core's events to whoever waits for them: the half of a node's event
    handling that the trio and asyncio runtimes share.

    The runtime registers a query's waiter (of its own type ``W``) in ``_waiters`` by
    transaction, an operation's handler in ``_ops`` (a lookup, bootstrap, ... by
    operation id) and the user's callbacks; after feeding the core, it calls
    :meth:`_dispatch_events`. What needs the event loop stays in the runtime:
    :meth:`save_state` and :meth:`_rejoin_soon`.
    """

    proto: NodeProtocol
    _waiters: dict[TransactionKey, W]
    _ops: dict[OperationId, Callable[[Event], None]]
    _announce_callbacks: list[Callable[[PeerAnnounced], None]]
    _queried_callbacks: list[Callable[[InfohashQueried], None]]
    _callback_errors: ErrorLog

    def save_state(self) -> None:
        raise NotImplementedError

    def _rejoin_soon(self) -> None:
        """Start joining again in the background (the core said :class:`BootstrapDue`)."""
        raise NotImplementedError

    def _dispatch_events(self) -> None:
        """Drain the core's event queue into the waiters, handlers and callbacks."""
        proto = self.proto
        while (event := proto.next_event()) is not None:
            t = type(event)
            if t is ResponseReceived or t is ErrorReceived or t is QueryTimedOut:
                waiter = self._waiters.pop(event.key, None)  # type: ignore[union-attr]
                if waiter is not None:
                    waiter(event)
            elif t is InfohashQueried:
                self._call_each(self._queried_callbacks, event)
            elif t is PeerAnnounced:
                self._call_each(self._announce_callbacks, event)
            elif t is SaveDue:
                self.save_state()
            elif t is BootstrapDue:
                self._rejoin_soon()
            elif (op := getattr(event, "op", None)) is not None:
                handler = self._ops.get(op)
                if handler is not None:
                    handler(event)
            # ExternalAddressChanged: the core rejoins under a new ID by itself.

    def _call_each(self, callbacks: Sequence[Callable[[Any], None]], event: Event) -> None:
        """Call the user's callbacks with ``event``; one that raises is logged and counted, never fatal."""
        for callback in callbacks:
            try:
                callback(event)
            except Exception:  # the user's bug must not stop the node
                self._callback_errors.record(callback)


def bootstrap_error(event: BootstrapFinished, names: Sequence[Address], timeout: float) -> BootstrapError:
    """The error a failed bootstrap raises: it names what was tried and what to do."""
    tried = [f"{a[0]}:{a[1]}" for a in names]
    if event.saved_contacts:
        tried.insert(0, f"{event.saved_contacts} saved contacts")
    what = ", ".join(tried) if tried else "no bootstrap nodes and no saved contacts"
    if event.failure is BootstrapFailure.NOTHING_RESOLVED:
        return BootstrapError(
            f"none of the bootstrap nodes resolved to an address (tried {what}). "
            "Are you offline? Pass a reachable node with --bootstrap HOST:PORT."
        )
    return BootstrapError(
        f"no DHT node answered within {timeout:g} s (tried {what}). "
        "Check the network, or pass a reachable node with --bootstrap HOST:PORT."
    )


def parse_address(text: str, *, default_port: int | None = None) -> Address:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into an address.

    Raises:
        ValueError: with a message fit for the command line.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):
        if default_port is None:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        host, port_text = text.strip("[]"), str(default_port)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"missing host in {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if not 0 <= port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return (host, port)


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IP address (no name to resolve)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def default_state_path() -> Path:
    """The default routing-table file: ``<user data dir>/mainline-dht/routing-table.dat``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mainline-dht", appauthor=False)) / "routing-table.dat"
