"""A trace's config (``TraceConfig``) and one checkpoint of it, the unit of work: fetch it, extract what is not
stored yet, analyse every dataset, write its part (``parts/<revision>.csv``, recorded with the run's settings).
``trace`` runs the units, in this process or as Ray tasks; the random-init control is traced by the first unit
that needs it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from .._version import __version__
from ..activations.extract import ExtractConfig, extract_last_token
from ..activations.random_init_cache import (
    KEY_FIELD,
    fetch_rows,
    keep_rows,
    random_init_key,
    rows_key,
    tokenizer_sha256,
)
from ..activations.random_init_cache import fetch as fetch_random_init
from ..activations.random_init_cache import keep as keep_random_init
from ..activations.store import is_complete, load_activations, read_metadata, save_activations
from ..analysis.probe_job import AnalysisConfig, analyse, random_init_rows, transfer_rows, with_controls
from ..analysis.probes import FoldProbes
from ..analysis.saved_probes import kept_probes
from ..core.errors import OptionError
from ..core.executors import ExecutorConfig
from ..core.files import write_with
from ..core.progress import Progress
from ..data.datasets import DIMENSIONS, TrustDataset, dataset_names
from ..models.checkpoints import Checkpoint
from ..models.fetcher import CheckpointFetcher, FetchConfig, Fetched
from ..models.loading import LoadConfig, LoadedModel, load_model, vocab_sha256
from ..runs.integrity import files_digest, model_files_stat, weights_stat
from ..runs.layout import TraceLayout, read_csv
from ..runs.tables import RESULT_COLUMNS, text
from .resume import control_done, local_model_files, local_weights, settings_key

# What a kept probe file records of its activations' provenance (``saved_probes``).
PROVENANCE = ("model", "revision", "step", "commit", "dataset", "vocab_sha256", "dtype", "architecture",
              "trusttrace_version")


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


def _save_probes(path: Path, provenance: dict[str, str], fold: FoldProbes) -> None:
    kept_probes(fold, provenance).save(path)


def run_settings(config: TraceConfig, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The run's settings as its manifest records them (the transfer pairs resolved to dataset names)."""
    return {**config.settings(), "transfer": [list(p) for p in pairs]}



FILES_KEY = "model_files_sha256"  # the metadata key of the config and tokenizer files' digest


def expected_metadata(config: TraceConfig, ds: TrustDataset, weights: str | None = None,
                      files: dict[str, str] | None = None) -> dict[str, str]:
    """Metadata a stored activation file must carry to be reused for ``ds`` (and, for a local checkpoint,
    the fingerprints of the weights and of the config and tokenizer files it was extracted with)."""
    expect = {"dataset_sha256": ds.sha256, "n_rows": str(len(ds)), "token_position": config.token_position}
    if weights is not None:
        expect["weights_sha256"] = weights
    if files is not None:
        expect[FILES_KEY] = files_digest(files)
    return expect


def reusable(path: Path, expect: dict[str, str], quiet: bool = False) -> bool:
    """``store.is_complete`` for a checkpoint's activations: a file written before ``FILES_KEY`` was kept lacks
    it and passes (``resume.model_files_changed`` removes the activations of a checkpoint whose config or
    tokenizer changed since its trace), one that has it must match."""
    if not is_complete(path, {k: v for k, v in expect.items() if k != FILES_KEY}, quiet=quiet):
        return False
    stored = read_metadata(path).get(FILES_KEY)
    return FILES_KEY not in expect or stored is None or stored == expect[FILES_KEY]


def needs_model(config: TraceConfig, ckpt: Checkpoint, datasets: dict[str, TrustDataset],
                 layout: TraceLayout) -> bool:
    """Whether some dataset of ``ckpt`` still has to be extracted (else intact stored activations suffice).

    A missing activation file answers at once: the weights' sha256 is only read to vet stored files, so a
    fresh sweep does not hash the next checkpoint on the main thread before its download may start.
    """
    if not all(layout.activation(ckpt.name, name).is_file() for name in datasets):
        return True
    weights, files = local_weights(ckpt), local_model_files(ckpt)
    return not all(reusable(layout.activation(ckpt.name, name), expected_metadata(config, ds, weights, files),
                            quiet=True) for name, ds in datasets.items())


def load_checkpoint(config: TraceConfig, ckpt: Checkpoint, fetched: Fetched,
                    random_init: int | None = None) -> LoadedModel:
    load = config.load
    revision = None if fetched.source != ckpt.ref else ckpt.revision
    return load_model(fetched.source, revision, load.dtype, load.device, trust_remote_code=load.trust_remote_code,
                      allow_pickle=load.allow_pickle, blocks=load.blocks, cache_dir=load.cache_dir,
                      random_init=random_init)


class CheckpointModel:
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
            self.lm = load_checkpoint(self.config, self.ckpt, self.fetch())
            self.commit = self.commit or self.lm.info.commit
            self.record.update(dtype=self.lm.info.dtype, dtype_reason=self.lm.info.dtype_reason, commit=self.commit,
                               n_layers=self.lm.info.n_layers, hidden_size=self.lm.info.hidden_size)
        return self.lm

    def drop(self) -> None:
        self.lm = None
        gc.collect()


def random_init_control(config: TraceConfig, datasets: dict[str, TrustDataset], analysis: AnalysisConfig,
                         layout: TraceLayout, model: CheckpointModel) -> pd.DataFrame:
    """``control_random_init`` of every dataset: traced by the first unit that needs it, read by the others."""
    if control_done(layout, datasets):
        done = read_csv(layout.random_init_csv)
        if done is not None:
            return done
    random: LoadedModel | None = None
    tokenizer = ""
    frames = []
    for name, ds in datasets.items():
        path, expect = layout.control_activation(name), expected_metadata(config, ds)
        key: str | None
        if not is_complete(path, expect):
            if random is None:  # the checkpoint's architecture, freshly initialised (seeded)
                random = load_checkpoint(config, model.ckpt, model.fetch(), random_init=analysis.seed)
                tokenizer = tokenizer_sha256(random.tokenizer)
            key = random_init_key(random.model.config.to_dict(), tokenizer, analysis.seed, ds.sha256, len(ds),
                                  {**asdict(config.extract), "token_position": config.token_position},
                                  random.info.dtype, random.info.device)
            cached = fetch_random_init(key)  # traced by an earlier run on this machine (random_init_cache)
            acts = extract_last_token(random, ds.statements, config.extract) if cached is None else cached.layers
            save_activations(path, acts, ds.labels, {"model": config.model, "revision": "random-init",
                                                     "seed": str(analysis.seed), "dataset": name,
                                                     "dtype": random.info.dtype, KEY_FIELD: key, **expect})
            if cached is None:
                keep_random_init(key, path)
            del acts, cached
        else:
            key = read_metadata(path).get(KEY_FIELD)  # None in a folder traced before the cache
        kept_as = rows_key(key, asdict(analysis)) if key else None
        rows = fetch_rows(kept_as) if kept_as else None  # the same network and analysis in an earlier run
        if rows is None:
            stored = load_activations(path)
            rows = random_init_rows(stored.layers, stored.labels, analysis, ds.groups)
            if kept_as:
                keep_rows(kept_as, rows)
        frames.append(rows.assign(dimension=name))
    del random
    gc.collect()
    rows = pd.concat(frames, ignore_index=True)
    write_with(layout.random_init_csv, lambda tmp: rows.to_csv(tmp, index=False))
    return rows


def trace_unit(config: TraceConfig, ckpt: Checkpoint, datasets: dict[str, TrustDataset],
                      analysis: AnalysisConfig, fetcher: CheckpointFetcher, progress: Progress,
                      layout: TraceLayout) -> dict[str, Any]:
    """Extract (what is not stored yet) and analyse every dataset of one checkpoint; write its part."""
    started = time.perf_counter()
    model = CheckpointModel(config, ckpt, fetcher)
    files_stat = model_files_stat(ckpt.ref) if ckpt.revision is None else None  # before the hashes: a file
    weights, files = local_weights(ckpt), local_model_files(ckpt)  # changed while they are read is seen next time
    if weights is not None:
        model.record.update(weights_sha256=weights, weights_stat=weights_stat(ckpt.ref))
    if files is not None:
        model.record.update(model_files=files, model_files_stat=files_stat)
    frames = []
    try:
        controls = random_init_control(config, datasets, analysis, layout, model) if analysis.random_init else None
        for name, ds in datasets.items():
            path = layout.activation(ckpt.name, name)
            expect = expected_metadata(config, ds, weights, files)
            if not reusable(path, expect):
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
            provenance = {**{k: v for k, v in stored.metadata.items() if k in PROVENANCE},
                          "protocol": analysis.probe.protocol, "seed": str(analysis.seed)}
            # the probes kept are the table's first-fold fit: load_probe scores new statements with them
            rows = analyse(stored.layers, stored.labels, analysis, ds.groups, ds.statements,
                           partial(_save_probes, layout.probe(ckpt.name, name), provenance))
            rows = with_controls(rows, None if controls is None else controls[controls.dimension == name])
            rows.insert(0, "dimension", name)
            frames.append(rows)
        if analysis.transfer:
            frames.append(transfer_rows(lambda name: load_activations(layout.activation(ckpt.name, name)),
                                        analysis.transfer, analysis))
    finally:
        model.drop()
    part = pd.concat(frames, ignore_index=True)
    part["test_dataset"] = text(part["test_dataset"]) if "test_dataset" in part else ""
    part = part.assign(model=config.model, revision=ckpt.name, step=ckpt.step, seed=analysis.seed,
                       protocol=analysis.probe.protocol, dtype=model.record.get("dtype"),
                       commit=model.commit or "")[RESULT_COLUMNS]
    layout.write_part(ckpt.name, part, settings_key(run_settings(config, analysis.transfer)))
    fetcher.release(ckpt, model.fetched)
    model.record["seconds"] = round(time.perf_counter() - started, 2)
    return model.record
