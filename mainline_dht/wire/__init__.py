"""Bytes to values and back: bencode (strict and bounded for untrusted input),
KRPC messages, compact node and peer formats, and targets (hex, base32, magnet).

No module here imports trio, asyncio, socket, time or os.
"""
