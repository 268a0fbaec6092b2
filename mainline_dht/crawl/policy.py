"""The crawl's decisions, without I/O: whom to ask next, what, and when.

Owns: the nodes a crawl knows and their state (answered, dead, BEP 51 support,
the ``interval`` and ``num`` they gave), the order of visits, the politeness
rules (a global query budget and a per-IP one) and the re-asking rules of BEP 51.
The trio crawler (:mod:`.crawler`) only executes what :class:`CrawlPolicy` says::

    for q in policy.next_queries(now):     # within the budgets
        ... send q.kind to q.addr with q.target ...
        policy.on_response(q, now, ...) / policy.on_error(q, now) / policy.on_timeout(q, now)
    policy.next_wakeup()                   # when next_queries may return more

Time is ``now`` in Unix seconds (the crawler's wall clock, so that ``next_visit``
can be stored and honoured by a later run); randomness comes from the ``rng``
given to the constructor. Must not import trio, socket, time or os.

The visit plan:

- Every node is visited once with ``sample_infohashes``. Its reply carries
  samples (BEP 51) and the ``nodes`` closest to our target; the target is either
  next to the node's own ID (its reply then lists its nearest neighbours, which
  reaches nodes that only their neighbours know of) or a random ID (the reply
  then holds nodes from anywhere in the keyspace, which spreads the crawl). The
  share of each is :attr:`CrawlLimits.neighbour_share`.
- A node that answers without samples, or with error 204, does not support
  BEP 51: it is remembered as such and never sampled again. After an error
  (whose reply had no ``nodes``) it gets one ``find_node`` for its neighbours,
  ``retry_after`` seconds later.
- A node whose ``num`` is larger than the distinct samples it has shown us is
  asked again after its ``interval``, up to :attr:`CrawlLimits.max_sample_rounds`
  times; otherwise it is revisited after ``max(interval, revisit_after)``.
- A node that does not answer is retried after ``retry_after`` seconds, then
  given up after ``max_failures``.
- Politeness: a token bucket over all queries (``rate`` per second) and one per
  destination IP, or IPv6 /64 (``per_ip_rate``, ``per_ip_burst``). With the defaults one IP
  gets at most 4 + 2 x 10 = 24 queries in any 10 seconds, half of the 50 at which
  libtorrent ignores a sender.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol

from ..wire.contact import Address, Contact
from .store import NodeRecord

__all__ = ["budget_key", "CrawlLimits", "CrawlPolicy", "CrawlScope", "MAX_FOREIGN", "CrawlQuery", "CrawlCounters", "NodeState",
           "QueryKind", "ResponseOutcome"]

#: BEP 51 ``interval`` assumed when a node gives none (libtorrent's default, 6 hours).
DEFAULT_SAMPLE_INTERVAL: Final = 21600.0
#: The farthest ahead a visit is planned, whatever ``interval`` a node gives (seconds).
MAX_SAMPLE_INTERVAL: Final = 7 * 86400.0
#: Tokens (queries) forgiven to float rounding when a budget refills.
_TOKEN_SLACK: Final = 1e-6
#: Seconds between the per-IP budget's sweeps of idle entries.
_SWEEP_EVERY: Final = 10.0


#: Contacts outside the scope kept for :meth:`CrawlPolicy.take_foreign` at most (the oldest go first).
MAX_FOREIGN: Final = 100_000


class CrawlScope(Protocol):
    """The part of the keyspace one crawler visits, when several share the work.

    A crawler of a fleet (:mod:`.fleet`) holds some partitions of the keyspace;
    the policy visits only the nodes its scope owns and sets aside the others
    (:meth:`CrawlPolicy.take_foreign`) for their owners. The scope may change
    at any time: a node found outside it when its turn comes is forgotten.
    """

    def owns(self, node_id: bytes) -> bool:
        """Whether this crawler visits the node with ``node_id``."""
        ...

    def random_target(self, rng: random.Random) -> bytes | None:
        """A random 20-byte target inside the scope (``None``: nothing is owned now)."""
        ...


class QueryKind(Enum):
    """What the crawler sends."""

    SAMPLE = "sample_infohashes"
    FIND_NODE = "find_node"


@dataclass(frozen=True, slots=True)
class CrawlLimits:
    """The policy's tunables; the defaults suit the public DHT."""

    rate: float = 250.0
    """Queries per second, all destinations together (``--rate``)."""
    burst: float | None = None
    """Queries the global budget lets out at once (``None``: a tenth of a second's worth, at least 1)."""
    per_ip_rate: float = 2.0
    """Queries per second to one IP, sustained. libtorrent ignores an IP that sends it 50 in 10 s."""
    per_ip_burst: float = 4.0
    """Queries in a row to one IP after a quiet spell."""
    max_in_flight: int = 1024
    """Queries awaiting an answer at once."""
    retry_after: float = 15.0
    """Seconds before a node that did not answer is asked again."""
    max_failures: int = 2
    """Unanswered queries in a row after which a node is given up (this run)."""
    revisit_after: float = DEFAULT_SAMPLE_INTERVAL
    """Seconds before a node whose samples we have all seen is visited again."""
    min_interval: float = 10.0
    """The shortest wait between two samples of one node, whatever its ``interval`` says."""
    max_sample_rounds: int = 8
    """Samples of one node in a row while its ``num`` says there is more to see."""
    neighbour_share: float = 0.5
    """Share of first visits that ask for the node's own neighbourhood (the rest: a random target)."""
    max_nodes: int = 20_000_000
    """Nodes remembered at most; contacts beyond are ignored (bounds memory)."""


@dataclass(frozen=True, slots=True)
class CrawlQuery:
    """One query the crawler is to send."""

    kind: QueryKind
    node_id: bytes
    addr: Address
    target: bytes


@dataclass(slots=True, eq=False)
class NodeState:
    """What the crawl knows of one node."""

    node_id: bytes
    addr: Address
    first_seen: float | None = None
    """Unix seconds of its first answer (``None``: it never answered)."""
    last_seen: float | None = None
    version: bytes | None = None
    bep51: bool | None = None
    next_visit: float = 0.0
    interval: int | None = None
    num: int | None = None
    rounds: int = 0
    """Samples taken since all of its infohashes were last seen (or since the start)."""
    failures: int = 0
    dead: bool = False
    in_flight: bool = False
    queued: bool = False
    seen: set[bytes] | None = None
    """Distinct infohashes it sampled to us while ``num`` says there are more."""

    def record(self) -> NodeRecord | None:
        """Its row for the store, or ``None`` if it never answered."""
        if self.first_seen is None or self.last_seen is None:
            return None
        return NodeRecord(self.node_id, self.addr, self.first_seen, self.last_seen, self.version, self.bep51,
                          self.next_visit, self.interval, self.num)


@dataclass(slots=True)
class CrawlCounters:
    """What the policy has sent and learned."""

    queries: int = 0
    samples_sent: int = 0
    find_nodes_sent: int = 0
    responses: int = 0
    errors: int = 0
    timeouts: int = 0
    answered: int = 0
    """Distinct nodes that answered (this run, or restored from the store)."""
    bep51: int = 0
    """Of those, nodes that answer ``sample_infohashes``."""
    no_bep51: int = 0
    dead: int = 0
    charged: int = 0
    """Queries sent outside the policy (lookups) and charged to the global budget."""


@dataclass(frozen=True, slots=True)
class ResponseOutcome:
    """What one answer taught the policy."""

    node: NodeState
    first_answer: bool
    """The node answered for the first time (a new node for the crawl's output)."""
    new_contacts: int
    samples: tuple[bytes, ...] = field(default_factory=tuple)


def budget_key(ip: str) -> str:
    """The unit the per-IP budget counts by: the IPv4 address, or the IPv6 /64
    (libtorrent counts IPv6 senders by /64; so do hosts that own a whole prefix)."""
    if ":" not in ip:
        return ip
    try:
        net = ipaddress.IPv6Network((ip, 64), strict=False)
    except ValueError:
        return ip
    return str(net.network_address) + "/64"


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class CrawlPolicy:
    """The crawl's state and rules (see the module docstring).

    Args:
        rng: every random choice (targets).
        now: the current time (Unix seconds).
        limits: the tunables.
    """

    def __init__(self, *, rng: random.Random, now: float, limits: CrawlLimits | None = None) -> None:
        self.rng = rng
        self.limits = lim = limits or CrawlLimits()
        if lim.rate <= 0 or lim.per_ip_rate <= 0:
            raise ValueError("rates must be positive")
        self._burst = lim.burst if lim.burst is not None else max(1.0, lim.rate / 10)
        self._tokens = self._burst
        self._refilled_at = now
        self._ips: dict[str, _Bucket] = {}
        self._next_sweep = now + _SWEEP_EVERY
        self.nodes: dict[bytes, NodeState] = {}
        self._ready: deque[NodeState] = deque()
        self._timed: list[tuple[float, int, NodeState]] = []
        # Nodes waiting for their IP's budget, per IP, and when each IP may next be asked:
        # one wake-up per IP, however many nodes share it (sybil hosts hold thousands).
        self._ip_waiting: dict[str, deque[NodeState]] = {}
        self._ip_timed: list[tuple[float, int, str]] = []
        self._seq = 0
        self.in_flight = 0
        self.counters = CrawlCounters()
        self._dirty: dict[bytes, NodeState] = {}
        #: IDs never to visit: our own node's (it appears in others' replies).
        self.exclude: set[bytes] = set()
        #: The keyspace this crawler visits (``None``: all of it).
        self.scope: CrawlScope | None = None
        self._foreign: dict[bytes, Address] = {}

    # --- learning of nodes ------------------------------------------------------------

    def add_contact(self, contact: Contact, now: float) -> bool:
        """A node someone told us of (unverified). Returns whether it is new."""
        if contact.id in self.nodes or len(self.nodes) >= self.limits.max_nodes:
            return False
        if not 0 < contact.addr[1] < 65536 or contact.id in self.exclude:
            return False
        if self.scope is not None and not self.scope.owns(contact.id):
            foreign = self._foreign
            if contact.id not in foreign:
                if len(foreign) >= MAX_FOREIGN:
                    del foreign[next(iter(foreign))]
                foreign[contact.id] = contact.addr
            return False
        node = NodeState(contact.id, contact.addr)
        self.nodes[contact.id] = node
        self._schedule(node, now)
        return True

    def add_contacts(self, contacts: Iterable[Contact], now: float) -> int:
        """:meth:`add_contact` for each; returns how many were new."""
        return sum(self.add_contact(c, now) for c in contacts)

    def take_foreign(self) -> list[tuple[bytes, Address]]:
        """Return (and forget) the contacts learned outside the scope, for their owners."""
        foreign, self._foreign = self._foreign, {}
        return list(foreign.items())

    def restore(self, record: NodeRecord, now: float) -> None:
        """Take a node from an earlier run's store: it is visited when its ``next_visit`` comes."""
        if record.node_id in self.nodes or len(self.nodes) >= self.limits.max_nodes:
            return
        if self.scope is not None and not self.scope.owns(record.node_id):
            return
        node = NodeState(record.node_id, record.addr, record.first_seen, record.last_seen, record.version,
                         record.bep51, record.next_visit, record.sample_interval, record.num)
        self.nodes[node.node_id] = node
        self.counters.answered += 1
        if node.bep51 is True:
            self.counters.bep51 += 1
        elif node.bep51 is False:
            self.counters.no_bep51 += 1
        self._schedule(node, now)

    def _schedule(self, node: NodeState, now: float) -> None:
        if node.queued or node.in_flight or node.dead:
            return
        node.queued = True
        if node.next_visit <= now:
            self._ready.append(node)
        else:
            self._seq += 1
            heapq.heappush(self._timed, (node.next_visit, self._seq, node))

    # --- budgets ------------------------------------------------------------------------

    def _refill(self, now: float) -> None:
        elapsed = now - self._refilled_at
        if elapsed > 0:
            # + _TOKEN_SLACK: at the instant next_wakeup named, rounding can leave
            # 0.9999999999 tokens, and next_wakeup would name that instant again.
            self._tokens = min(self._burst, self._tokens + elapsed * self.limits.rate + _TOKEN_SLACK)
            self._refilled_at = now

    def charge(self, queries: int, now: float) -> None:
        """Count queries sent outside the policy (lookups) against the global budget."""
        if queries <= 0:
            return
        self._refill(now)
        self._tokens -= queries
        self.counters.charged += queries

    def _ip_ready_at(self, ip: str, now: float) -> float:
        """When ``ip`` may get one more query (``now`` if it may at once)."""
        b = self._ips.get(ip)
        if b is None:
            return now
        lim = self.limits
        tokens = min(lim.per_ip_burst, b.tokens + (now - b.at) * lim.per_ip_rate)
        if tokens >= 1.0 - _TOKEN_SLACK:
            return now
        return now + (1.0 - tokens) / lim.per_ip_rate + _TOKEN_SLACK

    def _spend_ip(self, ip: str, now: float) -> None:
        lim = self.limits
        b = self._ips.get(ip)
        if b is None:
            self._ips[ip] = _Bucket(lim.per_ip_burst - 1.0, now)
            return
        b.tokens = min(lim.per_ip_burst, b.tokens + (now - b.at) * lim.per_ip_rate) - 1.0
        b.at = now

    def _sweep_ips(self, now: float) -> None:
        """Forget IPs whose budget is full again (bounds memory to the IPs of the last seconds)."""
        full_after = self.limits.per_ip_burst / self.limits.per_ip_rate
        self._ips = {ip: b for ip, b in self._ips.items() if now - b.at < full_after}
        self._next_sweep = now + _SWEEP_EVERY

    # --- what to send -------------------------------------------------------------------

    def next_queries(self, now: float) -> list[CrawlQuery]:
        """The queries to send now, within every budget; each is then in flight
        until :meth:`on_response`, :meth:`on_error` or :meth:`on_timeout`."""
        if now >= self._next_sweep:
            self._sweep_ips(now)
        lim = self.limits
        timed, ready = self._timed, self._ready
        while timed and timed[0][0] <= now:
            ready.append(heapq.heappop(timed)[2])
        ip_timed, ip_waiting = self._ip_timed, self._ip_waiting
        while ip_timed and ip_timed[0][0] <= now:
            # An IP's budget holds a query again: its longest-waiting node goes first.
            ip = heapq.heappop(ip_timed)[2]
            waiting = ip_waiting.pop(ip, None)
            if waiting:
                ready.appendleft(waiting.popleft())
                if waiting:  # the rest wait on; one wake-up per IP is always pending
                    ip_waiting[ip] = waiting
                    self._seq += 1
                    heapq.heappush(ip_timed, (now + 1.0 / lim.per_ip_rate, self._seq, ip))
        self._refill(now)
        out: list[CrawlQuery] = []
        while ready and self._tokens >= 1.0 and self.in_flight < lim.max_in_flight:
            node = ready.popleft()
            if node.dead or node.in_flight:
                node.queued = False
                continue
            ip = budget_key(node.addr[0])
            ip_at = self._ip_ready_at(ip, now)
            if ip_at > now:
                waiting = ip_waiting.get(ip)
                if waiting is None:  # no wake-up pending for this IP yet
                    waiting = ip_waiting[ip] = deque()
                    self._seq += 1
                    heapq.heappush(ip_timed, (ip_at, self._seq, ip))
                waiting.append(node)  # stays queued
                continue
            node.queued = False
            if self.scope is not None and not self.scope.owns(node.node_id):
                # Its partition went to another crawler: forget it. A node that
                # answered is in the store for the owner; one never visited goes
                # to the owner through take_foreign.
                if not node.in_flight and node.node_id not in self._dirty:
                    del self.nodes[node.node_id]
                    if node.first_seen is None and len(self._foreign) < MAX_FOREIGN:
                        self._foreign[node.node_id] = node.addr
                continue
            query = self._query_for(node)
            if query is None:
                continue
            self._spend_ip(ip, now)
            self._tokens -= 1.0
            node.in_flight = True
            self.in_flight += 1
            c = self.counters
            c.queries += 1
            if query.kind is QueryKind.SAMPLE:
                c.samples_sent += 1
            else:
                c.find_nodes_sent += 1
            out.append(query)
        return out

    def _query_for(self, node: NodeState) -> CrawlQuery | None:
        rng = self.rng
        if node.first_seen is None or node.rounds == 0:
            # A first visit (this run): the neighbourhood or a random region.
            if rng.random() < self.limits.neighbour_share:
                target = node.node_id[:15] + rng.randbytes(5)
            else:
                target = self._random_target()
        else:
            target = self._random_target()
        kind = QueryKind.FIND_NODE if node.bep51 is False else QueryKind.SAMPLE
        return CrawlQuery(kind, node.node_id, node.addr, target)

    def _random_target(self) -> bytes:
        """A random target, inside the scope when there is one (so replies list nodes we own)."""
        if self.scope is not None:
            target = self.scope.random_target(self.rng)
            if target is not None:
                return target
        return self.rng.randbytes(20)

    def next_wakeup(self) -> float | None:
        """When :meth:`next_queries` may next return something (``None``: only after an answer)."""
        t: float | None = None
        if self._ready and self.in_flight < self.limits.max_in_flight:
            t = self._refilled_at + max(0.0, 1.0 - self._tokens) / self.limits.rate
        for heap in (self._timed, self._ip_timed):
            if heap:
                first = heap[0][0]
                t = first if t is None else min(t, first)
        return t

    def idle(self, now: float, horizon: float) -> bool:
        """Nothing in flight and nothing to do before ``now + horizon``."""
        if self.in_flight or self._ready or self._ip_waiting:
            return False
        return not self._timed or self._timed[0][0] > now + horizon

    # --- answers ------------------------------------------------------------------------

    def _answered(self, node: NodeState, now: float, version: bytes | None) -> bool:
        first = node.first_seen is None
        if first:
            node.first_seen = now
            self.counters.answered += 1
        node.last_seen = now
        node.failures = 0
        if version is not None:
            node.version = version
        return first

    def _done(self, query: CrawlQuery) -> NodeState | None:
        node = self.nodes.get(query.node_id)
        if node is not None and node.in_flight:
            node.in_flight = False
            self.in_flight -= 1
            return node
        return None

    def on_response(
        self,
        query: CrawlQuery,
        now: float,
        *,
        sender_id: bytes,
        nodes: Sequence[Contact] = (),
        samples: Sequence[bytes] | None = None,
        num: int | None = None,
        interval: int | None = None,
        version: bytes | None = None,
    ) -> ResponseOutcome | None:
        """Take an answer to ``query``.

        Args:
            sender_id: the ID the responder gave (a different one than we
                expected: the address now belongs to another node, which is
                recorded instead).
            nodes, samples, num, interval, version: the reply's fields.

        Returns:
            What it taught, or ``None`` for an answer to no query of ours.
        """
        node = self._done(query)
        if node is None:
            return None
        c = self.counters
        c.responses += 1
        new = self.add_contacts(nodes, now)
        if sender_id != node.node_id:
            # Someone else answers at this address now: record that node, forget this one.
            node.dead = True
            c.dead += 1
            if sender_id in self.exclude:
                return None
            other = self.nodes.get(sender_id)
            if other is None and len(self.nodes) < self.limits.max_nodes:
                other = self.nodes[sender_id] = NodeState(sender_id, query.addr)
            if other is None:
                return None
            node = other
        first = self._answered(node, now, version)
        lim = self.limits
        if query.kind is QueryKind.FIND_NODE or node.bep51 is False:
            node.next_visit = now + lim.revisit_after
            self._mark(node, now)
            return ResponseOutcome(node, first, new)
        if samples is None:
            # Answered like find_node: no BEP 51. Its nodes are what a find_node would give.
            self._set_bep51(node, False)
            node.next_visit = now + lim.revisit_after
            self._mark(node, now)
            return ResponseOutcome(node, first, new)
        self._set_bep51(node, True)
        node.num = num
        node.interval = interval
        node.rounds += 1
        wait = min(MAX_SAMPLE_INTERVAL, float(interval) if interval is not None else DEFAULT_SAMPLE_INTERVAL)
        seen = node.seen if node.seen is not None else set()
        seen.update(samples)
        if num is not None and num > len(seen) and node.rounds < lim.max_sample_rounds:
            node.seen = seen
            node.next_visit = now + max(wait, lim.min_interval)
        else:
            node.seen = None
            node.rounds = 0
            node.next_visit = now + max(wait, lim.revisit_after)
        self._mark(node, now)
        return ResponseOutcome(node, first, new, tuple(samples))

    def _set_bep51(self, node: NodeState, supported: bool) -> None:
        if node.bep51 is supported:
            return
        c = self.counters
        if node.bep51 is True:
            c.bep51 -= 1
        elif node.bep51 is False:
            c.no_bep51 -= 1
        node.bep51 = supported
        if supported:
            c.bep51 += 1
        else:
            c.no_bep51 += 1

    def on_error(self, query: CrawlQuery, now: float, code: int | None = None) -> NodeState | None:
        """Take a KRPC error answer (e.g. 204 method unknown) to ``query``.

        An error to ``sample_infohashes`` means no BEP 51: the node gets one
        ``find_node`` instead. An error to ``find_node`` leaves it alone until
        its revisit.
        """
        node = self._done(query)
        if node is None:
            return None
        self.counters.errors += 1
        self._answered(node, now, None)
        if query.kind is QueryKind.SAMPLE:
            self._set_bep51(node, False)
            # Its neighbours, through find_node, once the first wave has passed:
            # by then others' replies have usually named them already.
            node.next_visit = now + self.limits.retry_after
        else:
            node.next_visit = now + self.limits.revisit_after
        self._mark(node, now)
        return node

    def on_timeout(self, query: CrawlQuery, now: float) -> NodeState | None:
        """No answer to ``query``: retry later, or give the node up."""
        node = self._done(query)
        if node is None:
            return None
        self.counters.timeouts += 1
        node.failures += 1
        if node.failures >= self.limits.max_failures:
            node.dead = True
            self.counters.dead += 1
            return node
        node.next_visit = now + self.limits.retry_after
        self._schedule(node, now)
        return node

    def _mark(self, node: NodeState, now: float) -> None:
        self._dirty[node.node_id] = node
        self._schedule(node, now)

    def take_dirty(self) -> list[NodeRecord]:
        """The records of nodes that changed since the last call (for the store)."""
        out = [r for n in self._dirty.values() if (r := n.record()) is not None]
        self._dirty = {}
        return out

    def answered_ids(self) -> list[bytes]:
        """IDs of the nodes that answered (this run or restored)."""
        return [n.node_id for n in self.nodes.values() if n.first_seen is not None and not n.dead]
