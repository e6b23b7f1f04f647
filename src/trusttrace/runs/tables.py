"""Reading the tables every stage writes: column orders, headline metrics, pivots, best α, summaries.

Pure functions of pandas frames; this module imports no stage, so the report, the demo and the CLI can read
a run's tables without loading a model, torch or a job.

"Layer l" is the output of decoder block l (0-based).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# A trace's results table: one row per model × revision × dimension × layer × metric.
# ``test_dataset`` names the dataset a transfer row was scored on (empty for every other row).
RESULT_COLUMNS = ["model", "revision", "step", "dimension", "layer", "metric", "value", "n_train", "n_test",
                  "seed", "protocol", "dtype", "commit", "test_dataset"]
# A steering sweep's table: one row per source × layer × α × metric.
STEERING_COLUMNS = ["source_revision", "layer", "alpha", "dimension", "metric", "value", "n", "spec"]
# The metric a steering sweep is judged by, per dimension (the best α is chosen on it).
HEADLINE = {"reliability": "mc2", "toxicity": "toxic_ratio", "privacy": "accuracy", "fairness": "accuracy",
            "robustness": "accuracy"}
# ... and the 0/1 metric whose per-item outcomes test it against the controls (mc2 is not a 0/1 outcome).
ITEM_HEADLINE = {**HEADLINE, "reliability": "mc1"}
LOWER_IS_BETTER = {"toxic_ratio", "perplexity"}
# The sweep's controls, as ``source_revision``: the unsteered target, its prompting baseline, the random
# directions (``random`` pools the draws ``random-0``, ``random-1``, …). ``self`` is the target's own vector.
UNSTEERED, PROMPT, RANDOM = "unsteered", "prompt", "random"
SIGNIFICANT = 0.05  # a p-value below this counts as a difference in every steering table and summary


def text(column: pd.Series) -> pd.Series:
    """``column`` as text, a missing value as "". A column that is empty in every row of a CSV (``commit`` of a
    local run, ``test_dataset`` without transfer) reads back as float NaN, which ``fillna("")`` would not fill
    in pandas 4."""
    return column.astype(object).where(column.notna(), "").astype(str)


def improves(change: pd.Series, metric: str) -> pd.Series:
    """Whether each change of ``metric`` goes the good way (down for ``LOWER_IS_BETTER``, else up)."""
    return (change < 0) if metric in LOWER_IS_BETTER else (change > 0)


def random_draw(k: int) -> str:
    """The ``source_revision`` of the sweep's k-th random direction."""
    return f"{RANDOM}-{k}"


def is_control(source: str) -> bool:
    """Whether a ``source_revision`` is a control (unsteered, prompt, random or one of its draws), not a vector."""
    return source in (UNSTEERED, PROMPT, RANDOM) or (source.startswith(f"{RANDOM}-") and source[7:].isdigit())
PAPER_LAYERS = (0, 6, 12, 18, 24, 30)  # the paper's selection for 32 layers


def order_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Results rows in training order (step, then revision, dimension, metric, layer), typed for writing."""
    frame = frame.copy()
    frame["step"] = pd.to_numeric(frame["step"]).astype("Int64")
    frame["commit"] = text(frame["commit"])
    frame["test_dataset"] = text(frame.get("test_dataset", pd.Series("", index=frame.index)))
    return frame.sort_values(["step", "revision", "dimension", "metric", "layer"], na_position="last",
                             kind="stable").reset_index(drop=True)


def select_layers(n_layers: int) -> list[int]:
    """The paper's layers {0, 6, 12, 18, 24, 30} of 32, placed at the same relative depths of ``n_layers``."""
    scale = (n_layers - 1) / 31  # 1 for 32 layers: the paper's own indices
    return sorted({min(n_layers - 1, round(layer * scale)) for layer in PAPER_LAYERS})


MI_FIGURE_METRICS = ("mi_tx", "mi_ty", "mi_tx_ci_low", "mi_tx_ci_high", "mi_ty_ci_low", "mi_ty_ci_high",
                     "mi_ty_null_q95")


def mi_wide(results: pd.DataFrame, dimension: str) -> pd.DataFrame:
    """A dimension's MI rows (the estimates, their intervals and I(T;Y)'s null quantile, where present) as one
    row per (layer, step), sorted (rows without a step drop)."""
    mi = results[(results.dimension == dimension) & results.metric.isin(MI_FIGURE_METRICS)]
    wide = mi.pivot_table(index=["layer", "step"], columns="metric", values="value").reset_index()
    return wide.sort_values(["layer", "step"])


def trace_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per revision × dimension: the best layer's accuracy (with its 95 % interval where present), layer 0,
    the majority baseline, the controls at the best layer, and the best selectivity over layers."""
    transfer = text(results["test_dataset"]) != "" if "test_dataset" in results else False
    wide = results[~transfer].pivot_table(index=["revision", "dimension", "layer"], columns="metric", values="value")
    steps = results.drop_duplicates("revision").set_index("revision").step
    rows = []
    for (rev, dim), g in wide.groupby(level=["revision", "dimension"], sort=False):
        if "accuracy" not in g or g.accuracy.isna().all():
            continue
        g = g.droplevel(["revision", "dimension"])
        best = g.accuracy.idxmax()
        row = {"revision": rev, "step": steps.get(rev), "dimension": dim, "best_layer": int(best),
               "best_accuracy": round(float(g.accuracy[best]), 4),
               "layer0_accuracy": round(float(g.accuracy[0]), 4) if 0 in g.index else None,
               "majority_baseline": round(float(g.majority_baseline[best]), 4) if "majority_baseline" in g else None}
        if "accuracy_ci_low" in g:
            row["ci"] = f"{g.accuracy_ci_low[best]:.3f}–{g.accuracy_ci_high[best]:.3f}"
        for control in ("control_lexical", "control_random_init"):
            if control in g:
                row[control] = round(float(g[control][best]), 4)
        if "selectivity" in g:
            row["best_selectivity"] = round(float(g.selectivity.max()), 4)
            row["selectivity_layer"] = int(g.selectivity.idxmax())
        rows.append(row)
    return pd.DataFrame(rows)


def steering_wide(table: pd.DataFrame) -> pd.DataFrame:
    """``steering.csv`` rows as one row per (source_revision, layer, alpha), one column per metric."""
    return table.pivot_table(index=["source_revision", "layer", "alpha"], columns="metric",
                             values="value").reset_index()


def steered_dimension(table: pd.DataFrame) -> str:
    """The dimension a ``steering.csv`` is about (its rows are that dimension's metrics and ``general``)."""
    steered = table.dimension[table.dimension != "general"]
    return str(steered.iloc[0]) if len(steered) else ""


def best_alphas(table: pd.DataFrame, dimension: str, ppl_budget: float) -> pd.DataFrame:
    """Per source vector: the (layer, α) with the best headline metric among results within the perplexity
    budget that beat the random directions (their item metric differs from random's in the improving direction,
    Fisher's p < ``SIGNIFICANT``), when the sweep drew random directions. ``why`` says why a source has none.
    The unsteered target and the prompting baseline come first, for comparison; each pick carries its McNemar
    p against the unsteered target, since a vector can beat random directions that make the model worse
    without improving on it."""
    metric, test = HEADLINE[dimension], ITEM_HEADLINE[dimension]
    wide = steering_wide(table)
    base = wide[wide.source_revision == UNSTEERED].iloc[0]
    limit = ppl_budget * base["perplexity"]
    rows = [{"source_revision": UNSTEERED, "layer": -1, "alpha": 0.0, metric: base[metric],
             "perplexity": base["perplexity"], "within_budget": True, "beats_random": None, "why": ""}]
    prompt = wide[wide.source_revision == PROMPT]
    if len(prompt):
        rows.append({"source_revision": PROMPT, "layer": -1, "alpha": 0.0, metric: prompt[metric].iloc[0],
                     "perplexity": prompt["perplexity"].iloc[0], "within_budget": True, "beats_random": None,
                     "why": "the prompting baseline (an instruction, no vector)",
                     f"{test}_p_mcnemar": float(prompt.get(f"{test}_p_mcnemar", pd.Series([np.nan])).iloc[0])})
    controlled = f"{test}_p_vs_random" in wide.columns
    for source, g in wide[~wide.source_revision.map(is_control)].groupby("source_revision", sort=False):
        ok = g[g.perplexity <= limit]
        within = bool(len(ok))
        why = "" if within else f"no (layer, α) keeps perplexity within {ppl_budget:g}× unsteered"
        tested = ok[f"{test}_p_vs_random"].notna() if controlled else pd.Series(False, index=ok.index)
        if len(ok) and tested.any():  # proxy-tuned rows have no random control: they are kept as they are
            ok = ok[~tested | beyond_random(ok, test)]
            if ok.empty:
                why = f"no (layer, α) within the budget beats the random directions on {test} (p < {SIGNIFICANT})"
        if ok.empty:
            rows.append({"source_revision": source, "layer": None, "alpha": None, metric: None, "perplexity": None,
                         "within_budget": within, "beats_random": False if tested.any() else None,
                         "why": why})
            continue
        pick = ok.loc[ok[metric].idxmin() if metric in LOWER_IS_BETTER else ok[metric].idxmax()]
        rows.append({"source_revision": source, "layer": int(pick.layer), "alpha": float(pick.alpha),
                     metric: float(pick[metric]), "perplexity": float(pick.perplexity), "within_budget": True,
                     "beats_random": True if bool(tested.get(pick.name, False)) else None, "why": "",
                     # beating random is not improving: the unsteered target on the same items, for the reader
                     f"{test}_p_mcnemar": float(pick.get(f"{test}_p_mcnemar", float("nan")))})
    return pd.DataFrame(rows)


def emergence(results: pd.DataFrame) -> pd.DataFrame:
    """Per dimension × layer: the *emergence step*, the first checkpoint from which selectivity's 95 % interval
    stays above zero at every later checkpoint (NA: never within this run, or no interval rows)."""
    rows = results[results.metric == "selectivity_ci_low"]
    if "test_dataset" in rows:
        rows = rows[text(rows.test_dataset) == ""]
    out = []
    for (dim, layer), g in rows.dropna(subset=["step"]).groupby(["dimension", "layer"], sort=True):
        g = g.sort_values("step")
        above = (g.value > 0).to_numpy()
        tail = above[::-1].cumprod()[::-1].astype(bool)  # True from the last False on
        step = g.step.to_numpy()[tail.argmax()] if tail.any() else None
        out.append({"dimension": dim, "layer": int(layer), "emergence_step": None if step is None else int(step)})
    return pd.DataFrame(out, columns=["dimension", "layer", "emergence_step"])


def first_emergence(results: pd.DataFrame) -> dict[str, tuple[int, int] | None]:
    """Per dimension, the earliest emergence step over layers and its layer (None: never within this run)."""
    table = emergence(results)
    found: dict[str, tuple[int, int] | None] = {}
    for dim, g in table.groupby("dimension", sort=True):
        g = g.dropna(subset=["emergence_step"])
        found[str(dim)] = None if g.empty else (int(g.emergence_step.min()),
                                                int(g.loc[g.emergence_step.idxmin(), "layer"]))
    return found


NEVER = "never within this run"


def emergence_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per dimension, when the model comes to encode it: the earliest emergence step over layers, its layer,
    how many layers have emerged by the last checkpoint, and the steps traced. Empty for a run of fewer than
    two checkpoints or one without selectivity intervals (``--controls none``)."""
    table = emergence(results)
    steps = sorted(results.step.dropna().unique().tolist()) if "step" in results else []
    if table.empty or len(steps) < 2:
        return pd.DataFrame(columns=["dimension", "emerges", "layer", "layers_emerged", "layers", "steps"])
    rows = []
    for dim, g in table.groupby("dimension", sort=True):
        found = g.dropna(subset=["emergence_step"])
        first = None if found.empty else found.loc[found.emergence_step.idxmin()]
        rows.append({"dimension": dim,
                     "emerges": NEVER if first is None else f"step {int(first.emergence_step)}",
                     "layer": None if first is None else int(first.layer),
                     "layers_emerged": len(found), "layers": len(g),
                     "steps": f"{int(steps[0])}–{int(steps[-1])} ({len(steps)} checkpoints)"})
    return pd.DataFrame(rows)


def steering_verdict(table: pd.DataFrame, dimension: str) -> str:
    """One line saying what, in a sweep's table, clears its controls: the vectors that beat the random
    directions, those that do worse than them, the prompting baseline against unsteered, and what the table can
    detect."""
    metric = ITEM_HEADLINE[dimension]
    wide = steering_wide(table)
    base = wide[wide.source_revision == UNSTEERED]
    if base.empty or metric not in wide.columns:
        return f"{dimension}: no unsteered {metric} to compare with."
    unsteered = table[table.source_revision == UNSTEERED]
    notes = unsteered[unsteered.metric == f"{metric}_detectable"].get("spec", pd.Series(dtype=str)).dropna()
    if len(notes) and str(notes.iloc[0]).startswith(("at chance", "at its bound")):
        return f"{dimension}: the unsteered target is {notes.iloc[0]}; this table cannot show a steering effect."
    parts = []
    detectable = float(base[f"{metric}_detectable"].iloc[0]) if f"{metric}_detectable" in base else float("nan")
    if not np.isnan(detectable):
        n = unsteered[unsteered.metric == metric].get("n", pd.Series(dtype=float))
        parts.append(f"the smallest detectable change of {metric} is {detectable:.3f}"
                     + (f" (n {int(n.iloc[0])})" if len(n) else ""))
    tested = _tested(wide, metric)
    parts.append(_against_random(wide, tested, metric))
    worse = _worse_than_random(tested, metric)
    if worse:
        parts.append(worse)
    prompt = wide[wide.source_revision == PROMPT]
    if len(prompt) and f"{metric}_p_mcnemar" in prompt:
        p = float(prompt[f"{metric}_p_mcnemar"].iloc[0])
        change = float(prompt[metric].iloc[0] - base[metric].iloc[0])
        parts.append(f"the prompting baseline moves {metric} by {change:+.3f} (McNemar p {p:.2g}"
                     f"{'' if p < SIGNIFICANT else ', not a difference'})")
    return f"{dimension}: " + "; ".join(parts) + "."


def beyond_random(rows: pd.DataFrame, metric: str, better: bool = True) -> pd.Series:
    """Whether each steering row moves ``metric`` beyond what the random directions do (Fisher's p <
    ``SIGNIFICANT``): the good way (``better``, "beats random") or the bad way. A row with no random control
    (no p) is neither."""
    effect = rows[f"{metric}_effect_vs_random"]
    return improves(effect if better else -effect, metric) & (rows[f"{metric}_p_vs_random"] < SIGNIFICANT)


def _tested(wide: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The vectors' rows (no control) that were compared with random directions on ``metric``."""
    p = f"{metric}_p_vs_random"
    return wide[~wide.source_revision.map(is_control) & wide[p].notna()] if p in wide.columns else wide.iloc[0:0]


def _worse_than_random(tested: pd.DataFrame, metric: str) -> str | None:
    """The ``tested`` rows that move ``metric`` the wrong way by more than the random directions do (Fisher's
    p < ``SIGNIFICANT``), the largest named; None when there are none. A vector that makes the model worse
    beyond random has found a direction the model follows, with the sign against the dimension at that α:
    "no vector beats random" alone would read as "the vectors do nothing"."""
    effect, p = f"{metric}_effect_vs_random", f"{metric}_p_vs_random"
    if tested.empty:
        return None
    worse = tested[beyond_random(tested, metric, better=False)]
    if worse.empty:
        return None
    top = worse.loc[worse[effect].abs().idxmax()]
    return (f"{len(worse)} of {len(tested)} make {metric} worse than the random directions do (largest: "
            f"{top.source_revision} layer {int(top.layer)} α {top.alpha:+g}, {top[effect]:+.3f} vs random, "
            f"p {top[p]:.2g})")


def _against_random(wide: pd.DataFrame, tested: pd.DataFrame, metric: str) -> str:
    """Which of the ``tested`` rows beat the random directions on ``metric`` (Fisher's p < ``SIGNIFICANT``)."""
    effect, p = f"{metric}_effect_vs_random", f"{metric}_p_vs_random"
    if tested.empty:
        return "no vector was compared with random directions (--random-vectors 0)"
    winners = tested[beyond_random(tested, metric)]
    if winners.empty:
        return f"no vector beats the random directions on {metric} (of {len(tested)} source × layer × α)"
    base = float(wide.loc[wide.source_revision == UNSTEERED, metric].iloc[0])
    change = winners[metric] - base
    mcnemar = winners.get(f"{metric}_p_mcnemar", pd.Series(np.nan, index=winners.index))
    also = improves(change, metric) & (mcnemar < SIGNIFICANT)  # better than random *and* than the unsteered target
    named = "; ".join(f"{r.source_revision} layer {int(r.layer)} α {r.alpha:+g} ({r[effect]:+.3f} vs random, p "
                      f"{r[p]:.2g}; {change[i]:+.3f} vs unsteered, McNemar p {mcnemar[i]:.2g})"
                      for i, r in winners.iterrows())
    return (f"{len(winners)} of {len(tested)} beat the random directions, {int(also.sum())} of them also improve on "
            f"the unsteered target: {named}")
