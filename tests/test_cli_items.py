"""``mainline-dht put``, ``get`` and ``peers --scrape``/``--seed``, run as a user runs them.

The commands run in-process (:func:`mainline_dht.cli.main`) against a 20-node DHT of
our nodes on 127.0.75.1-20 served from a thread of its own. Loopback only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import pytest

from mainline_dht import cli
from mainline_dht.cli.get import json_value, text_value
from mainline_dht.core import items
from mainline_dht.wire.contact import Address

from netthread import local_network_thread

SCRAPE_HASH = hashlib.sha1(b"test_cli_items scrape").digest()
SEEDS, LEECHERS = 4, 7
KEY_SEED = "11" * 32
LIST_VALUE = [1, b"two", {b"k": b"\xff"}]


@dataclass(frozen=True)
class Net:
    bootstrap: Address
    list_target: bytes


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    with local_network_thread(20, seed=75, base=("127.0.75.1", 0)) as threaded:
        for i in range(SEEDS + LEECHERS):
            assert threaded.announce(1 + i, SCRAPE_HASH, 7000 + i, seed=i < SEEDS) > 0
        node = threaded.net.nodes[3]
        target = threaded.run(lambda: node.put_immutable(LIST_VALUE))
        yield Net(threaded.bootstrap_address, target)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _boot(net: Net) -> list[str]:
    return ["--bootstrap", f"{net.bootstrap[0]}:{net.bootstrap[1]}"]


def _json(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_put_then_get_immutable(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "put", "Hello World!", *_boot(net))
    assert code == cli.EXIT_OK, err
    assert out.strip() == "e5f96f6f38320f0f33959cb4d3d656452117aadb"  # BEP 44 test vector 3
    assert "stored on" in err and "stored on 0 nodes" not in err
    code, out, err = _run(capsys, "get", "e5f96f6f38320f0f33959cb4d3d656452117aadb", *_boot(net))
    assert code == cli.EXIT_OK, err
    assert out == "Hello World!\n" and "found at 127.0.75." in err
    code, out, _ = _run(capsys, "get", "e5f96f6f38320f0f33959cb4d3d656452117aadb", *_boot(net), "--json")
    item, done = _json(out)
    assert item["event"] == "item" and item["value"] == "Hello World!" and item["seq"] is None
    assert item["target"] == "e5f96f6f38320f0f33959cb4d3d656452117aadb"
    assert str(item["from"]).startswith("127.0.75.")
    assert done["event"] == "done" and done["found"] is True


def test_get_prints_a_structured_value_as_json(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "get", net.list_target.hex(), *_boot(net))
    assert code == cli.EXIT_OK
    assert json.loads(out) == [1, "two", {"k": {"hex": "ff"}}]
    assert text_value(b"plain") == "plain" and json_value(b"\xff\xfe") == {"hex": "fffe"}


def test_put_then_get_mutable_with_salt_and_seq(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    pk = items.public_key_for(bytes.fromhex(KEY_SEED)).hex()
    code, out, err = _run(capsys, "put", "--key-seed", KEY_SEED, "--salt", "feed", "first", *_boot(net), "--json")
    assert code == cli.EXIT_OK, err
    (done,) = _json(out)
    assert done["public_key"] == pk and done["seq"] == 1 and cast(int, done["stored"]) > 0
    assert done["target"] == items.mutable_target(bytes.fromhex(pk), b"feed").hex()
    code, out, err = _run(capsys, "put", "--key-seed", KEY_SEED, "--salt", "feed", "--seq", "5", "fifth", *_boot(net))
    assert code == cli.EXIT_OK and out.strip() == done["target"] and f"public key {pk}, seq 5" in err
    code, out, _ = _run(capsys, "get", "--public-key", pk, "--salt", "feed", *_boot(net), "--json")
    item, end = _json(out)
    assert (item["value"], item["seq"]) == ("fifth", 5) and end["found"] is True
    # A lower seq is refused by every node: nothing stored, exit 1.
    code, _, err = _run(capsys, "put", "--key-seed", KEY_SEED, "--salt", "feed", "--seq", "2", "old", *_boot(net))
    assert code == cli.EXIT_NOT_FOUND and "302" in err
    # Without the salt it is another item, which nobody stored.
    code, out, _ = _run(capsys, "get", "--public-key", pk, *_boot(net), "--json")
    assert code == cli.EXIT_NOT_FOUND and _json(out) == [_json(out)[0]] and _json(out)[0]["found"] is False


def test_get_of_an_unknown_target_exits_1(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "get", "00" * 20, *_boot(net))
    assert code == cli.EXIT_NOT_FOUND and out == "" and "not found" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["put", "x", "--salt", "s"], "give --key-seed too"),
        (["put", "x", "--key-seed", "zz"], "not hexadecimal"),
        (["put", "x", "--key-seed", "11"], "64 hex"),
        (["put", "x" * 1000], "BEP 44 allows 1000"),
        (["put", "x", "--key-seed", KEY_SEED, "--salt", "s" * 65], "BEP 44 allows 64"),
        (["get"], "give a TARGET"),
        (["get", "00" * 20, "--public-key", "11" * 32], "not both"),
        (["get", "nothex"], "40 hex"),
        (["peers", "00" * 20, "--seed"], "--seed goes with --announce"),
    ],
)
def test_bad_item_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    try:
        code = cli.main([*argv, "--bootstrap", "127.0.75.250:9"])
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == cli.EXIT_ERROR
    assert message in capsys.readouterr().err


def test_peers_scrape_and_announce_as_seed(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "peers", SCRAPE_HASH.hex(), *_boot(net), "--scrape", "--json")
    assert code == cli.EXIT_OK, err
    done = _json(out)[-1]
    assert done["event"] == "done"
    assert abs(cast(float, done["seeds"]) - SEEDS) <= 1 and abs(cast(float, done["downloaders"]) - LEECHERS) <= 1
    code, _, err = _run(capsys, "peers", SCRAPE_HASH.hex(), *_boot(net), "--bind", "127.0.75.201:0",
                        "--announce", "6000", "--seed")
    assert code == cli.EXIT_OK and "announce accepted by" in err
    code, _, err = _run(capsys, "peers", SCRAPE_HASH.hex(), *_boot(net), "--scrape")
    assert code == cli.EXIT_OK and f"about {SEEDS + 1} seeds and {LEECHERS} downloaders" in err
