"""The node's behaviour without I/O: what a node does on its own, and when.

Owns the rules that decide what the node sends beyond answering queries:

- lookups driven to the end (:meth:`NodeBehaviour.start_lookup`): the pure
  :class:`~mainline_dht.core.lookup.Lookup` chooses whom to ask; this module sends
  those queries through the protocol core, feeds their answers, errors, timeouts
  and soft timeouts back, and reports peers and the result as events;
- the bootstrap plan: saved contacts first, the routers, the saved contacts that
  did not fit after, retries with a pause until the timeout, then a refresh of the
  buckets that are not full; failure reported as data (:class:`BootstrapFailure`);
- the maintenance schedule: questionable pings and idle-bucket refreshes every
  round, a new bootstrap with backoff when the table runs empty, and the save
  schedule (:class:`SaveDue`);
- rejoining after a BEP 42 node-ID change;
- the announce choice: the k closest nodes that answered a ``get_peers`` lookup
  with a token get ``announce_peer``; the lookup's stragglers among them are asked
  again first, and an ``announce_peer`` that goes unanswered is sent once more.

The runtime reaches all of it through :class:`~mainline_dht.core.protocol.NodeProtocol`,
which owns one :class:`NodeBehaviour`; time arrives as ``now``, randomness from the
protocol's ``rng``. Must not import trio, asyncio, socket, time or os.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..errors import LocalProtocolError
from ..wire.contact import Address, Contact
from ..wire.krpc import AnnouncePeer, FindNode, GetPeers, Query, ResponseMessage
from .events import (
    AnnounceFinished,
    BootstrapDue,
    BootstrapFailure,
    BootstrapFinished,
    LookupFinished,
    LookupPeersFound,
    LookupReplied,
    OperationId,
    RefreshFinished,
    SaveDue,
    TransactionKey,
)
from .lookup import UNKNOWN_ID, Lookup
from .node_id import random_id_in_range
from .routing_table import split_saved_contacts

if TYPE_CHECKING:
    from .protocol import NodeProtocol

__all__ = [
    "ANNOUNCE_TRIES",
    "BOOTSTRAP_RETRY_PAUSE",
    "DEFAULT_BOOTSTRAP_TIMEOUT",
    "DEFAULT_MAX_LOOKUP_QUERIES",
    "MAINTENANCE_INTERVAL",
    "PARALLEL_REFRESHES",
    "QUESTIONABLE_PINGS_PER_ROUND",
    "REBOOTSTRAP_BACKOFF",
    "SAVE_INTERVAL",
    "NodeBehaviour",
    "QueryOwner",
]

log = logging.getLogger(__name__)

#: Seconds to wait for any bootstrap router or saved contact to answer.
DEFAULT_BOOTSTRAP_TIMEOUT: Final = 10.0
#: Queries one lookup may send at most: a bound against hostile or broken
#: networks (a healthy lookup needs 10-50).
DEFAULT_MAX_LOOKUP_QUERIES: Final = 300
#: Seconds between bootstrap attempts when no first query was answered.
BOOTSTRAP_RETRY_PAUSE: Final = 0.5
#: Bucket-refresh lookups run at once.
PARALLEL_REFRESHES: Final = 4
#: Seconds between maintenance rounds (bucket refresh, questionable pings, saving).
MAINTENANCE_INTERVAL: Final = 10.0
#: Seconds between periodic saves of the routing table.
SAVE_INTERVAL: Final = 5 * 60.0
#: Questionable contacts pinged per maintenance round.
QUESTIONABLE_PINGS_PER_ROUND: Final = 8
#: Buckets refreshed (those idle for 15 minutes) per maintenance round at most.
REFRESHES_PER_ROUND: Final = 2
#: Finished lookups whose state :meth:`NodeBehaviour.lookup` still returns.
RECENT_LOOKUPS: Final = 64
#: Seconds to wait before bootstrapping again after the table ran empty and a
#: bootstrap failed, doubling to the cap.
REBOOTSTRAP_BACKOFF: Final = (5.0, 300.0)
#: Times one ``announce_peer`` is sent when no answer comes (a lost datagram costs
#: the store, unlike a lookup query, which other candidates stand in for). On the
#: harsh simulated network (15% loss each way) a single try stored the peer on 6.8
#: of the 8 nodes on average.
ANNOUNCE_TRIES: Final = 2


class QueryOwner(Protocol):
    """Who learns the outcome of a query the core sent for one of its operations."""

    def query_answered(self, key: TransactionKey, response: ResponseMessage, now: float) -> None:
        """A reply arrived (however late)."""

    def query_failed(self, key: TransactionKey, now: float, error: bool) -> None:
        """The query timed out (``error`` False) or got a KRPC error (``error`` True)."""


_Done = Callable[[float], None]


class _LookupRun:
    """One lookup the core drives: the pure Lookup plus who is asked under which key."""

    __slots__ = (
        "behaviour", "op", "lookup", "query", "contacts", "touch", "public", "report", "on_reply", "on_done", "finished"
    )

    def __init__(
        self,
        behaviour: NodeBehaviour,
        op: OperationId,
        lookup: Lookup,
        query: Query,
        *,
        touch: bool,
        public: bool,
        on_reply: _Done | None,
        on_done: _Done | None,
        report: bool = False,
    ) -> None:
        self.behaviour = behaviour
        self.op = op
        self.lookup = lookup
        self.query = query
        self.contacts: dict[TransactionKey, Contact] = {}
        self.touch = touch
        self.public = public
        self.report = report  # LookupReplied for every answer (BEP 33 filters, BEP 44 items)
        self.on_reply = on_reply
        self.on_done = on_done
        self.finished = False

    def query_answered(self, key: TransactionKey, response: ResponseMessage, now: float) -> None:
        self.behaviour._lookup_answered(self, key, response, now)

    def query_failed(self, key: TransactionKey, now: float, error: bool) -> None:
        contact = self.contacts.pop(key, None)
        if contact is None or self.finished:
            return  # a straggler the finished lookup left behind: the table learnt from it already
        self.lookup.on_failure(contact, now, error=error)
        self.behaviour._advance_later(self, now)


class _Refresh:
    __slots__ = ("op", "ranges", "running", "count", "public", "on_done", "finished")

    def __init__(self, op: OperationId, ranges: Sequence[tuple[int, int]], public: bool, on_done: _Done | None) -> None:
        self.op = op
        self.ranges = deque(ranges)
        self.running: set[_LookupRun] = set()
        self.count = len(ranges)
        self.public = public
        self.on_done = on_done
        self.finished = False


class _Announce:
    """An announce: a get_peers lookup (unless given), then ``announce_peer`` to the closest.

    Before announcing, the lookup's stragglers among the k closest (asked, never
    heard from) are asked again (*probes*), so that a lost datagram does not cost
    the announce its closest nodes; an ``announce_peer`` that times out is sent
    once more (see :data:`ANNOUNCE_TRIES`).
    """

    __slots__ = (
        "behaviour", "op", "info_hash", "port", "seed", "pending", "accepted", "sent", "run", "finished",
        "lookup", "probes", "probed", "tries",
    )

    def __init__(
        self, behaviour: NodeBehaviour, op: OperationId, info_hash: bytes, port: int | None, seed: bool = False
    ) -> None:
        self.behaviour = behaviour
        self.op = op
        self.info_hash = info_hash
        self.port = port
        self.seed = seed  # BEP 33
        self.pending = 0
        self.accepted = 0
        self.sent = 0
        self.run: _LookupRun | None = None
        self.finished = False
        self.lookup: Lookup | None = None
        # get_peers sent again to the lookup's stragglers -> whom.
        self.probes: dict[TransactionKey, Contact] = {}
        self.probed = False
        # announce_peer in flight -> (whom, token, tries so far).
        self.tries: dict[TransactionKey, tuple[Contact, bytes, int]] = {}

    def query_answered(self, key: TransactionKey, response: ResponseMessage, now: float) -> None:
        contact = self.probes.pop(key, None)
        if contact is not None:
            if self.lookup is not None:
                self.lookup.on_response(contact, now, token=response.token, responder_id=response.sender_id)
            self.behaviour._announce_probed(self, now)
            return
        self.tries.pop(key, None)
        self.accepted += 1
        self.pending -= 1
        self.behaviour._announce_check(self, now)

    def query_failed(self, key: TransactionKey, now: float, error: bool) -> None:
        contact = self.probes.pop(key, None)
        if contact is not None:
            if self.lookup is not None:
                self.lookup.on_failure(contact, now, error=error)
            self.behaviour._announce_probed(self, now)
            return
        log.debug("announce to %s failed (%s)", key[1], "error" if error else "timeout")
        self.pending -= 1
        tried = self.tries.pop(key, None)
        if tried is not None and not error and tried[2] < ANNOUNCE_TRIES and not self.finished:
            # Lost on the way there or back (an error reply is an answer: no retry).
            self.behaviour._announce_one(self, tried[0], tried[1], now, tries=tried[2] + 1)
        self.behaviour._announce_check(self, now)


class _Bootstrap:
    __slots__ = (
        "op",
        "timeout",
        "deadline",
        "saved",
        "overflow",
        "start",
        "run",
        "answered",
        "retry_at",
        "waiting",
        "refresh",
    )

    def __init__(self, op: OperationId, timeout: float, saved: list[Contact], overflow: list[Contact]) -> None:
        self.op = op
        self.timeout = timeout
        self.deadline = math.inf
        self.saved = saved
        self.overflow = overflow
        self.start = saved
        self.run: _LookupRun | None = None
        self.answered = False
        self.retry_at: float | None = None
        self.waiting = True  # for the runtime to say which routers it resolved
        self.refresh: _Refresh | None = None


class NodeBehaviour:
    """The node's own initiatives, driven by time and by the protocol core's replies.

    Created and owned by :class:`~mainline_dht.core.protocol.NodeProtocol`; use it
    through the protocol's methods (``start_lookup``, ``start_bootstrap``, ...).

    Args:
        proto: the protocol core that sends the queries and holds the table.
        now: the driver's current time (seconds).
    """

    def __init__(self, proto: NodeProtocol, now: float) -> None:
        self._proto = proto
        self._next_op = 0
        self._lookups: dict[OperationId, _LookupRun] = {}
        # Lookups whose answers or failures await their next queries -> when (see flush).
        self._dirty: dict[_LookupRun, float] = {}
        # The last lookups that finished, so a runtime can still read one that
        # ended the moment it started (nothing to ask).
        self._recent: OrderedDict[OperationId, Lookup] = OrderedDict()
        self._bootstraps: dict[OperationId, _Bootstrap] = {}
        self._refreshes: dict[OperationId, _Refresh] = {}
        self._announces: dict[OperationId, _Announce] = {}
        self._routers: list[Address] = []
        self._routers_configured = False
        self._saved: list[Contact] = []
        self.joined = False
        self._next_round = now + MAINTENANCE_INTERVAL
        self._next_save = now + SAVE_INTERVAL
        self._upkeep: _Refresh | None = None
        self._rejoin_at = -math.inf
        self._backoff = REBOOTSTRAP_BACKOFF[0]
        #: Seconds the last failed bootstrap put off the next automatic one.
        self.rejoin_delay = 0.0

    # --- configuration --------------------------------------------------------------

    def configure_bootstrap(self, saved_contacts: Iterable[Contact], *, routers_configured: bool) -> None:
        self._saved = list(saved_contacts)
        self._routers_configured = routers_configured

    def set_routers(self, addresses: Iterable[Address], now: float) -> None:
        routers: list[Address] = []
        for addr in addresses:
            if addr not in routers:
                routers.append(addr)
        self._routers = routers
        self._proto.router_addresses.update(routers)
        for plan in list(self._bootstraps.values()):
            if plan.waiting:
                self._bootstrap_begin(plan, now)

    @property
    def routers(self) -> list[Address]:
        return list(self._routers)

    @property
    def wants_routers(self) -> bool:
        return self._routers_configured and not self._routers and len(self._proto.table) < self._proto.config.k

    @property
    def saved_contacts(self) -> list[Contact]:
        return list(self._saved)

    def save_wanted(self) -> bool:
        # Never joined (offline?): keep the contacts saved last time instead of
        # replacing them with an empty table.
        return not (len(self._proto.table) == 0 and self._saved)

    # --- timers -------------------------------------------------------------------------

    def next_timer(self) -> float:
        t = self._next_round
        for run in self._lookups.values():
            d = run.lookup.next_deadline()
            if d is not None and d < t:
                t = d
        for plan in self._bootstraps.values():
            if plan.retry_at is not None:
                t = min(t, plan.retry_at)
            elif plan.run is not None and not plan.run.finished and not plan.answered:
                t = min(t, plan.deadline)
        return t

    def handle_timer(self, now: float) -> None:
        due = [run for run in self._lookups.values() if (d := run.lookup.next_deadline()) is not None and d <= now]
        for run in due:
            self._advance(run, now)
        for plan in list(self._bootstraps.values()):
            if plan.retry_at is not None:
                if now >= plan.retry_at:
                    self._bootstrap_retry(plan, now)
            elif plan.run is not None and not plan.run.finished and not plan.answered and now >= plan.deadline:
                # Nothing answered in time: stop waiting (the queries run out in the core).
                self._abandon_run(plan.run)
                self._bootstrap_attempt_done(plan, now)
        if now >= self._next_round:
            self._next_round = now + MAINTENANCE_INTERVAL
            self._maintain(now)

    def _new_op(self) -> OperationId:
        self._next_op += 1
        return self._next_op

    # --- lookups ------------------------------------------------------------------------

    def start_lookup(
        self, target: bytes, query: Query, now: float, *, report_replies: bool = False, **options: Any
    ) -> OperationId:
        run = self._seeded_run(target, query, now, touch=True, public=True, options=options)
        run.report = report_replies
        self._advance(run, now)
        return run.op

    def lookup(self, op: OperationId) -> Lookup | None:
        run = self._lookups.get(op)
        return self._recent.get(op) if run is None else run.lookup

    def _seeded_run(
        self,
        target: bytes,
        query: Query,
        now: float,
        *,
        touch: bool,
        public: bool,
        on_done: _Done | None = None,
        options: dict[str, Any] | None = None,
    ) -> _LookupRun:
        """A lookup of ``target`` seeded from the table and the contacts that recently
        answered, and from the routers while those are too few; otherwise the routers
        are held in reserve, asked only if too few seeds answer."""
        proto = self._proto
        k = proto.config.k
        seeds = proto.lookup_seeds(target, 2 * k, now)
        routers = self._routers if len(seeds) < k else []
        if not routers and self._routers:
            options = {"reserve_routers": list(self._routers), **(options or {})}
        return self._make_run(target, query, seeds, routers, now, touch=touch, public=public, on_done=on_done, options=options)

    def _make_run(
        self,
        target: bytes,
        query: Query,
        seeds: Sequence[Contact],
        routers: Sequence[Address],
        now: float,
        *,
        touch: bool,
        public: bool,
        on_reply: _Done | None = None,
        on_done: _Done | None = None,
        options: dict[str, Any] | None = None,
    ) -> _LookupRun:
        proto = self._proto
        cfg = proto.config
        opts: dict[str, Any] = {
            "max_queries": DEFAULT_MAX_LOOKUP_QUERIES,
            "max_per_prefix": cfg.lookup_max_per_prefix,
            "diversity_local": cfg.lookup_diversity_local,
            "enforce_bep42": cfg.enforce_bep42,
        }
        # Round trips measured so far set each query's soft timeout (unless the
        # caller fixed one), and rank candidates at similar distance.
        if proto.config.adaptive_timeouts:
            opts["soft_timeout_for"] = proto.soft_timeout_for
        if proto.recent is not None:
            opts["expected_rtt"] = proto.expected_rtt
        if options:
            if "soft_timeout" in options:
                opts.pop("soft_timeout_for", None)
            opts.update(options)
        lookup = Lookup(target, seeds, now=now, own_id=proto.node_id, k=proto.config.k, routers=routers, **opts)
        run = _LookupRun(
            self, self._new_op(), lookup, query, touch=touch, public=public, on_reply=on_reply, on_done=on_done
        )
        self._lookups[run.op] = run
        return run

    def _advance(self, run: _LookupRun, now: float) -> None:
        """Send the queries the lookup wants now; finish it when it is done."""
        if run.finished:
            return
        lookup = run.lookup
        proto = self._proto
        timeout = proto.config.lookup_query_timeout
        while True:
            refused = False
            for contact in lookup.next_queries(now):
                is_router = contact.id == UNKNOWN_ID
                try:
                    key = proto._send_query(
                        run.query,
                        contact.addr,
                        now,
                        None if is_router else contact.id,
                        timeout,
                        not is_router,
                        internal=False,
                        owner=run,
                    )
                except LocalProtocolError:  # too many in flight, or a bad port: a failed query
                    lookup.on_failure(contact, now, error=True)
                    refused = True
                else:
                    run.contacts[key] = contact
            if not refused:
                break
        if lookup.done:
            self._finish_run(run, now)

    def _advance_later(self, run: _LookupRun, now: float) -> None:
        """Choose the lookup's next queries once the answers that arrived with this one
        are in (see :meth:`flush`); a finished lookup is reported at once."""
        if run.lookup.done:
            self._advance(run, now)
        else:
            self._dirty[run] = now

    def flush(self) -> None:
        """Send the next queries of the lookups that answers or failures moved on.

        Called by the protocol before it hands out datagrams or names its next
        timer. The answers of one received batch are all applied first, then each
        lookup chooses whom to ask: with every closer node those answers named
        in view, it wastes no query on a node one of them made needless (as the
        trio driver did before the core drove lookups: 1 query per lookup fewer
        at the median, tools/bench_lookup.py, 10,000 nodes).
        """
        while self._dirty:
            dirty = self._dirty
            self._dirty = {}
            for run, now in dirty.items():
                self._advance(run, now)

    def _lookup_answered(self, run: _LookupRun, key: TransactionKey, resp: ResponseMessage, now: float) -> None:
        contact = run.contacts.pop(key, None)
        if contact is None or run.finished:
            return
        # BEP 32: a core's lookups follow the nodes of its own overlay's family.
        nodes = resp.nodes6 if self._proto.family == 6 else resp.nodes
        new = run.lookup.on_response(
            contact, now, nodes=nodes, values=resp.values, token=resp.token, responder_id=resp.sender_id
        )
        if run.report:
            self._proto._events.append(LookupReplied(run.op, contact, resp, now))
        if new and run.public:
            self._proto._events.append(LookupPeersFound(run.op, tuple(new), now))
        if run.on_reply is not None:
            run.on_reply(now)
        self._advance_later(run, now)

    def _finish_run(self, run: _LookupRun, now: float) -> None:
        run.finished = True
        del self._lookups[run.op]
        proto = self._proto
        lookup = run.lookup
        if run.touch:
            proto.table.touch_bucket(lookup.target, now)
        if run.public:
            self._recent[run.op] = lookup
            if len(self._recent) > RECENT_LOOKUPS:
                self._recent.popitem(last=False)
            closest = tuple(lookup.closest_responders(proto.config.k))
            proto._events.append(LookupFinished(run.op, lookup.target, closest, lookup.stats.replies, now))
        if run.on_done is not None:
            run.on_done(now)

    def _abandon_run(self, run: _LookupRun) -> None:
        """Stop a lookup without an event; its queries in flight run out in the core."""
        if not run.finished:
            run.finished = True
            del self._lookups[run.op]

    def abandon(self, op: OperationId) -> None:
        run = self._lookups.get(op)
        if run is not None:
            self._abandon_run(run)
            return
        plan = self._bootstraps.pop(op, None)
        if plan is not None:
            if plan.run is not None:
                self._abandon_run(plan.run)
            if plan.refresh is not None:
                self._abandon_refresh(plan.refresh)
            return
        refresh = self._refreshes.get(op)
        if refresh is not None:
            self._abandon_refresh(refresh)
            return
        announce = self._announces.pop(op, None)
        if announce is not None:
            announce.finished = True
            if announce.run is not None:
                self._abandon_run(announce.run)

    # --- announces ----------------------------------------------------------------------

    def start_announce(
        self, info_hash: bytes, port: int | None, now: float, lookup: Lookup | None, seed: bool = False
    ) -> OperationId:
        if type(info_hash) is not bytes or len(info_hash) != 20:
            raise LocalProtocolError("info_hash must be 20 bytes")
        if port is not None and not 0 < port < 65536:
            raise LocalProtocolError(f"port must be 1-65535, not {port}")
        announce = _Announce(self, self._new_op(), info_hash, port, seed)
        self._announces[announce.op] = announce
        if lookup is not None:
            self._announce_send(announce, lookup, now)
        else:
            run = self._seeded_run(
                info_hash,
                GetPeers(info_hash),
                now,
                touch=True,
                public=False,
                on_done=lambda at: self._announce_send(announce, run.lookup, at),
            )
            announce.run = run
            self._advance(run, now)
        return announce.op

    def _announce_send(self, announce: _Announce, lookup: Lookup, now: float) -> None:
        """BEP 5: ``announce_peer`` to the k closest nodes that answered, each with its token.

        First, once, the lookup's stragglers among the k closest are asked again
        (``get_peers``, for their tokens): on a lossy network, with early finish,
        a lookup often ends without some of the closest live nodes, and the
        announce would store on farther ones than a later lookup reaches
        (tools/bench_lookup.py, harsh network: the k closest responders were the
        k closest live nodes in 6 of 150 announces).
        """
        if announce.finished:
            return
        proto = self._proto
        k = proto.config.k
        announce.lookup = lookup
        if not announce.probed:
            announce.probed = True
            query = GetPeers(announce.info_hash)
            for contact in lookup.stragglers(k):
                try:
                    key = proto._send_query(
                        query, contact.addr, now, contact.id, proto.config.lookup_query_timeout, True,
                        internal=False, owner=announce,
                    )
                except LocalProtocolError as exc:
                    log.debug("announce probe to %s not sent: %s", contact.addr, exc)
                    continue
                announce.probes[key] = contact
            if announce.probes:
                return
        targets = [(c, tok) for c, tok in lookup.closest_responders(k) if tok]
        announce.sent = len(targets)
        for contact, token in targets:
            self._announce_one(announce, contact, token, now)
        self._announce_check(announce, now)

    def _announce_probed(self, announce: _Announce, now: float) -> None:
        """A probe of an announce ended; announce once they all have."""
        if not announce.probes and announce.lookup is not None:
            self._announce_send(announce, announce.lookup, now)

    def _announce_one(self, announce: _Announce, contact: Contact, token: bytes, now: float, *, tries: int = 1) -> None:
        """Send one ``announce_peer``; all but the last try time out after the lookup's hard timeout."""
        proto = self._proto
        port = announce.port
        query = AnnouncePeer(announce.info_hash, port or 0, token, implied_port=port is None, seed=announce.seed)
        timeout = proto.config.lookup_query_timeout if tries < ANNOUNCE_TRIES else None
        try:
            key = proto._send_query(query, contact.addr, now, contact.id, timeout, True, internal=False, owner=announce)
        except LocalProtocolError as exc:
            log.debug("announce to %s not sent: %s", contact.addr, exc)
            return
        announce.tries[key] = (contact, token, tries)
        announce.pending += 1

    def _announce_check(self, announce: _Announce, now: float) -> None:
        if (
            announce.pending
            or announce.probes
            or announce.finished
            or (announce.run is not None and not announce.run.finished)
        ):
            return
        announce.finished = True
        del self._announces[announce.op]
        self._proto._events.append(AnnounceFinished(announce.op, announce.accepted, announce.sent, now))

    # --- bucket refresh -------------------------------------------------------------------

    def start_refresh(
        self, now: float, *, limit: int | None = None, not_full: bool = False, public: bool = True, on_done: _Done | None = None
    ) -> _Refresh:
        proto = self._proto
        table = proto.table
        if not_full:
            # The lookup of our own ID has just searched our own bucket, unless
            # it found fewer than k contacts in all (many of the nodes it heard of
            # were dead, say): then a lookup elsewhere in the space finds more.
            own = table.bucket_for(proto.node_id) if len(table) >= table.k else None
            ranges = [(b.lo, b.hi) for b in table.buckets if len(b.entries) < table.k and b is not own]
        else:
            ranges = table.buckets_to_refresh(now)
        if limit is not None:
            ranges = ranges[:limit]
        refresh = _Refresh(self._new_op(), ranges, public, on_done)
        self._refreshes[refresh.op] = refresh
        self._refresh_fill(refresh, now)
        return refresh

    def _refresh_fill(self, refresh: _Refresh, now: float) -> None:
        if refresh.finished:
            return
        rng = self._proto.rng
        while refresh.ranges and len(refresh.running) < PARALLEL_REFRESHES:
            lo, hi = refresh.ranges.popleft()
            target = random_id_in_range(lo, hi, rng)

            run = self._seeded_run(target, FindNode(target), now, touch=True, public=False)
            run.on_done = functools.partial(self._refresh_one_done, refresh, run)
            refresh.running.add(run)
            self._advance(run, now)
            if refresh.finished:
                return
        if not refresh.ranges and not refresh.running:
            refresh.finished = True
            del self._refreshes[refresh.op]
            if refresh.public:
                self._proto._events.append(RefreshFinished(refresh.op, refresh.count, now))
            if refresh.on_done is not None:
                refresh.on_done(now)

    def _refresh_one_done(self, refresh: _Refresh, run: _LookupRun, now: float) -> None:
        refresh.running.discard(run)
        self._refresh_fill(refresh, now)

    def _abandon_refresh(self, refresh: _Refresh) -> None:
        if refresh.finished:
            return
        refresh.finished = True
        self._refreshes.pop(refresh.op, None)
        for run in list(refresh.running):
            self._abandon_run(run)

    # --- bootstrap --------------------------------------------------------------------

    def start_bootstrap(self, now: float, *, timeout: float, wait_for_routers: bool) -> OperationId:
        proto = self._proto
        cfg = proto.config
        # Ping the saved contacts (BEP 5 / PROTOCOL.md: "at start-up, ping the saved
        # contacts"). The lookup asks only those closest to our ID; without this a
        # restarted node would come back with k contacts. Those that held a place in
        # the table are pinged first and the overflow after the lookup, so the former
        # entries get their places back.
        saved, overflow = split_saved_contacts(proto.node_id, self._saved, k=cfg.k, max_per_ip=cfg.max_per_ip)
        plan = _Bootstrap(self._new_op(), timeout, saved, overflow)
        self._bootstraps[plan.op] = plan
        self._ping_all(saved, now)
        if not wait_for_routers:
            self._bootstrap_begin(plan, now)
        return plan.op

    def _ping_all(self, contacts: Sequence[Contact], now: float) -> None:
        for contact in contacts:
            self._proto.ping_contact(contact, now)

    def _bootstrap_begin(self, plan: _Bootstrap, now: float) -> None:
        plan.waiting = False
        plan.deadline = now + plan.timeout
        self._bootstrap_attempt(plan, now)

    def _bootstrap_attempt(self, plan: _Bootstrap, now: float) -> None:
        """One lookup of our own ID from the saved contacts, the table and the routers."""
        proto = self._proto
        own = proto.node_id
        plan.answered = False
        plan.retry_at = None

        def answered(at: float) -> None:
            plan.answered = True  # past the first answer the lookup takes its time

        run = self._make_run(
            own,
            FindNode(own),
            plan.start + proto.table.closest(own, 2 * proto.config.k),
            self._routers,
            now,
            touch=False,
            public=False,
            on_reply=answered,
            on_done=lambda at: self._bootstrap_attempt_done(plan, at),
        )
        plan.run = run
        self._advance(run, now)

    def _bootstrap_attempt_done(self, plan: _Bootstrap, now: float) -> None:
        if plan.op not in self._bootstraps or plan.run is None:
            return
        replies = plan.run.lookup.stats.replies
        # Every first query lost (a lossy link, a router that dropped it)? Ask
        # again while the time allows: one try per router is too fragile.
        if replies or now >= plan.deadline or not (self._routers or self._saved):
            self._bootstrap_conclude(plan, replies, now)
        else:
            plan.retry_at = now + min(BOOTSTRAP_RETRY_PAUSE, max(0.0, plan.deadline - now))

    def _bootstrap_retry(self, plan: _Bootstrap, now: float) -> None:
        plan.retry_at = None
        if plan.overflow:  # the former table's entries are silent: try the rest at once
            plan.start = plan.saved + plan.overflow
            self._ping_all(plan.overflow, now)
            plan.overflow = []
        self._bootstrap_attempt(plan, now)

    def _bootstrap_conclude(self, plan: _Bootstrap, replies: int, now: float) -> None:
        proto = self._proto
        if replies == 0:
            del self._bootstraps[plan.op]
            if self._routers_configured and not self._routers and not self._saved:
                failure = BootstrapFailure.NOTHING_RESOLVED
            else:
                failure = BootstrapFailure.NO_ANSWER
            self.rejoin_delay = self._backoff
            self._rejoin_at = now + self._backoff
            self._backoff = min(self._backoff * 2, REBOOTSTRAP_BACKOFF[1])
            proto._events.append(
                BootstrapFinished(plan.op, failure, len(proto.table), len(self._saved), len(self._routers), now)
            )
            return
        self._ping_all(plan.overflow, now)  # fills the holes of saved contacts that are gone
        plan.overflow = []
        proto.table.touch_bucket(proto.node_id, now)

        def refreshed(at: float) -> None:
            if self._bootstraps.pop(plan.op, None) is None:
                return
            self.joined = True
            self._backoff = REBOOTSTRAP_BACKOFF[0]
            self._rejoin_at = -math.inf
            log.info("joined the DHT: %d contacts", len(proto.table))
            proto._events.append(
                BootstrapFinished(plan.op, None, len(proto.table), len(self._saved), len(self._routers), at)
            )

        plan.refresh = self.start_refresh(now, not_full=True, public=False, on_done=refreshed)

    # --- maintenance ------------------------------------------------------------------

    def _maintain(self, now: float) -> None:
        """One maintenance round: re-bootstrap, questionable pings, refresh, save."""
        proto = self._proto
        table = proto.table
        if len(table) == 0 and (self._routers_configured or self._saved):
            if not self._bootstraps and now >= self._rejoin_at:
                proto._events.append(BootstrapDue(now))
            return
        for contact in table.questionable(now)[:QUESTIONABLE_PINGS_PER_ROUND]:
            proto.ping_contact(contact, now)
        if self.joined and (self._upkeep is None or self._upkeep.finished):
            self._upkeep = self.start_refresh(now, limit=REFRESHES_PER_ROUND, public=False)
        if now >= self._next_save:
            proto._events.append(SaveDue(now))
            self._next_save = now + SAVE_INTERVAL

    def node_id_changed(self, now: float) -> None:
        """After a BEP 42 ID change, join again under the new ID: look it up (so that
        the nodes closest to it learn of us), refresh the buckets the rebuilt table
        holds too few contacts in, and ask for the table to be saved."""
        proto = self._proto
        own = proto.node_id

        def looked_up(at: float) -> None:
            self.start_refresh(at, not_full=True, public=False, on_done=lambda t: proto._events.append(SaveDue(t)))

        run = self._seeded_run(own, FindNode(own), now, touch=True, public=False, on_done=looked_up)
        self._advance(run, now)
