"""The phases of I(T;X) over training, read from a series that starts at random initialisation.

A randomly initialised network's layers are near-copies of its input, so I(T;X) is at its largest at step 0
and falls first: that fall is not the compression the paper describes. The rule, per dimension, layer and
estimator, on the checkpoints in step order (``PhaseRule`` holds the numbers):

1. Smooth I(T;X) and its interval bounds with a centred moving average over ``smooth`` checkpoints (fewer
   at the ends).
2. *Fitting*: the largest rise along the curve, from a trough to a later peak (the trough is the lowest point
   before the peak). It counts when the peak is at least ``min_rise`` above the trough (relative).
3. *Initial decay*: a fall from the first checkpoint to the trough (to the curve's minimum when there is no
   fitting), at least ``min_drop`` of the first value. It is its own phase, never compression.
4. *Compression*: only after a fitting phase. At least ``min_after`` checkpoints come after the peak, the last
   value is at least ``min_drop`` below the peak, and the median after the peak is at least ``min_drop / 2``
   below it: a sustained fall, not one low point at the end.
5. A phase is **resolved** only when its change clears the intervals (``trusttrace.analysis.mi_stats``' half-sample
   95 % intervals): for a rise, the peak's lower bound is above the trough's upper bound; for a fall, the
   lower bound where it starts is above the upper bound where it ends. A change of the size above that does
   not clear them is listed in ``unresolved``: "not resolved at this sample size". Without interval rows
   (``--mi-bootstrap 0``, or a table from before them) the sizes alone decide and ``intervals`` is False.
6. ``pattern`` joins the resolved phases in order: ``decay``, ``fit``, ``compress`` (e.g. ``decay-fit``,
   ``fit-compress``, ``decay-fit-compress``), or ``flat`` when none is.
7. The same rule runs on each check estimator's rows (``nhsic_*``, ``cka_*``); ``robust`` says the pattern is
   the same under every estimator present. Summaries count only robust patterns as findings.
8. I(T;Y) *keeps rising* when its Spearman correlation with the step is at least ``rise_rho``, that
   correlation's one-sided p-value is below ``alpha``, and its last smoothed value is above its first;
   ``mi_ty_p_last`` is its permutation p-value at the last checkpoint.

Beside each layer, ``mi_tx_random_init`` is the untrained network's I(T;X) at that layer (the random-init
control), so "above an untrained network" can be read off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..core.errors import RunFolderError
from ..core.files import write_with
from ..core.runlock import hold
from ..runs.layout import TraceLayout
from ..runs.tables import text

PHASES = ("decay", "fit", "compress")
ESTIMATOR_OF = {"mi": "the chosen estimator", "nhsic": "nHSIC (median bandwidth)", "cka": "linear CKA"}
NOT_RESOLVED = "not resolved at this sample size"
SHORT_NAME = {"nhsic": "nHSIC", "cka": "CKA"}


@dataclass(frozen=True)
class PhaseRule:
    """Thresholds of the phase rule (see the module docstring)."""

    smooth: int = 3  # checkpoints in the centred moving average
    min_rise: float = 0.05  # fitting: peak ≥ (1 + min_rise) × trough
    min_drop: float = 0.10  # decay: trough ≤ (1 − min_drop)·first; compression: last ≤ (1 − min_drop)·peak, ...
    min_after: int = 2  # checkpoints after the peak needed to call a compression phase
    rise_rho: float = 0.5  # I(T;Y) rising: Spearman ρ(step, I(T;Y)) at least this
    alpha: float = 0.05  # I(T;Y) above its null: permutation p below this


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average; the ends average the points available."""
    series = pd.Series(values, dtype=float)
    return series.rolling(window, center=True, min_periods=1).mean().to_numpy()


@dataclass(frozen=True)
class Curve:
    """One estimator's I(T;X) over the checkpoints (in step order), smoothed, with its interval bounds."""

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    intervals: bool

    @classmethod
    def of(cls, value: np.ndarray, low: np.ndarray | None, high: np.ndarray | None, window: int) -> Curve:
        s = smooth(value, window)
        if low is None or high is None or np.isnan(low).any() or np.isnan(high).any():
            return cls(s, s, s, False)
        return cls(s, smooth(low, window), smooth(high, window), True)

    def rises(self, a: int, b: int) -> bool:
        """The change a → b (b later, higher) clears the intervals."""
        return not self.intervals or self.low[b] > self.high[a]

    def falls(self, a: int, b: int) -> bool:
        """The change a → b (b later, lower) clears the intervals."""
        return not self.intervals or self.low[a] > self.high[b]


def largest_rise(values: np.ndarray) -> tuple[int, int]:
    """(trough, peak) with trough < peak maximising values[peak] − values[trough]; (0, 0) for one point."""
    best, pair, low = -np.inf, (0, 0), 0
    for j in range(1, len(values)):
        if values[j - 1] < values[low]:
            low = j - 1
        if values[j] - values[low] > best:
            best, pair = values[j] - values[low], (low, j)
    return pair


def curve_phases(curve: Curve, rule: PhaseRule) -> dict[str, Any]:
    """The rule on one smoothed curve: pattern, unresolved phases, and the trough and peak indices."""
    s = curve.value
    resolved: list[str] = []
    unresolved: list[str] = []

    def judge(name: str, size: bool, clears: bool) -> bool:
        if size:
            (resolved if clears else unresolved).append(name)
        return size and clears

    trough, peak = largest_rise(s)
    fit_size = peak > trough and s[peak] >= (1 + rule.min_rise) * s[trough] and s[peak] > s[trough]
    if not fit_size:
        trough, peak = int(np.argmin(s)), -1
    decay = trough > 0 and s[trough] <= (1 - rule.min_drop) * s[0]
    judge("decay", decay, curve.falls(0, trough))
    fit = judge("fit", fit_size, fit_size and curve.rises(trough, peak))
    after = s[peak + 1:] if fit else np.array([])
    compress = (len(after) >= rule.min_after and after[-1] <= (1 - rule.min_drop) * s[peak]
                and float(np.median(after)) <= (1 - rule.min_drop / 2) * s[peak])
    judge("compress", compress, compress and curve.falls(peak, len(s) - 1))
    return {"pattern": "-".join(resolved) or "flat", "unresolved": "-".join(unresolved), "trough": trough,
            "peak": peak if fit_size else -1}


def _ty_columns(steps: np.ndarray, ty: np.ndarray, p: np.ndarray | None, rule: PhaseRule) -> dict[str, Any]:
    s_ty = smooth(ty, rule.smooth)
    test = spearmanr(steps, ty, alternative="greater") if np.ptp(ty) > 0 else None
    rho, rho_p = (float(test.statistic), float(test.pvalue)) if test is not None else (0.0, 1.0)
    p_last = float(p[-1]) if p is not None and not np.isnan(p[-1]) else None  # None: no null was drawn
    return {"mi_ty_rho": float(rho),
            "mi_ty_rising": bool(rho >= rule.rise_rho and rho_p < rule.alpha and s_ty[-1] > s_ty[0]),
            "mi_ty_p_last": p_last, "mi_ty_above_null_last": p_last is not None and p_last < rule.alpha}


def layer_phases(steps: np.ndarray, tx: np.ndarray, ty: np.ndarray, rule: PhaseRule = PhaseRule(),
                 bounds: dict[str, np.ndarray] | None = None,
                 checks: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """The rule applied to one layer's curves.

    ``bounds`` holds the chosen estimator's ``tx_low``/``tx_high`` (and ``ty_p``) per checkpoint; ``checks``
    the same per check estimator prefix, with its ``tx`` (e.g. ``{"nhsic": {"tx": …, "tx_low": …}}``).
    """
    if len(steps) < 3:
        raise RunFolderError(f"Phase detection needs at least 3 checkpoints; got {len(steps)}. Trace more "
                             "checkpoints (e.g. --select log:8).")
    order = np.argsort(steps, kind="stable")
    steps = np.asarray(steps)[order]
    bounds = {k: np.asarray(v, dtype=float)[order] for k, v in (bounds or {}).items()}
    curve = Curve.of(np.asarray(tx, dtype=float)[order], bounds.get("tx_low"), bounds.get("tx_high"), rule.smooth)
    got = curve_phases(curve, rule)
    s, t, p = curve.value, got["trough"], got["peak"]
    out = {"pattern": got["pattern"], "unresolved": got["unresolved"], "intervals": curve.intervals,
           "first_step": int(steps[0]), "trough_step": int(steps[t]), "peak_step": int(steps[p]) if p >= 0 else None,
           "first_mi_tx": float(s[0]), "trough_mi_tx": float(s[t]),
           "peak_mi_tx": float(s[p]) if p >= 0 else float("nan"), "final_mi_tx": float(s[-1]),
           "drop_after_peak": float(1 - s[-1] / s[p]) if p >= 0 and s[p] > 0 else 0.0,
           "decay": "decay" in got["pattern"], "fitting": "fit" in got["pattern"].split("-"),
           "compression": "compress" in got["pattern"]}
    patterns = [got["pattern"]]
    for prefix, cols in (checks or {}).items():
        c = {k: np.asarray(v, dtype=float)[order] for k, v in cols.items()}
        other = curve_phases(Curve.of(c["tx"], c.get("tx_low"), c.get("tx_high"), rule.smooth), rule)
        out[f"pattern_{prefix}"] = other["pattern"]
        patterns.append(other["pattern"])
    out["robust"] = bool(len(set(patterns)) == 1) if len(patterns) > 1 else None
    return out | _ty_columns(steps, np.asarray(ty, dtype=float)[order], bounds.get("ty_p"), rule)


def _column(g: pd.DataFrame, name: str) -> np.ndarray | None:
    return g[name].to_numpy(dtype=float) if name in g and not g[name].isna().all() else None


def detect_phases(results: pd.DataFrame, rule: PhaseRule = PhaseRule()) -> pd.DataFrame:
    """One row per dimension × layer from a results table holding ``mi_tx`` and ``mi_ty`` rows with steps
    (and, where the trace made them, their intervals, null, check estimators and random-init level)."""
    mi = results[results.metric.str.match(r"^(mi|nhsic|cka)_t[xy]")]
    if not {"mi_tx", "mi_ty"} <= set(mi.metric):
        raise RunFolderError("The results table has no mi_tx/mi_ty rows. Run `trusttrace trace` with the mi "
                             "analysis (on by default), or `trusttrace probe RUN --analyses mi`.")
    if mi.step.isna().any():
        raise RunFolderError("Some MI rows have no training step (a single checkpoint or unnumbered revisions); "
                             "phases need a checkpoint series with steps.")
    wide = mi.pivot_table(index=["dimension", "layer", "step"], columns="metric", values="value").reset_index()
    prefixes = [p for p in ("nhsic", "cka") if f"{p}_tx" in wide]
    rows = []
    for (dim, layer), g in wide.groupby(["dimension", "layer"], sort=True):
        bounds = {k: v for k, v in (("tx_low", _column(g, "mi_tx_ci_low")), ("tx_high", _column(g, "mi_tx_ci_high")),
                                    ("ty_p", _column(g, "mi_ty_p"))) if v is not None}
        checks = {p: {k: v for k, v in (("tx", _column(g, f"{p}_tx")), ("tx_low", _column(g, f"{p}_tx_ci_low")),
                                        ("tx_high", _column(g, f"{p}_tx_ci_high"))) if v is not None}
                  for p in prefixes}
        row = {"dimension": dim, "layer": int(layer),
               **layer_phases(g.step.to_numpy(), g.mi_tx.to_numpy(), g.mi_ty.to_numpy(), rule, bounds, checks)}
        untrained = _column(g, "mi_tx_random_init")
        row["mi_tx_random_init"] = float(np.nanmean(untrained)) if untrained is not None else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _median_step(steps: pd.Series) -> int | None:
    steps = steps.dropna()
    return int(np.median(steps)) if len(steps) else None


def pattern_words(pattern: str, first: int, trough: int | None, peak: int | None) -> str:
    """A pattern in words, e.g. "I(T;X) falls from the untrained network (step 0) to a trough at step 105,
    then rises (fitting) to step 500; no compression within this run"."""
    parts = pattern.split("-")
    if pattern == "flat":
        return "I(T;X) shows no resolved phase"
    start = "the untrained network (step 0)" if first == 0 else f"the first checkpoint (step {first})"
    words = []
    if "decay" in parts:
        words.append(f"falls from {start} to a trough at step {trough}")
    if "fit" in parts:
        words.append(f"then rises (fitting) to step {peak}" if words else f"rises (fitting) from step {trough} to "
                     f"step {peak}")
    if "compress" in parts:
        words.append("then falls again (compression)")
    text = "I(T;X) " + ", ".join(words)
    if "fit" not in parts:
        return text + "; no fitting within this run"
    return text if "compress" in parts else text + "; no compression within this run"


def summarise(phases: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per dimension: the layers' patterns (robust ones counted as findings), the typical trough and peak
    steps, and a plain-language line."""
    rows, lines = [], []
    for dim, g in phases.groupby("dimension", sort=True):
        n = len(g)
        robust = g if g.robust.isna().all() else g[g.robust.fillna(False).astype(bool)]
        counts = robust.pattern.value_counts()
        top = str(counts.index[0]) if len(counts) else "flat"
        chosen = robust[robust.pattern == top]
        trough, peak = _median_step(chosen.trough_step), _median_step(chosen.peak_step)
        fragile = g.drop(robust.index)
        unresolved = int((text(g.unresolved) != "").sum())
        rising = int(g.mi_ty_rising.sum())
        above_null = int(g.mi_ty_above_null_last.sum()) if "mi_ty_above_null_last" in g else 0
        rows.append({"dimension": dim, "layers": n, "pattern": top if len(counts) else "none robust",
                     "layers_with_pattern": len(chosen), "robust_layers": len(robust),
                     "trough_step": trough, "peak_step": peak, "fitting": int(robust.fitting.sum()),
                     "compression": int(robust.compression.sum()), "decay": int(robust.decay.sum()),
                     "estimator_dependent": len(fragile), "unresolved_layers": unresolved,
                     "mi_ty_rising": rising, "mi_ty_above_null_last": above_null})
        lines.append(describe(dim, g, top, len(counts) > 0, chosen, fragile, unresolved)
                     + f"; I(T;Y) above its permutation null at the last checkpoint in {above_null} of {n} layers.")
    return pd.DataFrame(rows), lines


def describe(dim: str, g: pd.DataFrame, pattern: str, any_robust: bool, chosen: pd.DataFrame,
             fragile: pd.DataFrame, unresolved: int) -> str:
    """One dimension's MI verdict in words (``g``: its layers' rows)."""
    n, single_estimator = len(g), g.robust.isna().all()
    if not any_robust:  # what the chosen estimator reads, then why it is not a finding
        top = str(g.pattern.value_counts().index[0])
        most = g[g.pattern == top]
        words = pattern_words(top, int(most.first_step.min()), _median_step(most.trough_step),
                              _median_step(most.peak_step))
        text = (f"{dim}: under the chosen estimator {words} in {len(most)} of {n} layers; not a finding: no "
                f"pattern holds under every estimator in any layer ({_listing(fragile)})")
    else:
        trough, peak = _median_step(chosen.trough_step), _median_step(chosen.peak_step)
        words = pattern_words(pattern, int(chosen.first_step.min()), trough, peak)
        where = "" if single_estimator else ", robust under every estimator"
        text = f"{dim}: {words} in {len(chosen)} of {n} layers{where}"
        if pattern == "flat" and unresolved:
            text += f" ({unresolved} layer(s) change by more than the thresholds but {NOT_RESOLVED})"
        if len(fragile):
            text += f"; estimator-dependent in {len(fragile)} layer(s): {_listing(fragile)}"
    return text


def _listing(g: pd.DataFrame) -> str:
    """Each layer's pattern under every estimator, e.g. "chosen/nHSIC/CKA: L1 decay-fit/fit-compress/fit"."""
    cols = [c for c in g.columns if c.startswith("pattern_")]
    names = "/".join(["chosen", *(SHORT_NAME.get(c.removeprefix("pattern_"), c) for c in cols)])
    return f"{names}: " + ", ".join(f"L{int(r.layer)} " + "/".join([str(r.pattern), *(str(r[c]) for c in cols)])
                                    for _, r in g.iterrows()) if len(g) else "none"


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
