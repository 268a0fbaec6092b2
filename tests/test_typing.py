"""The package is typed (it ships py.typed), and a user's program sees those types.

One mypy run checks three things:

- the package itself under ``mypy --strict`` (the configuration in pyproject.toml);
- ``tests/typing_examples/user_program.py``, a program written as a user would,
  under ``--strict`` plus ``disallow-any-expr``: a public name that lost its types
  turns into an ``Any`` there, and that is an error;
- a generated file that reveals the type of every name each public module
  exports, and of every public attribute of the exported classes: an ``Any`` in
  any of them fails :func:`test_every_exported_name_is_typed` (unless listed,
  with the reason, in :data:`ALLOWED_ANY`).

The user program is also run against a loopback network, so its types are
checked against what it really gets.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from netthread import local_network_thread

ROOT = Path(__file__).resolve().parent.parent
USER_PROGRAM = ROOT / "tests" / "typing_examples" / "user_program.py"
#: The modules a user imports names from.
PUBLIC_MODULES = ("mainline_dht", "mainline_dht.aio", "mainline_dht.blocking")
#: Public names whose revealed type may hold ``Any``, and why.
ALLOWED_ANY = {
    "mainline_dht.DHTNode.get_peers": "**lookup_options: Any, passed on to Lookup",
    "mainline_dht.aio.AsyncioNode.get_peers": "**lookup_options: Any, passed on to Lookup",
    "mainline_dht.aio.PeerStream": "its constructor's lookup options, passed on to Lookup (users get it from get_peers)",
    "mainline_dht.serve_node": "**options: Any, passed on to open_node",
    "mainline_dht.NodeProtocol.start_lookup": "**options: Any, passed on to Lookup",
}
_REVEALED = re.compile(r'^(?P<path>[^:]+):(?P<line>\d+): note: Revealed type is "(?P<type>.*)"$')
_ERROR = re.compile(r"^(?P<path>[^:]+):\d+: error: ")


def _instance_attributes(cls: type) -> set[str]:
    """Public attributes a class (and its bases in the package) defines, on the class or in ``self.x =``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("mainline_dht"):
            continue
        names |= set(vars(klass)) | set(getattr(klass, "__annotations__", {}))
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names |= set(re.findall(r"\bself\.([A-Za-z]\w*)\s*(?::[^=\n]+)?=[^=]", source))
    return {n for n in names if not n.startswith("_")}


def reveal_program() -> tuple[str, dict[int, str]]:
    """A program revealing every exported name's type; and which name each line reveals."""
    lines = [f"import {m}" for m in PUBLIC_MODULES]
    labels: dict[int, str] = {}

    def reveal(expr: str, label: str, indent: str = "") -> None:
        lines.append(f"{indent}reveal_type({expr})")
        labels[len(lines)] = label

    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            qual = f"{module_name}.{name}"
            if isinstance(obj, types.GenericAlias):  # a type alias such as Address
                lines.append(f"def _alias_{len(lines)}(x: {qual}) -> None:")
                reveal("x", qual, "    ")
                continue
            reveal(qual, qual)
            if inspect.isclass(obj):
                members = sorted(_instance_attributes(obj))
                if issubclass(obj, enum.Enum):
                    for member in members:
                        reveal(f"{qual}.{member}", f"{qual}.{member}")
                    continue
                lines.append(f"def _members_{len(lines)}(x: {qual}) -> None:")
                lines.append("    pass")
                for member in members:
                    reveal(f"x.{member}", f"{qual}.{member}", "    ")
    return "\n".join(lines) + "\n", labels


@dataclass
class MypyRun:
    returncode: int
    output: str
    reveal_path: Path
    labels: dict[int, str]

    def errors_in(self, path: Path | str) -> list[str]:
        prefix = str(path)
        return [line for line in self.output.splitlines()
                if (m := _ERROR.match(line)) and m["path"].startswith(prefix)]


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    source, labels = reveal_program()
    reveal_path = tmp_path_factory.mktemp("typing") / "reveal_public_api.py"
    reveal_path.write_text(source)
    # MYPYPATH puts this checkout ahead of any installed copy of the package.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "mainline_dht",
         str(USER_PROGRAM.relative_to(ROOT)), str(reveal_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    return MypyRun(result.returncode, result.stdout + result.stderr, reveal_path, labels)


def test_package_passes_mypy_strict(mypy_run: MypyRun) -> None:
    assert mypy_run.errors_in("mainline_dht") == []


def test_user_program_passes_mypy_strict(mypy_run: MypyRun) -> None:
    assert mypy_run.errors_in(USER_PROGRAM.relative_to(ROOT)) == []


def test_every_exported_name_is_typed(mypy_run: MypyRun) -> None:
    assert mypy_run.errors_in(mypy_run.reveal_path) == []
    revealed: dict[str, str] = {}
    for line in mypy_run.output.splitlines():
        m = _REVEALED.match(line)
        if m and m["path"] == str(mypy_run.reveal_path):
            revealed[mypy_run.labels[int(m["line"])]] = m["type"]
    assert set(revealed) == set(mypy_run.labels.values())
    assert "mainline_dht.blocking.Node.get_peers" in revealed  # the generator found the members
    untyped = {}
    for label, type_text in revealed.items():
        # A coroutine's send and yield types are Any in typeshed itself.
        plain = type_text.replace("typing.Coroutine[Any, Any, ", "typing.Coroutine[")
        if re.search(r"\bAny\b", plain) and label not in ALLOWED_ANY:
            untyped[label] = type_text
    assert not untyped, "exported names typed Any:\n" + "\n".join(f"{k}: {v}" for k, v in sorted(untyped.items()))
    assert set(ALLOWED_ANY) <= set(revealed), "an allowed Any names nothing exported any more"
    typed_now = [label for label in ALLOWED_ANY
                 if not re.search(r"\bAny\b", revealed[label].replace("typing.Coroutine[Any, Any, ", "typing.Coroutine["))]
    assert typed_now == [], "typed now: remove from ALLOWED_ANY"


def test_user_program_runs() -> None:
    with local_network_thread(20, base=("127.0.82.1", 0), seed=82) as net:
        host, port = net.bootstrap_address
        result = subprocess.run([sys.executable, str(USER_PROGRAM), f"{host}:{port}"],
                                env={**os.environ, "PYTHONPATH": str(ROOT)},
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "trio: 1 peers; asyncio: 1 peers; threads: 2 peers\n"


def test_package_ships_py_typed() -> None:
    assert (ROOT / "mainline_dht" / "py.typed").exists()
