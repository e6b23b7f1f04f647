"""Integrity you can check: every file a run writes is recorded (size and sha256), and checked before use.

``_io.atomic_path`` writes the record ``<name>.sha256.json`` beside each file (or folder) it publishes. Here
are the checks on them:

- ``check(path)`` says whether ``path`` is *intact* (matches its record), *damaged* (size or sha256 differ,
  a folder's files differ, or the record itself is unreadable), *unrecorded* (present without a record) or
  *missing*.
- ``usable(path, redo)`` is what a resuming stage asks before it skips work: only an intact file is used; a
  damaged or unrecorded one is reported by name (a logged warning saying what the rerun does instead).
- ``weights_fingerprint(ref)`` is the sha256 over a local checkpoint's weight files, and ``model_files(ref)``
  the sha256 of each of its config and tokenizer files (``MODEL_FILES``): a trace manifest records both, so
  that a checkpoint whose weights, config or tokenizer changed under the same name is traced again.
  ``weights_stat`` and ``model_files_stat`` are their cheap stand-ins (names, sizes, mtimes): a file is
  read in full only when its stat moved.
- ``verify.verify_run(path)`` checks a whole run folder of any kind with these (``trusttrace verify``).

Folders written before records existed hold only *unrecorded* files. Nothing in them can be told intact,
so a rerun recomputes them: a trace extracts and fits every checkpoint again, a pre-training run trains from
step 0. That is the full cost of the run again (hours for a long series); it is the price of never using a
file whose contents cannot be checked.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..core.errors import DamagedFileError, RunFailure, environment_failure
from ..core.files import read_record, record_path, sha256_file

log = logging.getLogger(__name__)

Status = Literal["intact", "damaged", "unrecorded", "missing"]


@dataclass(frozen=True)
class Check:
    """What ``check`` found for one path; ``reason`` says why it is not intact."""

    path: Path
    status: Status
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "intact"


def _matches(path: Path, entry: dict[str, Any]) -> str:
    """Why ``path`` does not match a record entry ('' when it does). Sizes are compared before hashing."""
    if "files" in entry:
        if not path.is_dir():
            return "a file where its record has a folder"
        expected: dict[str, Any] = entry["files"]
        found = {p.relative_to(path).as_posix(): p for p in path.rglob("*") if p.is_file()}
        if set(found) != set(expected):
            extra, lost = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
            return f"its files differ from its record (extra {extra}, missing {lost})"
        for name, sub in sorted(expected.items()):
            why = _matches(found[name], sub)
            if why:
                return f"{name}: {why}"
        return ""
    if path.is_dir():
        return "a folder where its record has a file"
    size = path.stat().st_size
    if size != entry.get("size"):
        return f"{size} bytes, recorded {entry.get('size')}"
    if sha256_file(path) != entry.get("sha256"):
        return "its sha256 differs from the recorded one (bytes overwritten)"
    return ""


def check(path: str | Path) -> Check:
    """Compare ``path`` with its record (see the module docstring for the four outcomes).

    A record written for a rewrite that was interrupted before its rename also vouches for the version it
    replaces, so a killed write never reads as damage.
    """
    path = Path(path)
    try:
        record = read_record(path)
    except ValueError as err:
        return Check(path, "damaged" if path.exists() else "missing", str(err))
    if record is None:
        return Check(path, "unrecorded", "it has no record of its size and sha256") if path.exists() \
            else Check(path, "missing")
    if not path.exists():
        return Check(path, "missing", f"recorded in {record_path(path).name} but not on disk")
    why = _matches(path, record)
    if why and isinstance(record.get("replaces"), dict) and not _matches(path, record["replaces"]):
        why = ""
    return Check(path, "damaged", why) if why else Check(path, "intact")


def describe(found: Check) -> str:
    """``<path> is damaged (why)`` and the like, for messages."""
    what = {"damaged": "is damaged", "unrecorded": "is unrecorded", "missing": "is missing",
            "intact": "is intact"}[found.status]
    return f"{found.path} {what}" + (f" ({found.reason})" if found.reason else "")


def usable(path: str | Path, redo: str) -> bool:
    """Whether a stage may use ``path`` as it is: only when intact. A damaged or unrecorded file is reported
    (a warning naming it, its fault and ``redo``: what the rerun does instead); a missing one is not."""
    found = check(path)
    if found.status in ("damaged", "unrecorded"):
        log.warning("%s; %s", describe(found), redo)
    return found.ok


def require_readable(path: str | Path, fix: str) -> None:
    """Raise ``DamagedFileError`` when ``path`` does not match its record (an unrecorded file passes: the
    reader's own parsing is then the only check)."""
    found = check(path)
    if found.status == "damaged":
        raise DamagedFileError(f"{describe(found)}: it is not used. {fix[:1].upper()}{fix[1:]}", str(path))


def damaged(path: str | Path, err: Exception, fix: str) -> RunFailure:
    """The error for a file whose parser failed (a truncated or garbage file that has no record); when the
    machine refused the read (no permission, an I/O error), that refusal instead (``EnvironmentFailure``)."""
    refused = environment_failure(err, str(path))
    if refused is not None:
        return refused
    return DamagedFileError(f"{path} cannot be read ({type(err).__name__}: {err}): it is damaged or not "
                            f"what trusttrace wrote. {fix}", str(path))


def remove(path: Path) -> None:
    """Delete ``path`` (file or folder) and its record, so that a recomputation starts clean."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    record_path(path).unlink(missing_ok=True)


# ---------------------------------------------------------------- weight fingerprints

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_FILE_SHAS: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime_ns, inode) → sha256, per process


def _cached_sha(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _FILE_SHAS:
        _FILE_SHAS[key] = sha256_file(path)
    return _FILE_SHAS[key]


# The files besides the weights that a checkpoint's activations depend on: its config and its tokenizer
# (generation_config.json and chat templates do not change what a statement's activations are).
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "vocab.txt")


def _weight_files(ref: str | Path) -> list[Path]:
    path = Path(ref).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    return []


def _model_files(ref: str | Path) -> list[Path] | None:
    """The config and tokenizer files of a checkpoint folder (none for a single-file checkpoint, a GGUF: its
    tokenizer is inside its weights); None for what is not a local file or folder."""
    path = Path(ref).expanduser()
    if path.is_file():
        return []
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.name in MODEL_FILES)
    return None


def _stat(files: list[Path]) -> str:
    stats = "".join(f"{f.name}\0{f.stat().st_size}\0{f.stat().st_mtime_ns}\n" for f in files)
    return hashlib.sha256(stats.encode()).hexdigest()


def weights_stat(ref: str | Path) -> str | None:
    """A cheap fingerprint of a local checkpoint's weight files: their names, sizes and modification times.

    A resume compares it first, so that an unchanged series of large checkpoints is not read again in full
    (a 360-checkpoint series of 14 GB models is 5 TB); only when it differs is ``weights_fingerprint``
    computed, so that a copy or a ``touch`` that leaves the bytes alone does not trace a checkpoint again.
    """
    files = _weight_files(ref)
    return _stat(files) if files else None


def weights_fingerprint(ref: str | Path) -> str | None:
    """sha256 over a local checkpoint's weight files (names and contents), None for what is not local.

    Each file's hash is cached per (path, size, mtime, inode) in this process, so the resume check and the
    trace of a checkpoint hash its weights once. Weights regenerated under the same folder name change it.
    """
    files = _weight_files(ref)
    return files_digest({file.name: _cached_sha(file) for file in files}) if files else None


def model_files_stat(ref: str | Path) -> str | None:
    """``weights_stat`` of a checkpoint's config and tokenizer files (``MODEL_FILES``), None for what is not
    local. A folder without any has a stat too, so that one appearing in it moves the stat."""
    files = _model_files(ref)
    return None if files is None else _stat(files)


def model_files(ref: str | Path) -> dict[str, str] | None:
    """The sha256 of each config and tokenizer file of a local checkpoint (name → sha256), None for what is
    not local. Cached like the weights' hashes: a file is read again only when its size, mtime or inode moved."""
    files = _model_files(ref)
    return None if files is None else {file.name: _cached_sha(file) for file in files}


def files_digest(shas: dict[str, str]) -> str:
    """One sha256 over files' names and sha256 (``model_files`` or the weights' files), in name order."""
    combined = hashlib.sha256()
    for name, sha in sorted(shas.items()):
        combined.update(f"{name}\0{sha}\n".encode())
    return combined.hexdigest()


def changed_files(before: dict[str, str], now: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """The files whose sha256 differs between two ``model_files`` maps: name → (before, now), None where a
    file is absent (it appeared or disappeared)."""
    return {name: (before.get(name), now.get(name)) for name in sorted({*before, *now})
            if before.get(name) != now.get(name)}


__all__ = ["MODEL_FILES", "WEIGHT_SUFFIXES", "Check", "changed_files", "check", "damaged", "describe",
           "files_digest", "model_files", "model_files_stat", "remove", "require_readable", "usable",
           "weights_fingerprint", "weights_stat"]
