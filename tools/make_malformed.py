#!/usr/bin/env python3
"""Write the corpus of malformed KRPC datagrams in fixtures/malformed/.

Each case is one small file plus an entry in ``index.json`` saying what is wrong
with it and what a node must do with it:

* ``decode_error``: not valid (strict) bencode; ``decode_untrusted`` must raise
  ``DecodeError``. Files are named ``bencode_*.bin``.
* ``reply_203``: valid bencode, a query whose ``t`` can be read, but malformed:
  answer with a 203 protocol error (``krpc_query_*.bin``).
* ``drop``: valid bencode but not a usable message (no ``t``, not a query, or
  a malformed response/error): drop it, reply nothing (``krpc_*.bin``).

No exception may escape the receive path for any of them. The corpus is
deterministic: re-running this script rewrites identical files.

Usage (from the repository root)::

    python tools/make_malformed.py [--out fixtures/malformed]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mainline_dht.wire.bencode import decode_untrusted, encode  # noqa: E402
from mainline_dht.errors import DecodeError  # noqa: E402

ID = bytes(range(1, 21))  # a well-formed 20-byte node ID
IH = bytes(range(101, 121))  # a well-formed 20-byte infohash
TID = b"aa"
PING = encode({b"t": TID, b"y": b"q", b"q": b"ping", b"a": {b"id": ID}})

Case = tuple[str, bytes, str, str]  # name, data, expect, description


def query(method: bytes, args: Any, **extra: Any) -> bytes:
    msg: dict[bytes, Any] = {b"t": TID, b"y": b"q", b"q": method, b"a": args}
    for k, v in extra.items():
        msg[k.encode()] = v
    return encode(msg)


def response(r: Any, **extra: Any) -> bytes:
    msg: dict[bytes, Any] = {b"t": TID, b"y": b"r", b"r": r}
    for k, v in extra.items():
        msg[k.encode()] = v
    return encode(msg)


def error(e: Any) -> bytes:
    return encode({b"t": TID, b"y": b"e", b"e": e})


def bencode_cases() -> list[Case]:
    rng = random.Random("mainline_dht malformed corpus")
    d = "decode_error"
    return [
        ("negative_length_hang", b"d1:a1:b-6:", d, "negative string length: bencode.py 4.1.0 loops forever on it"),
        ("negative_length", b"-1:", d, "a string with a negative length"),
        ("int_plus_sign", b"i+5e", d, "integer with a '+' sign (bencode.py accepts it)"),
        ("int_space", b"i 5e", d, "integer with a space (bencode.py accepts it)"),
        ("int_underscore", b"i1_0e", d, "integer with a '_' separator (Python int() accepts it)"),
        ("int_leading_zero", b"i05e", d, "integer with a leading zero"),
        ("int_negative_zero", b"i-0e", d, "negative zero"),
        ("int_empty", b"ie", d, "integer without digits"),
        ("int_unterminated", b"i42", d, "integer without its closing 'e'"),
        ("strlen_underscore", b"1_0:abcdefghij", d, "string length with a '_' separator"),
        ("strlen_plus_sign", b"+3:abc", d, "string length with a '+' sign"),
        ("strlen_leading_zero", b"03:abc", d, "string length with a leading zero"),
        ("strlen_space", b" 3:abc", d, "string length with a leading space"),
        ("unsorted_keys", b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id20:" + ID + b"ee", d, "dict keys out of order (t before y before q)"),
        ("duplicate_keys", b"d1:ad2:id20:" + ID + b"e1:q4:ping1:q4:ping1:t2:aa1:y1:qe", d, "the key 'q' twice"),
        ("int_dict_key", b"di1e1:xe", d, "a dict key that is an integer"),
        ("truncated_string", PING[: PING.index(b"4:ping") + 3], d, "a ping cut off inside a string"),
        ("truncated_dict", PING[:-1], d, "a ping missing its final 'e'"),
        ("truncated_after_key", b"d1:t", d, "a dict cut off after a key"),
        ("trailing_junk", PING + b"xyz", d, "a valid ping followed by junk bytes"),
        ("two_messages", PING + PING, d, "two pings in one datagram"),
        ("trailing_newline", PING + b"\n", d, "a valid ping followed by a newline"),
        ("deep_nesting_100k_lists", b"l" * 100_000, d, "100,000 list openings, never closed (100 kB: larger than any UDP datagram)"),
        ("deep_nesting_32k_lists", b"l" * 32_000 + b"e" * 32_000, d, "32,000 nested lists in 64,000 bytes (fits a datagram); recursive code on the result overflows the stack"),
        ("deep_nesting_2k_dicts", b"d1:a" * 2_000 + b"de" + b"e" * 2_000, d, "2,000 nested dicts: past Python's default recursion limit (libtorrent refuses depth > 10)"),
        ("huge_string_length", b"d1:t99999999999:x", d, "claims a 99,999,999,999-byte string"),
        ("string_length_overflow", b"18446744073709551617:x", d, "string length above 2**64"),
        ("empty", b"", d, "an empty datagram"),
        ("single_d", b"d", d, "just 'd'"),
        ("single_e", b"e", d, "just 'e'"),
        ("colon", b":", d, "just ':'"),
        ("unknown_type_byte", b"d1:t2:aa1:yx1:qe", d, "a value starting with an unknown type byte 'x'"),
        ("invalid_byte", b"d\xff\xfe", d, "non-bencode bytes after 'd'"),
        ("random_bytes", rng.randbytes(64), d, "64 random bytes (seeded)"),
        ("http_request", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", d, "an HTTP request sent to the DHT port"),
    ]


def krpc_cases() -> list[Case]:
    q203, drop = "reply_203", "drop"
    me = {b"id": ID}
    long_port = {**me, b"info_hash": IH, b"token": b"tokn"}
    return [
        # -- not a message at all
        ("top_level_list", b"l1:ae", drop, "top level is a list, not a dict"),
        ("top_level_int", b"i42e", drop, "top level is an integer"),
        ("top_level_string", b"4:spam", drop, "top level is a string"),
        ("empty_dict", b"de", drop, "an empty dict"),
        # -- envelope
        ("query_without_t", encode({b"y": b"q", b"q": b"ping", b"a": me}), drop, "a ping without 't': nothing to echo"),
        ("query_t_not_bytes", encode({b"t": 5, b"y": b"q", b"q": b"ping", b"a": me}), drop, "'t' is an integer"),
        ("query_without_y", encode({b"t": TID, b"q": b"ping", b"a": me}), drop, "a ping without 'y' (libtorrent does not answer)"),
        ("query_y_not_bytes", encode({b"t": TID, b"y": 1, b"q": b"ping", b"a": me}), drop, "'y' is an integer"),
        ("query_y_unknown", encode({b"t": TID, b"y": b"x", b"q": b"ping", b"a": me}), drop, "'y' is 'x'"),
        ("query_y_list", encode({b"t": TID, b"y": [b"q"], b"q": b"ping", b"a": me}), drop, "'y' is a list"),
        # -- query body
        ("query_without_q", encode({b"t": TID, b"y": b"q", b"a": me}), q203, "y=q without a method name"),
        ("query_q_not_bytes", encode({b"t": TID, b"y": b"q", b"q": [b"ping"], b"a": me}), q203, "'q' is a list"),
        ("query_without_a", encode({b"t": TID, b"y": b"q", b"q": b"ping"}), q203, "a ping without 'a'"),
        ("query_a_not_dict", query(b"ping", [ID]), q203, "'a' is a list"),
        ("query_a_string", query(b"ping", ID), q203, "'a' is a string"),
        ("query_without_id", query(b"ping", {}), q203, "'a' has no 'id'"),
        ("query_id_19_bytes", query(b"ping", {b"id": ID[:19]}), q203, "a 19-byte node id"),
        ("query_id_21_bytes", query(b"ping", {b"id": ID + b"x"}), q203, "a 21-byte node id"),
        ("query_id_int", query(b"ping", {b"id": 12345}), q203, "'id' is an integer"),
        ("query_id_empty", query(b"ping", {b"id": b""}), q203, "'id' is empty"),
        ("query_find_node_without_target", query(b"find_node", dict(me)), q203, "find_node without 'target'"),
        ("query_find_node_target_21_bytes", query(b"find_node", {**me, b"target": IH + b"x"}), q203, "a 21-byte target"),
        ("query_get_peers_without_info_hash", query(b"get_peers", dict(me)), q203, "get_peers without 'info_hash'"),
        ("query_get_peers_info_hash_21_bytes", query(b"get_peers", {**me, b"info_hash": IH + b"x"}), q203, "a 21-byte info_hash"),
        ("query_get_peers_info_hash_19_bytes", query(b"get_peers", {**me, b"info_hash": IH[:19]}), q203, "a 19-byte info_hash"),
        ("query_get_peers_info_hash_int", query(b"get_peers", {**me, b"info_hash": 7}), q203, "'info_hash' is an integer"),
        ("query_announce_port_0", query(b"announce_peer", {**long_port, b"port": 0}), q203, "announce_peer with port 0 and no implied_port"),
        ("query_announce_port_70000", query(b"announce_peer", {**long_port, b"port": 70000}), q203, "announce_peer with port 70000"),
        ("query_announce_port_negative", query(b"announce_peer", {**long_port, b"port": -1}), q203, "announce_peer with port -1"),
        ("query_announce_port_huge", query(b"announce_peer", {**long_port, b"port": 2**70}), q203, "announce_peer with port 2**70"),
        ("query_announce_port_bytes", query(b"announce_peer", {**long_port, b"port": b"6881"}), q203, "'port' is a string"),
        ("query_announce_without_port", query(b"announce_peer", dict(long_port)), q203, "announce_peer without 'port' or implied_port"),
        ("query_announce_token_int", query(b"announce_peer", {**me, b"info_hash": IH, b"port": 6881, b"token": 1234}), q203, "'token' is an integer"),
        ("query_announce_without_token", query(b"announce_peer", {**me, b"info_hash": IH, b"port": 6881}), q203, "announce_peer without 'token'"),
        ("query_announce_implied_port_bytes", query(b"announce_peer", {**long_port, b"port": 6881, b"implied_port": b"1"}), q203, "'implied_port' is a string"),
        ("query_sample_infohashes_target_short", query(b"sample_infohashes", {**me, b"target": IH[:10]}), q203, "BEP 51 query with a 10-byte target"),
        ("query_want_not_list", query(b"find_node", {**me, b"target": IH, b"want": b"n4"}), q203, "BEP 32 'want' is a string, not a list"),
        # -- responses: drop, never reply to a response
        ("response_without_r", encode({b"t": TID, b"y": b"r"}), drop, "y=r without 'r'"),
        ("response_r_not_dict", response([ID]), drop, "'r' is a list"),
        ("response_without_id", response({b"nodes": b""}), drop, "'r' has no 'id'"),
        ("response_id_19_bytes", response({b"id": ID[:19]}), drop, "a 19-byte responder id"),
        ("response_nodes_25_bytes", response({b"id": ID, b"nodes": b"n" * 25}), drop, "'nodes' of 25 bytes (not a multiple of 26)"),
        ("response_nodes_27_bytes", response({b"id": ID, b"nodes": b"n" * 27}), drop, "'nodes' of 27 bytes (one entry plus one byte)"),
        ("response_nodes_not_bytes", response({b"id": ID, b"nodes": [b"n" * 26]}), drop, "'nodes' is a list"),
        ("response_nodes6_37_bytes", response({b"id": ID, b"nodes6": b"n" * 37}), drop, "'nodes6' of 37 bytes (not a multiple of 38)"),
        ("response_values_5_bytes", response({b"id": ID, b"token": b"tokn", b"values": [b"\x7f\x00\x00\x01\x1a"]}), drop, "a 'values' entry of 5 bytes"),
        ("response_values_7_bytes", response({b"id": ID, b"token": b"tokn", b"values": [b"\x7f\x00\x00\x01\x1a\xe1\x00"]}), drop, "a 'values' entry of 7 bytes"),
        ("response_values_not_list", response({b"id": ID, b"token": b"tokn", b"values": b"\x7f\x00\x00\x01\x1a\xe1"}), drop, "'values' is a string, not a list"),
        ("response_values_int_entry", response({b"id": ID, b"token": b"tokn", b"values": [6881]}), drop, "a 'values' entry that is an integer"),
        ("response_token_int", response({b"id": ID, b"token": 1234, b"nodes": b""}), drop, "'token' is an integer"),
        ("response_samples_21_bytes", response({b"id": ID, b"samples": IH + b"x", b"num": 1, b"interval": 60}), drop, "BEP 51 'samples' of 21 bytes"),
        ("response_interval_negative", response({b"id": ID, b"samples": IH, b"num": 1, b"interval": -5}), drop, "BEP 51 'interval' of -5 seconds"),
        ("response_ip_5_bytes", response({b"id": ID}, ip=b"\x7f\x00\x00\x01\x1a"), drop, "BEP 42 'ip' of 5 bytes"),
        # -- errors
        ("error_e_not_list", error(b"203 protocol error"), drop, "'e' is a string"),
        ("error_e_dict", error({b"code": 203}), drop, "'e' is a dict"),
        ("error_e_empty", error([]), drop, "'e' is an empty list"),
        ("error_e_one_element", error([203]), drop, "'e' has a code but no message"),
        ("error_e_code_bytes", error([b"203", b"Protocol Error"]), drop, "the error code is a string"),
        ("error_e_message_int", error([203, 42]), drop, "the error message is an integer"),
        ("error_without_e", encode({b"t": TID, b"y": b"e"}), drop, "y=e without 'e'"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write fixtures/malformed/")
    parser.add_argument("--out", type=Path, default=Path("fixtures/malformed"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.bin"):
        old.unlink()
    index: dict[str, dict[str, str]] = {}
    problems = []
    for prefix, cases in (("bencode", bencode_cases()), ("krpc", krpc_cases())):
        for name, data, expect, description in cases:
            filename = f"{prefix}_{name}.bin"
            if filename in index:
                raise SystemExit(f"duplicate case {filename}")
            (args.out / filename).write_bytes(data)
            index[filename] = {"expect": expect, "description": description}
            try:
                decode_untrusted(data)
                decodes = True
            except DecodeError:
                decodes = False
            if decodes == (expect == "decode_error"):
                problems.append(f"{filename}: decode_untrusted {'accepts' if decodes else 'rejects'} it")
    (args.out / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(index)} cases to {args.out}")
    for p in problems:
        print(f"note: {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
