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
    BootstrapDue,
    BootstrapFinished,
    ErrorReceived,
    Event,
    LookupFinished,
    LookupPeersFound,
    OperationId,
    PeerAnnounced,
    QueryTimedOut,
    RefreshFinished,
    ResponseReceived,
    SaveDue,
    TransactionKey,
)
from ..core.lookup import Lookup, LookupStats
from ..core.node_id import random_node_id
from ..core.protocol import NodeConfig, NodeProtocol
from ..core.routing_table import RoutingTable
from ..errors import BootstrapError, KRPCError, LocalProtocolError, QueryTimeout
from ..wire.contact import Address, Contact
from ..wire.krpc import FindNode, GetPeers, Ping, Query, ResponseMessage, SampleInfohashes
from .common import DEFAULT_BOOTSTRAP, DEFAULT_PORT, ErrorLog, NodeStats, bootstrap_error, default_state_path
from .common import is_ip_literal, node_stats, parse_address
from .state_file import load_node_state, save_node_state
from .transport import DatagramTransport, open_udp_transport

__all__ = [
    "DHTNode",
    "NodeStats",
    "PeerStream",
    "open_node",
    "serve_node",
    "resolve_address",
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
    runs, final afterwards).
    """

    def __init__(self, lookup: Lookup, receive: trio.MemoryReceiveChannel[Address]) -> None:
        self.lookup = lookup
        self._receive = receive
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
        self._wall_clock = wall_clock
        self._bootstrap_timeout = bootstrap_timeout
        proto.configure_bootstrap(saved_contacts, routers_configured=bool(self.bootstrap_nodes))
        self._waiters: dict[TransactionKey, _Waiter] = {}
        #: Running operations of the core (lookups, bootstraps, ...) -> who takes their events.
        self._ops: dict[OperationId, Callable[[Event], None]] = {}
        self._timer_scope: trio.CancelScope | None = None
        self._announce_callbacks: list[Callable[[PeerAnnounced], None]] = []
        self._routers_resolved = False
        self._resolving: trio.Event | None = None
        self.joined = trio.Event()
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
            t = type(event)
            if t is ResponseReceived or t is ErrorReceived or t is QueryTimedOut:
                waiter = self._waiters.pop(event.key, None)  # type: ignore[union-attr]
                if waiter is not None:
                    waiter(event)
            elif t is PeerAnnounced:
                for cb in self._announce_callbacks:
                    try:
                        cb(event)  # type: ignore[arg-type]
                    except Exception:  # the user's bug must not stop the node
                        self._callback_errors.record(cb)
            elif t is SaveDue:
                self.save_state()
            elif t is BootstrapDue:
                if self._nursery is not None:
                    self._nursery.start_soon(self._rejoin)
            elif (op := getattr(event, "op", None)) is not None:
                handler = self._ops.get(op)
                if handler is not None:
                    handler(event)
            # ExternalAddressChanged: the core rejoins under a new ID by itself.
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
                resolved[i] = await resolve_address(addr)
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

    async def find_node(self, target: bytes) -> list[Contact]:
        """Run an iterative ``find_node`` lookup; return the closest contacts that answered."""
        await self._prepare_lookup()
        op = self.proto.start_lookup(target, FindNode(target), trio.current_time())
        result = await self._await_op(op)
        assert type(result) is LookupFinished
        return [c for c, _ in result.closest]

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
            **lookup_options: :class:`~mainline_dht.core.lookup.Lookup` options
                (``alpha``, ``soft_timeout``, ``early_finish``, ``max_queries``).

        Raises:
            LocalProtocolError: ``info_hash`` is not 20 bytes.
        """
        if type(info_hash) is not bytes or len(info_hash) != 20:
            raise LocalProtocolError("info_hash must be 20 bytes")
        await self._prepare_lookup()
        send, receive = trio.open_memory_channel[Address](math.inf)
        op = self.proto.start_lookup(info_hash, GetPeers(info_hash), trio.current_time(), **lookup_options)
        lookup = self.proto.lookup(op)
        assert lookup is not None  # just started
        stream = PeerStream(lookup, receive)

        def on_event(event: Event) -> None:
            if type(event) is LookupPeersFound:
                for peer in event.peers:
                    stream._found_at[peer] = event.at
                    send.send_nowait(peer)
            elif type(event) is LookupFinished:
                self._ops.pop(op, None)
                send.close()

        if lookup.done:
            send.close()
        else:
            self._ops[op] = on_event
        self._transmit()
        try:
            yield stream
        finally:
            if self._ops.pop(op, None) is not None:
                self.proto.abandon(op)
            send.close()

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
        if stream is None:
            await self._prepare_lookup()
        op = self.proto.start_announce(
            info_hash, port, trio.current_time(), lookup=None if stream is None else stream.lookup
        )
        result = await self._await_op(op)
        assert type(result) is AnnounceFinished
        return result.accepted

    # --- joining the network --------------------------------------------------------

    async def bootstrap(self, *, timeout: float | None = None) -> int:
        """Join the network: a lookup of our own ID from saved contacts and the routers.

        Saved contacts are asked first-hand (they enter the table when they
        answer); routers are asked too but never enter the table (BEP 5). The
        plan (order, retries, the refresh after) is the core's.

        Returns:
            The number of contacts in the routing table afterwards.

        Raises:
            BootstrapError: nothing answered within ``timeout`` seconds (default:
                the node's bootstrap timeout); the message names what was tried.
        """
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
        return result.contacts

    async def _rejoin(self) -> None:
        """The core found the table empty: bootstrap again (it applies the backoff)."""
        try:
            await self.bootstrap()
        except BootstrapError as exc:
            log.warning("%s Retrying in %g s.", exc, self.proto.rejoin_delay)

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
        """Write the routing table to the state file atomically (if the node has one)."""
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


async def resolve_address(addr: Address) -> Address:
    """Resolve a host name to an IPv4 address (IP literals pass through unchanged).

    Raises:
        OSError: the name does not resolve.
    """
    host, port = addr
    if is_ip_literal(host):
        return addr
    infos = await trio.socket.getaddrinfo(host, port, trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"{host} has no IPv4 address")
    return (str(infos[0][4][0]), port)


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
    saved_id, saved = load_node_state(path)
    node_id = node_id or saved_id
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
