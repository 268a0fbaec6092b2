"""A throwaway PostgreSQL server for tests and benchmarks.

``initdb`` in a temporary directory, ``pg_ctl start`` listening on a Unix
socket only (no TCP port at all), stopped and deleted at the end. PostgreSQL
refuses to run as root, so when we are root the server runs as the
``postgres`` user (or ``--user``); otherwise as ourselves.

Usage::

    with postgres_server() as server:
        url = server.url("crawl")      # creates the database first
        ...

It is a test harness, not part of the installed package; tests find it
because ``tests/conftest.py`` puts ``tools/`` on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

__all__ = ["PostgresServer", "PostgresUnavailable", "find_binaries", "postgres_server"]

#: Where Debian puts the server binaries when they are not on PATH.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl) are not installed."""


def find_binaries() -> Path:
    """Return the directory holding ``initdb`` and ``pg_ctl``.

    Raises:
        PostgresUnavailable: neither on PATH nor in Debian's directory.
    """
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).resolve().parent
    for candidate in sorted(glob.glob(DEBIAN_BIN_GLOB), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise PostgresUnavailable(
        "PostgreSQL's initdb and pg_ctl were not found (on PATH or in "
        f"{DEBIAN_BIN_GLOB}); install the server, e.g. 'apt-get install postgresql'"
    )


@dataclass
class PostgresServer:
    """A running throwaway server: its socket directory and how to reach it."""

    root: Path
    socket_dir: Path
    bin_dir: Path
    run_as: str | None
    port: int = 5432
    databases: set[str] = field(default_factory=set)

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for ``database`` (created on first use) over the Unix socket."""
        if database not in self.databases and database != "postgres":
            import psycopg

            with psycopg.connect(self._url("postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
            self.databases.add(database)
        return self._url(database)

    def _url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={quote(str(self.socket_dir), safe='')}&port={self.port}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command through ``psql``; return its output."""
        psql = shutil.which("psql") or str(self.bin_dir / "psql")
        out = subprocess.run(
            [psql, "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-Atc", sql],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return out.stdout


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    if user is None:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is not None:
        return [runuser, "-u", user, "--", *cmd]
    return ["su", user, "-s", "/bin/sh", "-c", " ".join(map(_shell_quote, cmd))]


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@contextlib.contextmanager
def postgres_server(*, user: str = "postgres") -> Iterator[PostgresServer]:
    """Start a throwaway server; stop it and delete its files on exit.

    Args:
        user: the account to run the server as when we are root.

    Raises:
        PostgresUnavailable: the binaries are missing.
        subprocess.CalledProcessError: initdb or pg_ctl failed (output attached).
    """
    bin_dir = find_binaries()
    run_as = user if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="mainline-dht-pg-"))
    data = root / "data"
    sockets = root / "sockets"
    sockets.mkdir()
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(root=root, socket_dir=sockets, bin_dir=bin_dir, run_as=run_as)
    started = False
    try:
        subprocess.run(
            _as_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--no-sync"], run_as),
            check=True, capture_output=True, timeout=120,
        )
        options = (f"-k {sockets} -c listen_addresses='' -p {server.port} -c fsync=off "
                   "-c max_connections=100 -c shared_buffers=32MB")
        subprocess.run(
            _as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"),
                      "-w", "-t", "60", "start"], run_as),
            check=True, capture_output=True, timeout=90,
        )
        started = True
        yield server
    finally:
        if started:
            subprocess.run(
                _as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], run_as),
                capture_output=True, timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
