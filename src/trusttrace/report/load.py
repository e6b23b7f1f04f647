"""Reading a run for the report: every table a run folder (or a CSV of tidy rows) holds, found through
``RunLayout``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..layout import RunLayout, SteerLayout, read_csv, read_json


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
        return float(self.config.get("ppl_budget", 1.33))


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


def _comparison_csv(path: Path, label: str | None) -> Run:
    frame = pd.read_csv(path)
    missing = {"step", "dimension", "layer", "metric", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: a comparison CSV needs columns step, dimension, layer, metric, value "
                         f"(missing {sorted(missing)}).")
    if "revision" not in frame:
        frame["revision"] = [f"step{s}" for s in frame.step]
    return Run(label or path.stem, path, results=frame, tables={path.name: path})


def _sweep(layout: SteerLayout) -> Sweep | None:
    table = read_csv(layout.steering_csv)
    if table is None:
        return None
    config = read_json(layout.settings) if layout.settings.is_file() else {}
    return Sweep(table, read_csv(layout.best_csv), read_csv(layout.correlation_csv), config,
                 read_csv(layout.source.results_csv))


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Gather whatever tables ``path`` holds: a trace, its phases, pre-training curves, sweeps; or a CSV."""
    root = Path(path)
    if root.is_file():
        return _comparison_csv(root, label)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is neither a run folder nor a CSV of results rows.")
    run = Run(label or root.resolve().name, root)
    layout = RunLayout(root)
    trace = layout.trace()
    if trace is not None:
        run.results = trace.read_results()
        where = trace.root.relative_to(root).as_posix()
        run.tables["results.csv" if where == "." else f"{where.replace('/', '_')}_results.csv"] = trace.results_csv
        run.manifest = trace.read_manifest()
        run.phases = read_csv(trace.phases_csv)
        if run.phases is not None:
            run.tables["mi_phases.csv"] = trace.phases_csv
    pretrain = layout.pretrain()
    if pretrain is not None:
        run.loss, run.checkpoints = read_csv(pretrain.loss_csv), read_csv(pretrain.checkpoints_csv)
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
