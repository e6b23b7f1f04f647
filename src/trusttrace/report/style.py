"""What every figure of the report shares: the figure record, the layout, colours, the step axis, names.

Colour scales are cividis/viridis (colour-blind safe). A step axis is log(step + 1) when the steps span two
decades or more, so step 0 has a place; every figure with steps takes that choice from ``log_steps``.

Names and labels come from data (a dimension is a dataset's file name, a revision a folder name), so nothing
of them reaches a file name, an id or the page as it is: a figure's ``name`` is built by ``figure_id`` from
``[a-z0-9-]`` only, and every data value shown by plotly (titles, legends, hover text, tick labels) goes
through ``plot_text``, since plotly renders some HTML tags and ``%{...}`` template fields in its text.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
CIVIDIS = "Cividis"


SAFE_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,198}[a-z0-9])?")  # a figure's name: file stem, HTML id, anchor
_PART = 40  # characters of a data value's slug kept in an id


@dataclass
class Figure:
    """One figure of the page: ``name`` (from ``figure_id``) is its file stem, ``data-figure`` and element id;
    ``title`` is the human title, as plain text."""

    name: str
    title: str
    figure: go.Figure
    caption: str = ""

    def __post_init__(self) -> None:
        if not SAFE_ID.fullmatch(self.name):
            raise ValueError(f"figure name {self.name!r} is not an id of [a-z0-9-]; build it with figure_id")


def slug(text: str) -> str:
    """``text`` as a file-name and anchor friendly id: ASCII letters and digits, lower case, ``-`` between."""
    dashed = "".join(c if c.isascii() and c.isalnum() else "-" for c in text)
    return re.sub(r"-+", "-", dashed).strip("-").lower() or "run"


def id_part(value: str) -> str:
    """A data value (a dimension, a run label) as part of an id: itself when it is a plain slug already
    (``toxicity``, ``demo``), else its slug and 8 hex digits of its sha256, so that two values never share one
    (``Toxicity`` → ``toxicity-…``, ``../x`` → ``x-…``)."""
    plain = slug(value)
    if plain == value and len(value) <= _PART:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{plain[:_PART].strip('-') or 'x'}-{digest}"


def figure_id(*values: str, kind: str) -> str:
    """A figure's name: the ``id_part`` of each data value, then ``kind`` (the report's own words, a slug)."""
    return "-".join([*(id_part(v) for v in values), slug(kind)])


def distinct(figures: Iterable[Figure]) -> None:
    """Give figures that share a name (``a-b`` + ``c`` and ``a`` + ``b-c``) distinct ones: ``-2``, ``-3``, …"""
    figures = list(figures)
    taken = {f.name for f in figures}
    seen: set[str] = set()
    for fig in figures:
        if fig.name in seen:
            n = 2
            while f"{fig.name}-{n}" in taken:
                n += 1
            fig.name = f"{fig.name}-{n}"
            taken.add(fig.name)
        seen.add(fig.name)


def plot_text(value: object) -> str:
    """A data value as plotly text: shown as it is, never as markup (``<b>``, ``<a href>``) nor as a template
    field (``%{x}``). ``"``, ``'`` and ``%`` are written as numeric character references, which plotly decodes
    (it knows ``&amp;``, ``&lt;`` and ``&gt;`` by name, but not ``&quot;``)."""
    escaped = html.escape(str(value), quote=False)
    return escaped.replace('"', "&#34;").replace("'", "&#39;").replace("%", "&#37;")


def styled(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    """The report's common layout; ``title`` is plain text (escaped here for plotly)."""
    fig.update_layout(title=plot_text(title), height=height, template="plotly_white",
                      margin={"t": 60, "l": 70, "r": 30, "b": 55}, legend={"font": {"size": 10}},
                      hoverlabel={"namelength": -1})
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
    """A legend entry as plotly text (escaped; see ``plot_text``): ``what``, prefixed with the run's label when
    several runs share the axes."""
    return plot_text(f"{label} · {what}" if n_runs > 1 else what)
