"""Run a Python script inside a private network namespace, for tests on many IPv6 addresses.

``unshare -n`` (root, as CI runs) gives the script a network namespace of its
own: only ``lo`` exists, brought up here, with the test's addresses added to it
(``fd00::/8`` for IPv6 with ``nodad``, ``198.18.0.0/15`` for IPv4). Traffic
never leaves the namespace, and the namespace ends with the script.

With ``hosts``, the script also gets a mount namespace whose ``/etc/hosts``
holds those names, so a test can resolve names to A and AAAA records without
DNS; the machine's own ``/etc/hosts`` is untouched.

Tests that need a namespace call :func:`run_in_netns` and FAIL (never skip)
when it cannot be made: CI runs as root and must run them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["run_in_netns"]

REPO = Path(__file__).resolve().parent.parent


def run_in_netns(
    script: Path,
    *,
    addresses: Sequence[str],
    args: Sequence[str] = (),
    timeout: float = 120.0,
    hosts: Sequence[tuple[str, str]] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``python script args...`` in a fresh network namespace holding ``addresses`` on ``lo``.

    Args:
        script: the Python file to run (with this interpreter, the repository on the path).
        addresses: IP addresses to add to ``lo``, each from ``fd00::/8`` or ``198.18.0.0/15``.
        args: the script's arguments.
        timeout: seconds before the run is killed.
        hosts: (address, name) lines for the namespace's own ``/etc/hosts``.

    Returns:
        The finished process, stdout and stderr as text.

    Raises:
        AssertionError: an address outside the private ranges, or the namespace
            could not be set up (not root, no ``unshare``/``ip``): the output says why.
    """
    setup = ["ip link set lo up"]
    for addr in addresses:
        if ":" in addr:
            assert addr.lower().startswith("fd"), f"{addr} is not in fd00::/8"
            setup.append(f"ip addr add {addr}/128 dev lo nodad")
        else:
            assert addr.startswith(("198.18.", "198.19.")), f"{addr} is not in 198.18.0.0/15"
            setup.append(f"ip addr add {addr}/32 dev lo")
    unshare = ["unshare", "-n"]
    hosts_file = None
    if hosts:
        hosts_file = tempfile.NamedTemporaryFile("w", prefix="netns-hosts-", suffix=".txt", delete=False)
        with hosts_file:
            hosts_file.write(Path("/etc/hosts").read_text() + "".join(f"{a} {n}\n" for a, n in hosts))
        unshare.append("-m")  # a mount namespace too, so /etc/hosts changes only inside
        setup.append(f"mount --bind {shlex.quote(hosts_file.name)} /etc/hosts")
    command = " && ".join(setup + [shlex.join([sys.executable, str(script), *args])])
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(
            [*unshare, "sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=REPO,
        )
    except FileNotFoundError as exc:
        raise AssertionError(f"cannot make a network namespace: {exc}") from None
    finally:
        if hosts_file is not None:
            os.unlink(hosts_file.name)
    if proc.returncode != 0 and "unshare" in proc.stderr and "Operation not permitted" in proc.stderr:
        raise AssertionError(f"cannot make a network namespace (run as root): {proc.stderr.strip()}")
    return proc
