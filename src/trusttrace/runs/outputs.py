"""Output folders checked before a command loads or writes anything, and ``--overwrite``.

A run that fails on its output only after minutes of loading and extracting wastes the minutes and may
leave half a folder behind, so every command that writes a run folder asks ``check_output`` first: the
folder must be a folder (or not exist yet), no file may stand where one of its parents should be, and the
first existing parent must be writable. ``start_over`` is ``--overwrite``: it empties a folder, but only a
folder trusttrace wrote (or an empty one), so that ``--out ~ --overwrite`` can never delete a home folder.

``finite_settings`` refuses NaN and ±infinity among settings before they are recorded: JSON has no such
numbers, and a budget or strength of NaN makes every comparison with it false.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import OptionError, OutputError, OutputOverlapsInputError, UsageError
from ..core.runlock import LOCK_NAME, holds, made_here, refuse_if_held

# Every name a trusttrace run folder holds at its top level (see ``layout``'s module docstring), by kind.
KNOWN_FILES: dict[str, frozenset[str]] = {
    "trace": frozenset({"manifest.json", "results.csv", "results.parquet", "parts", "activations", "probes",
                        "controls", "mi", "vectors", "log.txt"}),
    "steer": frozenset({"steer_config.json", "steering.csv", "best.csv", "correlation.csv", "failed.json",
                        "parts", "source", "target", "vectors", "log.txt"}),
    "pretrain": frozenset({"pretrain_config.json", "corpus.json", "tokenizer", "data", "checkpoints", "state",
                           "loss.csv", "checkpoints.csv", "trace", "log.txt"}),
    "demo": frozenset({"demo_config.json", "demo_plan.json", "pretrain", "chat", "summary.md", "summary.json",
                       "report", "log.txt"}),
    "report": frozenset({"index.html", "figures", "tables"}),
    "evaluate": frozenset({"evaluate.csv", "evaluate.parquet", "manifest.json", "log.txt"}),
}
KNOWN_FILES["probe"] = KNOWN_FILES["trace"]
# A fine-tuned model folder: trusttrace's record plus whatever a Hugging Face model folder holds.
FINETUNE_MARK = "finetune.json"
_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".csv", ".jinja")


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest parent that exists (the root always does)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor or ".")


def check_output(path: str | Path, option: str = "--out") -> Path:
    """Refuse an output folder that cannot be created or written, before anything loads or is written.

    Returns the folder as a ``Path``. A folder that exists already is fine (a rerun resumes it); what is
    refused: a file at ``path``, a file where one of its parents should be, a parent that is not writable.
    An fsspec URL (``s3://…``) is left to its filesystem: its local mirror is trusttrace's own cache.
    """
    folder = Path(path).expanduser()
    if "://" in str(path):  # remote.is_url, without importing the hub helpers
        return folder
    existing = _first_existing(folder)
    if existing == folder and not folder.is_dir():
        raise OutputError(f"{option} {str(path)!r} is a file, not a folder. Give a folder path (it is created "
                          "when missing), e.g. runs/my-run.")
    if existing != folder and not existing.is_dir():
        raise OutputError(f"{option} {str(path)!r} lies under {existing}, which is a file, so the folder cannot "
                          "be created. Give a path whose parents are folders, e.g. runs/my-run.")
    if not os.access(existing, os.W_OK | os.X_OK) or not _can_create_in(existing):
        where = "" if existing == folder else f" (its first existing parent {existing})"
        raise OutputError(f"{option} {str(path)!r}{where} is not writable by this user. Give a folder you can "
                          "write to, or change its permissions.")
    return folder


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be made in ``folder`` (made and removed at once). ``os.access`` alone says yes to
    root everywhere, also on a read-only file system or under ``/proc``."""
    try:
        handle, name = tempfile.mkstemp(prefix=".trusttrace-write-check-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(name)
    return True


def run_kind(folder: Path) -> str:
    """What kind of trusttrace folder ``folder`` is (``layout.RunLayout``'s kinds, plus ``report``,
    ``evaluate`` and ``finetune``), or ``"empty"`` when trusttrace did not write it."""
    from .layout import RunLayout

    evaluated = (folder / "evaluate.csv").is_file() or (folder / "evaluate.parquet").is_file()
    if evaluated and not (folder / "results.csv").is_file():  # its manifest.json alone reads as a trace
        return "evaluate"
    kind: str = RunLayout(folder).kind
    if kind != "empty":
        return kind
    if (folder / FINETUNE_MARK).is_file():
        return "finetune"
    if (folder / "index.html").is_file():
        return "report"
    return "empty"


def _foreign(folder: Path, kind: str) -> list[str]:
    """The entries of ``folder`` that a trusttrace folder of ``kind`` never holds."""
    # an atomic write's leftover temporary, and a file's size-and-sha256 record (``_io.RECORD_SUFFIX``)
    names = [p.name.removesuffix(".sha256.json") for p in folder.iterdir()
             if not (p.name.startswith(".") and ".tmp-" in p.name) and p.name != LOCK_NAME]
    if kind == "finetune":
        return [n for n in names if not (n == "loss.csv" or n.endswith(_MODEL_FILE_SUFFIXES))]
    known = KNOWN_FILES.get(kind, frozenset())
    extra = {"report"} | ({"report-compare"} if kind != "report" else set())  # a report drawn into the folder
    return [n for n in names if n not in known and n not in extra]


def start_over(path: str | Path, overwrite: bool, kinds: tuple[str, ...], option: str = "--out",
               inputs: Sequence[str | Path] = (), remove: bool = True) -> Path:
    """``--overwrite``: remove ``path`` when it is a run folder of one of ``kinds`` (or empty), so the run
    starts over.

    Without ``overwrite`` only ``check_output`` runs, and a folder of the user's own files is refused. A
    folder that holds anything trusttrace did not write, or a run of another kind (``trace --out`` a demo
    folder), is refused, whatever the flag says: ``--overwrite`` never deletes a folder of the user's, nor a
    bigger run than the one being made, nor the ``inputs`` the command reads (``probe RUN --out RUN``).
    ``remove=False`` makes every check and deletes nothing: the CLI checks first, and the job removes the
    folder only once its own inputs have passed, so that a refused input leaves the old run in place.
    """
    folder = check_output(path, option)
    if overwrite and "://" in str(path):
        raise OutputError(f"{option} {str(path)!r} --overwrite: only a local folder can be started over. Remove "
                          "the remote folder with its own tools, or give a new URL.")
    if not overwrite:
        _refuse_foreign(folder, kinds, option)
        return folder
    if not folder.is_dir():
        return folder
    refuse_if_held(folder, kinds[0])  # never a folder another process is writing
    if folder.is_symlink() or folder.resolve() in (Path.home().resolve(), Path.cwd().resolve(), Path("/")):
        raise OutputError(f"{option} {str(path)!r} --overwrite: {folder} is a link, your home folder or the "
                          "current folder; trusttrace removes only a run folder it wrote. Give the run folder "
                          "itself, e.g. runs/my-run.")
    for given in inputs:
        source = Path(given).expanduser().resolve()
        if source == folder.resolve() or folder.resolve() in source.parents:
            raise OutputError(f"{option} {str(path)!r} --overwrite: {folder} holds {given}, which this command "
                              "reads, so it is left as it is. Give another output folder.")
    entries = [p for p in folder.iterdir() if p.name != LOCK_NAME]
    if not entries:
        return folder
    kind = run_kind(folder)
    foreign = _foreign(folder, kind) if kind != "empty" else sorted(p.name for p in entries)
    if kind == "empty" or foreign:
        shown = ", ".join(sorted(foreign)[:5]) + (", …" if len(foreign) > 5 else "")
        raise OutputError(f"{option} {str(path)!r} --overwrite: {folder} is not a trusttrace run folder (it holds "
                          f"{shown}), so it is left as it is. Give a new folder, or the run folder to start over.")
    if kind not in kinds:
        raise OutputError(f"{option} {str(path)!r} --overwrite: {folder} holds a {kind} run, and this command makes "
                          f"a {' or '.join(kinds)} folder, so it is left as it is. Give the folder this command "
                          "wrote, or a new one.")
    if remove:
        if holds(folder):  # the run goes on holding it: everything but its lock goes
            empty_folder(folder)
        else:
            shutil.rmtree(folder)
    return folder


def empty_folder(folder: Path) -> None:
    """Remove everything in ``folder`` but its lock (the run that holds it goes on holding it)."""
    for entry in folder.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def refuse_overlap(out: str | Path, run: str | Path, command: str, allowed: Sequence[str] = (),
                   option: str = "--out") -> None:
    """Refuse an output that would overwrite what ``command`` reads from the run folder ``run``: the folder
    itself, or a folder inside it that the run's kind holds (activations, controls, parts, …), except those
    named in ``allowed`` (``vectors build`` writes ``RUN/vectors``). A new folder inside the run (a report in
    ``RUN/report``) is fine. Raises ``OutputOverlapsInputError`` before anything is written."""
    target, source = Path(os.path.abspath(Path(out).expanduser())), Path(os.path.abspath(Path(run).expanduser()))
    if target.exists() and source.exists() and target.resolve() == source.resolve() or target == source:
        raise OutputOverlapsInputError(f"{option} {str(out)!r} is {run}, the run folder `trusttrace {command}` reads: "
                                       "its files would be overwritten. Give another folder, e.g. "
                                       f"{source.name}-{command.split()[-1]}.")
    real_target, real_source = Path(os.path.realpath(target)), Path(os.path.realpath(source))
    if real_source not in real_target.parents:
        return
    first = real_target.relative_to(real_source).parts[0]
    owned = {name for names in KNOWN_FILES.values() for name in names} - set(allowed) - {"report", "report-compare"}
    if first in owned:
        raise OutputOverlapsInputError(
            f"{option} {str(out)!r} is or lies in {source / first}, which `trusttrace {command}` reads (or the "
            f"run's own {first}): writing there would overwrite or mix with the run's files. Give a folder "
            f"outside the run, or a new one inside it (e.g. {source / (command.split()[-1] + '-out')}).")


def refuse_same_file(out: str | Path, source: str | Path, command: str, option: str = "--out") -> None:
    """Refuse an output file that is the input file itself (``vectors export V --out V``)."""
    a, b = Path(out).expanduser(), Path(source).expanduser()
    same = a.exists() and b.exists() and os.path.samefile(a, b)
    if same or os.path.abspath(a) == os.path.abspath(b):
        raise OutputOverlapsInputError(f"{option} {str(out)!r} is the file `trusttrace {command}` reads ({source}): "
                                       "it would be replaced by its own output. Give another file name, e.g. "
                                       f"{b.with_name(b.stem + '-out' + b.suffix)}.")


def _refuse_foreign(folder: Path, kinds: tuple[str, ...], option: str) -> None:
    """Refuse to write a run into a folder of the user's own files (hidden ones aside): its tables would land
    among them, and ``--overwrite`` could never start it over. A fine-tuned model folder is exempt: an
    interrupted fine-tune leaves it without its record."""
    if "finetune" in kinds or not folder.is_dir():
        return
    entries = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    if entries and run_kind(folder) == "empty":
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        raise OutputError(f"{option} {str(folder)!r} holds files trusttrace did not write ({shown}). Give a new or "
                          "empty folder for the run (e.g. runs/my-run), or the run folder of an earlier run to "
                          "resume it.")


@contextmanager
def removed_on_usage_error(folder: Path, finished: Callable[[], bool]) -> Iterator[None]:
    """Remove ``folder`` when the block fails with a usage error before finishing anything, if the block
    made it: the user fixes the input and reruns into the same ``--out`` as if nothing had happened.

    Most inputs are checked before a folder is made; this covers what only the model shows (its blocks, its
    weights' shape). A runtime failure (a network, a killed process) keeps the folder, so the rerun resumes.
    """
    made = not folder.exists() or made_here(folder)
    try:
        yield
    except UsageError:
        if made and folder.is_dir() and not finished():
            empty_folder(folder)  # the hold that made it removes the folder itself as it lets go
        raise


def finite_settings(settings: Mapping[str, object], what: str, positive: Sequence[str] = ()) -> None:
    """Refuse NaN or ±infinity anywhere among ``settings`` (nested lists and mappings too), naming the key;
    the keys in ``positive`` (a budget, a learning rate) must also be above 0."""
    for key, value in settings.items():
        for bad in _non_finite(value):
            raise OptionError(f"{what}: {key} = {value!r} holds {bad!r}, which is not a finite number. Give "
                              "finite values (e.g. 1.33, or -2,-1,1,2 for a list).")
    for key in positive:
        value = settings.get(key)
        if isinstance(value, (int, float)) and value <= 0:
            raise OptionError(f"{what}: {key} = {value!r} must be above 0, e.g. {key} = 1.33 (a budget) or 2e-3 "
                              "(a learning rate).")


def _non_finite(value: object) -> list[float]:
    if isinstance(value, float):
        return [] if math.isfinite(value) else [value]
    if isinstance(value, Mapping):
        return [bad for v in value.values() for bad in _non_finite(v)]
    if isinstance(value, (list, tuple)):
        return [bad for v in value for bad in _non_finite(v)]
    return []
