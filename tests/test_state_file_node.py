"""Tests of the trio node's use of the state file, on the in-memory network.

Virtual time (pytest-trio's ``autojump_clock``) lets the node's periodic save
and its maintenance run in no wall time; each test runs under a
``trio.fail_after`` on that clock. The file format itself is tested in
test_state_file.py; here: when the node saves, what it reads back at start,
and how it rejoins from it.
"""

from __future__ import annotations

import logging
import random
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio
import trio.testing

from mainline_dht.errors import BootstrapError
from mainline_dht.runtime.node import MAINTENANCE_INTERVAL, SAVE_INTERVAL, DHTNode, open_node
from mainline_dht.core.routing_table import split_saved_contacts
from mainline_dht.runtime.state_file import load_contacts
from mainline_dht.testing import LinkModel
from mainline_dht.testing._sim import SimNetwork, open_sim_network

VIRTUAL_LIMIT = 3600.0
WALL = 1_700_000_123.0


def wall_clock() -> float:
    return WALL


async def test_the_table_is_saved_periodically_and_on_exit(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    state = tmp_path / "state" / "table.dat"  # the directory is created on demand
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_sim_network(60, seed=1, link=LinkModel(median_rtt=0.05)) as sim:
            async with open_node(
                transport=sim.net.open_transport(),
                bootstrap=(sim.nodes[0].local_address,),
                state_path=state,
                rng=random.Random(1),
                wall_clock=wall_clock,
            ) as node:
                await node.bootstrap()
                await trio.sleep(SAVE_INTERVAL - MAINTENANCE_INTERVAL)
                assert not state.exists()  # not yet
                await trio.sleep(2 * MAINTENANCE_INTERVAL)
                assert state.exists()  # the periodic save, while running
                own_id, contacts = load_contacts(state)
                assert own_id == node.node_id
                assert {c.id for c in contacts} >= {e.id for e in node.table if not e.is_bad}
                state.unlink()
            assert state.exists()  # and on exit
            assert sorted(p.name for p in state.parent.iterdir()) == [state.name]


def _joiner(sim: SimNetwork, state: Path, seed: int) -> AbstractAsyncContextManager[DHTNode]:
    """A node that joins ``sim`` through its first node and keeps its table in ``state``."""
    return open_node(
        transport=sim.net.open_transport(),
        bootstrap=(sim.nodes[0].local_address,),
        state_path=state,
        rng=random.Random(seed),
    )


def _restarted(sim: SimNetwork, state: Path, seed: int) -> AbstractAsyncContextManager[DHTNode]:
    """A node started again from ``state``, at a new address, with no routers."""
    return open_node(transport=sim.net.open_transport(), bootstrap=(), state_path=state, rng=random.Random(seed))


async def test_a_restarted_node_rejoins_from_saved_contacts_by_itself(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    state = tmp_path / "table.dat"
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_sim_network(80, seed=2, link=LinkModel(median_rtt=0.05)) as sim:
            async with _joiner(sim, state, 2) as node:
                await node.bootstrap()
                first_id = node.node_id
                before = len(node.table)
                first_ids = {e.id for e in node.table}
            _, saved = load_contacts(state)
            assert len(saved) >= before >= 16
            # No routers, no explicit bootstrap: maintenance rejoins from the file,
            # and every saved contact is pinged (not only the k closest).
            async with _restarted(sim, state, 3) as node:
                assert node.node_id == first_id
                assert len(node.table) == 0
                await trio.sleep(MAINTENANCE_INTERVAL + 5.0)
                assert node.joined.is_set()
                assert len(node.table) >= before - 2
                # Mostly the same contacts as before the restart.
                assert len(first_ids & {e.id for e in node.table}) >= len(first_ids) * 3 // 4


async def test_when_the_former_entries_are_gone_the_saved_overflow_rejoins(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The saved contacts that held a place in the table are asked first; when
    # none of them answers, the others (former replacements) are asked next.
    state = tmp_path / "table.dat"
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_sim_network(80, seed=2, link=LinkModel(median_rtt=0.05)) as sim:
            async with _joiner(sim, state, 2) as node:
                await node.bootstrap()
            own, saved = load_contacts(state)
            fits, overflow = split_saved_contacts(own, saved)
            assert fits and overflow
            for contact in fits:
                sim.net.set_dead(contact.addr)
            async with _restarted(sim, state, 3) as node:
                await node.bootstrap()
                ids = {e.id for e in node.table}
                assert ids & {c.id for c in overflow}
                assert not ids & {c.id for c in fits}


async def test_dead_saved_contacts_give_a_bootstrap_error_and_keep_the_file(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    state = tmp_path / "table.dat"
    with trio.fail_after(VIRTUAL_LIMIT):
        async with open_sim_network(40, seed=3, link=LinkModel(median_rtt=0.05)) as sim:
            async with _joiner(sim, state, 4) as node:
                await node.bootstrap()
            before = state.read_bytes()
            _, saved = load_contacts(state)
            for contact in saved:
                sim.net.set_dead(contact.addr)
            async with _restarted(sim, state, 5) as node:
                with pytest.raises(BootstrapError, match=f"{len(saved)} saved contacts"):
                    await node.bootstrap(timeout=3.0)
            # An offline run does not replace the saved contacts with an empty table.
            assert state.read_bytes() == before


async def test_an_unwritable_state_path_is_a_warning_not_a_crash(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    state = blocker / "table.dat"
    with trio.fail_after(VIRTUAL_LIMIT), caplog.at_level(logging.WARNING, logger="mainline_dht.runtime.node"):
        async with open_sim_network(20, seed=4, link=LinkModel(median_rtt=0.05)) as sim:
            async with open_node(
                transport=sim.net.open_transport(),
                bootstrap=(sim.nodes[0].local_address,),
                state_path=state,
                rng=random.Random(6),
            ) as node:
                await node.bootstrap()
    assert any("cannot save" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-directory"]
