"""Reading the tables every stage writes: column orders, headline metrics, pivots, best α, summaries.

Pure functions of pandas frames; this module imports no stage, so the report, the demo and the CLI can read
a run's tables without loading a model, torch or a job.

"Layer l" is the output of decoder block l (0-based).
"""

from __future__ import annotations

import pandas as pd

# A trace's results table: one row per model × revision × dimension × layer × metric.
RESULT_COLUMNS = ["model", "revision", "step", "dimension", "layer", "metric", "value", "n_train", "n_test",
                  "seed", "protocol", "dtype", "commit"]
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
    return frame.sort_values(["step", "revision", "dimension", "metric", "layer"], na_position="last",
                             kind="stable").reset_index(drop=True)


def select_layers(n_layers: int) -> list[int]:
    """The paper's layers {0, 6, 12, 18, 24, 30} of 32, placed at the same relative depths of ``n_layers``."""
    scale = (n_layers - 1) / 31  # 1 for 32 layers: the paper's own indices
    return sorted({min(n_layers - 1, round(layer * scale)) for layer in PAPER_LAYERS})


def mi_wide(results: pd.DataFrame, dimension: str) -> pd.DataFrame:
    """A dimension's ``mi_tx``/``mi_ty`` rows as one row per (layer, step), sorted (rows without a step drop)."""
    mi = results[(results.dimension == dimension) & results.metric.isin(["mi_tx", "mi_ty"])]
    wide = mi.pivot_table(index=["layer", "step"], columns="metric", values="value").reset_index()
    return wide.sort_values(["layer", "step"])


def trace_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Best layer and its accuracy per revision × dimension, with layer 0 and the majority baseline."""
    acc = results[results.metric == "accuracy"]
    base = results[results.metric == "majority_baseline"].groupby(["revision", "dimension"]).value.first()
    rows = []
    for (rev, dim), g in acc.groupby(["revision", "dimension"], sort=False):
        best = g.loc[g.value.idxmax()]
        layer0 = g[g.layer == 0].value
        rows.append({"revision": rev, "step": best.step, "dimension": dim, "best_layer": int(best.layer),
                     "best_accuracy": round(float(best.value), 4),
                     "layer0_accuracy": round(float(layer0.iloc[0]), 4) if len(layer0) else None,
                     "majority_baseline": round(float(base[(rev, dim)]), 4)})
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
