"""Test and simulation helpers for code built on mainline-dht.

Re-exports only: the in-memory network (:mod:`._memory_net`) and whole-network
scenarios on it (:mod:`._sim`). The libtorrent loopback harness is not part of
the package: it lives in the repository's ``tools/libtorrent_net.py``.
Nothing here sends real network traffic.
"""

from __future__ import annotations

from ._memory_net import LinkModel as LinkModel
from ._memory_net import MemoryNetwork as MemoryNetwork
from ._memory_net import MemoryTransport as MemoryTransport
from ._memory_net import NetworkStats as NetworkStats
from ._memory_net import Packet as Packet
from ._memory_net import open_memory_network as open_memory_network
from ._sim import LookupOutcome as LookupOutcome
from ._sim import Scenario as Scenario
from ._sim import ScenarioResult as ScenarioResult
from ._sim import SimNetwork as SimNetwork
from ._sim import open_sim_network as open_sim_network
from ._sim import prefill_tables as prefill_tables
from ._sim import run_scenario as run_scenario

__all__ = [
    "LinkModel",
    "MemoryNetwork",
    "MemoryTransport",
    "NetworkStats",
    "Packet",
    "open_memory_network",
    "LookupOutcome",
    "Scenario",
    "ScenarioResult",
    "SimNetwork",
    "open_sim_network",
    "prefill_tables",
    "run_scenario",
]
