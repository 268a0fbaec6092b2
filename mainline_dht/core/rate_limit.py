"""Per-IP budget for incoming queries, without I/O.

A DHT node answers strangers, so one host can make it work (and send) as
fast as that host can send queries, or aim a stream of spoofed queries at a
victim and let our replies, several times larger, do the flooding. A budget
per source IP bounds both: each IP has a token bucket that refills at
``rate`` queries per second up to ``burst``; a query that finds the bucket
empty is dropped unanswered.

The figures match the reference implementation's: libtorrent counts each IP's
queries over 10-second windows and ignores an IP that sends 50 in one (its
``dht_block_ratelimit`` of 5 a second) for 5 minutes. We drop only the excess
instead of banning: an IP behind which many users share one NAT address is
slowed, not shut out. A well-behaved node asks one node a few questions per
lookup, so it stays far below that (ours send fewer than 20 in 10 s to any
one node while joining and looking up; tests/test_simulation.py); the burst lets
a node that is joining, or refreshing several buckets at once, ask a
neighbour a few dozen questions in a row.

Memory is bounded: at most ``max_tracked`` IPs are remembered, and when that
many are, the least recently seen is forgotten. An IP that is forgotten starts
again with a full bucket, which costs us one ``burst`` of answers: a flood of
spoofed sources is then answered about as it would be without the budget, and
no worse.

Pure: no trio, socket, time or os. Time comes in as ``now`` (seconds).
"""

from __future__ import annotations

from typing import Final

#: Queries per second one IP may send us, sustained (libtorrent's
#: ``dht_block_ratelimit`` default).
DEFAULT_QUERY_RATE: Final = 5.0
#: Queries one IP may send us in a row after a quiet spell (libtorrent bans an
#: IP at 50 queries in a 10-second window).
DEFAULT_QUERY_BURST: Final = 50.0
#: Source IPs remembered at once (about 150 bytes each).
DEFAULT_MAX_TRACKED: Final = 65536


class QueryRateLimiter:
    """A token bucket per source IP address.

    Args:
        rate: tokens (queries) added per second.
        burst: the bucket's size, and what a new IP starts with.
        max_tracked: IPs remembered at once; the least recently seen goes first.
    """

    __slots__ = ("rate", "burst", "max_tracked", "_buckets", "dropped")

    def __init__(
        self,
        *,
        rate: float = DEFAULT_QUERY_RATE,
        burst: float = DEFAULT_QUERY_BURST,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        if not rate > 0 or not burst >= 1 or max_tracked < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_tracked >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_tracked = max_tracked
        # ip -> [tokens, when they were counted]; ordered least recently seen first.
        self._buckets: dict[str, list[float]] = {}
        #: Queries refused since the limiter was made.
        self.dropped = 0

    def __len__(self) -> int:
        """How many IPs are remembered."""
        return len(self._buckets)

    def allow(self, ip: str, now: float) -> bool:
        """Spend a token of ``ip``'s bucket; ``False`` (and count a drop) when it is empty."""
        buckets = self._buckets
        entry = buckets.pop(ip, None)
        if entry is None:
            if len(buckets) >= self.max_tracked:
                del buckets[next(iter(buckets))]
            buckets[ip] = [self.burst - 1.0, now]
            return True
        buckets[ip] = entry  # now the most recently seen
        elapsed = now - entry[1]
        tokens = entry[0]
        if elapsed > 0:  # (a clock that steps back refills nothing)
            tokens = min(self.burst, tokens + elapsed * self.rate)
            entry[1] = now
        if tokens < 1.0:
            entry[0] = tokens
            self.dropped += 1
            return False
        entry[0] = tokens - 1.0
        return True

    def tokens(self, ip: str, now: float) -> float:
        """The queries ``ip`` may send at ``now`` before it is refused (no token is spent)."""
        entry = self._buckets.get(ip)
        if entry is None:
            return self.burst
        return min(self.burst, entry[0] + max(0.0, now - entry[1]) * self.rate)
