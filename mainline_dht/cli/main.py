"""The ``mainline-dht`` entry point: the parser built from one module per
command, logging on stderr, and expected failures turned into one-line messages.

Exit status: 0 success; 1 a lookup completed without results (or the demo missed
some); 2 errors (bad arguments, nothing answered, a port in use); 130
interrupted; 141 stdout was closed early (``| head``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

import trio

from .. import __version__
from ..errors import DHTError
from . import crawl, crawl_status, demo, get, metadata, node, peers, ping, put
from ._common import EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_INTERRUPTED, CLIError, Status, make_parents, terminal_safe

#: The command modules, in the order ``--help`` lists them. Each has
#: ``register(subparsers, parents)``, which sets the parser's ``run`` default.
COMMAND_MODULES: tuple[ModuleType, ...] = (peers, get, put, metadata, node, ping, crawl, crawl_status, demo)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="mainline-dht",
        description="Talk to the BitTorrent Mainline DHT (BEP 5): find peers for a torrent, "
        "run a node, or try it all on a DHT of our own on loopback.",
        epilog="Try 'mainline-dht demo' for a self-contained tour (no internet needed). "
        "'mainline-dht COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="print debug logs on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    parents = make_parents()
    for module in COMMAND_MODULES:
        module.register(sub, parents)
    return parser


class _Formatter(logging.Formatter):
    """``mainline-dht: warning: ...`` by default; timestamps and logger names with ``-v``."""

    def __init__(self, verbose: bool) -> None:
        if verbose:
            super().__init__("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        else:
            super().__init__("mainline-dht: %(levelname)s: %(message)s")
        self.verbose = verbose

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Log messages may quote remote text (a KRPC error's message, say).
        record.message = terminal_safe(record.message, None)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        if not self.verbose:
            record = logging.makeLogRecord(record.__dict__)
            record.levelname = record.levelname.lower()
        return super().format(record)


def _configure_logging(verbosity: int) -> None:
    """Send the library's logs to stderr: warnings, or everything with ``-v``."""
    logger = logging.getLogger("mainline_dht")
    for handler in list(logger.handlers):
        if getattr(handler, "_mainline_dht_cli", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._mainline_dht_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter(verbosity > 0))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING)


def _error(text: str) -> None:
    if Status.active is not None:
        Status.active.clear()
    print(f"mainline-dht: error: {terminal_safe(text, None)}", file=sys.stderr, flush=True)


def _expected(exc: BaseException) -> BaseException | None:
    """The failure to report from ``exc``: itself, or the lone expected one in a group."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions]
        if len(leaves) != 1:
            ki = exc.subgroup(KeyboardInterrupt)
            return KeyboardInterrupt() if ki is not None else None
        exc = leaves[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    _configure_logging(args.verbose + getattr(args, "sub_verbose", 0))
    try:
        code: int = trio.run(args.run, args)
        return code
    except BaseException as raised:  # noqa: BLE001 - sorted below; anything unexpected is re-raised
        exc = _expected(raised)
        if isinstance(exc, BrokenPipeError):  # stdout closed early (| head): stop quietly
            try:  # so that the interpreter's final flush does not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass  # not a real file
            return EXIT_BROKEN_PIPE
        if isinstance(exc, KeyboardInterrupt):
            _error("interrupted")
            return EXIT_INTERRUPTED
        if isinstance(exc, (CLIError, DHTError)):
            _error(str(exc))
            return EXIT_ERROR
        if isinstance(exc, OSError):
            _error(exc.strerror or str(exc))
            return EXIT_ERROR
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
