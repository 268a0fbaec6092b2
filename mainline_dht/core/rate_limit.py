"""The inbound policy: which datagrams from strangers we look at, without I/O.

A DHT node answers strangers, so one host can make it work (and send) as fast
as that host can send, or aim a stream of queries with a forged source address
at a victim and let our replies, several times larger, do the flooding. The
budgets below bound both, and they are decided from the source IP alone,
*before* the datagram is decoded, so a flood costs one dictionary lookup per
datagram:

* **Per source IP**, a token bucket that refills at ``rate`` datagrams a second
  up to ``burst``. A source that empties it is flooding, well above anything a
  client needs, and is ignored for ``ban_seconds`` (libtorrent ignores an IP
  for 5 minutes too). ``rate`` is set well above what a busy honest source
  sends: a client running many lookups through one node, or many users behind
  one NAT or CGNAT address, reach 20 queries a second; they are never refused.
  Trusted sources (below) are never banned, only held to their rate: a
  datagram can carry any source address, and a ban would let a spoofer
  silence one of our contacts for minutes by flooding in its name. They are
  served again as soon as such a flood stops, and one that really floods
  costs what a banned source does (one lookup per datagram, dropped unread).
* **Globally**, a token bucket of replies a second (``reply_rate``). It bounds
  what the node handles, and so what it can be made to send, whatever the
  number of sources. Sources are served in order of trust, by what a spoofer
  cannot fake cheaply:

  1. **trusted**: in our routing table (``trusted``), or an IP that answered
     one of our queries (:meth:`InboundPolicy.verified`; the protocol reports
     it). Both received a transaction ID we sent to that address, which a
     datagram with a forged source never does. They may spend the whole global
     bucket.
  2. **known**: a sustained history within budget: the source has sent at
     least one datagram every ``known_max_gap`` seconds for ``known_after``
     seconds, without going near its limit (its bucket at least half full).
     A heavy honest client (20 a second) or a read-only one (BEP 43, which
     answers no ping) earns it in seconds; a spoofer must keep every forged
     address busy to hold it. Known sources may not spend the last
     ``known_reserve`` share of the global bucket.
  3. **strangers**: everyone else, first-time sources included. They share a
     small bucket of their own, ``stranger_rate`` datagrams a second (and may
     not spend the last ``new_reserve`` share of the global bucket). Under
     pressure from strangers (more than ``stranger_rate`` a second of them),
     this is what bounds both the replies reflected towards forged addresses
     and the CPU a flood of ever-new sources costs; trusted and known sources
     are not touched by it. A first-time source refused here is not
     remembered, so a flood of ever-new (spoofed) sources cannot push the
     sources with a history out of the map.

Replies to our own queries never pass through here: the protocol exempts
addresses it has queries pending to (see ``NodeProtocol.receive_datagram``).

Memory is bounded: at most ``max_tracked`` source IPs are remembered (about
250 bytes each), the least recently seen forgotten first. The map is an
``OrderedDict``: moving a key to the end and popping the front are O(1), where
evicting the first key of a plain ``dict`` scans past the tombstones that
earlier deletions left (15 us per new source at 65,536 tracked IPs, measured).
A forgotten source starts again as a first-time stranger, the least trusted.

Pure: no trio, socket, time or os. Time comes in as ``now`` (seconds).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

__all__ = [
    "DEFAULT_QUERY_RATE",
    "DEFAULT_QUERY_BURST",
    "DEFAULT_BAN_SECONDS",
    "DEFAULT_MAX_TRACKED",
    "DEFAULT_REPLY_RATE",
    "DEFAULT_REPLY_BURST",
    "DEFAULT_STRANGER_RATE",
    "DEFAULT_STRANGER_BURST",
    "DEFAULT_NEW_SOURCE_RESERVE",
    "DEFAULT_KNOWN_AFTER",
    "DEFAULT_KNOWN_MAX_GAP",
    "DEFAULT_KNOWN_SOURCE_RESERVE",
    "InboundPolicy",
    "QueryRateLimiter",
    "TokenBucket",
]

#: Datagrams a second one source IP may send us, sustained. Honest heavy sources
#: (a NAT address shared by many users, a client running many lookups) reach 20
#: a second; 30 leaves them a margin. libtorrent allows 5 (``dht_block_ratelimit``).
DEFAULT_QUERY_RATE: Final = 30.0
#: Datagrams one source IP may send in a row after a quiet spell (5 s at the rate).
DEFAULT_QUERY_BURST: Final = 150.0
#: Seconds a source that emptied its bucket is ignored (libtorrent: 5 minutes).
DEFAULT_BAN_SECONDS: Final = 300.0
#: Source IPs remembered at once (about 250 bytes each: ~4 MB).
DEFAULT_MAX_TRACKED: Final = 16384
#: Datagrams a second the node reads (and so at most answers) from sources in
#: all. A public node sees tens to a few hundred queries a second; 500 replies of
#: ~300 bytes are ~150 kB/s (libtorrent caps all its DHT replies at 8 kB/s,
#: ``dht_upload_rate_limit``).
DEFAULT_REPLY_RATE: Final = 500.0
#: Datagrams the global budget allows in a row (two seconds' worth).
DEFAULT_REPLY_BURST: Final = 1000.0
#: Datagrams a second the node reads from strangers (sources neither trusted nor
#: known) in all. 100 replies of ~300 bytes are ~30 kB/s: the most a flood with
#: forged sources can make us reflect, still above libtorrent's cap on all its
#: replies. It also bounds the CPU such a flood costs: a refused datagram is
#: never decoded (tools/hostile.py measures both floods).
DEFAULT_STRANGER_RATE: Final = 100.0
#: Datagrams strangers may send in a row (two seconds' worth).
DEFAULT_STRANGER_BURST: Final = 200.0
#: Seconds of sustained traffic within budget after which a source counts as known.
DEFAULT_KNOWN_AFTER: Final = 10.0
#: The longest silence (seconds) that does not break a source's sustained
#: history: a client at 20 a second never comes near it; a forged address
#: used once in a while never keeps one.
DEFAULT_KNOWN_MAX_GAP: Final = 2.0
#: Share of the global budget strangers may not spend.
DEFAULT_NEW_SOURCE_RESERVE: Final = 0.5
#: Share of the global budget known sources may not spend (only trusted ones may).
DEFAULT_KNOWN_SOURCE_RESERVE: Final = 0.25

# Fields of a tracked source (a list, the cheapest mutable record in CPython).
_TOKENS: Final = 0
_SEEN: Final = 1
_BANNED_UNTIL: Final = 2
#: When the current run of traffic without a gap over known_max_gap began.
_STREAK: Final = 3
#: 1.0 once the IP answered one of our queries (0.0 before, and after a ban).
_VERIFIED: Final = 4


_INF: Final = float("inf")


def _never(ip: str) -> bool:
    return False


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst``, starting full. O(1).

    Args:
        rate: tokens added per second (> 0).
        burst: the bucket's size (>= 1).
        now: the time it starts at (seconds).

    Raises:
        ValueError: a setting is out of range.
    """

    __slots__ = ("rate", "burst", "_tokens", "_at")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = self.burst
        self._at = now

    def tokens(self, now: float) -> float:
        """The tokens at ``now`` (brought up to date; a clock that steps back refills nothing)."""
        elapsed = now - self._at
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._at = now
        return self._tokens

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        tokens = self.tokens(now)
        if tokens < 1.0:
            return False
        self._tokens = tokens - 1.0
        return True


class InboundPolicy:
    """Per-source buckets with bans, and a global reply budget served by trust.

    Args:
        rate: per-IP tokens (datagrams) added per second.
        burst: per-IP bucket size, and what a new IP starts with.
        ban_seconds: how long a source that emptied its bucket is ignored.
        max_tracked: IPs remembered at once; the least recently seen goes first.
        reply_rate: global tokens added per second (``None``: no global budget,
            and no strangers' budget either).
        reply_burst: the global bucket's size.
        stranger_rate: tokens added per second to the strangers' bucket.
        stranger_burst: the strangers' bucket size.
        new_reserve: share of the global bucket strangers may not spend.
        known_reserve: share of it that only trusted sources may spend.
        known_after: seconds of sustained traffic within budget after which a
            source counts as known.
        known_max_gap: the longest silence (seconds) that keeps a source's
            traffic sustained.
        trusted: whether an IP is established beyond doubt (in our routing table).

    Raises:
        ValueError: a setting is out of range.
    """

    __slots__ = (
        "rate",
        "burst",
        "ban_seconds",
        "max_tracked",
        "reply_rate",
        "reply_burst",
        "_new_floor",
        "_known_floor",
        "_half_burst",
        "known_after",
        "known_max_gap",
        "_trusted",
        "_sources",
        "_global",
        "_global_at",
        "_closed_from",
        "_closed_until",
        "strangers",
        "limited",
        "bans",
        "budget_refused",
    )

    def __init__(
        self,
        *,
        rate: float = DEFAULT_QUERY_RATE,
        burst: float = DEFAULT_QUERY_BURST,
        ban_seconds: float = DEFAULT_BAN_SECONDS,
        max_tracked: int = DEFAULT_MAX_TRACKED,
        reply_rate: float | None = DEFAULT_REPLY_RATE,
        reply_burst: float = DEFAULT_REPLY_BURST,
        stranger_rate: float = DEFAULT_STRANGER_RATE,
        stranger_burst: float = DEFAULT_STRANGER_BURST,
        new_reserve: float = DEFAULT_NEW_SOURCE_RESERVE,
        known_reserve: float = DEFAULT_KNOWN_SOURCE_RESERVE,
        known_after: float = DEFAULT_KNOWN_AFTER,
        known_max_gap: float = DEFAULT_KNOWN_MAX_GAP,
        trusted: Callable[[str], bool] | None = None,
        now: float = 0.0,
    ) -> None:
        if not rate > 0 or not burst >= 1 or max_tracked < 1 or ban_seconds < 0:
            raise ValueError("rate must be > 0, burst >= 1, max_tracked >= 1 and ban_seconds >= 0")
        if reply_rate is not None and (not reply_rate > 0 or not reply_burst >= 1):
            raise ValueError("reply_rate must be > 0 and reply_burst >= 1")
        if not 0 <= known_reserve <= new_reserve < 1:
            raise ValueError("need 0 <= known_reserve <= new_reserve < 1")
        if not known_after >= 0 or not known_max_gap > 0:
            raise ValueError("need known_after >= 0 and known_max_gap > 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self.ban_seconds = float(ban_seconds)
        self.max_tracked = max_tracked
        self.reply_rate = reply_rate
        self.reply_burst = float(reply_burst)
        #: The strangers' own budget (see the module docstring).
        self.strangers = TokenBucket(stranger_rate, stranger_burst, now)
        # Tokens that must remain in the global bucket after a stranger / known source spends one.
        self._new_floor = new_reserve * self.reply_burst
        self._known_floor = known_reserve * self.reply_burst
        self._half_burst = self.burst / 2
        self.known_after = float(known_after)
        self.known_max_gap = float(known_max_gap)
        self._trusted = trusted or _never
        # ip -> [tokens, last seen, banned until, streak start, verified]; least recently seen first.
        self._sources: OrderedDict[str, list[float]] = OrderedDict()
        self._global = self.reply_burst
        self._global_at = now
        # [from, until): no stranger can be served (see _closed_to_strangers).
        self._closed_from = self._closed_until = now
        #: Datagrams refused because their source was over its budget or banned.
        self.limited = 0
        #: Times a source emptied its bucket and was banned.
        self.bans = 0
        #: Datagrams refused by the global or the strangers' budget.
        self.budget_refused = 0

    def __len__(self) -> int:
        """How many source IPs are remembered."""
        return len(self._sources)

    def admit(self, ip: str, now: float) -> bool:
        """Decide whether to look at a datagram from ``ip``; spend its tokens if so. O(1).

        Returns:
            ``True`` to decode and handle the datagram; ``False`` to drop it unread
            (counted in :attr:`limited` or :attr:`budget_refused`).
        """
        sources = self._sources
        entry = sources.get(ip)
        if entry is None:
            if (
                self.reply_rate is not None
                and (self._closed_from <= now < self._closed_until or self._closed_to_strangers(now))
                and not self._trusted(ip)
            ):
                # A first-time stranger refused is not remembered: a flood of
                # ever-new (spoofed) sources cannot push the sources with a
                # history out of the map.
                self.budget_refused += 1
                return False
            if len(sources) >= self.max_tracked:
                sources.popitem(last=False)
            entry = sources[ip] = [self.burst, now, 0.0, now, 0.0]
            tokens = self.burst
        else:
            sources.move_to_end(ip)
            if entry[_BANNED_UNTIL] > now:
                self.limited += 1
                return False
            elapsed = now - entry[_SEEN]
            tokens = entry[_TOKENS]
            if elapsed > 0:  # (a clock that steps back refills nothing)
                if elapsed > self.known_max_gap:
                    entry[_STREAK] = now  # a silence: its sustained history starts again
                tokens = min(self.burst, tokens + elapsed * self.rate)
                entry[_SEEN] = now
        if tokens < 1.0:
            self.limited += 1
            if entry[_VERIFIED] or self._trusted(ip):
                entry[_TOKENS] = tokens  # held to its rate, never banned (see the module docstring)
                return False
            entry[_TOKENS] = self.burst  # the state it comes back to when the ban ends
            entry[_BANNED_UNTIL] = now + self.ban_seconds
            self.bans += 1
            return False
        entry[_TOKENS] = tokens - 1.0
        if self.reply_rate is None:
            return True
        g = self._refill(now) - 1.0
        if entry[_VERIFIED]:
            floor = 0.0
        elif now - entry[_STREAK] >= self.known_after and tokens >= self._half_burst:
            floor = self._known_floor
        elif self._trusted(ip):
            floor = 0.0
        else:  # a stranger: its own small budget, and not the global reserve
            if g < self._new_floor or not self.strangers.take(now):
                self.budget_refused += 1
                return False
            self._global = g
            return True
        if g < floor:
            self.budget_refused += 1
            return False
        self._global = g
        return True

    def _closed_to_strangers(self, now: float) -> bool:
        """Whether no stranger can be served at ``now``; if so, remember until when at least.

        Both buckets only refill with time and only spend when a datagram is
        served, so until the earlier of the instants either could serve a
        stranger again (if no one else spent), the answer stays yes: the
        refusals of a spoofed flood then cost one comparison each.
        """
        g = self._refill(now) - 1.0
        strangers = self.strangers
        s = strangers.tokens(now)
        if g >= self._new_floor and s >= 1.0:
            return False
        wait = max((1.0 - s) / strangers.rate, (self._new_floor - g) / self.reply_rate)  # type: ignore[operator]
        self._closed_from = now
        self._closed_until = now + wait
        return True

    def verified(self, ip: str, now: float) -> None:
        """Record that ``ip`` answered one of our queries: it is return-routable,
        and is trusted from now on (until it is forgotten).

        A ban ends: the flood it was banned for may have carried its address
        without coming from it; from now on it is held to its rate instead.
        """
        entry = self._sources.get(ip)
        if entry is None:
            if len(self._sources) >= self.max_tracked:
                self._sources.popitem(last=False)
            self._sources[ip] = [self.burst, now, 0.0, now, 1.0]
        else:
            entry[_VERIFIED] = 1.0
            if entry[_BANNED_UNTIL] > now:
                entry[_BANNED_UNTIL] = 0.0
                entry[_TOKENS] = 0.0  # it refills at its rate from here
                entry[_SEEN] = now

    def is_verified(self, ip: str) -> bool:
        """Whether ``ip`` answered one of our queries since it was last forgotten."""
        entry = self._sources.get(ip)
        return entry is not None and entry[_VERIFIED] != 0.0

    def is_known(self, ip: str, now: float) -> bool:
        """Whether ``ip`` has a sustained history within budget at ``now`` (see the module docstring)."""
        entry = self._sources.get(ip)
        if entry is None or entry[_BANNED_UNTIL] > now or now - entry[_SEEN] > self.known_max_gap:
            return False
        return now - entry[_STREAK] >= self.known_after and self.tokens(ip, now) >= self._half_burst

    def _refill(self, now: float) -> float:
        """Bring the global bucket up to ``now``; return its tokens."""
        elapsed = now - self._global_at
        if elapsed > 0:
            self._global = min(self.reply_burst, self._global + elapsed * self.reply_rate)  # type: ignore[operator]
            self._global_at = now
        return self._global

    def tokens(self, ip: str, now: float) -> float:
        """The datagrams ``ip`` may send at ``now`` before it is refused (no token is spent)."""
        entry = self._sources.get(ip)
        if entry is None:
            return self.burst
        if entry[_BANNED_UNTIL] > now:
            return 0.0
        return min(self.burst, entry[_TOKENS] + max(0.0, now - entry[_SEEN]) * self.rate)

    def banned(self, ip: str, now: float) -> bool:
        """Whether ``ip`` is being ignored for flooding at ``now``."""
        entry = self._sources.get(ip)
        return entry is not None and entry[_BANNED_UNTIL] > now

    def reply_tokens(self, now: float) -> float:
        """Replies the global budget holds at ``now`` (``inf`` without one)."""
        if self.reply_rate is None:
            return float("inf")
        return min(self.reply_burst, self._global + max(0.0, now - self._global_at) * self.reply_rate)


#: The earlier name of :class:`InboundPolicy`.
QueryRateLimiter = InboundPolicy
