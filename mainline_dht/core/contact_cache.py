"""A bounded cache of contacts that recently answered us, to start lookups close to their target.

This module owns the node's memory of *who answered, how fast, and when*, outside the
routing table. The table keeps BEP 5's shape (buckets of k = 8, split only around our
own ID), so it knows the space far from our ID only coarsely: a lookup seeded from it
alone spends its first round trips just getting near the target. The nodes that
answered our earlier queries (lookups, pings) are spread over the whole space; kept
here, they let a lookup begin a hop or two closer, and, with their measured RTT,
let it ask first the candidates known to answer fast.

Shape: the ID space is cut into ``slots`` equal ranges by the top bits of the ID,
and each range keeps at most ``capacity // slots`` entries, the most recent answers
winning. So however many answers arrive from one region (a lookup's last hops are
all near its target), the cache stays spread over the space, and memory is bounded
by ``capacity`` entries whatever the network sends.

An entry that stops answering (a query to it timed out) is dropped: the cache holds
only contacts whose last query was answered. Entries older than ``max_age`` seconds
are not handed out.

A second instance, larger and finer (:data:`DEFAULT_HEARD_CAPACITY`), keeps the
contacts the answers *named* (:meth:`RecentContacts.named`), unverified: a node
knows some hundreds of contacts that answered it, but thousands that were named to
it, so the closest of those usually shares a few more leading bits with a new
target (tools/bench_lookup.py). They only seed lookups, which check every
candidate as usual; one that does not answer leaves the cache.

Pure: no clock and no randomness; times arrive as ``now`` arguments.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, final

from ..errors import LocalProtocolError
from ..wire.contact import ID_LENGTH, Address, Contact
from .rtt import RttEstimate

__all__ = [
    "DEFAULT_CACHE_CAPACITY",
    "DEFAULT_CACHE_MAX_AGE",
    "DEFAULT_CACHE_SLOTS",
    "DEFAULT_HEARD_CAPACITY",
    "DEFAULT_HEARD_SLOTS",
    "CachedContact",
    "RecentContacts",
]

#: Entries kept at most. A few hundred bytes each: ~200 KB when full.
DEFAULT_CACHE_CAPACITY: Final = 1024
#: Ranges of the ID space (by the top 8 bits of the ID), each keeping
#: ``capacity // slots`` = 4 entries: a lookup seeded from a filled cache starts at
#: a node sharing at least 8 leading bits with its target.
DEFAULT_CACHE_SLOTS: Final = 256
#: Entries of the cache of contacts named in answers (unverified), ~1 MB when full:
#: 20 lookups name a few thousand distinct contacts. On 30,000 simulated nodes
#: (tools/bench_lookup.py, warm), seeding lookups from it too brought the closest
#: seed 3 bits nearer the target and the median time to first peer from 2.1 to
#: 1.7 RTT, with 20 queries per lookup instead of 23.
DEFAULT_HEARD_CAPACITY: Final = 4096
#: Its ranges (top 10 bits of the ID), 4 entries each.
DEFAULT_HEARD_SLOTS: Final = 1024
#: Seconds an answer vouches for a contact: BEP 5's "good" window (15 minutes).
DEFAULT_CACHE_MAX_AGE: Final = 15 * 60.0


@final
@dataclass(slots=True, eq=False)
class CachedContact:
    """One contact that answered us.

    Attributes:
        contact: its node ID and address.
        last_answer: when it last answered (seconds, the driver's clock).
        rtt: its round-trip-time estimate (``samples`` 0 if no answer was timed).
    """

    contact: Contact
    last_answer: float
    rtt: RttEstimate = field(default_factory=RttEstimate)


@final
class RecentContacts:
    """The bounded, space-spread cache of contacts that recently answered us.

    Args:
        capacity: entries kept at most (split evenly between the slots).
        slots: how many equal ranges of the ID space share the capacity; a power
            of two, at most ``capacity``.
        max_age: seconds after its last answer an entry is no longer handed out.

    Raises:
        LocalProtocolError: for a non-positive capacity or age, or ``slots`` not a
            power of two within ``[1, capacity]``.
    """

    __slots__ = ("_per_slot", "_shift", "_slots", "_by_addr", "_max_age")

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CACHE_CAPACITY,
        slots: int = DEFAULT_CACHE_SLOTS,
        max_age: float = DEFAULT_CACHE_MAX_AGE,
    ) -> None:
        if capacity < 1 or not 1 <= slots <= capacity or slots & (slots - 1):
            raise LocalProtocolError("capacity must be >= 1 and slots a power of two in [1, capacity]")
        if not max_age > 0:
            raise LocalProtocolError("max_age must be positive (seconds)")
        self._per_slot = capacity // slots
        self._shift = ID_LENGTH * 8 - (slots.bit_length() - 1)
        self._slots: dict[int, list[CachedContact]] = {}
        self._by_addr: dict[Address, CachedContact] = {}
        self._max_age = max_age

    def __len__(self) -> int:
        return len(self._by_addr)

    def __iter__(self) -> Iterator[CachedContact]:
        """Every entry, fresh or not, in no particular order."""
        return iter(list(self._by_addr.values()))

    def __contains__(self, contact: object) -> bool:
        if not isinstance(contact, Contact):
            return False
        entry = self._by_addr.get(contact.addr)
        return entry is not None and entry.contact == contact

    def get(self, contact: Contact) -> CachedContact | None:
        """The entry for exactly ``contact`` (same ID and address), or ``None``."""
        entry = self._by_addr.get(contact.addr)
        if entry is None or entry.contact.id != contact.id:
            return None
        return entry

    def answered(self, contact: Contact, now: float, rtt: float | None = None) -> None:
        """Record that ``contact`` answered one of our queries, ``rtt`` seconds after we asked.

        A known contact's estimate takes the sample; a new one enters its slot,
        pushing out the slot's longest-silent entry when full. An address that
        answers under a new ID replaces its old entry (one entry per address).
        """
        if len(contact.id) != ID_LENGTH:
            return
        entry = self._by_addr.get(contact.addr)
        if entry is not None and entry.contact.id != contact.id:
            self._drop(entry)
            entry = None
        if entry is None:
            entry = CachedContact(contact, now)
            slot = self._slots.setdefault(self._slot_of(contact.id), [])
            if len(slot) >= self._per_slot:
                self._drop(min(slot, key=lambda e: e.last_answer))
            slot.append(entry)
            self._by_addr[contact.addr] = entry
        entry.last_answer = max(entry.last_answer, now)
        if rtt is not None:
            entry.rtt.observe(rtt)

    def named(self, contact: Contact, now: float) -> None:
        """Record that an answer named ``contact`` (unverified, no round trip).

        As :meth:`answered` without an RTT sample: for the cache of contacts
        named in answers (see the module docstring).
        """
        self.answered(contact, now)

    def failed(self, contact: Contact) -> None:
        """Record that a query to ``contact`` went unanswered: it leaves the cache."""
        entry = self.get(contact)
        if entry is not None:
            self._drop(entry)

    def closest(self, target: bytes, count: int, now: float) -> list[Contact]:
        """The ``count`` fresh entries nearest ``target`` by XOR distance, nearest first.

        Args:
            target: a 20-byte ID or infohash.
            count: how many at most.
            now: the current time; entries silent for more than ``max_age`` are skipped.
        """
        if count <= 0 or not self._by_addr:
            return []
        t = int.from_bytes(target, "big")
        horizon = now - self._max_age
        fresh = (
            (int.from_bytes(e.contact.id, "big") ^ t, e.contact)
            for e in self._by_addr.values()
            if e.last_answer >= horizon
        )
        return [c for _, c in heapq.nsmallest(count, fresh, key=lambda pair: pair[0])]

    def fresh(self, now: float) -> list[CachedContact]:
        """Every entry that answered within ``max_age``, most recent answer first."""
        horizon = now - self._max_age
        return sorted(
            (e for e in self._by_addr.values() if e.last_answer >= horizon),
            key=lambda e: e.last_answer,
            reverse=True,
        )

    def rtt_of(self, contact: Contact) -> RttEstimate | None:
        """``contact``'s RTT estimate, if it is cached and was timed."""
        entry = self.get(contact)
        if entry is None or not entry.rtt.samples:
            return None
        return entry.rtt

    def expected_rtt(self, contact: Contact) -> float:
        """How soon ``contact`` is expected to answer (seconds): its smoothed RTT if it
        is cached and was timed, else ``inf`` (unknown). A cached contact's last
        query was answered: one that timed out has left the cache."""
        entry = self.get(contact)
        if entry is None or not entry.rtt.samples:
            return math.inf
        return entry.rtt.srtt

    # -- internals -------------------------------------------------------------

    def _slot_of(self, node_id: bytes) -> int:
        return int.from_bytes(node_id, "big") >> self._shift

    def _drop(self, entry: CachedContact) -> None:
        key = self._slot_of(entry.contact.id)
        slot = self._slots.get(key)
        if slot is not None:
            slot.remove(entry)
            if not slot:
                del self._slots[key]
        if self._by_addr.get(entry.contact.addr) is entry:
            del self._by_addr[entry.contact.addr]
