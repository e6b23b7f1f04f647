"""Figures drawn from the results table only: MI against step, and the information plane.

Each figure comes as a PNG (matplotlib, for papers) and a self-contained interactive HTML (plotly, works
offline). Colour scales are viridis/cividis, which stay readable with colour-blindness. "Layer l" is the
output of decoder block l.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._io import write_text_atomic, write_with

PAPER_LAYERS = (0, 6, 12, 18, 24, 30)  # the paper's selection for 32 layers


def select_layers(n_layers: int) -> list[int]:
    """The paper's layers {0, 6, 12, 18, 24, 30} of 32, placed at the same relative depths of ``n_layers``."""
    scale = (n_layers - 1) / 31  # 1 for 32 layers: the paper's own indices
    return sorted({min(n_layers - 1, round(layer * scale)) for layer in PAPER_LAYERS})


def mi_wide(results: pd.DataFrame, dimension: str) -> pd.DataFrame:
    """A dimension's ``mi_tx``/``mi_ty`` rows as one row per (layer, step), sorted (rows without a step drop)."""
    mi = results[(results.dimension == dimension) & results.metric.isin(["mi_tx", "mi_ty"])]
    return mi.pivot_table(index=["layer", "step"], columns="metric", values="value").reset_index().sort_values(
        ["layer", "step"])


def _save_png(fig: plt.Figure, path: Path) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight"))
    plt.close(fig)


def _save_html(fig: go.Figure, path: Path) -> None:
    write_text_atomic(path, fig.to_html(include_plotlyjs=True, full_html=True))  # inlined: works offline


def mi_figures(results: pd.DataFrame, out_dir: str | Path, phases: pd.DataFrame | None = None) -> list[Path]:
    """For every dimension with MI rows: I against step and the information plane, as PNG and HTML."""
    out = Path(out_dir)
    written: list[Path] = []
    for dim in sorted(results[results.metric == "mi_tx"].dimension.unique()):
        wide = mi_wide(results, dim)
        layers = select_layers(int(wide.layer.max()) + 1)
        wide = wide[wide.layer.isin(layers)]
        peaks = phases[phases.dimension == dim].set_index("layer") if phases is not None else None
        written += _vs_step(wide, layers, dim, out, peaks)
        written += _plane(wide, layers, dim, out)
    return written


def _vs_step(wide: pd.DataFrame, layers: list[int], dim: str, out: Path, peaks: pd.DataFrame | None) -> list[Path]:
    colours = plt.cm.cividis(np.linspace(0, 0.9, len(layers)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    html = make_subplots(rows=1, cols=2, subplot_titles=("I(T;X)", "I(T;Y)"))
    for colour, layer in zip(colours, layers):
        g = wide[wide.layer == layer]
        hex_colour = matplotlib.colors.to_hex(colour)
        for col, metric in enumerate(("mi_tx", "mi_ty")):
            axes[col].plot(g.step, g[metric], marker="o", ms=3, color=colour, label=f"layer {layer}")
            html.add_trace(go.Scatter(x=g.step, y=g[metric], mode="lines+markers", name=f"layer {layer}",
                                      line={"color": hex_colour}, legendgroup=str(layer), showlegend=col == 0,
                                      hovertemplate="step %{x}<br>%{y:.4f}<extra>layer " + str(layer) + "</extra>"),
                           row=1, col=col + 1)
        if peaks is not None and layer in peaks.index and peaks.loc[layer, "compression"]:
            step = peaks.loc[layer, "peak_step"]
            axes[0].axvline(step, color=colour, ls=":", lw=1)
            html.add_vline(x=step, line={"color": hex_colour, "dash": "dot", "width": 1}, row=1, col=1)
    for ax, name in zip(axes, ("I(T;X)", "I(T;Y)")):
        ax.set_xscale("symlog", linthresh=max(1.0, float(wide.step[wide.step > 0].min()) if (wide.step > 0).any() else 1.0))
        ax.set_xlim(left=0)
        ax.set_xlabel("pre-training step")
        ax.set_ylabel(f"{name} (HSIC estimate)")
    axes[1].legend(fontsize=7, title="layer (block output)")
    fig.suptitle(f"{dim}: mutual information over training (dotted: I(T;X) peak where compression follows)")
    html.update_layout(title=f"{dim}: mutual information over training", xaxis_title="pre-training step",
                       xaxis2_title="pre-training step", yaxis_title="I(T;X)", yaxis2_title="I(T;Y)")
    paths = [out / f"{dim}_mi_vs_step.png", out / f"{dim}_mi_vs_step.html"]
    _save_png(fig, paths[0])
    _save_html(html, paths[1])
    return paths


def _plane(wide: pd.DataFrame, layers: list[int], dim: str, out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6, 5))
    log_step = np.log10(wide.step.astype(float) + 1)
    norm = matplotlib.colors.Normalize(log_step.min(), log_step.max())
    html = go.Figure()
    for layer in layers:
        g = wide[wide.layer == layer]
        ax.plot(g.mi_tx, g.mi_ty, color="0.6", lw=0.8, zorder=1)
        ax.annotate(f"L{layer}", (g.mi_tx.iloc[-1], g.mi_ty.iloc[-1]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
        html.add_trace(go.Scatter(
            x=g.mi_tx, y=g.mi_ty, mode="lines+markers", name=f"layer {layer}", line={"color": "#999", "width": 1},
            marker={"color": np.log10(g.step.astype(float) + 1), "colorscale": "Viridis", "size": 7,
                    "cmin": norm.vmin, "cmax": norm.vmax, "showscale": layer == layers[-1],
                    "colorbar": {"title": "log10(step + 1)"}},
            customdata=g.step, hovertemplate="step %{customdata}<br>I(T;X) %{x:.4f}<br>I(T;Y) %{y:.4f}"
                                             "<extra>layer " + str(layer) + "</extra>"))
    scatter = ax.scatter(wide.mi_tx, wide.mi_ty, c=log_step, cmap="viridis", norm=norm, s=14, zorder=2)
    fig.colorbar(scatter, ax=ax, label="log10(step + 1)")
    ax.set_xlabel("I(T;X): layer l vs layer 0")
    ax.set_ylabel("I(T;Y): layer l vs label")
    ax.set_title(f"{dim}: information plane")
    html.update_layout(title=f"{dim}: information plane", xaxis_title="I(T;X): layer l vs layer 0",
                       yaxis_title="I(T;Y): layer l vs label")
    paths = [out / f"{dim}_information_plane.png", out / f"{dim}_information_plane.html"]
    _save_png(fig, paths[0])
    _save_html(html, paths[1])
    return paths
