"""Mapping the DHT: the crawler, its storage and the network-size estimate.

- :mod:`.policy`: whom to ask next, what and when (pure: no I/O, time as ``now``).
- :mod:`.estimate`: the node count from the ID density around random targets (pure).
- :mod:`.store`: the storage interface and ``--db`` strings; :mod:`.sqlite_store`: SQLite.
- :mod:`.crawler`: the trio side, :func:`~.crawler.crawl`, on a running node's public API.
"""

from __future__ import annotations
