"""mainline-dht: the BitTorrent Mainline DHT (BEP 5) for Python, on trio.

The public API is re-exported here. The protocol logic (messages, routing
table, tokens, peer store, lookups) lives in I/O-free modules; :mod:`.node` is
the one trio layer on top. :mod:`mainline_dht.testing` has an in-memory network
for tests and simulations.
"""

from __future__ import annotations

from ._version import __version__ as __version__
from .contact import Address as Address
from .contact import Contact as Contact
from .contact import distance as distance
from .errors import BootstrapError as BootstrapError
from .errors import DecodeError as DecodeError
from .errors import DHTError as DHTError
from .errors import KRPCError as KRPCError
from .errors import LocalProtocolError as LocalProtocolError
from .errors import QueryTimeout as QueryTimeout
from .errors import StateFileError as StateFileError
from .events import ExternalAddressChanged as ExternalAddressChanged
from .events import PeerAnnounced as PeerAnnounced
from .krpc import AnnouncePeer as AnnouncePeer
from .krpc import ErrorCode as ErrorCode
from .krpc import FindNode as FindNode
from .krpc import GetPeers as GetPeers
from .krpc import Ping as Ping
from .krpc import ResponseMessage as ResponseMessage
from .krpc import SampleInfohashes as SampleInfohashes
from .lookup import Lookup as Lookup
from .lookup import LookupStats as LookupStats
from .node import DEFAULT_BOOTSTRAP as DEFAULT_BOOTSTRAP
from .node import DEFAULT_PORT as DEFAULT_PORT
from .node import DHTNode as DHTNode
from .node import NodeStats as NodeStats
from .node import PeerStream as PeerStream
from .node import open_node as open_node
from .node import parse_address as parse_address
from .node import resolve_address as resolve_address
from .node import serve_node as serve_node
from .protocol import NodeConfig as NodeConfig
from .protocol import NodeProtocol as NodeProtocol
from .target import TargetError as TargetError
from .target import parse_target as parse_target
from .transport import DatagramTransport as DatagramTransport
from .transport import UDPTransport as UDPTransport
from .transport import open_udp_transport as open_udp_transport

__all__ = [
    "__version__",
    "Address",
    "Contact",
    "distance",
    "DHTError",
    "DecodeError",
    "LocalProtocolError",
    "KRPCError",
    "QueryTimeout",
    "BootstrapError",
    "StateFileError",
    "PeerAnnounced",
    "ExternalAddressChanged",
    "AnnouncePeer",
    "ErrorCode",
    "FindNode",
    "GetPeers",
    "Ping",
    "ResponseMessage",
    "SampleInfohashes",
    "Lookup",
    "LookupStats",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_PORT",
    "DHTNode",
    "NodeStats",
    "PeerStream",
    "open_node",
    "parse_address",
    "resolve_address",
    "serve_node",
    "NodeConfig",
    "NodeProtocol",
    "TargetError",
    "parse_target",
    "DatagramTransport",
    "UDPTransport",
    "open_udp_transport",
]
