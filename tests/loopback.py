"""Bind addresses for the nodes a test module runs itself on loopback.

Each module takes a range of its own in 127.0.0.0/8 (127.0.51.x, 127.0.52.x, ...),
so nodes of different modules never share an address: BEP 5 routing tables keep
one entry per IP. Where the system routes only 127.0.0.1 (macOS), every node binds
that, on a port of its own.
"""

from __future__ import annotations

from mainline_dht.runtime.localnet import can_bind
from mainline_dht.wire.contact import Address


class LoopbackRange:
    """``bind(i)`` is ``(f"{prefix}.{first + i}", 0)``, or ``("127.0.0.1", 0)`` where only that is routed."""

    def __init__(self, prefix: str, first: int = 0) -> None:
        self.prefix = prefix
        self.first = first
        #: Whether each node gets an IP of its own (False: all share 127.0.0.1).
        self.spread = can_bind(f"{prefix}.{max(first, 1)}")

    def __call__(self, i: int) -> Address:
        return (f"{self.prefix}.{self.first + i}" if self.spread else "127.0.0.1", 0)
