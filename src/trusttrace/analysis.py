"""What is computed from one stored activation set (probes, MI), and the ``probe`` job that re-runs it.

``analyse`` turns one (checkpoint, dataset) activation file into tidy rows; the ``trace`` job calls it for
every file it extracts, and ``run_probe`` calls it on a finished run's stored activations, without a model,
to score them under another protocol, fold count, seed or MI estimator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._version import package_versions
from .layout import TraceLayout
from .mutual_info import MIConfig, mi_rows
from .names import ANALYSES
from .probes import ProbeConfig, probe_layers, training_split
from .store import load_activations
from .tables import RESULT_COLUMNS


@dataclass(frozen=True)
class AnalysisConfig:
    """What is computed from one (checkpoint, dataset) activation file, and how."""

    analyses: tuple[str, ...] = ANALYSES  # probe, mi
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    mi: MIConfig = field(default_factory=MIConfig)

    def __post_init__(self) -> None:
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad or not self.analyses:
            raise ValueError(f"analyses {list(self.analyses)}: choose one or more of {', '.join(ANALYSES)}.")

    @classmethod
    def build(cls, analyses: tuple[str, ...] = ANALYSES, protocol: str = "cv", folds: int = 5, seed: int = 0,
              mi_estimator: str = "paper-code", mi_sigma: float | None = 50.0, mi_eps: float = 1e-5,
              mi_max_samples: int | None = None) -> AnalysisConfig:
        """The settings from flat options (as the CLI takes them); one seed for the folds and MI subsamples."""
        return cls(analyses, ProbeConfig(protocol=protocol, folds=folds, seed=seed),
                   MIConfig(estimator=mi_estimator, sigma=mi_sigma, eps=mi_eps, max_samples=mi_max_samples,
                            seed=seed))

    @property
    def seed(self) -> int:
        return self.probe.seed

    def on_device(self, device: str) -> AnalysisConfig:
        """The same analyses with MI computed on ``device`` (probes follow their inputs' device)."""
        return replace(self, mi=replace(self.mi, device=device))

    def settings(self) -> dict[str, Any]:
        """The settings that change the numbers, flat (a resumed run must match them)."""
        return {"analyses": list(self.analyses), "protocol": self.probe.protocol, "folds": self.probe.folds,
                "seed": self.probe.seed, "mi_estimator": self.mi.estimator, "mi_sigma": self.mi.sigma,
                "mi_eps": self.mi.eps, "mi_max_samples": self.mi.max_samples}


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
class ProbeRunConfig:
    """A ``probe`` job: re-run the analyses on a trace folder's stored activations."""

    run: str  # a trace run folder holding activations/
    out: str  # where the new results table goes
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)


@dataclass(frozen=True)
class ProbeRunResult:
    """What a ``probe`` job wrote."""

    out: Path
    results: pd.DataFrame = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)

    @property
    def outputs(self) -> dict[str, Path]:
        layout = TraceLayout(self.out)
        return {"results.csv": layout.results_csv, "results.parquet": layout.results_parquet,
                "manifest.json": layout.manifest}


def run_probe(config: ProbeRunConfig) -> ProbeRunResult:
    """Analyse every stored activation file of ``config.run``; write a results table to ``config.out``.

    Example:
        >>> run_probe(ProbeRunConfig("runs/smol", "runs/smol-paper",
        ...                          AnalysisConfig.build(protocol="paper-code")))  # doctest: +SKIP
    """
    source, out = TraceLayout(Path(config.run)), TraceLayout(Path(config.out))
    files = source.activation_files()
    if not files:
        raise FileNotFoundError(f"{source.root} has no stored activations (activations/<revision>/<dataset>"
                                ".safetensors). Run `trusttrace trace` first, or point at its --out folder.")
    analysis = config.analysis
    frames = []
    for path in files:
        stored = load_activations(path)
        meta = stored.metadata
        rows = analyse(stored.layers, stored.labels, analysis)
        step = int(meta["step"]) if meta.get("step") else None
        frames.append(rows.assign(model=meta.get("model", ""), revision=meta.get("revision", path.parent.name),
                                  step=step, dimension=meta.get("dataset", path.stem), seed=analysis.seed,
                                  protocol=analysis.probe.protocol, dtype=meta.get("dtype", ""),
                                  commit=meta.get("commit", ""))[RESULT_COLUMNS])
    results = out.write_results(pd.concat(frames, ignore_index=True))
    manifest = {"analysis": asdict(analysis), "activations_from": str(source.root.resolve()),
                "versions": package_versions(), "files": [source.relative(f) for f in files],
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    out.write_manifest(manifest)
    return ProbeRunResult(out.root, results, manifest)
