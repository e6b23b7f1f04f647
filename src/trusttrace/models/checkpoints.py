"""Checkpoint series: which revisions of one model a sweep visits, in training order.

Sources: an explicit revision list, a built-in catalog (LLM360/Amber, the Pythia suite), the branches a hub
repository lists, or a local folder of checkpoint folders. Selectors (``first:N``, ``last:N``, ``every:K``,
``log:N``, ``all``, or names) then pick a subset.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..core.errors import ModelError, OptionError, UnknownNameError
from ..core.names import SELECTOR_HELP
from .hub import hub_call
from .ref import ModelRef

# Pythia: step0, the log-spaced steps 1..512, then every 1000 steps to 143000 (154 checkpoints).
PYTHIA_STEPS: tuple[int, ...] = (0, *(2**i for i in range(10)), *range(1000, 143_001, 1000))
AMBER_REVISIONS: tuple[str, ...] = tuple(f"ckpt_{i:03d}" for i in range(360))



@dataclass(frozen=True)
class Checkpoint:
    """One point of a series: what ``load_model(ref, revision)`` takes, plus its training step."""

    name: str  # revision or folder name, as it appears in output tables
    step: int | None  # training step parsed from the name (Amber: the checkpoint index)
    ref: str  # hub id, or the local checkpoint folder
    revision: str | None  # hub revision; None for local folders
    commit: str | None = None  # resolved hub commit, when known


def step_of(name: str) -> int | None:
    """The training step in a checkpoint name: ``step1000-tokens4B`` → 1000, ``ckpt_179`` → 179,
    ``checkpoint-500`` → 500, ``main`` → None."""
    match = re.search(r"step[_-]?(\d+)", name) or re.search(r"(\d+)", name)
    return int(match.group(1)) if match else None


def _catalog(model: str) -> list[str] | None:
    """Revision names for models whose checkpoints follow a published scheme."""
    if model.lower() == "llm360/amber":
        return list(AMBER_REVISIONS)
    if re.fullmatch(r"eleutherai/pythia-[\w.-]+", model.lower()):
        return [f"step{s}" for s in PYTHIA_STEPS]
    return None


@dataclass(frozen=True)
class CheckpointSeries:
    """An ordered series of checkpoints of one model.

    Example:
        >>> s = CheckpointSeries.resolve("EleutherAI/pythia-70m").select("log:5")
        >>> [c.name for c in s]
        ['step0', 'step16', 'step512', 'step7000', 'step143000']
    """

    model: str
    checkpoints: tuple[Checkpoint, ...]
    source: Literal["list", "catalog", "hub", "local", "single"]

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.checkpoints)

    def __len__(self) -> int:
        return len(self.checkpoints)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checkpoints]

    # ------------------------------------------------------------ constructors

    @classmethod
    def from_revisions(cls, model: str, revisions: Sequence[str]) -> CheckpointSeries:
        """An explicit list of hub revisions, kept in the order given."""
        if not revisions:
            raise OptionError(f"No revisions given for {model}. Pass at least one, e.g. --revisions main.")
        points = tuple(Checkpoint(r, step_of(r), model, r) for r in revisions)
        return cls(model, points, "list")

    @classmethod
    def from_hub(cls, model: str) -> CheckpointSeries:
        """The repository's branches that carry a step number, in step order, with their commits."""
        from huggingface_hub import list_repo_refs

        refs = hub_call(f"Listing the branches of {model}", list_repo_refs, model)
        points = [Checkpoint(b.name, step_of(b.name), model, b.name, b.target_commit) for b in refs.branches]
        stepped = sorted((p for p in points if p.step is not None), key=lambda p: (p.step, p.name))
        if not stepped:  # no training checkpoints: keep what there is, main last
            stepped = sorted(points, key=lambda p: (p.name == "main", p.name))
        return cls(model, tuple(stepped), "hub")

    @classmethod
    def from_local(cls, folder: str | Path) -> CheckpointSeries:
        """A folder whose sub-folders are HF checkpoints, sorted by the step number in their names.

        Links (such as a ``last`` link to the newest checkpoint) are skipped: they repeat a checkpoint.
        """
        root = Path(folder).expanduser()
        subdirs = [d for d in root.iterdir() if d.is_dir() and not d.is_symlink() and (d / "config.json").exists()]
        if not subdirs:
            raise ModelError(
                f"{root} has no checkpoint folders (sub-folders with a config.json). Point at the folder "
                "that holds e.g. step0/, step100/, … or at one checkpoint folder."
            )
        missing = [d.name for d in subdirs if step_of(d.name) is None]
        if missing:
            raise ModelError(
                f"Checkpoint folders {missing} in {root} carry no step number, so their order is unknown. "
                "Rename them with the step, e.g. step1000/ or checkpoint-1000/."
            )
        subdirs.sort(key=lambda d: (step_of(d.name), d.name))
        points = tuple(Checkpoint(d.name, step_of(d.name), str(d), None) for d in subdirs)
        return cls(str(root), points, "local")

    @classmethod
    def resolve(cls, model: str, revisions: Sequence[str] | None = None) -> CheckpointSeries:
        """Pick the source for ``model``: explicit revisions, a local series or single checkpoint,
        a built-in name, a catalog, else the hub's branch list."""
        ref = ModelRef(model)  # what the name is: refused here when it is nothing (a mistyped path, say)
        if revisions and ref.kind in ("gguf", "checkpoint"):
            raise OptionError(f"--revisions {','.join(revisions)!r}: {model} is one checkpoint, which has no "
                              "revisions. Drop --revisions, or point at the series folder that holds the "
                              "checkpoint folders.")
        if revisions and ref.kind == "series":  # a local series: revisions are its checkpoint folders' names
            return cls.from_local(ref.path).named(revisions, "--revisions")
        if revisions:
            return cls.from_revisions(model, revisions)
        if ref.single:
            return cls(model, (Checkpoint("final", None, model, None),), "single")
        if ref.kind == "series":
            return cls.from_local(ref.path)
        names = _catalog(model)
        if names is not None:
            return cls(model, tuple(Checkpoint(n, step_of(n), model, n) for n in names), "catalog")
        return cls.from_hub(model)

    # ------------------------------------------------------------ selection

    def select(self, selector: str | None) -> CheckpointSeries:
        """A sub-series by selector: ``all``, ``first:N``, ``last:N``, ``every:K`` (positions 0, K, 2K…),
        ``log:N`` (N checkpoints log-spaced in step, always with the first and last), or names."""
        if selector is None or selector.strip() == "all":
            return self
        kind, colon, arg = selector.strip().partition(":")
        if kind.strip() in ("first", "last", "every", "log") and colon:
            n = _positive_int(arg.strip(), selector)
            count = len(self.checkpoints)
            if kind == "first":
                idx = list(range(min(n, count)))
            elif kind == "last":
                idx = list(range(max(0, count - n), count))
            elif kind == "every":
                idx = list(range(0, count, n))
            else:
                idx = log_spaced_indices([c.step for c in self.checkpoints], n)
            return replace(self, checkpoints=tuple(self.checkpoints[i] for i in idx))
        return self.named(selector.split(","), "--select")

    def named(self, names: Sequence[str], option: str) -> CheckpointSeries:
        """The checkpoints called ``names``, in the order given; an empty, repeated or unknown name is refused
        with the names the series has."""
        given = ",".join(names)
        wanted = [s.strip() for s in names]
        if not wanted or any(not w for w in wanted):
            raise OptionError(f"{option} {given!r}: an empty checkpoint name. Give {SELECTOR_HELP}.")
        repeated = sorted({w for w in wanted if wanted.count(w) > 1})
        if repeated:
            raise OptionError(f"{option} {given!r} names {repeated} more than once; give each checkpoint once.")
        by_name = {c.name: c for c in self.checkpoints}
        unknown = [w for w in wanted if w not in by_name]
        if unknown:
            raise UnknownNameError(
                f"{option} {given!r}: {unknown} not in the series of {self.model}, which has {self.listing()}. "
                f"Selectors: {SELECTOR_HELP}. `trusttrace checkpoints {self.model}` lists the names."
            )
        return replace(self, checkpoints=tuple(by_name[w] for w in wanted))

    def listing(self, most: int = 12) -> str:
        """The series' names for a message: all of them, or the first and last few of a long series."""
        names = self.names
        if len(names) <= most:
            return ", ".join(names)
        return f"{', '.join(names[:most - 3])}, …, {', '.join(names[-2:])} ({len(names)} in all)"


def _positive_int(text: str, selector: str) -> int:
    if text.isascii() and text.isdigit() and len(text) > 9:  # int() of thousands of digits is refused by Python
        raise OptionError(f"Selector {selector!r}: {text[:12]}… is larger than any series; use 'all' for every "
                          "checkpoint.")
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise OptionError(f"Selector {selector!r}: {text!r} is not a positive whole number; e.g. "
                          f"{selector.partition(':')[0].strip()}:4. Selectors: {SELECTOR_HELP}.")
    return int(text)


def log_spaced_indices(steps: Sequence[int | None], n: int) -> list[int]:
    """``n`` distinct positions spread evenly in log(1 + step), always including the first and last.

    Positions stand in for steps when some step is unknown. Nearby targets that fall on the same
    checkpoint are nudged to the next free one, so exactly ``min(n, len(steps))`` positions come back.
    """
    import numpy as np  # here: listing a series needs no numpy

    count = len(steps)
    if n >= count:
        return list(range(count))
    if n == 1:
        return [count - 1]
    values = np.array([s if s is not None else i for i, s in enumerate(steps)], dtype=float)
    if any(s is None for s in steps):
        values = np.arange(count, dtype=float)
    logs = np.log1p(values - values.min())
    targets = np.linspace(logs[0], logs[-1], n)
    chosen: list[int] = []
    for k, target in enumerate(targets):
        i = int(np.argmin(np.abs(logs - target)))
        low = chosen[-1] + 1 if chosen else 0
        high = count - (n - k)  # leave room for the remaining picks
        chosen.append(min(max(i, low), high))
    chosen[-1] = count - 1
    return chosen
