"""A proportion with its Wilson score 95% interval (Wilson 1927; Newcombe 1998, method 3), computed by
SciPy (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``, no continuity correction).

The Wilson interval keeps its coverage at small n and near 0 or 1, where the Wald interval collapses to a
point (e.g. 10/10 gives 1.0 to 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Proportion:
    successes: int
    n: int

    @property
    def estimate(self) -> float:
        return self.successes / self.n

    @property
    def interval(self) -> tuple[float, float]:
        """The Wilson score interval at 95%."""
        from scipy.stats import binomtest  # imported when first needed: scipy.stats takes a second to load

        found = binomtest(self.successes, self.n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
        return float(found.low), float(found.high)


def proportion(successes: int, n: int) -> Proportion | None:
    """None when there is nothing to estimate (n = 0)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"not a proportion: {successes}/{n}")
    return Proportion(successes, n) if n else None
