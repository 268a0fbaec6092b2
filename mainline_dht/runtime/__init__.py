"""The layers that touch the world: UDP transport, the trio node, the thread
node (:mod:`.blocking`), the state file and the loopback test networks. They move bytes and sleep until the
core's next timer; every DHT rule lives in :mod:`mainline_dht.core`.
"""
