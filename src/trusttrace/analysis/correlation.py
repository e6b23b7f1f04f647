"""Probe accuracy against steering effect across source checkpoints (the paper's Fig. 5).

For each (layer, α) of a sweep: x = a source checkpoint's probe accuracy at that layer (from the trace of
the sources), y = the steered target's headline metric with that source's vector. Reports Pearson and
Spearman r with percentile bootstrap confidence intervals over sources (seeded).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from ..core.errors import OptionError
from ..runs.tables import is_control


def bootstrap_r(x: np.ndarray, y: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
                ) -> dict[str, float]:
    """Pearson and Spearman r of (x, y) with percentile bootstrap intervals (resampling the pairs)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        raise OptionError(f"A correlation needs at least 3 source checkpoints; got {len(x)}. Steer from more "
                         "checkpoints (e.g. --select log:6).")
    rng = np.random.default_rng(seed)
    pears, spear = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0:  # a resample with a constant side has no r
            pears.append(pearsonr(x[idx], y[idx]).statistic)
            spear.append(spearmanr(x[idx], y[idx]).statistic)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    constant = np.ptp(x) == 0 or np.ptp(y) == 0
    return {
        "pearson_r": np.nan if constant else float(pearsonr(x, y).statistic),
        "pearson_lo": float(np.percentile(pears, lo)) if pears else np.nan,
        "pearson_hi": float(np.percentile(pears, hi)) if pears else np.nan,
        "spearman_r": np.nan if constant else float(spearmanr(x, y).statistic),
        "spearman_lo": float(np.percentile(spear, lo)) if spear else np.nan,
        "spearman_hi": float(np.percentile(spear, hi)) if spear else np.nan,
        "n_sources": len(x), "n_boot": len(pears),
    }


def probe_vs_effect(probe_results: pd.DataFrame, steering: pd.DataFrame, dimension: str, metric: str,
                    seed: int = 0) -> pd.DataFrame:
    """One row per (layer, α): r between probe accuracy at the layer and ``metric`` under steering."""
    acc = probe_results[(probe_results.metric == "accuracy") & (probe_results.dimension == dimension)]
    acc = acc.set_index(["revision", "layer"]).value
    rows = []
    vectors = ~steering.source_revision.map(is_control) & (steering.source_revision != "self")
    effects = steering[(steering.metric == metric) & vectors]
    for (layer, alpha), g in effects.groupby(["layer", "alpha"]):
        pairs = [(acc[(rev, layer)], val) for rev, val in zip(g.source_revision, g.value) if (rev, layer) in acc]
        if len(pairs) < 3:
            continue
        x, y = map(np.array, zip(*pairs))
        rows.append({"layer": int(layer), "alpha": float(alpha), "metric": metric, **bootstrap_r(x, y, seed=seed)})
    return pd.DataFrame(rows)
