"""Round-trip-time estimates and the query timeouts derived from them.

This module owns how a measured round trip becomes a timeout. It keeps, as TCP
does for its retransmission timeout (RFC 6298), a smoothed RTT and a smoothed mean
deviation; the timeout is ``srtt + 4 * rttvar``, bounded below and above. Until
anything is measured the timeout is a fixed default (the lookup's soft timeout of
old).

Two levels, used together by :class:`~mainline_dht.core.contact_cache.RecentContacts`
and the protocol core:

- :class:`RttEstimate`: the estimate of one contact, or of the node as a whole;
- :class:`RttEstimator`: the node-wide estimate plus the rule that turns a
  contact's own estimate (if it has one) into that contact's timeout.

Why a DHT can take every sample: each of our queries carries a fresh transaction
ID and is never retransmitted, so an answer is never ambiguous about which send it
belongs to (the problem Karn's rule solves in TCP). Late answers count too: they
are what keeps the estimate honest on a slow network.

Pure: no clock, no randomness; times arrive as arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, final

from ..errors import LocalProtocolError

__all__ = [
    "DEFAULT_FALLBACK_TIMEOUT",
    "DEFAULT_MAX_TIMEOUT",
    "DEFAULT_MIN_TIMEOUT",
    "RttEstimate",
    "RttEstimator",
]

#: Seconds used while nothing is measured: the fixed soft timeout lookups used
#: before round trips were measured (a value tuned on the simulated network).
DEFAULT_FALLBACK_TIMEOUT: Final = 0.5
#: The shortest timeout (seconds). Loopback round trips are well under a
#: millisecond; a timeout that short would hedge on any scheduling hiccup, and the
#: live DHT's fastest nodes answer in tens of milliseconds. Chosen by
#: tools/bench_lookup.py.
DEFAULT_MIN_TIMEOUT: Final = 0.15
#: The longest timeout (seconds): libtorrent's short timeout. On a network slower
#: than that a query stops holding a slot after 1 s, as it would in libtorrent.
DEFAULT_MAX_TIMEOUT: Final = 1.0

#: RFC 6298 gains: srtt moves 1/8 of the way to each sample, rttvar 1/4.
_ALPHA: Final = 1 / 8
_BETA: Final = 1 / 4
#: RFC 6298's K: how many mean deviations above the mean the timeout sits.
_K: Final = 4
#: A contact's deviation is taken as at least this share of its smoothed RTT.
_MIN_VAR_SHARE: Final = 1 / 4


@final
@dataclass(slots=True)
class RttEstimate:
    """A smoothed round-trip time and its smoothed mean deviation (RFC 6298).

    Attributes:
        srtt: smoothed RTT (seconds); meaningless while ``samples`` is 0.
        rttvar: smoothed mean deviation of the RTT (seconds).
        samples: how many round trips were measured.
    """

    srtt: float = 0.0
    rttvar: float = 0.0
    samples: int = 0

    def observe(self, rtt: float) -> None:
        """Fold one measured round trip (seconds) into the estimate.

        The first sample sets ``srtt = rtt`` and ``rttvar = rtt / 2``; later ones
        move ``rttvar`` a quarter and ``srtt`` an eighth of the way (RFC 6298,
        section 2). Negative or non-finite samples are ignored.
        """
        if not (rtt >= 0.0 and math.isfinite(rtt)):
            return
        if self.samples == 0:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar += _BETA * (abs(self.srtt - rtt) - self.rttvar)
            self.srtt += _ALPHA * (rtt - self.srtt)
        self.samples += 1

    def timeout(self, *, min_var: float = 0.0) -> float:
        """``srtt + 4 * max(rttvar, min_var)``, unbounded; ``inf`` while nothing is measured."""
        if self.samples == 0:
            return math.inf
        return self.srtt + _K * max(self.rttvar, min_var)


@final
class RttEstimator:
    """The node-wide RTT estimate and the timeout rule for each contact.

    A contact with an estimate of its own gets ``srtt + 4 * rttvar`` from it, with
    a quarter of its ``srtt`` as a floor for ``rttvar`` (so never less than twice its
    smoothed RTT: a few steady samples say little about its spread). The node-wide
    estimate plays no part there: on the live DHT it mixes near and far nodes, and
    its spread would give a nearby node a far node's timeout. A contact we never
    measured gets the node-wide timeout. Every timeout is clamped to ``[minimum, maximum]``; with no
    sample at all the timeout is ``fallback``.

    Args:
        fallback: seconds used while nothing is measured.
        minimum: the shortest timeout handed out (seconds).
        maximum: the longest timeout handed out (seconds).

    Raises:
        LocalProtocolError: if the bounds are not ``0 < minimum <= maximum`` or
            ``fallback`` is not positive.
    """

    __slots__ = ("fallback", "minimum", "maximum", "node")

    def __init__(
        self,
        *,
        fallback: float = DEFAULT_FALLBACK_TIMEOUT,
        minimum: float = DEFAULT_MIN_TIMEOUT,
        maximum: float = DEFAULT_MAX_TIMEOUT,
    ) -> None:
        if not 0.0 < minimum <= maximum or not math.isfinite(maximum):
            raise LocalProtocolError("RTT timeout bounds must satisfy 0 < minimum <= maximum < inf")
        if not (fallback > 0.0 and math.isfinite(fallback)):
            raise LocalProtocolError("the fallback timeout must be a positive number of seconds")
        self.fallback = fallback
        self.minimum = minimum
        self.maximum = maximum
        #: The estimate over every answer the node received.
        self.node = RttEstimate()

    def observe(self, rtt: float) -> None:
        """Fold one round trip (seconds, any contact) into the node-wide estimate."""
        self.node.observe(rtt)

    def timeout(self, contact_estimate: RttEstimate | None = None) -> float:
        """The timeout (seconds) for a query to a contact with ``contact_estimate``.

        Args:
            contact_estimate: that contact's own estimate, or ``None`` if it was
                never measured (routers, strangers).

        Returns:
            A timeout within ``[minimum, maximum]``, or ``fallback`` when neither
            the contact nor the node has a sample.
        """
        node = self.node
        if contact_estimate is not None and contact_estimate.samples:
            raw = contact_estimate.timeout(min_var=contact_estimate.srtt * _MIN_VAR_SHARE)
        elif node.samples:
            raw = node.timeout()
        else:
            return self.fallback
        return min(self.maximum, max(self.minimum, raw))
