"""The trio DHT node: the one layer that does I/O and reads the clock.

Owns: a :class:`DatagramTransport` (real UDP or the in-memory network), the
protocol core (:class:`~mainline_dht.core.protocol.NodeProtocol`), the background
tasks (receive loop, timer loop, maintenance), lookups driven through the pure
:class:`~mainline_dht.core.lookup.Lookup`, bootstrap and state persistence.

Usage::

    async with open_node(("0.0.0.0", 6881)) as node:
        await node.bootstrap()
        async with node.get_peers(info_hash) as peers:
            async for ip, port in peers:
                ...

All state lives in the core; this module never awaits between reading core
state and acting on it, so it needs no locks.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

import trio

from ..wire.contact import Address, Contact
from ..errors import BootstrapError, DHTError, KRPCError, LocalProtocolError, QueryTimeout, StateFileError
from ..core.events import ErrorReceived, Event, ExternalAddressChanged, PeerAnnounced, QueryTimedOut, ResponseReceived, TransactionKey
from ..wire.krpc import AnnouncePeer, FindNode, GetPeers, Ping, Query, ResponseMessage, SampleInfohashes
from ..core.lookup import UNKNOWN_ID, Lookup, LookupStats
from ..core.node_id import random_id_in_range, random_node_id
from ..core.protocol import NodeConfig, NodeProtocol
from ..core.routing_table import NodeStatus, split_saved_contacts
from .state_file import load_contacts, save_table
from .transport import DatagramTransport, open_udp_transport

__all__ = [
    "DHTNode",
    "NodeStats",
    "PeerStream",
    "open_node",
    "serve_node",
    "resolve_address",
    "parse_address",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_PORT",
]

log = logging.getLogger(__name__)

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
#: Seconds to wait for any bootstrap router or saved contact to answer.
DEFAULT_BOOTSTRAP_TIMEOUT: Final = 10.0
#: Queries one lookup may send at most: a bound against hostile or broken
#: networks (a healthy lookup needs 10-50).
DEFAULT_MAX_LOOKUP_QUERIES: Final = 300
#: Seconds between bootstrap attempts when no first query was answered.
BOOTSTRAP_RETRY_PAUSE: Final = 0.5
#: Bucket-refresh lookups run at once.
PARALLEL_REFRESHES: Final = 4
#: Seconds between maintenance rounds (bucket refresh, questionable pings, saving).
MAINTENANCE_INTERVAL: Final = 10.0
#: Seconds between periodic saves of the routing table.
SAVE_INTERVAL: Final = 5 * 60.0
#: Questionable contacts pinged per maintenance round.
QUESTIONABLE_PINGS_PER_ROUND: Final = 8
#: Datagrams of a received batch handled before the replies so far are sent. A batch
#: holds up to 256; sending only at its end made the first querier of a burst wait
#: for the other 255 to be answered. tools/bench_serve.py: 70,000 -> 80,000 replies/s
#: (wall clock) at the same CPU cost per reply.
RECEIVE_FLUSH_EVERY: Final = 32
#: Seconds to wait before re-bootstrapping after the table ran empty, doubling to the cap.
REBOOTSTRAP_BACKOFF: Final = (5.0, 300.0)
#: Seconds between log records of one kind of repeated error (a bug hit by every
#: datagram, a user callback that always raises); the others are only counted.
ERROR_LOG_INTERVAL: Final = 10.0


class _ErrorLog:
    """Logs an error of one kind at most once per :data:`ERROR_LOG_INTERVAL`; counts them all."""

    __slots__ = ("what", "count", "_next_log", "_suppressed")

    def __init__(self, what: str) -> None:
        self.what = what
        #: Errors of this kind since the node started.
        self.count = 0
        self._next_log = -math.inf
        self._suppressed = 0

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
        log.exception("%s: %s%s", self.what, detail, more)


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
            was over its budget or banned, or the global reply budget was spent
            (``NodeConfig.query_rate_per_ip``, ``NodeConfig.reply_rate``).
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


class _Waiter:
    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: Event | None = None


class PeerStream:
    """The peers of one ``get_peers`` lookup, as they arrive.

    ``async for ip, port in stream`` yields each new peer once, then ends when
    the lookup ends. :attr:`stats` holds the lookup's figures (live while it
    runs, final afterwards).
    """

    def __init__(self, lookup: Lookup, receive: trio.MemoryReceiveChannel[Address]) -> None:
        self.lookup = lookup
        self._receive = receive
        self._error: BaseException | None = None
        self._found_at: dict[Address, float] = {}

    @property
    def stats(self) -> LookupStats:
        """The lookup's statistics."""
        return self.lookup.stats

    @property
    def peers(self) -> list[Address]:
        """Every peer found so far, in arrival order."""
        return list(self.lookup.peers)

    def found_at(self, peer: Address) -> float:
        """When the lookup received ``peer`` (``trio.current_time()`` clock).

        The reader may take a peer from the stream later than that, even after
        the lookup has finished; figures about the lookup use this time.

        Raises:
            KeyError: ``peer`` has not been found by this lookup.
        """
        return self._found_at[peer]

    def __aiter__(self) -> PeerStream:
        return self

    async def __anext__(self) -> Address:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None


class DHTNode:
    """A running DHT node. Create it with :func:`open_node` or :func:`serve_node`."""

    def __init__(
        self,
        transport: DatagramTransport,
        proto: NodeProtocol,
        *,
        bootstrap: Sequence[Address],
        state_path: Path | None,
        saved_contacts: Sequence[Contact],
        wall_clock: Callable[[], float],
        bootstrap_timeout: float,
    ) -> None:
        self.transport = transport
        self.proto = proto
        self.bootstrap_nodes = tuple(bootstrap)
        self.state_path = state_path
        self._saved_contacts = list(saved_contacts)
        self._wall_clock = wall_clock
        self._bootstrap_timeout = bootstrap_timeout
        self._waiters: dict[TransactionKey, _Waiter] = {}
        self._timer_scope: trio.CancelScope | None = None
        self._announce_callbacks: list[Callable[[PeerAnnounced], None]] = []
        self._resolved_routers: list[Address] | None = None
        self.joined = trio.Event()
        self._internal_errors = _ErrorLog("internal error handling a datagram")
        self._callback_errors = _ErrorLog("a peer-announced callback raised")
        self._nursery: trio.Nursery | None = None

    # --- identity and figures --------------------------------------------------------

    @property
    def node_id(self) -> bytes:
        """Our 20-byte node ID."""
        return self.proto.node_id

    @property
    def external_ip(self) -> str | None:
        """Our external IP address as the nodes that answer us agree on it (BEP 42), or ``None``."""
        return self.proto.address_votes.current

    @property
    def local_address(self) -> Address:
        """The address our transport is bound to."""
        return self.transport.local_address

    @property
    def table(self) -> Any:
        """The routing table (read it; do not change it)."""
        return self.proto.table

    @property
    def stats(self) -> NodeStats:
        """A snapshot of the node's counters and table state."""
        p = self.proto
        s = p.stats
        counts = p.table.counts(trio.current_time())
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
            internal_errors=self._internal_errors.count,
            callback_errors=self._callback_errors.count,
        )

    @property
    def internal_errors(self) -> int:
        """Datagrams whose handling raised (a bug in the core); the node carried on."""
        return self._internal_errors.count

    def on_peer_announced(self, callback: Callable[[PeerAnnounced], None]) -> None:
        """Call ``callback`` for every valid ``announce_peer`` we receive.

        The callback runs inside the receive loop: it must not block. An
        exception it raises is logged (rate-limited) and counted in
        ``stats.callback_errors``; the node carries on.
        """
        self._announce_callbacks.append(callback)

    # --- the core's outputs ---------------------------------------------------------

    def _transmit(self) -> None:
        """Send what the core queued, dispatch its events, re-arm the timer."""
        proto = self.proto
        send = self.transport.send
        for data, addr in proto.datagrams_to_send():
            send(data, addr)
        while (event := proto.next_event()) is not None:
            if type(event) is PeerAnnounced:
                for cb in self._announce_callbacks:
                    try:
                        cb(event)
                    except Exception:  # the user's bug must not stop the node
                        self._callback_errors.record(cb)
                continue
            if type(event) is ExternalAddressChanged:
                if event.new_node_id is not None and self._nursery is not None:
                    self._nursery.start_soon(self._settle_new_id)
                continue
            waiter = self._waiters.pop(event.key, None)  # type: ignore[union-attr]
            if waiter is not None:
                waiter.result = event
                waiter.event.set()
        scope = self._timer_scope
        if scope is not None:
            t = proto.get_timer()
            if t is not None and t < scope.deadline:
                scope.deadline = t

    async def _settle_new_id(self) -> None:
        """After a BEP 42 ID change, join again under the new ID: look it up (so
        that the nodes closest to it learn of us), refresh the buckets the
        rebuilt table holds too few contacts in, and save the table."""
        try:
            await self.find_node(self.node_id)
            await self.refresh_buckets(not_full=True)
        except DHTError as exc:  # not expected; the node carries on under its new ID
            log.warning("rejoining under the new node ID failed: %s", exc)
        self.save_state()

    async def _receive_loop(self) -> None:
        proto = self.proto
        receive = self.transport.receive_batch
        send = self.transport.send
        while True:
            try:
                batch = await receive()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            now = trio.current_time()
            unsent = 0
            for data, addr in batch:
                try:
                    proto.receive_datagram(data, addr, now)
                except Exception:  # a bug, never bad input: the core drops that itself
                    self._internal_errors.record(f"from {addr}")
                unsent += 1
                if unsent == RECEIVE_FLUSH_EVERY:
                    # Answer a burst as it is read, not at its end (see the constant).
                    unsent = 0
                    for reply, dest in proto.datagrams_to_send():
                        send(reply, dest)
            try:
                self._transmit()
            except Exception:  # a bug: logged and counted, the loop carries on
                self._internal_errors.record("while sending replies and dispatching events")

    async def _timer_loop(self) -> None:
        proto = self.proto
        while True:
            t = proto.get_timer()
            with trio.CancelScope(deadline=math.inf if t is None else t) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            proto.handle_timer(trio.current_time())
            self._transmit()

    # --- single queries -------------------------------------------------------------

    async def query(
        self,
        addr: Address,
        query: Query,
        *,
        node_id: bytes | None = None,
        timeout: float | None = None,
        learn: bool = True,
        abandon_on_cancel: bool = False,
    ) -> ResponseMessage:
        """Send one query and wait for its reply.

        Args:
            addr: an (IP address, port) pair; resolve host names with
                :func:`resolve_address` first.
            query: e.g. ``FindNode(target)``.
            node_id: the ID expected at ``addr``; a timeout then counts against it.
            timeout: seconds to wait (default: the node's query timeout).
            learn: add the responder to the routing table.
            abandon_on_cancel: if the caller is cancelled, stop waiting but let
                the query run out in the core: a late answer still teaches the
                routing table, and a timeout still counts against ``node_id``
                (lookups use this for the stragglers they leave behind).

        Returns:
            The reply.

        Raises:
            QueryTimeout: no reply in time.
            KRPCError: the remote answered with an error.
            LocalProtocolError: too many queries in flight, or a bad address.
        """
        key = self.proto.send_query(
            query, addr, trio.current_time(), node_id=node_id, timeout=timeout, learn=learn
        )
        waiter = _Waiter()
        self._waiters[key] = waiter
        self._transmit()
        try:
            await waiter.event.wait()
        finally:
            if waiter.result is None:
                self._waiters.pop(key, None)
                if not abandon_on_cancel:
                    self.proto.cancel(key)
        result = waiter.result
        if type(result) is ResponseReceived:
            return result.response
        if type(result) is ErrorReceived:
            raise KRPCError(result.error.code, result.error.message, addr)
        assert type(result) is QueryTimedOut
        raise QueryTimeout(addr, query.method)

    async def ping(self, addr: Address, *, timeout: float | None = None) -> ResponseMessage:
        """Ping ``addr``; return its reply (its ``sender_id`` and ``version``).

        Raises:
            QueryTimeout, KRPCError: as :meth:`query`.
        """
        return await self.query(addr, Ping(), timeout=timeout)

    # --- lookups --------------------------------------------------------------------

    async def _new_lookup(self, target: bytes, **options: Any) -> Lookup:
        """A lookup of ``target`` seeded from the table, and from the routers while it is thin."""
        k = self.proto.config.k
        seeds = self.proto.table.closest(target, 2 * k)
        routers = await self._routers() if len(seeds) < k else []
        options.setdefault("max_queries", DEFAULT_MAX_LOOKUP_QUERIES)
        return Lookup(target, seeds, now=trio.current_time(), own_id=self.node_id, k=k, routers=routers, **options)

    async def _routers(self) -> list[Address]:
        """The bootstrap routers' addresses, resolved once (concurrently) and cached."""
        if self._resolved_routers is None:
            resolved: dict[int, Address] = {}

            async def one(i: int, addr: Address) -> None:
                try:
                    resolved[i] = await resolve_address(addr)
                except OSError as exc:
                    log.info("cannot resolve %s:%s: %s", addr[0], addr[1], exc)

            with trio.move_on_after(self._bootstrap_timeout):
                async with trio.open_nursery() as nursery:
                    for i, addr in enumerate(self.bootstrap_nodes):
                        nursery.start_soon(one, i, addr)
            self._resolved_routers = [resolved[i] for i in sorted(resolved)]
            self.proto.router_addresses.update(self._resolved_routers)
            if not self._resolved_routers:
                # Nothing resolved (offline?): try again next time.
                self._resolved_routers = None
                return []
        return self._resolved_routers

    async def _drive(
        self,
        lookup: Lookup,
        make_query: Callable[[], Query],
        on_peers: Callable[[list[Address]], None] | None = None,
        first_reply: trio.Event | None = None,
    ) -> None:
        """Run ``lookup`` to completion: the trio half of the pure Lookup.

        ``on_peers`` gets each batch of new peers; ``first_reply`` is set when
        the first answer arrives.
        """
        changed = trio.Event()
        timeout = self.proto.config.lookup_query_timeout

        async def ask(contact: Contact) -> None:
            nonlocal changed
            is_router = contact.id == UNKNOWN_ID
            try:
                resp = await self.query(
                    contact.addr,
                    make_query(),
                    node_id=None if is_router else contact.id,
                    timeout=timeout,
                    learn=not is_router,
                    abandon_on_cancel=True,
                )
            except QueryTimeout:
                lookup.on_failure(contact, trio.current_time())
            except (KRPCError, LocalProtocolError):
                lookup.on_failure(contact, trio.current_time(), error=True)
            else:
                nodes = resp.nodes + resp.nodes6 if resp.nodes6 else resp.nodes
                new = lookup.on_response(
                    contact,
                    trio.current_time(),
                    nodes=nodes,
                    values=resp.values,
                    token=resp.token,
                    responder_id=resp.sender_id,
                )
                if new and on_peers is not None:
                    on_peers(new)
                if first_reply is not None:
                    first_reply.set()
            changed.set()

        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                lookup.handle_timer(now)
                changed = trio.Event()
                for contact in lookup.next_queries(now):
                    nursery.start_soon(ask, contact)
                if lookup.done:
                    break
                deadline = lookup.next_deadline()
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    await changed.wait()
            nursery.cancel_scope.cancel()

    async def find_node(self, target: bytes) -> list[Contact]:
        """Run an iterative ``find_node`` lookup; return the closest contacts that answered."""
        lookup = await self._new_lookup(target)
        await self._drive(lookup, lambda: FindNode(target))
        self.proto.table.touch_bucket(target, trio.current_time())
        return [c for c, _ in lookup.closest_responders(self.proto.config.k)]

    @asynccontextmanager
    async def get_peers(self, info_hash: bytes, **lookup_options: Any) -> AsyncIterator[PeerStream]:
        """Look up peers for ``info_hash``, yielding each as soon as a reply carries it.

        Usage::

            async with node.get_peers(info_hash) as peers:
                async for ip, port in peers:
                    ...
            print(peers.stats.elapsed)

        Raises:
            LocalProtocolError: ``info_hash`` is not 20 bytes.
        """
        if type(info_hash) is not bytes or len(info_hash) != 20:
            raise LocalProtocolError("info_hash must be 20 bytes")
        send, receive = trio.open_memory_channel[Address](math.inf)
        lookup = await self._new_lookup(info_hash, **lookup_options)
        stream = PeerStream(lookup, receive)

        def deliver(peers: list[Address]) -> None:
            now = trio.current_time()
            for peer in peers:
                stream._found_at[peer] = now
                send.send_nowait(peer)

        async def run() -> None:
            async with send:
                try:
                    await self._drive(lookup, lambda: GetPeers(info_hash), deliver)
                except Exception as exc:  # handed to the reader, not into an ExceptionGroup
                    stream._error = exc
            self.proto.table.touch_bucket(info_hash, trio.current_time())

        async with collapse_single_errors(), trio.open_nursery() as nursery:
            nursery.start_soon(run)
            try:
                yield stream
            finally:
                nursery.cancel_scope.cancel()

    async def announce(self, info_hash: bytes, port: int | None = None, *, stream: PeerStream | None = None) -> int:
        """Announce that we are a peer for ``info_hash`` (BEP 5 ``announce_peer``).

        Runs a ``get_peers`` lookup (or reuses a finished one given as ``stream``),
        then sends ``announce_peer`` with each token to the k closest nodes that
        gave one.

        Args:
            info_hash: the 20-byte infohash.
            port: our peer port; ``None`` sets ``implied_port`` so the receivers
                use our UDP source port.
            stream: a finished lookup of the same infohash to reuse.

        Returns:
            How many nodes accepted the announce.

        Raises:
            LocalProtocolError: bad infohash or port.
        """
        if port is not None and not 0 < port < 65536:
            raise LocalProtocolError(f"port must be 1-65535, not {port}")
        if stream is None:
            async with self.get_peers(info_hash) as stream:
                async for _ in stream:
                    pass
        targets = [(c, tok) for c, tok in stream.lookup.closest_responders(self.proto.config.k) if tok]
        accepted = 0

        async def one(contact: Contact, token: bytes) -> None:
            nonlocal accepted
            q = AnnouncePeer(info_hash, port or 0, token, implied_port=port is None)
            try:
                await self.query(contact.addr, q, node_id=contact.id)
            except (QueryTimeout, KRPCError, LocalProtocolError) as exc:
                log.debug("announce to %s failed: %s", contact.addr, exc)
                return
            accepted += 1

        async with trio.open_nursery() as nursery:
            for contact, token in targets:
                nursery.start_soon(one, contact, token)
        return accepted

    async def sample_infohashes(self, addr: Address, target: bytes | None = None) -> ResponseMessage:
        """Ask one node for a sample of the infohashes it stores (BEP 51)."""
        return await self.query(addr, SampleInfohashes(target or random_node_id(self.proto.rng)))

    # --- joining the network --------------------------------------------------------

    async def bootstrap(self, *, timeout: float | None = None) -> int:
        """Join the network: a lookup of our own ID from saved contacts and the routers.

        Saved contacts are asked first-hand (they enter the table when they
        answer); routers are asked too but never enter the table (BEP 5).

        Returns:
            The number of contacts in the routing table afterwards.

        Raises:
            BootstrapError: nothing answered within ``timeout`` seconds (default:
                the node's bootstrap timeout); the message names what was tried.
        """
        timeout = self._bootstrap_timeout if timeout is None else timeout
        own = self.node_id
        # Ping the saved contacts (BEP 5 / PROTOCOL.md: "at start-up, ping the
        # saved contacts"). The lookup below asks only those closest to our ID;
        # without this a restarted node would come back with k contacts. Those
        # that held a place in the table are pinged first and the overflow after
        # the lookup, so the former entries get their places back.
        cfg = self.proto.config
        saved, overflow = split_saved_contacts(own, self._saved_contacts, k=cfg.k, max_per_ip=cfg.max_per_ip)
        self._ping_all(saved)
        routers: list[Address] = []
        with trio.move_on_after(timeout):
            routers = await self._routers()
        deadline = trio.current_time() + timeout
        start = saved
        while True:
            lookup = Lookup(
                own,
                start + self.proto.table.closest(own, 2 * self.proto.config.k),
                now=trio.current_time(),
                own_id=own,
                k=self.proto.config.k,
                routers=routers,
                max_queries=DEFAULT_MAX_LOOKUP_QUERIES,
            )
            answered = trio.Event()
            with trio.move_on_at(deadline) as scope:
                async with trio.open_nursery() as nursery:

                    async def run() -> None:
                        await self._drive(lookup, lambda: FindNode(own), first_reply=answered)
                        answered.set()  # finished: stop waiting either way

                    nursery.start_soon(run)
                    # Before the first answer ``timeout`` rules; past it the lookup takes its time.
                    await answered.wait()
                    scope.deadline = math.inf
            # Every first query lost (a lossy link, a router that dropped it)? Ask
            # again while the time allows: one try per router is too fragile.
            if lookup.stats.replies or trio.current_time() >= deadline or not (routers or self._saved_contacts):
                break
            await trio.sleep(min(BOOTSTRAP_RETRY_PAUSE, max(0.0, deadline - trio.current_time())))
            if overflow:  # the former table's entries are silent: try the rest at once
                start = saved + overflow
                self._ping_all(overflow)
                overflow = []
        if lookup.stats.replies == 0:
            tried = [f"{a[0]}:{a[1]}" for a in self.bootstrap_nodes]
            if self._saved_contacts:
                tried.insert(0, f"{len(self._saved_contacts)} saved contacts")
            what = ", ".join(tried) if tried else "no bootstrap nodes and no saved contacts"
            if self.bootstrap_nodes and not routers and not self._saved_contacts:
                raise BootstrapError(
                    f"none of the bootstrap nodes resolved to an address (tried {what}). "
                    "Are you offline? Pass a reachable node with --bootstrap HOST:PORT."
                )
            raise BootstrapError(
                f"no DHT node answered within {timeout:g} s (tried {what}). "
                "Check the network, or pass a reachable node with --bootstrap HOST:PORT."
            )
        self._ping_all(overflow)  # fills the holes of saved contacts that are gone
        self.proto.table.touch_bucket(own, trio.current_time())
        await self.refresh_buckets(not_full=True)
        self.joined.set()
        log.info("joined the DHT: %d contacts", len(self.proto.table))
        return len(self.proto.table)

    def _ping_all(self, contacts: Sequence[Contact]) -> None:
        """Ping ``contacts`` to verify them (through the core's ping budget); they enter the table as they answer."""
        now = trio.current_time()
        for contact in contacts:
            self.proto.ping_contact(contact, now)
        self._transmit()

    async def refresh_buckets(self, *, limit: int | None = None, not_full: bool = False) -> int:
        """Look up a random ID in buckets that need it (BEP 5 refresh).

        Args:
            limit: refresh at most this many buckets.
            not_full: refresh every bucket holding fewer than k contacts (what a
                node does right after joining, as libtorrent does), instead of
                those idle for 15 minutes; our own bucket too when the whole
                table holds fewer than k.

        Returns:
            How many buckets were refreshed.
        """
        table = self.proto.table
        now = trio.current_time()
        if not_full:
            # The lookup of our own ID has just searched our own bucket, unless
            # it found fewer than k contacts in all (many of the nodes it heard of
            # were dead, say): then a lookup elsewhere in the space finds more.
            own = table.bucket_for(self.node_id) if len(table) >= table.k else None
            ranges = [(b.lo, b.hi) for b in table.buckets if len(b.entries) < table.k and b is not own]
        else:
            ranges = table.buckets_to_refresh(now)
        if limit is not None:
            ranges = ranges[:limit]
        limiter = trio.CapacityLimiter(PARALLEL_REFRESHES)

        async def refresh(lo: int, hi: int) -> None:
            async with limiter:
                await self.find_node(random_id_in_range(lo, hi, self.proto.rng))

        async with trio.open_nursery() as nursery:
            for lo, hi in ranges:
                nursery.start_soon(refresh, lo, hi)
        return len(ranges)

    async def _maintenance_loop(self) -> None:
        backoff = REBOOTSTRAP_BACKOFF[0]
        next_save = trio.current_time() + SAVE_INTERVAL
        while True:
            await trio.sleep(MAINTENANCE_INTERVAL)
            now = trio.current_time()
            table = self.proto.table
            if len(table) == 0 and (self.bootstrap_nodes or self._saved_contacts):
                try:
                    await self.bootstrap()
                    backoff = REBOOTSTRAP_BACKOFF[0]
                except BootstrapError as exc:
                    log.warning("%s Retrying in %g s.", exc, backoff)
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, REBOOTSTRAP_BACKOFF[1])
                continue
            for contact in table.questionable(now)[:QUESTIONABLE_PINGS_PER_ROUND]:
                self.proto.ping_contact(contact, now)
            self._transmit()
            if self.joined.is_set():
                await self.refresh_buckets(limit=2)
            if self.state_path is not None and now >= next_save:
                self.save_state()
                next_save = now + SAVE_INTERVAL

    # --- persistence ----------------------------------------------------------------

    def save_state(self) -> None:
        """Write the routing table to the state file atomically (if the node has one)."""
        if self.state_path is None:
            return
        if len(self.proto.table) == 0 and self._saved_contacts:
            # Never joined (offline?): keep the contacts saved last time instead
            # of replacing them with an empty table.
            log.info("routing table empty; leaving %s as it was", self.state_path)
            return
        try:
            save_table(self.proto.table, self.state_path, wall_clock=self._wall_clock)
        except OSError as exc:
            log.warning("cannot save the routing table to %s: %s", self.state_path, exc)


# --- construction ---------------------------------------------------------------------


@asynccontextmanager
async def collapse_single_errors() -> AsyncIterator[None]:
    """Re-raise a lone exception out of the ExceptionGroup a nursery wraps it in.

    A caller of ``open_node`` or ``get_peers`` should see the ``BootstrapError``
    or ``KeyboardInterrupt`` raised in its own block, not a group of one; groups
    of several distinct failures pass through unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        exc: BaseException = group
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if exc is group:
            raise
        raise exc from exc.__cause__


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


async def resolve_address(addr: Address) -> Address:
    """Resolve a host name to an IPv4 address (IP literals pass through unchanged).

    Raises:
        OSError: the name does not resolve.
    """
    host, port = addr
    if _is_ip_literal(host):
        return addr
    infos = await trio.socket.getaddrinfo(host, port, trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"{host} has no IPv4 address")
    return (str(infos[0][4][0]), port)


def _is_ip_literal(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def default_state_path() -> Path:
    """The default routing-table file: ``<user data dir>/mainline-dht/routing-table.dat``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mainline-dht", appauthor=False)) / "routing-table.dat"


@asynccontextmanager
async def open_node(
    bind: Address = ("0.0.0.0", DEFAULT_PORT),
    *,
    bootstrap: Sequence[Address] = DEFAULT_BOOTSTRAP,
    state_path: str | os.PathLike[str] | None = None,
    node_id: bytes | None = None,
    config: NodeConfig | None = None,
    rng: random.Random | None = None,
    transport: DatagramTransport | None = None,
    join: bool = False,
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[DHTNode]:
    """Run a DHT node for the duration of the ``async with`` block.

    Args:
        bind: the UDP address to bind (ignored when ``transport`` is given).
        bootstrap: routers to join through; they never enter the routing table.
        state_path: routing-table file: read at start (our ID and contacts are
            reused), saved periodically and on exit. ``None``: no persistence.
        node_id: our ID (default: the saved one, else random).
        config: protocol limits and timeouts.
        rng: randomness (default ``random.SystemRandom()``).
        transport: a ready transport (e.g. a ``MemoryTransport``) instead of UDP.
        join: bootstrap in the background as soon as the node starts.
        bootstrap_timeout: seconds to wait for the first bootstrap answer.
        wall_clock: wall time for the state file (not used for protocol timing).

    Raises:
        OSError: the UDP address cannot be bound.
    """
    rng = rng or random.SystemRandom()
    path = Path(state_path) if state_path is not None else None
    saved: list[Contact] = []
    if path is not None and path.exists():
        try:
            saved_id, saved = load_contacts(path)
            node_id = node_id or saved_id
        except StateFileError as exc:
            log.warning("ignoring the state file: %s; starting afresh", exc)
            saved = []
    node_id = node_id or random_node_id(rng)
    own_transport = transport is None
    if transport is None:
        transport = await open_udp_transport(bind[0], bind[1])
    try:
        proto = NodeProtocol(node_id, config=config, rng=rng, now=trio.current_time())
        node = DHTNode(
            transport,
            proto,
            bootstrap=bootstrap,
            state_path=path,
            saved_contacts=saved,
            wall_clock=wall_clock,
            bootstrap_timeout=bootstrap_timeout,
        )
        async with collapse_single_errors(), trio.open_nursery() as nursery:
            node._nursery = nursery
            nursery.start_soon(node._receive_loop)
            nursery.start_soon(node._timer_loop)
            nursery.start_soon(node._maintenance_loop)
            if join:
                nursery.start_soon(_join_in_background, node)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
                node.save_state()
    finally:
        if own_transport:
            await transport.aclose()


async def _join_in_background(node: DHTNode) -> None:
    try:
        await node.bootstrap()
    except BootstrapError as exc:
        log.warning("%s", exc)


async def serve_node(
    bind: Address = ("0.0.0.0", DEFAULT_PORT),
    *,
    task_status: trio.TaskStatus[DHTNode] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> NoReturn:
    """Run a node until cancelled; for ``node = await nursery.start(serve_node, ...)``.

    Takes the same options as :func:`open_node`; ``join`` defaults to ``True``.
    """
    options.setdefault("join", True)
    async with open_node(bind, **options) as node:
        task_status.started(node)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover
