"""What is computed from one stored activation set (probes, controls, MI), and the ``probe`` job that re-runs it.

``analyse`` turns one (checkpoint, dataset) activation file into tidy rows; the ``trace`` job calls it for
every file it extracts, and ``run_probe`` calls it on a finished run's stored activations, without a model,
to score them under another protocol, fold count, seed or MI estimator. Both add the random-init control
(``control_random_init``) and ``selectivity`` per layer (``trusttrace.analysis.controls``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._version import package_versions
from ..activations.store import StoredActivations, load_activations
from ..core.errors import DataFileError, OutputError, RunFolderError, RunFolderNotFoundError, UnknownNameError
from ..core.names import ANALYSES, CONTROLS, MI_CHECKS
from ..core.runlock import hold
from ..data.datasets import SPECS, TrustDataset, dataset_name, load_dataset
from ..runs.layout import TraceLayout
from ..runs.outputs import check_output, refuse_overlap
from ..runs.tables import RESULT_COLUMNS
from .controls import check_controls, lexical_accuracy, with_selectivity
from .mi_stats import mi_rows, random_init_mi_rows
from .mutual_info import DEFAULT_BOOTSTRAP, DEFAULT_PERMUTATIONS, MIConfig
from .probes import FoldProbes, ProbeFitConfig, probe_layers, training_rows, training_split, transfer_layers


@dataclass(frozen=True)
class AnalysisConfig:
    """What is computed from one (checkpoint, dataset) activation file, and how."""

    analyses: tuple[str, ...] = ANALYSES  # probe, mi
    probe: ProbeFitConfig = field(default_factory=ProbeFitConfig)
    mi: MIConfig = field(default_factory=MIConfig)
    controls: tuple[str, ...] = CONTROLS  # shuffled, lexical, random-init (with the probe analysis)
    # (train, test) dataset names: probes trained on one, scored on the other
    transfer: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad or not self.analyses:
            raise UnknownNameError(f"analyses {list(self.analyses)}: choose one or more of {', '.join(ANALYSES)}, "
                                   "e.g. --analyses probe,mi.")
        check_controls(self.controls)

    @classmethod
    def build(cls, analyses: tuple[str, ...] = ANALYSES, protocol: str = "group-cv", folds: int = 5, seed: int = 0,
              mi_estimator: str = "paper-code", mi_sigma: float | None = 50.0, mi_eps: float = 1e-5,
              mi_max_samples: int | None = None, controls: tuple[str, ...] = CONTROLS,
              seeds: int = 1, mi_bootstrap: int = DEFAULT_BOOTSTRAP, mi_permutations: int = DEFAULT_PERMUTATIONS,
              mi_checks: tuple[str, ...] = MI_CHECKS) -> AnalysisConfig:
        """The settings from flat options (as the CLI takes them); one seed for the folds and MI subsamples."""
        return cls(analyses, ProbeFitConfig(protocol=protocol, folds=folds, seed=seed, seeds=seeds,
                                            control_shuffled="shuffled" in controls),
                   MIConfig(estimator=mi_estimator, sigma=mi_sigma, eps=mi_eps, max_samples=mi_max_samples,
                            seed=seed, bootstrap=mi_bootstrap, permutations=mi_permutations,
                            checks=tuple(mi_checks)), controls)

    @property
    def seed(self) -> int:
        return self.probe.seed

    @property
    def random_init(self) -> bool:
        """Whether the random-init control is traced (it needs probes)."""
        return "random-init" in self.controls and "probe" in self.analyses

    def on_device(self, device: str) -> AnalysisConfig:
        """The same analyses with MI computed on ``device`` (probes follow their inputs' device)."""
        return replace(self, mi=replace(self.mi, device=device))

    def settings(self) -> dict[str, Any]:
        """The settings that change the numbers, flat (a resumed run must match them)."""
        return {"analyses": list(self.analyses), "protocol": self.probe.protocol, "folds": self.probe.folds,
                "seed": self.probe.seed, "seeds": self.probe.seeds, "controls": list(self.controls),
                "mi_estimator": self.mi.estimator, "mi_sigma": self.mi.sigma, "mi_eps": self.mi.eps,
                "mi_max_samples": self.mi.max_samples, "mi_bootstrap": self.mi.bootstrap,
                "mi_permutations": self.mi.permutations, "mi_checks": list(self.mi.checks),
                "transfer": [list(pair) for pair in self.transfer]}


def analyse(layers: torch.Tensor, labels: np.ndarray, config: AnalysisConfig, groups: np.ndarray | None = None,
            statements: Sequence[str] | None = None, keep: Callable[[FoldProbes], None] | None = None) -> pd.DataFrame:
    """Probe rows (with the shuffled and lexical controls) and/or MI rows for one activation set.

    ``layers`` is ``[n_layers, n, d]``; ``groups`` the rows' group ids (``group-cv``); ``statements`` their
    text (the lexical control); ``keep`` gets the probes of the first fold (``probes.probe_layers``). MI follows the
    released code: X = layer 0, T = layer l, Y = labels, on the probe's training split of z-scored activations (see
    ``probes.training_split``).
    """
    frames = []
    probe = replace(config.probe, control_shuffled="shuffled" in config.controls)
    if "probe" in config.analyses:
        rows = probe_layers(layers, labels, probe, groups, keep)
        if "lexical" in config.controls and statements is not None:
            lexical = lexical_accuracy(statements, labels, probe.fold_sets(labels, groups))
            first = rows[rows.metric == "accuracy"]
            rows = pd.concat([rows, first.assign(metric="control_lexical", value=lexical)], ignore_index=True)
        frames.append(rows)
    if "mi" in config.analyses:
        train, y = training_split(layers, labels, config.probe, groups)
        kept = None if groups is None else np.asarray(groups)[training_rows(labels, config.probe, groups)]
        frames.append(mi_rows(train[0], train, y, config.mi, kept))
    return pd.concat(frames, ignore_index=True)


def transfer_rows(stored: Callable[[str], StoredActivations], pairs: Sequence[tuple[str, str]],
                  config: AnalysisConfig) -> pd.DataFrame:
    """Transfer tests of one checkpoint: for each (train, test), every layer's probe trained on all of train
    and scored on all of test (``probes.transfer_layers``); ``dimension`` is train, ``test_dataset`` test."""
    frames = []
    for train, test in pairs:
        a, b = stored(train), stored(test)
        rows = transfer_layers(a.layers, a.labels, b.layers, b.labels, config.probe)
        frames.append(rows.assign(dimension=train, test_dataset=test))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def resolve_transfer(given: Sequence[tuple[str, str]], datasets: dict[str, TrustDataset]) -> list[tuple[str, str]]:
    """Transfer tests as dataset names (a file is named by its stem), each side checked for both labels in the
    ``datasets`` already loaded (none is read again)."""
    names = {name: dataset_name(name) for pair in given for name in pair}
    pairs = [(names[train], names[test]) for train, test in given]
    for name in {n for pair in pairs for n in pair}:
        ds = datasets[name]
        if len(set(ds.labels.tolist())) < 2:
            raise DataFileError(f"{ds.path}: every statement has label {int(ds.labels[0])}, so a transfer test on it "
                             "cannot tell a probe from a constant answer. Give it statements of both labels.")
    return pairs


def random_init_rows(layers: torch.Tensor, labels: np.ndarray, config: AnalysisConfig,
                     groups: np.ndarray | None) -> pd.DataFrame:
    """The random-init control per layer: ``control_random_init`` (the probe's accuracy on a freshly
    initialised network's activations, with ``control_random_init_ci_low``/``_ci_high``) and, with the MI
    analysis, ``mi_tx_random_init``/``mi_ty_random_init`` (``mi_stats.random_init_mi_rows``)."""
    probe = replace(config.probe, control_shuffled=False)
    rows = probe_layers(layers, labels, probe, groups)
    names = {"accuracy": "control_random_init", "accuracy_ci_low": "control_random_init_ci_low",
             "accuracy_ci_high": "control_random_init_ci_high"}
    frames = [rows[rows.metric.isin(list(names))].assign(metric=lambda f: f.metric.map(names))]
    if "mi" in config.analyses:
        train, y = training_split(layers, labels, config.probe, groups)
        frames.append(random_init_mi_rows(train[0], train, y, config.mi))
    return pd.concat(frames, ignore_index=True)


def with_controls(rows: pd.DataFrame, random_init: pd.DataFrame | None) -> pd.DataFrame:
    """One dataset's rows with its random-init control (when traced) and the selectivity per layer."""
    if random_init is not None and not random_init.empty:
        rows = pd.concat([rows, random_init[rows.columns.intersection(random_init.columns)]], ignore_index=True)
    return with_selectivity(rows)


def dataset_of(manifest: dict[str, Any] | None, name: str, n_rows: int) -> TrustDataset:
    """The dataset a trace recorded under ``name``, read again and checked against its sha256."""
    info = (manifest or {}).get("datasets", {}).get(name)
    if info is None:
        raise RunFolderNotFoundError(f"The run's manifest names no dataset {name!r}; the groups and statements the "
                                     "controls and group-cv need cannot be found. Re-run `trusttrace trace`.")
    path = Path(info["path"])
    ds = load_dataset(name, path.parent, limit=info.get("limit")) if name in SPECS else \
        load_dataset(str(path), limit=info.get("limit"))
    if ds.sha256 != info["sha256"] or len(ds) != n_rows:
        raise DataFileError(f"{path} has changed since the run was traced (sha256 {ds.sha256[:12]}… vs "
                            f"{info['sha256'][:12]}…, {len(ds)} vs {n_rows} rows); restore it or trace again.")
    return ds


@dataclass(frozen=True)
class ProbeJobConfig:
    """A ``probe`` job: re-run the analyses on a trace folder's stored activations."""

    run: str  # a trace run folder holding activations/
    out: str  # where the new results table goes
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)


@dataclass(frozen=True)
class ProbeJobResult:
    """What a ``probe`` job wrote."""

    out: Path
    results: pd.DataFrame = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)

    @property
    def outputs(self) -> dict[str, Path]:
        layout = TraceLayout(self.out)
        return {"results.csv": layout.results_csv, "results.parquet": layout.results_parquet,
                "manifest.json": layout.manifest}


def _stored(layout: TraceLayout, revision: str, dataset: str) -> StoredActivations:
    return load_activations(layout.activation(revision, dataset))


def _identified(rows: pd.DataFrame, meta: dict[str, str], analysis: AnalysisConfig) -> pd.DataFrame:
    """Rows of one stored file with the columns that say where they come from (``tables.RESULT_COLUMNS``)."""
    step = int(meta["step"]) if meta.get("step") else None
    if "test_dataset" not in rows:
        rows = rows.assign(test_dataset="")
    return rows.assign(model=meta.get("model", ""), revision=meta.get("revision", ""), step=step,
                       seed=analysis.seed, protocol=analysis.probe.protocol, dtype=meta.get("dtype", ""),
                       commit=meta.get("commit", ""))[RESULT_COLUMNS]


def run_probe(config: ProbeJobConfig) -> ProbeJobResult:
    """Analyse every stored activation file of ``config.run``; write a results table to ``config.out``.

    The datasets are read again from where the trace found them (checked against their sha256) for their
    groups and text; the random-init control is re-fitted from its stored activations where the trace kept
    them.

    Example:
        >>> run_probe(ProbeJobConfig("runs/smol", "runs/smol-paper",
        ...                          AnalysisConfig.build(protocol="paper-code")))  # doctest: +SKIP
    """
    source, out = TraceLayout(Path(config.run)), TraceLayout(check_output(config.out))
    if not source.root.is_dir():
        raise RunFolderNotFoundError(f"Run folder {config.run!r} does not exist. Point at a `trusttrace trace` "
                                     "--out folder.")
    if out.root.resolve() == source.root.resolve():
        raise OutputError(f"--out {config.out!r} is the run folder itself, whose results.csv the trace wrote. Give "
                          f"another folder, e.g. {config.run}-probe.")
    refuse_overlap(out.root, source.root, "probe")  # e.g. --out RUN/activations
    with hold(out.root, "probe"):  # one writer at a time
        return _probe(config, source, out)


def _probe(config: ProbeJobConfig, source: TraceLayout, out: TraceLayout) -> ProbeJobResult:
    """``run_probe`` once its output folder is held."""
    files = source.activation_files()
    if not files:
        raise RunFolderError(f"{source.root} has no stored activations (activations/<revision>/<dataset>"
                                ".safetensors). Run `trusttrace trace` first, or point at its --out folder.")
    analysis, manifest = config.analysis, source.read_manifest()
    frames, controls, revisions = [], {}, {}
    for path in files:
        stored = load_activations(path)
        meta = stored.metadata
        name = meta.get("dataset", path.stem)
        ds = dataset_of(manifest, name, len(stored.labels))
        if name not in controls:
            control = source.control_activation(name)
            controls[name] = random_init_rows(load_activations(control).layers, ds.labels, analysis, ds.groups) \
                if analysis.random_init and control.is_file() else None
        rows = with_controls(analyse(stored.layers, stored.labels, analysis, ds.groups, ds.statements), controls[name])
        revisions[meta.get("revision", path.parent.name)] = meta
        frames.append(_identified(rows.assign(dimension=name), meta, analysis))
    for revision, meta in revisions.items():  # transfer tests need both datasets of a checkpoint
        if analysis.transfer:
            stored_at = partial(_stored, source, revision)
            frames.append(_identified(transfer_rows(stored_at, analysis.transfer, analysis), meta, analysis))
    results = out.write_results(pd.concat(frames, ignore_index=True))
    record = {"analysis": asdict(analysis), "activations_from": str(source.root.resolve()),
              "versions": package_versions(), "files": [source.relative(f) for f in files],
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out.write_manifest(record)
    return ProbeJobResult(out.root, results, record)
