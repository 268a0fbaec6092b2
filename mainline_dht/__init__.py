"""mainline-dht: the BitTorrent Mainline DHT (BEP 5) for Python, on trio.

The public API is re-exported here. The protocol logic (messages, routing
table, tokens, peer store, lookups) lives in I/O-free modules; :mod:`.node` is
the one trio layer on top; :mod:`mainline_dht.aio` is the same node on asyncio,
and :mod:`mainline_dht.blocking` runs the trio node on a background thread for
programs built on threads. :mod:`mainline_dht.testing` has an in-memory network
for tests and simulations.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .wire.contact import Address as Address
from .wire.contact import Contact as Contact
from .wire.contact import distance as distance
from .errors import BootstrapError as BootstrapError
from .errors import DecodeError as DecodeError
from .errors import DHTError as DHTError
from .errors import KRPCError as KRPCError
from .errors import LocalProtocolError as LocalProtocolError
from .errors import MetadataNotFound as MetadataNotFound
from .errors import PeerProtocolError as PeerProtocolError
from .errors import NodeClosedError as NodeClosedError
from .errors import QueryTimeout as QueryTimeout
from .errors import StateFileError as StateFileError
from .core.events import ExternalAddressChanged as ExternalAddressChanged
from .core.events import InfohashQueried as InfohashQueried
from .core.events import PeerAnnounced as PeerAnnounced
from .wire.krpc import AnnouncePeer as AnnouncePeer
from .wire.krpc import ErrorCode as ErrorCode
from .wire.krpc import FindNode as FindNode
from .wire.krpc import GetPeers as GetPeers
from .wire.krpc import Ping as Ping
from .wire.krpc import ResponseMessage as ResponseMessage
from .wire.krpc import SampleInfohashes as SampleInfohashes
from .core.lookup import Lookup as Lookup
from .core.lookup import LookupStats as LookupStats
from .runtime.common import DEFAULT_BOOTSTRAP as DEFAULT_BOOTSTRAP
from .runtime.common import DEFAULT_PORT as DEFAULT_PORT
from .runtime.common import NodeStats as NodeStats
from .runtime.common import parse_address as parse_address
from .core.protocol import NodeConfig as NodeConfig
from .core.items import FoundItem as FoundItem
from .core.items import ImmutableItem as ImmutableItem
from .core.items import MutableItem as MutableItem
from .core.items import public_key_for as public_key_for
from .core.scrape import BloomFilter as BloomFilter
from .core.scrape import ScrapeEstimate as ScrapeEstimate
from .core.protocol import NodeProtocol as NodeProtocol
from .wire.target import TargetError as TargetError
from .wire.target import parse_target as parse_target
from .wire.target import Target as Target
from .wire.target import parse_target_hashes as parse_target_hashes
from .crawl.estimate import SizeEstimate as SizeEstimate
from .crawl.estimate import estimate_size as estimate_size
from .crawl.policy import CrawlLimits as CrawlLimits
from .crawl.store import CrawlStore as CrawlStore
from .crawl.store import StoreError as StoreError
from .crawl.store import open_store as open_store

# Importing the crawl package bound its name here; ``crawl`` is the function
# (mainline_dht.crawl.crawler.crawl, a trio API, loaded on first use below).
del crawl  # noqa: F821


# The trio layer (and what is built on it) is imported on first use, so that an
# asyncio program (``mainline_dht.aio``) or one using the I/O-free core never
# imports trio.
if TYPE_CHECKING:
    from .runtime.node import DHTNode as DHTNode
    from .runtime.node import PeerStream as PeerStream
    from .runtime.node import open_node as open_node
    from .runtime.node import resolve_address as resolve_address
    from .runtime.node import resolve_addresses as resolve_addresses
    from .runtime.node import serve_node as serve_node
    from .runtime.items import GetResult as GetResult
    from .runtime.items import PutResult as PutResult
    from .metadata import FetchStats as FetchStats
    from .metadata import FileEntry as FileEntry
    from .metadata import TorrentInfo as TorrentInfo
    from .metadata import fetch_metadata as fetch_metadata
    from .metadata import fetch_metadata_from_peers as fetch_metadata_from_peers
    from .runtime.transport import DatagramTransport as DatagramTransport
    from .runtime.transport import UDPTransport as UDPTransport
    from .runtime.transport import open_udp_transport as open_udp_transport
    from .crawl.crawler import Crawl as Crawl
    from .crawl.crawler import CrawlStats as CrawlStats
    from .crawl.crawler import InfohashFound as InfohashFound
    from .crawl.crawler import NodeFound as NodeFound
    from .crawl.crawler import crawl as crawl

_LAZY: dict[str, str] = {
    "DHTNode": "mainline_dht.runtime.node",
    "PeerStream": "mainline_dht.runtime.node",
    "open_node": "mainline_dht.runtime.node",
    "resolve_address": "mainline_dht.runtime.node",
    "resolve_addresses": "mainline_dht.runtime.node",
    "serve_node": "mainline_dht.runtime.node",
    "GetResult": "mainline_dht.runtime.items",
    "PutResult": "mainline_dht.runtime.items",
    "FetchStats": "mainline_dht.metadata",
    "FileEntry": "mainline_dht.metadata",
    "TorrentInfo": "mainline_dht.metadata",
    "fetch_metadata": "mainline_dht.metadata",
    "fetch_metadata_from_peers": "mainline_dht.metadata",
    "DatagramTransport": "mainline_dht.runtime.transport",
    "UDPTransport": "mainline_dht.runtime.transport",
    "open_udp_transport": "mainline_dht.runtime.transport",
    "Crawl": "mainline_dht.crawl.crawler",
    "CrawlStats": "mainline_dht.crawl.crawler",
    "InfohashFound": "mainline_dht.crawl.crawler",
    "NodeFound": "mainline_dht.crawl.crawler",
    "crawl": "mainline_dht.crawl.crawler",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "MetadataNotFound",
    "PeerProtocolError",
    "NodeClosedError",
    "PeerAnnounced",
    "InfohashQueried",
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
    "resolve_addresses",
    "serve_node",
    "NodeConfig",
    "FoundItem",
    "ImmutableItem",
    "MutableItem",
    "public_key_for",
    "BloomFilter",
    "ScrapeEstimate",
    "GetResult",
    "PutResult",
    "NodeProtocol",
    "TargetError",
    "parse_target",
    "Target",
    "parse_target_hashes",
    "FetchStats",
    "FileEntry",
    "TorrentInfo",
    "fetch_metadata",
    "fetch_metadata_from_peers",
    "DatagramTransport",
    "UDPTransport",
    "open_udp_transport",
    "crawl",
    "Crawl",
    "CrawlStats",
    "CrawlLimits",
    "NodeFound",
    "InfohashFound",
    "SizeEstimate",
    "estimate_size",
    "CrawlStore",
    "StoreError",
    "open_store",
]
