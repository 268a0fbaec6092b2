"""Tests for mainline_dht.wire.bencode: canonical encoding, strict untrusted decoding.

The regression cases are the inputs that make bencode.py 4.1.0 hang or accept
non-canonical bencode (see the module docstring of mainline_dht.wire.bencode). The
Hypothesis tests check the decoder's one promise: whatever the bytes, it returns
a value or raises DecodeError, and nothing else, in bounded time.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastbencode import _bencode_py
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mainline_dht.wire import bencode
from mainline_dht.wire.bencode import MAX_DATAGRAM, MAX_DEPTH, decode_trusted, decode_untrusted, encode, value_end_untrusted
from mainline_dht.errors import DecodeError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

#: Generous upper bound for "returns promptly": these inputs take microseconds;
#: the bound only turns a hang into a failure instead of a stalled test run.
HANG_GUARD_SECONDS = 30.0

#: The 10-byte datagram on which bencode.py 4.1.0 loops forever (its negative
#: string length walks the cursor backwards).
HANG_DATAGRAM = b"d1:a1:b-6:"


def _outcome_within(fn: Callable[[bytes], Any], data: bytes) -> BaseException | None:
    """Call ``fn(data)`` in a daemon thread; return what it raised (None if it returned).

    Fails the test if the call has not finished after HANG_GUARD_SECONDS.
    """
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            fn(data)
        except BaseException as exc:  # noqa: BLE001 - we report whatever escapes
            result.append(exc)
        else:
            result.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_SECONDS)
    assert result, f"{fn.__name__}({data[:40]!r}) did not return within {HANG_GUARD_SECONDS} s"
    return result[0]


def _depth(value: Any) -> int:
    """Nesting depth of a bencodable value (outermost container = 1), iteratively."""
    best = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            best = max(best, depth)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            best = max(best, depth)
            stack.extend((v, depth + 1) for v in item)
    return best


def _nested_lists(depth: int) -> bytes:
    return b"l" * depth + b"e" * depth


def _nested_dicts(depth: int) -> bytes:
    return b"d1:a" * (depth - 1) + b"de" + b"e" * (depth - 1)


# --- encoding ------------------------------------------------------------------------


def test_encode_scalars() -> None:
    assert encode(0) == b"i0e"
    assert encode(-42) == b"i-42e"
    assert encode(2**100) == b"i1267650600228229401496703205376e"
    assert encode(b"") == b"0:"
    assert encode(b"spam") == b"4:spam"
    assert encode([]) == b"le"
    assert encode({}) == b"de"


def test_encode_sorts_keys_canonically() -> None:
    value = {b"y": b"q", b"t": b"aa", b"a": {b"id": b"x" * 20}, b"q": b"ping"}
    assert encode(value) == b"d1:ad2:id20:xxxxxxxxxxxxxxxxxxxxe1:q4:ping1:t2:aa1:y1:qe"
    # Keys sort as raw bytes, not as text: b"Z" (0x5a) < b"a" (0x61) < b"aa" < b"b".
    assert encode({b"b": 1, b"aa": 2, b"a": 3, b"Z": 4}) == b"d1:Zi4e1:ai3e2:aai2e1:bi1ee"


def test_trusted_file_encoder_is_canonical_too() -> None:
    value = {b"nodes": [b"x" * 26, b"y" * 26], b"id": b"z" * 20, b"version": 1, b"A": {b"b": 0, b"a": -1}}
    assert bencode.encode_trusted_file(value) == encode(value)


@pytest.mark.parametrize("value", ["text", 1.5, None, {"str-key": 1}, {1: 2}, bytearray(b"x"), [object()]])
def test_encode_rejects_unbencodable_values_with_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        encode(value)


# --- decoding valid input ------------------------------------------------------------


def test_decode_valid_message() -> None:
    data = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
    assert decode_untrusted(data) == {
        b"a": {b"id": b"abcdefghij0123456789"},
        b"q": b"ping",
        b"t": b"aa",
        b"y": b"q",
    }
    assert decode_trusted(data) == decode_untrusted(data)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"i0e", 0),
        (b"i-1e", -1),
        (b"i18446744073709551616e", 2**64),
        (b"i-18446744073709551617e", -(2**64) - 1),
        (b"0:", b""),
        (b"3:\x00\xff:", b"\x00\xff:"),
        (b"le", []),
        (b"de", {}),
        (b"l0:0:e", [b"", b""]),
    ],
)
def test_decode_edge_values(data: bytes, value: Any) -> None:
    assert decode_untrusted(data) == value
    assert encode(value) == data


def test_decode_untrusted_accepts_exactly_max_datagram_bytes() -> None:
    header = b"65530:"
    data = header + b"x" * (MAX_DATAGRAM - len(header))
    assert len(data) == MAX_DATAGRAM
    assert decode_untrusted(data) == b"x" * 65530


def test_nesting_up_to_max_depth_is_accepted() -> None:
    assert _depth(decode_untrusted(_nested_lists(MAX_DEPTH))) == MAX_DEPTH
    assert _depth(decode_untrusted(_nested_dicts(MAX_DEPTH))) == MAX_DEPTH


def test_wide_values_with_many_e_bytes_are_accepted() -> None:
    # Many b"e" bytes (the depth walk's trigger) but shallow nesting.
    value = {b"values": [b"e" * 6] * 200, b"ints": list(range(100)), b"nested": [[[b"eee"]]]}
    data = encode(value)
    assert data.count(b"e") > MAX_DEPTH
    assert decode_untrusted(data) == value


# --- decoding malformed input: regressions ---------------------------------------------

MALFORMED = {
    "bencode.py hang: negative string length": HANG_DATAGRAM,
    "negative length": b"-1:a",
    "int with plus sign": b"i+5e",
    "int with space": b"i 5e",
    "int with trailing space": b"i5 e",
    "int with underscore": b"i1_0e",
    "int empty": b"ie",
    "int minus only": b"i-e",
    "int double minus": b"i--1e",
    "int negative zero": b"i-0e",
    "int leading zero": b"i03e",
    "int unterminated": b"i5",
    "int with decimal point": b"i1.5e",
    "int too many digits for Python": b"i" + b"9" * 5000 + b"e",
    "length with underscore": b"1_0:aaaaaaaaaa",
    "length with plus sign": b"+1:a",
    "length with space": b" 1:a",
    "length with leading zero": b"01:a",
    "length too long": b"5:abc",
    "huge length": b"99999999999:a",
    "length above 2**64": b"18446744073709551617:a",
    "length without colon": b"3abc",
    "unsorted keys": b"d1:bi1e1:ai2ee",
    "duplicate keys": b"d1:ai1e1:ai2ee",
    "int key": b"di1ei2ee",
    "list key": b"dlei1ee",
    "dict key": b"ddei1ee",
    "key without value": b"d1:ae",
    "trailing junk": b"i1ejunk",
    "trailing newline": b"d1:ai1ee\n",
    "two values": b"dede",
    "empty input": b"",
    "only e": b"e",
    "only d": b"d",
    "only l": b"l",
    "only colon": b":",
    "unknown type byte": b"x",
    "http request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "unterminated list": b"li1e",
    "truncated dict": b"d1:ai1e",
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_decode_untrusted_rejects_malformed_input(data: bytes) -> None:
    exc = _outcome_within(decode_untrusted, data)
    assert type(exc) is DecodeError
    assert isinstance(exc, ValueError)


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_decode_trusted_rejects_malformed_input_and_never_hangs(data: bytes) -> None:
    # decode_trusted uses bencode.py, which hangs on HANG_DATAGRAM and accepts
    # i+5e, 1_0:, unsorted keys...: the strict pre-check must catch them all.
    exc = _outcome_within(decode_trusted, data)
    assert type(exc) is DecodeError


def test_hang_datagram_is_ten_bytes_and_rejected() -> None:
    assert len(HANG_DATAGRAM) == 10
    with pytest.raises(DecodeError):
        decode_untrusted(HANG_DATAGRAM)
    with pytest.raises(DecodeError):
        decode_trusted(HANG_DATAGRAM)


def test_hang_fixture_is_rejected_promptly() -> None:
    data = (FIXTURES / "malformed" / "bencode_negative_length_hang.bin").read_bytes()
    assert type(_outcome_within(decode_untrusted, data)) is DecodeError
    assert type(_outcome_within(decode_trusted, data)) is DecodeError


def test_oversize_datagram_is_rejected() -> None:
    header = b"65531:"
    data = header + b"x" * (MAX_DATAGRAM + 1 - len(header))
    assert len(data) == MAX_DATAGRAM + 1
    with pytest.raises(DecodeError, match="larger than"):
        decode_untrusted(data)


def test_trusted_files_are_not_limited_to_datagram_size() -> None:
    value = {b"nodes": [b"n" * 26] * 5000}
    data = encode(value)
    assert len(data) > MAX_DATAGRAM
    assert decode_trusted(data) == value


@pytest.mark.parametrize("build", [_nested_lists, _nested_dicts], ids=["lists", "dicts"])
def test_nesting_past_max_depth_is_rejected(build: Callable[[int], bytes]) -> None:
    with pytest.raises(DecodeError, match="nested deeper"):
        decode_untrusted(build(MAX_DEPTH + 1))


@pytest.mark.parametrize("depth", [1_000, 2_000, 32_000])
def test_deep_nesting_that_fits_a_datagram_is_rejected(depth: int) -> None:
    # fastbencode decodes these; any recursive code touching the result (repr,
    # ==) would raise RecursionError, so decode_untrusted must refuse them.
    for data in (_nested_lists(depth), b"d1:tl" + _nested_lists(depth - 1) + b"e" + b"e"):
        assert len(data) <= MAX_DATAGRAM
        assert type(_outcome_within(decode_untrusted, data)) is DecodeError
        assert type(_outcome_within(decode_trusted, data)) is DecodeError


def test_deep_nesting_in_a_wide_value_is_rejected() -> None:
    deep = _nested_lists(MAX_DEPTH)  # legal on its own at the top level...
    data = b"l" + b"i1e" * 40 + deep + b"e"  # ...one level too deep inside a list
    with pytest.raises(DecodeError):
        decode_untrusted(data)


def test_recursion_error_from_a_recursive_decoder_becomes_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # fastbencode falls back to its pure-Python decoder, which recurses, when its
    # compiled extension is missing. Use that fallback as the decoder.
    fallback = types.SimpleNamespace(bdecode=_bencode_py.bdecode, bencode=_bencode_py.bencode)
    monkeypatch.setattr(bencode, "fastbencode", fallback)
    with pytest.raises(RecursionError):
        _bencode_py.bdecode(_nested_lists(5_000))  # type: ignore[no-untyped-call]
    exc = _outcome_within(decode_untrusted, _nested_lists(5_000))
    assert type(exc) is DecodeError
    assert type(_outcome_within(decode_trusted, _nested_dicts(5_000))) is DecodeError


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in (FIXTURES / "malformed").glob("bencode_*.bin")),
)
def test_malformed_bencode_fixtures_are_rejected(name: str) -> None:
    data = (FIXTURES / "malformed" / name).read_bytes()
    assert type(_outcome_within(decode_untrusted, data)) is DecodeError


# --- Hypothesis ---------------------------------------------------------------------

bencodable = st.recursive(
    st.binary(max_size=40) | st.integers(min_value=-(2**80), max_value=2**80),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.binary(max_size=12), children, max_size=6),
    max_leaves=40,
)

#: Valid datagrams to mutate: real libtorrent traffic.
SEEDS = [p.read_bytes() for p in sorted((FIXTURES / "libtorrent").glob("*.bin"))]

#: Only DecodeError may escape; time bounds are generous (they catch hangs, not slowness).
FUZZ = settings(max_examples=300, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(bencodable)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    assume(len(data) <= MAX_DATAGRAM)
    if _depth(value) > MAX_DEPTH:
        with pytest.raises(DecodeError):
            decode_untrusted(data)
        return
    assert decode_untrusted(data) == value
    assert decode_trusted(data) == value
    assert bencode.encode_trusted_file(value) == data


def _check_untrusted(data: bytes) -> None:
    """Decode ``data``: it must raise only DecodeError, and a success must be canonical."""
    try:
        value = decode_untrusted(data)
    except DecodeError:
        return
    # The decoder is strict, so bytes and values correspond one to one.
    assert encode(value) == data


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    _check_untrusted(data)


@FUZZ
@given(st.lists(st.sampled_from(b"0123456789ilde:-+ x"), max_size=60).map(bytes))
def test_bencode_alphabet_soup_raises_only_decode_error(data: bytes) -> None:
    _check_untrusted(data)
    try:
        decode_trusted(data)
    except DecodeError:
        pass


@st.composite
def mutated_datagrams(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "replace"]))
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        if kind == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"e", b"l", b"d", b"i-1e", b"-6:"]))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(min_value=1, max_value=8))]
        elif kind == "replace" and pos < len(data):
            data[pos] = draw(st.sampled_from(b"0123456789:ilde-+ "))
    return bytes(data)


@FUZZ
@given(mutated_datagrams())
def test_mutated_datagrams_raise_only_decode_error(data: bytes) -> None:
    _check_untrusted(data)


@FUZZ
@given(mutated_datagrams())
def test_decode_trusted_on_damaged_bytes_raises_only_decode_error(data: bytes) -> None:
    try:
        value = decode_trusted(data)
    except DecodeError:
        return
    assert encode(value) == data


# --- value_end_untrusted: where a value ends when raw bytes follow it (BEP 9 data) ---

_values = st.recursive(
    st.integers(min_value=-(2**63), max_value=2**63) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.binary(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(_values, st.binary(max_size=40))
def test_value_end_finds_the_end_of_any_value_before_any_suffix(value: object, suffix: bytes) -> None:
    data = encode(value)
    assert value_end_untrusted(data + suffix) == len(data)
    assert value_end_untrusted(b"xx" + data + suffix, 2) == 2 + len(data)


@given(_values)
def test_value_end_refuses_every_truncation(value: object) -> None:
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            value_end_untrusted(data[:cut])


@pytest.mark.parametrize(
    "data",
    [b"", b"e", b"x", b"i", b"ie", b"i" + b"1" * 30 + b"e", b"5:abc", b"-1:a", b"99999999999999999999999:a",
     b":a", b"l" * 40 + b"e" * 40, b"d3:abc"],
    ids=["empty", "e", "x", "open int", "empty int", "long int", "short string", "negative length",
         "absurd length", "no length", "too deep", "open dict"],
)
def test_value_end_rejects_malformed_framing(data: bytes) -> None:
    with pytest.raises(DecodeError):
        value_end_untrusted(data)


def test_decode_untrusted_takes_a_larger_cap_when_asked() -> None:
    big = encode(b"x" * 100_000)
    with pytest.raises(DecodeError, match="larger than"):
        decode_untrusted(big)
    assert decode_untrusted(big, max_size=len(big)) == b"x" * 100_000
