"""The ``mainline-dht`` command line: one module per command.

:mod:`.main` builds the parser from the command modules (:mod:`.peers`,
:mod:`.node`, :mod:`.ping`, :mod:`.demo`) and runs the chosen one;
:mod:`._common` holds what they share. This package is the only part of
mainline-dht that writes to the terminal; the library never imports it.
"""

from __future__ import annotations

from ._common import EXIT_BROKEN_PIPE as EXIT_BROKEN_PIPE
from ._common import EXIT_ERROR as EXIT_ERROR
from ._common import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from ._common import EXIT_NOT_FOUND as EXIT_NOT_FOUND
from ._common import EXIT_OK as EXIT_OK
from ._common import CLIError as CLIError
from ._common import Status as Status
from ._common import emit as emit
from ._common import format_seconds as format_seconds
from ._common import run_until_signal as run_until_signal
from .main import build_parser as build_parser
from .main import main as main
from .peers import LookupResult as LookupResult
from .peers import lookup_and_print as lookup_and_print

__all__ = [
    "main",
    "build_parser",
    "CLIError",
    "LookupResult",
    "Status",
    "emit",
    "format_seconds",
    "lookup_and_print",
    "run_until_signal",
    "EXIT_OK",
    "EXIT_NOT_FOUND",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE",
]
