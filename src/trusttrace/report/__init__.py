"""``trusttrace report``: one offline HTML page (and a PNG per figure) drawn from a run's tables only.

A run folder may be a ``trace`` run, a ``steer`` run, a ``pretrain`` run (with ``trace/``), a ``demo`` run
(all of these in sub-folders; ``layout.RunLayout`` says which), or a plain CSV of tidy rows (``step,
dimension, layer, metric, value``: e.g. the paper's numbers) to compare against. Sections appear only where
their tables exist; a missing one leaves a note. Several runs are overlaid on the same axes (line dash tells
the runs apart).

The page inlines plotly.js, so it opens without a network. PNGs are written with kaleido where it and a
Chromium/Chrome are installed; otherwise the page says so and carries the interactive figures only.
Colour scales are cividis/viridis (colour-blind safe); "layer l" is the output of decoder block l.

Names, labels and values in the tables are data (a dimension is a dataset's file name): the page escapes them
for where they go, figures and files are named by ``style.figure_id`` and ``layout.safe_name``, and nothing
is written outside the report folder (``export.inside``).

Modules: ``load`` (a run's tables), ``style`` (what figures share), ``probe_figures``, ``mi_figures``,
``steer_figures`` (one implementation of each figure), ``export`` (PNG, HTML), ``page`` (the HTML page).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import OptionError, RunFolderError, RunFolderNotFoundError
from ..core.files import write_text_atomic
from ..core.runlock import hold
from ..runs.layout import ReportLayout, report_for
from ..runs.outputs import check_output, refuse_overlap, start_over
from ..runs.tables import steered_dimension, steering_verdict
from .export import write_pngs
from .load import ACCEPTED, Run, load_run
from .mi_figures import information_plane, mi_curves, write_mi_figures
from .page import Html, Section, copy_tables, page, table_html
from .probe_figures import by_layer, probe_curves, probe_heatmap
from .steer_figures import correlation_figure, loss_figure, steering_figure
from .style import Figure, distinct

__all__ = ["ReportConfig", "ReportResult", "Run", "load_run", "run_report", "write_mi_figures"]


@dataclass(frozen=True)
class ReportConfig:
    """Which runs to draw, and where."""

    runs: tuple[str, ...]  # run folders (trace, steer, pretrain, demo) or results CSVs; several are overlaid
    out: str | None = None  # default RUN/report (one run) or RUN/report-compare (several)
    png: bool = True  # also a PNG of each figure (needs kaleido and Chromium)
    overwrite: bool = False  # start the report folder over (only a report folder, or an empty one)

    def __post_init__(self) -> None:
        if not self.runs:
            raise OptionError(f"Give at least one run to report on: {ACCEPTED}.")


@dataclass
class ReportResult:
    """Where the report went and what it holds."""

    page: Path
    figures: list[str]
    pngs: list[Path]
    notes: list[str] = field(default_factory=list)


def _probe_section(runs: Sequence[Run], dims: list[str]) -> Section:
    items: list[Figure | str] = []
    for dim in dims:
        for run in runs:
            for metric in ("accuracy", "selectivity"):
                if run.results is not None and (fig := probe_heatmap(run.results, dim, run.label, metric)) is not None:
                    items.append(fig)
        items += [fig for fig in (probe_curves(runs, dim), by_layer(runs, dim)) if fig is not None]
    return "Probe accuracy", items or ["No probe rows in this run (trace with the probe analysis)."]


def _mi_section(runs: Sequence[Run], dims: list[str]) -> Section:
    items: list[Figure | str] = [fig for dim in dims for fig in (mi_curves(runs, dim), information_plane(runs, dim))
                                 if fig is not None]
    return "Mutual information", items or [
        "No MI rows over a series of steps in this run (a single checkpoint's MI is drawn by layer above)."]


def _steering_section(runs: Sequence[Run]) -> Section:
    items: list[Figure | str] = []
    for run in runs:
        for name, sweep in run.sweeps.items():
            label = f"{run.label}/{name}" if len(runs) > 1 else name
            if (fig := steering_figure(label, sweep)) is not None:
                items.append(fig)
            if sweep.best is not None:
                items.append(Html(f"<h4>{html.escape(label)}: best α per source (perplexity ≤ "
                                  f"{sweep.ppl_budget:g}× unsteered)</h4>" + table_html(sweep.best)))
            dimension = steered_dimension(sweep.steering)
            if dimension:
                items.append(Html(f"<p><b>Verdict.</b> {html.escape(steering_verdict(sweep.steering, dimension))}</p>"))
            if (fig := correlation_figure(label, sweep)) is not None:
                items.append(fig)
    return "Steering", items or ["No steering sweep in this run (`trusttrace steer`)."]


def _training_section(runs: Sequence[Run]) -> Section:
    items: list[Figure | str] = [fig for run in runs if (fig := loss_figure(run)) is not None]
    return "Pre-training", items or ["Not a pre-training run (no loss.csv)."]


def run_report(config: ReportConfig) -> ReportResult:
    """Write ``index.html`` (and ``figures/*.png``, ``tables/*.csv``) for one run, or several overlaid.

    Example:
        >>> run_report(ReportConfig(("runs/demo",)))  # doctest: +SKIP
    """
    for given in config.runs:  # each input exists, then the output can be written, then the tables load
        if not Path(given).exists():
            raise RunFolderNotFoundError(f"{given} does not exist. Give {ACCEPTED}.")
    out = ReportLayout(Path(config.out)) if config.out else report_for(Path(config.runs[0]), len(config.runs))
    check_output(out.root, "--out")
    runs = [load_run(p) for p in config.runs]
    empty = [str(r.path) for r in runs if r.is_empty]
    if empty:
        raise RunFolderError(f"Nothing to report in {', '.join(empty)}: no results, steering sweep or loss curve "
                             f"(an empty folder, or not one trusttrace wrote). Give {ACCEPTED}.")
    for given in config.runs:  # never into what the report reads (--out RUN, --out RUN/activations)
        if Path(given).is_dir():
            refuse_overlap(out.root, given, "report")
    with hold(out.root, "report", nested_ok=True):  # one writer at a time; a run being written may be drawn
        start_over(out.root, config.overwrite, ("report",), inputs=config.runs)
        return _draw(config, runs, out)


def _draw(config: ReportConfig, runs: list[Run], out: ReportLayout) -> ReportResult:
    """``run_report`` once its inputs are read and its folder is held."""
    dims = sorted({d for r in runs if r.results is not None for d in r.results.dimension.unique()})
    sections = [_probe_section(runs, dims), _mi_section(runs, dims), _steering_section(runs), _training_section(runs)]
    figures = [item for _, items in sections for item in items if isinstance(item, Figure)]
    distinct(figures)  # one name, one PNG and one element id per figure
    notes: list[str] = []
    pngs = write_pngs(figures, out.figures, notes) if config.png else []
    tables = copy_tables(runs, out.tables)
    write_text_atomic(out.page, page(runs, sections, tables, pngs, notes))
    return ReportResult(out.page, [f.name for f in figures], pngs, notes)
