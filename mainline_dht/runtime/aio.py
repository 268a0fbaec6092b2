"""The asyncio DHT node: the same I/O-free core as the trio node, on asyncio.

Owns: one UDP endpoint (an :class:`asyncio.DatagramProtocol`), one timer handle
(``loop.call_at`` the core's next deadline), the state file's I/O, and the
awaitables of the public API. Every rule of what the node sends and when lives
in the core (:class:`~mainline_dht.core.protocol.NodeProtocol`); this module
starts the core's operations and turns their events into results. It imports no
trio, so it runs under ``asyncio.run`` in a program that never installed trio's
event loop.

Usage::

    import asyncio
    from mainline_dht import aio

    async def main() -> None:
        async with aio.open_node(("0.0.0.0", 6881), bootstrap=[("router.bittorrent.com", 6881)]) as node:
            await node.bootstrap()
            async for ip, port in node.get_peers(info_hash):
                print(ip, port)

    asyncio.run(main())

``get_peers`` returns a :class:`PeerStream`: iterate it directly, or use it as
``async with node.get_peers(h) as peers:`` to stop the lookup when the block
exits (``peers.stats`` then holds its figures). Iterated without ``async with``
and left early, the lookup runs on to its end in the background (bounded by its
query cap), as a lookup whose reader went away does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from ..core.behaviour import DEFAULT_BOOTSTRAP_TIMEOUT
from ..core.events import (
    AnnounceFinished,
    BootstrapFinished,
    ErrorReceived,
    Event,
    InfohashQueried,
    LookupFinished,
    LookupPeersFound,
    OperationId,
    PeerAnnounced,
    RefreshFinished,
    ResponseReceived,
    TransactionKey,
)
from ..core.lookup import Lookup, LookupStats
from ..core.node_id import random_node_id
from ..core.protocol import NodeConfig, NodeProtocol
from ..core.routing_table import RoutingTable
from ..errors import BootstrapError, KRPCError, LocalProtocolError, QueryTimeout
from ..wire.contact import Address, Contact, family_of
from ..wire.krpc import FindNode, GetPeers, Ping, Query, ResponseMessage, SampleInfohashes
from .common import DEFAULT_BOOTSTRAP, DEFAULT_PORT, ErrorLog, EventDispatch, NodeStats, bootstrap_error, is_ip_literal
from .common import node_stats
from .state_file import load_saved_state, save_node_state

__all__ = ["AsyncioNode", "PeerStream", "open_node", "resolve_address"]

log = logging.getLogger(__name__)

#: Kernel buffer sizes asked for (as the trio transport does): a burst of queries
#: waits in the kernel rather than being dropped.
SOCKET_BUFFER_SIZE: Final = 4 * 1024 * 1024
#: Datagrams read in a row after asyncio hands us one (see ``_UDP.datagram_received``).
RECEIVE_DRAIN_MAX: Final = 256
#: Datagrams of a burst handled before the replies so far are sent (as the trio node).
RECEIVE_FLUSH_EVERY: Final = 32
#: Largest datagram read (a DHT message is far smaller; UDP's limit).
RECEIVE_SIZE: Final = 65536


class PeerStream:
    """The peers of one ``get_peers`` lookup, as they arrive (asyncio).

    ``async for ip, port in stream`` yields each new peer once, then ends when
    the lookup ends. Also an async context manager: leaving the block stops the
    lookup. :attr:`stats` holds the lookup's figures (live while it runs, final
    afterwards).
    """

    def __init__(self, node: AsyncioNode, info_hash: bytes, options: dict[str, Any]) -> None:
        self._node = node
        self._info_hash = info_hash
        self._options = options
        self._op: OperationId | None = None
        self._lookup: Lookup | None = None
        self._queue: asyncio.Queue[Address | None] = asyncio.Queue()
        self._found_at: dict[Address, float] = {}
        self._ended = False

    def _start(self) -> None:
        node = self._node
        self._op = op = node.proto.start_lookup(
            self._info_hash, GetPeers(self._info_hash), node._loop.time(), **self._options
        )
        self._lookup = lookup = node.proto.lookup(op)
        assert lookup is not None  # just started
        if lookup.done:
            self._queue.put_nowait(None)
        else:
            node._ops[op] = self._event
        node._transmit()

    async def _started(self) -> None:
        if self._lookup is None and not self._ended:
            await self._node._prepare_lookup()  # the routers, when the table is too thin
            if self._lookup is None:
                self._start()

    @property
    def lookup(self) -> Lookup:
        """The lookup's state.

        Raises:
            RuntimeError: it has not started yet (it starts at once unless the
                routers must be resolved first: then at the first iteration).
        """
        if self._lookup is None:
            raise RuntimeError("the lookup has not started yet")
        return self._lookup

    @property
    def stats(self) -> LookupStats:
        """The lookup's statistics (see :attr:`lookup`)."""
        return self.lookup.stats

    @property
    def peers(self) -> list[Address]:
        """Every peer found so far, in arrival order."""
        return [] if self._lookup is None else list(self._lookup.peers)

    def found_at(self, peer: Address) -> float:
        """When the lookup received ``peer`` (the event loop's ``loop.time()`` clock).

        Raises:
            KeyError: ``peer`` has not been found by this lookup.
        """
        return self._found_at[peer]

    def _event(self, event: Event) -> None:
        if type(event) is LookupPeersFound:
            for peer in event.peers:
                self._found_at[peer] = event.at
                self._queue.put_nowait(peer)
        elif type(event) is LookupFinished:
            self._node._ops.pop(event.op, None)
            self._queue.put_nowait(None)

    def __aiter__(self) -> PeerStream:
        return self

    async def __anext__(self) -> Address:
        await self._started()
        if self._ended:
            raise StopAsyncIteration
        peer = await self._queue.get()
        if peer is None:
            self._ended = True
            raise StopAsyncIteration
        return peer

    async def __aenter__(self) -> PeerStream:
        await self._started()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the lookup (if it still runs); iteration ends."""
        op = self._op
        if op is not None and self._node._ops.pop(op, None) is not None:
            self._node.proto.abandon(op)
        self._ended = True


class _UDP(asyncio.DatagramProtocol):
    """Hands every datagram to the node; the node answers at once."""

    def __init__(self, node: AsyncioNode) -> None:
        self._node = node

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        node = self._node
        node._datagram(data, (addr[0], addr[1]))
        # asyncio reads one datagram per wake-up; a burst waits in the kernel, so
        # read on while it has more (as the trio transport does): the per-wake-up
        # cost is paid once per burst. tools/bench_serve.py --runtime asyncio.
        recvfrom = node._recvfrom
        if recvfrom is not None:
            unsent = 1
            for _ in range(RECEIVE_DRAIN_MAX):
                try:
                    data, addr = recvfrom(RECEIVE_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # ICMP errors and the like: asyncio's own read reports them
                    log.debug("UDP receive error: %s", exc)
                    break
                node._datagram(data, (addr[0], addr[1]))
                unsent += 1
                if unsent == RECEIVE_FLUSH_EVERY:
                    # Answer a burst as it is read, not at its end (as the trio node does).
                    unsent = 0
                    node._send_queued()
        node._send_queued()
        if not node._flush_scheduled:
            # Events and the timer once per burst.
            node._flush_scheduled = True
            node._loop.call_soon(node._flush)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable, ...): the query times out in the core.
        log.debug("UDP error: %s", exc)


class _Waiter:
    """One awaited outcome (a query's reply or an operation's final event), as a future."""

    __slots__ = ("future",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[Event] = loop.create_future()

    def __call__(self, result: Event) -> None:
        if not self.future.done():  # a cancelled wait leaves its future done
            self.future.set_result(result)


class AsyncioNode(EventDispatch[_Waiter]):
    """A running DHT node on asyncio. Create it with :func:`open_node`."""

    def __init__(
        self,
        proto: NodeProtocol,
        *,
        bootstrap: Sequence[Address],
        state_path: Path | None,
        saved_contacts: Sequence[Contact],
        wall_clock: Callable[[], float],
        bootstrap_timeout: float,
    ) -> None:
        self.proto = proto
        self.bootstrap_nodes = tuple(bootstrap)
        self.state_path = state_path
        self._wall_clock = wall_clock
        self._bootstrap_timeout = bootstrap_timeout
        proto.configure_bootstrap(saved_contacts, routers_configured=bool(self.bootstrap_nodes))
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._recvfrom: Callable[[int], tuple[bytes, Any]] | None = None
        self._local_address: Address = ("0.0.0.0", 0)
        self._waiters: dict[TransactionKey, _Waiter] = {}
        self._ops: dict[OperationId, Callable[[Event], None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._flush_scheduled = False
        self._announce_callbacks: list[Callable[[PeerAnnounced], None]] = []
        self._queried_callbacks: list[Callable[[InfohashQueried], None]] = []  # no on_infohash_queried here
        self._routers_resolved = False
        self._resolving: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        #: Set once a bootstrap succeeded.
        self.joined = asyncio.Event()
        self._internal_errors = ErrorLog("internal error handling a datagram", log)
        self._callback_errors = ErrorLog("a peer-announced callback raised", log)
        self.sent = 0
        self.send_dropped = 0

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
        """The address our UDP socket is bound to."""
        return self._local_address

    @property
    def table(self) -> RoutingTable:
        """The routing table (read it; do not change it)."""
        return self.proto.table

    @property
    def stats(self) -> NodeStats:
        """A snapshot of the node's counters and table state."""
        return node_stats(
            self.proto,
            self._loop.time(),
            internal_errors=self._internal_errors.count,
            callback_errors=self._callback_errors.count,
        )

    def on_peer_announced(self, callback: Callable[[PeerAnnounced], None]) -> None:
        """Call ``callback`` for every valid ``announce_peer`` we receive (it must not block)."""
        self._announce_callbacks.append(callback)

    # --- moving bytes and time -------------------------------------------------------

    def _datagram(self, data: bytes, addr: Address) -> None:
        try:
            self.proto.receive_datagram(data, addr, self._loop.time())
        except Exception:  # a bug, never bad input: the core drops that itself
            self._internal_errors.record(f"from {addr}")

    def _send_queued(self) -> None:
        transport = self._transport
        for data, addr in self.proto.datagrams_to_send():
            if transport is None or transport.is_closing():
                self.send_dropped += 1
                continue
            try:
                transport.sendto(data, addr)
            except OSError as exc:
                self.send_dropped += 1
                log.debug("dropped datagram to %s: %s", addr, exc)
            else:
                self.sent += 1

    def _flush(self) -> None:
        self._flush_scheduled = False
        try:
            self._transmit()
        except Exception:  # a bug: logged and counted, the node carries on
            self._internal_errors.record("while dispatching events")

    def _transmit(self) -> None:
        """Send what the core queued, dispatch its events, re-arm the timer."""
        if self._closed:
            return
        proto = self.proto
        self._send_queued()
        self._dispatch_events()
        self._send_queued()
        t_next = proto.get_timer()
        if t_next is not None and t_next < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = t_next
            self._timer = self._loop.call_at(t_next, self._on_timer)

    def _on_timer(self) -> None:
        # asyncio may run a handle up to its clock resolution early: never pass a
        # time before the deadline the core named, or it would name it again.
        now = max(self._loop.time(), self._timer_at)
        self._timer = None
        self._timer_at = math.inf
        try:
            self.proto.handle_timer(now)
        except Exception:
            self._internal_errors.record("in the core's timer")
        self._flush()

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _op_future(self, op: OperationId) -> asyncio.Future[Event]:
        waiter = _Waiter(self._loop)
        self._ops[op] = waiter
        self._transmit()
        return waiter.future

    async def _await_op(self, op: OperationId) -> Event:
        """Wait for the final event of a core operation; abandon it if cancelled."""
        fut = self._op_future(op)
        try:
            return await fut
        finally:
            self._ops.pop(op, None)
            if not fut.done():
                self.proto.abandon(op)

    # --- single queries -------------------------------------------------------------

    async def query(
        self,
        addr: Address,
        query: Query,
        *,
        node_id: bytes | None = None,
        timeout: float | None = None,
        learn: bool = True,
    ) -> ResponseMessage:
        """Send one query and wait for its reply.

        Raises:
            QueryTimeout: no reply in time.
            KRPCError: the remote answered with an error.
            LocalProtocolError: too many queries in flight, or a bad address.
        """
        key = self.proto.send_query(query, addr, self._loop.time(), node_id=node_id, timeout=timeout, learn=learn)
        waiter = _Waiter(self._loop)
        fut = waiter.future
        self._waiters[key] = waiter
        self._transmit()
        try:
            result = await fut
        finally:
            if not fut.done():
                self._waiters.pop(key, None)
                self.proto.cancel(key)
        if type(result) is ResponseReceived:
            return result.response
        if type(result) is ErrorReceived:
            raise KRPCError(result.error.code, result.error.message, addr)
        raise QueryTimeout(addr, query.method)

    async def ping(self, addr: Address, *, timeout: float | None = None) -> ResponseMessage:
        """Ping ``addr``; return its reply (its ``sender_id`` and ``version``)."""
        return await self.query(addr, Ping(), timeout=timeout)

    async def sample_infohashes(self, addr: Address, target: bytes | None = None) -> ResponseMessage:
        """Ask one node for a sample of the infohashes it stores (BEP 51)."""
        return await self.query(addr, SampleInfohashes(target or random_node_id(self.proto.rng)))

    # --- lookups --------------------------------------------------------------------

    async def _routers(self) -> list[Address]:
        """Resolve the bootstrap routers (concurrently, once) and hand them to the core."""
        if self._routers_resolved:
            return self.proto.routers
        if self._resolving is not None:
            await asyncio.shield(self._resolving)
            return self.proto.routers
        self._resolving = done = self._loop.create_future()
        routers: list[Address] = []
        try:
            tasks = [asyncio.ensure_future(resolve_address(a)) for a in self.bootstrap_nodes]
            if tasks:
                finished, pending = await asyncio.wait(tasks, timeout=self._bootstrap_timeout)
                for task in pending:
                    task.cancel()
                for addr, task in zip(self.bootstrap_nodes, tasks, strict=True):
                    if task in finished and task.exception() is None:
                        routers.append(task.result())
                    elif task in finished:
                        log.info("cannot resolve %s:%s: %s", addr[0], addr[1], task.exception())
        finally:
            self._routers_resolved = bool(routers)
            self.proto.set_routers(routers, self._loop.time())
            self._resolving = None
            done.set_result(None)
            self._transmit()
        return routers

    async def _prepare_lookup(self) -> None:
        if self.proto.wants_routers:
            await self._routers()

    async def find_node(self, target: bytes) -> list[Contact]:
        """Run an iterative ``find_node`` lookup; return the closest contacts that answered."""
        await self._prepare_lookup()
        op = self.proto.start_lookup(target, FindNode(target), self._loop.time())
        result = await self._await_op(op)
        assert type(result) is LookupFinished
        return [c for c, _ in result.closest]

    def get_peers(self, info_hash: bytes, **lookup_options: Any) -> PeerStream:
        """Look up peers for ``info_hash``; iterate the stream for each as it arrives.

        ``async for ip, port in node.get_peers(h)``, or ``async with
        node.get_peers(h) as peers: async for ...`` to stop the lookup when the
        block exits. Its figures are on the stream (``peers.stats``).

        Args:
            info_hash: the 20-byte infohash.
            **lookup_options: :class:`~mainline_dht.core.lookup.Lookup` options.

        Raises:
            LocalProtocolError: ``info_hash`` is not 20 bytes.
        """
        if type(info_hash) is not bytes or len(info_hash) != 20:
            raise LocalProtocolError("info_hash must be 20 bytes")
        stream = PeerStream(self, info_hash, lookup_options)
        if not self.proto.wants_routers:
            stream._start()
        return stream

    async def announce(self, info_hash: bytes, port: int | None = None, *, stream: PeerStream | None = None) -> int:
        """Announce that we are a peer for ``info_hash`` (BEP 5 ``announce_peer``).

        Runs a ``get_peers`` lookup (or reuses the finished one ``stream``), then
        sends ``announce_peer`` with each token to the k closest nodes that gave one.

        Returns:
            How many nodes accepted the announce.

        Raises:
            LocalProtocolError: bad infohash or port.
        """
        if stream is None:
            await self._prepare_lookup()
        op = self.proto.start_announce(
            info_hash, port, self._loop.time(), lookup=None if stream is None else stream.lookup
        )
        result = await self._await_op(op)
        assert type(result) is AnnounceFinished
        return result.accepted

    # --- joining the network --------------------------------------------------------

    async def bootstrap(self, *, timeout: float | None = None) -> int:
        """Join the network (the core's plan: saved contacts, routers, retries, refresh).

        Returns:
            The number of contacts in the routing table afterwards.

        Raises:
            BootstrapError: nothing answered within ``timeout`` seconds.
        """
        timeout = self._bootstrap_timeout if timeout is None else timeout
        resolve = not self._routers_resolved and bool(self.bootstrap_nodes)
        op = self.proto.start_bootstrap(self._loop.time(), timeout=timeout, wait_for_routers=resolve)
        fut = self._op_future(op)
        try:
            if resolve:
                try:
                    await asyncio.wait_for(self._routers(), timeout)
                except asyncio.TimeoutError:
                    pass
                if not self._routers_resolved:
                    self.proto.set_routers([], self._loop.time())
                    self._transmit()
            result = await fut
        finally:
            self._ops.pop(op, None)
            if not fut.done():
                self.proto.abandon(op)
        assert type(result) is BootstrapFinished
        if result.failure is not None:
            raise bootstrap_error(result, self.bootstrap_nodes, timeout)
        self.joined.set()
        return result.contacts

    def _rejoin_soon(self) -> None:
        self._spawn(self._rejoin())

    async def _rejoin(self) -> None:
        try:
            await self.bootstrap()
        except BootstrapError as exc:
            log.warning("%s Retrying in %g s.", exc, self.proto.rejoin_delay)

    async def refresh_buckets(self, *, limit: int | None = None, not_full: bool = False) -> int:
        """Look up a random ID in buckets that need it (BEP 5 refresh); return how many."""
        op = self.proto.start_refresh(self._loop.time(), limit=limit, not_full=not_full)
        result = await self._await_op(op)
        assert type(result) is RefreshFinished
        return result.buckets

    # --- persistence ----------------------------------------------------------------

    def save_state(self) -> None:
        """Write the routing table to the state file atomically (if the node has one)."""
        save_node_state(self.proto, self.state_path, wall_clock=self._wall_clock)

    async def _close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for waiter in self._waiters.values():
            waiter.future.cancel()
        self._recvfrom = None
        if self._transport is not None:
            self._transport.close()


async def resolve_address(addr: Address) -> Address:
    """Resolve a host name to an IPv4 address (IP literals pass through unchanged).

    Raises:
        OSError: the name does not resolve.
    """
    host, port = addr
    if is_ip_literal(host):
        return addr
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"{host} has no IPv4 address")
    return (str(infos[0][4][0]), port)


def _bound_socket(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _canonname, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # this node serves IPv6 only
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                if sock.getsockopt(socket.SOL_SOCKET, option) < SOCKET_BUFFER_SIZE:
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)
            except OSError:  # pragma: no cover - platform dependent
                pass
        sock.setblocking(False)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def open_node(
    bind: Address = ("0.0.0.0", DEFAULT_PORT),
    *,
    bootstrap: Sequence[Address] = DEFAULT_BOOTSTRAP,
    state_path: str | os.PathLike[str] | None = None,
    node_id: bytes | None = None,
    config: NodeConfig | None = None,
    rng: random.Random | None = None,
    join: bool = False,
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[AsyncioNode]:
    """Run a DHT node on asyncio for the duration of the ``async with`` block.

    One overlay: the address family of ``bind`` (BEP 32: an IPv6 address gives an
    IPv6 node). A dual-stack node is the trio node's (:func:`mainline_dht.open_node`).

    Args:
        bind: the UDP address to bind (IP literal; port 0 lets the OS choose).
        bootstrap: routers to join through; they never enter the routing table.
        state_path: routing-table file: read at start, saved periodically and on
            exit (the same file format as the trio node). ``None``: no persistence.
        node_id: our ID (default: the saved one, else random).
        config: protocol limits and timeouts.
        rng: randomness (default ``random.SystemRandom()``).
        join: bootstrap in the background as soon as the node starts.
        bootstrap_timeout: seconds to wait for the first bootstrap answer.
        wall_clock: wall time for the state file (not used for protocol timing).

    Raises:
        OSError: the UDP address cannot be bound.
    """
    rng = rng or random.SystemRandom()
    path = Path(state_path) if state_path is not None else None
    family = family_of(bind[0]) if is_ip_literal(bind[0]) else 4
    saved = load_saved_state(path)
    loop = asyncio.get_running_loop()
    proto = NodeProtocol(
        node_id or saved.ids.get(family) or random_node_id(rng), config=config, rng=rng, now=loop.time(), family=family
    )
    node = AsyncioNode(
        proto,
        bootstrap=bootstrap,
        state_path=path,
        saved_contacts=saved.contacts[family],
        wall_clock=wall_clock,
        bootstrap_timeout=bootstrap_timeout,
    )
    sock = _bound_socket(bind[0], bind[1])
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(node), sock=sock)
    except BaseException:
        sock.close()
        raise
    node._transport = transport
    node._recvfrom = sock.recvfrom
    local = transport.get_extra_info("sockname")
    node._local_address = (local[0], local[1])
    try:
        node._transmit()  # arms the core's first timer
        if join:
            node._spawn(_join_in_background(node))
        yield node
    finally:
        await node._close()
        node.save_state()


async def _join_in_background(node: AsyncioNode) -> None:
    try:
        await node.bootstrap()
    except BootstrapError as exc:
        log.warning("%s", exc)
