"""The trio DHT node: moves datagrams, sleeps until the core's next timer, and
turns the core's events into awaitable results.

Owns: a :class:`DatagramTransport` (real UDP or the in-memory network), the
protocol core (:class:`~mainline_dht.core.protocol.NodeProtocol`), three tasks
(receive loop, timer loop, router resolution when asked), the state file's I/O,
and the awaitables of the public API. Every rule of what the node sends and when
(lookups, bootstrap plan, refresh, re-bootstrap, save schedule, announce choice)
lives in the core: this module starts the core's operations and waits for their
events.

Usage::

    async with open_node(("0.0.0.0", 6881)) as node:
        await node.bootstrap()
        async with node.get_peers(info_hash) as peers:
            async for ip, port in peers:
                ...

A dual-stack node (BEP 32) is two overlays, one per address family: each is a
``DHTNode`` with its own transport, core, table and tasks; the cores share one
peer store and one token manager. The node ``open_node`` yields is the first
overlay (IPv4 when it has one); it holds the other as its twin and speaks for
both: ``get_peers`` runs in both overlays at once and merges the peers,
``announce`` and ``bootstrap`` go to both, ``query`` and ``ping`` go out through
the overlay of the address's family, and the state file holds both tables.

All state lives in the core; this module never awaits between reading core
state and acting on it, so it needs no locks.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, NoReturn

import trio

from ..core.behaviour import (
    BOOTSTRAP_RETRY_PAUSE,
    DEFAULT_BOOTSTRAP_TIMEOUT,
    DEFAULT_MAX_LOOKUP_QUERIES,
    MAINTENANCE_INTERVAL,
    PARALLEL_REFRESHES,
    QUESTIONABLE_PINGS_PER_ROUND,
    REBOOTSTRAP_BACKOFF,
    SAVE_INTERVAL,
)
from ..core.events import (
    AnnounceFinished,
    BootstrapFinished,
    ErrorReceived,
    Event,
    LookupFinished,
    LookupPeersFound,
    LookupReplied,
    OperationId,
    InfohashQueried,
    PeerAnnounced,
    QueryTimedOut,
    RefreshFinished,
    ResponseReceived,
    TransactionKey,
)
from ..core.lookup import Lookup, LookupStats
from ..core.node_id import random_node_id
from ..core.protocol import NodeConfig, NodeProtocol
from ..core.routing_table import RoutingTable
from ..core.scrape import ScrapeCollector, ScrapeEstimate
from ..errors import BootstrapError, KRPCError, LocalProtocolError, QueryTimeout
from ..wire.contact import Address, Contact, family_of
from ..wire.krpc import FindNode, GetPeers, Ping, Query, ResponseMessage, SampleInfohashes
from .common import DEFAULT_BOOTSTRAP, DEFAULT_PORT, ErrorLog, EventDispatch, NodeStats, bootstrap_error
from .common import default_state_path
from .common import is_ip_literal, node_stats, parse_address
from .items import ItemsMixin
from .state_file import load_saved_state, save_node_state
from .transport import DatagramTransport, open_udp_transport

__all__ = [
    "DHTNode",
    "NodeStats",
    "PeerStream",
    "open_node",
    "serve_node",
    "resolve_address",
    "resolve_addresses",
    "parse_address",
    "default_state_path",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_PORT",
    # The schedule's constants, defined by the core (core/behaviour.py).
    "DEFAULT_BOOTSTRAP_TIMEOUT",
    "DEFAULT_MAX_LOOKUP_QUERIES",
    "BOOTSTRAP_RETRY_PAUSE",
    "PARALLEL_REFRESHES",
    "MAINTENANCE_INTERVAL",
    "SAVE_INTERVAL",
    "QUESTIONABLE_PINGS_PER_ROUND",
    "REBOOTSTRAP_BACKOFF",
]

log = logging.getLogger(__name__)

#: Datagrams of a received batch handled before the replies so far are sent. A batch
#: holds up to 256; sending only at its end made the first querier of a burst wait
#: for the other 255 to be answered. tools/bench_serve.py: 70,000 -> 80,000 replies/s
#: (wall clock) at the same CPU cost per reply.
RECEIVE_FLUSH_EVERY: Final = 32


class _Waiter:
    """One awaited outcome: a query's reply or an operation's final event."""

    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: Event | None = None

    def __call__(self, result: Event) -> None:
        self.result = result
        self.event.set()


class PeerStream:
    """The peers of one ``get_peers`` lookup, as they arrive.

    ``async for ip, port in stream`` yields each new peer once, then ends when
    the lookup ends. :attr:`stats` holds the lookup's figures (live while it
    runs, final afterwards). On a dual-stack node one lookup runs in each
    overlay (BEP 32): the stream yields the peers of both as they arrive, each
    once, and ends when both have ended.
    """

    def __init__(
        self,
        lookup: Lookup,
        receive: trio.MemoryReceiveChannel[Address],
        *,
        lookups: dict[int, Lookup] | None = None,
    ) -> None:
        self.lookup = lookup
        #: The lookup of each address family (4, 6) this stream merges.
        self.lookups: dict[int, Lookup] = lookups if lookups is not None else {4: lookup}
        self._receive = receive
        self._found_at: dict[Address, float] = {}
        self._scrape: ScrapeCollector | None = None

    @property
    def scrape(self) -> ScrapeEstimate | None:
        """BEP 33: the seeds and downloaders estimated from the filters received so
        far (``None`` unless the lookup was started with ``scrape=True``)."""
        return None if self._scrape is None else self._scrape.estimate()

    @property
    def stats(self) -> LookupStats:
        """The lookup's statistics; on a dual-stack node, both overlays' summed
        (started at the earlier start, finished when both have finished)."""
        if len(self.lookups) == 1:
            return self.lookup.stats
        parts = [lk.stats for lk in self.lookups.values()]
        firsts = [p.first_peer_at for p in parts if p.first_peer_at is not None]
        finished = [p.finished_at for p in parts]
        return LookupStats(
            queries=sum(p.queries for p in parts),
            replies=sum(p.replies for p in parts),
            timeouts=sum(p.timeouts for p in parts),
            errors=sum(p.errors for p in parts),
            soft_timeouts=sum(p.soft_timeouts for p in parts),
            started_at=min(p.started_at for p in parts),
            first_peer_at=min(firsts) if firsts else None,
            finished_at=None if None in finished else max(f for f in finished if f is not None),
            peers=len(self._found_at),
        )

    @property
    def stats_by_family(self) -> dict[int, LookupStats]:
        """Each overlay's own lookup statistics, by address family (4, 6)."""
        return {family: lk.stats for family, lk in self.lookups.items()}

    @property
    def peers(self) -> list[Address]:
        """Every peer found so far, in arrival order."""
        if len(self.lookups) == 1:
            return list(self.lookup.peers)
        return list(self._found_at)

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
            raise StopAsyncIteration from None


class DHTNode(ItemsMixin, EventDispatch[_Waiter]):
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
        self._wall_clock = wall_clock
        self._bootstrap_timeout = bootstrap_timeout
        proto.configure_bootstrap(saved_contacts, routers_configured=bool(self.bootstrap_nodes))
        self._waiters: dict[TransactionKey, _Waiter] = {}
        #: Running operations of the core (lookups, bootstraps, ...) -> who takes their events.
        self._ops: dict[OperationId, Callable[[Event], None]] = {}
        self._timer_scope: trio.CancelScope | None = None
        self._announce_callbacks: list[Callable[[PeerAnnounced], None]] = []
        self._queried_callbacks: list[Callable[[InfohashQueried], None]] = []
        self._routers_resolved = False
        self._resolving: trio.Event | None = None
        self.joined = trio.Event()
        #: The address family (4 or 6) of this overlay (BEP 32).
        self.family: int = proto.family
        # A dual-stack node: the first overlay holds the other as its twin; the
        # twin points back at it as its primary.
        self._twin: DHTNode | None = None
        self._primary: DHTNode | None = None
        self._internal_errors = ErrorLog("internal error handling a datagram", log)
        self._callback_errors = ErrorLog("a peer-announced callback raised", log)
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
    def table(self) -> RoutingTable:
        """The routing table (read it; do not change it)."""
        return self.proto.table

    @property
    def overlays(self) -> tuple[DHTNode, ...]:
        """This node's overlay of each address family (BEP 32), this one first."""
        return (self,) if self._twin is None else (self, self._twin)

    def overlay(self, family: int) -> DHTNode | None:
        """The overlay of ``family`` (4 or 6), or ``None`` if this node has no socket of it."""
        for o in self.overlays:
            if o.family == family:
                return o
        return None

    def _overlay_for(self, addr: Address) -> DHTNode:
        """The overlay that can reach ``addr``.

        Raises:
            LocalProtocolError: this node has no socket of that address family.
        """
        family = family_of(addr[0])
        if family == self.family:
            return self
        twin = self._twin
        if twin is not None and twin.family == family:
            return twin
        raise LocalProtocolError(f"cannot reach {addr[0]}: this node has no IPv{family} socket (see --bind)")

    @property
    def stats(self) -> NodeStats:
        """A snapshot of the node's counters and table state."""
        return node_stats(
            self.proto,
            trio.current_time(),
            internal_errors=self._internal_errors.count,
            callback_errors=self._callback_errors.count,
        )

    @property
    def internal_errors(self) -> int:
        """Datagrams whose handling raised (a bug in the core); the node carried on."""
        return self._internal_errors.count

    def on_peer_announced(self, callback: Callable[[PeerAnnounced], None]) -> Callable[[], None]:
        """Call ``callback`` for every valid ``announce_peer`` we receive.

        The callback runs inside the receive loop: it must not block. An
        exception it raises is logged (rate-limited) and counted in
        ``stats.callback_errors``; the node carries on.

        Returns:
            A function that stops the calls.
        """
        overlays = self.overlays  # a dual-stack node hears announces in both
        for overlay in overlays:
            overlay._announce_callbacks.append(callback)

        def stop() -> None:
            for overlay in overlays:
                overlay._announce_callbacks.remove(callback)

        return stop

    def on_infohash_queried(self, callback: Callable[[InfohashQueried], None]) -> Callable[[], None]:
        """Call ``callback`` for every ``get_peers`` query we answer (how a crawler
        learns the infohashes other nodes look for). Runs as
        :meth:`on_peer_announced` callbacks do.

        Returns:
            A function that stops the calls.
        """
        overlays = self.overlays  # a dual-stack node hears queries in both
        for overlay in overlays:
            overlay._queried_callbacks.append(callback)
            overlay.proto.report_infohash_queries = True

        def stop() -> None:
            for overlay in overlays:
                overlay._queried_callbacks.remove(callback)
                overlay.proto.report_infohash_queries = bool(overlay._queried_callbacks)

        return stop

    # --- the core's outputs ---------------------------------------------------------

    def _transmit(self) -> None:
        """Send what the core queued, dispatch its events, re-arm the timer."""
        proto = self.proto
        send = self.transport.send
        for data, addr in proto.datagrams_to_send():
            send(data, addr)
        self._dispatch_events()
        scope = self._timer_scope
        if scope is not None:
            t_next = proto.get_timer()
            if t_next is not None and t_next < scope.deadline:
                scope.deadline = t_next

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

    async def _await_op(self, op: OperationId) -> Event:
        """Wait for the final event of a core operation; abandon it if cancelled."""
        waiter = _Waiter()
        self._ops[op] = waiter
        self._transmit()
        try:
            await waiter.event.wait()
        finally:
            self._ops.pop(op, None)
            if waiter.result is None:
                self.proto.abandon(op)
        assert waiter.result is not None
        return waiter.result

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
                routing table, and a timeout still counts against ``node_id``.

        Returns:
            The reply.

        Raises:
            QueryTimeout: no reply in time.
            KRPCError: the remote answered with an error.
            LocalProtocolError: too many queries in flight, or a bad address.
        """
        overlay = self._overlay_for(addr)
        if overlay is not self:
            return await overlay.query(
                addr, query, node_id=node_id, timeout=timeout, learn=learn, abandon_on_cancel=abandon_on_cancel
            )
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

    async def sample_infohashes(self, addr: Address, target: bytes | None = None) -> ResponseMessage:
        """Ask one node for a sample of the infohashes it stores (BEP 51)."""
        return await self.query(addr, SampleInfohashes(target or random_node_id(self.proto.rng)))

    # --- lookups --------------------------------------------------------------------

    async def _routers(self) -> list[Address]:
        """Resolve the bootstrap routers (concurrently, once) and hand them to the core."""
        if self._routers_resolved:
            return self.proto.routers
        if self._resolving is not None:  # another task is at it: share its result
            await self._resolving.wait()
            return self.proto.routers
        self._resolving = done = trio.Event()
        resolved: dict[int, Address] = {}

        async def one(i: int, addr: Address) -> None:
            try:
                resolved[i] = await resolve_address(addr, family=self.family)
            except OSError as exc:
                log.info("cannot resolve %s:%s: %s", addr[0], addr[1], exc)

        try:
            with trio.move_on_after(self._bootstrap_timeout):
                async with trio.open_nursery() as nursery:
                    for i, addr in enumerate(self.bootstrap_nodes):
                        nursery.start_soon(one, i, addr)
        finally:
            routers = [resolved[i] for i in sorted(resolved)]
            # Nothing resolved (offline?): try again next time.
            self._routers_resolved = bool(routers)
            self.proto.set_routers(routers, trio.current_time())
            self._resolving = None
            done.set()
            self._transmit()
        return routers

    async def _prepare_lookup(self) -> None:
        if self.proto.wants_routers:
            await self._routers()

    async def find_node(self, target: bytes, *, family: int | None = None) -> list[Contact]:
        """Run an iterative ``find_node`` lookup; return the closest contacts that answered.

        Args:
            target: the 20-byte ID to look up.
            family: the overlay to look in (4 or 6; default: this one).

        Raises:
            LocalProtocolError: the node has no overlay of ``family``.
        """
        if family is not None and family != self.family:
            other = self.overlay(family)
            if other is None:
                raise LocalProtocolError(f"this node has no IPv{family} overlay")
            return await other.find_node(target)
        await self._prepare_lookup()
        op = self.proto.start_lookup(target, FindNode(target), trio.current_time())
        result = await self._await_op(op)
        assert type(result) is LookupFinished
        return [c for c, _ in result.closest]

    async def _lookup_with_replies(
        self, target: bytes, query: Query, on_reply: Callable[[Contact, ResponseMessage, float], bool]
    ) -> Lookup:
        """Run a lookup of ``target`` whose queries are ``query``, showing ``on_reply``
        every answer; ``on_reply`` returning ``True`` ends the lookup there."""
        await self._prepare_lookup()
        op = self.proto.start_lookup(target, query, trio.current_time(), report_replies=True)
        lookup = self.proto.lookup(op)
        assert lookup is not None  # just started
        if lookup.done:
            return lookup
        done = trio.Event()

        def on_event(event: Event) -> None:
            if type(event) is LookupReplied:
                if on_reply(event.contact, event.response, event.at) and self._ops.pop(op, None) is not None:
                    self.proto.abandon(op)
                    done.set()
            elif type(event) is LookupFinished:
                self._ops.pop(op, None)
                done.set()

        self._ops[op] = on_event
        self._transmit()
        try:
            await done.wait()
        finally:
            if self._ops.pop(op, None) is not None:
                self.proto.abandon(op)
        return lookup

    @asynccontextmanager
    async def get_peers(self, info_hash: bytes, **lookup_options: Any) -> AsyncIterator[PeerStream]:
        """Look up peers for ``info_hash``, yielding each as soon as a reply carries it.

        Usage::

            async with node.get_peers(info_hash) as peers:
                async for ip, port in peers:
                    ...
            print(peers.stats.elapsed)

        Args:
            info_hash: the 20-byte infohash.
            **lookup_options: ``scrape=True`` asks for BEP 33's bloom filters, and
                :attr:`PeerStream.scrape` then estimates the seeds and downloaders
                from the union of every reply's filters. Others are
                :class:`~mainline_dht.core.lookup.Lookup` options (``alpha``,
                ``soft_timeout``, ``early_finish``, ``max_queries``).

        On a dual-stack node the lookup runs in both overlays at once (BEP 32).

        Raises:
            LocalProtocolError: ``info_hash`` is not 20 bytes.
        """
        if type(info_hash) is not bytes or len(info_hash) != 20:
            raise LocalProtocolError("info_hash must be 20 bytes")
        scrape = bool(lookup_options.pop("scrape", False))
        overlays = self.overlays
        for overlay in overlays:
            await overlay._prepare_lookup()
        now = trio.current_time()
        ops: list[tuple[DHTNode, OperationId]] = []
        lookups: dict[int, Lookup] = {}
        for overlay in overlays:
            op = overlay.proto.start_lookup(
                info_hash, GetPeers(info_hash, scrape=scrape), now, report_replies=scrape, **lookup_options
            )
            lookup = overlay.proto.lookup(op)
            assert lookup is not None  # just started
            ops.append((overlay, op))
            lookups[overlay.family] = lookup
        # Bounded: each lookup reports a peer once, and at most its ``max_peers`` (so
        # ``send_nowait`` below never finds the channel full, nor does found_at grow past it).
        send, receive = trio.open_memory_channel[Address](sum(lk.max_peers for lk in lookups.values()))
        stream = PeerStream(lookups[self.family], receive, lookups=lookups)
        found_at = stream._found_at
        # BEP 33: one union of the filters of every reply, in both overlays.
        collector = stream._scrape = ScrapeCollector() if scrape else None
        running = len(ops)

        def handler(overlay: DHTNode, op: OperationId) -> Callable[[Event], None]:
            def on_event(event: Event) -> None:
                nonlocal running
                if type(event) is LookupReplied:
                    if collector is not None:
                        r = event.response
                        collector.offer(r.bloom_seeds, r.bloom_peers, r.values)
                elif type(event) is LookupPeersFound:
                    for peer in event.peers:
                        if peer not in found_at:  # each peer once, whichever overlay brought it
                            found_at[peer] = event.at
                            send.send_nowait(peer)
                elif type(event) is LookupFinished:
                    overlay._ops.pop(op, None)
                    running -= 1
                    if running == 0:
                        send.close()

            return on_event

        for overlay, op in ops:
            if lookups[overlay.family].done:
                running -= 1
            else:
                overlay._ops[op] = handler(overlay, op)
        if running == 0:
            send.close()
        for overlay in overlays:
            overlay._transmit()
        try:
            yield stream
        finally:
            for overlay, op in ops:
                if overlay._ops.pop(op, None) is not None:
                    overlay.proto.abandon(op)
            send.close()

    async def announce(
        self, info_hash: bytes, port: int | None = None, *, stream: PeerStream | None = None, seed: bool = False
    ) -> int:
        """Announce that we are a peer for ``info_hash`` (BEP 5 ``announce_peer``).

        Runs a ``get_peers`` lookup (or reuses a finished one given as ``stream``),
        then sends ``announce_peer`` with each token to the k closest nodes that
        gave one.

        Args:
            info_hash: the 20-byte infohash.
            port: our peer port; ``None`` sets ``implied_port`` so the receivers
                use our UDP source port.
            stream: a finished lookup of the same infohash to reuse.
            seed: BEP 33: we have the whole torrent (``seed`` = 1).

        Returns:
            How many nodes accepted the announce.

        A dual-stack node announces in both overlays (BEP 32), and returns the
        acceptances of both.

        Raises:
            LocalProtocolError: bad infohash or port.
        """
        if self._twin is None:
            return await self._announce_overlay(info_hash, port, None if stream is None else stream.lookup, seed)
        accepted = 0

        async def one(overlay: DHTNode) -> None:
            nonlocal accepted
            lookup = None if stream is None else stream.lookups.get(overlay.family)
            accepted += await overlay._announce_overlay(info_hash, port, lookup, seed)

        async with collapse_single_errors(), trio.open_nursery() as nursery:
            for overlay in self.overlays:
                nursery.start_soon(one, overlay)
        return accepted

    async def _announce_overlay(
        self, info_hash: bytes, port: int | None, lookup: Lookup | None, seed: bool = False
    ) -> int:
        """Announce in this overlay, after ``lookup`` (a finished one) or a new one."""
        if lookup is None:
            await self._prepare_lookup()
        op = self.proto.start_announce(info_hash, port, trio.current_time(), lookup=lookup, seed=seed)
        result = await self._await_op(op)
        assert type(result) is AnnounceFinished
        return result.accepted

    # --- joining the network --------------------------------------------------------

    async def bootstrap(self, *, timeout: float | None = None) -> int:
        """Join the network: a lookup of our own ID from saved contacts and the routers.

        Saved contacts are asked first-hand (they enter the table when they
        answer); routers are asked too but never enter the table (BEP 5). The
        plan (order, retries, the refresh after) is the core's. A dual-stack
        node joins both overlays at once, and has joined when either has (one
        family may be unreachable, or have no router).

        Returns:
            The number of contacts in the routing table(s) afterwards.

        Raises:
            BootstrapError: nothing answered within ``timeout`` seconds (default:
                the node's bootstrap timeout) in any overlay; the message names
                what was tried.
        """
        if self._twin is None:
            return await self._join_overlay(timeout)
        errors: list[BootstrapError] = []
        contacts = 0

        async def join(overlay: DHTNode) -> None:
            nonlocal contacts
            try:
                contacts += await overlay._join_overlay(timeout)
            except BootstrapError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for overlay in self.overlays:
                nursery.start_soon(join, overlay)
        if len(errors) == len(self.overlays):
            raise BootstrapError(" ".join(f"IPv{o.family}: {e}" for o, e in zip(self.overlays, errors)))
        return contacts

    async def _join_overlay(self, timeout: float | None = None) -> int:
        """Bootstrap this overlay (see :meth:`bootstrap`)."""
        timeout = self._bootstrap_timeout if timeout is None else timeout
        resolve = not self._routers_resolved and bool(self.bootstrap_nodes)
        op = self.proto.start_bootstrap(trio.current_time(), timeout=timeout, wait_for_routers=resolve)
        waiter = _Waiter()
        self._ops[op] = waiter
        self._transmit()  # the saved contacts' pings go out while the routers resolve
        try:
            if resolve:
                with trio.move_on_after(timeout):
                    await self._routers()
                if not self._routers_resolved:
                    self.proto.set_routers([], trio.current_time())
                    self._transmit()
            await waiter.event.wait()
        finally:
            self._ops.pop(op, None)
            if waiter.result is None:
                self.proto.abandon(op)
        result = waiter.result
        assert type(result) is BootstrapFinished
        if result.failure is not None:
            raise bootstrap_error(result, self.bootstrap_nodes, timeout)
        self.joined.set()
        if self._primary is not None:
            self._primary.joined.set()
        return result.contacts

    def _rejoin_soon(self) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._rejoin)

    async def _rejoin(self) -> None:
        """The core found the table empty: bootstrap again (it applies the backoff)."""
        try:
            await self._join_overlay()
        except BootstrapError as exc:
            # A dual-stack node whose other overlay is in the DHT works on: this
            # family may simply be unreachable here (no IPv6 route, say).
            other = self._primary or self._twin
            level = logging.INFO if other is not None and len(other.proto.table) else logging.WARNING
            log.log(level, "IPv%d: %s Retrying in %g s.", self.family, exc, self.proto.rejoin_delay)

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
        op = self.proto.start_refresh(trio.current_time(), limit=limit, not_full=not_full)
        result = await self._await_op(op)
        assert type(result) is RefreshFinished
        return result.buckets

    # --- persistence ----------------------------------------------------------------

    def save_state(self) -> None:
        """Write the routing table(s) to the state file atomically (if the node has one)."""
        if self._primary is not None:  # the twin's table goes in its primary's file
            self._primary.save_state()
            return
        save_node_state(self.proto, self.state_path, wall_clock=self._wall_clock)


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


async def resolve_address(addr: Address, *, family: int | None = None) -> Address:
    """Resolve a host name to an IP address (IP literals pass through unchanged).

    Args:
        addr: (host name or IP literal, port).
        family: 4 for an A record, 6 for an AAAA record (BEP 32), ``None`` for
            either (IPv4 first).

    Raises:
        OSError: the name does not resolve (in ``family``), or the literal is
            of the other family.
    """
    host, port = addr
    if is_ip_literal(host):
        if family is not None and family_of(host) != family:
            raise OSError(f"{host} is not an IPv{family} address")
        return addr
    error: OSError | None = None
    for fam in (4, 6) if family is None else (family,):
        af = trio.socket.AF_INET if fam == 4 else trio.socket.AF_INET6
        try:
            infos = await trio.socket.getaddrinfo(host, port, af, trio.socket.SOCK_DGRAM)
        except OSError as exc:
            error = error or exc
            continue
        if infos:
            return (str(infos[0][4][0]), port)
    raise error or OSError(f"{host} has no {'IP' if family is None else f'IPv{family}'} address")


async def resolve_addresses(addr: Address) -> list[Address]:
    """Resolve a host name to one address per family it has: IPv4 (A), then IPv6 (AAAA).

    IP literals pass through as the one address.

    Raises:
        OSError: the name resolves in neither family.
    """
    if is_ip_literal(addr[0]):
        return [addr]
    found: list[Address] = []
    error: OSError | None = None
    for family in (4, 6):
        try:
            found.append(await resolve_address(addr, family=family))
        except OSError as exc:
            error = error or exc
    if not found:
        assert error is not None
        raise error
    return found


#: What ``open_node`` binds by default: both families (BEP 32) on the customary
#: port; the IPv6 socket only where the host has IPv6.
DEFAULT_BINDS: Final[tuple[Address, ...]] = (("0.0.0.0", DEFAULT_PORT), ("::", DEFAULT_PORT))


async def _open_transports(bind: Address | Sequence[Address] | None, port: int) -> list[DatagramTransport]:
    """Bind one UDP socket per requested address (at most one per family)."""
    optional_v6 = bind is None
    binds: list[Address]
    if bind is None:
        binds = [(host, port) for host, _ in DEFAULT_BINDS]
    elif isinstance(bind[0], str):
        binds = [bind]  # type: ignore[list-item]
    else:
        binds = list(bind)  # type: ignore[arg-type]
    if len({family_of(host) for host, _ in binds}) != len(binds):
        raise LocalProtocolError(f"bind one address per family (IPv4, IPv6), not {binds}")
    opened: list[DatagramTransport] = []
    try:
        for host, p in binds:
            try:
                # The IPv6 overlay takes IPv6 traffic only: the IPv4 socket has the rest.
                opened.append(await open_udp_transport(host, p, v6only=True))
            except OSError as exc:
                if not (optional_v6 and family_of(host) == 6):
                    raise
                log.info("no IPv6 socket (%s): running the IPv4 overlay only", exc)
    except BaseException:
        for t in opened:
            await t.aclose()
        raise
    return opened


@asynccontextmanager
async def open_node(
    bind: Address | Sequence[Address] | None = None,
    *,
    port: int = DEFAULT_PORT,
    bootstrap: Sequence[Address] = DEFAULT_BOOTSTRAP,
    state_path: str | os.PathLike[str] | None = None,
    node_id: bytes | None = None,
    config: NodeConfig | None = None,
    rng: random.Random | None = None,
    transport: DatagramTransport | Sequence[DatagramTransport] | None = None,
    join: bool = False,
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[DHTNode]:
    """Run a DHT node for the duration of the ``async with`` block.

    With an IPv4 and an IPv6 address (or transport) the node is dual-stack
    (BEP 32): one overlay per family, sharing one peer store; the node yielded
    is the IPv4 overlay, holding the IPv6 one (see :attr:`DHTNode.overlays`).

    Args:
        bind: the UDP address to bind, or one address per family (ignored when
            ``transport`` is given). Default: ``0.0.0.0:6881`` and, where the
            host has IPv6, ``[::]:6881``.
        port: the port of the default addresses (when ``bind`` is ``None``);
            0 lets the system choose.
        bootstrap: routers to join through; they never enter the routing table.
            Each overlay uses those of its family (names resolve per family).
        state_path: routing-table file: read at start (our IDs and contacts are
            reused), saved periodically and on exit. ``None``: no persistence.
        node_id: our ID in every overlay (default: the saved one, else random).
        config: protocol limits and timeouts.
        rng: randomness (default ``random.SystemRandom()``).
        transport: a ready transport (e.g. a ``MemoryTransport``), or one per
            family, instead of UDP.
        join: bootstrap in the background as soon as the node starts.
        bootstrap_timeout: seconds to wait for the first bootstrap answer.
        wall_clock: wall time for the state file (not used for protocol timing).

    Raises:
        OSError: a UDP address cannot be bound.
        LocalProtocolError: two addresses (or transports) of one family.
    """
    rng = rng or random.SystemRandom()
    path = Path(state_path) if state_path is not None else None
    saved = load_saved_state(path, wall_clock=wall_clock)
    own_transports = transport is None
    if transport is None:
        transports = await _open_transports(bind, port)
    elif isinstance(transport, (list, tuple)):
        transports = list(transport)
    else:
        transports = [transport]  # type: ignore[list-item]
    try:
        families = [family_of(t.local_address[0]) for t in transports]
        if len(set(families)) != len(families) or not transports:
            raise LocalProtocolError("a node takes one transport per address family (IPv4, IPv6)")
        # The IPv4 overlay first: it is the node the caller holds.
        order = sorted(range(len(transports)), key=lambda i: families[i])
        nodes: list[DHTNode] = []
        for i in order:
            family = families[i]
            proto = NodeProtocol(
                node_id or saved.ids.get(family) or random_node_id(rng),
                config=config,
                rng=rng,
                now=trio.current_time(),
                family=family,
                sibling=nodes[0].proto if nodes else None,
            )
            nodes.append(
                DHTNode(
                    transports[i],
                    proto,
                    bootstrap=bootstrap,
                    state_path=path if not nodes else None,
                    saved_contacts=saved.contacts[family],
                    wall_clock=wall_clock,
                    bootstrap_timeout=bootstrap_timeout,
                )
            )
        node = nodes[0]
        if len(nodes) > 1:
            node._twin = nodes[1]
            nodes[1]._primary = node
        async with collapse_single_errors(), trio.open_nursery() as nursery:
            for overlay in nodes:
                overlay._nursery = nursery
                nursery.start_soon(overlay._receive_loop)
                nursery.start_soon(overlay._timer_loop)
            if join:
                nursery.start_soon(_join_in_background, node)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
                node.save_state()
    finally:
        if own_transports:
            for t in transports:
                await t.aclose()


async def _join_in_background(node: DHTNode) -> None:
    try:
        await node.bootstrap()
    except BootstrapError as exc:
        log.warning("%s", exc)


async def serve_node(
    bind: Address | Sequence[Address] | None = None,
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
