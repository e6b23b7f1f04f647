"""Small statistics every table uses: an interval for a proportion, and a paired test of two 0/1 outcomes."""

from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


def wilson(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of a proportion ``correct / n``; NaN for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = float(centre - half), float(centre + half)
    return (0.0 if correct <= 0 else low), (1.0 if correct >= n else high)  # exact ends, not round-off


def mcnemar_exact(before: np.ndarray, after: np.ndarray) -> tuple[float, int, int]:
    """McNemar's exact test of paired 0/1 outcomes: (two-sided p-value, n 1→0, n 0→1).

    Only the discordant pairs count: under the null a pair that changed is equally likely to change
    either way, so the smaller count is binomial(n discordant, ½); p = min(1, 2·P(X ≤ smaller)).
    """
    from scipy.stats import binom

    before, after = np.asarray(before).astype(bool), np.asarray(after).astype(bool)
    if before.shape != after.shape:
        raise ValueError(f"Paired outcomes must match: {before.shape} vs {after.shape}.")
    down, up = int((before & ~after).sum()), int((~before & after).sum())
    n = down + up
    p = 1.0 if n == 0 else min(1.0, 2 * float(binom.cdf(min(down, up), n, 0.5)))
    return p, down, up
