"""Fixtures shared by the test modules."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# The user data directory (XDG_DATA_HOME) of the whole session is a fresh temporary one:
# ``mainline-dht peers`` keeps a contact cache there, and no test (nor a module-scoped
# fixture, which runs before the per-test fixture below) may read the user's cache or
# write into the user's home. Subprocesses inherit it.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="mainline-dht-tests-")

# Test harnesses that need libtorrent live in tools/ (no user install carries them).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from postgres_server import PostgresServer, postgres_server  # noqa: E402

# Tests never assert on wall time: a loaded CI machine must not turn a slow
# example into a failure. The fuzz tests that promise bounded decode time set
# their own explicit deadline. HYPOTHESIS_PROFILE=soak runs many more examples
# (for a local search for rare failures; not used by CI).
settings.register_profile("project", deadline=None)
settings.register_profile("soak", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "project"))


#: The test files that take longest (tens of seconds each), longest first. The suite runs
#: on two workers that take whole files in collection order (pyproject: -n 2 --dist
#: loadfile); handing these out first keeps one worker from starting a long file while
#: the other has nothing left. Only the order changes; other files keep theirs.
LONGEST_FIRST = (
    "test_fleet.py",
    "test_simulation.py",
    "test_simulation_adversarial.py",
    "test_crawl_sim.py",
    "test_readme.py",
    "test_node_memory.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


@pytest.fixture(autouse=True)
def _reset_cli_logging() -> Iterator[None]:
    """Drop the stderr handler ``main`` installs (it points at this test's captured stderr)."""
    yield
    logger = logging.getLogger("mainline_dht")
    for handler in list(logger.handlers):
        if getattr(handler, "_mainline_dht_cli", False):
            logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole run (tools/postgres_server.py).

    Fails, never skips, when the server binaries are missing: .ci/run installs them.
    """
    with postgres_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _private_user_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the user data directory (XDG_DATA_HOME) at a fresh temporary one for each test.

    ``mainline-dht peers`` keeps a contact cache there: a test must neither read the
    cache an earlier test (or the user) left, nor write into the user's home.
    """
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
