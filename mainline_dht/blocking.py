"""``mainline_dht.blocking``: a DHT node for programs built on threads.

:class:`Node` runs the trio node on a background thread and offers blocking
methods that any thread may call; see :mod:`mainline_dht.runtime.blocking`.
"""

from __future__ import annotations

from .errors import NodeClosedError as NodeClosedError
from .runtime.blocking import CLOSE_TIMEOUT as CLOSE_TIMEOUT
from .runtime.blocking import DEFAULT_LOOKUP_TIMEOUT as DEFAULT_LOOKUP_TIMEOUT
from .runtime.blocking import PEER_BUFFER as PEER_BUFFER
from .runtime.blocking import Node as Node
from .runtime.blocking import PeerIterator as PeerIterator

__all__ = ["Node", "PeerIterator", "NodeClosedError", "DEFAULT_LOOKUP_TIMEOUT", "PEER_BUFFER", "CLOSE_TIMEOUT"]
