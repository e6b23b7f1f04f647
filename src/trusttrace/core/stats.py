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


def fisher_exact_p(successes_a: int, n_a: int, successes_b: int, n_b: int) -> float:
    """Two-sided p-value of Fisher's exact test that two proportions are equal (1.0 when either n is 0)."""
    from scipy.stats import fisher_exact

    if n_a <= 0 or n_b <= 0:
        return 1.0
    table = [[successes_a, n_a - successes_a], [successes_b, n_b - successes_b]]
    return float(fisher_exact(table).pvalue)


def detectable_change(base_rate: float, n: int, up: bool, power: float = 0.8, z_test: float = Z95) -> float:
    """The smallest change of a proportion from ``base_rate`` that a two-sided 5 % test on ``n`` items detects
    with probability ``power``: the d > 0 solving z·√(p₀q₀/n) + z_β·√(p₁q₁/n) = d with p₁ = p₀ ± d (``up``
    picks the sign). NaN when no change in that direction is detectable (the rate is at its bound, or n is
    too small for any change within [0, 1])."""
    from scipy.stats import norm

    if n <= 0 or not 0.0 <= base_rate <= 1.0:
        return float("nan")
    z_power = float(norm.ppf(power))
    room = 1.0 - base_rate if up else base_rate

    def gap(d: float) -> float:
        p1 = base_rate + d if up else base_rate - d
        return d - (z_test * np.sqrt(base_rate * (1 - base_rate) / n) + z_power * np.sqrt(p1 * (1 - p1) / n))

    if room <= 0 or gap(room) < 0:
        return float("nan")
    low, high = 0.0, room  # gap(0) ≤ 0 ≤ gap(room): bisect
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if gap(mid) < 0 else (low, mid)
    return float(high)
