"""The sans-I/O DHT node: KRPC in, KRPC out, no sockets and no clock.

Owns: answering queries (``ping``, ``find_node``, ``get_peers`` with BEP 33 scrapes,
``announce_peer``, BEP 44 ``get``/``put``,
``sample_infohashes``), matching replies to our own queries by (``t``, address),
query timeouts, learning contacts into the routing table per BEP 5 (verification
pings for unverified nodes, pings to questionable nodes before eviction), token
rotation and peer expiry.

It is driven by three inputs and three outputs (as aioquic is)::

    proto.receive_datagram(data, addr, now)     # untrusted bytes from the network
    key = proto.send_query(query, addr, now)    # a query of our own
    proto.handle_timer(now)                     # when now >= proto.get_timer()

    proto.datagrams_to_send()  -> [(bytes, addr)]
    proto.next_event()         -> Event | None
    proto.get_timer()          -> float | None

The node's own initiatives run here too (rules in :mod:`mainline_dht.core.behaviour`):
``start_lookup``, ``start_announce``, ``start_refresh`` and ``start_bootstrap`` return an
operation ID; the core sends their queries itself and reports their progress as
events carrying that ID. Its maintenance rounds (questionable pings, idle-bucket
refresh, re-bootstrap, the save schedule) run from ``handle_timer``. A runtime only
moves datagrams, sleeps until ``get_timer()``, and turns events into results.

BEP 32 (IPv6): one core serves one overlay, IPv4 or IPv6 (``family``), with
its own routing table, node ID (BEP 42 per family) and external-address vote. A
dual-stack node runs two cores made with ``sibling=``: they share one peer store
and one token manager, and each answers a ``want`` for the other family's nodes
from its sibling's table.

Nothing raised by bad network input escapes ``receive_datagram``: it answers
with a KRPC error or drops the datagram, and counts it in :attr:`stats`.
Only caller mistakes raise (:class:`~mainline_dht.errors.LocalProtocolError`).

Must not import trio, socket, time or os; time arrives as ``now`` (seconds, on
the driver's clock) and randomness from the ``rng`` given to the constructor.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..wire import bencode
from ..wire.bencode import decode_untrusted
from ..wire.contact import Address, Contact, family_of
from ..errors import DecodeError, LocalProtocolError
from .events import (
    ErrorReceived,
    Event,
    ExternalAddressChanged,
    InfohashQueried,
    OperationId,
    PeerAnnounced,
    QueryTimedOut,
    ResponseReceived,
    TransactionKey,
)
from .lookup import DEFAULT_MAX_PER_PREFIX, Lookup
from .behaviour import NodeBehaviour, QueryOwner
from . import items, scrape
from .external_ip import ExternalAddressVoter
from ..wire.krpc import (
    COMPACT_NODE_V4,
    MAX_TID_LENGTH,
    WANT_VALUES,
    AnnouncePeer,
    ErrorCode,
    ErrorMessage,
    FindNode,
    Get,
    GetPeers,
    Put,
    QUERY_FIND_NODE,
    QUERY_GET_PEERS,
    QUERY_PING,
    Ping,
    Query,
    QueryMessage,
    ResponseMessage,
    SampleInfohashes,
    UnknownQuery,
    decode_value_untrusted,
    encode_message,
    pack_peer,
    query_fields_untrusted,
)
from .node_id import is_id_valid_for_ip, node_id_for_ip
from .contact_cache import DEFAULT_CACHE_CAPACITY, DEFAULT_HEARD_CAPACITY, DEFAULT_HEARD_SLOTS, RecentContacts
from .peer_store import DEFAULT_MAX_INFOHASHES_PER_IP, DEFAULT_MAX_VALUES_PER_REPLY, PeerStore, max_values_for
from .rate_limit import (
    DEFAULT_BAN_SECONDS,
    DEFAULT_KNOWN_AFTER,
    DEFAULT_KNOWN_MAX_GAP,
    DEFAULT_KNOWN_SOURCE_RESERVE,
    DEFAULT_MAX_TRACKED,
    DEFAULT_NEW_SOURCE_RESERVE,
    DEFAULT_QUERY_BURST,
    DEFAULT_QUERY_RATE,
    DEFAULT_REPLY_BURST,
    DEFAULT_REPLY_RATE,
    DEFAULT_STRANGER_BURST,
    DEFAULT_STRANGER_RATE,
    InboundPolicy,
    TokenBucket,
)
from .routing_table import Outcome, RoutingTable
from .rtt import RttEstimator
from .tokens import TokenManager

__all__ = ["NodeConfig", "NodeProtocol", "ProtocolStats", "CLIENT_VERSION"]

log = logging.getLogger(__name__)

#: Our ``v`` field: two-letter client code and two bytes of version (BEP 5 / BEP 20 style).
CLIENT_VERSION: Final = b"MD\x00\x01"

#: Seconds before an unanswered query counts as failed. libtorrent waits up to 15 s
#: before giving up on a node; live-DHT round trips are well under 2 s at the 95th
#: percentile, so 5 s keeps failures prompt without losing slow-but-alive nodes.
DEFAULT_QUERY_TIMEOUT: Final = 5.0
#: Seconds before a lookup's query fails (tuned on the simulated network: tools/bench_lookup.py).
#: With the lookup's early finish it no longer sets completion time (10,000 nodes: 1.5 / 3 /
#: 5 s gave median completion 2.09 / 2.08 / 1.91 s; without it 2.50 / 4.00 / 6.00 s), so it
#: stays at 3 s rather than fail slow-but-alive nodes sooner.
DEFAULT_LOOKUP_QUERY_TIMEOUT: Final = 3.0
#: Cap on our own queries in flight at once; beyond it ``send_query`` refuses.
DEFAULT_MAX_OUTSTANDING: Final = 4096
#: BEP 51: the ``interval`` (seconds) we ask crawlers to wait; libtorrent's default.
DEFAULT_SAMPLE_INTERVAL: Final = 21600
#: BEP 51: infohashes per ``sample_infohashes`` reply; 20 x 20 bytes keeps it one packet.
DEFAULT_MAX_SAMPLES: Final = 20
#: Verification/eviction pings we may send per second (a token bucket), so a flood of
#: strangers querying us cannot make us flood the network with pings.
DEFAULT_PING_RATE: Final = 50.0
#: Of those, verification pings a second to queriers we have not verified. A query
#: can carry any source address, so these are the pings a flood with forged
#: sources could make us send (to its victims); 10 a second still lets queriers
#: that come back into a table with room within seconds.
DEFAULT_QUERIER_PING_RATE: Final = 10.0
#: Verification pings to queriers in a row (5 s worth): the nodes of a network
#: that starts together all query their first contact at once.
DEFAULT_QUERIER_PING_BURST: Final = 50.0
#: How many verification pings may be pending at once.
DEFAULT_MAX_PENDING_PINGS: Final = 256
#: Seconds between sweeps of expired peers.
PEER_EXPIRY_SWEEP: Final = 60.0
#: Seconds during which further queries from a querier that is not in the routing
#: table are not reported to the table again. BEP 5 learns a contact from one
#: sighting; the table itself asks again for a verification or eviction ping only
#: after 30 s (``VERIFY_RETRY_INTERVAL``, ``EVICTION_PING_INTERVAL``). A node running
#: a lookup, or a crawler, sends us many queries in a row, and reporting each one
#: cost more than answering it (tools/bench_serve.py).
QUERIER_MEMO_SECONDS: Final = 5.0
#: Queriers remembered for :data:`QUERIER_MEMO_SECONDS` at most; the memo is
#: emptied when it fills (a flood of strangers then costs what it did without it).
QUERIER_MEMO_MAX: Final = 4096
#: Announce tokens remembered per querier IP until the token secret next rotates.
TOKEN_MEMO_MAX: Final = 4096


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Tunable limits of a node. Every field has a default fit for the live DHT."""

    k: int = 8
    """Bucket size and the number of nodes returned by ``find_node`` (BEP 5: 8)."""
    query_timeout: float = DEFAULT_QUERY_TIMEOUT
    """Seconds before one of our queries counts as failed."""
    lookup_query_timeout: float = DEFAULT_LOOKUP_QUERY_TIMEOUT
    """Seconds before a lookup's query counts as failed. Lookups hedge slow nodes
    after their soft timeout already; this bounds how long a dead node among the
    k closest can hold a lookup open."""
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING
    """Our own queries in flight at once."""
    max_per_ip: int | None = 1
    """Routing-table entries per IP address (``None``: unlimited, for one-address test networks)."""
    read_only: bool = False
    """BEP 43: send ``ro`` = 1 and answer no queries."""
    version: bytes | None = CLIENT_VERSION
    """The ``v`` field we send; ``None`` sends none."""
    token_rotation: float = 300.0
    """BEP 5: seconds between token-secret rotations (tokens live 1-2 rotations)."""
    peer_ttl: float = 30 * 60.0
    """Seconds a stored peer lives unless re-announced."""
    max_infohashes: int | None = None
    """Cap on stored infohashes (``None``: the peer store's default)."""
    max_peers_per_infohash: int | None = None
    """Cap on peers stored per infohash (``None``: the peer store's default).
    One IP holds at most one of them (a re-announce replaces its entry)."""
    max_infohashes_per_ip: int = DEFAULT_MAX_INFOHASHES_PER_IP
    """Infohashes one announcing IP may hold entries for; past it, its own oldest
    entry goes, so one source cannot push others out of the peer store."""
    peer_store_per_ip: bool = True
    """Apply the peer store's per-IP rules (one entry per IP per torrent,
    :attr:`max_infohashes_per_ip`) to IPs; ``False``: to whole addresses, for a
    test network whose nodes share one IP."""
    max_values_per_reply: int = DEFAULT_MAX_VALUES_PER_REPLY
    """Peers per ``get_peers`` reply, so the reply fits one packet."""
    sample_interval: int = DEFAULT_SAMPLE_INTERVAL
    """BEP 51 ``interval`` we hand out (seconds)."""
    max_samples: int = DEFAULT_MAX_SAMPLES
    """BEP 51 infohashes per reply."""
    ping_rate: float = DEFAULT_PING_RATE
    """Verification and eviction pings per second."""
    querier_ping_rate: float = DEFAULT_QUERIER_PING_RATE
    """Verification pings per second (within :attr:`ping_rate`) to queriers not
    yet in our table: the only pings a stranger's query can make us send, so a
    flood with forged sources makes us ping its victims at this rate at most.
    A querier over it is not pinged (nor queued); it gets another chance when
    it queries again."""
    querier_ping_burst: float = DEFAULT_QUERIER_PING_BURST
    """Verification pings to queriers in a row (the size of that budget)."""
    max_pending_pings: int = DEFAULT_MAX_PENDING_PINGS
    """Verification pings in flight at once, and queued beyond the budget."""
    query_rate_per_ip: float | None = DEFAULT_QUERY_RATE
    """Datagrams per second one source IP may send us, sustained (30: a source at
    20 a second is never refused). A source that goes over empties its bucket and
    is ignored for :attr:`flood_ban_seconds`. Checked before a datagram is decoded
    (see :mod:`mainline_dht.core.rate_limit`); replies to our own queries are
    exempt. ``None``: no inbound policy at all (per-IP or global), for a network
    whose nodes share one address, or a benchmark's single blaster."""
    query_burst_per_ip: float = DEFAULT_QUERY_BURST
    """Datagrams one source IP may send in a row after a quiet spell."""
    flood_ban_seconds: float = DEFAULT_BAN_SECONDS
    """Seconds a source that emptied its per-IP bucket is ignored (libtorrent: 300)."""
    max_tracked_sources: int = DEFAULT_MAX_TRACKED
    """Source IPs whose budgets are remembered; the least recently seen is forgotten
    first (O(1)) and comes back as a first-time source."""
    reply_rate: float | None = DEFAULT_REPLY_RATE
    """Datagrams per second the node handles from all sources together (replies
    to our own queries aside), served by trust: routing-table contacts and IPs
    that answered our queries first, then known sources, then strangers (see
    :mod:`mainline_dht.core.rate_limit`). ``None``: no global budget and no
    strangers' budget (the per-IP one still applies)."""
    reply_burst: float = DEFAULT_REPLY_BURST
    """Size of the global budget (datagrams handled in a row)."""
    stranger_reply_rate: float = DEFAULT_STRANGER_RATE
    """Datagrams per second the node handles from strangers together: sources
    neither in our table, nor verified (they answered one of our queries), nor
    known (:attr:`known_source_after`). A datagram with a forged source is
    always a stranger's, so this bounds what a spoofed flood can make us
    reflect, and the CPU it costs."""
    stranger_reply_burst: float = DEFAULT_STRANGER_BURST
    """Size of the strangers' budget (datagrams handled in a row)."""
    new_source_reserve: float = DEFAULT_NEW_SOURCE_RESERVE
    """Share of the global budget that strangers may not spend: under pressure
    they are served after trusted and known sources."""
    known_source_reserve: float = DEFAULT_KNOWN_SOURCE_RESERVE
    """Share of the global budget that only trusted sources (table contacts, IPs
    that answered our queries) may spend: they are served first."""
    known_source_after: float = DEFAULT_KNOWN_AFTER
    """Seconds of sustained traffic within its budget (no silence longer than
    :attr:`known_source_max_gap`) after which a source counts as known: served
    before strangers, outside their budget. A heavy client earns it; a forged
    source address used now and then does not."""
    known_source_max_gap: float = DEFAULT_KNOWN_MAX_GAP
    """The longest silence (seconds) that keeps a source's traffic sustained."""
    item_ttl: float = items.DEFAULT_ITEM_TTL
    """BEP 44: seconds a stored item lives unless put again."""
    max_items: int = items.DEFAULT_MAX_ITEMS
    """BEP 44: items stored at once (and :data:`~.items.DEFAULT_MAX_ITEMS_PER_IP` per writer IP)."""
    sample_infohashes: Literal["samples", "nodes", "error"] = "samples"
    """How ``sample_infohashes`` is answered: ``"samples"`` as BEP 51 says; or as a
    node without BEP 51 does, ``"nodes"`` (like ``find_node``: libtorrent's rule for
    unknown queries that carry a target) or ``"error"`` (204, method unknown). The
    other two are for simulating the live DHT's mix of clients (crawler tests)."""
    lookup_max_per_prefix: int | None = DEFAULT_MAX_PER_PREFIX
    """Candidates one IPv4 /24 or IPv6 /64 may hold in a lookup (sybil resistance,
    see :data:`mainline_dht.core.lookup.DEFAULT_MAX_PER_PREFIX`); ``None``: no limit.
    Local addresses are exempt unless :attr:`lookup_diversity_local`."""
    lookup_diversity_local: bool = False
    """Apply :attr:`lookup_max_per_prefix` to local (private, loopback) addresses
    too: for simulations whose private addresses stand for the Internet."""
    bep42_node_id: bool = True
    """BEP 42: when the nodes that answer us agree on our external address and
    our node ID is not valid for it, take a new ID that is. Nodes that enforce or
    prefer BEP 42 IDs (libtorrent by default) then rank us as verified. Never for
    a read-only node, which no one keeps in a table."""
    enforce_bep42: bool = False
    """BEP 42 enforcement: contacts whose node ID is not valid for their public
    address never enter the routing table, and lookups rank them behind every valid
    one. Off (the default), BEP 42 is a preference: a valid ID takes an invalid
    one's place in a full bucket, and lookups rank invalid IDs behind valid ones at
    similar distance (as if twice as far). Local addresses are exempt."""
    adaptive_timeouts: bool = True
    """Derive each lookup query's soft timeout from measured round trips (the
    contact's own, else the node's; see :mod:`mainline_dht.core.rtt`). ``False``:
    every query gets the lookup's fixed ``soft_timeout``."""
    recent_contacts: int = DEFAULT_CACHE_CAPACITY
    """Contacts that recently answered us kept outside the routing table, to seed
    lookups and rank candidates (see :mod:`mainline_dht.core.contact_cache`);
    0 turns the cache off."""
    heard_contacts: int = DEFAULT_HEARD_CAPACITY
    """Contacts that answers to our queries named (the first k of each), kept
    unverified to seed lookups too (see :mod:`mainline_dht.core.contact_cache`);
    0 turns this cache off."""


@dataclass(slots=True)
class ProtocolStats:
    """Counters of what the core has seen and done since it started."""

    datagrams_received: int = 0
    queries_received: int = 0
    responses_received: int = 0
    errors_received: int = 0
    malformed: int = 0
    unexpected_responses: int = 0
    replies_sent: int = 0
    errors_sent: int = 0
    queries_sent: int = 0
    timeouts: int = 0
    bad_tokens: int = 0
    announces_accepted: int = 0
    items_stored: int = 0
    verification_pings: int = 0
    pings_rate_limited: int = 0
    #: Datagrams dropped unread: their source was over its budget, banned, or
    #: refused by the global reply budget.
    queries_rate_limited: int = 0
    queries_by_method: dict[bytes, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    query: Query
    sent_at: float
    deadline: float
    node_id: bytes | None
    learn: bool
    internal: bool
    #: The core's own operation waiting for the outcome (a lookup, an announce), if any.
    owner: QueryOwner | None = None


class NodeProtocol:
    """One DHT node's protocol state, without I/O.

    Args:
        node_id: our 20-byte node ID.
        config: limits and timeouts.
        rng: the source of every random choice (transaction IDs, token secrets, samples).
        now: the driver's current time (seconds).
        family: the overlay this core serves: 4 (IPv4) or 6 (IPv6, BEP 32). Its
            table holds contacts of this family only, and its replies carry them
            in ``nodes`` (4) or ``nodes6`` (6).
        sibling: the core of the other family of a dual-stack node: this core
            shares its peer store and token manager, and each answers ``want``
            for the other family from the other's table.

    Raises:
        LocalProtocolError: a bad node ID or family, or a sibling of the same family.
    """

    def __init__(
        self,
        node_id: bytes,
        *,
        config: NodeConfig | None = None,
        rng: random.Random,
        now: float = 0.0,
        family: int = 4,
        sibling: NodeProtocol | None = None,
    ) -> None:
        if type(node_id) is not bytes or len(node_id) != 20:
            raise LocalProtocolError("node_id must be 20 bytes")
        if family not in (4, 6):
            raise LocalProtocolError(f"family must be 4 or 6, not {family!r}")
        if sibling is not None and sibling.family == family:
            raise LocalProtocolError("a sibling core serves the other address family")
        self.node_id = node_id
        self.family: int = family
        self.config = config = config or NodeConfig()
        self.rng = rng
        self.table = RoutingTable(
            node_id, k=config.k, max_per_ip=config.max_per_ip, now=now, enforce_valid_ids=config.enforce_bep42
        )
        #: The other family's core of a dual-stack node, or ``None``.
        self.sibling = sibling
        self.tokens: TokenManager
        self.peer_store: PeerStore
        #: BEP 44 items put to us (shared with a sibling, as tokens and peers are).
        self.item_store: items.ItemStore
        if sibling is not None:
            sibling.sibling = self
            self.tokens = sibling.tokens
            self.peer_store = sibling.peer_store
            self.item_store = sibling.item_store
        else:
            self.tokens = TokenManager(rng=rng, rotate_every=config.token_rotation, now=now)
            store_kwargs: dict[str, int] = {}
            if config.max_infohashes is not None:
                store_kwargs["max_infohashes"] = config.max_infohashes
            if config.max_peers_per_infohash is not None:
                store_kwargs["max_peers_per_infohash"] = config.max_peers_per_infohash
            self.peer_store = PeerStore(
                ttl=config.peer_ttl,
                max_infohashes_per_ip=config.max_infohashes_per_ip,
                per_ip=config.peer_store_per_ip,
                **store_kwargs,
            )
            self.item_store = items.ItemStore(ttl=config.item_ttl, max_items=config.max_items)
        self.stats = ProtocolStats()
        #: Our address as others report it (BEP 42 ``ip``), most recent votes.
        self.reported_addresses: deque[Address] = deque(maxlen=32)
        #: One vote per replying IP on our external address (BEP 42).
        self.address_votes = ExternalAddressVoter()
        #: Bootstrap routers' addresses: never put in the routing table, however
        #: they reach us (as repliers, queriers, or in someone's ``nodes``).
        self.router_addresses: set[Address] = set()
        #: Round-trip estimate of the whole node: timeouts for unmeasured contacts.
        self.rtt = RttEstimator()
        #: Contacts that recently answered us, with their RTT (``None``: turned off).
        self.recent: RecentContacts | None = (
            RecentContacts(capacity=config.recent_contacts) if config.recent_contacts > 0 else None
        )
        #: Contacts that answers named, unverified (``None``: turned off).
        self.heard: RecentContacts | None = (
            RecentContacts(capacity=config.heard_contacts, slots=min(DEFAULT_HEARD_SLOTS, config.heard_contacts))
            if config.heard_contacts > 0
            else None
        )
        self._pending: dict[TransactionKey, _Pending] = {}
        self._deadlines: list[tuple[float, int, TransactionKey]] = []
        self._seq = 0
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[Event] = deque()
        self._ping_tokens = config.ping_rate
        self._ping_refill_at = now
        # Verification pings to queriers (see NodeConfig.querier_ping_rate).
        self._querier_pings = TokenBucket(config.querier_ping_rate, config.querier_ping_burst, now)
        self._pinging: set[Address] = set()
        self._ping_queue: OrderedDict[Address, Contact] = OrderedDict()
        self._next_peer_sweep = now + PEER_EXPIRY_SWEEP
        self._version = config.version
        # The serving hot path (see _answer): config values and reply pieces,
        # fixed for the life of the node.
        self._k = config.k
        self._read_only = config.read_only
        self._max_values = config.max_values_per_reply
        # BEP 32: 18-byte IPv6 peers fit fewer to a packet.
        self._max_values_v6 = min(config.max_values_per_reply, max_values_for(True))
        self._v6 = family == 6
        self._reply_r_head = b"1:rd2:id20:" + node_id
        version = config.version
        self._reply_tail = (b"" if version is None else b"1:v%d:%b" % (len(version), version)) + b"1:y1:re"
        # (node ID, address) -> when a querier outside the table was last reported to it.
        self._querier_memo: dict[tuple[bytes, Address], float] = {}
        #: The inbound policy: per-IP and global budgets (``None``: unlimited).
        self.query_limiter = (
            None
            if config.query_rate_per_ip is None
            else InboundPolicy(
                rate=config.query_rate_per_ip,
                burst=config.query_burst_per_ip,
                ban_seconds=config.flood_ban_seconds,
                max_tracked=config.max_tracked_sources,
                reply_rate=config.reply_rate,
                reply_burst=config.reply_burst,
                stranger_rate=config.stranger_reply_rate,
                stranger_burst=config.stranger_reply_burst,
                new_reserve=config.new_source_reserve,
                known_reserve=config.known_source_reserve,
                known_after=config.known_source_after,
                known_max_gap=config.known_source_max_gap,
                trusted=self._ip_in_table,
                now=now,
            )
        )
        # Addresses we have queries pending to -> how many: their replies get
        # through the inbound policy (see receive_datagram).
        self._pending_addrs: dict[Address, int] = {}
        # Whether the datagram being handled was already charged to the inbound policy.
        self._admitted = False
        # IP -> its bencoded ``token`` field, valid until the secret rotates at _token_memo_until.
        self._token_memo: dict[str, bytes] = {}
        self._token_memo_until = -math.inf
        #: Report every ``get_peers`` query we answer as an :class:`InfohashQueried`
        #: event (off unless someone listens: a crawler; it costs the hot path an event).
        self.report_infohash_queries = False
        # Lookups, bootstrap, refresh, announce and save schedule (core/behaviour.py).
        self._behaviour = NodeBehaviour(self, now)

    # --- outputs -------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Return (and forget) the datagrams waiting to be sent, oldest first."""
        if self._behaviour._dirty:
            self._behaviour.flush()
        out = self._out
        self._out = []
        return out

    def next_event(self) -> Event | None:
        """Return the next event, or ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """Return when :meth:`handle_timer` must next be called (driver's clock, seconds)."""
        if self._behaviour._dirty:  # (drivers take the datagrams first; this is a safeguard)
            self._behaviour.flush()
        # Token secrets rotate lazily on use; only queries and peer expiry need waking.
        t = self._next_peer_sweep
        if self._deadlines:
            t = min(t, self._deadlines[0][0])
        if self._ping_queue and self._ping_slot_free():
            # When the ping budget next holds a whole token. With no slot free, a
            # reply or a timeout frees one; until then the queue waits.
            t = min(t, self._ping_refill_at + max(0.0, 1.0 - self._ping_tokens) / self.config.ping_rate)
        b = self._behaviour.next_timer()
        return b if b < t else t

    @property
    def outstanding(self) -> int:
        """Our queries in flight."""
        return len(self._pending)

    # --- inputs --------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Expire overdue queries, rotate token secrets and sweep expired peers."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, key = heapq.heappop(deadlines)
            pending = self._pending.get(key)
            if pending is None or pending.deadline > now:
                continue
            self._forget_pending(key)
            self.stats.timeouts += 1
            if pending.node_id is not None and pending.learn:
                if self.recent is not None:
                    self.recent.failed(Contact(pending.node_id, key[1]))
                if self.heard is not None:
                    self.heard.failed(Contact(pending.node_id, key[1]))
                for contact in self.table.failed(Contact(pending.node_id, key[1]), now):
                    self._ping(contact, now)
            if pending.internal:
                self._pinging.discard(key[1])
            elif pending.owner is not None:
                pending.owner.query_failed(key, now, False)
            else:
                self._events.append(QueryTimedOut(key, pending.query))
        queue = self._ping_queue
        while queue and self._ping_slot_free() and self._refill_pings(now) >= 1:
            _, contact = queue.popitem(last=False)
            self._ping(contact, now)
        self.tokens.rotate_if_due(now)
        if now >= self._next_peer_sweep:
            self.peer_store.expire(now)
            self.item_store.expire(now)
            self._next_peer_sweep = now + PEER_EXPIRY_SWEEP
        self._behaviour.handle_timer(now)

    def send_query(
        self,
        query: Query,
        addr: Address,
        now: float,
        *,
        node_id: bytes | None = None,
        timeout: float | None = None,
        learn: bool = True,
    ) -> TransactionKey:
        """Queue a query of ours to ``addr`` and start its timer.

        Args:
            query: what to ask.
            addr: where to send it.
            now: current time (seconds).
            node_id: the ID we expect at ``addr``, if known: a timeout then counts
                against that routing-table entry.
            timeout: seconds before it fails (default ``config.query_timeout``).
            learn: put the responder in the routing table (``False`` for bootstrap
                routers, which BEP 5 keeps out of tables).

        Returns:
            The transaction key; the outcome arrives as a :class:`ResponseReceived`,
            :class:`ErrorReceived` or :class:`QueryTimedOut` event with this key.

        Raises:
            LocalProtocolError: too many queries are in flight, or ``addr`` is not
                an IP address and port.
        """
        return self._send_query(query, addr, now, node_id, timeout, learn, internal=False)

    def _send_query(
        self,
        query: Query,
        addr: Address,
        now: float,
        node_id: bytes | None,
        timeout: float | None,
        learn: bool,
        internal: bool,
        owner: QueryOwner | None = None,
    ) -> TransactionKey:
        if len(self._pending) >= self.config.max_outstanding:
            raise LocalProtocolError(f"{len(self._pending)} queries already in flight")
        if not 0 < addr[1] < 65536:
            raise LocalProtocolError(f"cannot send to port {addr[1]}")
        rng = self.rng
        while True:
            key = (rng.randbytes(2), addr)
            if key not in self._pending:
                break
        msg = QueryMessage(key[0], self.node_id, query, read_only=self.config.read_only, version=self._version)
        data = encode_message(msg)
        deadline = now + (self.config.query_timeout if timeout is None else timeout)
        self._pending[key] = _Pending(query, now, deadline, node_id, learn, internal, owner)
        self._pending_addrs[addr] = self._pending_addrs.get(addr, 0) + 1
        self._seq += 1
        heapq.heappush(self._deadlines, (deadline, self._seq, key))
        self._out.append((data, addr))
        self.stats.queries_sent += 1
        return key

    def cancel(self, key: TransactionKey) -> None:
        """Forget a query of ours; a late reply is then ignored. Unknown keys are ignored."""
        self._forget_pending(key)

    def _forget_pending(self, key: TransactionKey) -> _Pending | None:
        """Remove and return the pending query ``key`` (``None`` if there is none)."""
        pending = self._pending.pop(key, None)
        if pending is not None:
            addr = key[1]
            n = self._pending_addrs[addr] - 1
            if n:
                self._pending_addrs[addr] = n
            else:
                del self._pending_addrs[addr]
        return pending

    def _carries_our_tid(self, data: bytes, addr: Address) -> bool:
        """Whether ``data`` holds ``t`` = one of our pending transaction IDs to ``addr``.

        Our tids are 2 bytes, so a reply carries ``1:t2:`` and the tid; a match
        elsewhere in the bytes only costs the sender a decode.
        """
        pending = self._pending
        i = data.find(b"1:t2:")
        while i >= 0:
            if (data[i + 5 : i + 7], addr) in pending:
                return True
            i = data.find(b"1:t2:", i + 1)
        return False

    def _ip_in_table(self, ip: str) -> bool:
        return self.table.has_ip(ip)

    # --- the node's own operations (core/behaviour.py) -------------------------------

    def configure_bootstrap(self, saved_contacts: Sequence[Contact], *, routers_configured: bool) -> None:
        """Say what the node joins through: its saved contacts (best first, as the
        state file lists them) and whether bootstrap routers were configured (their
        addresses follow through :meth:`set_routers` once resolved)."""
        self._behaviour.configure_bootstrap(saved_contacts, routers_configured=routers_configured)

    def set_routers(self, addresses: Sequence[Address], now: float) -> None:
        """Set the bootstrap routers' resolved addresses (possibly none).

        Routers are asked by bootstraps and by lookups while the table is thin,
        and never enter the routing table however they reach us (BEP 5). A
        bootstrap started with ``wait_for_routers`` goes on from here.
        """
        self._behaviour.set_routers(addresses, now)

    @property
    def routers(self) -> list[Address]:
        """The bootstrap routers' addresses as last set."""
        return self._behaviour.routers

    @property
    def wants_routers(self) -> bool:
        """Whether routers were configured but none resolved yet while the table
        is too thin to seed a lookup: resolve them before starting one."""
        return self._behaviour.wants_routers

    @property
    def saved_contacts(self) -> list[Contact]:
        """The saved contacts given to :meth:`configure_bootstrap`."""
        return self._behaviour.saved_contacts

    @property
    def joined(self) -> bool:
        """Whether a bootstrap has succeeded (maintenance refreshes only then)."""
        return self._behaviour.joined

    @property
    def rejoin_delay(self) -> float:
        """Seconds the last failed bootstrap put off the next automatic one."""
        return self._behaviour.rejoin_delay

    def start_lookup(
        self, target: bytes, query: Query, now: float, *, report_replies: bool = False, **options: Any
    ) -> OperationId:
        """Start an iterative lookup of ``target``, asking each node ``query``.

        The lookup is seeded from the routing table (and from the routers while
        the table holds fewer than k contacts); its first queries are queued at
        once. The core sends the rest as answers, errors and soft and hard
        timeouts come in, and reports :class:`~mainline_dht.core.events.LookupPeersFound`
        (``get_peers`` values) and then one :class:`~mainline_dht.core.events.LookupFinished`
        with the k closest nodes that answered and their tokens.

        Args:
            target: the 20-byte ID or infohash.
            query: e.g. ``FindNode(target)`` or ``GetPeers(info_hash)``.
            now: current time (seconds).
            report_replies: also report every answer as a
                :class:`~mainline_dht.core.events.LookupReplied` (for BEP 33
                filters and BEP 44 items).
            **options: :class:`~mainline_dht.core.lookup.Lookup` options
                (``alpha``, ``soft_timeout``, ``early_finish``, ``max_queries``).

        Raises:
            LocalProtocolError: ``target`` is not 20 bytes, or a bad option.
        """
        return self._behaviour.start_lookup(target, query, now, report_replies=report_replies, **options)

    def lookup(self, op: OperationId) -> Lookup | None:
        """The state of a lookup (stats, peers so far): running, or among the last
        finished ones (``RECENT_LOOKUPS``); else ``None``."""
        return self._behaviour.lookup(op)

    def start_announce(
        self, info_hash: bytes, port: int | None, now: float, *, lookup: Lookup | None = None, seed: bool = False
    ) -> OperationId:
        """Announce that we are a peer for ``info_hash`` (BEP 5 ``announce_peer``).

        Runs a ``get_peers`` lookup (or uses ``lookup``, a finished one), then
        sends ``announce_peer`` with each token to the k closest nodes that gave
        one. Ends with :class:`~mainline_dht.core.events.AnnounceFinished`.

        Args:
            info_hash: the 20-byte infohash.
            port: our peer port; ``None`` sets ``implied_port``.
            now: current time (seconds).
            lookup: a finished lookup of the same infohash to take the nodes from.
            seed: BEP 33: we have the whole torrent (``seed`` = 1).

        Raises:
            LocalProtocolError: bad infohash or port.
        """
        return self._behaviour.start_announce(info_hash, port, now, lookup, seed)

    def start_refresh(self, now: float, *, limit: int | None = None, not_full: bool = False) -> OperationId:
        """Look up a random ID in each bucket that needs it (BEP 5 refresh).

        Args:
            now: current time (seconds).
            limit: refresh at most this many buckets.
            not_full: refresh every bucket holding fewer than k contacts (what a
                node does right after joining), instead of those idle for 15
                minutes; our own bucket too when the table holds fewer than k.

        Returns:
            The operation; :class:`~mainline_dht.core.events.RefreshFinished` says
            how many buckets were refreshed, once their lookups are over.
        """
        return self._behaviour.start_refresh(now, limit=limit, not_full=not_full).op

    def start_bootstrap(self, now: float, *, timeout: float, wait_for_routers: bool = False) -> OperationId:
        """Join the network: ping the saved contacts, look up our own ID from them
        and the routers (again after a pause while nothing answered, until
        ``timeout``), then refresh the buckets that are not full.

        Args:
            now: current time (seconds).
            timeout: seconds to wait for a first answer.
            wait_for_routers: the runtime is resolving the routers: the saved
                contacts are pinged now, the lookup starts at :meth:`set_routers`.

        Returns:
            The operation; it ends with :class:`~mainline_dht.core.events.BootstrapFinished`.
        """
        return self._behaviour.start_bootstrap(now, timeout=timeout, wait_for_routers=wait_for_routers)

    def abandon(self, op: OperationId) -> None:
        """Stop an operation without further events (its caller went away).

        Its queries in flight run out in the core: a late answer still teaches
        the routing table, and a timeout still counts against its node.
        Unknown or finished operations are ignored.
        """
        self._behaviour.abandon(op)

    def save_wanted(self) -> bool:
        """Whether the routing table should be written to the state file now: not
        while it is empty and saved contacts exist (offline: keep the old file)."""
        return self._behaviour.save_wanted()

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one datagram from ``addr``. Never raises for bad input.

        The inbound policy (:mod:`~mainline_dht.core.rate_limit`) looks at the
        source IP first: a datagram over budget is dropped before it is decoded.
        Replies to our own queries always get through: a refused datagram from an
        address we have queries pending to is still read when it carries one of
        their transaction IDs (a byte search, not a decode); anything else in it
        is refused again when it would be answered.
        """
        self.stats.datagrams_received += 1
        limiter = self.query_limiter
        if limiter is None or limiter.admit(addr[0], now):
            self._admitted = True
        elif addr in self._pending_addrs and self._carries_our_tid(data, addr):
            self._admitted = False
        else:
            self.stats.queries_rate_limited += 1
            return
        try:
            value = decode_untrusted(data)
            # Hot path: ping, find_node and get_peers, answered without building messages.
            fields = query_fields_untrusted(value)
            if fields is not None:
                want = value[b"a"].get(b"want")
                self._answer(*fields, addr, now, None if want is None else _want_untrusted(want))
                return
            msg = decode_value_untrusted(value)
        except DecodeError as exc:
            self.stats.malformed += 1
            if exc.is_query and exc.tid is not None and not self._read_only and self._within_budget(addr, now):
                self._send_error(exc.tid, ErrorCode.PROTOCOL, str(exc), addr)
            return
        if type(msg) is QueryMessage:
            self._handle_query(msg, addr, now)
        elif type(msg) is ResponseMessage:
            self._handle_response(msg, addr, now)
        else:
            self._handle_error(msg, addr, now)  # type: ignore[arg-type]

    # --- replies to our queries -----------------------------------------------------

    def _handle_response(self, msg: ResponseMessage, addr: Address, now: float) -> None:
        key = (msg.tid, addr)
        pending = self._forget_pending(key)
        if pending is None:
            self.stats.unexpected_responses += 1
            return
        self.stats.responses_received += 1
        if self.query_limiter is not None:
            self.query_limiter.verified(addr[0], now)  # it received our transaction ID: not spoofed
        if msg.ip is not None and family_of(msg.ip[0]) == self.family:
            # BEP 42 per family: only an address of this overlay's family votes.
            self.reported_addresses.append(msg.ip)
            external = self.address_votes.vote(addr[0], msg.ip[0])
            if external is not None:
                self._external_address_changed(external, now)
        rtt = now - pending.sent_at
        self.rtt.observe(rtt)
        if pending.learn and msg.sender_id != self.node_id:
            responder = Contact(msg.sender_id, addr)
            if self.recent is not None and addr not in self.router_addresses:
                self.recent.answered(responder, now, rtt)
            self._learn(responder, now, responded=True, rtt=rtt)
            # Nodes a reply tells us about are unverified: ping those that would fit.
            table = self.table
            named = msg.nodes6 if self._v6 else msg.nodes
            for contact in named:
                if contact.id not in table:
                    self._learn(contact, now, responded=False)
            heard = self.heard
            if heard is not None:
                recent = self.recent
                # The first k: a reply may carry more, but a stranger's reply
                # should not fill the cache.
                for contact in named[: self._k]:
                    if contact.id != self.node_id and (recent is None or contact not in recent):
                        heard.named(contact, now)
        if pending.internal:
            self._pinging.discard(addr)
        elif pending.owner is not None:
            pending.owner.query_answered(key, msg, now)
        else:
            self._events.append(ResponseReceived(key, pending.query, msg, rtt))

    def _handle_error(self, msg: ErrorMessage, addr: Address, now: float) -> None:
        key = (msg.tid, addr)
        pending = self._forget_pending(key)
        if pending is None:
            self.stats.unexpected_responses += 1
            return
        self.stats.errors_received += 1
        if self.query_limiter is not None:
            self.query_limiter.verified(addr[0], now)
        if pending.internal:
            self._pinging.discard(addr)
        elif pending.owner is not None:
            pending.owner.query_failed(key, now, True)
        else:
            self._events.append(ErrorReceived(key, pending.query, msg))

    def _external_address_changed(self, ip: str, now: float) -> None:
        new_id = None
        # A read-only node (BEP 43) enters no one's table: its ID need not be verifiable.
        if self.config.bep42_node_id and not self._read_only and not is_id_valid_for_ip(self.node_id, ip):
            new_id = node_id_for_ip(ip, self.rng)
            log.info("our external address is %s: taking the BEP 42 node ID %s", ip, new_id.hex())
            self.change_node_id(new_id, now)
        self._events.append(ExternalAddressChanged(ip, new_id))
        if new_id is not None:
            self._behaviour.node_id_changed(now)

    def change_node_id(self, node_id: bytes, now: float) -> None:
        """Take a new node ID: the routing table is rebuilt around it, keeping its contacts.

        Replies from now on carry the new ID. The caller should look up the new
        ID soon, so that the nodes closest to it learn of us.

        Raises:
            LocalProtocolError: ``node_id`` is not 20 bytes.
        """
        if type(node_id) is not bytes or len(node_id) != 20:
            raise LocalProtocolError("node_id must be 20 bytes")
        self.node_id = node_id
        self.table = self.table.with_own_id(node_id, now)
        self._reply_r_head = b"1:rd2:id20:" + node_id

    # --- routing-table upkeep -------------------------------------------------------

    def _learn(
        self,
        contact: Contact,
        now: float,
        *,
        responded: bool,
        read_only: bool = False,
        rtt: float | None = None,
        querier: bool = False,
    ) -> None:
        if contact.addr in self.router_addresses:
            return  # BEP 5: bootstrap routers never enter the routing table
        if (":" in contact.addr[0]) is not self._v6:
            return  # BEP 32: the other family's overlay has its own table
        result = self.table.heard_from(contact, now, responded=responded, read_only=read_only, rtt=rtt)
        if result.outcome is Outcome.VERIFY:
            if not querier:
                self._ping(contact, now)
            elif self._querier_pings.take(now):
                # Its source address may be forged: pinged within the querier budget only.
                self._ping(contact, now)
            else:
                self.stats.pings_rate_limited += 1
        for questionable in result.ping:
            self._ping(questionable, now)

    def _ping_slot_free(self) -> bool:
        """Whether one more internal ping may be in flight (else ``_ping`` only queues)."""
        cfg = self.config
        return len(self._pinging) < cfg.max_pending_pings and len(self._pending) < cfg.max_outstanding

    def _refill_pings(self, now: float) -> float:
        rate = self.config.ping_rate
        elapsed = now - self._ping_refill_at
        if elapsed > 0:
            # + _PING_TOKEN_SLACK: at the instant get_timer named, rounding can leave
            # 0.9999999999999978 tokens, and get_timer would name that instant again
            # forever (a busy loop; a hang under trio's MockClock).
            self._ping_tokens = min(rate, self._ping_tokens + elapsed * rate + _PING_TOKEN_SLACK)
            self._ping_refill_at = now
        return self._ping_tokens

    def _ping(self, contact: Contact, now: float) -> None:
        """Send an internal ping (verification or eviction check), within the ping budget.

        Over budget, the ping waits in a bounded queue for the timer; past that
        bound it is dropped (and counted), so a flood of strangers cannot make
        us flood the network or grow memory.
        """
        addr = contact.addr
        if addr in self._pinging or not 0 < addr[1] < 65536:
            return
        cfg = self.config
        if (
            self._refill_pings(now) < 1
            or len(self._pinging) >= cfg.max_pending_pings
            or len(self._pending) >= cfg.max_outstanding
        ):
            if addr in self._ping_queue or len(self._ping_queue) < cfg.max_pending_pings:
                self._ping_queue[addr] = contact
            else:
                self.stats.pings_rate_limited += 1
            return
        self._ping_queue.pop(addr, None)
        self._ping_tokens -= 1
        self._pinging.add(addr)
        self.stats.verification_pings += 1
        self._send_query(_PING, addr, now, contact.id, None, True, internal=True)

    # --- lookup hints (round trips and recent answers) -----------------------------

    def lookup_seeds(self, target: bytes, count: int, now: float) -> list[Contact]:
        """Contacts to start a lookup of ``target`` from: the routing table's
        ``count`` closest, the ``count`` closest that recently answered us, and
        the ``count`` closest that answers named to us.

        The lookup sorts them by distance; the cached ones, spread over the whole
        ID space, are usually the closer ones far from our own ID.
        """
        seeds = self.table.closest(target, count)
        if self.recent is not None:
            seeds += self.recent.closest(target, count, now)
        if self.heard is not None:
            seeds += self.heard.closest(target, count, now)
        return seeds

    def soft_timeout_for(self, contact: Contact) -> float:
        """Seconds after which a lookup query to ``contact`` should stop holding a
        slot: its own RTT estimate if we have one, else the node's
        (:class:`~mainline_dht.core.rtt.RttEstimator`)."""
        return self.rtt.timeout(None if self.recent is None else self.recent.rtt_of(contact))

    def expected_rtt(self, contact: Contact) -> float:
        """How soon ``contact`` should answer (its smoothed RTT, seconds), or
        ``inf`` if it has not answered us recently: lookups ask, among candidates
        at similar distance, the ones known to answer first."""
        if self.recent is None:
            return math.inf
        return self.recent.expected_rtt(contact)

    def ping_contact(self, contact: Contact, now: float) -> None:
        """Ping a routing-table contact to check it is alive (rate-limited; no event)."""
        self._ping(contact, now)

    # --- answering queries ----------------------------------------------------------

    def _handle_query(self, msg: QueryMessage, addr: Address, now: float) -> None:
        # ping, find_node and get_peers normally take the hot path in receive_datagram.
        query = msg.query
        want = msg.want or None
        if isinstance(query, Ping):
            self._answer(QUERY_PING, query.method, msg.tid, msg.sender_id, None, msg.read_only, addr, now)
            return
        if isinstance(query, FindNode):
            self._answer(
                QUERY_FIND_NODE, query.method, msg.tid, msg.sender_id, query.target, msg.read_only, addr, now, want
            )
            return
        if isinstance(query, GetPeers) and not (query.scrape or query.noseed):
            self._answer(
                QUERY_GET_PEERS, query.method, msg.tid, msg.sender_id, query.info_hash, msg.read_only, addr, now, want
            )
            return
        stats = self.stats
        stats.queries_received += 1
        # Unknown methods share one counter: their names are chosen by strangers.
        method = b"unknown" if type(query) is UnknownQuery else query.method
        stats.queries_by_method[method] = stats.queries_by_method.get(method, 0) + 1
        if self._read_only or not self._within_budget(addr, now):
            return  # BEP 43: read-only nodes answer nothing; nor do we answer an IP over its budget
        if msg.sender_id != self.node_id:
            self._learn_querier(msg.sender_id, addr, now, msg.read_only)
        if isinstance(query, AnnouncePeer):
            self._answer_announce(msg, query, addr, now)
        elif isinstance(query, SampleInfohashes) and self.config.sample_infohashes == "error":
            self._send_error(msg.tid, ErrorCode.METHOD_UNKNOWN, "method unknown", addr)
        elif isinstance(query, SampleInfohashes) and self.config.sample_infohashes == "samples":
            r: dict[bytes, object] = self._nodes_dict(query.target, want, addr)
            r[b"samples"] = b"".join(self.peer_store.sample_infohashes(self.rng, self.config.max_samples))
            r[b"num"] = self.peer_store.num_infohashes
            r[b"interval"] = self.config.sample_interval
            self._reply(msg.tid, addr, r)
        elif isinstance(query, GetPeers):  # with BEP 33 flags
            v6 = ":" in addr[0]
            values, bfsd, bfpe = scrape.scrape_reply(
                self.peer_store, query.info_hash, now, self.rng, self._max_values_v6 if v6 else self._max_values,
                scrape=query.scrape, noseed=query.noseed, ipv6=v6,
            )
            r = self._nodes_dict(query.info_hash, want, addr)
            r[b"token"] = self.tokens.issue(addr[0], now)
            if values:
                r[b"values"] = [_compact_peer(p) for p in values]
            if bfsd is not None and bfpe is not None:
                r[b"BFsd"] = bfsd
                r[b"BFpe"] = bfpe
            self._reply(msg.tid, addr, r)
        elif isinstance(query, Get):  # BEP 44
            r = items.get_reply_fields(self.item_store, query, now)
            r.update(self._nodes_dict(query.target, want, addr))
            r[b"token"] = self.tokens.issue(addr[0], now)
            self._reply(msg.tid, addr, r)
        elif isinstance(query, Put):  # BEP 44
            self._answer_put(msg, query, addr, now)
        elif query.target is not None:
            self._reply(msg.tid, addr, self._nodes_dict(query.target, want, addr))
        else:
            self._send_error(msg.tid, ErrorCode.METHOD_UNKNOWN, "method unknown", addr)

    def _answer(
        self,
        kind: int,
        method: bytes,
        tid: bytes,
        sender_id: bytes,
        target: bytes | None,
        read_only: bool,
        addr: Address,
        now: float,
        want: frozenset[bytes] | None = None,
    ) -> None:
        """Answer ``ping`` (``target`` None), ``find_node`` or ``get_peers`` (BEP 5).

        The reply is bencoded by hand, byte for byte what :func:`bencode.encode`
        makes of the same dictionary (canonical: keys sorted): the top level
        ``ip``, ``r``, ``t``, ``v``, ``y``; in ``r``: ``id``, ``nodes``,
        ``nodes6``, ``token``, ``values``.

        BEP 32: ``want`` (``n4``, ``n6``) names the families of nodes to send;
        without it the querier's own family. ``values`` hold peers of the
        querier's family, and of the other family too when ``want`` asks for it.
        """
        stats = self.stats
        stats.queries_received += 1
        by_method = stats.queries_by_method
        by_method[method] = by_method.get(method, 0) + 1
        if self._read_only or not self._within_budget(addr, now):
            return  # BEP 43: read-only nodes answer nothing; nor do we answer an IP over its budget
        if sender_id != self.node_id:
            self._learn_querier(sender_id, addr, now, read_only)
        n = len(tid)
        # (The decoder caps tids at MAX_TID_LENGTH; a message built in code need not be.)
        tid_field = _TID_FIELDS[n] if n <= MAX_TID_LENGTH else b"e1:t%d:" % n
        if target is None:
            data = b"".join((_ip_head(addr), self._reply_r_head, tid_field, tid, self._reply_tail))
        else:
            querier_v6 = ":" in addr[0]
            if want is None and querier_v6 is self._v6:
                nodes = self._packed_nodes(target, self._k)
                n = len(nodes)
                if self._v6:
                    nodes_field = b"6:nodes6%d:" % n
                else:
                    nodes_field = _NODES_FIELDS[n] if n < len(_NODES_FIELDS) else b"5:nodes%d:" % n
            else:
                nodes_field, nodes = b"", self._nodes_fields(target, want, querier_v6)
            if kind != QUERY_GET_PEERS:
                data = b"".join(
                    (_ip_head(addr), self._reply_r_head, nodes_field, nodes, tid_field, tid, self._reply_tail)
                )
            else:
                if self.report_infohash_queries:
                    self._events.append(InfohashQueried(target, sender_id, addr))
                ip = addr[0]
                until = self._token_memo_until
                token_field = None
                if now < until and self.tokens.next_rotation == until:
                    token_field = self._token_memo.get(ip)
                if token_field is None:
                    token_field = self._token_field(ip, now)
                parts = [_ip_head(addr), self._reply_r_head, nodes_field, nodes, token_field]
                store = self.peer_store
                if want is None or want == (_WANT_N6 if querier_v6 else _WANT_N4):
                    peers = store.get(
                        target, now, self.rng, self._max_values_v6 if querier_v6 else self._max_values,
                        family=6 if querier_v6 else 4,
                    )
                else:  # BEP 32: want names the other family too; share one packet's room
                    peers = store.get(target, now, self.rng, self._max_values // 2, family=4)
                    peers += store.get(target, now, self.rng, self._max_values_v6 // 2, family=6)
                if peers:
                    parts.append(b"6:valuesl")
                    get = _bencoded_peers.get
                    parts += [b if (b := get(p)) is not None else _bencoded_peer(p) for p in peers]
                    parts.append(b"e")
                parts += (tid_field, tid, self._reply_tail)
                data = b"".join(parts)
        self._out.append((data, addr))
        stats.replies_sent += 1

    def _within_budget(self, addr: Address, now: float) -> bool:
        """Whether a query from ``addr`` may be answered; counts a refusal.

        Datagrams are admitted by the inbound policy before decoding; one that was
        read only because it carried one of our transaction IDs is answered
        nothing.
        """
        limiter = self.query_limiter
        if self._admitted or limiter is None:
            return True
        self.stats.queries_rate_limited += 1
        return False

    def _token_field(self, ip: str, now: float) -> bytes:
        """Issue the token for ``ip`` as a bencoded ``token`` field; remember it until the secret rotates."""
        token = self.tokens.issue(ip, now)
        field = b"5:token%d:%b" % (len(token), token)
        until = self.tokens.next_rotation
        memo = self._token_memo
        if until != self._token_memo_until or len(memo) >= TOKEN_MEMO_MAX:
            memo.clear()
            self._token_memo_until = until
        memo[ip] = field
        return field

    def _learn_querier(self, sender_id: bytes, addr: Address, now: float, read_only: bool) -> None:
        """Report a querier to the routing table (unverified), once per memo period.

        Contacts in the table are always reported (that keeps their
        ``last_query``, which makes them good, exact). Others are reported once per
        :data:`QUERIER_MEMO_SECONDS`: see that constant.
        """
        if sender_id not in self.table:
            key = (sender_id, addr)
            memo = self._querier_memo
            seen = memo.get(key)
            if seen is not None and 0 <= now - seen < QUERIER_MEMO_SECONDS:
                return
            if len(memo) >= QUERIER_MEMO_MAX:
                memo.clear()
            memo[key] = now
        self._learn(Contact(sender_id, addr), now, responded=False, read_only=read_only, querier=True)

    def _packed_nodes(self, target: bytes, count: int, table: RoutingTable | None = None) -> bytes:
        """Compact node info (BEP 5, BEP 32) of the ``count`` contacts of ``table``
        (default: ours) closest to ``target``: 26 bytes each in an IPv4 table, 38 in an IPv6 one."""
        get = _compact_nodes.get
        return b"".join(
            [
                p if (p := get(c)) is not None else _compact_node(c)
                for c in (self.table if table is None else table).closest(target, count)
            ]
        )

    def _families_wanted(self, want: frozenset[bytes] | None, querier_v6: bool) -> tuple[RoutingTable | None, RoutingTable | None]:
        """The (IPv4, IPv6) tables whose nodes answer ``want`` (BEP 32); ``None`` for a family not sent.

        Without ``want``, the querier's family. A family we have no table for is
        left out; when that leaves nothing, our own family answers.
        """
        if want is None:
            want = _WANT_N6 if querier_v6 else _WANT_N4
        sibling = self.sibling
        by_family = {self.family: self.table}
        if sibling is not None:
            by_family[sibling.family] = sibling.table
        v4 = by_family.get(4) if b"n4" in want else None
        v6 = by_family.get(6) if b"n6" in want else None
        if v4 is None and v6 is None:
            return (None, self.table) if self._v6 else (self.table, None)
        return v4, v6

    def _nodes_fields(self, target: bytes, want: frozenset[bytes] | None, querier_v6: bool) -> bytes:
        """The bencoded ``nodes`` and/or ``nodes6`` fields of a reply (keys in canonical order)."""
        v4, v6 = self._families_wanted(want, querier_v6)
        k = self._k
        out = b""
        if v4 is not None:
            packed = self._packed_nodes(target, k, v4)
            out += b"5:nodes%d:%b" % (len(packed), packed)
        if v6 is not None:
            packed = self._packed_nodes(target, k, v6)
            out += b"6:nodes6%d:%b" % (len(packed), packed)
        return out

    def _nodes_dict(self, target: bytes, want: frozenset[bytes] | None, addr: Address) -> dict[bytes, object]:
        """``nodes`` and/or ``nodes6`` for a reply to ``addr`` built as a dictionary (see :meth:`_families_wanted`)."""
        v4, v6 = self._families_wanted(want, ":" in addr[0])
        r: dict[bytes, object] = {}
        if v4 is not None:
            r[b"nodes"] = self._packed_nodes(target, self._k, v4)
        if v6 is not None:
            r[b"nodes6"] = self._packed_nodes(target, self._k, v6)
        return r

    def _answer_announce(self, msg: QueryMessage, query: AnnouncePeer, addr: Address, now: float) -> None:
        if not self.tokens.is_valid(query.token, addr[0], now):
            self.stats.bad_tokens += 1
            self._send_error(msg.tid, ErrorCode.PROTOCOL, "bad token", addr)
            return
        port = addr[1] if query.implied_port else query.port
        if not 0 < port < 65536:
            self._send_error(msg.tid, ErrorCode.PROTOCOL, "invalid port", addr)
            return
        peer = (addr[0], port)
        self.peer_store.add(query.info_hash, peer, now, seed=query.seed)
        self.stats.announces_accepted += 1
        self._events.append(PeerAnnounced(query.info_hash, peer, query.seed))
        self._reply(msg.tid, addr, {})

    def _answer_put(self, msg: QueryMessage, query: Put, addr: Address, now: float) -> None:
        if not self.tokens.is_valid(query.token, addr[0], now):
            self.stats.bad_tokens += 1
            self._send_error(msg.tid, ErrorCode.PROTOCOL, "bad token", addr)
            return
        try:
            items.store_put(self.item_store, query, addr[0], now)
        except items.ItemError as exc:
            self._send_error(msg.tid, exc.code, exc.message, addr)
            return
        self.stats.items_stored += 1
        self._reply(msg.tid, addr, {})

    def _reply(self, tid: bytes, addr: Address, r: dict[bytes, object]) -> None:
        r[b"id"] = self.node_id
        d: dict[bytes, object] = {b"t": tid, b"y": b"r", b"r": r, b"ip": _compact_peer(addr)}
        if self._version is not None:
            d[b"v"] = self._version
        self._out.append((bencode.encode(d), addr))
        self.stats.replies_sent += 1

    def _send_error(self, tid: bytes, code: int, text: str, addr: Address) -> None:
        data = encode_message(ErrorMessage(tid, int(code), text[:200], addr, self._version))
        self._out.append((data, addr))
        self.stats.errors_sent += 1


_PING: Final = Ping()
_WANT_N4: Final = frozenset({b"n4"})
_WANT_N6: Final = frozenset({b"n6"})


def _want_untrusted(want: object) -> frozenset[bytes] | None:
    """BEP 32 ``want`` as the families it names; ``None`` when it names none we know."""
    if type(want) is not list:
        return None
    known = frozenset(w for w in want if type(w) is bytes and w in WANT_VALUES)
    return known or None


#: Tokens added to every refill of the ping budget to absorb float rounding (see
#: ``_refill_pings``); 1e-6 covers clock values up to ~1e8 s at 50 pings/s.
_PING_TOKEN_SLACK: Final = 1e-6

# Compact forms of addresses we answer often (our table's contacts, recent queriers).
# Bounded memos, shared by every core in the process: packing an address costs more
# than the rest of a ping reply. Each is emptied when it reaches _COMPACT_CACHE_MAX
# entries, a few hundred bytes each with the key it keeps alive: ~5 MB at most apiece.
_COMPACT_CACHE_MAX: Final = 16384
_compact_cache: dict[Address, bytes] = {}
# Contact -> its compact node info: 26 bytes (IPv4, for nodes) or 38 (IPv6, for nodes6).
_compact_nodes: dict[Contact, bytes] = {}
# Address -> the start of a reply to it: b"d2:ip6:" and its compact form (BEP 42).
_ip_heads: dict[Address, bytes] = {}
# Peer address -> its bencoded compact form, an item of ``values``.
_bencoded_peers: dict[Address, bytes] = {}
# What closes ``r`` and opens ``t`` in a reply, by transaction-ID length (bytes).
_TID_FIELDS: Final = tuple(b"e1:t%d:" % n for n in range(MAX_TID_LENGTH + 1))
# The bencoded ``nodes`` key and length prefix, by length (bytes) of a k = 8 answer or less.
_NODES_FIELDS: Final = tuple(b"5:nodes%d:" % n for n in range(8 * COMPACT_NODE_V4 + 1))


def _memo(cache: dict[Address, bytes], addr: Address, value: bytes) -> bytes:
    if len(cache) >= _COMPACT_CACHE_MAX:
        cache.clear()
    cache[addr] = value
    return value


def _compact_peer(addr: Address) -> bytes:
    packed = _compact_cache.get(addr)
    if packed is None:
        packed = _memo(_compact_cache, addr, pack_peer(addr))
    return packed


def _ip_head(addr: Address) -> bytes:
    head = _ip_heads.get(addr)
    if head is None:
        packed = _compact_peer(addr)
        head = _memo(_ip_heads, addr, b"d2:ip%d:%b" % (len(packed), packed))
    return head


def _bencoded_peer(addr: Address) -> bytes:
    item = _bencoded_peers.get(addr)
    if item is None:
        packed = _compact_peer(addr)
        item = _memo(_bencoded_peers, addr, b"%d:%b" % (len(packed), packed))
    return item


def _compact_node(contact: Contact) -> bytes:
    packed = contact.id + _compact_peer(contact.addr)
    if len(_compact_nodes) >= _COMPACT_CACHE_MAX:
        _compact_nodes.clear()
    _compact_nodes[contact] = packed
    return packed
