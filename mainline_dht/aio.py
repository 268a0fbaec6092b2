"""The DHT node for asyncio programs: ``async with mainline_dht.aio.open_node(...) as node``.

The same I/O-free core as the trio node (:mod:`mainline_dht.core`), driven by
asyncio's event loop: it imports no trio and runs under ``asyncio.run``. See
:mod:`mainline_dht.runtime.aio` for the details.

Example::

    import asyncio
    from mainline_dht import aio

    async def main() -> None:
        async with aio.open_node(("0.0.0.0", 6881), bootstrap=[("127.0.0.1", 6881)]) as node:
            await node.bootstrap()
            async with node.get_peers(info_hash) as peers:
                async for ip, port in peers:
                    print(ip, port)
            print(peers.stats.elapsed)      # the lookup's figures
            await node.announce(info_hash, port=51413)

    asyncio.run(main())
"""

from __future__ import annotations

from .runtime.aio import AsyncioNode as AsyncioNode
from .runtime.aio import PeerStream as PeerStream
from .runtime.aio import open_node as open_node
from .runtime.aio import resolve_address as resolve_address
from .runtime.common import DEFAULT_BOOTSTRAP as DEFAULT_BOOTSTRAP
from .runtime.common import DEFAULT_PORT as DEFAULT_PORT
from .runtime.common import NodeStats as NodeStats

__all__ = ["AsyncioNode", "PeerStream", "open_node", "resolve_address", "DEFAULT_BOOTSTRAP", "DEFAULT_PORT", "NodeStats"]
