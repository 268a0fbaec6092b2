#!/usr/bin/env python3
"""Benchmark the KRPC codec against bencode.py and fastbencode, side by side.

For five typical DHT messages, prints the microseconds one encode and one decode
take with:

* ``krpc``: ``mainline_dht.wire.krpc.encode_message`` / ``decode_message_untrusted``
  (the full path a datagram takes: bencode plus KRPC validation, typed messages);
* ``bencode``: ``mainline_dht.wire.bencode.encode`` / ``decode_untrusted`` (raw
  dict/list/bytes values, with our strictness and size/depth limits);
* ``bencode.py``: ``bencodepy.encode`` / ``Bencode(encoding=None).decode``
  (the pure-Python library the project otherwise uses);
* ``fastbencode``: ``fastbencode.bencode`` / ``bdecode`` (the Rust decoder
  ``decode_untrusted`` wraps).

The ratio column is each time divided by bencode.py's for the same message and
operation (below 1.00 is faster). Each figure is the best of several timeit
repeats, each repeat long enough (about 20 ms) to swamp timer resolution.

Usage (from the repository root; takes about 15 s)::

    python tools/bench_codec.py [--repeat 7] [--min-time 0.02]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import random
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bencodepy  # type: ignore[import-untyped]  # noqa: E402
import fastbencode  # noqa: E402

from mainline_dht.wire import bencode  # noqa: E402
from mainline_dht.wire.contact import Contact  # noqa: E402
from mainline_dht.wire.krpc import (  # noqa: E402
    ErrorCode,
    ErrorMessage,
    GetPeers,
    Message,
    Ping,
    QueryMessage,
    ResponseMessage,
    decode_message_untrusted,
    encode_message,
)

VERSION = b"MD\x00\x01"

# fastbencode re-exports these from its extension module without ``__all__``.
fb_bencode: Callable[[Any], bytes] = getattr(fastbencode, "bencode")  # noqa: B009
fb_bdecode: Callable[[bytes], Any] = getattr(fastbencode, "bdecode")  # noqa: B009


def typical_messages(rng: random.Random) -> dict[str, Message]:
    """Build the benchmark's messages, sized like live DHT traffic."""

    def node_id() -> bytes:
        return rng.randbytes(20)

    def ipv4() -> str:
        return ".".join(str(rng.randrange(1, 255)) for _ in range(4))

    def port() -> int:
        return rng.randrange(1024, 65536)

    nodes = tuple(Contact(node_id(), (ipv4(), port())) for _ in range(8))
    me = node_id()
    return {
        "ping query": QueryMessage(rng.randbytes(2), me, Ping(), version=VERSION),
        "get_peers query": QueryMessage(rng.randbytes(2), me, GetPeers(node_id()), version=VERSION),
        "find_node response, 8 nodes": ResponseMessage(
            rng.randbytes(2), me, nodes=nodes, ip=(ipv4(), port()), version=VERSION
        ),
        "get_peers response, 50 values + token + 8 nodes": ResponseMessage(
            rng.randbytes(2),
            me,
            nodes=nodes,
            values=tuple((ipv4(), port()) for _ in range(50)),
            token=rng.randbytes(4),
            ip=(ipv4(), port()),
            version=VERSION,
        ),
        "error 203": ErrorMessage(rng.randbytes(2), ErrorCode.PROTOCOL, "invalid token", (ipv4(), port()), VERSION),
    }


def best_seconds(fn: Callable[[], Any], *, repeat: int, min_time: float) -> float:
    """Return the best per-call time (seconds) of ``fn`` over ``repeat`` timed runs."""
    timer = timeit.Timer(fn)
    number = 1
    while timer.timeit(number) < min_time:  # find a loop count that runs >= min_time
        number *= 2
    return min(timer.repeat(repeat=repeat, number=number)) / number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per figure; the best is kept")
    parser.add_argument("--min-time", type=float, default=0.02, help="seconds each timed run lasts at least")
    args = parser.parse_args(argv)

    bencodepy_bytes = bencodepy.Bencode(encoding=None)
    rows: list[tuple[str, str, str, float]] = []
    print(
        f"Python {platform.python_version()} ({platform.machine()}); "
        f"bencode.py {importlib.metadata.version('bencode.py')}, "
        f"fastbencode {importlib.metadata.version('fastbencode')}; "
        f"best of {args.repeat} runs of >= {args.min_time * 1000:.0f} ms each"
    )
    for name, msg in typical_messages(random.Random(0)).items():
        wire = encode_message(msg)
        raw = bencode.decode_untrusted(wire)
        # Every implementation must agree on the bytes before we time it.
        assert bencode.encode(raw) == bencodepy.encode(raw) == fb_bencode(raw) == wire
        assert decode_message_untrusted(wire) == msg
        assert bencodepy_bytes.decode(wire) == fb_bdecode(wire) == raw
        candidates: dict[str, list[tuple[str, Callable[[], Any]]]] = {
            "encode": [
                ("krpc (full)", lambda: encode_message(msg)),
                ("bencode (ours)", lambda: bencode.encode(raw)),
                ("bencode.py", lambda: bencodepy.encode(raw)),
                ("fastbencode", lambda: fb_bencode(raw)),
            ],
            "decode": [
                ("krpc (full)", lambda: decode_message_untrusted(wire)),
                ("bencode (ours)", lambda: bencode.decode_untrusted(wire)),
                ("bencode.py", lambda: bencodepy_bytes.decode(wire)),
                ("fastbencode", lambda: fb_bdecode(wire)),
            ],
        }
        label = f"{name} ({len(wire)} B)"
        for op, timed in candidates.items():
            for impl, fn in timed:
                rows.append((label, op, impl, best_seconds(fn, repeat=args.repeat, min_time=args.min_time)))

    baseline = {(m, op): t for m, op, impl, t in rows if impl == "bencode.py"}
    width = max(len(m) for m, *_ in rows)
    print()
    print(f"{'message':<{width}}  {'op':<6}  {'implementation':<15}  {'us/op':>8}  {'x bencode.py':>12}")
    print("-" * (width + 51))
    previous = ("", "")
    for message, op, impl, seconds in rows:
        if (message, op) != previous and previous != ("", ""):
            print()
        previous = (message, op)
        ratio = seconds / baseline[(message, op)]
        print(f"{message:<{width}}  {op:<6}  {impl:<15}  {seconds * 1e6:8.2f}  {ratio:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
