"""The ``steer`` job: vectors from source checkpoints, swept over layer × α on a target model.

For each source checkpoint the vector is built from activations a ``trace`` stored (``trace`` runs first, into
``OUT/source``, reusing whatever is there) and written to ``OUT/vectors/<revision>/<dimension>.safetensors``.
The target gets its own vector the same way, in ``OUT/target`` (the self-vector baseline, written as
``OUT/vectors/self/``); when source and target are the same single model, that is the source's vector.
Every (source, layer, α) is evaluated on the dimension's benchmark plus perplexity (once per distinct direction:
a source whose vector is the target's own, bit for bit, gets a copy of the ``self`` rows); rows go to
``OUT/steering.csv``, the best α per source under a perplexity budget to ``OUT/best.csv``, and with three
or more sources the probe-accuracy/steering-effect correlation to ``OUT/correlation.csv``. With
``proxy_tuned``/``proxy_base`` every source checkpoint is also evaluated proxy-tuned at each β, and the tuned
model on its own; their rows (``proxy:<source>`` and ``tuned``) are described in ``trusttrace.steer.proxy``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..activations.extract import ExtractConfig
from ..analysis.correlation import probe_vs_effect
from ..analysis.probe_job import AnalysisConfig
from ..core.errors import RunFailure
from ..core.executors import map_tasks
from ..core.files import write_json_atomic, write_with
from ..core.progress import Progress
from ..core.runlock import hold
from ..evaluate.judges import Judges, judges_for
from ..evaluate.suite import Steering, SuiteConfig, run_suite
from ..models.checkpoints import CheckpointSeries
from ..models.loading import LoadConfig, LoadedModel, load_model, peek_model
from ..runs.layout import SteerLayout, TraceLayout, record_settings
from ..runs.outputs import check_output, removed_on_usage_error, start_over
from ..runs.tables import (
    HEADLINE,
    PROMPT,
    STEERING_COLUMNS,
    UNSTEERED,
    best_alphas,
    is_control,
    random_draw,
    steered_dimension,
    steering_verdict,
)
from ..steering.vector import SteeringVector, check_fit, check_layers, hidden_size_mismatch
from ..steering.vectors import VectorsConfig, run_vectors
from ..trace.job import TraceConfig, run_trace
from ..trace.resume import finished_steer_part, settings_key
from .config import SteerConfig
from .controls import Evaluated, control_rows, random_directions
from .proxy import ProxyEval, check_proxy_models, checkpoint_ref, proxy_jobs, proxy_model

log = logging.getLogger(__name__)


class SweepFailed(RunFailure):
    """Part of a sweep failed after its retries (the message names what and why; a rerun retries it)."""



@dataclass
class SteerResult:
    """What a sweep wrote."""

    out: Path
    table: pd.DataFrame = field(repr=False)  # steering.csv
    best: pd.DataFrame = field(repr=False)  # best.csv
    failed: dict[str, str] = field(default_factory=dict)  # evaluation → error, after its retries (Ray)
    vectors: dict[str, Path] = field(default_factory=dict)  # source name → vector file

    @property
    def verdict(self) -> str:
        """One line: what clears the controls (``tables.steering_verdict``)."""
        return steering_verdict(self.table, steered_dimension(self.table))

    @property
    def outputs(self) -> dict[str, Path]:
        layout = SteerLayout(self.out)
        found = {"steering.csv": layout.steering_csv, "best.csv": layout.best_csv,
                 "correlation.csv": layout.correlation_csv, "vectors": layout.vectors.root,
                 "source": layout.source.root, "target": layout.target.root, "log": layout.log}
        return {name: path for name, path in found.items() if path.exists()}


def _trace_vectors(model: str, config: SteerConfig, trace: TraceLayout, revisions: Sequence[str] | None,
                   select: str | None, out: Path | None) -> dict[str, SteeringVector]:
    """Trace ``model`` (probes only) for the dimension into ``trace``; one vector per checkpoint, written to
    ``out`` when given."""
    result = run_trace(TraceConfig(
        model=model, out=str(trace.root), revisions=tuple(revisions) if revisions else None, select=select,
        dimensions=(config.dimension,), limit=config.source_limit, data_dir=config.data_dir,
        load=LoadConfig(dtype=config.dtype, device=config.device), analysis=AnalysisConfig(analyses=("probe",)),
        extract=ExtractConfig(max_statement_tokens=config.max_statement_tokens),
        executor=config.executor))
    if result.failed:
        raise SweepFailed(f"Tracing {model} failed for {sorted(result.failed)}: {result.failed}. Rerun to retry.")
    names = tuple(dict.fromkeys(result.results.revision))
    built = run_vectors(VectorsConfig(str(trace.root), config.dimension, str(out) if out else
                                      str(trace.vectors.root), config.method, revisions=names))
    return built.vectors


@dataclass(frozen=True)
class _Job:
    """One evaluation of the sweep: the unsteered target, one (source, layer, α), or a proxy row set (a source
    proxy-tuned at β = ``alpha``, or the tuned model; ``proxy`` says which)."""

    name: str
    layer: int
    alpha: float
    vector: SteeringVector | None = None
    cosine: float = float("nan")
    proxy: ProxyEval | None = None
    instruction: str = ""  # the prompting baseline's

    @property
    def label(self) -> str:
        if self.proxy is not None:
            return self.name if self.proxy.beta is None else f"{self.name} β {self.alpha:g}"
        return self.name if self.vector is None else f"{self.name} layer {self.layer} α {self.alpha:+g}"


_WORKER_CACHE: dict[tuple[Any, ...], tuple[LoadedModel, Judges]] = {}  # per process: target and judges


def _target_and_judges(config: SteerConfig) -> tuple[LoadedModel, Judges]:
    key = (config.target, config.dtype, config.device, config.dimension, config.judge, config.truth_judge,
           config.data_dir)
    if key not in _WORKER_CACHE:
        _WORKER_CACHE.clear()
        name, revision = config.target_model
        target = load_model(name, revision=revision, dtype=config.dtype, device=config.device)
        _WORKER_CACHE[key] = (target, judges_for((config.dimension,), config.judge, config.truth_judge,
                                                 config.data_dir))
    return _WORKER_CACHE[key]


def _evaluate_job(config: SteerConfig, job: _Job) -> pd.DataFrame:
    """Run one job (or read it back from ``parts/``) and write its rows there."""
    layout = SteerLayout(Path(config.out))
    path, items = layout.part(job.name, job.layer, job.alpha), layout.items(job.name, job.layer, job.alpha)
    key = settings_key(config.settings())
    done = finished_steer_part(path, items, job.label, key)
    if done is not None:
        return done
    target, judges = _target_and_judges(config)
    if job.proxy is not None and config.proxy_tuned is not None and config.proxy_base is not None:
        target = proxy_model(job.proxy, config.proxy_tuned, config.proxy_base, config.dtype, config.device,
                             {config.target_model: target})
    eval_config = SuiteConfig(dimensions=(config.dimension,), limit=config.limit, data_dir=config.data_dir,
                              perplexity_source=config.perplexity_source, perplexity_file=config.perplexity_file,
                              instruction=job.instruction)
    steering = None if job.vector is None else Steering(job.vector, job.layer, job.alpha, config.positions,
                                                        config.allow_mismatch)
    suite = run_suite(target, eval_config, steering, judges)
    rows = suite.table
    if job.vector is not None and not is_control(job.name):
        rows = pd.concat([rows, pd.DataFrame([{
            "dimension": config.dimension, "metric": "cosine_to_self", "value": job.cosine,
            "n": job.vector.hidden_size, "spec": "cosine(source vector, target's own vector)"}])], ignore_index=True)
    return _write_job(config, job, suite.items, rows)


def _write_job(config: SteerConfig, job: _Job, outcomes: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``job``'s per-item outcomes, then its rows (the part, which marks the job done), each recorded with the
    settings they were made with, so that a resume never mixes two settings; returns the rows as written."""
    layout = SteerLayout(Path(config.out))
    meta = {"settings_sha256": settings_key(config.settings())}
    write_with(layout.items(job.name, job.layer, job.alpha), lambda tmp: outcomes.to_csv(tmp, index=False), meta)
    rows = rows.assign(source_revision=job.name, layer=job.layer, alpha=job.alpha)
    write_with(layout.part(job.name, job.layer, job.alpha), lambda tmp: rows.to_csv(tmp, index=False), meta)
    return rows


def _jobs(config: SteerConfig, sources: dict[str, SteeringVector], self_vector: SteeringVector,
          draws: Sequence[SteeringVector]) -> list[_Job]:
    jobs = [_Job(UNSTEERED, -1, 0.0)]
    if config.instruction is not None:
        jobs.append(_Job(PROMPT, -1, 0.0, instruction=config.instruction))
    for name, vector in [("self", self_vector), *sources.items()]:
        for layer in config.layers:
            cosine = vector.cosine(self_vector, layer)
            jobs += [_Job(name, layer, alpha, vector, cosine) for alpha in config.alphas]
    for k, draw in enumerate(draws):  # α = 0 needs none: its control is the unsteered target
        jobs += [_Job(random_draw(k), layer, alpha, draw)
                 for layer in config.layers for alpha in config.alphas if alpha]
    if config.proxy_tuned is not None:
        jobs += [_Job(name, -1, alpha, proxy=proxy) for name, alpha, proxy in
                 proxy_jobs(list(sources), config.source_model, config.proxy_betas, config.proxy_tuned,
                            config.target_model)]
    return jobs


def _repeats(jobs: Sequence[_Job]) -> dict[int, int]:
    """Jobs whose evaluation an earlier job already does → that earlier job: the same direction, bit for bit, at
    the same layer and α (the target's own vector when the source is the target, or a source checkpoint that is
    the target). Evaluated once, their rows are copied under both names."""
    first: dict[tuple[bytes, int, float], int] = {}
    repeats = {}
    for i, job in enumerate(jobs):
        if job.vector is None or job.proxy is not None:
            continue
        key = (job.vector.at(job.layer).numpy().tobytes(), job.layer, job.alpha)
        if key in first:
            repeats[i] = first[key]
        else:
            first[key] = i
    return repeats


def _copy_job(config: SteerConfig, done: _Job, job: _Job, rows: pd.DataFrame) -> pd.DataFrame:
    """``job``'s part and outcomes from ``done``'s, an identical evaluation under another name."""
    outcomes = pd.read_csv(SteerLayout(Path(config.out)).items(done.name, done.layer, done.alpha))
    return _write_job(config, job, outcomes, rows)


def _with_controls(config: SteerConfig, layout: SteerLayout, jobs: list[_Job], frames: dict[int, pd.DataFrame]
                   ) -> pd.DataFrame:
    """The finished evaluations' rows and their control rows (``trusttrace.steer.controls``), one table."""
    done = [(jobs[i], frames[i]) for i in sorted(frames)]
    evaluated = [Evaluated(job.name, job.layer, job.alpha, pd.read_csv(layout.items(job.name, job.layer, job.alpha)))
                 for job, _ in done]
    tables = {(job.name, job.layer, job.alpha): rows for job, rows in done}
    controls = control_rows(evaluated, tables, config.random_vectors)
    return pd.concat([*(rows for _, rows in done), controls], ignore_index=True)[STEERING_COLUMNS]


def _check_shapes(config: SteerConfig) -> None:
    """Refuse layers the target lacks and a source of another hidden size from the two configs (small files),
    before anything is traced; a hub model out of reach now is checked once the vectors are built."""
    target, target_revision = config.target_model
    source, revisions = config.source_model, config.source_revisions
    try:
        goal = peek_model(target, target_revision, tokenizer=False)
        revision: str | None = None
        if revisions:  # a hub revision, or a local series' checkpoint folder
            ref, revision = checkpoint_ref(source, revisions[0])
        elif Path(source).expanduser().is_dir():  # a local series (or one checkpoint): its first folder
            first = CheckpointSeries.resolve(source).checkpoints[0]
            ref, revision = first.ref, first.revision
        else:
            ref = source
        width = peek_model(ref, revision, tokenizer=False).hidden_size
    except ConnectionError as err:
        log.info("the shapes are checked once the vectors are built: %s", err)
        return
    check_layers(config.layers, goal.n_layers, config.target)
    if width is not None and goal.hidden_size is not None and width != goal.hidden_size:
        raise hidden_size_mismatch(config.source, width, config.target, goal.hidden_size)


def run_steer(config: SteerConfig, progress: Progress | None = None) -> SteerResult:
    """Run the sweep; write and return its tables (see the module docstring).

    Each evaluation's rows are kept in ``OUT/parts``, so a rerun with the same settings resumes the sweep.
    With the Ray executor the evaluations (and the traces that build the vectors) run as Ray tasks;
    evaluations that still fail after their retries are listed in ``OUT/failed.json`` and left out.
    """
    progress = progress or Progress()
    check_output(config.out)  # before any model loads or anything is written
    with hold(config.out, "steer"):  # one writer at a time
        return _steer(config, progress)


def _steer(config: SteerConfig, progress: Progress) -> SteerResult:
    """``run_steer`` once its folder is held."""
    _check_shapes(config)  # a source of another width, or layers the target lacks: refused before any tracing
    if config.proxy_tuned is not None and config.proxy_base is not None:
        check_proxy_models(config.proxy_tuned, config.proxy_base)  # their vocabularies, before any tracing
    if config.overwrite:  # every input has passed: only now may the old sweep go
        start_over(config.out, True, ("steer",))
    layout = SteerLayout(Path(config.out))
    with removed_on_usage_error(layout.root, lambda: any((layout.root / "parts").glob("*.csv"))):
        return _sweep(config, layout, progress)


def _sweep(config: SteerConfig, layout: SteerLayout, progress: Progress) -> SteerResult:
    """``run_steer`` once its inputs are checked: vectors, then every evaluation, then the tables."""
    layout.root.mkdir(parents=True, exist_ok=True)
    record_settings(layout.settings, config.settings(), "a steering sweep")
    progress.stage(f"building {config.dimension} vectors from {config.source}")
    sources = _trace_vectors(config.source_model, config, layout.source, config.source_revisions, config.select,
                             layout.vectors.root)
    target, target_revision = config.target_model
    if target == config.source_model and len(sources) == 1 and config.source_revisions in (None, (target_revision,)):
        self_vector = next(iter(sources.values()))  # the source is the target: the same vector
    else:
        progress.stage(f"building the target's own {config.dimension} vector")
        revisions = (target_revision,) if target_revision is not None else None
        self_vector = next(iter(_trace_vectors(target, config, layout.target, revisions, None, None).values()))
    for vector in sources.values():  # before any evaluation (the vocabularies are known now)
        check_fit(vector, target, self_vector.hidden_size, len(self_vector.layers),
                  self_vector.meta.get("vocab_sha256"), config.layers, config.allow_mismatch)
    self_vector.save(layout.vectors.vector("self", config.dimension))
    draws = random_directions([self_vector, *sources.values()], config.layers, config.random_vectors, config.seed)
    jobs = _jobs(config, sources, self_vector, draws)
    repeats = _repeats(jobs)
    todo = [i for i in range(len(jobs)) if i not in repeats]
    progress.start("sweep", "steering sweep", total=len(todo))
    frames: dict[int, pd.DataFrame] = {}
    failed: dict[str, str] = {}
    for n, rows, error in map_tasks(_evaluate_job, [(config, jobs[i]) for i in todo], config.executor):
        i = todo[n]
        if error is None and rows is not None:
            frames[i] = rows
            log.info("%s done", jobs[i].label)
        else:
            failed[jobs[i].label] = error or "no result"
            log.error("%s failed after %d retries: %s", jobs[i].label, config.executor.max_retries, error)
        progress.update("sweep", advance=1, description=f"steering sweep: {jobs[i].label}")
    progress.finish("sweep")
    for i, j in repeats.items():
        if j in frames:
            frames[i] = _copy_job(config, jobs[j], jobs[i], frames[j])
            log.info("%s is the same evaluation as %s (the same vector): its rows are copied", jobs[i].label,
                     jobs[j].label)
        else:
            failed[jobs[i].label] = f"the same evaluation as {jobs[j].label}, which failed"
    write_json_atomic(layout.failed_json, failed)
    if 0 not in frames:
        raise SweepFailed(f"The unsteered evaluation failed ({failed.get('unsteered')}); nothing to compare with.")
    table = _with_controls(config, layout, jobs, frames)
    write_with(layout.steering_csv, lambda tmp: table.to_csv(tmp, index=False))
    best = best_alphas(table, config.dimension, config.ppl_budget)
    write_with(layout.best_csv, lambda tmp: best.to_csv(tmp, index=False))
    if len(sources) >= 3:  # the paper's Fig. 5: probe accuracy at the layer against the steering effect
        probes = layout.source.read_results()
        corr = probe_vs_effect(probes, table, config.dimension, HEADLINE[config.dimension])
        write_with(layout.correlation_csv, lambda tmp: corr.to_csv(tmp, index=False))
    files = {name: layout.vectors.vector(name, config.dimension) for name in ("self", *sources)}
    return SteerResult(layout.root, table, best, failed, files)
