"""The DHT without I/O: node IDs (BEP 42), the routing table, tokens, the peer
store, rate limits, external-address votes, lookups and the node's protocol
core. Time arrives as ``now`` and randomness as an ``rng``.

No module here imports trio, asyncio, socket, time or os.
"""
