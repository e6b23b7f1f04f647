"""Steering and training figures: the headline metric and perplexity against α, probe accuracy against the
steering effect, and the pre-training loss. Sweep names, run labels and source revisions are data: they reach
plotly only through ``style.plot_text``, and names only through ``figure_id``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..runs.tables import HEADLINE, PROMPT, RANDOM, SIGNIFICANT, is_control, steered_dimension, steering_wide
from .load import Run, Sweep
from .style import Figure, colours, figure_id, plot_text, styled


def steering_figure(name: str, sweep: Sweep) -> Figure | None:
    """The headline metric and perplexity against α per source and layer, with the perplexity budget."""
    table = sweep.steering
    dim = steered_dimension(table)
    metric = HEADLINE.get(dim)
    if metric is None:
        return None
    wide = steering_wide(table)
    base = wide[wide.source_revision == "unsteered"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(plot_text(metric), "perplexity"))
    steered = wide[~wide.source_revision.map(is_control)]
    _random_bands(fig, wide[wide.source_revision == RANDOM], metric)
    groups = list(steered.groupby(["source_revision", "layer"], sort=False))
    for colour, ((source, layer), g) in zip(colours(len(groups), "Viridis"), groups):
        g = g.sort_values("alpha")
        label = plot_text(f"{source} · layer {int(layer)}" if layer >= 0 else f"{source} (x: proxy-tuning β)")
        p = g[f"{metric}_p_mcnemar"] if f"{metric}_p_mcnemar" in g else pd.Series(np.nan, index=g.index)
        significant = (p < SIGNIFICANT).to_numpy()
        error = ({"type": "data", "symmetric": False, "array": g[f"{metric}_ci_high"] - g[metric],
                  "arrayminus": g[metric] - g[f"{metric}_ci_low"]}
                 if f"{metric}_ci_low" in g and f"{metric}_ci_high" in g else None)
        fig.add_trace(go.Scatter(
            x=g.alpha, y=g[metric], mode="lines+markers", name=label, legendgroup=label, line={"color": colour},
            error_y=error, customdata=p, marker={"symbol": np.where(significant, "star", "circle"),
                                                 "size": np.where(significant, 13, 7)},
            hovertemplate="α %{x:+g}<br>" + plot_text(metric) + " %{y:.4f}<br>McNemar p %{customdata:.3g}<extra>" +
                          label + "</extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=g.alpha, y=g.perplexity, mode="lines+markers", name=label, legendgroup=label,
                                 showlegend=False, line={"color": colour},
                                 hovertemplate="α %{x:+g}<br>perplexity %{y:.4f}<extra>" + label + "</extra>"),
                      row=1, col=2)
    if len(base):
        fig.add_hline(y=float(base[metric].iloc[0]), line={"color": "#444", "dash": "dot"}, row=1, col=1,
                      annotation_text="unsteered", annotation_position="top left")
        budget = sweep.ppl_budget
        limit = budget * float(base.perplexity.iloc[0])
        fig.add_hline(y=limit, line={"color": "#b2182b", "dash": "dash"}, row=1, col=2)
        # on a log axis an annotation's y is log10 of the value (add_hline's own annotation would put the label,
        # and stretch the axis, at 10^limit)
        fig.add_annotation(x=0, xref="x2 domain", y=float(np.log10(limit)) if limit > 0 else 0.0, yref="y2",
                           text=f"budget {budget:g}× unsteered", showarrow=False, xanchor="left", yanchor="bottom")
        fig.add_hline(y=float(base.perplexity.iloc[0]), line={"color": "#444", "dash": "dot"}, row=1, col=2)
    prompt = wide[wide.source_revision == PROMPT]
    if len(prompt) and metric in prompt:
        fig.add_hline(y=float(prompt[metric].iloc[0]), line={"color": "#1b7837", "dash": "dashdot"}, row=1, col=1,
                      annotation_text="prompting baseline", annotation_position="bottom left")
    for col in (1, 2):
        fig.update_xaxes(title="steering strength α (× projection std)", row=1, col=col)
    fig.update_yaxes(title=plot_text(f"{metric} (fraction)"), row=1, col=1)
    fig.update_yaxes(title="perplexity (per token)", type="log", row=1, col=2)
    title = f"{name}: {dim} under steering ({metric} and perplexity against α)"
    return Figure(figure_id(name, kind="steering"), title, styled(fig, title),
                  f"Error bars: 95 % Wilson intervals. Stars: α whose {metric} differs from the unsteered model's "
                  f"on the same items (McNemar's exact test, p < {SIGNIFICANT}). Grey band: the random directions of "
                  "the vectors' norm (95 % interval of their pooled outcomes); a vector inside it does no more than "
                  "any push of its size. Green line: the prompting baseline.")


def _random_bands(fig: go.Figure, random: pd.DataFrame, metric: str) -> None:
    """The random directions' pooled 95 % interval of ``metric`` against α, one grey band per layer."""
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if random.empty or low not in random or high not in random:
        return
    for layer, g in random.groupby("layer", sort=True):
        g = g.sort_values("alpha")
        label = plot_text(f"random directions · layer {int(layer)}")
        fig.add_trace(go.Scatter(x=g.alpha, y=g[high], mode="lines", line={"width": 0}, showlegend=False,
                                 legendgroup=label, hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Scatter(x=g.alpha, y=g[low], mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor="rgba(120,120,120,0.25)", name=label, legendgroup=label,
                                 customdata=g[metric],
                                 hovertemplate="α %{x:+g}<br>random mean %{customdata:.4f}<extra>" + label +
                                               "</extra>"), row=1, col=1)


def correlation_figure(name: str, sweep: Sweep) -> Figure | None:
    """Each source's probe accuracy at the steering layer against its steering effect (the paper's Fig. 5)."""
    corr, probes, table = sweep.correlation, sweep.probes, sweep.steering
    if corr is None or probes is None or corr.empty:
        return None
    dim = steered_dimension(table)
    metric = HEADLINE[dim]
    wide = steering_wide(table)
    base = float(wide[wide.source_revision == "unsteered"][metric].iloc[0])
    acc = probes[(probes.metric == "accuracy") & (probes.dimension == dim)]
    fig = go.Figure()
    notes = []
    for colour, row in zip(colours(len(corr), "Viridis"), corr.itertuples(index=False)):
        layer, alpha = int(row.layer), float(row.alpha)
        vectors = ~wide.source_revision.map(is_control) & (wide.source_revision != "self")
        effect = wide[(wide.layer == layer) & (wide.alpha == alpha) & vectors]
        x = acc[acc.layer == layer].set_index("revision").value.reindex(effect.source_revision)
        fig.add_trace(go.Scatter(
            x=x.to_numpy(), y=effect[metric].to_numpy() - base, mode="markers+text",
            text=[plot_text(r) for r in effect.source_revision],
            textposition="top center", name=f"layer {layer}, α {alpha:+g}", marker={"color": colour, "size": 10},
            hovertemplate="%{text}<br>probe accuracy %{x:.4f}<br>effect %{y:+.4f}<extra></extra>"))
        notes.append(f"layer {layer}, α {alpha:+g}: Pearson r {row.pearson_r:+.2f} [{row.pearson_lo:+.2f}, "
                     f"{row.pearson_hi:+.2f}], Spearman {row.spearman_r:+.2f} (n = {int(row.n_sources)})")
    fig.update_xaxes(title="probe accuracy of the source checkpoint at the steering layer (fraction)")
    fig.update_yaxes(title=plot_text(f"steering effect: Δ{metric} vs unsteered"))
    title = f"{name}: probe accuracy against steering effect"
    return Figure(figure_id(name, kind="probe-vs-effect"), title, styled(fig, title),
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
    return Figure(figure_id(run.label, kind="loss"), title, styled(fig, title))
