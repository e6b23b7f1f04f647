"""The ``trace`` job: for each checkpoint of a series, extract every dimension's activations and analyse them.

The unit of work is one checkpoint: fetch → extract every dataset → probes and MI → write its part →
delete the download. Units run in this process (downloads ``prefetch`` checkpoints ahead) or as Ray tasks
(``executors``). A rerun with the same settings skips finished checkpoints and stored activations, so a
killed sweep resumes where it stopped; a rerun that selects more checkpoints extends the folder's table,
which is rewritten after every checkpoint. The folder's files are listed in ``layout``; it may also be an
fsspec URL (``remote``).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ._io import write_with
from ._version import __version__, package_versions
from .analysis import (
    AnalysisConfig,
    analyse,
    random_init_rows,
    resolve_transfer,
    transfer_rows,
    with_controls,
)
from .checkpoints import Checkpoint, CheckpointSeries
from .data import DIMENSIONS, TrustDataset, dataset_name, dataset_names, load_datasets
from .errors import OptionError
from .executors import ExecutorConfig, map_tasks, share
from .extract import ExtractConfig, check_statements, extract_last_token
from .fetcher import CheckpointFetcher, Fetch, FetchConfig, Fetched
from .integrity import weights_stat
from .layout import TraceLayout, read_csv
from .models import LoadConfig, LoadedModel, choose_device, load_model, vocab_sha256
from .outputs import check_output, removed_on_usage_error, start_over
from .progress import Progress
from .remote import RunFolder, is_url
from .resume import control_done, local_weights, merge_parts, resume_trace
from .splits import check as check_splits
from .store import is_complete, load_activations, save_activations
from .tables import RESULT_COLUMNS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TraceConfig:
    """Everything a ``trace`` run needs; stored in its manifest."""

    model: str  # hub id, local series folder, checkpoint folder, GGUF file or built-in name
    out: str  # run folder, or an fsspec URL
    revisions: tuple[str, ...] | None = None  # explicit hub revisions (else catalog/hub/local listing)
    select: str | None = None  # first:N | last:N | every:K | log:N | names
    dimensions: tuple[str, ...] = DIMENSIONS  # dimension names or CSV/JSONL files of statement,label rows
    limit: int | None = None  # first N statements of each dataset
    data_dir: str | None = None  # else $TRUSTTRACE_DATA_DIR, else download
    token_position: str = "last"  # which token's activations are stored (the paper's: the last)
    load: LoadConfig = field(default_factory=LoadConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)  # how downloads overlap the work
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where the work runs
    transfer: tuple[tuple[str, str], ...] = ()  # (TRAIN, TEST): probes trained on all of one, scored on the other
    overwrite: bool = False  # start the folder over once every input is checked (outputs.start_over)

    def __post_init__(self) -> None:
        dataset_names([*self.dimensions, *(d for pair in self.transfer for d in pair)])  # unknown, missing, clashing
        if any(train == test for train, test in self.transfer):
            raise OptionError(f"--transfer {list(self.transfer)}: train and test must be different datasets, e.g. "
                              "reliability:truthfulqa_heldout.")
        if self.limit is not None and self.limit < 10:
            raise OptionError(f"--limit {self.limit}: probes need at least 10 statements per dimension; give "
                              "10 or more, or leave --limit out for every statement.")

    def settings(self) -> dict[str, Any]:
        """The settings that change the numbers (a run folder holds results of one value of each)."""
        return {"model": self.model, "limit": self.limit, "dtype": self.load.dtype,
                "token_position": self.token_position, "max_statement_tokens": self.extract.max_statement_tokens,
                **self.analysis.settings()}


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
        merge_parts(self.layout)
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
    if remote is not None:  # work in a fresh local mirror of what the URL holds
        remote.reset()
        remote.pull("manifest.json", "controls/random-init.csv", folders=("parts",))
    layout = TraceLayout(remote.local if remote is not None else Path(config.out))
    series = CheckpointSeries.resolve(config.model, config.revisions).select(config.select)
    names = [*config.dimensions, *(d for pair in config.transfer for d in pair)]
    datasets = load_datasets(names, config.data_dir, config.limit)
    pairs = resolve_transfer(config.transfer, datasets, config.data_dir, config.limit)
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
        "config": asdict(config), "settings": {**config.settings(), "transfer": [list(p) for p in pairs]},
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
    results = merge_parts(layout)
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
            if _needs_model(config, ckpt, datasets, run.layout):
                local.prefetch(ckpt)
            for ahead in todo[i + 1:i + 1 + config.fetch.prefetch]:  # the current one is first in the queue
                if _needs_model(config, ahead, datasets, run.layout) and local.room_for_one_more():
                    local.prefetch(ahead)
            return _trace_checkpoint(config, ckpt, datasets, analysis, local, run.progress, run.layout)

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
        record = _trace_checkpoint(config, ckpt, datasets, analysis, fetcher, Progress(), layout)
    finally:
        fetcher.close()
    if remote is not None:
        remote.push(layout.relative(layout.activations(ckpt.name)), layout.relative(layout.random_init_csv),
                    layout.relative(layout.part(ckpt.name)))
    return record


def _expected_metadata(config: TraceConfig, ds: TrustDataset, weights: str | None = None) -> dict[str, str]:
    """Metadata a stored activation file must carry to be reused for ``ds`` (and, for a local checkpoint,
    the fingerprint of the weights it was extracted from)."""
    expect = {"dataset_sha256": ds.sha256, "n_rows": str(len(ds)), "token_position": config.token_position}
    return expect if weights is None else {**expect, "weights_sha256": weights}


def _needs_model(config: TraceConfig, ckpt: Checkpoint, datasets: dict[str, TrustDataset],
                 layout: TraceLayout) -> bool:
    """Whether some dataset of ``ckpt`` still has to be extracted (else intact stored activations suffice).

    A missing activation file answers at once: the weights' sha256 is only read to vet stored files, so a
    fresh sweep does not hash the next checkpoint on the main thread before its download may start.
    """
    if not all(layout.activation(ckpt.name, name).is_file() for name in datasets):
        return True
    weights = local_weights(ckpt)
    return not all(is_complete(layout.activation(ckpt.name, name), _expected_metadata(config, ds, weights),
                               quiet=True) for name, ds in datasets.items())


def _load(config: TraceConfig, ckpt: Checkpoint, fetched: Fetched, random_init: int | None = None) -> LoadedModel:
    load = config.load
    revision = None if fetched.source != ckpt.ref else ckpt.revision
    return load_model(fetched.source, revision, load.dtype, load.device, trust_remote_code=load.trust_remote_code,
                      allow_pickle=load.allow_pickle, blocks=load.blocks, cache_dir=load.cache_dir,
                      random_init=random_init)


class _Model:
    """A checkpoint's model, fetched and loaded on first need; what it records; its download released."""

    def __init__(self, config: TraceConfig, ckpt: Checkpoint, fetcher: CheckpointFetcher) -> None:
        self.config, self.ckpt, self.fetcher = config, ckpt, fetcher
        self.fetched: Fetched | None = None
        self.lm: LoadedModel | None = None
        self.commit = ckpt.commit
        self.record: dict[str, Any] = {"step": ckpt.step}

    def fetch(self) -> Fetched:
        if self.fetched is None:
            self.fetched = self.fetcher.get(self.ckpt)
            self.commit = self.fetched.commit or self.commit
        return self.fetched

    def get(self) -> LoadedModel:
        if self.lm is None:
            self.lm = _load(self.config, self.ckpt, self.fetch())
            self.commit = self.commit or self.lm.info.commit
            self.record.update(dtype=self.lm.info.dtype, dtype_reason=self.lm.info.dtype_reason, commit=self.commit,
                               n_layers=self.lm.info.n_layers, hidden_size=self.lm.info.hidden_size)
        return self.lm

    def drop(self) -> None:
        self.lm = None
        gc.collect()


def _random_init_control(config: TraceConfig, datasets: dict[str, TrustDataset], analysis: AnalysisConfig,
                         layout: TraceLayout, model: _Model) -> pd.DataFrame:
    """``control_random_init`` of every dataset: traced by the first unit that needs it, read by the others."""
    if control_done(layout, datasets):
        done = read_csv(layout.random_init_csv)
        if done is not None:
            return done
    random: LoadedModel | None = None
    frames = []
    for name, ds in datasets.items():
        path, expect = layout.control_activation(name), _expected_metadata(config, ds)
        if not is_complete(path, expect):
            if random is None:  # the checkpoint's architecture, freshly initialised (seeded)
                random = _load(config, model.ckpt, model.fetch(), random_init=analysis.seed)
            acts = extract_last_token(random, ds.statements, config.extract)
            save_activations(path, acts, ds.labels, {"model": config.model, "revision": "random-init",
                                                     "seed": str(analysis.seed), "dataset": name,
                                                     "dtype": random.info.dtype, **expect})
            del acts
        stored = load_activations(path)
        frames.append(random_init_rows(stored.layers, stored.labels, analysis, ds.groups).assign(dimension=name))
    del random
    gc.collect()
    rows = pd.concat(frames, ignore_index=True)
    write_with(layout.random_init_csv, lambda tmp: rows.to_csv(tmp, index=False))
    return rows


def _trace_checkpoint(config: TraceConfig, ckpt: Checkpoint, datasets: dict[str, TrustDataset],
                      analysis: AnalysisConfig, fetcher: CheckpointFetcher, progress: Progress,
                      layout: TraceLayout) -> dict[str, Any]:
    """Extract (what is not stored yet) and analyse every dataset of one checkpoint; write its part."""
    started = time.perf_counter()
    model = _Model(config, ckpt, fetcher)
    weights = local_weights(ckpt)
    if weights is not None:
        model.record.update(weights_sha256=weights, weights_stat=weights_stat(ckpt.ref))
    frames = []
    try:
        controls = _random_init_control(config, datasets, analysis, layout, model) if analysis.random_init else None
        for name, ds in datasets.items():
            path = layout.activation(ckpt.name, name)
            expect = _expected_metadata(config, ds, weights)
            if not is_complete(path, expect):
                lm = model.get()
                if "vocab_sha256" not in model.record:  # hashing the vocabulary takes a while: once per checkpoint
                    model.record["vocab_sha256"] = vocab_sha256(lm.tokenizer)
                progress.start("extract", f"  extract {name}", total=len(ds))
                acts = extract_last_token(lm, ds.statements, config.extract,
                                          lambda n: progress.update("extract", advance=n))
                meta = {"model": config.model, "revision": ckpt.name,
                        "step": "" if ckpt.step is None else str(ckpt.step), "commit": model.commit or "",
                        "dataset": name, "vocab_sha256": model.record["vocab_sha256"], "dtype": lm.info.dtype,
                        "architecture": lm.info.architecture,
                        "trusttrace_version": __version__, **expect}
                save_activations(path, acts, ds.labels, meta)
                del acts, lm
            stored = load_activations(path)
            model.record.setdefault("dtype", stored.metadata.get("dtype"))
            rows = analyse(stored.layers, stored.labels, analysis, ds.groups, ds.statements)
            rows = with_controls(rows, None if controls is None else controls[controls.dimension == name])
            rows.insert(0, "dimension", name)
            frames.append(rows)
        if analysis.transfer:
            frames.append(transfer_rows(lambda name: load_activations(layout.activation(ckpt.name, name)),
                                        analysis.transfer, analysis))
    finally:
        model.drop()
    part = pd.concat(frames, ignore_index=True)
    part["test_dataset"] = part["test_dataset"].fillna("") if "test_dataset" in part else ""
    part = part.assign(model=config.model, revision=ckpt.name, step=ckpt.step, seed=analysis.seed,
                       protocol=analysis.probe.protocol, dtype=model.record.get("dtype"),
                       commit=model.commit or "")[RESULT_COLUMNS]
    layout.write_part(ckpt.name, part)
    fetcher.release(ckpt, model.fetched)
    model.record["seconds"] = round(time.perf_counter() - started, 2)
    return model.record
