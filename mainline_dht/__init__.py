"""mainline-dht: the BitTorrent Mainline DHT (BEP 5) for Python, on trio."""

from __future__ import annotations

from ._version import __version__ as __version__
from .contact import Address as Address
from .contact import Contact as Contact
from .errors import BootstrapError as BootstrapError
from .errors import DecodeError as DecodeError
from .errors import DHTError as DHTError
from .errors import KRPCError as KRPCError
from .errors import LocalProtocolError as LocalProtocolError
from .errors import QueryTimeout as QueryTimeout

__all__ = [
    "__version__",
    "Address",
    "Contact",
    "DHTError",
    "DecodeError",
    "LocalProtocolError",
    "KRPCError",
    "QueryTimeout",
    "BootstrapError",
]
