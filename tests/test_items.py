"""BEP 44 items: the BEP's test vectors, the store's rules and every error code,
expiry and caps; and the protocol core answering ``get``/``put`` over raw KRPC.

Pure: no trio, no sockets; time is a float we move. Addresses are 10.x.y.z.
"""

from __future__ import annotations

import hashlib

import pytest

from helpers import ask, make_core, raw_query
from mainline_dht.core import items
from mainline_dht.core.items import (
    DEFAULT_ITEM_TTL,
    ImmutableItem,
    ItemError,
    ItemErrorCode,
    ItemStore,
    MutableItem,
)
from mainline_dht.core.protocol import PEER_EXPIRY_SWEEP, NodeConfig, NodeProtocol
from mainline_dht.errors import LocalProtocolError
from mainline_dht.wire import bencode
from mainline_dht.wire.contact import Address
from mainline_dht.wire.krpc import Get, Put, QueryMessage, ResponseMessage, decode_message_untrusted, encode_message

# --- BEP 44's test vectors ---------------------------------------------------------------

VALUE = b"12:Hello World!"  # the bencoded value of every vector
PUBLIC_KEY = bytes.fromhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548")
SIG_PLAIN = bytes.fromhex(
    "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff"
    "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01"
)
SIG_SALTED = bytes.fromhex(
    "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d"
    "df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08"
)


def test_vector_1_mutable_buffer_target_and_signature() -> None:
    assert items.signature_buffer(VALUE, 1) == b"3:seqi1e1:v12:Hello World!"
    assert items.mutable_target(PUBLIC_KEY).hex() == "4a533d47ec9c7d95b1ad75f576cffc641853b750"
    assert items.verify(PUBLIC_KEY, SIG_PLAIN, VALUE, 1)
    item = MutableItem(PUBLIC_KEY, VALUE, 1, SIG_PLAIN)
    assert item.verify() and item.target.hex() == "4a533d47ec9c7d95b1ad75f576cffc641853b750"


def test_vector_2_mutable_with_salt() -> None:
    assert items.signature_buffer(VALUE, 1, b"foobar") == b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
    assert items.mutable_target(PUBLIC_KEY, b"foobar").hex() == "411eba73b6f087ca51a3795d9c8c938d365e32c1"
    assert items.verify(PUBLIC_KEY, SIG_SALTED, VALUE, 1, b"foobar")
    # The salt is signed: the other vector's signature does not fit, nor does this one without salt.
    assert not items.verify(PUBLIC_KEY, SIG_PLAIN, VALUE, 1, b"foobar")
    assert not items.verify(PUBLIC_KEY, SIG_SALTED, VALUE, 1)


def test_vector_3_immutable_target() -> None:
    assert items.immutable_target(VALUE).hex() == "e5f96f6f38320f0f33959cb4d3d656452117aadb"
    assert ImmutableItem(VALUE).target.hex() == "e5f96f6f38320f0f33959cb4d3d656452117aadb"


def test_any_change_breaks_the_vector_signature() -> None:
    assert not items.verify(PUBLIC_KEY, SIG_PLAIN, VALUE, 2)
    assert not items.verify(PUBLIC_KEY, SIG_PLAIN, b"12:Hello World?", 1)
    assert not items.verify(PUBLIC_KEY, SIG_PLAIN[:-1] + bytes([SIG_PLAIN[-1] ^ 1]), VALUE, 1)
    assert not items.verify(b"\x00" * 32, SIG_PLAIN, VALUE, 1)  # not the key (and not a valid point)
    assert not items.verify(PUBLIC_KEY[:31], SIG_PLAIN, VALUE, 1)


def test_an_empty_salt_is_no_salt() -> None:
    assert items.signature_buffer(VALUE, 1, b"") == items.signature_buffer(VALUE, 1)
    assert items.mutable_target(PUBLIC_KEY, b"") == items.mutable_target(PUBLIC_KEY)


SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))


def test_signing_round_trip_with_a_seed() -> None:
    item = MutableItem.create(SEED, b"5:hello", 7, b"s")
    assert item.public_key == items.public_key_for(SEED)
    assert item.verify()
    assert item.target == hashlib.sha1(item.public_key + b"s").digest()
    assert items.sign(SEED, b"5:hello", 7, b"s") == item.signature  # ed25519 is deterministic
    with pytest.raises(LocalProtocolError):
        MutableItem.create(SEED, b"1:x", -1)
    with pytest.raises(LocalProtocolError):
        MutableItem.create(SEED, b"1:x", 1, b"s" * 65)
    with pytest.raises(LocalProtocolError):
        items.public_key_for(b"short")


# --- the store: every error code, expiry and caps ------------------------------------------


def mutable(seq: int, value: bytes = b"1:a", salt: bytes = b"", seed: bytes = SEED) -> MutableItem:
    return MutableItem.create(seed, value, seq, salt)


def code_of(exc: pytest.ExceptionInfo[ItemError]) -> int:
    return int(exc.value.code)


def test_immutable_put_and_get() -> None:
    store = ItemStore()
    target = store.put_immutable(VALUE, "10.0.0.2", 0.0)
    assert target == items.immutable_target(VALUE)
    assert store.get(target, 1.0) == ImmutableItem(VALUE)


def test_205_value_too_big_for_both_kinds() -> None:
    store = ItemStore()
    big = b"997:" + b"x" * 997  # 1,001 bytes bencoded
    with pytest.raises(ItemError) as exc:
        store.put_immutable(big, "10.0.0.2", 0.0)
    assert code_of(exc) == 205
    fits = b"996:" + b"x" * 996  # exactly 1,000
    store.put_immutable(fits, "10.0.0.2", 0.0)
    item = MutableItem(items.public_key_for(SEED), big, 1, items.sign(SEED, big, 1))
    with pytest.raises(ItemError) as exc:
        store.put_mutable(item, "10.0.0.2", 0.0)
    assert code_of(exc) == 205


def test_206_invalid_signature() -> None:
    good = mutable(1)
    forged = MutableItem(good.public_key, b"1:b", 1, good.signature)
    with pytest.raises(ItemError) as exc:
        ItemStore().put_mutable(forged, "10.0.0.2", 0.0)
    assert code_of(exc) == 206


def test_207_salt_too_big() -> None:
    salt = b"s" * 65
    item = MutableItem(items.public_key_for(SEED), b"1:a", 1, items.sign(SEED, b"1:a", 1, salt), salt)
    with pytest.raises(ItemError) as exc:
        ItemStore().put_mutable(item, "10.0.0.2", 0.0)
    assert code_of(exc) == 207
    ItemStore().put_mutable(mutable(1, salt=b"s" * 64), "10.0.0.2", 0.0)  # 64 is allowed


def test_301_cas_mismatch_and_cas_ignored_when_empty() -> None:
    store = ItemStore()
    store.put_mutable(mutable(1), "10.0.0.2", 0.0, cas=99)  # nothing stored: cas is ignored
    with pytest.raises(ItemError) as exc:
        store.put_mutable(mutable(2, b"1:b"), "10.0.0.2", 1.0, cas=0)
    assert code_of(exc) == 301
    store.put_mutable(mutable(2, b"1:b"), "10.0.0.2", 1.0, cas=1)
    stored = store.get(mutable(1).target, 2.0)
    assert isinstance(stored, MutableItem) and stored.seq == 2 and stored.value == b"1:b"


def test_302_lower_seq_and_equal_seq_with_another_value() -> None:
    store = ItemStore()
    store.put_mutable(mutable(5), "10.0.0.2", 0.0)
    with pytest.raises(ItemError) as exc:
        store.put_mutable(mutable(4, b"1:z"), "10.0.0.2", 1.0)
    assert code_of(exc) == 302
    with pytest.raises(ItemError) as exc:
        store.put_mutable(mutable(5, b"1:z"), "10.0.0.2", 1.0)
    assert code_of(exc) == 302
    stored = store.get(mutable(5).target, 1.0)
    assert isinstance(stored, MutableItem) and stored.seq == 5 and stored.value == b"1:a"


def test_items_expire_after_two_hours_unless_put_again() -> None:
    store = ItemStore()
    assert store.ttl == DEFAULT_ITEM_TTL == 7200.0
    t_imm = store.put_immutable(VALUE, "10.0.0.2", 0.0)
    t_mut = store.put_mutable(mutable(1), "10.0.0.2", 0.0)
    # The same mutable item again (same seq, same value) refreshes it: BEP 44 "SHOULD reset its timeout".
    store.put_mutable(mutable(1), "10.0.0.3", 3600.0)
    assert store.get(t_imm, 7199.0) is not None
    assert store.expire(7200.0) == 1
    assert store.get(t_imm, 7200.0) is None
    assert store.get(t_mut, 7200.0) is not None
    assert store.get(t_mut, 3600.0 + 7200.0) is None  # lazily dropped on get too
    assert len(store) == 0


def test_caps_total_and_per_writer_ip() -> None:
    store = ItemStore(max_items=10, max_items_per_ip=3)
    values = [bencode.encode(b"v%d" % i) for i in range(20)]
    # One IP writes 5: only its 3 latest stay.
    for i in range(5):
        store.put_immutable(values[i], "10.0.0.66", float(i))
    assert len(store) == 3
    assert [items.immutable_target(values[i]) in store for i in range(5)] == [False, False, True, True, True]
    # Many IPs: the total stays at 10, oldest first out.
    for i in range(5, 20):
        store.put_immutable(values[i], f"10.0.1.{i}", float(i))
    assert len(store) == 10
    assert all(items.immutable_target(values[i]) in store for i in range(10, 20))
    with pytest.raises(ValueError):
        ItemStore(max_items=0)


# --- the wire: get and put queries and replies round-trip ---------------------------------


def test_krpc_put_and_get_round_trip() -> None:
    item = mutable(3, b"d1:ai1ee", b"salt")
    put = Put(b"tok", item.value, item.public_key, item.seq, item.signature, item.salt, cas=2)
    msg = decode_message_untrusted(encode_message(QueryMessage(b"t1", b"\x01" * 20, put)))
    assert isinstance(msg, QueryMessage) and msg.query == put
    get = Get(item.target, seq=1)
    msg = decode_message_untrusted(encode_message(QueryMessage(b"t2", b"\x01" * 20, get)))
    assert isinstance(msg, QueryMessage) and msg.query == get
    reply = ResponseMessage(b"t3", b"\x02" * 20, token=b"tk", value=item.value, public_key=item.public_key,
                            seq=item.seq, signature=item.signature)
    assert decode_message_untrusted(encode_message(reply)) == reply


# --- the protocol core serving get and put ---------------------------------------------------

CLIENT: Address = ("10.9.8.7", 51413)


def only(core: NodeProtocol, data: bytes, now: float = 0.0, addr: Address = CLIENT) -> dict:
    replies = ask(core, data, addr, now)
    assert len(replies) == 1, replies
    return replies[0]


def token_for(core: NodeProtocol, target: bytes, now: float = 0.0, addr: Address = CLIENT) -> bytes:
    r = only(core, raw_query(b"get", {b"target": target}), now, addr)[b"r"]
    assert r[b"token"] and b"nodes" in r
    return r[b"token"]


def put_args(item: MutableItem, token: bytes, **extra: object) -> dict:
    args = {b"token": token, b"v": bencode.decode_untrusted(item.value), b"k": item.public_key,
            b"seq": item.seq, b"sig": item.signature}
    if item.salt:
        args[b"salt"] = item.salt
    args.update({k.encode(): v for k, v in extra.items()})
    return args


def test_core_immutable_put_then_get() -> None:
    core = make_core("items")
    target = items.immutable_target(VALUE)
    reply = only(core, raw_query(b"put", {b"token": token_for(core, target), b"v": b"Hello World!"}))
    assert reply[b"y"] == b"r"
    r = only(core, raw_query(b"get", {b"target": target}))[b"r"]
    assert r[b"v"] == b"Hello World!"
    assert core.stats.items_stored == 1


def test_core_mutable_put_then_get_with_and_without_seq() -> None:
    core = make_core("items")
    item = mutable(4, b"5:hello", b"foobar")
    reply = only(core, raw_query(b"put", put_args(item, token_for(core, item.target))))
    assert reply[b"y"] == b"r", reply
    r = only(core, raw_query(b"get", {b"target": item.target}))[b"r"]
    assert (r[b"v"], r[b"k"], r[b"seq"], r[b"sig"]) == (b"hello", item.public_key, 4, item.signature)
    assert b"salt" not in r  # BEP 44: the salt is not returned
    # The asker already has seq 4: only seq comes back.
    r = only(core, raw_query(b"get", {b"target": item.target, b"seq": 4}))[b"r"]
    assert r[b"seq"] == 4 and b"v" not in r and b"sig" not in r and b"k" not in r
    r = only(core, raw_query(b"get", {b"target": item.target, b"seq": 3}))[b"r"]
    assert r[b"v"] == b"hello"


@pytest.mark.parametrize(
    ("case", "code"),
    [("bad token", 203), ("too big", 205), ("forged", 206), ("salt", 207), ("cas", 301), ("seq", 302),
     ("no v", 203), ("short key", 203)],
)
def test_core_answers_every_put_error_code(case: str, code: int) -> None:
    core = make_core("items")
    first = mutable(5)
    token = token_for(core, first.target)
    assert only(core, raw_query(b"put", put_args(first, token)))[b"y"] == b"r"
    if case == "bad token":
        args = put_args(mutable(6), b"\x00" * 8)
    elif case == "too big":
        big = bencode.encode(b"x" * 1000)
        args = put_args(MutableItem(first.public_key, big, 6, items.sign(SEED, big, 6)), token)
    elif case == "forged":
        args = put_args(MutableItem(first.public_key, b"1:q", 6, first.signature), token)
    elif case == "salt":
        salt = b"s" * 65
        args = put_args(MutableItem(first.public_key, b"1:a", 6, items.sign(SEED, b"1:a", 6, salt), salt), token)
    elif case == "cas":
        args = put_args(mutable(6), token, cas=4)
    elif case == "seq":
        args = put_args(mutable(4), token)
    elif case == "no v":
        args = {b"token": token}
    else:
        args = put_args(mutable(6), token)
        args[b"k"] = args[b"k"][:31]
    reply = only(core, raw_query(b"put", args))
    assert reply[b"y"] == b"e" and reply[b"e"][0] == code, reply
    stored = core.item_store.get(first.target, 0.0)
    assert isinstance(stored, MutableItem) and stored.seq == 5


def test_core_expires_items_in_its_sweep() -> None:
    core = make_core("items", config=NodeConfig(item_ttl=100.0))
    target = items.immutable_target(VALUE)
    only(core, raw_query(b"put", {b"token": token_for(core, target), b"v": b"Hello World!"}))
    assert len(core.item_store) == 1
    core.handle_timer(100.0 + PEER_EXPIRY_SWEEP)
    assert len(core.item_store) == 0
    r = only(core, raw_query(b"get", {b"target": target}), now=200.0)[b"r"]
    assert b"v" not in r


def test_read_only_core_answers_no_get_or_put() -> None:
    core = make_core("items", config=NodeConfig(read_only=True))
    assert ask(core, raw_query(b"get", {b"target": b"\x01" * 20}), CLIENT, 0.0) == []


# --- the requesting side: what a get lookup accepts --------------------------------------------


def test_item_search_accepts_only_verified_items_and_the_highest_seq() -> None:
    target = items.immutable_target(VALUE)
    search = items.ItemSearch(target)
    assert search.offer(b"12:Hello World?", None, None, None, ("10.0.0.1", 1), 0.0) is None  # wrong hash
    found = search.offer(VALUE, None, None, None, ("10.0.0.2", 1), 1.0)
    assert found is not None and found.value == b"Hello World!" and found.source == ("10.0.0.2", 1)
    assert search.offer(VALUE, None, None, None, ("10.0.0.3", 1), 2.0) is None  # not better
    assert (search.invalid, search.copies) == (1, 2)

    pk = items.public_key_for(SEED)
    search = items.ItemSearch(items.mutable_target(pk, b"s"), public_key=pk, salt=b"s")
    v3, v5 = mutable(3, b"1:c", b"s"), mutable(5, b"1:e", b"s")
    other_key = mutable(9, b"1:z", b"s", seed=OTHER_SEED)
    assert search.offer(other_key.value, other_key.public_key, 9, other_key.signature, ("10.0.0.1", 1), 0.0) is None
    assert search.offer(v5.value, pk, 6, v5.signature, ("10.0.0.1", 1), 0.0) is None  # seq not the one signed
    assert search.offer(v3.value, pk, 3, v3.signature, ("10.0.0.2", 1), 0.0) is not None
    assert search.offer(v5.value, pk, 5, v5.signature, ("10.0.0.3", 1), 0.0) is not None
    assert search.offer(v3.value, pk, 3, v3.signature, ("10.0.0.4", 1), 0.0) is None  # older
    assert search.best is not None and search.best.seq == 5 and search.best.value == b"e"
    assert (search.invalid, search.copies) == (2, 3)
    with pytest.raises(LocalProtocolError):
        items.ItemSearch(items.mutable_target(pk), public_key=pk, salt=b"s")
