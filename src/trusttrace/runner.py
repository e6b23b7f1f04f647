"""The ``trace`` job: for each checkpoint of a series, extract every dimension's activations and probe them.

Run folder::

    OUT/manifest.json                              config, versions, seeds, datasets, commits, timings
    OUT/results.csv, OUT/results.parquet           tidy rows (one per revision × dimension × layer × metric)
    OUT/parts/<revision>.csv                       rows of one finished checkpoint (the resume record)
    OUT/activations/<revision>/<dataset>.safetensors
    OUT/log.txt

A rerun with the same settings skips finished checkpoints and stored activations, so a killed sweep
resumes where it stopped; a rerun that selects more checkpoints extends the folder's table. The results
table is rewritten after every checkpoint. Hub checkpoints are fetched one ahead of use and deleted after it unless kept.
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import __version__
from ._io import write_json_atomic, write_with
from .checkpoints import Checkpoint, CheckpointSeries
from .data import DIMENSIONS, TrustDataset, load_dataset
from .extract import ExtractConfig, extract_last_token
from .models import LoadedModel, fetch_checkpoint, load_model
from .mutual_info import ESTIMATORS, MIConfig, mi_rows
from .probes import PROTOCOLS, ProbeConfig, probe_layers, training_split
from .remote import RunFolder, is_url
from .steering import vocab_sha256
from .store import activation_path, is_complete, load_activations, save_activations

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["model", "revision", "step", "dimension", "layer", "metric", "value", "n_train", "n_test",
                  "seed", "protocol", "dtype", "commit"]
# Settings that change the numbers: a run folder holds results of one value of each.
_FINGERPRINT = ("model", "limit", "protocol", "folds", "seed", "dtype", "token_position", "analyses",
                "mi_estimator", "mi_sigma", "mi_eps", "mi_max_samples")
ANALYSES: tuple[str, ...] = ("probe", "mi")
EXECUTORS: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class AnalysisConfig:
    """What is computed from one (checkpoint, dataset) activation file."""

    analyses: tuple[str, ...] = ANALYSES
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    mi: MIConfig = field(default_factory=MIConfig)

    def __post_init__(self) -> None:
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad or not self.analyses:
            raise ValueError(f"analyses {list(self.analyses)}: choose one or more of {', '.join(ANALYSES)}.")
        if self.probe.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.probe.protocol!r} is not one of {', '.join(PROTOCOLS)}.")
        if self.mi.estimator not in ESTIMATORS:
            raise ValueError(f"mi_estimator {self.mi.estimator!r} is not one of {', '.join(ESTIMATORS)}.")

    @classmethod
    def build(cls, analyses: tuple[str, ...] = ANALYSES, protocol: str = "cv", folds: int = 5, seed: int = 0,
              mi_estimator: str = "paper-code", mi_sigma: float | None = 50.0, mi_eps: float = 1e-5,
              mi_max_samples: int | None = None, device: str = "auto") -> AnalysisConfig:
        """The settings from flat options (as the CLI and ``TraceConfig`` hold them), validated."""
        from .models import choose_device

        probe = ProbeConfig(protocol=protocol, folds=folds, seed=seed)  # type: ignore[arg-type]
        mi = MIConfig(estimator=mi_estimator, sigma=mi_sigma, eps=mi_eps,  # type: ignore[arg-type]
                      max_samples=mi_max_samples, seed=seed, device=str(choose_device(device)))
        return cls(analyses, probe, mi)


def analyse(layers: torch.Tensor, labels: np.ndarray, config: AnalysisConfig) -> pd.DataFrame:
    """Probe rows and/or MI rows (``mi_tx``, ``mi_ty``) for one activation set ``[n_layers, n, d]``.

    MI follows the released code: X = layer 0, T = layer l, Y = labels, on the probe's training split of
    z-scored activations (see ``probes.training_split``).
    """
    frames = []
    if "probe" in config.analyses:
        frames.append(probe_layers(layers, labels, config.probe))
    if "mi" in config.analyses:
        rows, y = training_split(layers, labels, config.probe)
        frames.append(mi_rows(rows[0], rows, y, config.mi))
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class TraceConfig:
    """Everything a ``trace`` run needs; stored in its manifest."""

    model: str  # hub id, local series folder, checkpoint folder, GGUF file or built-in name
    out: str  # run folder
    revisions: tuple[str, ...] | None = None  # explicit hub revisions (else catalog/hub/local listing)
    select: str | None = None  # first:N | last:N | every:K | log:N | names
    dimensions: tuple[str, ...] = DIMENSIONS
    limit: int | None = None  # first N statements of each dataset
    data_dir: str | None = None  # else $TRUSTTRACE_DATA_DIR, else download
    protocol: str = "cv"
    folds: int = 5
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    max_tokens: int = ExtractConfig.max_tokens
    keep_checkpoints: bool = False
    cache_dir: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    blocks: str | None = None
    token_position: str = "last"
    analyses: tuple[str, ...] = ANALYSES  # probe, mi
    mi_estimator: str = "paper-code"  # paper-code | hsic | nhsic
    mi_sigma: float | None = 50.0  # None: median heuristic (hsic/nhsic)
    mi_eps: float = 1e-5
    mi_max_samples: int | None = None  # estimate MI on seeded subsamples of this many rows
    # How the work is run (never changes the numbers):
    executor: str = "local"  # local | ray
    ray_address: str | None = None  # None: start a local Ray; "auto" or HOST:PORT: join a cluster
    gpus_per_task: float = 0.0
    cpus_per_task: float = 1.0
    max_retries: int = 2  # Ray: attempts after the first, per checkpoint
    prefetch: int = 1  # checkpoints downloaded ahead of the one computing (0: download, then compute)
    cache_budget_gb: float | None = None  # cap on downloaded-and-not-yet-deleted checkpoints

    def analysis_config(self) -> AnalysisConfig:
        """The probe and MI settings of this run."""
        return AnalysisConfig.build(self.analyses, self.protocol, self.folds, self.seed, self.mi_estimator,
                                    self.mi_sigma, self.mi_eps, self.mi_max_samples, self.device)

    def __post_init__(self) -> None:
        bad = [d for d in self.dimensions if d not in DIMENSIONS and not Path(d).is_file()]
        if bad:
            raise ValueError(f"Unknown dimension(s) {bad}. Choose from {', '.join(DIMENSIONS)} or 'all', "
                             "or pass a CSV/JSONL file of statement,label rows.")
        if self.limit is not None and self.limit < 10:
            raise ValueError(f"limit={self.limit}: probes need at least 10 statements per dimension.")
        self.analysis_config()  # validates analyses, protocol and MI estimator
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor {self.executor!r} is not one of {', '.join(EXECUTORS)}.")
        if self.prefetch < 0 or self.max_retries < 0:
            raise ValueError(f"prefetch={self.prefetch}, max_retries={self.max_retries}: neither may be negative.")


@dataclass
class TraceResult:
    """What a run produced."""

    out: Path  # the run folder (for a URL run, its local mirror)
    results: pd.DataFrame
    manifest: dict = field(repr=False)
    failed: dict[str, str] = field(default_factory=dict)  # checkpoint → error, after its retries (Ray)
    url: str | None = None  # where a URL run lives

    @property
    def outputs(self) -> dict[str, Path | str]:
        names = ("results.csv", "results.parquet", "manifest.json", "activations")
        if self.url is not None:
            return {name: f"{self.url.rstrip('/')}/{name}" for name in names}
        return {**{name: self.out / name for name in names}, "log": self.out / "log.txt"}


class Progress:
    """Callbacks the runner reports through; the CLI renders them as progress bars."""

    def start(self, total_checkpoints: int) -> None: ...
    def checkpoint(self, name: str) -> None: ...
    def extract(self, dimension: str, total: int) -> Callable[[int], None]:
        return lambda n: None
    def done_checkpoint(self) -> None: ...


def _versions() -> dict[str, str]:
    import numpy
    import sklearn
    import torch
    import transformers

    return {"trusttrace": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def _check_fingerprint(out: Path, manifest: dict) -> None:
    old_path = out / "manifest.json"
    if not old_path.exists():
        return
    old = json.loads(old_path.read_text())
    new = json.loads(json.dumps(manifest["config"], default=str))  # as it will read back (tuples → lists)
    diff = {k: (old["config"].get(k), new.get(k)) for k in _FINGERPRINT if old["config"].get(k) != new.get(k)}
    shas = {d: v["sha256"] for d, v in manifest["datasets"].items()}
    old_shas = {d: v["sha256"] for d, v in old.get("datasets", {}).items() if d in shas}
    diff.update({f"dataset {d}": (old_shas[d][:12], shas[d][:12]) for d in old_shas if old_shas[d] != shas[d]})
    if diff:
        changes = "; ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{out} holds a run made with other settings ({changes}). Resume with the same "
                         "settings, or pass a new --out.")


def _merge_parts(out: Path) -> pd.DataFrame:
    parts = sorted((out / "parts").glob("*.csv"))
    frame = pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in parts],
                      ignore_index=True) if parts else pd.DataFrame(columns=RESULT_COLUMNS)
    return _write_results(out, frame)


def _write_results(out: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Put rows in training order and write ``results.csv`` and ``results.parquet`` atomically."""
    frame["step"] = pd.to_numeric(frame["step"]).astype("Int64")
    frame["commit"] = frame["commit"].fillna("").astype(str)
    frame = frame.sort_values(["step", "revision", "dimension", "metric", "layer"], na_position="last",
                              kind="stable").reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    write_with(out / "results.csv", lambda tmp: frame.to_csv(tmp, index=False))
    write_with(out / "results.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    return frame


Fetch = Callable[[Checkpoint], tuple[str, "str | None", bool]]  # → (what to load, commit, downloaded by us)


class _Fetcher:
    """Fetches checkpoints ahead of use in a background thread; deletes those it downloaded after use.

    By default only hub checkpoints are fetched (``snapshot_download``); ``fetch`` replaces that for every
    checkpoint (a benchmark's simulated slow download, or another store).
    """

    def __init__(self, config: TraceConfig, fetch: Fetch | None = None) -> None:
        self.config = config
        self.custom = fetch
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: dict[str, Future] = {}
        self.held_bytes: dict[str, int] = {}  # fetched and not yet released
        self.last_size = 0

    def _fetch(self, ckpt: Checkpoint) -> tuple[str, str | None, bool]:
        if self.custom is not None:
            result = self.custom(ckpt)
        else:
            result = self._hub_fetch(ckpt)
        self.last_size = _folder_bytes(Path(result[0])) if result[2] else 0
        self.held_bytes[ckpt.name] = self.last_size
        return result

    def _hub_fetch(self, ckpt: Checkpoint) -> tuple[str, str | None, bool]:
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(ckpt.ref, revision=ckpt.revision, cache_dir=self.config.cache_dir,
                              local_files_only=True)
            was_cached = True
        except OSError:  # not in the cache yet (LocalEntryNotFoundError is an OSError)
            was_cached = False
        folder, commit = fetch_checkpoint(ckpt.ref, ckpt.revision, cache_dir=self.config.cache_dir,
                                          allow_pickle=self.config.allow_pickle)
        return str(folder), commit, not was_cached

    def needs_fetch(self, ckpt: Checkpoint) -> bool:
        return self.custom is not None or ckpt.revision is not None

    def room_for_one_more(self) -> bool:
        """Whether another download ahead fits the cache budget (the last download's size as the guess)."""
        budget = self.config.cache_budget_gb
        if budget is None:
            return True
        if not self.last_size:  # no download measured yet: do not guess, fetch one at a time until one is
            return False
        return sum(self.held_bytes.values()) + self.last_size <= budget * 1e9

    def prefetch(self, ckpt: Checkpoint | None) -> None:
        if ckpt is not None and self.needs_fetch(ckpt) and ckpt.name not in self.pending:
            self.pending[ckpt.name] = self.pool.submit(self._fetch, ckpt)

    def get(self, ckpt: Checkpoint) -> tuple[str, str | None, bool]:
        """(what to load, commit, whether trusttrace downloaded it)."""
        if not self.needs_fetch(ckpt):
            return ckpt.ref, ckpt.commit, False
        self.prefetch(ckpt)
        return self.pending.pop(ckpt.name).result()

    def release(self, ckpt: Checkpoint, source: str | None, commit: str | None, downloaded: bool) -> None:
        self.held_bytes.pop(ckpt.name, None)
        if self.config.keep_checkpoints or not downloaded:
            return
        if self.custom is not None:
            if source is not None:
                shutil.rmtree(source, ignore_errors=True)
            return
        if commit is None:
            return
        from huggingface_hub import scan_cache_dir

        strategy = scan_cache_dir(self.config.cache_dir).delete_revisions(commit)
        log.info("deleting checkpoint %s (%s)", commit[:12], strategy.expected_freed_size_str)
        strategy.execute()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def _load_datasets(config: TraceConfig) -> dict[str, TrustDataset]:
    return {(ds := load_dataset(d, config.data_dir, limit=config.limit)).name: ds for d in config.dimensions}


def _dataset_info(ds: TrustDataset) -> dict[str, object]:
    return {"path": ds.path, "sha256": ds.sha256, "rows": len(ds), "source": ds.source, "limit": ds.limit,
            "label1": ds.label1, "label0": ds.label0}


def run_trace(config: TraceConfig, progress: Progress | None = None, *, fetch: Fetch | None = None,
              checkpoint_task: Callable[..., dict] | None = None) -> TraceResult:
    """Extract and probe every selected checkpoint; write the tidy table and manifest under ``config.out``.

    ``executor="ray"`` runs one task per checkpoint on a Ray cluster (the run folder must be reachable from
    every worker); ``fetch`` replaces the hub download for every checkpoint, ``checkpoint_task`` the Ray
    task (both for benchmarks and tests).

    Example:
        >>> run_trace(TraceConfig(model="smollm2-135m-instruct", out="runs/smol", limit=400))
    """
    progress = progress or Progress()
    remote = RunFolder(config.out) if is_url(config.out) else None
    if remote is not None:  # work in a fresh local mirror of what the URL holds
        shutil.rmtree(remote.local, ignore_errors=True)
        remote.pull("manifest.json", folders=("parts",))
    out = remote.local if remote is not None else Path(config.out)
    series = CheckpointSeries.resolve(config.model, config.revisions).select(config.select)
    datasets = _load_datasets(config)
    manifest: dict[str, Any] = {
        "config": asdict(config), "versions": _versions(), "seeds": {"cv_folds": config.seed},
        "series": {"source": series.source, "checkpoints": [asdict(c) for c in series]},
        "datasets": {name: _dataset_info(ds) for name, ds in datasets.items()},
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "checkpoints": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    _check_fingerprint(out, manifest)
    old = out / "manifest.json"
    if old.exists():  # keep what earlier attempts recorded: finished checkpoints, and when the run began
        earlier = json.loads(old.read_text())
        manifest["checkpoints"] = earlier.get("checkpoints", {})
        manifest["started"] = earlier.get("started", manifest["started"])
    write_json_atomic(old, manifest)
    analysis = config.analysis_config()
    todo = [c for c in series if not (out / "parts" / f"{_safe(c.name)}.csv").exists()]
    progress.start(len(series))
    for _ in range(len(series) - len(todo)):  # finished by an earlier attempt
        progress.done_checkpoint()
    if config.executor == "ray":
        failed = _run_ray(config, todo, datasets, analysis, manifest, out, progress, checkpoint_task, remote)
    else:
        failed = {}
        _run_local(config, todo, datasets, analysis, manifest, out, progress, fetch, remote)
    results = _merge_parts(out)
    manifest["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest["failed"] = failed
    write_json_atomic(out / "manifest.json", manifest)
    if remote is not None:
        remote.push("results.csv", "results.parquet", "manifest.json")
    return TraceResult(out, results, manifest, failed, remote.url if remote is not None else None)


def _finish(name: str, record: dict, manifest: dict, out: Path, progress: Progress,
            remote: RunFolder | None = None) -> None:
    manifest["checkpoints"][name] = record
    write_json_atomic(out / "manifest.json", manifest)
    _merge_parts(out)  # the table is current after every checkpoint, for watching long sweeps
    if remote is not None:  # the part last: a URL run counts a checkpoint done once its part is there
        remote.push(f"activations/{_safe(name)}", "manifest.json", "results.csv", "results.parquet",
                    f"parts/{_safe(name)}.csv")
    progress.done_checkpoint()


def _run_local(config: TraceConfig, todo: list[Checkpoint], datasets: dict[str, TrustDataset],
               analysis: AnalysisConfig, manifest: dict, out: Path, progress: Progress, fetch: Fetch | None,
               remote: RunFolder | None = None) -> None:
    """One checkpoint after another in this process; downloads run ``prefetch`` checkpoints ahead."""
    fetcher = _Fetcher(config, fetch)
    try:
        for i, ckpt in enumerate(todo):
            progress.checkpoint(ckpt.name)
            if _needs_model(config, ckpt, datasets, out):
                fetcher.prefetch(ckpt)
            for ahead in todo[i + 1:i + 1 + config.prefetch]:  # the current one is first in the queue
                if _needs_model(config, ahead, datasets, out) and fetcher.room_for_one_more():
                    fetcher.prefetch(ahead)
            record = _trace_checkpoint(config, ckpt, datasets, analysis, fetcher, progress, out)
            _finish(ckpt.name, record, manifest, out, progress, remote)
    finally:
        fetcher.close()


def _checkpoint_task(config: TraceConfig, ckpt: Checkpoint, datasets: dict[str, TrustDataset],
                     analysis: AnalysisConfig) -> dict:
    """One checkpoint on a Ray worker: fetch, extract, analyse, write its part and activations, release.

    For a URL run folder the worker writes into its own local mirror and uploads the checkpoint's
    activations and part (the part last) before it returns.
    """
    fetcher = _Fetcher(config)
    remote = RunFolder(config.out) if is_url(config.out) else None
    out = remote.local if remote is not None else Path(config.out)
    try:
        record = _trace_checkpoint(config, ckpt, datasets, analysis, fetcher, Progress(), out)
    finally:
        fetcher.close()
    if remote is not None:
        remote.push(f"activations/{_safe(ckpt.name)}", f"parts/{_safe(ckpt.name)}.csv")
    return record


def _run_ray(config: TraceConfig, todo: list[Checkpoint], datasets: dict[str, TrustDataset],
             analysis: AnalysisConfig, manifest: dict, out: Path, progress: Progress,
             task: Callable[..., dict] | None, remote: RunFolder | None = None) -> dict[str, str]:
    """One Ray task per checkpoint; a failure is retried ``max_retries`` times, then reported, not fatal."""
    from ._ray import ensure_ray, ray_map

    shared = ensure_ray(config.ray_address).put(datasets)  # sent to the object store once, not with every task
    failed: dict[str, str] = {}
    for i, record, error in ray_map(task or _checkpoint_task, [(config, c, shared, analysis) for c in todo],
                                    address=config.ray_address, cpus=config.cpus_per_task,
                                    gpus=config.gpus_per_task, max_retries=config.max_retries):
        ckpt = todo[i]
        if error is not None:
            failed[ckpt.name] = error
            log.error("checkpoint %s failed after %d retries: %s", ckpt.name, config.max_retries, error)
            progress.done_checkpoint()
            continue
        if remote is not None:  # the worker uploaded the part; bring it into this mirror for the table
            remote.pull(f"parts/{_safe(ckpt.name)}.csv")
        _finish(ckpt.name, record, manifest, out, progress, remote)
    return failed


def _expected_metadata(config: TraceConfig, ds: TrustDataset) -> dict[str, str]:
    """Metadata a stored activation file must carry to be reused for ``ds``."""
    return {"dataset_sha256": ds.sha256, "n_rows": str(len(ds)), "token_position": config.token_position}


def _needs_model(config: TraceConfig, ckpt: Checkpoint, datasets: dict[str, TrustDataset], out: Path) -> bool:
    """Whether some dataset of ``ckpt`` still has to be extracted (else stored activations suffice)."""
    return not all(is_complete(activation_path(out, ckpt.name, name), _expected_metadata(config, ds))
                   for name, ds in datasets.items())


def _safe(name: str) -> str:
    return name.replace("/", "__")


def _trace_checkpoint(config: TraceConfig, ckpt: Checkpoint, datasets: dict[str, TrustDataset],
                      analysis: AnalysisConfig, fetcher: _Fetcher, progress: Progress, out: Path) -> dict:
    started = time.perf_counter()
    lm: LoadedModel | None = None
    source: str | None = None
    commit, downloaded = ckpt.commit, False
    record: dict[str, object] = {"step": ckpt.step}
    frames = []
    try:
        for name, ds in datasets.items():
            path = activation_path(out, ckpt.name, name)
            expect = _expected_metadata(config, ds)
            if not is_complete(path, expect):
                if lm is None:
                    source, commit, downloaded = fetcher.get(ckpt)
                    lm = load_model(source, None if source != ckpt.ref else ckpt.revision, config.dtype,
                                    config.device, trust_remote_code=config.trust_remote_code,
                                    allow_pickle=config.allow_pickle, blocks=config.blocks,
                                    cache_dir=config.cache_dir)
                    commit = commit or lm.info.commit
                    record.update(dtype=lm.info.dtype, dtype_reason=lm.info.dtype_reason, commit=commit,
                                  n_layers=lm.info.n_layers, hidden_size=lm.info.hidden_size)
                acts = extract_last_token(lm, ds.statements, ExtractConfig(max_tokens=config.max_tokens),
                                          progress.extract(name, len(ds)))
                meta = {"model": config.model, "revision": ckpt.name, "step": "" if ckpt.step is None else str(ckpt.step),
                        "commit": commit or "", "dataset": name, "vocab_sha256": vocab_sha256(lm.tokenizer),
                        "dtype": lm.info.dtype, "trusttrace_version": __version__, **expect}
                save_activations(path, acts, ds.labels, meta)
                del acts
            stored = load_activations(path)
            record.setdefault("dtype", stored.metadata.get("dtype"))
            rows = analyse(stored.layers, stored.labels, analysis)
            rows.insert(0, "dimension", name)
            frames.append(rows)
    finally:
        del lm
        gc.collect()
    part = pd.concat(frames, ignore_index=True)
    part = part.assign(model=config.model, revision=ckpt.name, step=ckpt.step, seed=config.seed,
                       protocol=config.protocol, dtype=record.get("dtype"), commit=commit or "")[RESULT_COLUMNS]
    write_with(out / "parts" / f"{_safe(ckpt.name)}.csv", lambda tmp: part.to_csv(tmp, index=False))
    fetcher.release(ckpt, source if downloaded else None, commit, downloaded)
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def trace_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Best layer and its accuracy per revision × dimension, with layer 0 and the majority baseline."""
    acc = results[results.metric == "accuracy"]
    base = results[results.metric == "majority_baseline"].groupby(["revision", "dimension"]).value.first()
    rows = []
    for (rev, dim), g in acc.groupby(["revision", "dimension"], sort=False):
        best = g.loc[g.value.idxmax()]
        layer0 = g[g.layer == 0].value
        rows.append({"revision": rev, "step": best.step, "dimension": dim, "best_layer": int(best.layer),
                     "best_accuracy": round(float(best.value), 4),
                     "layer0_accuracy": round(float(layer0.iloc[0]), 4) if len(layer0) else None,
                     "majority_baseline": round(float(base[(rev, dim)]), 4)})
    return pd.DataFrame(rows)


def run_probe(run_dir: str | Path, out: str | Path, analysis: AnalysisConfig = AnalysisConfig()) -> TraceResult:
    """Re-run the analyses on a run's stored activations (no model needed); write a results table to ``out``.

    Use it to score the same activations under another protocol, fold count, seed or MI estimator.
    """
    source = Path(run_dir)
    files = sorted((source / "activations").glob("*/*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{source} has no stored activations (activations/<revision>/<dataset>.safetensors). "
                                "Run `trusttrace trace` first, or point at its --out folder.")
    out = Path(out)
    frames = []
    for path in files:
        stored = load_activations(path)
        meta = stored.metadata
        rows = analyse(stored.layers, stored.labels, analysis)
        step = int(meta["step"]) if meta.get("step") else None
        frames.append(rows.assign(model=meta.get("model", ""), revision=meta.get("revision", path.parent.name),
                                  step=step, dimension=meta.get("dataset", path.stem), seed=analysis.probe.seed,
                                  protocol=analysis.probe.protocol, dtype=meta.get("dtype", ""),
                                  commit=meta.get("commit", ""))[RESULT_COLUMNS])
    results = _write_results(out, pd.concat(frames, ignore_index=True))
    manifest = {"analysis": asdict(analysis), "activations_from": str(source.resolve()),
                "versions": _versions(), "files": [str(f.relative_to(source)) for f in files],
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(out / "manifest.json", manifest)
    return TraceResult(out, results, manifest)
