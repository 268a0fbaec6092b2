"""Fetching a torrent's info dictionary from its peers (BEP 9 over BEP 10).

* :mod:`.peer_wire`: handshake, message framing, extension handshake and
  ``ut_metadata`` messages, without I/O.
* :mod:`.pool`: which piece to ask which peer for; assembly and hash check,
  without I/O.
* :mod:`.info`: :class:`TorrentInfo`, reading an info dictionary, writing a
  ``.torrent``, without I/O.
* :mod:`.fetcher`: the trio TCP layer, :func:`fetch_metadata`.
* :mod:`.harvest`: :class:`MetadataHarvester`, many fetches at a bounded rate (crawlers).
"""

from __future__ import annotations

from .fetcher import FetchStats as FetchStats
from .fetcher import fetch_metadata as fetch_metadata
from .fetcher import fetch_metadata_from_peers as fetch_metadata_from_peers
from .harvest import HarvestStats as HarvestStats
from .harvest import MetadataHarvester as MetadataHarvester
from .info import DEFAULT_MAX_METADATA_SIZE as DEFAULT_MAX_METADATA_SIZE
from .info import FileEntry as FileEntry
from .info import TorrentInfo as TorrentInfo
from .info import encode_torrent_file as encode_torrent_file
from .info import parse_info_untrusted as parse_info_untrusted

__all__ = [
    "FetchStats",
    "fetch_metadata",
    "fetch_metadata_from_peers",
    "HarvestStats",
    "MetadataHarvester",
    "DEFAULT_MAX_METADATA_SIZE",
    "FileEntry",
    "TorrentInfo",
    "encode_torrent_file",
    "parse_info_untrusted",
]
