"""Bencoding: the only module that touches a bencode library.

Owns: turning Python values into bencoded bytes, and bytes into values.

Two decoders on purpose:

* :func:`decode_untrusted` is for bytes from the network. It uses fastbencode's
  strict decoder (Rust), which rejects every malformed input we know of, in time
  linear in the input. bencode.py is never given untrusted bytes: version 4.1.0
  loops forever on ``d1:a1:b-6:`` (a negative string length walks its cursor
  backwards) and accepts ``i+5e``, ``i 5e``, ``i1_0e``, ``1_0:`` lengths and
  unsorted or duplicate keys.
* :func:`decode_trusted` is for files we wrote ourselves; it uses bencode.py (the
  library the project standardised on) and still raises only :class:`DecodeError`.

:func:`encode` uses fastbencode as well: ``tools/bench_codec.py`` shows bencode.py's
encoder costs about 3x as much per message on the serving hot path. Both produce
canonical output (sorted keys), which the tests check.

Whatever the input, the only exception that escapes a decoder is
:class:`~mainline_dht.errors.DecodeError`.

fastbencode itself decodes a datagram nested thousands deep (64 KiB of ``l``)
without complaint, and any recursive code that later touched the result
(``repr``, ``==``, an f-string) would raise :class:`RecursionError`.
:func:`decode_untrusted` therefore refuses values nested deeper than
:data:`MAX_DEPTH`. Callers should still read only the keys they know.
"""

from __future__ import annotations

from typing import Any

import bencodepy
import fastbencode

from ..errors import DecodeError

__all__ = [
    "encode",
    "encode_trusted_file",
    "decode_untrusted",
    "decode_trusted",
    "value_end_untrusted",
    "MAX_DATAGRAM",
    "MAX_DEPTH",
    "MAX_LENGTH_DIGITS",
]

#: The largest datagram we try to decode (bytes). A UDP payload cannot exceed
#: 65,507 bytes over IPv4; KRPC messages are a few hundred bytes.
MAX_DATAGRAM = 65_536

#: The deepest nesting :func:`decode_untrusted` accepts, counting the outermost
#: container as 1. KRPC needs 3 (message dict > ``a``/``r`` dict > ``values`` or
#: ``want`` list); libtorrent 2.1 drops messages nested 10 deep (fixtures/README.md).
MAX_DEPTH = 32

#: The most digits :func:`value_end_untrusted` reads in a string length or an
#: integer: 20 covers every 64-bit value; no message we parse comes near it.
MAX_LENGTH_DIGITS = 20

_bdecode = fastbencode.bdecode

_bencodepy = bencodepy.Bencode(encoding=None, encoding_fallback=None, dict_ordered=True, dict_ordered_sort=True)


def encode(value: Any) -> bytes:
    """Encode ``value`` (dict/list/int/bytes, possibly nested) as canonical bencode.

    Raises:
        TypeError: ``value`` holds something bencode cannot represent (a caller bug).
    """
    try:
        return fastbencode.bencode(value)  # type: ignore[no-any-return]
    except (ValueError, TypeError) as exc:
        raise TypeError(f"cannot bencode {type(value).__name__}: {exc}") from None


def encode_trusted_file(value: Any) -> bytes:
    """Encode ``value`` with bencode.py, for files we keep on disk."""
    return _bencodepy.encode(value)  # type: ignore[no-any-return]


def decode_untrusted(data: bytes, *, max_size: int = MAX_DATAGRAM) -> Any:
    """Decode bytes from the network, strictly.

    Rejects trailing bytes, unsorted or duplicate dict keys, non-bytes keys,
    leading zeros, ``-0``, signs and separators inside integers, and nesting
    deeper than :data:`MAX_DEPTH`.

    Args:
        data: the bytes, which must hold exactly one value.
        max_size: the longest input accepted, in bytes: a datagram by default;
            a torrent's info dictionary (BEP 9) passes its own, larger cap.

    Raises:
        DecodeError: on any malformed or oversized input (and nothing else).
    """
    if len(data) > max_size:
        raise DecodeError(f"input of {len(data)} bytes is larger than {max_size}")
    # Every level of nesting closes with its own b"e", so most datagrams skip the checks.
    deep = data.count(b"e") > MAX_DEPTH
    if deep:
        # Refuse deep nesting before decoding it: fastbencode builds 20,000 nested
        # lists from 40 KB of b"l...e" (46 ms, and as long again to free them),
        # where this bounded scan stops at level MAX_DEPTH + 1 (tools/hostile.py).
        if _nested_too_deep(data):
            raise DecodeError(f"bencode nested deeper than {MAX_DEPTH}")
    # _decode_strict, inlined: this runs for every datagram a node receives.
    try:
        value = _bdecode(data)
    except RecursionError:
        raise DecodeError("bencode nesting too deep") from None
    except Exception as exc:  # the decoder's own errors: ValueError, TypeError, ...
        raise DecodeError(f"invalid bencode: {exc}") from None
    if deep:
        _check_depth(value)
    return value


def value_end_untrusted(data: bytes, start: int = 0) -> int:
    """Return the index just past the one bencoded value that begins at ``start``.

    For messages that put raw bytes after a bencoded value, such as BEP 9's
    ``ut_metadata`` data message (a dictionary, then the piece). This only finds
    the boundary: it checks the framing (string lengths, ``i...e`` and ``e``
    closers, nesting up to :data:`MAX_DEPTH`), not canonical form, so pass
    ``data[start:end]`` to :func:`decode_untrusted` to get the value.

    Bounded: one pass over at most ``len(data) - start`` bytes, no recursion,
    numbers of at most :data:`MAX_LENGTH_DIGITS` digits.

    Raises:
        DecodeError: the bytes from ``start`` do not begin with a complete value.
    """
    n = len(data)
    i = start
    depth = 0
    while True:
        if i >= n:
            raise DecodeError("bencoded value is truncated")
        c = data[i]
        if c == 0x64 or c == 0x6C:  # d, l
            depth += 1
            if depth > MAX_DEPTH:
                raise DecodeError(f"bencode nested deeper than {MAX_DEPTH}")
            i += 1
            continue
        if c == 0x65:  # e
            if depth == 0:
                raise DecodeError(f"unexpected 'e' at offset {i}")
            depth -= 1
            i += 1
        elif c == 0x69:  # i
            close = data.find(b"e", i + 1, i + 2 + MAX_LENGTH_DIGITS)
            if close < 0 or close == i + 1:
                raise DecodeError(f"malformed integer at offset {i}")
            i = close + 1
        elif 0x30 <= c <= 0x39:  # a string: <length>:<bytes>
            colon = data.find(b":", i, i + 1 + MAX_LENGTH_DIGITS)
            digits = data[i:colon] if colon >= 0 else b""
            if not digits.isdigit():
                raise DecodeError(f"malformed string length at offset {i}")
            i = colon + 1 + int(digits)
            if i > n:
                raise DecodeError("bencoded string is truncated")
        else:
            raise DecodeError(f"unexpected byte {c:#04x} at offset {i}")
        if depth == 0:
            return i


def _nested_too_deep(data: bytes) -> bool:
    """Whether the first value in ``data`` opens more than MAX_DEPTH containers.

    A bounded scan that stops at the first container past the limit; anything
    malformed answers ``False`` and is left to the decoder to reject.
    """
    n = len(data)
    i = 0
    depth = 0
    find = data.find
    while i < n:
        c = data[i]
        if c == 0x64 or c == 0x6C:  # d, l
            depth += 1
            if depth > MAX_DEPTH:
                return True
            i += 1
        elif c == 0x65:  # e
            depth -= 1
            if depth <= 0:
                return False
            i += 1
        elif c == 0x69:  # i...e
            i = find(b"e", i + 1)
            if i < 0 or depth == 0:
                return False
            i += 1
        elif 0x30 <= c <= 0x39:  # <length>:<bytes>
            colon = find(b":", i, i + 1 + MAX_LENGTH_DIGITS)
            if colon < 0 or depth == 0 or not data[i:colon].isdigit():
                return False
            i = colon + 1 + int(data[i:colon])
        else:
            return False
    return False


def _check_depth(value: Any) -> None:
    """Raise DecodeError if ``value`` nests deeper than MAX_DEPTH (iteratively: no recursion)."""
    if type(value) is not list and type(value) is not dict:
        return
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        for child in children:
            if type(child) is list or type(child) is dict:
                if depth >= MAX_DEPTH:
                    raise DecodeError(f"bencode nested deeper than {MAX_DEPTH}")
                stack.append((child, depth + 1))


def _decode_strict(data: bytes) -> Any:
    try:
        return fastbencode.bdecode(data)
    except RecursionError:
        raise DecodeError("bencode nesting too deep") from None
    except Exception as exc:  # the decoder's own errors: ValueError, TypeError, ...
        raise DecodeError(f"invalid bencode: {exc}") from None


def decode_trusted(data: bytes) -> Any:
    """Decode bytes we wrote ourselves (a state file), with bencode.py.

    The file may still be damaged or foreign, so this validates what it can:
    the input must be non-empty, well-formed and fully consumed.

    Raises:
        DecodeError: on any malformed input.
    """
    # bencode.py may walk backwards on a negative length: let the strict decoder
    # vet the bytes first, so a damaged file can never hang us either.
    _decode_strict(data)
    try:
        return _bencodepy.decode(data)
    except RecursionError:
        raise DecodeError("bencode nesting too deep") from None
    except Exception as exc:
        raise DecodeError(f"invalid bencode: {exc}") from None

