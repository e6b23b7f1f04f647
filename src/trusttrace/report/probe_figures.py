"""Probe figures: accuracy by checkpoint and layer, accuracy over training, and a single checkpoint by layer.

"Layer l" is the output of decoder block l; accuracies are fractions of held-out statements answered right.
Data values reach plotly only through ``style.plot_text`` (and ``legend_name``), names only through
``figure_id``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..runs.tables import emergence, select_layers
from .load import Run, steps_of
from .style import (
    CIVIDIS,
    DASHES,
    Figure,
    colours,
    figure_id,
    legend_name,
    log_steps,
    plot_text,
    step_axis,
    styled,
    with_alpha,
)

HEATMAPS = {  # metric: (file-name part, colour scale, range or None for a diverging scale around 0)
    "accuracy": ("probe", CIVIDIS, (0.5, 1.0)),
    "selectivity": ("selectivity", "RdBu", None),
}
CONTROL_LINES = {"control_lexical": ("bag of words", "dash"), "control_random_init": ("random init", "dot"),
                 "control_shuffled": ("shuffled labels", "dashdot")}


def probe_heatmap(results: pd.DataFrame, dim: str, run: str, metric: str = "accuracy") -> Figure | None:
    """Checkpoint × layer heatmap of probe accuracy (the paper's Fig. 2 as a grid), or of its selectivity."""
    acc = results[(results.dimension == dim) & (results.metric == metric)]
    if acc.empty:
        return None
    order = acc.drop_duplicates("revision").sort_values(["step", "revision"], na_position="last").revision.tolist()
    if len(order) < 2:  # one checkpoint: the by-layer figure shows it better than a one-row grid
        return None
    grid = acc.pivot_table(index="revision", columns="layer", values="value").reindex(order)
    part, scale, bounds = HEATMAPS[metric]
    limits = {"zmin": bounds[0], "zmax": bounds[1]} if bounds else {"zmid": 0.0}
    fig = go.Figure(go.Heatmap(  # revisions are tick labels and hover text: plotly text
        z=grid.to_numpy(), x=[int(c) for c in grid.columns], y=[plot_text(r) for r in order], colorscale=scale,
        colorbar={"title": metric},
        hovertemplate="checkpoint %{y}<br>layer %{x}<br>" + metric + " %{z:.4f}<extra></extra>", **limits))
    n_layers = len(grid.columns)
    fig.update_xaxes(title="layer (block output)", tick0=0, dtick=max(1, math.ceil(n_layers / 16)))  # whole numbers
    fig.update_yaxes(title="checkpoint (training order)", type="category")
    _emergence_marks(fig, results, dim, order)
    if metric == "accuracy":
        base = results[(results.dimension == dim) & (results.metric == "majority_baseline")].value
        what = f"probe accuracy by checkpoint and layer ({run}; majority baseline {float(base.iloc[0]):.3f})" \
            if len(base) else f"probe accuracy by checkpoint and layer ({run})"
    else:
        what = f"selectivity by checkpoint and layer ({run}; accuracy − the stronger of the bag-of-words and " \
               "random-init controls)"
    title = f"{dim}: {what}"
    return Figure(figure_id(run, dim, kind=f"{part}-heatmap"), title,
                  styled(fig, title, max(300, 120 + 22 * len(order))))


def _emergence_marks(fig: go.Figure, results: pd.DataFrame, dim: str, order: list[str]) -> None:
    """A star on each layer's emergence step (``tables.emergence``: selectivity's 95 % interval above zero from
    that checkpoint on); nothing when no layer emerges or the run has no selectivity intervals."""
    table = emergence(results)
    table = table[(table.dimension == dim)].dropna(subset=["emergence_step"])
    if table.empty:
        return
    steps = results[results.dimension == dim].drop_duplicates("revision").set_index("revision").step
    first_rev = {int(s): r for r, s in steps.dropna().items() if r in order}
    marks = [(int(row.layer), first_rev[int(row.emergence_step)]) for row in table.itertuples()
             if int(row.emergence_step) in first_rev]
    if not marks:
        return
    fig.add_trace(go.Scatter(x=[m[0] for m in marks], y=[plot_text(m[1]) for m in marks], mode="markers",
                             name="emerges: selectivity's 95 % CI above 0 from here on",
                             marker={"symbol": "star", "size": 13, "color": "white", "line": {"color": "black",
                                                                                             "width": 1.5}},
                             hovertemplate="layer %{x} emerges at checkpoint %{y}<extra></extra>"))
    fig.update_layout(legend={"orientation": "h", "y": -0.25})


def _band(g: pd.DataFrame, res: pd.DataFrame, layer: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(lower, upper) of one layer's accuracy over steps: its 95 % interval, else ± the std over folds."""
    def per_step(metric: str) -> pd.Series | None:
        rows = res[(res.metric == metric) & (res.layer == layer)]
        if rows.empty or rows.step.duplicated().any():  # two rows at one step (two revisions, or transfer
            return None                                 # rows): which interval is whose is unknown, so no band
        return rows.set_index("step").value.reindex(g.step)

    low, high, std = per_step("accuracy_ci_low"), per_step("accuracy_ci_high"), per_step("accuracy_std")
    if low is not None and high is not None and low.notna().any():
        return low.to_numpy(), high.to_numpy()
    if std is not None and std.notna().any():
        return g.value.to_numpy() - std.to_numpy(), g.value.to_numpy() + std.to_numpy()
    return None


def probe_curves(runs: Sequence[Run], dim: str) -> Figure | None:
    """Probe accuracy against step for the paper's depth-adapted layers with their 95 % intervals, and the
    controls as reference lines (the random-init control per layer, dotted in the layer's colour)."""
    fig = go.Figure()
    drew = False
    log_axis = log_steps(steps_of(runs, dim))
    shift = 1 if log_axis else 0
    for r_i, run in enumerate(runs):
        res = run.results
        if res is None:
            continue
        res = res[res.dimension == dim]
        acc = res[res.metric == "accuracy"]
        if acc.empty or acc.step.isna().all():
            continue
        layers = select_layers(int(acc.layer.max()) + 1)
        span = [float(acc.step.min()) + shift, float(acc.step.max()) + shift]
        for colour, layer in zip(colours(len(layers)), layers):
            g = acc[acc.layer == layer].sort_values("step")
            name = legend_name(run.label, len(runs), f"layer {layer}")
            band = _band(g, res, layer)
            if band is not None:
                fig.add_trace(go.Scatter(x=np.r_[g.step, g.step[::-1]] + shift, y=np.r_[band[1], band[0][::-1]],
                                         fill="toself", fillcolor=with_alpha(colour, 0.15), line={"width": 0},
                                         hoverinfo="skip", showlegend=False, legendgroup=name))
            fig.add_trace(go.Scatter(
                x=g.step + shift, y=g.value, mode="lines+markers", name=name, legendgroup=name,
                line={"color": colour, "dash": DASHES[r_i % len(DASHES)]},
                customdata=np.c_[[plot_text(r) for r in g.revision], g.step],
                hovertemplate="step %{customdata[1]}<br>%{customdata[0]}<br>accuracy %{y:.4f}<extra>" + name +
                              "</extra>"))
            random = res[(res.metric == "control_random_init") & (res.layer == layer)].value
            if len(random):
                fig.add_trace(go.Scatter(x=span, y=[float(random.iloc[0])] * 2, mode="lines", legendgroup=name,
                                         name=f"{name}: random init", showlegend=False,
                                         line={"color": colour, "dash": "dot", "width": 1},
                                         hovertemplate="random-init control %{y:.4f}<extra>" + name + "</extra>"))
            drew = True
        for metric, colour, what in (("majority_baseline", "#888", "majority"), ("control_lexical", "#b2182b",
                                                                                 "bag of words")):
            values = res[res.metric == metric].value
            if len(values):
                fig.add_hline(y=float(values.iloc[0]), line={"color": colour, "dash": "dash", "width": 1},
                              annotation_text=f"{what} {float(values.iloc[0]):.3f}", annotation_position="bottom right")
    if not drew:
        return None
    step_axis(fig, log_axis)
    fig.update_yaxes(title="probe accuracy (fraction correct)")
    title = (f"{dim}: probe accuracy over training (bands: 95 % interval; dotted: the random-init control of "
             "each layer; dashed: bag of words, majority)")
    return Figure(figure_id(dim, kind="probe-vs-step"), title, styled(fig, title))


def _accuracy_panel(fig: go.Figure, wide: pd.DataFrame, label: str, dash: str) -> None:
    """Accuracy with its interval, the majority baseline and the controls, against layer (first panel)."""
    if "accuracy_ci_low" in wide and "accuracy_ci_high" in wide:
        error = {"type": "data", "symmetric": False, "array": wide.accuracy_ci_high - wide.accuracy,
                 "arrayminus": wide.accuracy - wide.accuracy_ci_low}
    else:
        error = {"type": "data", "array": wide.get("accuracy_std", pd.Series(np.nan, index=wide.index)),
                 "visible": "accuracy_std" in wide}
    fig.add_trace(go.Scatter(x=wide.layer, y=wide.accuracy, error_y=error, mode="lines+markers",
                             name=f"{label}: accuracy", line={"color": "#00204c", "dash": dash},
                             hovertemplate="layer %{x}<br>accuracy %{y:.4f}<extra>" + label + "</extra>"), row=1, col=1)
    for metric, (what, line) in {"majority_baseline": ("majority baseline", "dot"), **CONTROL_LINES}.items():
        if metric in wide:
            fig.add_trace(go.Scatter(x=wide.layer, y=wide[metric], mode="lines", name=f"{label}: {what}",
                                     line={"color": "#888" if metric == "majority_baseline" else "#b2182b",
                                           "dash": line, "width": 1},
                                     hovertemplate=what + " %{y:.4f}<extra></extra>"), row=1, col=1)
    if "selectivity" in wide:
        fig.add_trace(go.Scatter(x=wide.layer, y=wide.selectivity, mode="lines+markers", name=f"{label}: selectivity",
                                 line={"color": "#35b779", "dash": dash},
                                 hovertemplate="layer %{x}<br>selectivity %{y:+.4f}<extra>" + label + "</extra>"),
                      row=1, col=2)


def by_layer(runs: Sequence[Run], dim: str) -> Figure | None:
    """A single checkpoint against layer: accuracy (95 % interval) with the controls, selectivity, and MI."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("probe accuracy and controls", "selectivity",
                                                        "mutual information"))
    drew = False
    for r_i, run in enumerate(runs):
        res = run.results
        if res is None:
            continue
        rows = res[res.dimension == dim]
        for rev, g in rows.groupby("revision", sort=False):
            if g.step.notna().any() and rows.revision.nunique() > 1:
                continue  # a series: drawn against step instead
            label = legend_name(run.label, len(runs), str(rev))
            dash = DASHES[r_i % len(DASHES)]
            wide = g.pivot_table(index="layer", columns="metric", values="value").reset_index()
            if "accuracy" in wide:
                _accuracy_panel(fig, wide, label, dash)
                drew = True
            for metric, colour, what in (("mi_tx", "#7d7c78", "I(T;X)"), ("mi_ty", "#d6604d", "I(T;Y)")):
                if metric in wide:
                    fig.add_trace(go.Scatter(x=wide.layer, y=wide[metric], mode="lines+markers",
                                             name=f"{label}: {what}", line={"color": colour, "dash": dash},
                                             hovertemplate="layer %{x}<br>" + what + " %{y:.4f}<extra>" + label +
                                                           "</extra>"), row=1, col=3)
                    drew = True
    if not drew:
        return None
    for col in (1, 2, 3):
        fig.update_xaxes(title="layer (block output)", row=1, col=col)
    fig.update_yaxes(title="fraction correct", row=1, col=1)
    fig.update_yaxes(title="accuracy − strongest control", row=1, col=2)
    fig.update_yaxes(title="HSIC estimate (the estimator's units)", type="log", row=1, col=3)
    title = f"{dim}: by layer at a single checkpoint (error bars: 95 % interval)"
    return Figure(figure_id(dim, kind="by-layer"), title, styled(fig, title, 460))
