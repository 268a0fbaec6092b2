"""A DHT node for programs built on threads rather than trio.

Owns: one background thread per :class:`Node` that runs the trio node
(:func:`~mainline_dht.runtime.node.open_node`) under ``trio.run``, and the
blocking methods that hand each call to that thread and wait for its result.
Only the public trio API is used here; the node's behaviour is the trio node's.

Usage::

    from mainline_dht.blocking import Node

    with Node(("0.0.0.0", 6881), state_path="dht.dat") as node:
        for ip, port in node.iter_peers(info_hash):
            ...
        node.announce(info_hash, port=51413)

Each blocking call becomes one trio task in the node's thread, so any number of
threads may call one node at once. Errors reach the caller as the exceptions the
trio node raises (:class:`~mainline_dht.errors.QueryTimeout`,
:class:`~mainline_dht.errors.KRPCError`, ...), never wrapped in an
``ExceptionGroup``. A node stops on ``close()``, at the end of its ``with``
block, when it is garbage-collected, and at interpreter exit; stopping saves
its routing table (when it has a state file).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import random
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Final, TypeVar, final

import trio

from ..core.lookup import LookupStats
from ..core.protocol import NodeConfig
from ..errors import LocalProtocolError, NodeClosedError
from ..wire.contact import Address, Contact
from ..wire.krpc import ResponseMessage
from .node import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_BOOTSTRAP_TIMEOUT,
    DEFAULT_PORT,
    DHTNode,
    NodeStats,
    PeerStream,
    open_node,
    resolve_address,
)

__all__ = ["Node", "PeerIterator", "DEFAULT_LOOKUP_TIMEOUT", "PEER_BUFFER", "CLOSE_TIMEOUT"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a ``get_peers``/``iter_peers`` lookup may run before it is stopped (the
#: peers found so far are kept). On the live DHT a lookup ends in seconds; this
#: bounds one that keeps finding new nodes to ask.
DEFAULT_LOOKUP_TIMEOUT: Final = 60.0
#: Peers ``iter_peers`` holds for a slow reader; the lookup waits while it is full.
PEER_BUFFER: Final = 64
#: Seconds ``close()`` waits for the node's thread to stop. The thread is a daemon,
#: so a node that fails to stop in time never holds up interpreter exit.
CLOSE_TIMEOUT: Final = 10.0


def _collapse(exc: BaseException) -> BaseException:
    """The lone exception inside nested one-member groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class _Runner:
    """The node's thread and its trio run.

    Holds no reference to the :class:`Node` facade, so a ``weakref.finalize`` on
    the facade can stop it when the facade is dropped or the interpreter exits.
    Attributes written by the trio thread are read by callers only after
    ``_ready`` is set (or through ``trio.from_thread``), which orders the accesses.
    """

    def __init__(self, open_: Callable[[], AbstractAsyncContextManager[DHTNode]]) -> None:
        self._open = open_
        self._ready = threading.Event()
        self._close_lock = threading.Lock()
        self._close_requested = False
        self.node: DHTNode | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.local_addresses: tuple[Address, ...] = ()
        #: Why the trio run ended, when it ended on an error (start-up or later).
        self.error: BaseException | None = None
        self._stop: trio.Event | None = None
        self._drained: trio.Event | None = None
        self._closing = False  # trio side: no new calls start
        self._calls: set[trio.CancelScope] = set()
        self._tasks: trio.Nursery | None = None
        self.thread = threading.Thread(target=self._run, name="mainline-dht node", daemon=True)

    # --- the node's thread ------------------------------------------------------------

    def start(self) -> None:
        """Start the thread and wait until the node is up (or failed to start)."""
        self.thread.start()
        self._ready.wait()
        if self.node is None:
            error = self.error
            assert error is not None
            raise error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # handed to the callers; nothing above this frame
            self.error = _collapse(exc)
            if self.node is not None:
                log.error("the DHT node's thread stopped on an error", exc_info=self.error)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        async with self._open() as node, trio.open_nursery() as tasks:
            self._tasks = tasks
            self._stop = trio.Event()
            self._drained = trio.Event()
            self.token = trio.lowlevel.current_trio_token()
            self.local_addresses = tuple(overlay.local_address for overlay in node.overlays)
            self.node = node
            self._ready.set()
            await self._stop.wait()
            # Stop the calls in flight while the node still runs, so that they
            # end cleanly (their callers get NodeClosedError) before it closes.
            self._closing = True
            tasks.cancel_scope.cancel()
            for scope in list(self._calls):
                scope.cancel()
            if self._calls:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                    await self._drained.wait()

    async def _guard(self, fn: Callable[[], Awaitable[T]], scope: trio.CancelScope) -> T:
        """Run one caller's call in the trio thread, within ``scope``; ``close()`` cancels it."""
        if self._closing:
            raise NodeClosedError("the DHT node is closed")
        self._calls.add(scope)
        try:
            with scope:
                return await fn()
        finally:
            self._calls.discard(scope)
            if self._closing and not self._calls:
                assert self._drained is not None
                self._drained.set()
        raise NodeClosedError("the DHT node was closed during the call")

    # --- called from other threads -------------------------------------------------

    def _closed_error(self) -> NodeClosedError:
        if self._close_requested or self.error is None:
            return NodeClosedError("the DHT node is closed")
        error = NodeClosedError(f"the DHT node stopped on an error: {self.error!r}")
        error.__cause__ = self.error
        return error

    def _check_open(self) -> trio.lowlevel.TrioToken:
        if self._close_requested or not self.thread.is_alive() or self.token is None:
            raise self._closed_error()
        if threading.current_thread() is self.thread:
            raise RuntimeError("blocking Node methods cannot be called from the node's own thread")
        return self.token

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` in the node's thread and return (or raise) its outcome."""
        token = self._check_open()
        scope = trio.CancelScope()
        try:
            return trio.from_thread.run(self._guard, fn, scope, trio_token=token)
        except (KeyboardInterrupt, SystemExit):
            # The caller stopped waiting (Ctrl-C in the main thread): so does the node.
            self.cancel_soon(scope)
            raise
        except (trio.RunFinishedError, trio.Cancelled):
            # The run ended under the call (close() from another thread, or a crash).
            raise self._closed_error() from None
        except BaseExceptionGroup as group:
            exc = _collapse(group)
            if exc is group:
                raise
            raise exc from exc.__cause__

    def call_sync(self, fn: Callable[[], T]) -> T:
        """Run the synchronous ``fn()`` in the node's thread (for reading its state)."""
        token = self._check_open()
        try:
            return trio.from_thread.run_sync(fn, trio_token=token)
        except trio.RunFinishedError:
            raise self._closed_error() from None

    def start_task(self, fn: Callable[[trio.Nursery], None]) -> None:
        """Call ``fn(nursery)`` in the node's thread to start tasks that outlive one call.

        The nursery's tasks are cancelled when the node closes.

        Raises:
            NodeClosedError: the node is closed or closing.
        """

        def start() -> None:
            if self._closing or self._tasks is None:
                raise NodeClosedError("the DHT node is closed")
            fn(self._tasks)

        self.call_sync(start)

    def cancel_soon(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` from any thread, the node's own included; no-op once stopped."""
        token = self.token
        if token is None:
            return
        try:
            token.run_sync_soon(scope.cancel)
        except trio.RunFinishedError:
            pass

    def close(self) -> None:
        """Stop the node (idempotent; safe from any thread) and wait for its thread."""
        with self._close_lock:
            first = not self._close_requested
            self._close_requested = True
        if first and self.token is not None and self._stop is not None:
            try:
                self.token.run_sync_soon(self._stop.set)
            except trio.RunFinishedError:
                pass
        if threading.current_thread() is not self.thread:
            self.thread.join(CLOSE_TIMEOUT)
            if self.thread.is_alive():
                log.warning("the DHT node's thread did not stop within %g s", CLOSE_TIMEOUT)

    @property
    def closed(self) -> bool:
        return self._close_requested or not self.thread.is_alive()


@final
class Node:
    """A DHT node running on a background thread, with blocking methods.

    The constructor starts the node and returns once its UDP socket is bound;
    with ``join=True`` (the default) it then joins the network in the background,
    and lookups started meanwhile ask the bootstrap nodes directly. Use it as a
    context manager, or call :meth:`close`; a node still open at interpreter exit
    is closed then.

    Every method may be called from any number of threads at once. A method
    called after :meth:`close` (or after the node stopped on an error) raises
    :class:`~mainline_dht.errors.NodeClosedError`.

    Args:
        bind: the UDP address to bind, or one address per family (IPv4, IPv6)
            for a dual-stack node. Default: ``0.0.0.0:6881`` and, where the
            host has IPv6, ``[::]:6881``.
        port: the port of the default addresses (when ``bind`` is ``None``);
            0 lets the system choose.
        bootstrap: nodes to join through; they never enter the routing table.
        state_path: routing-table file: read at start (our ID and contacts are
            reused) and saved periodically and on close. ``None``: no persistence.
        join: join the network in the background right away.
        node_id: our node ID (default: the saved one, else random).
        config: protocol limits and timeouts.
        rng: randomness (default ``random.SystemRandom()``).
        bootstrap_timeout: seconds to wait for the first answer when joining.

    Raises:
        OSError: an address cannot be bound.
        LocalProtocolError: two addresses of one family.
    """

    def __init__(
        self,
        bind: Address | Sequence[Address] | None = None,
        *,
        port: int = DEFAULT_PORT,
        bootstrap: Sequence[Address] = DEFAULT_BOOTSTRAP,
        state_path: str | os.PathLike[str] | None = None,
        join: bool = True,
        node_id: bytes | None = None,
        config: NodeConfig | None = None,
        rng: random.Random | None = None,
        bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT,
    ) -> None:
        runner = _Runner(
            functools.partial(
                open_node,
                bind,
                port=port,
                bootstrap=tuple(bootstrap),
                state_path=state_path,
                join=join,
                node_id=node_id,
                config=config,
                rng=rng,
                bootstrap_timeout=bootstrap_timeout,
            )
        )
        runner.start()
        self._runner = runner
        # Closes the node when this object is dropped, or at interpreter exit.
        self._finalizer = weakref.finalize(self, runner.close)

    # --- lifetime -----------------------------------------------------------------

    def close(self) -> None:
        """Stop the node: cancel the calls in flight, save the state file, close the socket.

        Idempotent, and safe to call from any thread; returns once the node's
        thread has stopped (or after :data:`CLOSE_TIMEOUT` seconds).
        """
        self._finalizer()
        self._runner.close()

    @property
    def closed(self) -> bool:
        """Whether the node has stopped (closed, or stopped on an error)."""
        return self._runner.closed

    def __enter__(self) -> Node:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- identity and figures -----------------------------------------------------

    @property
    def local_address(self) -> Address:
        """The address the node's UDP socket is bound to (its IPv4 socket's, when it has both)."""
        return self._runner.local_addresses[0]

    @property
    def local_addresses(self) -> tuple[Address, ...]:
        """The address of each of the node's UDP sockets: IPv4 first, then IPv6 (BEP 32)."""
        return self._runner.local_addresses

    @property
    def node_id(self) -> bytes:
        """Our 20-byte node ID (it may change once, when BEP 42 gives us one valid for our address)."""
        node = self._node
        return self._runner.call_sync(lambda: node.node_id)

    def stats(self) -> NodeStats:
        """A snapshot of the node's counters and routing-table state."""
        node = self._node
        return self._runner.call_sync(lambda: node.stats)

    @property
    def _node(self) -> DHTNode:
        node = self._runner.node
        assert node is not None  # set before the constructor returns
        return node

    # --- queries and lookups ------------------------------------------------------

    def bootstrap(self, *, timeout: float | None = None) -> int:
        """Join the network (again) and wait until done.

        Returns:
            The number of contacts in the routing table afterwards.

        Raises:
            BootstrapError: nothing answered within ``timeout`` seconds (default:
                the node's bootstrap timeout).
        """
        node = self._node
        return self._runner.call(lambda: node.bootstrap(timeout=timeout))

    def ping(self, address: Address, *, timeout: float | None = None) -> ResponseMessage:
        """Ping one node; return its reply (``sender_id``, ``version``, ``ip``).

        Args:
            address: ``(host, port)``; a host name is resolved first.
            timeout: seconds to wait (default: the node's query timeout).

        Raises:
            QueryTimeout: no answer in time.
            KRPCError: the node answered with an error.
            OSError: the host name does not resolve.
        """
        node = self._node

        async def ping() -> ResponseMessage:
            return await node.ping(await resolve_address(address), timeout=timeout)

        return self._runner.call(ping)

    def find_node(self, target: bytes) -> list[Contact]:
        """Run an iterative ``find_node`` lookup; return the closest contacts that answered."""
        node = self._node
        return self._runner.call(lambda: node.find_node(target))

    def sample_infohashes(self, address: Address, target: bytes | None = None) -> ResponseMessage:
        """Ask one node for a sample of the infohashes it stores (BEP 51).

        Raises:
            QueryTimeout, KRPCError: as :meth:`ping`.
        """
        node = self._node

        async def sample() -> ResponseMessage:
            return await node.sample_infohashes(await resolve_address(address), target)

        return self._runner.call(sample)

    def get_peers(self, info_hash: bytes, *, timeout: float | None = DEFAULT_LOOKUP_TIMEOUT) -> list[Address]:
        """Look up the peers of ``info_hash`` and return them once the lookup ends.

        Args:
            info_hash: the 20-byte infohash (:func:`~mainline_dht.parse_target`
                turns hex, base32 or a magnet link into one).
            timeout: seconds after which the lookup is stopped and the peers
                found so far are returned; ``None``: no limit.

        Returns:
            The ``(ip, port)`` of each peer, once, in arrival order; empty when
            the lookup found none.

        Raises:
            LocalProtocolError: ``info_hash`` is not 20 bytes.
        """
        node = self._node
        deadline = _deadline_after(timeout)

        async def collect() -> list[Address]:
            peers: list[Address] = []
            with trio.move_on_after(deadline):
                async with node.get_peers(info_hash) as stream:
                    async for peer in stream:
                        peers.append(peer)
            return peers

        return self._runner.call(collect)

    def announce(self, info_hash: bytes, port: int | None = None) -> int:
        """Announce that we are a peer for ``info_hash`` (BEP 5 ``announce_peer``).

        Runs a ``get_peers`` lookup, then announces to the closest nodes that
        answered it, each with the token it gave us. A client re-announces about
        every 15 to 30 minutes: nodes forget peers that stay silent.

        Args:
            info_hash: the 20-byte infohash.
            port: the TCP/uTP port our peer listens on; ``None`` asks the
                receivers to use our UDP source port (``implied_port``).

        Returns:
            How many nodes accepted the announce (0: none did, or none was found).

        Raises:
            LocalProtocolError: bad infohash or port.
        """
        node = self._node
        return self._runner.call(lambda: node.announce(info_hash, port))

    def iter_peers(self, info_hash: bytes, *, timeout: float | None = DEFAULT_LOOKUP_TIMEOUT) -> PeerIterator:
        """Look up the peers of ``info_hash``, yielding each as soon as a reply carries it.

        The lookup starts at once and runs while the caller iterates (up to
        :data:`PEER_BUFFER` peers wait for a slow reader). ``close()`` on the
        iterator, or leaving its ``with`` block, stops the lookup and returns once
        it has stopped; an iterator dropped unfinished stops its lookup too. Its
        :attr:`~PeerIterator.stats` hold the lookup's figures.

        Usage::

            with node.iter_peers(info_hash) as peers:
                for ip, port in peers:
                    ...

        Args:
            info_hash: the 20-byte infohash.
            timeout: seconds after which the lookup is stopped and the iteration
                ends; ``None``: no limit.

        Raises:
            LocalProtocolError: ``info_hash`` is not 20 bytes.
            NodeClosedError: the node is closed (also raised by the iterator
                when the node is closed during the iteration).
        """
        if type(info_hash) is not bytes or len(info_hash) != 20:
            raise LocalProtocolError("info_hash must be 20 bytes")
        deadline = _deadline_after(timeout)
        feed = _PeerFeed()
        self._runner.start_task(functools.partial(_start_feed, feed, self._node, info_hash, deadline))
        return PeerIterator(self._runner, feed)


@final
class PeerIterator:
    """The peers of one :meth:`Node.iter_peers` lookup, each once, as they arrive.

    Iterating blocks until the next peer arrives or the lookup ends. It is meant
    for one reading thread at a time.
    """

    def __init__(self, runner: _Runner, feed: _PeerFeed) -> None:
        self._runner = runner
        self._feed = feed
        self._finished = False

    def __iter__(self) -> PeerIterator:
        return self

    def __next__(self) -> Address:
        if self._finished:
            raise StopIteration
        feed = self._feed
        assert feed.receive is not None
        try:
            return self._runner.call(feed.receive.receive)
        except trio.EndOfChannel:
            self._finished = True
            if feed.error is not None:
                raise feed.error from None
            raise StopIteration from None
        except BaseException:
            self.close()
            raise

    @property
    def stats(self) -> LookupStats:
        """A copy of the lookup's figures: live while it runs, final once it has ended.

        ``stats.replies == 0`` after the lookup tells an unreachable network from
        a torrent without peers.
        """
        feed = self._feed
        if feed.final_stats is not None:
            return feed.final_stats

        def copy() -> LookupStats:
            stream = feed.stream
            return LookupStats() if stream is None else dataclasses.replace(stream.stats)

        try:
            return self._runner.call_sync(copy)
        except NodeClosedError:
            if feed.final_stats is not None:  # the node closed in the meantime
                return feed.final_stats
            raise

    def close(self) -> None:
        """Stop the lookup (if it still runs) and wait until it has stopped. Idempotent."""
        self._finished = True
        runner, feed = self._runner, self._feed
        assert feed.scope is not None
        runner.cancel_soon(feed.scope)
        if not runner.closed and threading.current_thread() is not runner.thread:
            try:
                runner.call(feed.done.wait)
            except NodeClosedError:
                pass  # closing the node stopped the lookup too

    def __enter__(self) -> PeerIterator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped unfinished (a ``break`` out of the loop, say): stop the lookup
        # without waiting, since this may run in any thread, the node's own included.
        if not self._finished and self._feed.scope is not None:
            self._runner.cancel_soon(self._feed.scope)


class _PeerFeed:
    """The trio half of one ``iter_peers``: a bounded channel filled by a lookup task."""

    def __init__(self) -> None:
        self.receive: trio.MemoryReceiveChannel[Address] | None = None
        self.scope: trio.CancelScope | None = None
        self.error: BaseException | None = None
        self.stream: PeerStream | None = None
        #: A copy of the lookup's figures once it has ended (read from any thread).
        self.final_stats: LookupStats | None = None
        self.done = trio.Event()


def _start_feed(feed: _PeerFeed, node: DHTNode, info_hash: bytes, deadline: float, tasks: trio.Nursery) -> None:
    """Start the lookup task of ``feed`` (called in the node's thread).

    The task outlives this call (it runs while the caller iterates), so it runs
    in the runner's nursery; it ends when the lookup ends, when the feed's scope
    is cancelled, or when the node closes.
    """
    send, receive = trio.open_memory_channel[Address](PEER_BUFFER)
    feed.receive = receive
    feed.scope = trio.CancelScope(relative_deadline=deadline)

    async def run() -> None:
        assert feed.scope is not None
        try:
            async with send:
                with feed.scope:
                    async with node.get_peers(info_hash) as stream:
                        feed.stream = stream
                        async for peer in stream:
                            await send.send(peer)
        except trio.BrokenResourceError:
            pass  # the reader went away
        except Exception as exc:  # for the reader, in its own thread
            feed.error = _collapse(exc)
        finally:
            if feed.stream is not None:
                feed.final_stats = dataclasses.replace(feed.stream.stats)
            feed.done.set()

    tasks.start_soon(run)


def _deadline_after(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be >= 0 or None, not {timeout}")
    return timeout
