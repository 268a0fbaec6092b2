"""The BEP 5 routing table: k-buckets over the 160-bit ID space.

Owns: which contacts we keep, their good/questionable/bad state, bucket
splitting, replacement caches, the per-IP limit, bucket refresh bookkeeping and
answering "which known nodes are closest to X". It decides; the caller acts: when
the table wants a node pinged it says so in its return value.

Pure: no I/O, no clock (time arrives as ``now`` in seconds, on the caller's
monotonic timeline), no randomness. Must not import trio, socket, time, asyncio or
os. Saving to disk lives in :mod:`mainline_dht.runtime.state_file`.

Trust model (BEP 5 plus libtorrent's practice):

* A node that answered one of *our* queries (matched by transaction ID and
  address) is verified and may enter the table at once (``responded=True``).
* A node that merely queried us is unverified: its source address may be spoofed.
  It never enters the table directly; if there would be room, the result asks the
  caller to ping it, and the answer brings it in.
* Entries restored by :meth:`RoutingTable.from_state` are the one exception: they
  start unverified (questionable) and go bad on their first failure.
"""

from __future__ import annotations

import enum
import logging
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..wire.contact import ID_LENGTH, Address, Contact
from .node_id import ID_SPACE, is_id_valid_for_ip

__all__ = [
    "DEFAULT_K",
    "GOOD_WINDOW",
    "BAD_AFTER_FAILURES",
    "REFRESH_INTERVAL",
    "DEFAULT_REPLACEMENT_CACHE",
    "VERIFY_RETRY_INTERVAL",
    "EVICTION_PING_INTERVAL",
    "STATE_VERSION",
    "NodeStatus",
    "Outcome",
    "AddResult",
    "TableEntry",
    "Bucket",
    "RoutingTable",
]

log = logging.getLogger(__name__)

#: Contacts per bucket (BEP 5: "Each bucket can only hold K nodes, currently eight").
DEFAULT_K: Final = 8

#: Seconds a node stays good after it answered us, or after it queried us if it
#: has ever answered (BEP 5: "within the last 15 minutes").
GOOD_WINDOW: Final = 15 * 60.0

#: Consecutive unanswered queries after which a node that *has* answered before is
#: bad. BEP 5 says "fails to respond to multiple queries in a row"; two is the
#: least that is "multiple", and it tolerates one lost datagram (on a path losing
#: 5% each way, two losses in a row happen about 1% of the time). libtorrent
#: evicts a node on its first failure when a replacement is waiting and otherwise
#: after ``dht_max_fail_count`` (20). A node that never answered is bad after its
#: first failure, as libtorrent drops unconfirmed nodes at once.
BAD_AFTER_FAILURES: Final = 2

#: Seconds after which an unchanged bucket needs a refresh lookup (BEP 5: 15 min).
REFRESH_INTERVAL: Final = 15 * 60.0

#: Candidates kept per bucket to replace entries that go bad. BEP 5 leaves the
#: size open; libtorrent keeps a replacement bucket as large as the live bucket.
DEFAULT_REPLACEMENT_CACHE: Final = 8

#: Seconds before the table asks again to verify (ping) the same unknown address.
#: A node running a lookup sends us several queries in a second; one ping is
#: enough. Long enough to outlast a query timeout, short enough to retry soon.
VERIFY_RETRY_INTERVAL: Final = 30.0

#: Seconds before the table asks again to ping the same questionable entry to
#: decide an eviction (BEP 5: questionable nodes are pinged before replacement).
EVICTION_PING_INTERVAL: Final = 30.0

#: Upper bound on the unknown addresses remembered as "verification asked".
_MAX_VERIFYING: Final = 4096

#: Version of the dict :meth:`RoutingTable.to_state` returns.
STATE_VERSION: Final = 1


class NodeStatus(enum.Enum):
    """BEP 5 node states."""

    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


class Outcome(enum.Enum):
    """What :meth:`RoutingTable.heard_from` did with a contact."""

    ADDED = "added"
    """The contact is now in the table."""
    UPDATED = "updated"
    """The contact was already in the table; its times were updated."""
    VERIFY = "verify"
    """Unverified contact that would fit: ping it, and report the answer with
    ``responded=True`` to admit it."""
    PENDING = "pending"
    """Unverified contact whose verification ping was requested less than
    :data:`VERIFY_RETRY_INTERVAL` seconds ago: nothing to do yet."""
    REPLACEMENT_CACHED = "replacement_cached"
    """The bucket is full: the contact waits in the bucket's replacement cache."""
    REJECTED = "rejected"
    """Not admitted: our own ID, read-only, a clash with a good entry, or the IP limit."""


@dataclass(frozen=True, slots=True)
class AddResult:
    """The table's answer to :meth:`RoutingTable.heard_from`.

    Attributes:
        outcome: what happened to the contact.
        ping: *other* contacts (questionable entries of a full bucket, least
            recently seen first) the caller should ping so a bad one can be
            replaced (BEP 5). For :attr:`Outcome.VERIFY` the contact to ping is
            the one passed in; it is not repeated here.
    """

    outcome: Outcome
    ping: tuple[Contact, ...] = ()


_ADDED: Final = AddResult(Outcome.ADDED)
_UPDATED: Final = AddResult(Outcome.UPDATED)
_VERIFY: Final = AddResult(Outcome.VERIFY)
_PENDING: Final = AddResult(Outcome.PENDING)
_REJECTED: Final = AddResult(Outcome.REJECTED)


@dataclass(slots=True, eq=False)
class TableEntry:
    """What the table knows about one contact (a live entry or a replacement).

    Attributes:
        contact: node ID and address.
        first_seen: when we first heard of it (seconds, caller's clock).
        last_response: when it last answered one of our queries, ``None`` if never.
        last_query: when it last sent us a query, ``None`` if never.
        failures: our queries it failed to answer in a row.
        rtt: smoothed round-trip time in seconds, ``None`` until measured.
        id_int: the node ID as an integer (for cheap distance sums).
        last_ping_request: when the table last asked the caller to ping it.
    """

    contact: Contact
    first_seen: float
    last_response: float | None = None
    last_query: float | None = None
    failures: int = 0
    rtt: float | None = None
    id_int: int = field(default=-1, repr=False)
    last_ping_request: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.id_int < 0:
            self.id_int = int.from_bytes(self.contact.id, "big")

    @property
    def id(self) -> bytes:
        """The node ID (20 bytes)."""
        return self.contact.id

    @property
    def addr(self) -> Address:
        """The UDP address."""
        return self.contact.addr

    @property
    def last_seen(self) -> float:
        """The latest time we heard from it (a response or a query), else ``first_seen``."""
        seen = self.first_seen
        if self.last_response is not None and self.last_response > seen:
            seen = self.last_response
        if self.last_query is not None and self.last_query > seen:
            seen = self.last_query
        return seen

    @property
    def is_bad(self) -> bool:
        """Whether it failed too often (BAD does not depend on the clock)."""
        return self.failures >= BAD_AFTER_FAILURES or (self.failures > 0 and self.last_response is None)

    def status(self, now: float) -> NodeStatus:
        """Return the BEP 5 state of this node at time ``now`` (seconds).

        * BAD: failed :data:`BAD_AFTER_FAILURES` queries in a row (one, if it
          has never answered).
        * GOOD: answered one of our queries within :data:`GOOD_WINDOW`, or has
          answered at some time and queried us within :data:`GOOD_WINDOW`, and
          has not failed since its last answer.
        * QUESTIONABLE: otherwise. A node that never answered is never GOOD.
        """
        if self.is_bad:
            return NodeStatus.BAD
        if self.last_response is None or self.failures:
            return NodeStatus.QUESTIONABLE
        horizon = now - GOOD_WINDOW
        if self.last_response >= horizon or (self.last_query is not None and self.last_query >= horizon):
            return NodeStatus.GOOD
        return NodeStatus.QUESTIONABLE

    def _is_good(self, horizon: float) -> bool:
        lr = self.last_response
        if lr is None or self.failures:
            return False
        lq = self.last_query
        return lr >= horizon or (lq is not None and lq >= horizon)


@dataclass(slots=True, eq=False)
class Bucket:
    """A k-bucket: the contacts whose integer IDs lie in ``[lo, hi)``.

    Bucket ranges are aligned powers of two (they come from halving the whole
    space), so ``hi - lo`` is a power of two and ``lo`` a multiple of it.

    Attributes:
        lo: inclusive lower bound of the range.
        hi: exclusive upper bound.
        entries: live contacts, at most k.
        replacements: candidates waiting for an entry to go bad, oldest first.
        last_changed: when a contact was added or replaced, a contact answered
            us, or a lookup covered this range (BEP 5 "last changed").
    """

    lo: int
    hi: int
    entries: list[TableEntry] = field(default_factory=list)
    replacements: list[TableEntry] = field(default_factory=list)
    last_changed: float = 0.0

    def __contains__(self, id_int: object) -> bool:
        return isinstance(id_int, int) and self.lo <= id_int < self.hi

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def range(self) -> tuple[int, int]:
        """``(lo, hi)``."""
        return (self.lo, self.hi)

    def _replacement(self, node_id: bytes) -> TableEntry | None:
        for r in self.replacements:
            if r.contact.id == node_id:
                return r
        return None


def _id_valid(contact: Contact) -> bool:
    """BEP 42: whether the contact's ID is valid for its address (local ones always are)."""
    try:
        return is_id_valid_for_ip(contact.id, contact.addr[0])
    except ValueError:  # not an IP address: nothing to check
        return True


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


class RoutingTable:
    """A BEP 5 routing table around our own node ID.

    Args:
        own_id: our 20-byte node ID.
        k: bucket size (BEP 5: 8).
        max_per_ip: most table entries sharing one IP address (``None``:
            unlimited). Loopback addresses are exempt, so many nodes on one host
            can form a test network; pass ``exempt_loopback=False`` to count them.
        replacement_cache: replacement candidates kept per bucket.
        now: the current time (seconds), the start of every bucket's refresh clock.
        exempt_loopback: see ``max_per_ip``.
        prefer_valid_ids: BEP 42 preference when choosing whom to keep: a verified
            newcomer whose ID is valid for its address, bound for a full bucket with
            no bad entry, takes the place of an entry whose ID is not valid for its
            public address (that one becomes a replacement). Sybils choose IDs
            freely, not addresses, so they are the ones displaced.
        enforce_valid_ids: BEP 42 enforcement: contacts whose ID is not valid for
            their public address never enter the table. Local addresses (private,
            loopback, link-local) are exempt from both (BEP 42).

    Raises:
        ValueError: ``own_id`` is not 20 bytes or a limit is not positive.
    """

    def __init__(
        self,
        own_id: bytes,
        *,
        k: int = DEFAULT_K,
        max_per_ip: int | None = 1,
        replacement_cache: int = DEFAULT_REPLACEMENT_CACHE,
        now: float = 0.0,
        exempt_loopback: bool = True,
        prefer_valid_ids: bool = True,
        enforce_valid_ids: bool = False,
    ) -> None:
        if len(own_id) != ID_LENGTH:
            raise ValueError(f"own_id must be {ID_LENGTH} bytes, not {len(own_id)}")
        if k < 1 or replacement_cache < 0 or (max_per_ip is not None and max_per_ip < 1):
            raise ValueError("k and max_per_ip must be positive, replacement_cache non-negative")
        self._own_id = bytes(own_id)
        self._own_int = int.from_bytes(own_id, "big")
        self._k = k
        self._max_per_ip = max_per_ip
        self._replacement_cache = replacement_cache
        self._exempt_loopback = exempt_loopback
        self._prefer_valid_ids = prefer_valid_ids
        self._enforce_valid_ids = enforce_valid_ids
        self._buckets: list[Bucket] = [Bucket(0, ID_SPACE, last_changed=now)]
        self._los: list[int] = [0]
        self._by_id: dict[bytes, TableEntry] = {}
        self._by_addr: dict[Address, TableEntry] = {}
        self._by_ip: dict[str, list[TableEntry]] = {}
        # Unknown addresses we asked the caller to ping, oldest first. OrderedDict:
        # evicting from the front of a plain dict is slow (tombstones).
        self._verifying: OrderedDict[Address, float] = OrderedDict()
        self._now = now
        # Buckets to refill from their replacement caches once an operation ends.
        self._holes: list[Bucket] = []

    # --- read-only views ------------------------------------------------------------

    @property
    def own_id(self) -> bytes:
        """Our node ID."""
        return self._own_id

    @property
    def k(self) -> int:
        """Bucket size."""
        return self._k

    @property
    def buckets(self) -> Sequence[Bucket]:
        """The buckets, ordered by range; together they cover ``[0, 2**160)``."""
        return tuple(self._buckets)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[TableEntry]:
        for bucket in self._buckets:
            yield from bucket.entries

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def has_ip(self, ip: str) -> bool:
        """Whether a live entry has the IP address ``ip`` (O(1))."""
        return ip in self._by_ip

    def get(self, node_id: bytes) -> TableEntry | None:
        """Return the live entry for ``node_id``, or ``None`` (replacements excluded)."""
        return self._by_id.get(node_id)

    def bucket_for(self, node_id: bytes) -> Bucket:
        """Return the bucket whose range holds ``node_id``."""
        return self._buckets[bisect_right(self._los, int.from_bytes(node_id, "big")) - 1]

    def counts(self, now: float) -> dict[NodeStatus, int]:
        """Return how many live entries are in each state at ``now``."""
        out = dict.fromkeys(NodeStatus, 0)
        for entry in self._by_id.values():
            out[entry.status(now)] += 1
        return out

    def questionable(self, now: float) -> list[Contact]:
        """Return the questionable entries to ping, least recently seen first (BEP 5)."""
        found = [e for e in self._by_id.values() if e.status(now) is NodeStatus.QUESTIONABLE]
        found.sort(key=lambda e: e.last_seen)
        return [e.contact for e in found]

    def closest(
        self,
        target: bytes,
        count: int = DEFAULT_K,
        *,
        include_questionable: bool = True,
        now: float | None = None,
    ) -> list[Contact]:
        """Return up to ``count`` known contacts nearest ``target`` by XOR distance.

        BAD entries are never returned; with ``include_questionable=False`` only
        GOOD ones are (BEP 5 ``find_node``: "the K closest good nodes").

        Args:
            target: a 20-byte ID or infohash.
            count: the most contacts to return.
            include_questionable: also return questionable entries.
            now: the time to judge GOOD by (seconds); default: the latest ``now``
                any other method was given. Only used with
                ``include_questionable=False``.

        Returns:
            Contacts sorted nearest first: the first ``count`` of every eligible
            entry sorted by ``distance(id, target)``.
        """
        if count <= 0:
            return []
        t = int.from_bytes(target, "big")
        buckets = self._buckets
        bad_after = BAD_AFTER_FAILURES
        horizon = (self._now if now is None else now) - GOOD_WINDOW

        def eligible(bucket: Bucket) -> list[tuple[int, Contact]]:
            if include_questionable:
                # Inlined ``not e.is_bad``: this is the hot path of find_node.
                chunk = [
                    (e.id_int ^ t, e.contact)
                    for e in bucket.entries
                    if e.failures == 0 or (e.failures < bad_after and e.last_response is not None)
                ]
            else:
                chunk = [(e.id_int ^ t, e.contact) for e in bucket.entries if e._is_good(horizon)]
            chunk.sort()
            return chunk

        # Buckets are aligned blocks, so the XOR distances from ``t`` to the IDs of
        # two different buckets form disjoint intervals; a bucket's interval starts
        # at (lo ^ t) with the bits below the block size cleared. Visiting buckets
        # by that key and sorting inside each gives the global order. The bucket
        # holding ``t`` comes first (key 0) and usually has enough by itself.
        home = bisect_right(self._los, t) - 1
        out = [c for _, c in eligible(buckets[home])]
        if len(out) < count and len(buckets) > 1:
            keyed = [((b.lo ^ t) & -(b.hi - b.lo), i) for i, b in enumerate(buckets) if b.entries and i != home]
            keyed.sort()
            for _, i in keyed:
                out.extend([c for _, c in eligible(buckets[i])])
                if len(out) >= count:
                    break
        del out[count:]
        return out

    def buckets_to_refresh(self, now: float) -> list[tuple[int, int]]:
        """Return ``(lo, hi)`` of every bucket unchanged for :data:`REFRESH_INTERVAL` s.

        BEP 5: the caller refreshes each by looking up a random ID in its range
        (:func:`~mainline_dht.core.node_id.random_id_in_range`) and then calls
        :meth:`touch_bucket`.
        """
        self._clock(now)
        limit = now - REFRESH_INTERVAL
        return [(b.lo, b.hi) for b in self._buckets if b.last_changed <= limit]

    def touch_bucket(self, target: bytes, now: float) -> None:
        """Record that a lookup for ``target`` was just done (BEP 5 refresh)."""
        self._clock(now)
        self.bucket_for(target).last_changed = now

    # --- learning about nodes -------------------------------------------------------

    def heard_from(
        self,
        contact: Contact,
        now: float,
        *,
        responded: bool,
        read_only: bool = False,
        rtt: float | None = None,
    ) -> AddResult:
        """Record a valid message from ``contact`` and maybe admit it (BEP 5).

        Call it for every valid message a node sends us.

        Args:
            contact: the sender's node ID and the address the message came from.
            now: current time in seconds.
            responded: ``True`` if the message answered one of our queries
                (verified: the node is admitted at once when there is room);
                ``False`` if it is a query to us (unverified: the result says
                :attr:`Outcome.VERIFY` when a ping should confirm it first).
            read_only: BEP 43 ``ro`` = 1: never add the sender.
            rtt: the round-trip time of the answered query (seconds), if known.

        Returns:
            What happened, and any other contacts to ping. Rules:

            * our own ID and read-only nodes are REJECTED;
            * a known ID from a new address is REJECTED unless the old entry is
              bad (an ID-hijack defence); a new ID at a known address replaces
              the old one only if that one is not good;
            * at most ``max_per_ip`` entries share an IP;
            * a full bucket splits if it holds our own ID; otherwise a bad entry
              is replaced at once, or else the newcomer goes to the replacement
              cache and the least recently seen questionable entry (if any) is
              returned in ``ping``.
        """
        self._clock(now)
        node_id, addr = contact
        if read_only or len(node_id) != ID_LENGTH or node_id == self._own_id:
            return _REJECTED
        if self._enforce_valid_ids and not _id_valid(contact):
            return _REJECTED
        entry = self._by_id.get(node_id)
        if entry is not None:
            if entry.contact.addr == addr:
                if responded:
                    self._answered(entry, now, rtt)
                    self.bucket_for(node_id).last_changed = now
                else:
                    entry.last_query = now
                return _UPDATED
            return self._moved(entry, contact, now, responded, rtt)

        id_int = int.from_bytes(node_id, "big")
        bucket = self._buckets[bisect_right(self._los, id_int) - 1]
        clash = self._by_addr.get(addr)
        if clash is not None and clash._is_good(now - GOOD_WINDOW):
            # BEP 5 leaves this open; libtorrent treats a new ID at a known
            # address as suspect. Keep the good entry.
            return _REJECTED
        if not responded:
            return self._unverified(contact, id_int, bucket, clash, now)

        self._verifying.pop(addr, None)
        cached = bucket._replacement(node_id)
        if cached is not None:
            bucket.replacements.remove(cached)
            if cached.contact.addr != addr:
                cached = None
        if cached is not None:
            new = cached
        else:
            new = TableEntry(contact, now, id_int=id_int)
        self._answered(new, now, rtt)
        if clash is not None:
            # The address now answers with another ID: the old one is gone.
            self._holes.append(self._unlink(clash))
        if self._ip_room(addr[0], evict=True):
            result = self._admit(new, now)
        else:
            result = _REJECTED
        self._fill_holes(now)
        return result

    def failed(self, contact: Contact, now: float) -> tuple[Contact, ...]:
        """Record that a query to ``contact`` timed out.

        When the entry turns bad and its bucket has a replacement that answered
        us, that replacement takes its place at once. Replacements that never
        answered are not trusted: the best of them is returned for the caller to
        ping (its answer, through :meth:`heard_from`, replaces the bad entry).

        Returns:
            Contacts the caller should ping (possibly empty).
        """
        self._clock(now)
        entry = self._by_id.get(contact.id)
        if entry is None or entry.contact.addr != contact.addr:
            bucket = self.bucket_for(contact.id)
            cached = bucket._replacement(contact.id)
            if cached is not None and cached.contact.addr == contact.addr:
                cached.failures += 1
                if cached.is_bad:
                    bucket.replacements.remove(cached)
            return ()
        entry.failures += 1
        if not entry.is_bad:
            return ()
        bucket = self.bucket_for(contact.id)
        return self._replace_from_cache(bucket, entry, now)

    def remove(self, node_id: bytes) -> bool:
        """Forget ``node_id`` (live entry and replacement). Return whether it was known.

        A replacement that has answered us takes the freed place.
        """
        bucket = self.bucket_for(node_id)
        cached = bucket._replacement(node_id)
        if cached is not None:
            bucket.replacements.remove(cached)
        entry = self._by_id.get(node_id)
        if entry is None:
            return cached is not None
        self._drop(entry, self._now)
        return True

    # --- persistence ----------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Return the table as plain values, for :mod:`mainline_dht.runtime.state_file`.

        Returns:
            ``{"version": 1, "id": own_id, "nodes": [Contact, ...],
            "replacements": [Contact, ...]}``: live entries that are not bad, and
            replacements that have answered us.
        """
        nodes = [e.contact for e in self if not e.is_bad]
        reps = [r.contact for b in self._buckets for r in b.replacements if r.last_response is not None]
        return {"version": STATE_VERSION, "id": self._own_id, "nodes": nodes, "replacements": reps}

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        now: float,
        own_id: bytes | None = None,
        k: int = DEFAULT_K,
        max_per_ip: int | None = 1,
        replacement_cache: int = DEFAULT_REPLACEMENT_CACHE,
        exempt_loopback: bool = True,
        prefer_valid_ids: bool = True,
        enforce_valid_ids: bool = False,
    ) -> RoutingTable:
        """Rebuild a table from :meth:`to_state` output.

        Restored contacts are unverified: questionable until they answer, bad
        after their first failure. Ping them (:meth:`questionable`) to confirm.

        Args:
            state: the dict from :meth:`to_state`.
            now: current time (seconds).
            own_id: a new own ID (e.g. after a BEP 42 IP change); default: the saved one.
            k, max_per_ip, replacement_cache, exempt_loopback, prefer_valid_ids,
                enforce_valid_ids: as for the constructor.

        Raises:
            ValueError: ``state`` is malformed or of another version.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported routing-table state version {state.get('version')!r}")
        table = cls(
            own_id if own_id is not None else state["id"],
            k=k,
            max_per_ip=max_per_ip,
            replacement_cache=replacement_cache,
            now=now,
            exempt_loopback=exempt_loopback,
            prefer_valid_ids=prefer_valid_ids,
            enforce_valid_ids=enforce_valid_ids,
        )
        for contact in [*state.get("nodes", ()), *state.get("replacements", ())]:
            table.restore(Contact(bytes(contact[0]), (str(contact[1][0]), int(contact[1][1]))), now)
        return table

    def with_own_id(self, own_id: bytes, now: float) -> RoutingTable:
        """Return a table around a new own ID holding this table's contacts.

        For a node that takes a new ID (BEP 42: its external address changed).
        Each contact keeps what we know of it (responses, failures, RTT); the
        buckets are rebuilt around the new ID, the longest-known contacts placed
        first, and those that no longer fit become replacements. A contact with
        the new ID itself is dropped.
        """
        table = RoutingTable(
            own_id,
            k=self._k,
            max_per_ip=self._max_per_ip,
            replacement_cache=self._replacement_cache,
            now=now,
            exempt_loopback=self._exempt_loopback,
            prefer_valid_ids=self._prefer_valid_ids,
            enforce_valid_ids=self._enforce_valid_ids,
        )
        own = table._own_id
        for entry in sorted(self, key=lambda e: e.first_seen):
            if entry.contact.id == own:
                continue
            bucket = table._bucket_splitting_for(entry.id_int)
            if len(bucket.entries) < table._k:
                table._link(bucket, entry)
            else:
                table._cache(bucket, entry)
        for old in self._buckets:
            for entry in old.replacements:
                if entry.contact.id != own and entry.contact.id not in table._by_id:
                    table._cache(table.bucket_for(entry.contact.id), entry)
        table._fill_holes(now)
        return table

    def restore(self, contact: Contact, now: float) -> bool:
        """Insert a saved contact without verification (questionable until it answers).

        Goes into the table if there is room (splitting as usual), else into the
        replacement cache. Returns whether it landed in the table.
        """
        node_id, addr = contact
        if len(node_id) != ID_LENGTH or node_id == self._own_id or node_id in self._by_id or addr in self._by_addr:
            return False
        if self._enforce_valid_ids and not _id_valid(contact):
            return False
        if not self._ip_free(addr[0]):
            return False
        entry = TableEntry(contact, now)
        bucket = self._bucket_splitting_for(entry.id_int)
        if len(bucket.entries) < self._k:
            self._link(bucket, entry)
            landed = True
        else:
            self._cache(bucket, entry)
            landed = False
        self._fill_holes(now)
        return landed

    # --- internals ------------------------------------------------------------------

    def _clock(self, now: float) -> None:
        # Remember the latest time, for closest(include_questionable=False).
        if now > self._now:
            self._now = now

    def _answered(self, entry: TableEntry, now: float, rtt: float | None) -> None:
        entry.last_response = now
        entry.failures = 0
        if rtt is not None:
            # Exponentially weighted, as TCP smooths RTT (RFC 6298: alpha = 1/8).
            entry.rtt = rtt if entry.rtt is None else entry.rtt + (rtt - entry.rtt) / 8

    def _moved(self, entry: TableEntry, contact: Contact, now: float, responded: bool, rtt: float | None) -> AddResult:
        """A known ID speaks from a new address."""
        if not entry.is_bad:
            # Keep the old address: otherwise anyone could hijack a good node's ID.
            return _REJECTED
        if not responded:
            return self._verify(contact.addr, now)
        addr = contact.addr
        clash = self._by_addr.get(addr)
        if clash is not None and clash._is_good(now - GOOD_WINDOW):
            return _REJECTED
        bucket = self._unlink(entry)
        if clash is not None:
            self._holes.append(self._unlink(clash))
        if self._ip_room(addr[0], evict=True):
            entry.contact = contact
            self._answered(entry, now, rtt)
            self._link(bucket, entry)
            bucket.last_changed = now
            result = _UPDATED
        else:
            self._holes.append(bucket)
            result = _REJECTED
        self._fill_holes(now)
        return result

    def _verify(self, addr: Address, now: float) -> AddResult:
        """Ask the caller to ping ``addr``, unless we asked recently."""
        asked = self._verifying.get(addr)
        if asked is not None and now - asked < VERIFY_RETRY_INTERVAL:
            return _PENDING
        if asked is not None:
            self._verifying.move_to_end(addr)
        elif len(self._verifying) >= _MAX_VERIFYING:
            self._verifying.popitem(last=False)
        self._verifying[addr] = now
        return _VERIFY

    def _unverified(
        self, contact: Contact, id_int: int, bucket: Bucket, clash: TableEntry | None, now: float
    ) -> AddResult:
        """A query from an unknown node: ask for verification, or cache it."""
        addr = contact.addr
        if clash is None and not self._ip_room(addr[0], evict=False):
            return _REJECTED
        if clash is not None or len(bucket.entries) < self._k or self._splittable(bucket):
            return self._verify(addr, now)
        if any(e.is_bad for e in bucket.entries):
            return self._verify(addr, now)
        cached = bucket._replacement(contact.id)
        if cached is not None:
            if cached.contact.addr == addr:
                cached.last_query = now
        else:
            new = TableEntry(contact, now, id_int=id_int)
            new.last_query = now
            self._cache(bucket, new)
        return AddResult(Outcome.REPLACEMENT_CACHED, self._eviction_pings(bucket, now))

    def _admit(self, new: TableEntry, now: float) -> AddResult:
        """Put a verified node in its bucket (splitting, replacing or caching).

        The caller must call :meth:`_fill_holes` afterwards.
        """
        bucket = self._bucket_splitting_for(new.id_int)
        if len(bucket.entries) < self._k:
            self._link(bucket, new)
            bucket.last_changed = now
            return _ADDED
        worst: TableEntry | None = None
        for e in bucket.entries:
            if e.is_bad and (worst is None or e.failures > worst.failures):
                worst = e
        if worst is not None:
            self._unlink(worst)
            self._link(bucket, new)
            bucket.last_changed = now
            return _ADDED
        if self._prefer_valid_ids and _id_valid(new.contact):
            # BEP 42 preference: the least recently seen entry with an invalid ID
            # on a public address makes room, and waits among the replacements.
            invalid = [e for e in bucket.entries if not _id_valid(e.contact)]
            if invalid:
                victim = min(invalid, key=lambda e: e.last_seen)
                self._unlink(victim)
                self._link(bucket, new)
                self._cache(bucket, victim)
                bucket.last_changed = now
                return _ADDED
        self._cache(bucket, new)
        return AddResult(Outcome.REPLACEMENT_CACHED, self._eviction_pings(bucket, now))

    def _bucket_splitting_for(self, id_int: int) -> Bucket:
        """Return the bucket for ``id_int``, splitting full buckets that hold our ID."""
        while True:
            i = bisect_right(self._los, id_int) - 1
            bucket = self._buckets[i]
            if len(bucket.entries) < self._k or not self._splittable(bucket):
                return bucket
            self._split(i)

    def _splittable(self, bucket: Bucket) -> bool:
        # BEP 5: only the bucket whose range holds our own ID splits.
        return bucket.lo <= self._own_int < bucket.hi and bucket.hi - bucket.lo > 1

    def _split(self, i: int) -> None:
        old = self._buckets[i]
        mid = (old.lo + old.hi) // 2
        low = Bucket(old.lo, mid, last_changed=old.last_changed)
        high = Bucket(mid, old.hi, last_changed=old.last_changed)
        for e in old.entries:
            (low if e.id_int < mid else high).entries.append(e)
        for e in old.replacements:
            (low if e.id_int < mid else high).replacements.append(e)
        self._buckets[i : i + 1] = [low, high]
        self._los.insert(i + 1, mid)
        # A half with room takes verified replacements, once the contact being
        # admitted has its place (see _fill_holes).
        self._holes += (low, high)

    def _link(self, bucket: Bucket, entry: TableEntry) -> None:
        bucket.entries.append(entry)
        self._by_id[entry.contact.id] = entry
        self._by_addr[entry.contact.addr] = entry
        self._by_ip.setdefault(entry.contact.addr[0], []).append(entry)

    def _drop(self, entry: TableEntry, now: float) -> None:
        """Remove a live entry and let a verified replacement take its place."""
        self._fill_from_cache(self._unlink(entry), now)

    def _unlink(self, entry: TableEntry) -> Bucket:
        """Remove a live entry from the bucket and the indexes; return its bucket."""
        node_id, addr = entry.contact
        bucket = self.bucket_for(node_id)
        bucket.entries.remove(entry)
        del self._by_id[node_id]
        if self._by_addr.get(addr) is entry:
            del self._by_addr[addr]
        same_ip = self._by_ip[addr[0]]
        same_ip.remove(entry)
        if not same_ip:
            del self._by_ip[addr[0]]
        return bucket

    def _ip_free(self, ip: str) -> bool:
        """Whether one more entry may use ``ip`` right now."""
        cap = self._max_per_ip
        if cap is None or (self._exempt_loopback and _is_loopback(ip)):
            return True
        same = self._by_ip.get(ip)
        return same is None or len(same) < cap

    def _ip_room(self, ip: str, *, evict: bool) -> bool:
        """Whether one more entry may use ``ip``, counting bad entries there as room.

        With ``evict``, one such bad entry is removed to make the room real.
        """
        if self._ip_free(ip):
            return True
        same = self._by_ip[ip]
        bad = next((e for e in same if e.is_bad), None)
        if bad is None:
            return False
        if evict:
            self._holes.append(self._unlink(bad))
        return True

    def _cache(self, bucket: Bucket, entry: TableEntry) -> None:
        """Put ``entry`` in ``bucket``'s replacement cache, oldest out when full."""
        if self._replacement_cache == 0:
            return
        reps = bucket.replacements
        for i, r in enumerate(reps):
            if r.contact.id == entry.contact.id or r.contact.addr == entry.contact.addr:
                del reps[i]
                break
        if len(reps) >= self._replacement_cache:
            # Oldest out, but an unverified one goes before any that answered us.
            victim = next((r for r in reps if r.last_response is None), reps[0])
            reps.remove(victim)
        reps.append(entry)

    def _best_replacement(self, bucket: Bucket, now: float, *, verified: bool) -> TableEntry | None:
        best: TableEntry | None = None
        for r in bucket.replacements:
            if (r.last_response is not None) != verified or r.is_bad:
                continue
            if r.contact.addr in self._by_addr or r.contact.id in self._by_id:
                continue
            if not self._ip_free(r.contact.addr[0]):
                continue
            if best is None or r.last_seen > best.last_seen:
                best = r
        return best

    def _replace_from_cache(self, bucket: Bucket, bad: TableEntry, now: float) -> tuple[Contact, ...]:
        best = self._best_replacement(bucket, now, verified=True)
        if best is not None:
            self._unlink(bad)
            bucket.replacements.remove(best)
            self._link(bucket, best)
            bucket.last_changed = now
            log.debug("replaced bad node %s with %s", bad.contact, best.contact)
            return ()
        candidate = self._best_replacement(bucket, now, verified=False)
        if candidate is not None and self._verify(candidate.contact.addr, now) is _VERIFY:
            return (candidate.contact,)
        return ()

    def _fill_holes(self, now: float) -> None:
        """Let verified replacements fill buckets that lost entries or were split."""
        if not self._holes:
            return
        holes, self._holes = self._holes, []
        live = {id(b) for b in self._buckets}
        for bucket in holes:
            if id(bucket) in live:  # skip buckets split again since
                self._fill_from_cache(bucket, now)

    def _fill_from_cache(self, bucket: Bucket, now: float) -> None:
        while len(bucket.entries) < self._k:
            best = self._best_replacement(bucket, now, verified=True)
            if best is None:
                return
            bucket.replacements.remove(best)
            self._link(bucket, best)

    def _eviction_pings(self, bucket: Bucket, now: float) -> tuple[Contact, ...]:
        """The least recently seen questionable entry not pinged lately (BEP 5)."""
        horizon = now - GOOD_WINDOW
        pick: TableEntry | None = None
        for e in bucket.entries:
            if e.is_bad or e._is_good(horizon):
                continue
            if e.last_ping_request is not None and now - e.last_ping_request < EVICTION_PING_INTERVAL:
                continue
            if pick is None or e.last_seen < pick.last_seen:
                pick = e
        if pick is None:
            return ()
        pick.last_ping_request = now
        return (pick.contact,)


def split_saved_contacts(
    own_id: bytes, contacts: Sequence[Contact], *, k: int = DEFAULT_K, max_per_ip: int | None = 1
) -> tuple[list[Contact], list[Contact]]:
    """Split saved contacts into those an empty table would hold and the rest.

    ``contacts`` come best first, as :func:`mainline_dht.runtime.state_file.load_contacts`
    returns them: the former table's entries, then its replacements. Filling an
    empty table with our ID in that order puts the former entries back in their
    buckets; what does not fit is the overflow.

    A restarting node pings the first list at once and the overflow later, so
    that the contacts it knew longest get their places back, rather than
    whichever saved contact happens to answer first (Kademlia keeps the
    longest-known nodes: they are the likeliest to stay online).

    Returns:
        ``(fits, overflow)``, each in the given order; our own ID is in neither.
    """
    probe = RoutingTable(own_id, k=k, max_per_ip=max_per_ip, now=0.0)
    for contact in contacts:
        probe.restore(contact, 0.0)
    fits = [c for c in contacts if (e := probe.get(c.id)) is not None and e.addr == c.addr]
    kept = set(fits)
    return fits, [c for c in contacts if c not in kept and c.id != own_id]
