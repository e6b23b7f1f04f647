"""``trusttrace report``: one offline HTML page (and a PNG per figure) drawn from a run's tables only.

A run folder may be a ``trace`` run (``results.csv``), a ``steer`` run (``steering.csv``), a ``pretrain``
run (``loss.csv``, with ``trace/``), a ``demo`` run (all of these in sub-folders), or a plain CSV of tidy
rows (``step, dimension, layer, metric, value``: e.g. the paper's numbers) to compare against. Sections
appear only where their tables exist; a missing one leaves a note. Several runs are overlaid on the same
axes (line dash tells the runs apart).

The page inlines plotly.js, so it opens without a network. PNGs are written with kaleido where it and a
Chromium/Chrome are installed; otherwise the page says so and carries the interactive figures only.
Colour scales are cividis/viridis (colour-blind safe); "layer l" is the output of decoder block l.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._io import write_text_atomic
from .plots import mi_wide, select_layers

log = logging.getLogger(__name__)

DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
CIVIDIS = "Cividis"


# ---------------------------------------------------------------- reading runs


@dataclass
class Run:
    """The tables of one run folder (or one CSV), each None when absent."""

    label: str
    path: Path
    results: pd.DataFrame | None = None  # trace rows
    manifest: dict[str, Any] | None = None
    phases: pd.DataFrame | None = None
    steers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → steering, best, correlation, config, probes
    loss: pd.DataFrame | None = None
    checkpoints: pd.DataFrame | None = None
    tables: dict[str, Path] = field(default_factory=dict)  # download name → file


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.is_file() else None


def _trace_dir(root: Path) -> Path | None:
    for candidate in (root, root / "trace", root / "pretrain" / "trace"):
        if (candidate / "results.parquet").is_file() or (candidate / "results.csv").is_file():
            return candidate
    return None


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Gather whatever tables ``path`` holds (see the module docstring)."""
    root = Path(path)
    if root.is_file():
        frame = pd.read_csv(root)
        missing = {"step", "dimension", "layer", "metric", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"{root}: a comparison CSV needs columns step, dimension, layer, metric, value "
                             f"(missing {sorted(missing)}).")
        if "revision" not in frame:
            frame["revision"] = [f"step{s}" for s in frame.step]
        return Run(label or root.stem, root, results=frame, tables={root.name: root})
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is neither a run folder nor a CSV of results rows.")
    run = Run(label or root.resolve().name, root)
    trace = _trace_dir(root)
    if trace is not None:
        from .phases import read_results

        run.results = read_results(trace)
        where = trace.relative_to(root).as_posix()
        run.tables["results.csv" if where == "." else f"{where.replace('/', '_')}_results.csv"] = trace / "results.csv"
        if (trace / "manifest.json").is_file():
            run.manifest = json.loads((trace / "manifest.json").read_text())
        run.phases = _csv(trace / "mi" / "phases.csv")
        if run.phases is not None:
            run.tables["mi_phases.csv"] = trace / "mi" / "phases.csv"
    pre = root if (root / "loss.csv").is_file() else root / "pretrain"
    run.loss, run.checkpoints = _csv(pre / "loss.csv"), _csv(pre / "checkpoints.csv")
    for name in ("loss.csv", "checkpoints.csv"):
        if (pre / name).is_file():
            run.tables[f"pretrain_{name}"] = pre / name
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        table = _csv(folder / "steering.csv")
        if table is None:
            continue
        name = "steer" if folder == root else folder.name
        config = json.loads((folder / "steer_config.json").read_text()) if (folder / "steer_config.json").is_file() \
            else {}
        run.steers[name] = {"steering": table, "best": _csv(folder / "best.csv"),
                            "correlation": _csv(folder / "correlation.csv"), "config": config,
                            "probes": _csv(folder / "source" / "results.csv")}
        for part in ("steering.csv", "best.csv", "correlation.csv"):
            if (folder / part).is_file():
                run.tables[f"{name}_{part}"] = folder / part
    return run


# ---------------------------------------------------------------- figures


@dataclass
class Figure:
    """One figure of the page."""

    name: str  # file stem and data-figure id
    title: str
    figure: go.Figure
    caption: str = ""


def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=title, height=height, template="plotly_white", margin={"t": 60, "l": 70, "r": 30, "b": 55},
                      legend={"font": {"size": 10}}, hoverlabel={"namelength": -1})
    return fig


def _colours(n: int, scale: str = CIVIDIS) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale(scale, list(np.linspace(0.0, 0.9, max(n, 1))))


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
    return Figure(f"{_slug(run)}-{dim}-probe-heatmap", title, _layout(fig, title, max(300, 120 + 22 * len(order))))


def probe_curves(runs: Sequence[Run], dim: str) -> Figure | None:
    """Probe accuracy against step for the paper's depth-adapted layers, ± k-fold std where present."""
    fig = go.Figure()
    drew = False
    log_axis = _log_steps(runs, dim)
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
        for colour, layer in zip(_colours(len(layers)), layers):
            g = acc[acc.layer == layer].sort_values("step")
            s = std[std.layer == layer].set_index("step").value.reindex(g.step) if len(std) else None
            name = _trace_name(run, runs, f"layer {layer}")
            if s is not None and s.notna().any():
                upper, lower = g.value.to_numpy() + s.to_numpy(), g.value.to_numpy() - s.to_numpy()
                fig.add_trace(go.Scatter(x=np.r_[g.step, g.step[::-1]] + shift, y=np.r_[upper, lower[::-1]], fill="toself",
                                         fillcolor=_alpha(colour, 0.15), line={"width": 0}, hoverinfo="skip",
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
    _step_axis(fig, log_axis)
    fig.update_yaxes(title="probe accuracy (fraction correct)")
    title = f"{dim}: probe accuracy over training (bands: ± std over folds)"
    return Figure(f"{dim}-probe-vs-step", title, _layout(fig, title))


def _trace_name(run: Run, runs: Sequence[Run], what: str) -> str:
    """A legend entry: ``what``, prefixed with the run's label when several runs share the axes."""
    return f"{run.label} · {what}" if len(runs) > 1 else what


def _series_mi(run: Run, dim: str) -> pd.DataFrame | None:
    """A run's MI rows for ``dim`` over steps, one row per (layer, step); None when it has none."""
    if run.results is None:
        return None
    wide = mi_wide(run.results, dim)
    return None if wide.empty else wide


def _log_steps(runs: Sequence[Run], dim: str) -> bool:
    """Whether the steps span enough decades for a log axis (of step + 1, so that step 0 has a place)."""
    steps = pd.concat([r.results[r.results.dimension == dim].step for r in runs if r.results is not None]).dropna()
    return len(steps) > 0 and float(steps.max()) + 1 >= 100 * (float(steps.min()) + 1)


def _step_axis(fig: go.Figure, log_axis: bool, **where: int) -> None:
    title = "pre-training step + 1 (log scale)" if log_axis else "pre-training step"
    fig.update_xaxes(title=title, type="log" if log_axis else "linear", **where)


def _alpha(colour: str, a: float) -> str:
    if colour.startswith("rgb("):
        return colour.replace("rgb(", "rgba(").replace(")", f", {a})")
    if colour.startswith("#") and len(colour) == 7:
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        return f"rgba({r}, {g}, {b}, {a})"
    return colour


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
            label = _trace_name(run, runs, str(rev))
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
    return Figure(f"{dim}-by-layer", title, _layout(fig, title))


def mi_curves(runs: Sequence[Run], dim: str) -> Figure | None:
    """I(T;X) and I(T;Y) against step; dotted lines at the I(T;X) peak where compression follows."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("I(T;X): layer l vs layer 0", "I(T;Y): layer l vs label"))
    drew = False
    log_axis = _log_steps(runs, dim)
    shift = 1 if log_axis else 0
    for r_i, run in enumerate(runs):
        wide = _series_mi(run, dim)
        if wide is None:
            continue
        layers = select_layers(int(wide.layer.max()) + 1)
        peaks = run.phases[run.phases.dimension == dim].set_index("layer") if run.phases is not None else None
        for colour, layer in zip(_colours(len(layers)), layers):
            g = wide[wide.layer == layer]
            name = _trace_name(run, runs, f"layer {layer}")
            for col, metric in enumerate(("mi_tx", "mi_ty"), start=1):
                if metric not in g:
                    continue
                fig.add_trace(go.Scatter(x=g.step + shift, y=g[metric], mode="lines+markers", name=name,
                                         legendgroup=name, showlegend=col == 1, customdata=g.step,
                                         line={"color": colour, "dash": DASHES[r_i % len(DASHES)]},
                                         hovertemplate="step %{customdata}<br>%{y:.4f}<extra>" + name + "</extra>"),
                              row=1, col=col)
                drew = True
            if peaks is not None and layer in peaks.index and bool(peaks.loc[layer, "compression"]):
                fig.add_vline(x=float(peaks.loc[layer, "peak_step"]) + shift,  # data coordinates, log axis too
                              line={"color": colour, "dash": "dot", "width": 1}, row=1, col=1)
    if not drew:
        return None
    for col in (1, 2):
        _step_axis(fig, log_axis, row=1, col=col)
    fig.update_yaxes(title="HSIC estimate (the estimator's units)", row=1, col=1)
    title = f"{dim}: mutual information over training (dotted: I(T;X) peak followed by compression)"
    return Figure(f"{dim}-mi-vs-step", title, _layout(fig, title))


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
            name = _trace_name(run, runs, f"layer {layer}")
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
    fig = _layout(fig, title)
    fig.update_layout(legend={"x": 1.12, "font": {"size": 10}})  # clear of the colour bar
    return Figure(f"{dim}-information-plane", title, fig)


def _steered_dimension(table: pd.DataFrame) -> str:
    """The dimension a ``steering.csv`` is about (its rows are that dimension's metrics and ``general``)."""
    steered = table.dimension[table.dimension != "general"]
    return str(steered.iloc[0]) if len(steered) else ""


def steering_figure(name: str, steer: dict[str, Any]) -> Figure | None:
    """The headline metric and perplexity against α per source and layer, with the perplexity budget."""
    from .sweep import HEADLINE, wide_table

    table = steer["steering"]
    dim = _steered_dimension(table)
    metric = HEADLINE.get(dim)
    if metric is None:
        return None
    wide = wide_table(table)
    base = wide[wide.source_revision == "unsteered"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{metric}", "perplexity"))
    steered = wide[wide.source_revision != "unsteered"]
    groups = list(steered.groupby(["source_revision", "layer"], sort=False))
    for colour, ((source, layer), g) in zip(_colours(len(groups), "Viridis"), groups):
        g = g.sort_values("alpha")
        label = f"{source} · layer {int(layer)}"
        for col, m in enumerate((metric, "perplexity"), start=1):
            fig.add_trace(go.Scatter(x=g.alpha, y=g[m], mode="lines+markers", name=label, legendgroup=label,
                                     showlegend=col == 1, line={"color": colour},
                                     hovertemplate="α %{x:+g}<br>" + m + " %{y:.4f}<extra>" + label + "</extra>"),
                          row=1, col=col)
    if len(base):
        fig.add_hline(y=float(base[metric].iloc[0]), line={"color": "#444", "dash": "dot"}, row=1, col=1,
                      annotation_text="unsteered", annotation_position="top left")
        budget = float(steer["config"].get("ppl_budget", 1.33))
        fig.add_hline(y=budget * float(base.perplexity.iloc[0]), line={"color": "#b2182b", "dash": "dash"}, row=1,
                      col=2, annotation_text=f"budget {budget:g}× unsteered", annotation_position="top left")
        fig.add_hline(y=float(base.perplexity.iloc[0]), line={"color": "#444", "dash": "dot"}, row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(title="steering strength α (× projection std)", row=1, col=col)
    fig.update_yaxes(title=f"{metric} (fraction)", row=1, col=1)
    fig.update_yaxes(title="perplexity (per token)", type="log", row=1, col=2)
    title = f"{name}: {dim} under steering ({metric} and perplexity against α)"
    return Figure(f"{_slug(name)}-steering", title, _layout(fig, title))


def correlation_figure(name: str, steer: dict[str, Any]) -> Figure | None:
    """Each source's probe accuracy at the steering layer against its steering effect (the paper's Fig. 5)."""
    from .sweep import HEADLINE, wide_table

    corr, probes, table = steer["correlation"], steer["probes"], steer["steering"]
    if corr is None or probes is None or corr.empty:
        return None
    dim = _steered_dimension(table)
    metric = HEADLINE[dim]
    wide = wide_table(table)
    base = float(wide[wide.source_revision == "unsteered"][metric].iloc[0])
    acc = probes[(probes.metric == "accuracy") & (probes.dimension == dim)]
    fig = go.Figure()
    notes = []
    for colour, row in zip(_colours(len(corr), "Viridis"), corr.itertuples(index=False)):
        layer, alpha = int(row.layer), float(row.alpha)
        effect = wide[(wide.layer == layer) & (wide.alpha == alpha) & ~wide.source_revision.isin(["unsteered", "self"])]
        x = acc[acc.layer == layer].set_index("revision").value.reindex(effect.source_revision)
        fig.add_trace(go.Scatter(
            x=x.to_numpy(), y=effect[metric].to_numpy() - base, mode="markers+text", text=effect.source_revision,
            textposition="top center", name=f"layer {layer}, α {alpha:+g}", marker={"color": colour, "size": 10},
            hovertemplate="%{text}<br>probe accuracy %{x:.4f}<br>effect %{y:+.4f}<extra></extra>"))
        notes.append(f"layer {layer}, α {alpha:+g}: Pearson r {row.pearson_r:+.2f} [{row.pearson_lo:+.2f}, "
                     f"{row.pearson_hi:+.2f}], Spearman {row.spearman_r:+.2f} (n = {int(row.n_sources)})")
    fig.update_xaxes(title="probe accuracy of the source checkpoint at the steering layer (fraction)")
    fig.update_yaxes(title=f"steering effect: Δ{metric} vs unsteered")
    title = f"{name}: probe accuracy against steering effect"
    return Figure(f"{_slug(name)}-probe-vs-effect", title, _layout(fig, title),
                  "95 % bootstrap intervals: " + "; ".join(notes))


def loss_figure(run: Run) -> Figure | None:
    """Training loss per step, held-out loss per checkpoint, checkpoint steps marked."""
    if run.loss is None or run.loss.empty:
        return None
    fig = go.Figure(go.Scatter(x=run.loss.step, y=run.loss.loss, mode="lines", name="training loss (batch)",
                               line={"color": "#4d4d4d", "width": 1},
                               hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>"))
    if run.checkpoints is not None and len(run.checkpoints):
        c = run.checkpoints
        fig.add_trace(go.Scatter(x=c.step, y=c.heldout_loss, mode="markers+lines", name="held-out loss (checkpoint)",
                                 marker={"color": "#d6604d", "size": 8, "symbol": "diamond"},
                                 customdata=c.heldout_perplexity,
                                 hovertemplate="checkpoint step %{x}<br>held-out loss %{y:.4f}<br>perplexity "
                                               "%{customdata:.1f}<extra></extra>"))
    fig.update_xaxes(title="optimizer step")
    fig.update_yaxes(title="cross-entropy (nats per token)")
    title = f"{run.label}: pre-training loss (diamonds: saved checkpoints)"
    return Figure(f"{_slug(run.label)}-loss", title, _layout(fig, title))


# ---------------------------------------------------------------- the page


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "run"


def _header(runs: Sequence[Run]) -> str:
    rows = []
    for run in runs:
        m = run.manifest or {}
        cfg = m.get("config", {})
        res = run.results
        ckpts = list(dict.fromkeys(res.revision)) if res is not None and "revision" in res else []
        dtypes = sorted({str(v.get("dtype")) for v in m.get("checkpoints", {}).values() if v.get("dtype")})
        versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
        started, finished = m.get("started"), m.get("finished")
        took = ""
        if started and finished:
            took = str(datetime.fromisoformat(finished) - datetime.fromisoformat(started))
        facts = {"model": cfg.get("model", "—"), "folder": str(run.path),
                 "checkpoints": f"{len(ckpts)} ({ckpts[0]} … {ckpts[-1]})" if ckpts else "—",
                 "dimensions": ", ".join(sorted(res.dimension.unique())) if res is not None else "—",
                 "dtype": ", ".join(dtypes) or "—", "seeds": json.dumps(m.get("seeds", {})) if m else "—",
                 "versions": versions or "—", "run time": f"{started or '—'} → {finished or '—'}" + (
                     f" ({took})" if took else ""),
                 "steering sweeps": ", ".join(run.steers) or "—",
                 "pre-training": f"{len(run.loss)} steps" if run.loss is not None else "—"}
        cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
        rows.append(f"<div class='run'><h3>{html.escape(run.label)}</h3><table class='facts'>{cells}</table></div>")
    return "<section id='header'>" + "".join(rows) + "</section>"


def _table_html(frame: pd.DataFrame) -> str:
    def number(v: float) -> str:
        return f"{v:g}" if float(v).is_integer() else f"{v:.4f}"

    return frame.to_html(index=False, na_rep="–", float_format=number, classes="data", border=0)


@dataclass
class ReportResult:
    """Where the report went and what it holds."""

    page: Path
    figures: list[str]
    pngs: list[Path]
    notes: list[str]


def build_report(paths: Sequence[str | Path], out: str | Path | None = None, png: bool = True) -> ReportResult:
    """Write ``index.html`` (and ``figures/*.png``, ``tables/*.csv``) for one run, or several overlaid."""
    runs = [load_run(p) for p in paths]
    if not runs:
        raise ValueError("Give at least one run folder (or results CSV) to report on.")
    out = Path(out) if out else (runs[0].path if runs[0].path.is_dir() else runs[0].path.parent) / (
        "report" if len(runs) == 1 else "report-compare")
    sections: list[tuple[str, list[Figure | str]]] = []
    notes: list[str] = []
    dims = sorted({d for r in runs if r.results is not None for d in r.results.dimension.unique()})

    probe_items: list[Figure | str] = []
    for dim in dims:
        for run in runs:
            if run.results is not None and (fig := probe_heatmap(run.results, dim, run.label)) is not None:
                probe_items.append(fig)
        for fig in (probe_curves(runs, dim), by_layer(runs, dim)):
            if fig is not None:
                probe_items.append(fig)
    sections.append(("Probe accuracy", probe_items or ["No probe rows in this run (trace with the probe analysis)."]))

    mi_items: list[Figure | str] = []
    for dim in dims:
        for fig in (mi_curves(runs, dim), information_plane(runs, dim)):
            if fig is not None:
                mi_items.append(fig)
    sections.append(("Mutual information", mi_items or [
        "No MI rows over a series of steps in this run (a single checkpoint's MI is drawn by layer above)."]))

    steer_items: list[Figure | str] = []
    for run in runs:
        for name, steer in run.steers.items():
            label = f"{run.label}/{name}" if len(runs) > 1 else name
            if (fig := steering_figure(label, steer)) is not None:
                steer_items.append(fig)
            if steer["best"] is not None:
                budget = steer["config"].get("ppl_budget", 1.33)
                steer_items.append(f"<h4>{html.escape(label)}: best α per source (perplexity ≤ {budget}× "
                                   f"unsteered)</h4>" + _table_html(steer["best"]))
            if (fig := correlation_figure(label, steer)) is not None:
                steer_items.append(fig)
    sections.append(("Steering", steer_items or ["No steering sweep in this run (`trusttrace steer`)."]))

    loss_items: list[Figure | str] = [fig for run in runs if (fig := loss_figure(run)) is not None]
    sections.append(("Pre-training", loss_items or ["Not a pre-training run (no loss.csv)."]))

    figures = [item for _, items in sections for item in items if isinstance(item, Figure)]
    pngs = _write_pngs(figures, out / "figures", notes) if png else []
    tables = _copy_tables(runs, out / "tables")
    page = _page(runs, sections, tables, pngs, notes)
    write_text_atomic(out / "index.html", page)
    return ReportResult(out / "index.html", [f.name for f in figures], pngs, notes)


def _write_pngs(figures: Sequence[Figure], folder: Path, notes: list[str]) -> list[Path]:
    """A PNG per figure, all through one kaleido browser session; a note instead where that cannot run."""
    import importlib.util

    import plotly.io as pio

    if not figures:
        return []
    if importlib.util.find_spec("kaleido") is None:
        notes.append("PNG figures were not written: install kaleido (`pip install kaleido`) and Chromium.")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{fig.name}.png" for fig in figures]
    try:
        pio.write_images([f.figure for f in figures], paths, format="png", scale=2, width=1100,
                         height=[int(f.figure.layout.height or 420) for f in figures])
    except (RuntimeError, ValueError, OSError) as err:  # kaleido without a browser, or one that died
        notes.append(f"PNG figures were not written ({type(err).__name__}: {str(err).strip()[:200]}). "
                     "Install Chromium or Chrome for kaleido.")
        return [p for p in paths if p.is_file()]
    return paths


def _copy_tables(runs: Sequence[Run], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    copied = []
    for run in runs:
        for name, source in run.tables.items():
            if not source.is_file():
                continue
            target = folder / (f"{_slug(run.label)}_{name}" if len(runs) > 1 else name)
            shutil.copyfile(source, target)
            copied.append(target)
    return copied


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 24px 48px;
color:#222}
h1{font-size:1.6em;margin:24px 0 8px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
table.facts th{text-align:left;padding:2px 12px 2px 0;color:#555;font-weight:600;vertical-align:top}
table.data{border-collapse:collapse;font-size:.9em} table.data td,table.data th{padding:3px 10px;border-bottom:1px solid #eee}
.run{display:inline-block;vertical-align:top;margin-right:32px} .note{color:#8a5300;background:#fff8e6;padding:6px 10px}
figure{margin:12px 0 24px} figcaption{font-size:.85em;color:#555}
nav a{margin-right:14px}
"""


def _page(runs: Sequence[Run], sections: list[tuple[str, list[Figure | str]]], tables: list[Path], pngs: list[Path],
          notes: list[str]) -> str:
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from . import __version__

    png_names = {p.stem for p in pngs}
    body = []
    for title, items in sections:
        anchor = _slug(title)
        parts = [f"<section id='{anchor}'><h2>{html.escape(title)}</h2>"]
        for item in items:
            if isinstance(item, str):
                parts.append(item if item.startswith("<") else f"<p class='note'>{html.escape(item)}</p>")
                continue
            div = pio.to_html(item.figure, full_html=False, include_plotlyjs=False, div_id=f"fig-{item.name}",
                              config={"displaylogo": False, "responsive": True})
            link = f" <a href='figures/{item.name}.png'>PNG</a>" if item.name in png_names else ""
            caption = f"<figcaption>{html.escape(item.caption)}{link}</figcaption>" if item.caption or link else ""
            parts.append(f"<figure data-figure='{item.name}'>{div}{caption}</figure>")
        parts.append("</section>")
        body.append("".join(parts))
    links = "".join(f"<li><a href='tables/{p.name}' download>{html.escape(p.name)}</a></li>" for p in tables)
    note_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    nav = "".join(f"<a href='#{_slug(t)}'>{html.escape(t)}</a>" for t, _ in sections) + "<a href='#tables'>Tables</a>"
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    title = "trusttrace report: " + " vs ".join(r.label for r in runs)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>{note_html}{_header(runs)}{''.join(body)}"
            f"<section id='tables'><h2>Tables</h2><ul>{links or '<li>none</li>'}</ul></section>"
            f"<footer><p>Drawn by trusttrace {__version__} at {stamp} from the run's tables only.</p></footer>"
            "</body></html>")
