"""Our nodes on many distinct IPv6 addresses, in a private network namespace (BEP 32).

``::1`` is one address, so loopback tests relax the one-entry-per-IP rule and the
per-IP query budgets. Here every node has its own ``fd00::/8`` (and
``198.18.0.0/15``) address on the namespace's ``lo``, and runs the production
configuration. Needs root for ``unshare -n``: CI is root, and this test fails,
never skips, where the namespace cannot be made.
"""

from __future__ import annotations

import json
from pathlib import Path

from netns import run_in_netns

N = 16
SCRIPT = Path(__file__).with_name("netns_dual_stack_net.py")


def test_a_mixed_network_on_distinct_ipv6_addresses() -> None:
    addresses = [f"198.18.0.{i + 1}" for i in range(N)] + [f"fd00::{i + 1:x}" for i in range(N)]
    proc = run_in_netns(SCRIPT, addresses=addresses, args=[str(N)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    # Production rules: one table entry per IP; the IPv6 tables fill from distinct addresses.
    assert out["ipv6_entries_distinct_ips"]
    assert all(out["tables"][str(i)]["6"] >= 8 for i in range(N) if i != N - 3)
    assert all(out["tables"][str(i)]["4"] >= 8 for i in range(N) if i != N - 2)
    assert all(a > 0 for a in out["accepted"])
    dual_peers = [[f"198.18.0.{i + 1}", 7000 + i] for i in (1, 2, 3)] + [[f"fd00::{i + 1:x}", 7000 + i] for i in (1, 2, 3)]
    assert out["dual_finds_dual"] == sorted(dual_peers)
    assert out["dual_finds_v6"] == [[f"fd00::{N - 1:x}", 7777]]
    assert out["v4_only_finds_dual"] == sorted(p for p in dual_peers if ":" not in str(p[0]))
    assert out["v4_only_finds_v6"] == []
    assert out["v6_only_finds_dual"] == sorted(p for p in dual_peers if ":" in str(p[0]))


LT_SCRIPT = Path(__file__).with_name("netns_libtorrent_ipv6.py")


def test_libtorrent_with_its_stock_per_ip_rules_on_distinct_ipv6_addresses() -> None:
    """libtorrent's defaults (one entry per IP range, 5 queries/s per IP) over IPv6, with our
    node under its production rules: each finds the other's peers, and we are in its tables."""
    n = 12
    # One /64 each: libtorrent keeps one routing-table entry per /64 by default.
    addresses = [f"fd00:0:0:{i + 1:x}::1" for i in range(n)] + ["fd00:0:0:100::1"]
    proc = run_in_netns(LT_SCRIPT, addresses=addresses, args=[str(n)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["stock"]
    assert out["our_table"] >= 6
    assert out["we_found"] == [["fd00:0:0:4::1", 6003], ["fd00:0:0:8::1", 6007]]
    assert out["accepted"] >= 8
    assert out["they_found"] == [[["fd00:0:0:100::1", 4711]]] * 2
    assert out["in_their_tables"] >= n // 2


NAMES_SCRIPT = Path(__file__).with_name("netns_names.py")


def test_names_resolve_per_family_and_the_cli_reaches_nodes_by_aaaa_records() -> None:
    """``resolve_address`` reads AAAA records; ``ping NAME`` and ``--bootstrap NAME`` reach a node
    that only an AAAA record (or both records) names. The names live in the namespace's /etc/hosts."""
    proc = run_in_netns(
        NAMES_SCRIPT,
        addresses=["198.18.0.1", "198.18.0.2", "198.18.0.3", "fd00::1", "fd00::2", "fd00::3"],
        hosts=[("fd00::1", "v6only.test"), ("198.18.0.1", "dual.test"), ("fd00::1", "dual.test")],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["dual"] == [["198.18.0.1", 6881], ["fd00::1", 6881]]
    assert out["v6only"] == [["fd00::1", 6881]] and out["v6only_any"] == ["fd00::1", 6881]
    assert out["v6only_as_v4"] == "no A record"
    code, ping = out["ping"]
    assert code == 0 and ping["address"] == "[fd00::1]:6881" and ping["ip"].startswith("[fd00::3]:")
    code, peers, err = out["peers"]
    assert code == 0, err
    assert peers == [["198.18.0.2", 7000], ["fd00::2", 7000]]
