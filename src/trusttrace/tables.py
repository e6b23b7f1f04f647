"""Reading the tables every stage writes: column orders, headline metrics, pivots, best α, summaries.

Pure functions of pandas frames; this module imports no stage, so the report, the demo and the CLI can read
a run's tables without loading a model, torch or a job.

"Layer l" is the output of decoder block l (0-based).
"""

from __future__ import annotations

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
LOWER_IS_BETTER = {"toxic_ratio", "perplexity"}
PAPER_LAYERS = (0, 6, 12, 18, 24, 30)  # the paper's selection for 32 layers


def order_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Results rows in training order (step, then revision, dimension, metric, layer), typed for writing."""
    frame = frame.copy()
    frame["step"] = pd.to_numeric(frame["step"]).astype("Int64")
    frame["commit"] = frame["commit"].fillna("").astype(str)
    frame["test_dataset"] = frame.get("test_dataset", pd.Series("", index=frame.index)).fillna("").astype(str)
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
    transfer = results["test_dataset"].fillna("").astype(str) != "" if "test_dataset" in results else False
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
    """Per source: the (layer, α) with the best headline metric among results within the perplexity budget."""
    metric = HEADLINE[dimension]
    wide = steering_wide(table)
    base = wide[wide.source_revision == "unsteered"].iloc[0]
    limit = ppl_budget * base["perplexity"]
    rows = [{"source_revision": "unsteered", "layer": -1, "alpha": 0.0, metric: base[metric],
             "perplexity": base["perplexity"], "within_budget": True}]
    for source, g in wide[wide.source_revision != "unsteered"].groupby("source_revision", sort=False):
        ok = g[g.perplexity <= limit]
        if ok.empty:
            rows.append({"source_revision": source, "layer": None, "alpha": None, metric: None, "perplexity": None,
                         "within_budget": False})
            continue
        pick = ok.loc[ok[metric].idxmin() if metric in LOWER_IS_BETTER else ok[metric].idxmax()]
        rows.append({"source_revision": source, "layer": int(pick.layer), "alpha": float(pick.alpha),
                     metric: float(pick[metric]), "perplexity": float(pick.perplexity), "within_budget": True})
    return pd.DataFrame(rows)


def emergence(results: pd.DataFrame) -> pd.DataFrame:
    """Per dimension × layer: the *emergence step*, the first checkpoint from which selectivity's 95 % interval
    stays above zero at every later checkpoint (NA: never within this run, or no interval rows)."""
    rows = results[results.metric == "selectivity_ci_low"]
    if "test_dataset" in rows:
        rows = rows[rows.test_dataset.fillna("").astype(str) == ""]
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
