"""Where everything of a run lives. Every stage, the report and the CLI take their paths from here.

One class per kind of run folder, and ``RunLayout`` to say what a folder holds::

    trace      manifest.json                    config, settings, versions, seeds, datasets, checkpoints, timings
               results.csv, results.parquet     tidy rows (``tables.RESULT_COLUMNS``)
               parts/<revision>.csv             one finished checkpoint's rows (the resume record)
               activations/<revision>/<dataset>.safetensors
               probes/<revision>/<dataset>.safetensors   the fitted per-layer probes (``saved_probes``)
               controls/random-init.csv, controls/activations/<dataset>.safetensors  (the random-init control)
               mi/phases.csv, mi/summary.csv    ``trusttrace phases``; mi/<dimension>_*.html|png its figures
               log.txt
    probe      manifest.json ("analysis"), results.csv, results.parquet: stored activations re-fitted
    vectors    <revision>/<dimension>.safetensors
    steer      steer_config.json, steering.csv, best.csv, correlation.csv, failed.json,
               parts/<source>__L<layer>__a<α>.csv, source/ and target/ (trace folders), vectors/, log.txt
    pretrain   pretrain_config.json, corpus.json, tokenizer/, data/{train,heldout}.npy,
               checkpoints/step<N>/, checkpoints/last, state/train_state.safetensors, loss.csv,
               checkpoints.csv, trace/ (a trace folder, when traced live), log.txt
    finetune   a model folder: config.json, weights, tokenizer, finetune.json, loss.csv
    demo       demo_config.json, demo_plan.json (with a budget), pretrain/, chat/ (finetune), steer-<dimension>/,
               summary.md, summary.json, report/, log.txt
    report     index.html, figures/<name>.png, tables/<name>.csv

Every name taken from data (revisions such as ``org/branch``, a sweep's ``proxy:<source>`` rows, dataset and
dimension names) is stored through ``safe_name``: one file name, never a path, never the same for two names.
Every file is written atomically (temporary name, then rename) with a record of its size and sha256 beside
it, ``<name>.sha256.json`` (``_io``, ``integrity``); a resuming run uses only files that match their records,
and the results table is always rebuilt from the intact parts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import pandas as pd

from ..core.errors import DamagedFileError, RunFolderNotFoundError
from ..core.filenames import check_distinct, safe_name  # noqa: F401 (re-exported: every path comes from here)
from ..core.files import write_json_atomic, write_with
from .integrity import check, damaged, describe
from .settings import (  # noqa: F401 (read_csv and the settings helpers are imported from here too)
    describe_diff,
    read_csv,
    read_json,
    record_settings,
    refuse_other_settings,
    settings_diff,
)
from .tables import order_results

Kind = Literal["trace", "probe", "steer", "pretrain", "demo", "empty"]


class At:
    """A path under a layout's root, as a read-only attribute: ``manifest = At("manifest.json")``."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, layout: Rooted, owner: type | None = None) -> Path:
        return layout.root.joinpath(*self.parts)


L = TypeVar("L")


class Sub(Generic[L]):
    """A sub-folder of another kind, as a read-only attribute: ``source = Sub(TraceLayout, "source")``."""

    def __init__(self, kind: Callable[[Path], L], *parts: str) -> None:
        self.kind, self.parts = kind, parts

    def __get__(self, layout: Rooted, owner: type | None = None) -> L:
        return self.kind(layout.root.joinpath(*self.parts))


class Rooted(Protocol):
    """Anything with a root folder: every layout."""

    @property
    def root(self) -> Path: ...


# ---------------------------------------------------------------- trace


@dataclass(frozen=True)
class VectorsLayout:
    """A folder of steering vectors: ``<revision>/<dimension>.safetensors``."""

    root: Path

    def vector(self, revision: str, dimension: str) -> Path:
        return self.root / safe_name(revision) / f"{safe_name(dimension)}.safetensors"

    def files(self) -> list[Path]:
        return sorted(self.root.glob("*/*.safetensors"))


@dataclass(frozen=True)
class TraceLayout:
    """A ``trace`` run folder (see the module docstring)."""

    root: Path
    manifest = At("manifest.json")
    results_csv = At("results.csv")
    results_parquet = At("results.parquet")
    parts = At("parts")
    log = At("log.txt")
    mi = At("mi")
    phases_csv = At("mi", "phases.csv")
    phases_summary_csv = At("mi", "summary.csv")
    activations_dir = At("activations")
    vectors = Sub(VectorsLayout, "vectors")
    random_init_csv = At("controls", "random-init.csv")  # the random-init control's accuracy per layer

    def part(self, revision: str) -> Path:
        return self.parts / f"{safe_name(revision)}.csv"

    def activations(self, revision: str) -> Path:
        return self.activations_dir / safe_name(revision)

    def activation(self, revision: str, dataset: str) -> Path:
        return self.activations(revision) / f"{safe_name(dataset)}.safetensors"

    def probe(self, revision: str, dataset: str) -> Path:
        """The fitted per-layer probes of one checkpoint × dataset (``trusttrace.analysis.saved_probes``)."""
        return self.root / "probes" / safe_name(revision) / f"{safe_name(dataset)}.safetensors"

    def control_activation(self, dataset: str) -> Path:
        """The random-init control's activations of ``dataset`` (one per run, whatever the checkpoints)."""
        return self.root / "controls" / "activations" / f"{safe_name(dataset)}.safetensors"

    def activation_files(self) -> list[Path]:
        return sorted(self.activations_dir.glob("*/*.safetensors"))

    def relative(self, path: Path) -> str:
        """``path`` inside this folder, as the ``/``-separated name a URL mirror uploads it under."""
        return path.relative_to(self.root).as_posix()

    def exists(self) -> bool:
        return self.results_csv.is_file() or self.results_parquet.is_file() or self.manifest.is_file()

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, None when there is none; ``DamagedFileError`` when it fails its record or is not JSON
        (the run's settings and finished checkpoints cannot be known then)."""
        fix = ("The run's settings cannot be checked against it: if this command has the same settings as the "
               "run, delete manifest.json (and manifest.json.sha256.json) and rerun (intact parts are kept); else "
               "pass a new --out.")
        return read_json(self.manifest, fix) if self.manifest.is_file() else None

    def settings_diff(self, settings: Mapping[str, Any], datasets: Mapping[str, str]) -> dict[str, tuple[Any, Any]]:
        """How ``settings`` and the datasets' contents (sha256) differ from those the folder's run recorded."""
        old = self.read_manifest()
        if old is None:
            return {}
        # Manifests before 0.1 kept the settings among the flat config.
        old_settings = old.get("settings") or {k: old.get("config", {}).get(k) for k in settings}
        diff = settings_diff(old_settings, settings)
        old_shas = {d: v["sha256"] for d, v in old.get("datasets", {}).items() if d in datasets}
        diff.update({f"dataset {d}": (old_shas[d][:12], datasets[d][:12]) for d in old_shas
                     if old_shas[d] != datasets[d]})
        return diff

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        write_json_atomic(self.manifest, manifest)

    def write_results(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Put rows in training order and write ``results.csv`` and ``results.parquet`` atomically."""
        frame = order_results(frame)
        self.root.mkdir(parents=True, exist_ok=True)
        write_with(self.results_csv, lambda tmp: frame.to_csv(tmp, index=False))
        write_with(self.results_parquet, lambda tmp: frame.to_parquet(tmp, index=False))
        return frame

    def write_part(self, revision: str, frame: pd.DataFrame, key: str | None = None) -> None:
        """A finished checkpoint's rows; ``key`` (the run's settings' sha256) is kept in the part's record."""
        write_with(self.part(revision), lambda tmp: frame.to_csv(tmp, index=False),
                   meta={"settings_sha256": key} if key else None)

    def read_results(self) -> pd.DataFrame:
        """The results table (parquet, else CSV), after checking it against its record."""
        fix = "Rerun the command that wrote the folder with the same --out: it rebuilds the table from its parts."
        for path, reader in ((self.results_parquet, pd.read_parquet), (self.results_csv, pd.read_csv)):
            if path.is_file():
                found = check(path)
                if found.status == "damaged":
                    raise DamagedFileError(f"{describe(found)}. {fix}", str(path))
                try:
                    return reader(path)
                except (OSError, ValueError) as err:  # pyarrow's and pandas' errors for a file cut short
                    raise damaged(path, err, fix) from err
        raise RunFolderNotFoundError(f"{self.root} has no results.parquet or results.csv. Point at a "
                                     "`trusttrace trace` --out folder.")


# ---------------------------------------------------------------- vectors and steering


@dataclass(frozen=True)
class SteerLayout:
    """A ``steer`` run folder (see the module docstring)."""

    root: Path
    settings = At("steer_config.json")
    steering_csv = At("steering.csv")
    best_csv = At("best.csv")
    correlation_csv = At("correlation.csv")
    failed_json = At("failed.json")
    log = At("log.txt")
    source = Sub(TraceLayout, "source")
    target = Sub(TraceLayout, "target")
    vectors = Sub(VectorsLayout, "vectors")

    def part(self, name: str, layer: int, alpha: float) -> Path:
        """One evaluation of the sweep: the unsteered target, or (source, layer, α)."""
        return self.root / "parts" / f"{safe_name(name)}__L{layer}__a{alpha:+g}.csv"

    def items(self, name: str, layer: int, alpha: float) -> Path:
        """That evaluation's 0/1 outcome per item (for the paired test against the unsteered target)."""
        return self.part(name, layer, alpha).with_suffix(".items.csv")

    def exists(self) -> bool:
        return self.settings.is_file() or self.steering_csv.is_file()


# ---------------------------------------------------------------- training runs


@dataclass(frozen=True)
class PretrainLayout:
    """A ``pretrain`` run folder (see the module docstring)."""

    root: Path
    settings = At("pretrain_config.json")
    corpus = At("corpus.json")
    tokenizer = At("tokenizer")

    def data(self, split: str) -> Path:
        return self.root / "data" / f"{split}.npy"

    checkpoints_dir = At("checkpoints")

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"step{step}"

    last = At("checkpoints", "last")
    state = At("state", "train_state.safetensors")
    loss_csv = At("loss.csv")
    checkpoints_csv = At("checkpoints.csv")
    trace = Sub(TraceLayout, "trace")
    log = At("log.txt")

    def checkpoints(self) -> Iterator[Path]:
        """The saved checkpoint folders, in step order (the ``last`` link is not among them)."""
        found = (p for p in self.checkpoints_dir.glob("step*") if p.is_dir() and not p.is_symlink())
        yield from sorted(found, key=lambda p: int(p.name[4:]))

    def exists(self) -> bool:
        return self.settings.is_file() or self.loss_csv.is_file() or self.checkpoints_dir.is_dir()


@dataclass(frozen=True)
class FinetuneLayout:
    """A fine-tuned model folder: the model itself plus its record and loss curve."""

    root: Path
    record = At("finetune.json")
    loss_csv = At("loss.csv")

    def is_finished(self) -> bool:
        return self.record.is_file() and (self.root / "config.json").is_file()


@dataclass(frozen=True)
class EvaluateLayout:
    """An ``evaluate --out`` folder."""

    root: Path
    table, parquet = At("evaluate.csv"), At("evaluate.parquet")
    manifest, log = At("manifest.json"), At("log.txt")


# ---------------------------------------------------------------- demo and report


def report_for(run: Path, n_runs: int = 1) -> ReportLayout:
    """Where a report of ``run`` goes by default: ``RUN/report``, or ``RUN/report-compare`` beside others."""
    folder = run if run.is_dir() else run.parent
    return ReportLayout(folder / ("report" if n_runs == 1 else "report-compare"))


@dataclass(frozen=True)
class ReportLayout:
    """A report folder: ``index.html``, ``figures/``, ``tables/``."""

    root: Path
    page = At("index.html")
    figures = At("figures")
    tables = At("tables")


@dataclass(frozen=True)
class DemoLayout:
    """A ``demo`` run folder (see the module docstring)."""

    root: Path
    settings = At("demo_config.json")
    plan = At("demo_plan.json")  # with --budget: the plan chosen, its estimates, and the seconds taken
    pretrain = Sub(PretrainLayout, "pretrain")
    chat = Sub(FinetuneLayout, "chat")

    def steer(self, dimension: str) -> SteerLayout:
        return SteerLayout(self.root / f"steer-{safe_name(dimension)}")

    summary_md = At("summary.md")
    summary_json = At("summary.json")
    report = Sub(ReportLayout, "report")
    log = At("log.txt")


# ---------------------------------------------------------------- what a folder holds


@dataclass(frozen=True)
class RunLayout:
    """What a run folder holds, read from the files each kind writes (see the module docstring).

    A demo-shaped folder (``pretrain/`` and sweeps as sub-folders) is read as a demo even without its
    ``demo_config.json``, so a folder assembled by hand reports the same way.
    """

    root: Path

    @property
    def kind(self) -> Kind:
        if (self.root / "demo_config.json").is_file():
            return "demo"
        if SteerLayout(self.root).exists():
            return "steer"
        if PretrainLayout(self.root).exists():
            return "pretrain"
        trace = TraceLayout(self.root)
        if trace.exists():
            try:
                manifest = trace.read_manifest() or {}
            except DamagedFileError:  # trace and probe folders differ only by this key: `verify` reports it
                return "trace"
            return "probe" if "analysis" in manifest else "trace"
        if PretrainLayout(self.root / "pretrain").exists() or self._sweep_folders():
            return "demo"
        return "empty"

    def trace(self) -> TraceLayout | None:
        """The folder's trace: itself, a pre-training run's live trace, or a demo's."""
        kind = self.kind
        candidates = {"trace": TraceLayout(self.root), "probe": TraceLayout(self.root),
                      "pretrain": PretrainLayout(self.root).trace,
                      "demo": DemoLayout(self.root).pretrain.trace}
        found = candidates.get(kind)
        return found if found is not None and found.exists() else None

    def pretrain(self) -> PretrainLayout | None:
        """The folder's pre-training run: itself, or a demo's."""
        kind = self.kind
        found = {"pretrain": PretrainLayout(self.root), "demo": DemoLayout(self.root).pretrain}.get(kind)
        return found if found is not None and found.exists() else None

    def steers(self) -> dict[str, SteerLayout]:
        """Steering sweeps by name: the folder itself (``steer``), or its sweep sub-folders (a demo's)."""
        kind = self.kind
        if kind == "steer":
            return {"steer": SteerLayout(self.root)}
        if kind == "demo":
            return {p.name: SteerLayout(p) for p in self._sweep_folders()}
        return {}

    def _sweep_folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in sorted(self.root.iterdir()) if p.is_dir() and SteerLayout(p).steering_csv.is_file()]
