"""Our external IP address, as the nodes that answer us report it (BEP 42 ``ip``).

Every reply carries ``ip``: the address its sender saw our packet come from.
Behind NAT that is the only way a node learns its public address, which BEP 42
ties our node ID to. One report proves nothing (a liar, or a node behind the
same NAT), so each source network gets one vote (its latest): one per IPv4
/24 and one per IPv6 /64, since whoever holds one address of such a network
usually holds them all (an IPv6 /64 is one customer's). An address wins
only with at least ``min_votes`` votes and a majority of all votes counted.
Votes come only from replies to our own queries (matched by transaction ID
and address), which a stranger cannot forge without seeing our queries.

Memory is bounded: ``max_voters`` source networks at most, the oldest forgotten
first, so the address can move with us (a laptop on a new network).

Pure: no trio, socket, time or os.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from typing import Final

#: Votes an address needs before we believe it (and a majority of all votes).
DEFAULT_MIN_VOTES: Final = 10
#: Source IPs whose votes are remembered.
DEFAULT_MAX_VOTERS: Final = 256


def voter_network(ip: str) -> str:
    """The network one vote stands for: ``ip``'s /24 (IPv4) or /64 (IPv6), as text.

    Anything that is not an IP literal stands for itself.
    """
    if ":" not in ip:
        return ip.rpartition(".")[0] + ".0/24"
    try:
        packed = ipaddress.IPv6Address(ip).packed
    except ValueError:
        return ip
    return str(ipaddress.IPv6Address(packed[:8] + bytes(8))) + "/64"


class ExternalAddressVoter:
    """Counts reports of our external IP, one vote per reporting /24 or /64.

    Args:
        min_votes: votes the leading address needs to be believed.
        max_voters: voters remembered at once; the oldest vote goes first.
    """

    __slots__ = ("min_votes", "max_voters", "_votes", "_counts", "current")

    def __init__(self, *, min_votes: int = DEFAULT_MIN_VOTES, max_voters: int = DEFAULT_MAX_VOTERS) -> None:
        if min_votes < 1 or max_voters < min_votes:
            raise ValueError("need 1 <= min_votes <= max_voters")
        self.min_votes = min_votes
        self.max_voters = max_voters
        self._votes: OrderedDict[str, str] = OrderedDict()  # voter network -> the address it reported
        self._counts: Counter[str] = Counter()
        #: The address the votes agree on, or ``None`` until they do.
        self.current: str | None = None

    def __len__(self) -> int:
        """How many voters are remembered."""
        return len(self._votes)

    def vote(self, voter_ip: str, reported_ip: str) -> str | None:
        """Count ``voter_ip``'s report; return the new external address if this vote changed it.

        The vote replaces the previous one from the same /24 (IPv4) or /64 (IPv6).
        """
        votes, counts = self._votes, self._counts
        voter_ip = voter_network(voter_ip)
        previous = votes.pop(voter_ip, None)
        if previous is not None:
            self._uncount(previous)
        elif len(votes) >= self.max_voters:
            self._uncount(votes.popitem(last=False)[1])
        votes[voter_ip] = reported_ip
        counts[reported_ip] += 1
        leader, n = counts.most_common(1)[0]
        if leader != self.current and n >= self.min_votes and 2 * n > len(votes):
            self.current = leader
            return leader
        return None

    def _uncount(self, address: str) -> None:
        n = self._counts[address] - 1
        if n:
            self._counts[address] = n
        else:
            del self._counts[address]
