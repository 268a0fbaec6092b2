"""The inbound policy: which datagrams from strangers we look at, without I/O.

A DHT node answers strangers, so one host can make it work (and send) as fast
as that host can send, or aim a stream of queries with a forged source address
at a victim and let our replies, several times larger, do the flooding. Two
budgets bound both, and both are decided from the source IP alone, *before* the
datagram is decoded, so a flood costs one dictionary lookup per datagram:

* **Per source IP**, a token bucket that refills at ``rate`` datagrams a second
  up to ``burst``. A source that empties it is flooding, well above anything a
  client needs, and is ignored for ``ban_seconds`` (libtorrent ignores an IP
  for 5 minutes too). ``rate`` is set well above what a busy honest source
  sends: a client running many lookups through one node, or many users behind
  one NAT or CGNAT address, reach 20 queries a second; they are never refused.
* **Globally**, a token bucket of replies a second (``reply_rate``). It makes
  the node useless as a reflector whatever the number of (spoofed) sources.
  Under pressure the sources are served in order of trust: those in our
  routing table first (they answered our queries from that address, which a
  spoofer cannot do), then sources with a history: first served at least
  ``known_after`` seconds ago and within their budget since (their bucket at
  least half full: a flooder's drains within seconds), and first-time sources
  and sources near their limit last. First-time sources may not spend the last
  ``new_reserve`` share of the global bucket, known sources not the last
  ``known_reserve``; table contacts may spend it all.

Replies to our own queries never pass through here: the protocol exempts
addresses it has queries pending to (see ``NodeProtocol.receive_datagram``).

Memory is bounded: at most ``max_tracked`` source IPs are remembered (about
250 bytes each), the least recently seen forgotten first. The map is an
``OrderedDict``: moving a key to the end and popping the front are O(1), where
evicting the first key of a plain ``dict`` scans past the tombstones that
earlier deletions left (15 us per new source at 65,536 tracked IPs, measured).
A forgotten source starts again as first-time, which is the least trusted.

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
    "DEFAULT_NEW_SOURCE_RESERVE",
    "DEFAULT_KNOWN_AFTER",
    "DEFAULT_KNOWN_SOURCE_RESERVE",
    "InboundPolicy",
    "QueryRateLimiter",
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
#: Datagrams a second the node reads (and so at most answers) from strangers in
#: all. A public node sees tens to a few hundred queries a second; 500 replies of
#: ~300 bytes are ~150 kB/s, the most a spoofed flood can make us reflect
#: (libtorrent caps all its DHT replies at 8 kB/s, ``dht_upload_rate_limit``).
#: It also bounds the CPU a flood from ever-new sources costs: a refused datagram
#: is never decoded (tools/hostile.py: a spoofed flood then costs about what a
#: flood from a few banned sources does).
DEFAULT_REPLY_RATE: Final = 500.0
#: Datagrams the global budget allows in a row (two seconds' worth).
DEFAULT_REPLY_BURST: Final = 1000.0
#: Seconds since a source was first served before it counts as known.
DEFAULT_KNOWN_AFTER: Final = 10.0
#: Share of the global budget first-time sources may not spend.
DEFAULT_NEW_SOURCE_RESERVE: Final = 0.5
#: Share of the global budget sources we served before may not spend (only
#: routing-table contacts may).
DEFAULT_KNOWN_SOURCE_RESERVE: Final = 0.25

# Fields of a tracked source (a list, the cheapest mutable record in CPython).
_TOKENS: Final = 0
_SEEN: Final = 1
_BANNED_UNTIL: Final = 2
_FIRST_SERVED: Final = 3


_INF: Final = float("inf")


def _never(ip: str) -> bool:
    return False


class InboundPolicy:
    """Per-source buckets with bans, and one global reply budget served by trust.

    Args:
        rate: per-IP tokens (datagrams) added per second.
        burst: per-IP bucket size, and what a new IP starts with.
        ban_seconds: how long a source that emptied its bucket is ignored.
        max_tracked: IPs remembered at once; the least recently seen goes first.
        reply_rate: global tokens added per second (``None``: no global budget).
        reply_burst: the global bucket's size.
        new_reserve: share of the global bucket first-time sources may not spend.
        known_reserve: share of it that only trusted sources may spend.
        known_after: seconds after its first admission a source within its
            budget counts as known.
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
        "_trusted",
        "_sources",
        "_global",
        "_global_at",
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
        new_reserve: float = DEFAULT_NEW_SOURCE_RESERVE,
        known_reserve: float = DEFAULT_KNOWN_SOURCE_RESERVE,
        known_after: float = DEFAULT_KNOWN_AFTER,
        trusted: Callable[[str], bool] | None = None,
        now: float = 0.0,
    ) -> None:
        if not rate > 0 or not burst >= 1 or max_tracked < 1 or ban_seconds < 0:
            raise ValueError("rate must be > 0, burst >= 1, max_tracked >= 1 and ban_seconds >= 0")
        if reply_rate is not None and (not reply_rate > 0 or not reply_burst >= 1):
            raise ValueError("reply_rate must be > 0 and reply_burst >= 1")
        if not 0 <= known_reserve <= new_reserve < 1:
            raise ValueError("need 0 <= known_reserve <= new_reserve < 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.ban_seconds = float(ban_seconds)
        self.max_tracked = max_tracked
        self.reply_rate = reply_rate
        self.reply_burst = float(reply_burst)
        # Tokens that must remain in the global bucket after a first-time / known source spends one.
        self._new_floor = new_reserve * self.reply_burst
        self._known_floor = known_reserve * self.reply_burst
        self._half_burst = self.burst / 2
        self.known_after = float(known_after)
        self._trusted = trusted or _never
        # ip -> [tokens, last seen, banned until, first admitted (inf: never)]; least recently seen first.
        self._sources: OrderedDict[str, list[float]] = OrderedDict()
        self._global = self.reply_burst
        self._global_at = now
        #: Datagrams refused because their source was over its budget or banned.
        self.limited = 0
        #: Times a source emptied its bucket and was banned.
        self.bans = 0
        #: Datagrams refused by the global reply budget.
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
            if self.reply_rate is not None:
                g = self._refill(now)
                if g - 1.0 < self._new_floor and not self._trusted(ip):
                    # Under pressure a first-time source is refused without being
                    # remembered: a flood of ever-new (spoofed) sources cannot push
                    # the sources with a history out of the map.
                    self.budget_refused += 1
                    return False
            if len(sources) >= self.max_tracked:
                sources.popitem(last=False)
            entry = sources[ip] = [self.burst, now, 0.0, _INF]
            tokens = self.burst
        else:
            sources.move_to_end(ip)
            if entry[_BANNED_UNTIL] > now:
                self.limited += 1
                return False
            elapsed = now - entry[_SEEN]
            tokens = entry[_TOKENS]
            if elapsed > 0:  # (a clock that steps back refills nothing)
                tokens = min(self.burst, tokens + elapsed * self.rate)
                entry[_SEEN] = now
        if tokens < 1.0:
            entry[_TOKENS] = self.burst  # the state it comes back to when the ban ends
            entry[_BANNED_UNTIL] = now + self.ban_seconds
            entry[_FIRST_SERVED] = _INF  # its history is gone
            self.bans += 1
            self.limited += 1
            return False
        entry[_TOKENS] = tokens - 1.0
        if self.reply_rate is not None:
            g = self._refill(now) - 1.0
            if g < self._new_floor:  # under pressure: serve by trust
                if g < 0.0:
                    floor = 0.0
                elif self._trusted(ip):
                    floor = 0.0
                elif now - entry[_FIRST_SERVED] >= self.known_after and tokens >= self._half_burst:
                    floor = self._known_floor
                else:
                    floor = self._new_floor
                if g < floor:
                    self._global = g + 1.0
                    self.budget_refused += 1
                    return False
            self._global = g
        if entry[_FIRST_SERVED] == _INF:
            entry[_FIRST_SERVED] = now
        return True

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
