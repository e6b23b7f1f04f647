"""The ``steer`` job: vectors from source checkpoints, swept over layer × α on a target model.

For each source checkpoint the vector is built from activations a ``trace`` stored (``trace`` runs first, into
``OUT/source``, reusing whatever is there). The target gets its own vector the same way, in ``OUT/target``
(the self-vector baseline); when source and target are the same single model, that is the source's vector. Every (source, layer, α) is evaluated on the dimension's benchmark plus perplexity; rows go to
``OUT/steering.csv`` (source_revision, layer, alpha, metric, value, …), the best α per source under a
perplexity budget to ``OUT/best.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ._io import record_settings, write_json_atomic, write_with
from .correlation import probe_vs_effect
from .data import DIMENSIONS
from .evaluate.judges import toxicity_judge, truth_judge
from .evaluate.suite import PERPLEXITY_SOURCES, EvalConfig, Steering, evaluate_suite
from .models import load_model
from .runner import TraceConfig, run_trace
from .steering import POSITIONS, SteeringVector, vector_from_run

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"toxic_ratio", "perplexity"}
# The metric the best α is chosen by, per dimension.
HEADLINE = {"reliability": "mc2", "toxicity": "toxic_ratio", "privacy": "accuracy", "fairness": "accuracy",
            "robustness": "accuracy"}


class SweepFailed(RuntimeError):
    """Part of a sweep failed after its retries (the message names what and why; a rerun retries it)."""


@dataclass(frozen=True)
class SteerConfig:
    """A steering sweep."""

    source: str  # model of the source checkpoints (hub id, local series, folder, built-in), or MODEL@REVISION
    target: str  # the model that is steered
    dimension: str
    out: str
    revisions: tuple[str, ...] | None = None  # source revisions (else the series, narrowed by select)
    select: str | None = None
    layers: tuple[int, ...] = (14,)
    alphas: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)
    positions: str = "last"
    method: str = "paper-code"
    limit: int | None = None  # evaluation items at most
    source_limit: int | None = None  # statements per dataset used to build the vectors
    ppl_budget: float = 1.33  # best α only among results with perplexity ≤ budget × unsteered
    data_dir: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    allow_mismatch: bool = False
    executor: str = "local"  # local | ray (evaluations as Ray tasks)
    ray_address: str | None = None
    gpus_per_task: float = 0.0
    cpus_per_task: float = 1.0
    max_retries: int = 2
    judge: str = "offline"  # toxicity: offline | an HF classifier's name
    truth_judge: str = "offline"  # reliability: offline | TRUTH_MODEL[,INFO_MODEL]
    perplexity_source: str = "auto"  # auto | lambada | statements
    perplexity_file: str | None = None

    def __post_init__(self) -> None:
        model, revision = split_revision(self.source)
        if revision is not None:
            if self.revisions:
                raise ValueError(f"--source {self.source!r} names a revision and --revisions gives more; use one.")
            object.__setattr__(self, "source", model)
            object.__setattr__(self, "revisions", (revision,))
        if self.dimension not in DIMENSIONS:
            raise ValueError(f"dimension {self.dimension!r} is not one of {', '.join(DIMENSIONS)}.")
        if self.perplexity_source not in PERPLEXITY_SOURCES:
            raise ValueError(f"perplexity source {self.perplexity_source!r} is not one of "
                             f"{', '.join(PERPLEXITY_SOURCES)}; --perplexity-file takes your own text.")
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor {self.executor!r} is not one of local, ray.")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions {self.positions!r} is not one of {', '.join(POSITIONS)}.")
        if not self.layers or not self.alphas:
            raise ValueError("Give at least one layer (--layers) and one strength (--alphas).")


def split_revision(ref: str) -> tuple[str, str | None]:
    """``MODEL@REVISION`` → (MODEL, REVISION); a local path that exists is never split."""
    if Path(ref).exists() or "@" not in ref:
        return ref, None
    model, _, revision = ref.rpartition("@")
    if not model or not revision or "/" in revision:
        raise ValueError(f"{ref!r} is neither an existing path nor MODEL@REVISION (e.g. LLM360/Amber@ckpt_179).")
    return model, revision


def _vectors(model: str, config: SteerConfig, out: Path, revisions: Sequence[str] | None,
             select: str | None) -> dict[str, SteeringVector]:
    """Trace ``model`` (probes only) for the dimension into ``out`` and build one vector per checkpoint."""
    result = run_trace(TraceConfig(model=model, out=str(out), revisions=tuple(revisions) if revisions else None,
                                   select=select, dimensions=(config.dimension,), limit=config.source_limit,
                                   data_dir=config.data_dir, dtype=config.dtype, device=config.device,
                                   analyses=("probe",), executor=config.executor, ray_address=config.ray_address,
                                   gpus_per_task=config.gpus_per_task, cpus_per_task=config.cpus_per_task,
                                   max_retries=config.max_retries))
    if result.failed:
        raise SweepFailed(f"Tracing {model} failed for {sorted(result.failed)}: {result.failed}. Rerun to retry.")
    names = list(dict.fromkeys(result.results.revision))
    return {name: vector_from_run(out, name, config.dimension, config.method) for name in names}  # type: ignore[arg-type]


# Settings that decide where and how the work runs, never the numbers: a rerun may change them.
_HOW = {"executor", "ray_address", "gpus_per_task", "cpus_per_task", "max_retries"}


@dataclass(frozen=True)
class _Job:
    """One evaluation of the sweep: the unsteered target, or one (source, layer, α)."""

    name: str
    layer: int
    alpha: float
    vector: SteeringVector | None = None
    cosine: float = float("nan")

    def path(self, out: Path) -> Path:
        return out / "parts" / f"{self.name.replace('/', '__')}__L{self.layer}__a{self.alpha:+g}.csv"

    @property
    def label(self) -> str:
        return self.name if self.vector is None else f"{self.name} layer {self.layer} α {self.alpha:+g}"


_WORKER_CACHE: dict[tuple, Any] = {}  # per process: the target model and judges, loaded once per worker


def _target_and_judges(config: SteerConfig) -> tuple[Any, dict[str, Any]]:
    key = (config.target, config.dtype, config.device, config.dimension, config.judge, config.truth_judge,
           config.data_dir)
    if key not in _WORKER_CACHE:
        _WORKER_CACHE.clear()
        target = load_model(config.target, dtype=config.dtype, device=config.device)
        judges = {"judge": toxicity_judge(config.judge, config.data_dir) if config.dimension == "toxicity" else None,
                  "truth_judge": truth_judge(config.truth_judge) if config.dimension == "reliability" else None}
        _WORKER_CACHE[key] = (target, judges)
    return _WORKER_CACHE[key]


def _evaluate_job(config: SteerConfig, job: _Job) -> pd.DataFrame:
    """Run one job (or read it back from ``parts/``) and write its rows there."""
    out = Path(config.out)
    if job.path(out).exists():
        return pd.read_csv(job.path(out), keep_default_na=False, na_values=[""])
    target, judges = _target_and_judges(config)
    eval_config = EvalConfig(dimensions=(config.dimension,), limit=config.limit, data_dir=config.data_dir,
                             perplexity_source=config.perplexity_source, perplexity_file=config.perplexity_file)
    steering = None if job.vector is None else Steering(job.vector, job.layer, job.alpha, config.positions,  # type: ignore[arg-type]
                                                        config.allow_mismatch)
    rows = evaluate_suite(target, eval_config, steering, **judges)
    if job.vector is not None:
        rows = pd.concat([rows, pd.DataFrame([{
            "dimension": config.dimension, "metric": "cosine_to_self", "value": job.cosine,
            "n": job.vector.hidden_size, "spec": "cosine(source vector, target's own vector)"}])], ignore_index=True)
    rows = rows.assign(source_revision=job.name, layer=job.layer, alpha=job.alpha)
    write_with(job.path(out), lambda tmp: rows.to_csv(tmp, index=False))
    return rows


Progress = Callable[[int, int, str], None]


def _run_jobs_local(config: SteerConfig, jobs: list[_Job], progress: Progress | None
                    ) -> tuple[dict[int, pd.DataFrame], dict[str, str]]:
    frames = {}
    for i, job in enumerate(jobs):
        frames[i] = _evaluate_job(config, job)
        log.info("%s done", job.label)
        if progress is not None:
            progress(i + 1, len(jobs), job.label)
    return frames, {}


def _run_jobs_ray(config: SteerConfig, jobs: list[_Job], progress: Progress | None
                  ) -> tuple[dict[int, pd.DataFrame], dict[str, str]]:
    """One Ray task per evaluation; each worker loads the target once. Failures are reported, not fatal."""
    from ._ray import ray_map

    frames: dict[int, pd.DataFrame] = {}
    failed: dict[str, str] = {}
    for done, (i, rows, error) in enumerate(ray_map(_evaluate_job, [(config, job) for job in jobs],
                                                    address=config.ray_address, cpus=config.cpus_per_task,
                                                    gpus=config.gpus_per_task, max_retries=config.max_retries),
                                            start=1):
        if error is None:
            frames[i] = rows
        else:
            failed[jobs[i].label] = error
            log.error("%s failed after %d retries: %s", jobs[i].label, config.max_retries, error)
        if progress is not None:
            progress(done, len(jobs), jobs[i].label)
    return frames, failed


def run_steer(config: SteerConfig, progress: Progress | None = None) -> pd.DataFrame:
    """Run the sweep; return (and write) the tidy rows.

    ``progress(done, total, what)`` is called after each evaluation. Each evaluation's rows are kept in
    ``OUT/parts``, so a rerun with the same settings resumes the sweep. With ``executor="ray"`` the
    evaluations (and the traces that build the vectors) run as Ray tasks; evaluations that still fail after
    their retries are listed in ``OUT/failed.json`` and left out of the tables.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    record_settings(out / "steer_config.json", {k: v for k, v in asdict(config).items() if k not in _HOW},
                    "a steering sweep")
    sources = _vectors(config.source, config, out / "source", config.revisions, config.select)
    if config.target == config.source and len(sources) == 1:  # the source is the target: its vector is the self
        self_vector = next(iter(sources.values()))
    else:
        self_vector = next(iter(_vectors(config.target, config, out / "target", None, None).values()))
    jobs = [_Job("unsteered", -1, 0.0)]
    for name, vector in [("self", self_vector), *sources.items()]:
        for layer in config.layers:
            cosine = vector.cosine(self_vector, layer)
            jobs += [_Job(name, layer, alpha, vector, cosine) for alpha in config.alphas]
    run_jobs = _run_jobs_ray if config.executor == "ray" else _run_jobs_local
    frames, failed = run_jobs(config, jobs, progress)
    write_json_atomic(out / "failed.json", failed)
    if 0 not in frames:
        raise SweepFailed(f"The unsteered evaluation failed ({failed.get('unsteered')}); nothing to compare with.")
    table = pd.concat([frames[i] for i in sorted(frames)], ignore_index=True)[["source_revision", "layer", "alpha", "dimension", "metric",
                                                  "value", "n", "spec"]]
    write_with(out / "steering.csv", lambda tmp: table.to_csv(tmp, index=False))
    best = best_alphas(table, config.dimension, config.ppl_budget)
    write_with(out / "best.csv", lambda tmp: best.to_csv(tmp, index=False))
    if len(sources) >= 3:  # the paper's Fig. 5: probe accuracy at the layer against the steering effect
        probes = pd.read_csv(out / "source" / "results.csv")
        corr = probe_vs_effect(probes, table, config.dimension, HEADLINE[config.dimension])
        write_with(out / "correlation.csv", lambda tmp: corr.to_csv(tmp, index=False))
    return table


def wide_table(table: pd.DataFrame) -> pd.DataFrame:
    """``steering.csv`` rows as one row per (source_revision, layer, alpha), one column per metric."""
    return table.pivot_table(index=["source_revision", "layer", "alpha"], columns="metric",
                             values="value").reset_index()


def best_alphas(table: pd.DataFrame, dimension: str, ppl_budget: float) -> pd.DataFrame:
    """Per source: the (layer, α) with the best headline metric among results within the perplexity budget."""
    metric = HEADLINE[dimension]
    wide = wide_table(table)
    base = wide[wide.source_revision == "unsteered"].iloc[0]
    limit = ppl_budget * base["perplexity"]
    rows = [{"source_revision": "unsteered", "layer": -1, "alpha": 0.0, metric: base[metric],
             "perplexity": base["perplexity"], "within_budget": True}]
    for source, g in wide[wide.source_revision != "unsteered"].groupby("source_revision", sort=False):
        ok = g[g.perplexity <= limit]
        if ok.empty:
            rows.append({"source_revision": source, "layer": None, "alpha": None, metric: None, "perplexity": None,
                         "within_budget": False})
            continue
        pick = ok.loc[ok[metric].idxmin() if metric in LOWER_IS_BETTER else ok[metric].idxmax()]
        rows.append({"source_revision": source, "layer": int(pick.layer), "alpha": float(pick.alpha),
                     metric: float(pick[metric]), "perplexity": float(pick.perplexity), "within_budget": True})
    return pd.DataFrame(rows)
