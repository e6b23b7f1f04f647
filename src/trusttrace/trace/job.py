"""The ``trace`` job: for each checkpoint of a series, extract every dimension's activations and analyse them.

The unit of work is one checkpoint: fetch → extract every dataset → probes and MI → write its part →
delete the download. Units run in this process (downloads ``prefetch`` checkpoints ahead) or as Ray tasks
(``executors``). A rerun with the same settings skips finished checkpoints and stored activations, so a
killed sweep resumes where it stopped; a rerun that selects more checkpoints extends the folder's table,
which is rewritten after every checkpoint. The folder's files are listed in ``layout``; it may also be an
fsspec URL (``remote``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .._version import package_versions
from ..activations.extract import check_statements
from ..analysis.probe_job import AnalysisConfig, resolve_transfer
from ..analysis.splits import check as check_splits
from ..core.executors import map_tasks, share
from ..core.progress import Progress
from ..core.runlock import hold
from ..data.datasets import TrustDataset, dataset_name, load_datasets
from ..models.checkpoints import Checkpoint, CheckpointSeries
from ..models.devices import choose_device
from ..models.fetcher import CheckpointFetcher, Fetch
from ..runs.layout import TraceLayout, check_distinct
from ..runs.outputs import check_output, removed_on_usage_error, start_over
from ..runs.remote import RunFolder, is_url
from .resume import merge_parts, resume_trace, settings_key
from .unit import TraceConfig, needs_model, run_settings, trace_unit

log = logging.getLogger(__name__)


@dataclass
class TraceResult:
    """What a run produced."""

    out: Path  # the run folder (for a URL run, its local mirror)
    results: pd.DataFrame = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)
    failed: dict[str, str] = field(default_factory=dict)  # checkpoint → error, after its retries (Ray)
    url: str | None = None  # where a URL run lives

    @property
    def outputs(self) -> dict[str, Path | str]:
        layout = TraceLayout(self.out)
        files = {"results.csv": layout.results_csv, "results.parquet": layout.results_parquet,
                 "manifest.json": layout.manifest, "activations": layout.activations_dir}
        if self.url is not None:
            return {name: f"{self.url.rstrip('/')}/{layout.relative(path)}" for name, path in files.items()}
        return {**files, "log": layout.log}


def _dataset_info(ds: TrustDataset) -> dict[str, object]:
    return {"path": ds.path, "sha256": ds.sha256, "rows": len(ds), "source": ds.source, "limit": ds.limit,
            "label1": ds.label1, "label0": ds.label0, "groups": ds.n_groups, "group_rule": ds.group_rule}


@dataclass
class _Run:
    """One call of ``run_trace``: its folder (and URL), manifest and progress."""

    config: TraceConfig
    layout: TraceLayout
    manifest: dict[str, Any]
    progress: Progress
    remote: RunFolder | None

    def finish(self, name: str, record: dict[str, Any]) -> None:
        """Record a finished checkpoint; the table is current after every one, for watching long sweeps."""
        self.manifest["checkpoints"][name] = record
        self.layout.write_manifest(self.manifest)
        merge_parts(self.layout, settings_key(self.manifest["settings"]))
        if self.remote is not None:  # the part last: a URL run counts a checkpoint done once its part is there
            rel = self.layout.relative
            self.remote.push(rel(self.layout.activations(name)), rel(self.layout.manifest),
                             rel(self.layout.results_csv), rel(self.layout.results_parquet),
                             rel(self.layout.part(name)))
        self.progress.update("checkpoints", advance=1)


def run_trace(config: TraceConfig, progress: Progress | None = None, *, fetch: Fetch | None = None,
              checkpoint_task: Callable[..., dict[str, Any]] | None = None) -> TraceResult:
    """Extract and analyse every selected checkpoint; write the tidy table and manifest under ``config.out``.

    ``fetch`` replaces the hub download for every checkpoint, ``checkpoint_task`` the Ray task (both for
    benchmarks and tests). With the Ray executor the run folder must be reachable from every worker.

    Example:
        >>> run_trace(TraceConfig(model="smollm2-135m-instruct", out="runs/smol", limit=400))  # doctest: +SKIP
    """
    progress = progress or Progress()
    check_output(config.out)  # before the series, the data or a model loads
    remote = RunFolder(config.out) if is_url(config.out) else None
    with hold(remote.local if remote is not None else Path(config.out), "trace"):  # one writer at a time
        return _run_trace(config, progress, remote, fetch, checkpoint_task)


def _run_trace(config: TraceConfig, progress: Progress, remote: RunFolder | None, fetch: Fetch | None,
               checkpoint_task: Callable[..., dict[str, Any]] | None) -> TraceResult:
    """``run_trace`` once its folder is held: inputs checked, then the checkpoints still to do."""
    if remote is not None:  # work in a fresh local mirror of what the URL holds
        remote.reset()
        remote.pull("manifest.json", "controls/random-init.csv", folders=("parts",))
    layout = TraceLayout(remote.local if remote is not None else Path(config.out))
    series = CheckpointSeries.resolve(config.model, config.revisions).select(config.select)
    check_distinct([c.name for c in series], "checkpoints")  # one file name each, on any file system
    names = [*config.dimensions, *(d for pair in config.transfer for d in pair)]
    datasets = load_datasets(names, config.data_dir, config.limit)
    check_distinct(datasets, "datasets")
    pairs = resolve_transfer(config.transfer, datasets)
    if "probe" in config.analysis.analyses:  # data the protocol cannot split: refused before anything is written
        for name in config.dimensions:
            ds = datasets[dataset_name(name)]
            check_splits(ds.labels, ds.groups, config.analysis.probe.protocol, config.analysis.probe.folds, ds.name)
    if series.checkpoints:  # statements longer than the context: refused (or cut) before anything is written
        check_statements(series.checkpoints[0].ref, series.checkpoints[0].revision,
                         {name: ds.statements for name, ds in datasets.items()}, config.extract, config.load)
    if config.overwrite:  # every input has passed: only now may the old run go
        start_over(config.out, True, ("trace", "probe"))
    manifest: dict[str, Any] = {
        "config": asdict(config), "settings": run_settings(config, pairs),
        "versions": package_versions(),
        "seeds": {"cv_folds": config.analysis.seed},
        "series": {"source": series.source, "checkpoints": [asdict(c) for c in series]},
        "datasets": {name: _dataset_info(ds) for name, ds in datasets.items()},
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "checkpoints": {},
    }
    analysis = replace(config.analysis, transfer=tuple(pairs)).on_device(str(choose_device(config.load.device)))
    with removed_on_usage_error(layout.root, lambda: any(layout.parts.glob("*.csv"))):
        layout.root.mkdir(parents=True, exist_ok=True)
        todo = resume_trace(layout, manifest, series, datasets, config.analysis.random_init)
        progress.start("checkpoints", "checkpoints", total=len(series), done=len(series) - len(todo))
        run = _Run(config, layout, manifest, progress, remote)
        failed = _run_units(run, todo, datasets, analysis, fetch, checkpoint_task)
    results = merge_parts(layout, settings_key(manifest["settings"]))
    manifest["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest["failed"] = failed
    layout.write_manifest(manifest)
    if remote is not None:
        remote.push("results.csv", "results.parquet", "manifest.json")
    return TraceResult(layout.root, results, manifest, failed, remote.url if remote is not None else None)


def _run_units(run: _Run, todo: list[Checkpoint], datasets: dict[str, TrustDataset], analysis: AnalysisConfig,
               fetch: Fetch | None, checkpoint_task: Callable[..., dict[str, Any]] | None) -> dict[str, str]:
    """Each checkpoint as a unit on the configured executor; failures (after Ray's retries) are returned."""
    config = run.config
    fetcher = None
    if config.executor.kind == "local":  # one fetcher for the whole series: it downloads ahead
        fetcher = CheckpointFetcher(config.fetch, cache_dir=config.load.cache_dir,
                                    allow_pickle=config.load.allow_pickle, fetch=fetch)
        local = fetcher

        def unit(i: int) -> dict[str, Any]:
            ckpt = todo[i]
            run.progress.update("checkpoints", description=f"checkpoint {ckpt.name}")
            if needs_model(config, ckpt, datasets, run.layout):
                local.prefetch(ckpt)
            for ahead in todo[i + 1:i + 1 + config.fetch.prefetch]:  # the current one is first in the queue
                if needs_model(config, ahead, datasets, run.layout) and local.room_for_one_more():
                    local.prefetch(ahead)
            return trace_unit(config, ckpt, datasets, analysis, local, run.progress, run.layout)

        task: Callable[..., dict[str, Any]] = unit
        calls: list[tuple[Any, ...]] = [(i,) for i in range(len(todo))]
    else:
        task = checkpoint_task or _checkpoint_task
        shared = share(datasets, config.executor)
        calls = [(config, ckpt, shared, analysis) for ckpt in todo]
    # The first unit traces the random-init control the others read: on Ray it runs alone, before them.
    first = 1 if config.executor.kind == "ray" and analysis.random_init and not run.layout.random_init_csv.is_file() \
        else 0
    waves = [(0, calls[:first]), (first, calls[first:])]
    failed: dict[str, str] = {}
    try:
        for i, record, error in ((offset + i, r, e) for offset, wave in waves for i, r, e in
                                 map_tasks(task, wave, config.executor)):
            name = todo[i].name
            if error is not None or record is None:
                failed[name] = error or "no result"
                log.error("checkpoint %s failed after %d retries: %s", name, config.executor.max_retries, error)
                run.progress.update("checkpoints", advance=1)
                continue
            if run.remote is not None and config.executor.kind == "ray":  # the worker uploaded the part
                run.remote.pull(run.layout.relative(run.layout.part(name)))
            run.finish(name, record)
    finally:
        if fetcher is not None:
            fetcher.close()
    return failed


def _checkpoint_task(config: TraceConfig, ckpt: Checkpoint, datasets: dict[str, TrustDataset],
                     analysis: AnalysisConfig) -> dict[str, Any]:
    """One checkpoint on a Ray worker: fetch, extract, analyse, write its part and activations, release.

    For a URL run folder the worker writes into its own local mirror and uploads the checkpoint's
    activations and part (the part last) before it returns.
    """
    fetcher = CheckpointFetcher(config.fetch, cache_dir=config.load.cache_dir, allow_pickle=config.load.allow_pickle)
    remote = RunFolder(config.out) if is_url(config.out) else None
    layout = TraceLayout(remote.local if remote is not None else Path(config.out))
    if remote is not None:  # the random-init control, when an earlier unit traced it
        remote.pull(layout.relative(layout.random_init_csv))
    try:
        record = trace_unit(config, ckpt, datasets, analysis, fetcher, Progress(), layout)
    finally:
        fetcher.close()
    if remote is not None:
        remote.push(layout.relative(layout.activations(ckpt.name)), layout.relative(layout.random_init_csv),
                    layout.relative(layout.part(ckpt.name)))
    return record
