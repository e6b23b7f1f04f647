"""Mutual-information figures: I(T;X) and I(T;Y) over training with the phase marks, and the information plane.

``write_mi_figures`` draws them for one trace folder into its ``mi/`` folder (what ``trusttrace phases``
writes); the report draws the same figures on its page.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.errors import RunFolderError
from ..core.runlock import hold
from ..runs.layout import TraceLayout, safe_name
from ..runs.tables import mi_wide, select_layers
from .export import inside, write_html, write_pngs
from .load import Run, load_run, steps_of
from .style import DASHES, Figure, colours, figure_id, legend_name, log_steps, step_axis, styled, with_alpha


def _series_mi(run: Run, dim: str) -> pd.DataFrame | None:
    """A run's MI rows for ``dim`` over steps, one row per (layer, step); None when it has none."""
    if run.results is None:
        return None
    wide = mi_wide(run.results, dim)
    return None if wide.empty else wide


def _band(fig: go.Figure, g: pd.DataFrame, metric: str, x: pd.Series, colour: str, name: str, col: int) -> None:
    """The 95 % interval of ``metric`` over steps as a shaded band (nothing when the rows have none)."""
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if low not in g or high not in g or g[low].isna().all():
        return
    fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[g[high], g[low][::-1]], fill="toself",
                             fillcolor=with_alpha(colour, 0.15), line={"width": 0}, hoverinfo="skip",
                             showlegend=False, legendgroup=name), row=1, col=col)


def _phase_marks(fig: go.Figure, g: pd.DataFrame, phases: pd.Series, colour: str, name: str, shift: int) -> None:
    """The trough (▼) and peak (▲) the phase rule found on I(T;X), and a dotted line at a resolved compression's
    peak."""
    for what, symbol in (("trough", "triangle-down"), ("peak", "triangle-up")):
        step = phases.get(f"{what}_step")
        if step is None or pd.isna(step) or not (g.step == step).any():
            continue
        y = float(g.loc[g.step == step, "mi_tx"].iloc[0])
        fig.add_trace(go.Scatter(x=[float(step) + shift], y=[y], mode="markers", legendgroup=name, showlegend=False,
                                 marker={"symbol": symbol, "size": 12, "color": colour,
                                         "line": {"color": "black", "width": 1}},
                                 hovertemplate=f"{what} at step {int(step)}<extra>{name}</extra>"), row=1, col=1)
    if bool(phases.get("compression", False)):
        fig.add_vline(x=float(phases["peak_step"]) + shift,  # data coordinates, log axis too
                      line={"color": colour, "dash": "dot", "width": 1}, row=1, col=1)


def mi_curves(runs: Sequence[Run], dim: str) -> Figure | None:
    """I(T;X) and I(T;Y) against step with their 95 % intervals as bands, I(T;Y)'s permutation null (95th
    percentile) as a thin dashed line, and the phase rule's trough (▼) and peak (▲) on I(T;X); a dotted line at
    the peak where a resolved compression follows."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("I(T;X): layer l vs layer 0", "I(T;Y): layer l vs label"))
    drew = False
    log_axis = log_steps(steps_of(runs, dim))
    shift = 1 if log_axis else 0
    for r_i, run in enumerate(runs):
        wide = _series_mi(run, dim)
        if wide is None:
            continue
        layers = select_layers(int(wide.layer.max()) + 1)
        peaks = run.phases[run.phases.dimension == dim].set_index("layer") if run.phases is not None else None
        for colour, layer in zip(colours(len(layers)), layers):
            g = wide[wide.layer == layer]
            name = legend_name(run.label, len(runs), f"layer {layer}")
            for col, metric in enumerate(("mi_tx", "mi_ty"), start=1):
                if metric not in g:
                    continue
                _band(fig, g, metric, g.step + shift, colour, name, col)
                fig.add_trace(go.Scatter(x=g.step + shift, y=g[metric], mode="lines+markers", name=name,
                                         legendgroup=name, showlegend=col == 1, customdata=g.step,
                                         line={"color": colour, "dash": DASHES[r_i % len(DASHES)]},
                                         hovertemplate="step %{customdata}<br>%{y:.4f}<extra>" + name + "</extra>"),
                              row=1, col=col)
                drew = True
            if "mi_ty_null_q95" in g and g.mi_ty_null_q95.notna().any():
                fig.add_trace(go.Scatter(x=g.step + shift, y=g.mi_ty_null_q95, mode="lines", legendgroup=name,
                                         showlegend=False, line={"color": colour, "dash": "dash", "width": 1},
                                         customdata=g.step, hovertemplate="step %{customdata}<br>null 95th "
                                         "percentile %{y:.4f}<extra>" + name + "</extra>"), row=1, col=2)
            if peaks is not None and layer in peaks.index and "mi_tx" in g:
                _phase_marks(fig, g, peaks.loc[layer], colour, name, shift)
    if not drew:
        return None
    for col in (1, 2):
        step_axis(fig, log_axis, row=1, col=col)
    fig.update_yaxes(title="HSIC estimate (the estimator's units)", row=1, col=1)
    title = (f"{dim}: MI over training (bands: 95 % CI; dashed: I(T;Y)'s null, 95th pct; ▼ trough, ▲ peak; "
             "dotted: compression)")
    return Figure(figure_id(dim, kind="mi-vs-step"), title, styled(fig, title))


def information_plane(runs: Sequence[Run], dim: str) -> Figure | None:
    """I(T;Y) against I(T;X), points coloured by log step (the paper's Fig. 7)."""
    fig = go.Figure()
    drew = False
    for r_i, run in enumerate(runs):
        wide = _series_mi(run, dim)
        if wide is None or not {"mi_tx", "mi_ty"} <= set(wide.columns):
            continue
        log_step = np.log10(wide.step.astype(float) + 1)
        layers = select_layers(int(wide.layer.max()) + 1)
        for layer in layers:
            g = wide[wide.layer == layer]
            name = legend_name(run.label, len(runs), f"layer {layer}")
            fig.add_trace(go.Scatter(
                x=g.mi_tx, y=g.mi_ty, mode="lines+markers", name=name,
                line={"color": "#999", "width": 1, "dash": DASHES[r_i % len(DASHES)]},
                marker={"color": np.log10(g.step.astype(float) + 1), "colorscale": "Viridis", "size": 7,
                        "cmin": float(log_step.min()), "cmax": float(log_step.max()),
                        "showscale": layer == layers[-1] and r_i == 0,
                        "colorbar": {"title": "log10(step+1)", "x": 1.0, "len": 0.8}},
                customdata=g.step, hovertemplate="step %{customdata}<br>I(T;X) %{x:.4f}<br>I(T;Y) %{y:.4f}"
                                                 "<extra>" + name + "</extra>"))
            drew = True
    if not drew:
        return None
    fig.update_xaxes(title="I(T;X): layer l vs layer 0 (HSIC estimate)")
    fig.update_yaxes(title="I(T;Y): layer l vs label (HSIC estimate)")
    title = f"{dim}: information plane (colour: training step)"
    fig = styled(fig, title)
    fig.update_layout(legend={"x": 1.12, "font": {"size": 10}})  # clear of the colour bar
    return Figure(figure_id(dim, kind="information-plane"), title, fig)


def write_mi_figures(run_dir: str | Path, png: bool = True) -> tuple[list[Path], list[str]]:
    """For every dimension of a trace folder with MI rows over steps: I against step and the information
    plane, as offline HTML (and PNG) in its ``mi/`` folder. Returns (files written, notes)."""
    run = load_run(run_dir)
    if run.results is None:
        raise RunFolderError(f"{run_dir} has no results table. Point at a `trusttrace trace` --out folder.")
    out = TraceLayout(Path(run_dir)).mi
    figures, stems = [], []
    for dim in sorted(run.results[run.results.metric == "mi_tx"].dimension.unique()):
        for stem, fig in ((f"{safe_name(dim)}_mi_vs_step", mi_curves([run], dim)),
                          (f"{safe_name(dim)}_information_plane", information_plane([run], dim))):
            if fig is not None:
                figures.append(fig)
                stems.append(stem)
    written: list[Path] = []
    notes: list[str] = []
    with hold(out, "phases"):  # one writer at a time
        for fig, stem in zip(figures, stems):
            write_html(fig, inside(out, f"{stem}.html"))
            written.append(out / f"{stem}.html")
        if png:
            written += write_pngs(figures, out, notes, stems)
    return written, notes
