"""The pure layers do no I/O and read no clock or global randomness.

Time must arrive as ``now`` arguments and randomness as an ``rng`` argument, so
tests and simulations can script both (STYLE.md, "Making time and randomness
injectable"). This test reads each pure module's source with ``ast`` and fails
on any import of an I/O, clock or OS-entropy module, and on any call of a
module-level ``random`` function.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

#: Every module of the pure layers: the whole of ``core`` and ``wire``, found on
#: disk so that a new module is covered the day it is added.
PURE_PACKAGES = ("mainline_dht.core", "mainline_dht.wire")
#: The metadata package's I/O-free modules (its fetcher is the trio layer).
PURE_METADATA_MODULES = ["mainline_dht.metadata.peer_wire", "mainline_dht.metadata.pool", "mainline_dht.metadata.info"]
#: The crawl's decisions and its size estimate (its crawler is the trio layer).
PURE_CRAWL_MODULES = ["mainline_dht.crawl.policy", "mainline_dht.crawl.estimate"]
PURE_MODULES = ["mainline_dht.errors"] + PURE_METADATA_MODULES + PURE_CRAWL_MODULES + sorted(
    f"{package}.{info.name}"
    for package in PURE_PACKAGES
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
)

#: Top-level modules a pure module must not import. ``secrets`` is os.urandom.
FORBIDDEN_IMPORTS = frozenset({"trio", "socket", "time", "asyncio", "os", "secrets"})

#: Names from ``random`` a pure module may use: the generator type, for hints
#: and isinstance checks. Everything else draws from the hidden global generator.
ALLOWED_RANDOM_NAMES = frozenset({"Random"})


def _source(module: str) -> tuple[Path, ast.Module]:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{module} cannot be found"
    path = Path(spec.origin)
    return path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def violations(tree: ast.Module) -> list[str]:
    """Return a description of every impure construct in ``tree``."""
    found: list[str] = []
    random_aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_IMPORTS:
                    found.append(f"line {node.lineno}: import {alias.name}")
                if alias.name == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_IMPORTS:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if node.module == "random":
                for alias in node.names:
                    if alias.name not in ALLOWED_RANDOM_NAMES:
                        found.append(f"line {node.lineno}: from random import {alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in random_aliases
            and node.func.attr not in ALLOWED_RANDOM_NAMES
        ):
            found.append(f"line {node.lineno}: call of module-level random.{node.func.attr}()")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"__import__", "open"}
        ):
            found.append(f"line {node.lineno}: {node.func.id}()")
    return found


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_has_no_io_clock_or_global_randomness(module: str) -> None:
    path, tree = _source(module)
    assert violations(tree) == [], f"{path} is not pure"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time", 1),
        ("import os.path", 1),
        ("from socket import AF_INET", 1),
        ("import trio.lowlevel", 1),
        ("from asyncio import sleep", 1),
        ("import secrets", 1),
        ("import random\nx = random.random()", 1),
        ("import random as r\nx = r.randint(1, 2)", 1),
        ("from random import choice", 1),
        ("data = open('f').read()", 1),
        ("import random\ndef f(rng: random.Random) -> int:\n    return rng.randrange(8)", 0),
        ("import random\nr = random.Random(0)", 0),
        ("from random import Random", 0),
        ("from .contact import Contact\nimport hashlib", 0),
    ],
)
def test_checker_catches_impurities(source: str, expected: int) -> None:
    # The checker itself must be able to fail.
    assert len(violations(ast.parse(source))) == expected
