"""A loopback network of our nodes running on a background thread, for tests of
code that blocks (the thread node, the command line run in-process, programs run
as subprocesses).

The network runs under its own ``trio.run``; :meth:`ThreadedNetwork.run` hands it
async work (announces, say) from the test's thread, and :meth:`ThreadedNetwork.start`
starts a task that serves beside the network until it stops (a fake peer, an extra node).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio

from mainline_dht.runtime.localnet import LocalNetwork, open_local_network
from mainline_dht.wire.contact import Address

T = TypeVar("T")


class ThreadedNetwork:
    """A running :class:`LocalNetwork` and the token to reach its trio thread."""

    def __init__(self, net: LocalNetwork, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self.net = net
        self._token = token
        self._nursery = nursery

    @property
    def bootstrap_address(self) -> Address:
        return self.net.bootstrap_address

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` in the network's trio thread and return its result."""
        async def call() -> T:
            return await fn()

        return trio.from_thread.run(call, trio_token=self._token)

    def start(self, fn: Callable[..., Awaitable[object]], *args: object) -> Any:
        """Start ``fn(*args, task_status=...)`` in the network's thread (``nursery.start``).

        The task runs until the network stops; returns what it passed to ``task_status.started``.
        """
        return self.run(lambda: self._nursery.start(fn, *args))

    def announce(self, i: int, info_hash: bytes, port: int, *, seed: bool = False) -> int:
        """Node ``i`` announces ``info_hash`` on ``port``; returns the accepted count."""
        node = self.net.nodes[i]
        return self.run(lambda: node.announce(info_hash, port, seed=seed))


@contextmanager
def local_network_thread(n: int, *, base: Address, seed: int = 0, ipv6: bool = False) -> Iterator[ThreadedNetwork]:
    """Start ``n`` joined nodes on loopback (see ``open_local_network``) on a thread.

    With ``ipv6`` the nodes are on ``::1`` (``base`` gives only the port). On leaving,
    the tasks :meth:`ThreadedNetwork.start` started are cancelled, then the nodes stop.
    """
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        async with open_local_network(n, base=base, seed=seed, ipv6=ipv6) as net:
            async with trio.open_nursery() as nursery:
                stop = trio.Event()
                box["net"] = ThreadedNetwork(net, trio.lowlevel.current_trio_token(), nursery)
                box["stop"] = stop
                ready.set()
                await stop.wait()
                nursery.cancel_scope.cancel()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="test loopback network", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    threaded = box["net"]
    assert isinstance(threaded, ThreadedNetwork)
    stop = box["stop"]
    assert isinstance(stop, trio.Event)
    try:
        yield threaded
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=threaded._token)
        thread.join(30)
        assert not thread.is_alive()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
