"""How many nodes the DHT holds, estimated from the ID density around random targets.

Owns the arithmetic only: no I/O, no clock, no global randomness (the caller
runs the lookups and hands over the distances).

The model: node IDs are uniform over the 2**160 keyspace, so the XOR distances
from a random target to N IDs are N uniform draws from [0, 2**160). The i-th
closest lies at d_i ≈ i * 2**160 / N, so each i gives N ≈ i * 2**160 / d_i.
More exactly, the gaps between consecutive distances are independent and
exponential, so d_m (the farthest of the m closest) holds everything the m
distances say about N, and ``d_m * N / 2**160`` follows Gamma(m, 1), whose
median is about m - 1/3. The per-target estimate is therefore
``(m - 1/3) * 2**160 / d_m``, median-unbiased. Targets are combined by their
median, and the quartiles give the spread: with m = 8 one target is good to
about +-40%, 48 targets to about +-7%.

The same figure is how a client tells a healthy routing table from an eclipsed
one: it looks up a few random targets through its own table and estimates the
size from the closest nodes that answer. On a healthy table the estimate agrees
with the DHT's known size (tens of millions on the public DHT) and the per-target
estimates stay within a factor of about two of each other. An attacker who
surrounds the targets with its own IDs makes the distances tiny and the
estimates huge, or, when it controls only some paths, scatters them: a median
far from the expected size, or quartiles more than a few times apart, are the
warning signs. The median needs more than half the targets poisoned to move.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["SizeEstimate", "KEYSPACE", "closest_distances", "estimate_size", "target_estimate", "xor_distances"]

#: The size of the node-ID space (BEP 5: 160-bit IDs).
KEYSPACE: Final = 1 << 160
#: The median of Gamma(m, 1) is m - 1/3 (to within 0.02 for m >= 1).
_MEDIAN_SHIFT: Final = 1.0 / 3.0


@dataclass(frozen=True, slots=True)
class SizeEstimate:
    """The estimated node count with its spread.

    Attributes:
        nodes: the median of the per-target estimates.
        low: their lower quartile.
        high: their upper quartile.
        targets: how many targets went into it.
    """

    nodes: float
    low: float
    high: float
    targets: int

    @property
    def spread(self) -> float:
        """``high / low``: about 1.5 on a healthy network with m = 8; far more hints at an eclipse."""
        return self.high / self.low if self.low > 0 else math.inf


def xor_distances(target: bytes, ids: Iterable[bytes]) -> list[int]:
    """The XOR distances from ``target`` to ``ids``, closest first, without duplicates or ``target`` itself."""
    t = int.from_bytes(target, "big")
    return sorted({d for d in (t ^ int.from_bytes(i, "big") for i in ids) if d})


def closest_distances(target: int, sorted_ids: Sequence[int], m: int) -> list[int]:
    """The XOR distances of the ``m`` IDs closest to ``target`` in an ascending list of IDs.

    The IDs that share a prefix with ``target`` form one run of the sorted list,
    so this looks only at the smallest such run holding ``m`` IDs (two bisections
    per prefix length), not at the whole list.

    Args:
        target: the target as an integer.
        sorted_ids: node IDs as integers, ascending.
        m: how many distances to return (fewer when the list is shorter).

    Returns:
        Distances, closest first; ``target`` itself (distance 0) is left out.
    """
    if m <= 0 or not sorted_ids:
        return []
    lo, hi = 0, len(sorted_ids)
    for shift in range(0, 161):
        base = (target >> shift) << shift
        lo = bisect.bisect_left(sorted_ids, base)
        hi = bisect.bisect_left(sorted_ids, base + (1 << shift))
        if hi - lo > m:  # one more than m: target itself may be among them
            break
    return sorted(d for d in (target ^ i for i in sorted_ids[lo:hi]) if d)[:m]


def target_estimate(distances: Sequence[int]) -> float | None:
    """Estimate N from the sorted distances of the closest IDs around one target.

    Args:
        distances: XOR distances of the m closest nodes found, closest first
            (m >= 1; the more, the better: the error shrinks as 1/sqrt(m)).

    Returns:
        ``(m - 1/3) * 2**160 / d_m``, or ``None`` for no distances.
    """
    if not distances:
        return None
    m = len(distances)
    farthest = max(distances[-1], 1)
    return (m - _MEDIAN_SHIFT) * KEYSPACE / farthest


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def estimate_size(samples: Iterable[Sequence[int]], *, min_nodes: int = 2) -> SizeEstimate | None:
    """Combine per-target distance lists into one estimate.

    Args:
        samples: for each target, the sorted XOR distances of the closest nodes
            found around it (see :func:`xor_distances`).
        min_nodes: ignore targets with fewer distances than this (a lookup that
            found one node says little).

    Returns:
        The median and quartiles of the per-target estimates, or ``None`` when
        no target qualifies.
    """
    per_target = sorted(
        e for d in samples if len(d) >= min_nodes and (e := target_estimate(d)) is not None
    )
    if not per_target:
        return None
    return SizeEstimate(
        nodes=_quantile(per_target, 0.5),
        low=_quantile(per_target, 0.25),
        high=_quantile(per_target, 0.75),
        targets=len(per_target),
    )
