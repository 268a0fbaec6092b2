"""The iterative lookup: a pure state machine shared by find_node and get_peers lookups.

This module owns the decisions of one Kademlia-style iterative lookup (BEP 5): which
contacts to ask next, how many queries may be outstanding, when a slow node stops
holding a slot, which returned nodes are worth keeping, and when the lookup is over.
It never sends anything: a driver (the trio layer) asks :meth:`Lookup.next_queries`
whom to query, sends the queries, and reports each outcome back with
:meth:`Lookup.on_response` or :meth:`Lookup.on_failure`. Time comes in as ``now``
arguments (seconds, on the driver's clock); :meth:`Lookup.next_deadline` says when the
driver should call :meth:`Lookup.handle_timer` (or simply :meth:`Lookup.next_queries`).

A driver loop looks like this::

    lookup = Lookup(info_hash, table.closest(info_hash, 8), now=now)
    while not lookup.done:
        for contact in lookup.next_queries(now):
            start_query(contact)                 # answers arrive later
        wait until an answer lands or lookup.next_deadline() passes
        lookup.on_response(contact, now, nodes=..., values=..., token=...)  # -> new peers
        lookup.on_failure(contact, now)          # hard timeout or KRPC error

Rule 1 (as in h11's ``_state.py``): every rule of the lookup lives in this file.
It must not import trio, socket, time, asyncio, or anything that does I/O, and it
needs no randomness: for distinct IDs, XOR distances to one target never tie.
"""

from __future__ import annotations

import bisect
import enum
import functools
import ipaddress
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, final

from ..wire.contact import ID_LENGTH, Address, Contact
from ..errors import LocalProtocolError
from .node_id import is_id_valid_for_ip

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CANDIDATES_PER_K",
    "DEFAULT_EARLY_FINISH",
    "DEFAULT_K",
    "DEFAULT_MAX_PER_PREFIX",
    "DEFAULT_MAX_LOOKUP_PEERS",
    "DEFAULT_MAX_PEERS_PER_REPLY",
    "DEFAULT_SOFT_TIMEOUT",
    "UNKNOWN_ID",
    "Lookup",
    "LookupStats",
]

logger = logging.getLogger(__name__)

#: How many closest nodes a lookup converges on (BEP 5: K = 8, the bucket size).
DEFAULT_K: Final = 8

#: Queries allowed to be active at once (in flight and younger than the soft timeout).
#: libtorrent 2.1.1 defaults ``dht_search_branching`` to 5; the Kademlia paper and
#: anacrolix/dht use 3. Chosen by tools/bench_lookup.py (10,000 nodes, 20% dead, 5%
#: loss, median RTT 0.1 s; soft timeout 0.5 s): alpha 5 / 8 / 12 gave time to first
#: peer p95 of 6.4 / 4.4 / 3.8 median RTTs for 19 / 24 / 28 queries per lookup; 8 buys
#: most of the tail for a few queries, and 12 costs 31-40 on a slower network.
DEFAULT_ALPHA: Final = 8

#: Seconds after which an unanswered query stops holding one of the ``alpha`` slots
#: while its answer is still awaited and used (libtorrent's ``rpc_manager`` "short
#: timeout" is 1 s). Chosen by tools/bench_lookup.py (alpha 8, early finish): 1.0 /
#: 0.5 / 0.3 s gave median completion 1.57 / 1.06 / 0.75 s at median RTT 0.1 s, but on
#: a network three times slower (median RTT 0.3 s, heavy tail) 0.3 s hedges nearly
#: every query (34 per lookup, p95 43, against 28 for 0.5 s and 23 for 1.0 s).
DEFAULT_SOFT_TIMEOUT: Final = 0.5

#: Whether a lookup may finish while queries past the soft timeout are still awaited,
#: once the ``k`` closest candidates that answered are known and no closer candidate is
#: unqueried or active (see :attr:`Lookup.done`). Off: the lookup waits for every one of
#: the ``k`` closest to answer or hit the driver's hard timeout. On by tools/bench_lookup.py:
#: it halves completion time (10,000 nodes, alpha 5, soft timeout 1 s: median 4.00 s ->
#: 2.08 s; 100,000 nodes: 4.15 s -> 2.25 s) with the same success rate (100%), queries
#: per lookup and announce acknowledgements.
DEFAULT_EARLY_FINISH: Final = True

#: The number of *unqueried* candidates kept is ``k`` times this (64 for k = 8): far
#: more than a lookup that converges ever asks, yet small enough that hostile replies
#: carrying thousands of nodes cannot grow memory. The farthest are dropped first.
DEFAULT_CANDIDATES_PER_K: Final = 8

#: Candidates one network prefix (an IPv4 /24, an IPv6 /64) may hold in a lookup
#: at once, failed ones not counted. Sybils are cheap in IDs and ports but not in
#: networks: hosts in a handful of /24s that answer with made-up IDs next to the
#: target get a handful of candidates, not all ``k`` closest places (libtorrent's
#: searches likewise keep one node per /24 or /64). When a closer contact of a full
#: prefix turns up, it replaces the prefix's farthest *unqueried* candidate; once the
#: prefix's candidates were asked, later ones are ignored. And a prefix that offers
#: more contacts than this is *crowded*: its candidates rank behind every other
#: candidate (see :class:`Lookup`). Local addresses (loopback, private, link-local)
#: are exempt unless the lookup is told otherwise (``diversity_local``), so test
#: networks that share one address or subnet keep working.
DEFAULT_MAX_PER_PREFIX: Final = 1

#: Added to the sort key of a candidate that ranks behind all others (a crowded
#: prefix, or a BEP 42-invalid ID under enforcement): above every XOR distance.
_BEHIND: Final = 1 << 162

#: Peers taken from one reply (BEP 5 ``values``); the rest are ignored. libtorrent
#: sends at most 100 (``dht_max_peers_reply``), we send 50.
DEFAULT_MAX_PEERS_PER_REPLY: Final = 100
#: Distinct peers one lookup collects; later ones are ignored. Bounds what hostile
#: replies can make a lookup (and its consumer's channel) hold; a swarm's nodes
#: store at most 500 peers each (libtorrent's ``dht_max_peers``).
DEFAULT_MAX_LOOKUP_PEERS: Final = 5000
#: How far past the next candidate in distance order the lookup looks for a
#: candidate at similar distance (the same distance bit length: sharing as many
#: leading bits with the target) that is known to answer sooner.
RANK_LOOKAHEAD: Final = 16

#: The node ID under which a bootstrap router (whose ID we do not know) is handed to the
#: driver by :meth:`Lookup.next_queries`. Pass the same :class:`Contact` back.
UNKNOWN_ID: Final = b""

_MAX_PORT: Final = 65535


@dataclass(slots=True)
class LookupStats:
    """Counters of one lookup; times are seconds on the driver's clock.

    Attributes:
        queries: queries handed out by :meth:`Lookup.next_queries`.
        replies: responses accepted (late ones included).
        timeouts: queries that failed by hard timeout.
        errors: queries that failed with a KRPC error (or another failure the driver
            reported with ``error=True``).
        soft_timeouts: queries that outlived the soft timeout (whether or not they
            were answered later).
        started_at: when the lookup was created.
        first_peer_at: when the first peer (``values``) arrived, or ``None``.
        finished_at: when the lookup became :attr:`Lookup.done`, or ``None``.
        peers: distinct peers found so far.
    """

    queries: int = 0
    replies: int = 0
    timeouts: int = 0
    errors: int = 0
    soft_timeouts: int = 0
    started_at: float = 0.0
    first_peer_at: float | None = None
    finished_at: float | None = None
    peers: int = 0

    @property
    def elapsed(self) -> float | None:
        """Seconds from start to finish, or ``None`` while the lookup runs."""
        if self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def time_to_first_peer(self) -> float | None:
        """Seconds from start to the first peer, or ``None`` if none was found yet."""
        if self.first_peer_at is None:
            return None
        return self.first_peer_at - self.started_at


class _State(enum.Enum):
    UNQUERIED = enum.auto()
    IN_FLIGHT = enum.auto()  # asked, no answer yet (active or past the soft timeout)
    RESPONDED = enum.auto()
    FAILED = enum.auto()


class _Candidate:
    """One contact's progress in this lookup; hashed by identity."""

    __slots__ = ("contact", "dist", "invalid", "prefix", "rank", "raw", "state", "token")

    def __init__(self, contact: Contact, dist: int, prefix: bytes | None = None, *, raw: int | None = None, invalid: bool = False, rank: float = math.inf) -> None:
        self.contact = contact
        # The sort key: the XOR distance to the target, ranked further back for
        # candidates that look less honest (Lookup._key); ``raw`` is the distance itself.
        self.dist = dist
        self.raw = dist if raw is None else raw
        self.prefix = prefix  # network prefix counted by the diversity rule, or None
        self.invalid = invalid  # BEP 42: the ID is not valid for the (public) address
        self.state = _State.UNQUERIED
        self.token: bytes | None = None
        self.rank = rank  # expected seconds to an answer; inf: unknown


@functools.lru_cache(maxsize=65536)
def _network_prefix(host: str) -> tuple[bytes, bool] | None:
    """Return (the /24 or /64 of ``host``, whether it is a local address), or None.

    Cached: a lookup meets the same few thousand addresses again and again.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    local = ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified
    prefix = ip.packed[:3] if ip.version == 4 else ip.packed[:8]
    return prefix, local


def _valid_addr(addr: object) -> bool:
    """Return whether ``addr`` looks like ``(host text, port 1..65535)``."""
    if not isinstance(addr, tuple) or len(addr) != 2:
        return False
    host, port = addr
    return isinstance(host, str) and bool(host) and type(port) is int and 0 < port <= _MAX_PORT


def _valid_id(node_id: object) -> bool:
    return isinstance(node_id, bytes) and len(node_id) == ID_LENGTH


@final
class Lookup:
    """One iterative lookup towards ``target`` (BEP 5), without I/O.

    Candidates are kept sorted by XOR distance to the target. The lookup asks the
    closest candidates it has not asked yet, at most ``alpha`` at a time, merges the
    nodes each answer returns, and ends when the ``k`` closest candidates that have
    not failed have all answered (see :attr:`done`).

    Which candidates are asked: walking outwards from the target, skipping failed
    candidates, the lookup asks unqueried candidates until it has passed ``k`` that
    have answered or are *active* (in flight and younger than the soft timeout). So a
    candidate past the soft timeout no longer counts: the lookup hedges by asking the
    next one, as libtorrent's traversal does, yet a late answer is still used.

    Among candidates at similar distance (the same bit length of their distance to
    the target, i.e. as many leading bits shared with it), those known to answer
    soonest are asked first: with ``expected_rtt``, the walk may take, instead of the
    next candidate, one up to :data:`RANK_LOOKAHEAD` places further in the same tier
    whose expected round trip is shorter (contacts not known to answer rank last).

    Each query's soft timeout is ``soft_timeout_for(contact)`` when that is given
    (the driver derives it from measured round trips), else ``soft_timeout``.

    Hostile input is bounded: contacts with our own ID, with a bad ID or port, or with
    an ID or address already in the lookup are ignored (the first ID seen for an
    address wins, so one host cannot pose as many IDs); no address is asked twice; and
    only the ``max_candidates`` closest unqueried candidates are kept.

    Sybil resistance: candidates are walked in order of a sort key, which is the XOR
    distance to the target for every honest-looking candidate, so that on an honest
    network the lookup is the plain Kademlia one. Less honest-looking candidates rank
    further back, yet are still asked (and their nodes used) when the walk reaches
    them:

    - *diversity*: at most ``max_per_prefix`` candidates that have not failed share
      one network prefix (IPv4 /24, IPv6 /64); see :data:`DEFAULT_MAX_PER_PREFIX`.
      A closer contact from a full prefix replaces the prefix's farthest unqueried
      candidate; if all of them were asked it is ignored. A prefix that offered more
      is crowded: its candidates rank behind all others, so a group of hosts in a
      few networks that name each other under IDs next to the target cannot take
      the places of the ``k`` closest, nor end the lookup;
    - *BEP 42*: an ID that is not valid for its public address ranks as if it were
      twice as far (behind valid ones at similar distance); with ``enforce_bep42``,
      behind every valid one. Local addresses are exempt (BEP 42).

    The lookup ends only when the ``k`` first candidates in that order answered (see
    :attr:`done`): never while an unqueried honest-looking candidate is closer than
    the result set.

    Bootstrap routers, whose node IDs are unknown, may be passed as ``routers``: they
    are asked first, their ``nodes`` are merged, but they never count as candidates
    and never appear in :meth:`closest_responders` (PROTOCOL: routers do not belong in
    routing tables).

    Routers passed as ``reserve_routers`` are held back while the seeds do the work:
    they join the routers (and are asked) only when the lookup would otherwise stall
    or end with fewer than ``k`` answers, that is when no query is active (every one
    answered, failed or is past its soft timeout) and nothing is left to ask, or
    nothing at all is in flight, while fewer than ``k`` contacts answered. A node
    starting from contacts it saved or cached thus asks a router only when too few
    of them answer.
    """

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        *,
        now: float,
        own_id: bytes | None = None,
        k: int = DEFAULT_K,
        alpha: int = DEFAULT_ALPHA,
        soft_timeout: float = DEFAULT_SOFT_TIMEOUT,
        max_queries: int | None = None,
        max_candidates: int | None = None,
        routers: Iterable[Address] = (),
        early_finish: bool = DEFAULT_EARLY_FINISH,
        max_per_prefix: int | None = DEFAULT_MAX_PER_PREFIX,
        diversity_local: bool = False,
        enforce_bep42: bool = False,
        max_peers_per_reply: int = DEFAULT_MAX_PEERS_PER_REPLY,
        max_peers: int = DEFAULT_MAX_LOOKUP_PEERS,
        soft_timeout_for: Callable[[Contact], float] | None = None,
        expected_rtt: Callable[[Contact], float] | None = None,
        reserve_routers: Iterable[Address] = (),
    ) -> None:
        """Start a lookup; nothing is sent until :meth:`next_queries`.

        Args:
            target: the 20-byte node ID or infohash looked up.
            seeds: contacts to start from, usually the routing table's closest
                (invalid ones are ignored, as for returned nodes).
            now: the current time (seconds).
            own_id: our node ID; contacts carrying it are ignored.
            k: how many closest nodes to converge on (BEP 5: 8).
            alpha: maximum active queries at once.
            soft_timeout: seconds after which a query stops holding a slot.
            max_queries: stop asking after this many queries (``None``: no limit).
                Drivers facing the open network should set one: a lookup's query
                count is otherwise bounded only by the network's shape.
            max_candidates: unqueried candidates kept (default ``k * 8``).
            routers: bootstrap router addresses to ask first (IDs unknown).
            early_finish: also finish when the ``k`` closest answered candidates
                are known and every closer one failed or is past the soft timeout
                (see :attr:`done`).
            max_per_prefix: candidates (not failed) one /24 or /64 may hold
                (``None``: no limit); see the class docstring.
            diversity_local: apply ``max_per_prefix`` to local addresses too
                (simulations whose private addresses stand for the Internet).
            enforce_bep42: rank BEP 42-invalid IDs on public addresses behind
                every valid one (default: behind valid ones at similar distance).
            max_peers_per_reply: peers taken from one reply's ``values``.
            max_peers: distinct peers the lookup collects in all.
            soft_timeout_for: the soft timeout (seconds) of a query to a given
                contact, e.g. from its measured round trips; a result that is not
                a positive number falls back to ``soft_timeout``.
            expected_rtt: how soon a contact is expected to answer (seconds;
                ``inf`` if unknown), to ask known-fast candidates first among
                those at similar distance (``None``: distance order only).
            reserve_routers: routers asked only if the seeds fail us (see the
                class docstring).

        Raises:
            LocalProtocolError: if ``target`` or ``own_id`` is not 20 bytes, or a
                numeric parameter is out of range.
        """
        if not _valid_id(target):
            raise LocalProtocolError(f"lookup target must be {ID_LENGTH} bytes")
        if own_id is not None and not _valid_id(own_id):
            raise LocalProtocolError(f"own_id must be {ID_LENGTH} bytes")
        if k < 1 or alpha < 1:
            raise LocalProtocolError("k and alpha must be at least 1")
        if not soft_timeout > 0:
            raise LocalProtocolError("soft_timeout must be positive (seconds)")
        if max_queries is not None and max_queries < 0:
            raise LocalProtocolError("max_queries must not be negative")
        if max_candidates is None:
            max_candidates = k * DEFAULT_CANDIDATES_PER_K
        if max_candidates < k:
            raise LocalProtocolError("max_candidates must be at least k")
        if max_per_prefix is not None and max_per_prefix < 1:
            raise LocalProtocolError("max_per_prefix must be at least 1")

        self._target = target
        self._target_int = int.from_bytes(target, "big")
        self._own_id = own_id
        self._k = k
        self._alpha = alpha
        self._soft_timeout = soft_timeout
        self._max_queries = max_queries
        self._max_candidates = max_candidates
        self._early_finish = early_finish
        self._max_per_prefix = max_per_prefix
        self._diversity_local = diversity_local
        self._enforce_bep42 = enforce_bep42
        # Network prefix -> the candidates that hold it (diversity rule).
        self._by_prefix: dict[bytes, list[_Candidate]] = {}
        # Prefixes that offered more than max_per_prefix contacts.
        self._crowded: set[bytes] = set()
        # The XOR distances of all candidates: one candidate per ID.
        self._raws: set[int] = set()
        self._soft_timeout_for = soft_timeout_for
        self._expected_rtt = expected_rtt
        self._reserve: list[Address] = []

        # Every candidate, keyed and sorted by distance (distance <-> ID is a bijection
        # for a fixed target, so the distance doubles as the ID key).
        self._by_dist: dict[int, _Candidate] = {}
        self._dists: list[int] = []
        # The unqueried subset, sorted, so the farthest can be dropped in O(1).
        self._unqueried: list[int] = []
        # Address -> the candidate that holds it.
        self._addr_owner: dict[Address, _Candidate] = {}
        # Addresses that may never become candidates again: routers and the addresses
        # of candidates re-keyed after answering under another ID.
        self._claimed_addrs: set[Address] = set()
        # Routers by address; their state is tracked like a candidate's.
        self._routers: dict[Address, _Candidate] = {}
        # Active queries (in flight, younger than the soft timeout) -> soft deadline.
        self._active: dict[_Candidate, float] = {}
        self._in_flight = 0  # active or past the soft timeout

        self._peer_set: set[Address] = set()
        self._max_peers_per_reply = max_peers_per_reply
        self._max_peers = max_peers
        self._peers: list[Address] = []
        self._done = False
        self._stats = LookupStats(started_at=now)

        for addr in routers:
            if _valid_addr(addr) and addr not in self._routers:
                self._routers[addr] = _Candidate(Contact(UNKNOWN_ID, addr), -1)
                self._claimed_addrs.add(addr)
        for addr in reserve_routers:
            if _valid_addr(addr) and addr not in self._routers and addr not in self._reserve:
                self._reserve.append(addr)
                self._claimed_addrs.add(addr)
        self._add_nodes(seeds)
        self._check_done(now)

    # -- properties ---------------------------------------------------------------

    @property
    def target(self) -> bytes:
        """The 20-byte ID or infohash this lookup converges on."""
        return self._target

    @property
    def k(self) -> int:
        """How many closest nodes the lookup converges on."""
        return self._k

    @property
    def max_peers(self) -> int:
        """The most distinct peers this lookup collects."""
        return self._max_peers

    @property
    def alpha(self) -> int:
        """The most queries that may be active at once."""
        return self._alpha

    @property
    def done(self) -> bool:
        """Whether the lookup is over.

        It is over when any of these holds (checked after every event). "Closest"
        means first in the lookup's order: by XOR distance, with less honest-looking
        candidates ranked further back (see the class docstring).

        - the ``k`` closest candidates that have not failed have all answered (none
          unqueried, none in flight, even past the soft timeout);
        - no candidate or router is left to ask and nothing is in flight;
        - ``max_queries`` queries were handed out and nothing is in flight;
        - with ``early_finish``: ``k`` candidates answered, and every candidate
          closer than the ``k``-th of them either failed or is in flight past the
          soft timeout. Such stragglers are mostly dead nodes or lost datagrams,
          which would otherwise hold the lookup open until the driver's hard
          timeout; the cost is that a very late answer from one of them (and the
          closer nodes it might name) is not waited for.

        A lookup started with no (valid) seeds and no routers is done at once.
        """
        return self._done

    @property
    def early_finish(self) -> bool:
        """Whether stragglers past the soft timeout may be left behind (see :attr:`done`)."""
        return self._early_finish

    @property
    def stats(self) -> LookupStats:
        """The lookup's counters (a live object, updated in place)."""
        return self._stats

    @property
    def peers(self) -> list[Address]:
        """All distinct peers found so far, in the order they arrived."""
        return list(self._peers)

    @property
    def in_flight(self) -> int:
        """Queries handed out and not yet answered or failed (slow ones included)."""
        return self._in_flight

    @property
    def active(self) -> int:
        """Queries in flight and younger than the soft timeout (never above ``alpha``)."""
        return len(self._active)

    @property
    def reserve_used(self) -> bool:
        """Whether the reserve routers were released (see the class docstring)."""
        return bool(self._reserve) and all(a in self._routers for a in self._reserve)

    @property
    def candidate_count(self) -> int:
        """Candidates currently kept, in every state (routers not included)."""
        return len(self._dists)

    # -- driving the lookup ----------------------------------------------------

    def next_queries(self, now: float) -> list[Contact]:
        """Choose whom to ask now, and mark them in flight.

        Applies due soft timeouts first (as :meth:`handle_timer` does), then fills the
        free slots: unasked routers first, then the closest unqueried candidates (see
        the class docstring for the window they are taken from).

        Args:
            now: the current time (seconds).

        Returns:
            Contacts to query now, closest first (routers as ``Contact(UNKNOWN_ID,
            addr)``); empty when nothing is to be sent now. Report each one's outcome
            with :meth:`on_response` or :meth:`on_failure`.
        """
        self.handle_timer(now)
        out: list[Contact] = []
        if self._done:
            return out
        budget = self._alpha - len(self._active)

        for router in self._routers.values():
            if budget <= 0 or self._query_limit_reached():
                return out
            if router.state is _State.UNQUERIED:
                self._send(router, now)
                out.append(router.contact)
                budget -= 1

        counted = 0  # candidates passed that answered or are active
        ahead: set[_Candidate] = set()  # sent before their turn, counted already
        dists = self._dists
        i = 0
        while i < len(dists) and budget > 0 and counted < self._k:
            cand = self._by_dist[dists[i]]
            if cand in ahead:
                i += 1
                continue
            state = cand.state
            if state is _State.RESPONDED or cand in self._active:
                counted += 1
            elif state is _State.UNQUERIED:
                if self._query_limit_reached():
                    break
                pick = self._sooner_in_tier(i) if self._expected_rtt is not None else cand
                self._send(pick, now)
                out.append(pick.contact)
                budget -= 1
                counted += 1
                if pick is not cand:
                    ahead.add(pick)
                    continue  # ``cand`` is still next in line
            i += 1
        if not out and not self._active and self._release_reserve():
            return self.next_queries(now)
        return out

    def on_response(
        self,
        contact: Contact,
        now: float,
        *,
        nodes: Sequence[Contact] = (),
        values: Sequence[Address] = (),
        token: bytes | None = None,
        responder_id: bytes | None = None,
    ) -> list[Address]:
        """Record an answer from a contact we queried, however late.

        The answer's ``nodes`` become candidates (after the checks in the class
        docstring); its ``values`` (BEP 5 get_peers peers) are returned at once.

        If ``responder_id`` differs from ``contact.id``, the host at that address has
        another ID than we were told. The reply still counts and its nodes and values
        are used, but the candidate is re-keyed: the claimed ID is forgotten and the
        host is kept under ``responder_id`` (as an answered candidate with ``token``),
        unless that ID is ours, invalid, or already held by another candidate, in
        which case the host is simply dropped. Its address is never asked again.

        After :attr:`done`, values are still returned but nodes are no longer merged.
        Answers from contacts that are not in flight (never asked, or already
        answered or failed) are ignored.

        Args:
            contact: the contact as :meth:`next_queries` returned it.
            now: the current time (seconds).
            nodes: the nodes the answer carried (BEP 5 ``nodes``/``nodes6``).
            values: the peers the answer carried (BEP 5 ``values``).
            token: the announce token the answer carried (BEP 5 get_peers).
            responder_id: the ``id`` in the answer, if the driver has it.

        Returns:
            Peers not seen before in this lookup, in arrival order.
        """
        self.handle_timer(now)
        cand = self._find_in_flight(contact)
        if cand is None:
            logger.debug("ignoring answer from %r: not in flight", contact)
            return []
        self._leave_flight(cand)
        self._stats.replies += 1
        cand.state = _State.RESPONDED
        cand.token = token
        if (
            cand.contact.id != UNKNOWN_ID
            and responder_id is not None
            and responder_id != cand.contact.id
        ):
            self._rekey(cand, responder_id)

        new_peers = self._add_values(values, now)
        if not self._done:
            self._add_nodes(nodes)
        self._check_done(now)
        return new_peers

    def on_failure(self, contact: Contact, now: float, *, error: bool = False) -> None:
        """Record that a query failed: hard timeout, or a KRPC error reply.

        The candidate is skipped from then on and no longer counts towards the ``k``
        closest. Failures of contacts not in flight are ignored.

        Args:
            contact: the contact as :meth:`next_queries` returned it.
            now: the current time (seconds).
            error: ``True`` for an error reply (counted in ``stats.errors``),
                ``False`` for a timeout (counted in ``stats.timeouts``).
        """
        self.handle_timer(now)
        cand = self._find_in_flight(contact)
        if cand is None:
            logger.debug("ignoring failure of %r: not in flight", contact)
            return
        self._leave_flight(cand)
        cand.state = _State.FAILED
        if error:
            self._stats.errors += 1
        else:
            self._stats.timeouts += 1
        self._check_done(now)

    def add_candidates(self, contacts: Iterable[Contact]) -> int:
        """Offer more contacts to ask, e.g. seeds that arrive after the lookup was made.

        The same checks as for returned nodes apply (class docstring). A lookup that
        is done before sending any query (it had no seeds) is reopened when a
        candidate is accepted, so a driver may create it first and seed it later;
        once a query was sent, :attr:`done` is final and this does nothing.

        Args:
            contacts: the contacts to consider.

        Returns:
            How many became candidates (when the candidate set is full, a closer
            contact offered later may push one out again).
        """
        if self._done and (self._stats.queries or self._query_limit_reached()):
            return 0
        added = self._add_nodes(contacts)
        if added and self._done:
            self._done = False
            self._stats.finished_at = None
        return added

    def add_candidate(self, contact: Contact) -> bool:
        """Offer one contact; see :meth:`add_candidates`. Returns whether it was taken."""
        return self.add_candidates((contact,)) == 1

    def next_deadline(self) -> float | None:
        """Return when the oldest active query passes the soft timeout (seconds).

        That frees a slot, so the driver should then call :meth:`next_queries`.
        ``None`` when no query is active or the lookup is done. Hard timeouts are
        the driver's business.
        """
        if self._done or not self._active:
            return None
        return min(self._active.values())

    def handle_timer(self, now: float) -> None:
        """Apply due soft timeouts: free those queries' slots, keep awaiting them.

        With ``early_finish`` this may end the lookup (see :attr:`done`).

        Args:
            now: the current time (seconds).
        """
        due = [cand for cand, deadline in self._active.items() if deadline <= now]
        for cand in due:
            del self._active[cand]
            self._stats.soft_timeouts += 1
        if due and self._early_finish:
            self._check_done(now)

    def closest_responders(self, n: int = DEFAULT_K) -> list[tuple[Contact, bytes | None]]:
        """Return the ``n`` closest contacts that answered, with their tokens.

        These are the nodes to send ``announce_peer`` to after a get_peers lookup
        (BEP 5), each with the token it handed us. Routers never appear here.

        Args:
            n: how many to return at most.

        Returns:
            ``(contact, token)`` pairs, closest to the target first.
        """
        out: list[tuple[Contact, bytes | None]] = []
        for d in self._dists:
            if len(out) >= n:
                break
            cand = self._by_dist[d]
            if cand.state is _State.RESPONDED:
                out.append((cand.contact, cand.token))
        return out

    def stragglers(self, n: int = DEFAULT_K) -> list[Contact]:
        """Return the contacts asked and not heard from that rank among the ``n`` closest.

        Walking the lookup's order until ``n`` contacts have answered, these are
        the ones still in flight (never answered, never failed): with
        ``early_finish``, the lookup ended without them. On a lossy network most
        of them are live nodes whose query or answer was lost, closer to the
        target than some of :meth:`closest_responders`; an announce asks them
        again, so that it stores on the closest nodes (see
        :mod:`mainline_dht.core.behaviour`). Routers never appear here.

        Args:
            n: how many answered contacts to walk past at most.

        Returns:
            The contacts, closest first.
        """
        out: list[Contact] = []
        answered = 0
        for d in self._dists:
            if answered >= n:
                break
            cand = self._by_dist[d]
            if cand.state is _State.RESPONDED:
                answered += 1
            elif cand.state is _State.IN_FLIGHT:
                out.append(cand.contact)
        return out

    # -- internals -------------------------------------------------------------

    def _release_reserve(self) -> bool:
        """Turn the reserve routers into routers if the seeds failed us; return whether."""
        if not self._reserve or self._stats.replies >= self._k or self._query_limit_reached():
            return False
        released = False
        for addr in self._reserve:
            if addr not in self._routers:
                self._routers[addr] = _Candidate(Contact(UNKNOWN_ID, addr), -1)
                released = True
        if released:
            logger.debug("lookup %s: %d seeds answered, asking the routers", self._target.hex(), self._stats.replies)
        return released

    def _query_limit_reached(self) -> bool:
        return self._max_queries is not None and self._stats.queries >= self._max_queries

    def _sooner_in_tier(self, i: int) -> _Candidate:
        """The unqueried candidate to ask instead of the one at ``self._dists[i]``:
        the one known to answer soonest among the next :data:`RANK_LOOKAHEAD` in
        the same distance tier, or that one itself."""
        dists = self._dists
        first = self._by_dist[dists[i]]
        best = first
        tier = first.dist.bit_length()
        end = min(len(dists), i + RANK_LOOKAHEAD)
        for j in range(i + 1, end):
            d = dists[j]
            if d.bit_length() != tier:
                break
            cand = self._by_dist[d]
            if cand.state is _State.UNQUERIED and cand.rank < best.rank:
                best = cand
        return best

    def _soft_deadline(self, cand: _Candidate, now: float) -> float:
        timeout = self._soft_timeout
        if self._soft_timeout_for is not None:
            chosen = self._soft_timeout_for(cand.contact)
            if chosen > 0 and math.isfinite(chosen):
                timeout = chosen
        return now + timeout

    def _send(self, cand: _Candidate, now: float) -> None:
        if cand.dist >= 0:
            del self._unqueried[bisect.bisect_left(self._unqueried, cand.dist)]
        cand.state = _State.IN_FLIGHT
        self._active[cand] = self._soft_deadline(cand, now)
        self._in_flight += 1
        self._stats.queries += 1

    def _leave_flight(self, cand: _Candidate) -> None:
        self._active.pop(cand, None)
        self._in_flight -= 1

    def _find_in_flight(self, contact: Contact) -> _Candidate | None:
        if contact.id == UNKNOWN_ID:
            cand = self._routers.get(contact.addr)
        elif _valid_id(contact.id):
            cand = self._addr_owner.get(contact.addr)
        else:
            return None
        if cand is None or cand.state is not _State.IN_FLIGHT or cand.contact != contact:
            return None
        return cand

    def _rekey(self, cand: _Candidate, responder_id: bytes) -> None:
        """Move an answered candidate from its claimed ID to ``responder_id``."""
        addr = cand.contact.addr
        self._remove(cand)
        self._claimed_addrs.add(addr)
        if not _valid_id(responder_id) or responder_id == self._own_id:
            return
        raw = int.from_bytes(responder_id, "big") ^ self._target_int
        if raw in self._raws:
            return
        moved = _Candidate(Contact(responder_id, addr), raw, cand.prefix, invalid=self._invalid(responder_id, addr[0]))
        moved.dist = self._key(moved)
        if moved.dist in self._by_dist:
            return
        moved.state = _State.RESPONDED
        moved.token = cand.token
        self._by_dist[moved.dist] = moved
        self._raws.add(raw)
        bisect.insort(self._dists, moved.dist)
        self._addr_owner[addr] = moved
        if moved.prefix is not None:
            self._by_prefix.setdefault(moved.prefix, []).append(moved)

    def _remove(self, cand: _Candidate) -> None:
        del self._by_dist[cand.dist]
        self._raws.discard(cand.raw)
        del self._dists[bisect.bisect_left(self._dists, cand.dist)]
        if cand.state is _State.UNQUERIED:
            del self._unqueried[bisect.bisect_left(self._unqueried, cand.dist)]
        if self._addr_owner.get(cand.contact.addr) is cand:
            del self._addr_owner[cand.contact.addr]
        if cand.prefix is not None:
            holders = self._by_prefix[cand.prefix]
            holders.remove(cand)
            if not holders:
                del self._by_prefix[cand.prefix]

    def _prefix_of(self, host: str) -> bytes | None:
        """The prefix the diversity rule counts ``host`` under, or None if exempt."""
        if self._max_per_prefix is None:
            return None
        facts = _network_prefix(host)
        if facts is None or (facts[1] and not self._diversity_local):
            return None
        return facts[0]

    def _invalid(self, node_id: bytes, host: str) -> bool:
        """BEP 42: whether ``node_id`` is not valid for ``host`` (local hosts are exempt)."""
        try:
            return not is_id_valid_for_ip(node_id, host)
        except ValueError:  # not an IP address: nothing to check
            return False

    def _key(self, cand: _Candidate) -> int:
        """The sort key of a candidate (see the class docstring)."""
        if (cand.prefix is not None and cand.prefix in self._crowded) or (cand.invalid and self._enforce_bep42):
            return cand.raw + _BEHIND
        if cand.invalid:
            return 2 * cand.raw
        return cand.raw

    def _rerank(self, cand: _Candidate) -> None:
        """Move a candidate to its current sort key."""
        key = self._key(cand)
        if key == cand.dist or key in self._by_dist:
            return
        del self._by_dist[cand.dist]
        del self._dists[bisect.bisect_left(self._dists, cand.dist)]
        if cand.state is _State.UNQUERIED:
            del self._unqueried[bisect.bisect_left(self._unqueried, cand.dist)]
            bisect.insort(self._unqueried, key)
        cand.dist = key
        self._by_dist[key] = cand
        bisect.insort(self._dists, key)

    def _prefix_room(self, prefix: bytes, cand: _Candidate) -> bool:
        """Whether ``cand`` may join ``prefix`` (evicting a farther one); a prefix that
        offers more than its share becomes crowded."""
        holders = self._by_prefix.get(prefix)
        if not holders:
            return True
        live = [c for c in holders if c.state is not _State.FAILED]
        if self._max_per_prefix is None or len(live) < self._max_per_prefix:
            return True
        if prefix not in self._crowded:
            self._crowded.add(prefix)
            for held in holders:
                self._rerank(held)
        cand.dist = self._key(cand)
        waiting = [c for c in live if c.state is _State.UNQUERIED]
        if not waiting:
            return False
        farthest = max(waiting, key=lambda c: c.dist)
        if farthest.dist < cand.dist:
            return False
        self._remove(farthest)
        return True

    def _add_nodes(self, nodes: Iterable[Contact]) -> int:
        added = 0
        for node in nodes:
            try:
                node_id, addr = node
            except (TypeError, ValueError):
                continue
            if not _valid_id(node_id) or node_id == self._own_id or not _valid_addr(addr):
                continue
            if addr in self._addr_owner or addr in self._claimed_addrs:
                continue
            raw = int.from_bytes(node_id, "big") ^ self._target_int
            if raw in self._raws:
                continue
            prefix = self._prefix_of(addr[0])
            cand = _Candidate(Contact(node_id, addr), raw, prefix, invalid=self._invalid(node_id, addr[0]))
            cand.dist = self._key(cand)
            if len(self._unqueried) >= self._max_candidates and cand.dist > self._unqueried[-1]:
                continue  # farther than everything we keep: not worth asking
            if prefix is not None and not self._prefix_room(prefix, cand):
                continue  # its network holds enough candidates already
            if cand.dist in self._by_dist:
                continue  # a key taken by another ID (ranked as twice as far): rare
            if len(self._unqueried) >= self._max_candidates:
                if cand.dist > self._unqueried[-1]:
                    continue
                self._remove(self._by_dist[self._unqueried[-1]])
            dist = cand.dist
            if self._expected_rtt is not None:
                cand.rank = self._expected_rtt(cand.contact)
            self._by_dist[dist] = cand
            self._raws.add(raw)
            bisect.insort(self._dists, dist)
            bisect.insort(self._unqueried, dist)
            self._addr_owner[addr] = cand
            if prefix is not None:
                self._by_prefix.setdefault(prefix, []).append(cand)
            added += 1
        return added

    def _add_values(self, values: Sequence[Address], now: float) -> list[Address]:
        new: list[Address] = []
        room = self._max_peers - len(self._peers)
        if room <= 0:
            return new
        for peer in values[: self._max_peers_per_reply]:
            if len(new) >= room:
                break
            if not _valid_addr(peer) or peer in self._peer_set:
                continue
            self._peer_set.add(peer)
            self._peers.append(peer)
            new.append(peer)
        if new:
            if self._stats.first_peer_at is None:
                self._stats.first_peer_at = now
            self._stats.peers = len(self._peers)
        return new

    def _check_done(self, now: float) -> None:
        if self._done:
            return
        if self._in_flight == 0 and (
            self._query_limit_reached()
            or (
                not self._unqueried
                and all(r.state is not _State.UNQUERIED for r in self._routers.values())
            )
        ):
            if not self._release_reserve():
                self._finish(now)
            return
        answered = 0
        early = self._early_finish
        active = self._active
        for d in self._dists:
            cand = self._by_dist[d]
            state = cand.state
            if state is _State.FAILED:
                continue
            if early and state is _State.IN_FLIGHT and cand not in active:
                continue  # a straggler past the soft timeout: not waited for
            if state is not _State.RESPONDED:
                return
            answered += 1
            if answered >= self._k:
                self._finish(now)
                return

    def _finish(self, now: float) -> None:
        self._done = True
        self._stats.finished_at = now
        logger.debug(
            "lookup %s done: %d queries, %d replies, %d peers",
            self._target.hex(),
            self._stats.queries,
            self._stats.replies,
            self._stats.peers,
        )
