"""Probe figures: accuracy by checkpoint and layer, accuracy over training, and a single checkpoint by layer.

"Layer l" is the output of decoder block l; accuracies are fractions of held-out statements answered right.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..tables import select_layers
from .load import Run, steps_of
from .style import (
    CIVIDIS,
    DASHES,
    Figure,
    colours,
    legend_name,
    log_steps,
    slug,
    step_axis,
    styled,
    with_alpha,
)


def probe_heatmap(results: pd.DataFrame, dim: str, run: str) -> Figure | None:
    """Checkpoint × layer heatmap of probe accuracy (the paper's Fig. 2 as a grid)."""
    acc = results[(results.dimension == dim) & (results.metric == "accuracy")]
    if acc.empty:
        return None
    order = acc.drop_duplicates("revision").sort_values(["step", "revision"], na_position="last").revision.tolist()
    if len(order) < 2:  # one checkpoint: the by-layer figure shows it better than a one-row grid
        return None
    grid = acc.pivot_table(index="revision", columns="layer", values="value").reindex(order)
    base = results[(results.dimension == dim) & (results.metric == "majority_baseline")].value
    majority = float(base.iloc[0]) if len(base) else float("nan")
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=[int(c) for c in grid.columns], y=order, colorscale=CIVIDIS, zmin=0.5, zmax=1.0,
        colorbar={"title": "accuracy"},
        hovertemplate="checkpoint %{y}<br>layer %{x}<br>accuracy %{z:.4f}<extra></extra>"))
    fig.update_xaxes(title="layer (block output)")
    fig.update_yaxes(title="checkpoint (training order)", type="category")
    title = f"{dim}: probe accuracy by checkpoint and layer ({run}; majority baseline {majority:.3f})"
    return Figure(f"{slug(run)}-{dim}-probe-heatmap", title, styled(fig, title, max(300, 120 + 22 * len(order))))


def probe_curves(runs: Sequence[Run], dim: str) -> Figure | None:
    """Probe accuracy against step for the paper's depth-adapted layers, ± k-fold std where present."""
    fig = go.Figure()
    drew = False
    log_axis = log_steps(steps_of(runs, dim))
    shift = 1 if log_axis else 0
    for r_i, run in enumerate(runs):
        res = run.results
        if res is None:
            continue
        acc = res[(res.dimension == dim) & (res.metric == "accuracy")]
        if acc.empty or acc.step.isna().all():
            continue
        std = res[(res.dimension == dim) & (res.metric == "accuracy_std")]
        layers = select_layers(int(acc.layer.max()) + 1)
        for colour, layer in zip(colours(len(layers)), layers):
            g = acc[acc.layer == layer].sort_values("step")
            s = std[std.layer == layer].set_index("step").value.reindex(g.step) if len(std) else None
            name = legend_name(run.label, len(runs), f"layer {layer}")
            if s is not None and s.notna().any():
                upper, lower = g.value.to_numpy() + s.to_numpy(), g.value.to_numpy() - s.to_numpy()
                fig.add_trace(go.Scatter(x=np.r_[g.step, g.step[::-1]] + shift, y=np.r_[upper, lower[::-1]], fill="toself",
                                         fillcolor=with_alpha(colour, 0.15), line={"width": 0}, hoverinfo="skip",
                                         showlegend=False, legendgroup=name))
            fig.add_trace(go.Scatter(
                x=g.step + shift, y=g.value, mode="lines+markers", name=name, legendgroup=name,
                line={"color": colour, "dash": DASHES[r_i % len(DASHES)]},
                customdata=np.c_[g.revision, s.to_numpy() if s is not None else np.full(len(g), np.nan), g.step],
                hovertemplate="step %{customdata[2]}<br>%{customdata[0]}<br>accuracy %{y:.4f} ± %{customdata[1]:.4f}"
                              "<extra>" + name + "</extra>"))
            drew = True
        base = res[(res.dimension == dim) & (res.metric == "majority_baseline")].value
        if len(base):
            fig.add_hline(y=float(base.iloc[0]), line={"color": "#888", "dash": "dot", "width": 1},
                          annotation_text=f"majority {float(base.iloc[0]):.3f}", annotation_position="bottom right")
    if not drew:
        return None
    step_axis(fig, log_axis)
    fig.update_yaxes(title="probe accuracy (fraction correct)")
    title = f"{dim}: probe accuracy over training (bands: ± std over folds)"
    return Figure(f"{dim}-probe-vs-step", title, styled(fig, title))


def by_layer(runs: Sequence[Run], dim: str) -> Figure | None:
    """Probe accuracy (± fold std) and MI against layer, for runs of a single checkpoint (no step axis)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("probe accuracy", "mutual information"))
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
                std = wide["accuracy_std"] if "accuracy_std" in wide else pd.Series(np.nan, index=wide.index)
                fig.add_trace(go.Scatter(
                    x=wide.layer, y=wide.accuracy, error_y={"type": "data", "array": std, "visible": bool(std.notna().any())},
                    mode="lines+markers", name=f"{label}: accuracy", line={"color": "#00204c", "dash": dash},
                    hovertemplate="layer %{x}<br>accuracy %{y:.4f}<extra>" + label + "</extra>"), row=1, col=1)
                drew = True
            if "majority_baseline" in wide:
                fig.add_trace(go.Scatter(x=wide.layer, y=wide.majority_baseline, mode="lines",
                                         name=f"{label}: majority baseline", line={"color": "#888", "dash": "dot"},
                                         hovertemplate="majority %{y:.4f}<extra></extra>"), row=1, col=1)
            for metric, colour, what in (("mi_tx", "#7d7c78", "I(T;X)"), ("mi_ty", "#d6604d", "I(T;Y)")):
                if metric in wide:
                    fig.add_trace(go.Scatter(x=wide.layer, y=wide[metric], mode="lines+markers",
                                             name=f"{label}: {what}", line={"color": colour, "dash": dash},
                                             hovertemplate="layer %{x}<br>" + what + " %{y:.4f}<extra>" + label +
                                                           "</extra>"), row=1, col=2)
                    drew = True
    if not drew:
        return None
    for col in (1, 2):
        fig.update_xaxes(title="layer (block output)", row=1, col=col)
    fig.update_yaxes(title="probe accuracy (fraction correct)", row=1, col=1)
    fig.update_yaxes(title="HSIC estimate (the estimator's units)", type="log", row=1, col=2)
    title = f"{dim}: by layer at a single checkpoint (error bars: ± std over folds)"
    return Figure(f"{dim}-by-layer", title, styled(fig, title))
