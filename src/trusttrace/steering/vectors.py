"""The ``vectors`` job: steering vectors from a trace folder's stored activations, without a model.

For each revision a trace stored for a dimension, ``run_vectors`` builds the vector (``steering.build_vector``)
and writes it to ``OUT/<revision>/<dimension>.safetensors`` (default ``OUT`` = ``RUN/vectors``), with its
provenance in the safetensors header: model, revision, commit, dataset and its sha256, vocabulary
fingerprint, dtype, method, rows used, what each label means, and the trusttrace version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__
from ..activations.store import load_activations, read_metadata
from ..core.errors import RunFolderNotFoundError, UnknownNameError
from ..core.runlock import hold
from ..data.datasets import SPECS
from ..runs.layout import TraceLayout, VectorsLayout, safe_name
from ..runs.outputs import refuse_overlap
from .vector import METHODS, SteeringVector, build_vector

PROVENANCE_KEYS = ("model", "revision", "commit", "dataset", "dataset_sha256", "vocab_sha256", "dtype", "architecture")


def default_split(dimension: str) -> str:
    """The released code's rows for the mean difference: all of them for reliability (its test questions
    live in another file), the first (dev) half otherwise."""
    return "all" if dimension == "reliability" else "first-half"


def vector_from_run(run_dir: str | Path, revision: str, dimension: str, method: str = "paper-code",
                    split: str | None = None) -> SteeringVector:
    """A vector from the activations a ``trace`` run stored for ``revision`` and ``dimension``.

    ``split`` defaults to the released code's (``default_split``).
    """
    layout = TraceLayout(Path(run_dir))
    stored = load_activations(layout.activation(revision, dimension))
    meta = {k: stored.metadata[k] for k in PROVENANCE_KEYS if k in stored.metadata}
    meta.update(dimension=dimension, activations_from=str(layout.root.resolve()), trusttrace_version=__version__)
    if dimension in SPECS:  # what +α points toward
        meta.update(label1=SPECS[dimension].label1, label0=SPECS[dimension].label0)
    return build_vector(stored.layers, stored.labels, method, split or default_split(dimension), meta)


@dataclass(frozen=True)
class VectorsConfig:
    """Which vectors to build from a trace folder, and where to write them."""

    run: str  # a trace folder with stored activations
    dimension: str  # as stored: a dimension name, or a user file's stem
    out: str | None = None  # default RUN/vectors
    method: str = "paper-code"  # paper-code | mean-diff | probe (see trusttrace.steering.vector)
    split: str | None = None  # first-half | all; default: the released code's per dimension
    revisions: tuple[str, ...] | None = None  # default: every revision stored for the dimension

    def __post_init__(self) -> None:
        METHODS.check(self.method)

    @property
    def folder(self) -> VectorsLayout:
        return VectorsLayout(Path(self.out)) if self.out else TraceLayout(Path(self.run)).vectors


@dataclass
class VectorsResult:
    """The vectors built, by revision, and where they were written."""

    out: Path
    vectors: dict[str, SteeringVector] = field(repr=False)
    files: dict[str, Path]


def stored_revisions(run: str | Path, dimension: str) -> list[str]:
    """The revisions a trace folder stored activations of ``dimension`` for, in file order."""
    layout = TraceLayout(Path(run))
    return [read_metadata(p).get("revision", p.parent.name) for p in layout.activation_files()
            if p.stem == safe_name(dimension)]


def run_vectors(config: VectorsConfig) -> VectorsResult:
    """Build and write one vector per revision (see the module docstring).

    Example:
        >>> run_vectors(VectorsConfig("runs/smol", "toxicity"))  # doctest: +SKIP
    """
    if not Path(config.run).is_dir():
        raise RunFolderNotFoundError(f"{config.run} does not exist. Give a `trusttrace trace` run folder (it holds "
                                     "activations/<revision>/<dimension>.safetensors).")
    available = stored_revisions(config.run, config.dimension)
    if not available:
        raise RunFolderNotFoundError(f"{config.run} stores no activations of {config.dimension!r} "
                                     "(activations/<revision>/<dimension>.safetensors). Trace that dimension "
                                     "first, or check the name against `ls RUN/activations/*/`.")
    revisions = list(config.revisions or available)
    missing = [r for r in revisions if r not in available]
    if missing:
        raise UnknownNameError(f"{config.run} has no {config.dimension} activations for {missing}; it has {available}.")
    folder = config.folder
    refuse_overlap(folder.root, config.run, "vectors build", allowed=("vectors",))  # e.g. --out RUN/activations
    vectors, files = {}, {}
    with hold(folder.root, "vectors build"):  # one writer at a time
        for revision in revisions:
            vector = vector_from_run(config.run, revision, config.dimension, config.method, config.split)
            path = folder.vector(revision, config.dimension)
            vector.save(path)
            vectors[revision], files[revision] = vector, path
    return VectorsResult(folder.root, vectors, files)
