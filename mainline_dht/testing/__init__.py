"""Test and simulation helpers for code built on mainline-dht.

Re-exports only; the in-memory network lives in :mod:`mainline_dht.testing._memory_net`.
Nothing here sends real network traffic.
"""

from __future__ import annotations

from ._memory_net import LinkModel as LinkModel
from ._memory_net import MemoryNetwork as MemoryNetwork
from ._memory_net import MemoryTransport as MemoryTransport
from ._memory_net import NetworkStats as NetworkStats
from ._memory_net import Packet as Packet
from ._memory_net import open_memory_network as open_memory_network

__all__ = [
    "LinkModel",
    "MemoryNetwork",
    "MemoryTransport",
    "NetworkStats",
    "Packet",
    "open_memory_network",
]
