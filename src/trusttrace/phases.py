"""Fitting → compression: where I(T;X) peaks over training, and whether a compression phase follows.

The rule, per dimension and layer, on the checkpoints in step order (``PhaseRule`` holds the numbers):

1. Smooth I(T;X) with a centred moving average over ``smooth`` checkpoints (fewer at the ends).
2. The peak is the maximum of the smoothed curve.
3. *Fitting* happened when the peak comes after the first checkpoint and is at least ``min_rise`` above
   the first smoothed value (relative).
4. *Compression* follows when at least ``min_after`` checkpoints come after the peak, the last smoothed
   value is at least ``min_drop`` below the peak, and the median of the smoothed values after the peak
   is at least ``min_drop / 2`` below it: a sustained fall, not one low point at the end.
5. I(T;Y) *keeps rising* when its Spearman correlation with the step is at least ``rise_rho`` and its last
   smoothed value is above its first.

Smoothing and the relative thresholds keep checkpoint-to-checkpoint noise from reading as a phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ._io import write_with
from .errors import RunFolderError
from .layout import TraceLayout
from .runlock import hold


@dataclass(frozen=True)
class PhaseRule:
    """Thresholds of the phase rule (see the module docstring)."""

    smooth: int = 3  # checkpoints in the centred moving average
    min_rise: float = 0.05  # fitting: peak ≥ (1 + min_rise) × first value
    min_drop: float = 0.10  # compression: last ≤ (1 − min_drop)·peak, median after ≤ (1 − min_drop/2)·peak
    min_after: int = 2  # checkpoints after the peak needed to call a compression phase
    rise_rho: float = 0.5  # I(T;Y) rising: Spearman ρ(step, I(T;Y)) at least this


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average; the ends average the points available."""
    series = pd.Series(values, dtype=float)
    return series.rolling(window, center=True, min_periods=1).mean().to_numpy()


def layer_phases(steps: np.ndarray, tx: np.ndarray, ty: np.ndarray, rule: PhaseRule = PhaseRule()) -> dict[str, Any]:
    """The rule applied to one layer's curves (checkpoints in step order)."""
    if len(steps) < 3:
        raise RunFolderError(f"Phase detection needs at least 3 checkpoints; got {len(steps)}. Trace more "
                             "checkpoints (e.g. --select log:8).")
    order = np.argsort(steps, kind="stable")
    steps, tx, ty = np.asarray(steps)[order], np.asarray(tx)[order], np.asarray(ty)[order]
    s_tx, s_ty = smooth(tx, rule.smooth), smooth(ty, rule.smooth)
    p = int(np.argmax(s_tx))
    peak = s_tx[p]
    after = s_tx[p + 1:]
    fitting = p > 0 and peak >= (1 + rule.min_rise) * s_tx[0]
    compression = (len(after) >= rule.min_after and after[-1] <= (1 - rule.min_drop) * peak
                   and float(np.median(after)) <= (1 - rule.min_drop / 2) * peak)
    rho = spearmanr(steps, ty).statistic if np.ptp(ty) > 0 else 0.0
    return {
        "peak_step": int(steps[p]), "peak_mi_tx": float(peak), "final_mi_tx": float(s_tx[-1]),
        "drop_after_peak": float(1 - s_tx[-1] / peak) if peak > 0 else 0.0,
        "fitting": bool(fitting), "compression": bool(compression),
        "mi_ty_rho": float(rho), "mi_ty_rising": bool(rho >= rule.rise_rho and s_ty[-1] > s_ty[0]),
    }


def detect_phases(results: pd.DataFrame, rule: PhaseRule = PhaseRule()) -> pd.DataFrame:
    """One row per dimension × layer from a results table holding ``mi_tx`` and ``mi_ty`` rows with steps."""
    mi = results[results.metric.isin(["mi_tx", "mi_ty"])]
    if mi.empty:
        raise RunFolderError("The results table has no mi_tx/mi_ty rows. Run `trusttrace trace` with the mi "
                             "analysis (on by default), or `trusttrace probe RUN --analyses mi`.")
    if mi.step.isna().any():
        raise RunFolderError("Some MI rows have no training step (a single checkpoint or unnumbered revisions); "
                             "phases need a checkpoint series with steps.")
    wide = mi.pivot_table(index=["dimension", "layer", "step"], columns="metric", values="value").reset_index()
    rows = []
    for (dim, layer), g in wide.groupby(["dimension", "layer"], sort=True):
        rows.append({"dimension": dim, "layer": int(layer),
                     **layer_phases(g.step.to_numpy(), g.mi_tx.to_numpy(), g.mi_ty.to_numpy(), rule)})
    return pd.DataFrame(rows)


def summarise(phases: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per dimension: how many layers show each phase, the median peak step, and a plain-language line."""
    rows, lines = [], []
    for dim, g in phases.groupby("dimension", sort=True):
        n = len(g)
        comp, fit, rising = int(g.compression.sum()), int(g.fitting.sum()), int(g.mi_ty_rising.sum())
        peak = int(np.median(g[g.compression].peak_step)) if comp else None
        rows.append({"dimension": dim, "layers": n, "fitting": fit, "compression": comp,
                     "median_peak_step": peak, "mi_ty_rising": rising})
        if comp:
            text = (f"{dim}: I(T;X) rises then falls (fitting, then compression) in {comp} of {n} layers, "
                    f"peaking at step {peak} (median)")
        elif fit:
            text = f"{dim}: I(T;X) rises in {fit} of {n} layers but no sustained fall follows (no compression phase)"
        else:
            text = f"{dim}: no fitting or compression phase in I(T;X) over these checkpoints"
        lines.append(f"{text}; I(T;Y) keeps rising in {rising} of {n} layers.")
    return pd.DataFrame(rows), lines


@dataclass(frozen=True)
class PhasesConfig:
    """A ``phases`` job: the rule applied to one trace folder's MI rows."""

    run: str  # a trace folder with MI rows over several checkpoints
    rule: PhaseRule = field(default_factory=PhaseRule)


@dataclass
class PhasesResult:
    """What ``run_phases`` found and wrote."""

    phases: pd.DataFrame  # one row per dimension × layer
    summary: pd.DataFrame  # one row per dimension
    lines: list[str]  # one plain-language line per dimension
    outputs: list[Path]


def run_phases(config: PhasesConfig) -> PhasesResult:
    """Detect the phases in a run's MI rows; write ``mi/phases.csv`` and ``mi/summary.csv``.

    The figures of the same rows are drawn by ``trusttrace.report`` (``trusttrace phases`` writes them too).
    """
    layout = TraceLayout(Path(config.run))
    phases = detect_phases(layout.read_results(), config.rule)
    summary, lines = summarise(phases)
    with hold(layout.mi, "phases"):  # one writer at a time
        write_with(layout.phases_csv, lambda tmp: phases.to_csv(tmp, index=False))
        write_with(layout.phases_summary_csv, lambda tmp: summary.to_csv(tmp, index=False))
    return PhasesResult(phases, summary, lines, [layout.phases_csv, layout.phases_summary_csv])
