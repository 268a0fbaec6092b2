"""Measure ed25519 sign and verify cost in the libraries BEP 44 could use.

Prints µs per operation (median of several rounds) for ``cryptography`` and
PyNaCl, over a BEP 44-sized signed buffer (a salt, a sequence number and a
1,000-byte value). Either library may be missing; it is then reported as such.

Usage::

    python tools/bench_ed25519.py [--rounds 7] [--ops 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

MESSAGE = b"4:salt6:foobar3:seqi42e1:v1000:" + bytes(range(256)) * 3 + bytes(232)
SEED = bytes(range(32))


def _time(fn: Callable[[], object], ops: int, rounds: int) -> float:
    """Median µs per call of ``fn`` over ``rounds`` rounds of ``ops`` calls."""
    per_op = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(ops):
            fn()
        per_op.append((time.perf_counter() - start) / ops * 1e6)
    return statistics.median(per_op)


def bench_cryptography(ops: int, rounds: int) -> tuple[float, float, float] | None:
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    except ImportError:
        return None
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub_raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sig = key.sign(MESSAGE)

    def verify() -> None:
        # As a storing node does: the key arrives as 32 raw bytes with each put.
        Ed25519PublicKey.from_public_bytes(pub_raw).verify(sig, MESSAGE)

    return _time(lambda: key.sign(MESSAGE), ops, rounds), _time(verify, ops, rounds), _time(
        lambda: Ed25519PrivateKey.from_private_bytes(SEED), ops, rounds
    )


def bench_pynacl(ops: int, rounds: int) -> tuple[float, float, float] | None:
    try:
        from nacl.signing import SigningKey, VerifyKey
    except ImportError:
        return None
    key = SigningKey(SEED)
    pub_raw = bytes(key.verify_key)
    sig = key.sign(MESSAGE).signature

    def verify() -> None:
        VerifyKey(pub_raw).verify(MESSAGE, sig)

    return _time(lambda: key.sign(MESSAGE), ops, rounds), _time(verify, ops, rounds), _time(
        lambda: SigningKey(SEED), ops, rounds
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    print(f"ed25519 over a {len(MESSAGE)}-byte BEP 44 buffer; median of {args.rounds} x {args.ops} ops")
    print(f"{'library':<14}{'version':<10}{'sign µs':>10}{'verify µs':>12}{'key from seed µs':>18}")
    for name, bench, module in (
        ("cryptography", bench_cryptography, "cryptography"),
        ("PyNaCl", bench_pynacl, "nacl"),
    ):
        result = bench(args.ops, args.rounds)
        if result is None:
            print(f"{name:<14}not installed")
            continue
        version = __import__(module).__version__
        sign, verify, keygen = result
        print(f"{name:<14}{version:<10}{sign:>10.1f}{verify:>12.1f}{keygen:>18.1f}")


if __name__ == "__main__":
    main()
