"""``trusttrace verify``: every file of a run folder checked against its record, and what a rerun redoes.

Works on every kind of run folder (trace, probe, steer, pretrain, demo with its sub-folders): each record
(``<name>.sha256.json``) is compared with the file or folder it describes (``integrity.check``), files
without one are listed as *unrecorded*, leftover temporary files of killed writes as *leftover*, and each
finding says what a rerun with the same settings does about it (recompute a checkpoint from stored
activations, trace it again, rebuild a table, restart training from step 0, or stop and say what to delete).
A folder written before records were kept lists every file as unrecorded: a rerun recomputes all of them.

It also tells the folder's whole state (``unfinished``): what its settings ask for that it does not hold yet
(checkpoints still to trace, evaluations still to run, training steps still to take), and whether another
trusttrace process is writing it right now (its lock, ``runlock``; lock files are never findings). Its status
is *intact* (every file intact, nothing left to do), *incomplete* (every file intact but work left, or being
written) or *damaged* (a finding a rerun recomputes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..core.errors import DamagedFileError, RunFolderError, RunFolderNotFoundError
from ..core.files import RECORD_SUFFIX, is_record, record_as_is, record_path
from ..core.runlock import is_lock_file
from .integrity import check
from .layout import RunLayout, TraceLayout
from .unfinished import left_to_do, writer, writer_text

IGNORED_NAMES = ("log.txt",)  # appended as the run goes, never resumed from
REPORT_FOLDERS = ("report", "report-compare")  # drawn afresh by `trusttrace report`
_TMP = re.compile(r"^\..+\.tmp-\d+$")


@dataclass(frozen=True)
class Finding:
    """One file of a run folder that is not intact, and what a rerun does about it."""

    path: str  # relative to the verified folder
    status: Literal["damaged", "unrecorded", "missing", "leftover"]
    detail: str
    redo: str


Status = Literal["intact", "incomplete", "damaged"]


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_run`` found: the folder's kind, how many files it checked, every finding, what a rerun
    still has to do (``todo``, one line each, a sub-run's prefixed with its folder), and the other process
    writing the folder (``writer``: its lock's pid, command, host, started, and ``folder``, the one held)."""

    root: Path
    kind: str
    checked: int
    findings: tuple[Finding, ...]
    todo: tuple[str, ...] = ()
    writer: dict[str, Any] | None = None

    @property
    def status(self) -> Status:
        """``incomplete`` while another process writes the folder (its findings may be work in progress) or
        when every file is intact but work is left; else ``damaged`` when a rerun recomputes something
        (leftover temporary files are harmless), else ``intact``."""
        if self.writer is not None:
            return "incomplete"
        if any(f.status != "leftover" for f in self.findings):
            return "damaged"
        return "incomplete" if self.todo else "intact"

    @property
    def intact(self) -> bool:
        """True when the run is finished and a rerun would redo nothing."""
        return self.status == "intact"

    @property
    def writing(self) -> str | None:
        """The sentence saying who writes the folder (or which sub-folder), None when nobody else does."""
        if self.writer is None:
            return None
        folder = self.writer.get("folder", "")
        where = f"{folder}/ (inside {self.root})" if folder else str(self.root)
        return f"{where} is {writer_text(self.writer)}: findings may be work in progress"


def _trace_redo(rel: str, status: str, root: Path) -> str:
    parts = rel.split("/")
    if parts[0] == "parts" and len(parts) == 2:
        revision = parts[1].removesuffix(".csv")
        acts = root / "activations" / revision
        kept = acts.is_dir() and all(check(p).ok for p in acts.glob("*.safetensors"))
        how = "recomputed from stored activations" if kept and any(acts.glob("*.safetensors")) else "traced again"
        return f"checkpoint {revision}: part {status} → {how}"
    if parts[0] == "activations" and len(parts) == 3:
        return f"checkpoint {parts[1]}: {parts[2].removesuffix('.safetensors')} activations {status} → " \
               "extracted again (the checkpoint is loaded again) and its part recomputed"
    if parts[0] == "probes" and len(parts) == 3:
        return f"checkpoint {parts[1]}: {parts[2].removesuffix('.safetensors')} probes {status} → refitted (the " \
               "checkpoint's part is recomputed from its stored activations)"
    if parts[0] == "controls":
        return f"random-init control: {parts[-1]} {status} → recomputed"
    if rel in ("results.csv", "results.parquet"):
        return "results table: rebuilt from the intact parts"
    if rel == "manifest.json":
        return ("the rerun stops: the run's settings cannot be checked; delete manifest.json (and its record) "
                "to resume with the same settings, or pass a new --out")
    if parts[0] == "mi":
        return "rewritten by `trusttrace phases`"
    if parts[0] == "vectors":
        return "rewritten by `trusttrace vectors build` (or the steer that wrote it)"
    return "not used by a rerun"


def _probe_redo(rel: str, status: str, root: Path) -> str:
    return "rerun `trusttrace probe` with the same --out: it refits every file from the trace's activations"


def _steer_redo(rel: str, status: str, root: Path) -> str:
    parts = rel.split("/")
    if parts[0] == "parts" and len(parts) == 2:
        job = parts[1].removesuffix(".csv").removesuffix(".items")
        return f"evaluation {job}: {'outcomes' if parts[1].endswith('.items.csv') else 'part'} {status} → " \
               "evaluated again"
    if rel in ("steering.csv", "best.csv", "correlation.csv", "failed.json"):
        return f"{rel}: rebuilt from the intact parts"
    if rel == "steer_config.json":
        return "the rerun stops: the sweep's settings cannot be checked; delete steer_config.json (and its " \
               "record) to resume with the same settings, or pass a new --out"
    if parts[0] == "vectors":
        return "rebuilt from the source trace's activations"
    return "not used by a rerun"


def _pretrain_redo(rel: str, status: str, root: Path) -> str:
    parts = rel.split("/")
    if parts[0] == "checkpoints" and len(parts) >= 2:
        return f"checkpoint {parts[1]}: {status} → written again (training restarts from step 0 when the state " \
               "is past it)"
    if parts[0] == "state" or rel in ("loss.csv", "checkpoints.csv"):
        return f"{rel} {status} → training restarts from step 0 (deterministic: it ends where it would have)"
    if parts[0] in ("tokenizer", "data") or rel == "corpus.json":
        return f"{rel} {status} → the tokenizer and data are built again from the corpus"
    if rel == "pretrain_config.json":
        return "the rerun stops: delete pretrain_config.json (and its record) to resume with the same settings"
    return "not used by a rerun"


def _plain_redo(rel: str, status: str, root: Path) -> str:
    if rel.startswith("chat"):
        return "the fine-tuned model is made again by a rerun of the demo (or finetune)"
    if rel.startswith("summary"):
        return "rewritten by a rerun of the demo"
    return "not used by a rerun"


_REDO = {"trace": _trace_redo, "probe": _probe_redo, "steer": _steer_redo, "pretrain": _pretrain_redo,
         "demo": _plain_redo}


def _sub_runs(root: Path, kind: str) -> dict[str, str]:
    """The sub-folders of a run that are runs of their own kind: name → kind."""
    if kind == "steer":
        return {name: "trace" for name in ("source", "target") if (root / name).is_dir()}
    if kind == "pretrain":
        return {"trace": "trace"} if (root / "trace").is_dir() else {}
    if kind == "demo":
        subs = {"pretrain": "pretrain"} if (root / "pretrain").is_dir() else {}
        subs.update({p.name: "steer" for p in sorted(root.glob("steer-*")) if p.is_dir()})
        return subs
    return {}


@dataclass
class _Found:
    """What ``_walk`` gathers over a folder and its sub-runs."""

    checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)
    writer: dict[str, Any] | None = None


def _walk(root: Path, kind: str, prefix: str, found: _Found) -> None:
    """Check every file under ``root`` (sub-runs with their own kind's rules), say what is left to do there and
    who writes it; add all of it to ``found``."""
    held = writer(root)
    if held is not None and found.writer is None:
        found.writer = {**held, "folder": prefix.rstrip("/")}
    subs = _sub_runs(root, kind)
    redo = _REDO.get(kind, _plain_redo)
    findings = found.findings
    checked = 0
    covered: set[Path] = set()  # files inside a recorded folder
    files: list[Path] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in subs or rel.parts[0] in REPORT_FOLDERS or path.is_symlink() or is_lock_file(path.name):
            continue
        if _TMP.match(path.name):
            findings.append(Finding(prefix + rel.as_posix(), "leftover", "a temporary file of an interrupted write",
                                    "ignored by a rerun; safe to delete"))
            continue
        if is_record(path):
            target = path.with_name(path.name[: -len(RECORD_SUFFIX)])
            checked += 1
            result = check(target)
            if target.is_dir():
                covered.update(p for p in target.rglob("*"))
            if not result.ok:
                trel = target.relative_to(root).as_posix()
                findings.append(Finding(prefix + trel, result.status if result.status != "intact" else "damaged",
                                        result.reason, redo(trel, result.status, root)))
        elif path.is_file():
            files.append(path)
    for path in files:
        if path in covered or record_path(path).is_file() or path.name in IGNORED_NAMES:
            continue
        rel_text = path.relative_to(root).as_posix()
        findings.append(Finding(prefix + rel_text, "unrecorded", "it has no record of its size and sha256",
                                redo(rel_text, "unrecorded", root)))
    if kind == "trace":
        findings += _unfinished_parts(root, prefix)
    found.checked += checked
    found.todo += [f"in {prefix}: {line}" if prefix else line for line in left_to_do(root, kind)]
    for name, sub_kind in subs.items():
        _walk(root / name, sub_kind, f"{prefix}{name}/", found)


def _unfinished_parts(root: Path, prefix: str) -> list[Finding]:
    """Checkpoints the manifest records as finished whose part is gone (without its record too)."""
    layout = TraceLayout(root)
    try:
        manifest = layout.read_manifest() or {}
    except DamagedFileError:
        return []
    gone = [name for name in manifest.get("checkpoints", {}) if not layout.part(name).exists()
            and not record_path(layout.part(name)).exists()]
    return [Finding(prefix + layout.relative(layout.part(name)), "missing", "the manifest records it as finished",
                    f"checkpoint {name}: part missing → traced again") for name in gone]


def verify_run(path: str | Path) -> VerifyReport:
    """Check every file of the run folder ``path`` (any kind: trace, probe, steer, pretrain, demo with its
    sub-folders) against its record; say what is damaged, unrecorded or missing and what a rerun redoes,
    what the run has not done yet, and whether another process is writing it (``VerifyReport.status``).

    Raises ``RunFolderNotFoundError`` for a path that does not exist and ``RunFolderError`` for a folder
    that is not a run folder. Each file is read once (sha256); a run of many checkpoints takes as long as
    reading its activations.
    """
    root = Path(path)
    if not root.exists():
        raise RunFolderNotFoundError(f"{root} does not exist. Give a run folder (the --out of trace, probe, "
                                     "steer, pretrain or demo).")
    kind = RunLayout(root).kind
    if kind == "empty":
        raise RunFolderError(f"{root} is not a run folder: it holds none of the files trace, probe, steer, "
                             "pretrain or demo write (manifest.json, steer_config.json, pretrain_config.json, "
                             "demo_config.json, results.csv). Give the --out folder of one of them.")
    found = _Found()
    _walk(root, kind, "", found)
    return VerifyReport(root, kind, found.checked, tuple(found.findings), tuple(found.todo), found.writer)


ADOPTABLE_KINDS = ("trace", "probe", "steer")


def adopt(report: VerifyReport) -> tuple[list[str], list[str]]:
    """``verify --adopt``: record the *unrecorded* files of a trace, probe or steer folder that read as what
    they claim to be (every tensor of a safetensors file, a CSV, a parquet, a JSON file), so that a rerun
    reuses them instead of recomputing a run made before records were kept. Returns (adopted, skipped).

    What this cannot check: a file overwritten before adoption reads back as well as an intact one. Adopt
    only a folder you trust; damaged files (they fail a record they have) are never adopted.
    """
    if report.kind not in ADOPTABLE_KINDS:
        raise RunFolderError(f"{report.root} is a {report.kind} folder; --adopt records trace, probe and steer "
                             "folders only (a pre-training run resumes from its own records). Rerun it instead.")
    adopted, skipped = [], []
    for finding in report.findings:
        if finding.status != "unrecorded":
            continue
        path = report.root / finding.path
        problem = _unreadable(path)
        if problem is None:
            record_as_is(path)
            adopted.append(finding.path)
        else:
            skipped.append(f"{finding.path} ({problem})")
    return adopted, skipped


def _unreadable(path: Path) -> str | None:
    """Why ``path`` does not read as its suffix says, or None when it does."""
    import pandas as pd
    from safetensors import SafetensorError, safe_open

    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                    f.get_tensor(key)
        elif suffix == ".csv":
            pd.read_csv(path)
        elif suffix == ".parquet":
            pd.read_parquet(path)
        elif suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        else:
            return f"no reader for {suffix or 'a file without a suffix'}: left unrecorded"
    except (OSError, ValueError, SafetensorError, UnicodeDecodeError, pd.errors.ParserError) as err:
        return f"does not read: {type(err).__name__}"
    return None


__all__ = ["ADOPTABLE_KINDS", "Finding", "Status", "VerifyReport", "adopt", "verify_run"]
