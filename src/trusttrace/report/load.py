"""Reading a run for the report: every table a run folder (or a CSV of tidy rows) holds, found through
``RunLayout``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from ..core.errors import RunFolderError, RunFolderNotFoundError, environment_failure
from ..runs.layout import RunLayout, SteerLayout, TraceLayout, read_csv, read_json
from ..runs.tables import HEADLINE, steered_dimension, text

ACCEPTED = ("a trace, probe, steer, pretrain or demo run folder, or a CSV of step,dimension,layer,metric,value "
            "rows")
RESULT_NEEDS = ("step", "dimension", "layer", "metric", "value")  # what the figures read of a results table
STEERING_NEEDS = ("source_revision", "layer", "alpha", "dimension", "metric", "value")


@dataclass
class Sweep:
    """One steering sweep's tables."""

    steering: pd.DataFrame
    best: pd.DataFrame | None
    correlation: pd.DataFrame | None
    config: dict[str, Any]  # steer_config.json (the budget, the dimension)
    probes: pd.DataFrame | None  # the sources' probe results

    @property
    def ppl_budget(self) -> float:
        return float(self.config.get("ppl_budget", 1.33))  # checked finite and positive by ``_sweep``


@dataclass
class Run:
    """The tables of one run folder (or one CSV), each None when absent."""

    label: str
    path: Path
    results: pd.DataFrame | None = None  # trace rows
    manifest: dict[str, Any] | None = None
    phases: pd.DataFrame | None = None
    sweeps: dict[str, Sweep] = field(default_factory=dict)  # by name
    loss: pd.DataFrame | None = None
    checkpoints: pd.DataFrame | None = None
    tables: dict[str, Path] = field(default_factory=dict)  # download name → file

    @property
    def is_empty(self) -> bool:
        """Nothing to draw: no results, no sweep, no loss curve."""
        return self.results is None and not self.sweeps and self.loss is None


T = TypeVar("T")


def _read(path: Path, reader: Callable[[Path], T]) -> T:
    """``reader(path)``, with a file that cannot be parsed refused as a ``RunFolderError`` naming it."""
    try:
        return reader(path)
    except (ValueError, UnicodeDecodeError, OSError, RecursionError) as err:  # parser, JSON and Arrow errors
        named = getattr(err, "filename", None)  # the file the system refused, else the one being read
        refused = environment_failure(err, None if named else str(path))  # no permission, an I/O error
        if refused is not None:
            raise refused from err
        raise RunFolderError(f"{path} cannot be read ({type(err).__name__}: {str(err)[:200]}); it was not written "
                             "by trusttrace, or was damaged. Restore it, or run the command that writes it again."
                             ) from err


def checked_results(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A results table the figures can draw: the columns they read, with numbers where numbers belong.

    ``step`` may be empty (a single checkpoint) and ``value`` missing (NaN); everything else is refused
    with the file, the column and the first bad row, so a hand-edited table fails here and not in a figure.
    """
    missing = [c for c in RESULT_NEEDS if c not in frame.columns]
    if missing:
        raise RunFolderError(f"{path} lacks column(s) {missing} (it has {[str(c) for c in frame.columns][:12]}); a "
                             f"results table needs {', '.join(RESULT_NEEDS)}. Point at a table trusttrace wrote, "
                             "or add the columns.")
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    frame = frame.loc[:, ~frame.columns.duplicated()]
    for column in ("dimension", "metric"):
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise RunFolderError(f"{path}, data row {int(np.flatnonzero(empty.to_numpy())[0]) + 1}: {column} is "
                                 f"empty. Every row needs a {column}.")
        frame[column] = frame[column].astype(str)
    frame["layer"] = _numbers(frame["layer"], path, "layer", allow_missing=False, whole=True).astype("int64")
    step = _numbers(frame["step"], path, "step", allow_missing=True, whole=False)
    whole_steps = step.notna().all() and bool((step % 1 == 0).all())
    frame["step"] = step.astype("int64") if whole_steps else step  # as trusttrace writes it: int, or float with NaN
    frame["value"] = _numbers(frame["value"], path, "value", allow_missing=True, whole=False, negative=True)
    if "revision" not in frame:
        frame["revision"] = ["" if pd.isna(s) else f"step{int(s) if s % 1 == 0 else s}" for s in frame.step]
    frame["revision"] = text(frame["revision"])
    return frame


def _numbers(column: pd.Series, path: Path, name: str, *, allow_missing: bool, whole: bool,
             negative: bool = False) -> pd.Series:
    """``column`` as float64; a value that is not a finite number (or is negative, or fractional where a whole
    number belongs) is refused naming the row."""
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    text = column.astype(str).str.strip()
    absent = column.isna() | text.isin(["", "nan", "NaN", "None", "<NA>"])
    bad = (numbers.isna() & ~absent) | (absent & (not allow_missing)) | np.isinf(numbers)
    if not negative:
        bad |= numbers < 0
    if whole:
        bad |= numbers.notna() & (numbers % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        kind = "a whole number ≥ 0" if whole else ("a finite number" if negative else "a finite number ≥ 0")
        raise RunFolderError(f"{path}, data row {row + 1}: {name} {str(column.iloc[row])[:40]!r} is not {kind}"
                             f"{'' if allow_missing else ' (and may not be empty)'}. Fix the row, or point at a table "
                             "trusttrace wrote.")
    return numbers


def _comparison_csv(path: Path, label: str | None) -> Run:
    frame = _read(path, pd.read_csv)
    return Run(label or path.stem, path, results=checked_results(frame, path), tables={path.name: path})


def _trace_results(trace: TraceLayout) -> pd.DataFrame:
    path = trace.results_parquet if trace.results_parquet.is_file() else trace.results_csv
    if not path.is_file():
        raise RunFolderError(f"{trace.root} has a manifest but no results.parquet or results.csv; the run never "
                             "finished a checkpoint. Rerun the trace, or point at a finished run.")
    return checked_results(_read(trace.root, lambda _: trace.read_results()), path)


def _budget(config: dict[str, Any], path: Path) -> None:
    budget = config.get("ppl_budget", 1.33)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise RunFolderError(f"{path}: ppl_budget {budget!r} is not a positive finite number (e.g. 1.33). Fix the "
                             "file, or run `trusttrace steer` again.")


def checked_steering(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A steering table the figures can draw: its columns, numbers, and the rows the figure plots (the
    steered dimension's headline metric and perplexity, unsteered and steered)."""
    missing = [c for c in STEERING_NEEDS if c not in table.columns]
    if missing:
        raise RunFolderError(f"{path} lacks column(s) {missing}; a steering table needs {', '.join(STEERING_NEEDS)}. "
                             "Run `trusttrace steer` again, or point at the folder it wrote.")
    table = table.copy()
    for column in ("layer", "alpha", "value"):
        table[column] = _numbers(table[column], path, column, allow_missing=column == "value", whole=column == "layer",
                                 negative=True)
    table["source_revision"], table["metric"] = table.source_revision.astype(str), table.metric.astype(str)
    table["dimension"] = table.dimension.astype(str)
    dimension = steered_dimension(table)
    needed = {HEADLINE[dimension], "perplexity"} if dimension in HEADLINE else set()
    absent = sorted(needed - set(table.metric))
    if dimension not in HEADLINE or absent:
        raise RunFolderError(f"{path}: no {' and '.join(absent) or 'known dimension'} rows (dimension "
                             f"{dimension!r}); a steering table holds one of {', '.join(HEADLINE)} with its headline "
                             "metric, and perplexity. Run `trusttrace steer` again, or point at the folder it wrote.")
    return table


def _sweep(layout: SteerLayout) -> Sweep | None:
    table = _read(layout.steering_csv, read_csv)
    if table is None:
        return None
    table = checked_steering(table, layout.steering_csv)
    config = _read(layout.settings, read_json) if layout.settings.is_file() else {}
    _budget(config, layout.settings)
    source = _read(layout.source.results_csv, read_csv)
    return Sweep(table, _read(layout.best_csv, read_csv), _read(layout.correlation_csv, read_csv), config,
                 None if source is None else checked_results(source, layout.source.results_csv))


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Gather whatever tables ``path`` holds: a trace, its phases, pre-training curves, sweeps; or a CSV."""
    root = Path(path)
    if root.is_file():
        return _comparison_csv(root, label)
    if not root.is_dir():
        raise RunFolderNotFoundError(f"{root} does not exist. Give {ACCEPTED}.")
    run = Run(label or root.resolve().name, root)
    layout = RunLayout(root)
    trace = layout.trace()
    if trace is not None:
        run.results = _trace_results(trace)
        where = trace.root.relative_to(root).as_posix()
        run.tables["results.csv" if where == "." else f"{where.replace('/', '_')}_results.csv"] = trace.results_csv
        run.manifest = _read(trace.manifest, read_json) if trace.manifest.is_file() else None
        run.phases = _read(trace.phases_csv, read_csv)
        if run.phases is not None:
            run.tables["mi_phases.csv"] = trace.phases_csv
    pretrain = layout.pretrain()
    if pretrain is not None:
        run.loss, run.checkpoints = _read(pretrain.loss_csv, read_csv), _read(pretrain.checkpoints_csv, read_csv)
        for name, file in (("loss.csv", pretrain.loss_csv), ("checkpoints.csv", pretrain.checkpoints_csv)):
            if file.is_file():
                run.tables[f"pretrain_{name}"] = file
    for name, steer in layout.steers().items():
        sweep = _sweep(steer)
        if sweep is None:
            continue
        run.sweeps[name] = sweep
        for file in (steer.steering_csv, steer.best_csv, steer.correlation_csv):
            if file.is_file():
                run.tables[f"{name}_{file.name}"] = file
    return run


def steps_of(runs: Sequence[Run], dimension: str) -> list[pd.Series]:
    """The step column of every run's rows of ``dimension`` (for choosing a step axis)."""
    return [r.results[r.results.dimension == dimension].step for r in runs if r.results is not None]
