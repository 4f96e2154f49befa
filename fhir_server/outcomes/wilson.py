"""A proportion with its Wilson score 95% interval (Wilson 1927; Newcombe 1998, method 3).

The Wilson interval keeps its coverage at small n and near 0 or 1, where the Wald interval collapses to a
point (e.g. 10/10 gives 1.0 to 1.0). No statistics library is a dependency, and it is a few lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution


@dataclass(frozen=True, slots=True)
class Proportion:
    successes: int
    n: int

    @property
    def estimate(self) -> float:
        return self.successes / self.n

    @property
    def interval(self) -> tuple[float, float]:
        """The Wilson score interval at 95%, clipped to [0, 1]."""
        n, p, z2 = self.n, self.estimate, Z95 * Z95
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)


def proportion(successes: int, n: int) -> Proportion | None:
    """None when there is nothing to estimate (n = 0)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"not a proportion: {successes}/{n}")
    return Proportion(successes, n) if n else None
