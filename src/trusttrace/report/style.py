"""What every figure of the report shares: the figure record, the layout, colours, the step axis, names.

Colour scales are cividis/viridis (colour-blind safe). A step axis is log(step + 1) when the steps span two
decades or more, so step 0 has a place; every figure with steps takes that choice from ``log_steps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
CIVIDIS = "Cividis"


@dataclass
class Figure:
    """One figure of the page."""

    name: str  # file stem and data-figure id
    title: str
    figure: go.Figure
    caption: str = ""


def slug(text: str) -> str:
    """``text`` as a file-name and anchor friendly id."""
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower() or "run"


def styled(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    """The report's common layout."""
    fig.update_layout(title=title, height=height, template="plotly_white", margin={"t": 60, "l": 70, "r": 30, "b": 55},
                      legend={"font": {"size": 10}}, hoverlabel={"namelength": -1})
    return fig


def colours(n: int, scale: str = CIVIDIS) -> list[str]:
    """``n`` colours spread along ``scale``."""
    from plotly.colors import sample_colorscale

    sampled: list[str] = sample_colorscale(scale, list(np.linspace(0.0, 0.9, max(n, 1))))
    return sampled


def with_alpha(colour: str, a: float) -> str:
    """A plotly colour string with opacity ``a``."""
    if colour.startswith("rgb("):
        return colour.replace("rgb(", "rgba(").replace(")", f", {a})")
    if colour.startswith("#") and len(colour) == 7:
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        return f"rgba({r}, {g}, {b}, {a})"
    return colour


def log_steps(step_columns: Sequence[pd.Series]) -> bool:
    """Whether the steps span enough decades for a log axis (of step + 1, so that step 0 has a place)."""
    present = [s for s in step_columns if len(s)]
    steps = pd.concat(present).dropna() if present else pd.Series(dtype=float)
    return len(steps) > 0 and float(steps.max()) + 1 >= 100 * (float(steps.min()) + 1)


def step_axis(fig: go.Figure, log_axis: bool, **where: int) -> None:
    """Title and scale of a step axis (see ``log_steps``); x values must then be step + 1 on a log axis."""
    title = "pre-training step + 1 (log scale)" if log_axis else "pre-training step"
    fig.update_xaxes(title=title, type="log" if log_axis else "linear", **where)


def legend_name(label: str, n_runs: int, what: str) -> str:
    """A legend entry: ``what``, prefixed with the run's label when several runs share the axes."""
    return f"{label} · {what}" if n_runs > 1 else what
