"""Fixtures shared by the test modules."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _reset_cli_logging() -> Iterator[None]:
    """Drop the stderr handler ``main`` installs (it points at this test's captured stderr)."""
    yield
    logger = logging.getLogger("mainline_dht")
    for handler in list(logger.handlers):
        if getattr(handler, "_mainline_dht_cli", False):
            logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
