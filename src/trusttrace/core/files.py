"""Small file helpers shared by every stage: atomic writes, each with a record of what it wrote, and hashes.

Every atomic write (``atomic_path`` and the helpers on it) leaves a *record* beside what it wrote: a small
JSON file ``<name>.sha256.json`` holding the file's size and sha256 (for a folder, each file's), so that a
later reader can tell a complete file from a truncated or overwritten one (``integrity`` checks them). The
suffix is chosen so that no glob of a run folder (``parts/*.csv``, ``*/*.safetensors``) picks records up.

The record is written *before* the rename that publishes the file, naming the version it replaces, and
rewritten without that after: whenever a process is killed, the file on disk matches its record (either the
new version or the one it replaces), so an interruption never looks like damage.

Every file published here gets the mode this user's umask gives a new file (safetensors alone would write
0600, so a colleague handed a run folder could not read its activations), and no write goes through a
symbolic link planted in a run folder nor into a run folder that was removed under its run
(``runlock.guard_write``). A full disk, a missing permission and the like surface as
``errors.EnvironmentFailure`` naming the file, with nothing half-written left at the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import environment_failure
from .runlock import guard_write

RECORD_SUFFIX = ".sha256.json"
RECORD_FORMAT = "trusttrace-record/1"
_CHUNK = 1 << 20


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` onto ``target`` atomically: the one place a write is published (tests kill here)."""
    os.replace(source, target)


def _umask() -> int:
    """This process's umask (read without changing it where /proc tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def share(path: Path) -> None:
    """Give ``path`` (and, for a folder, everything under it) the mode a new file or folder gets from this
    user's umask, whatever the writing library chose."""
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        if item.is_symlink():
            continue
        want = (0o777 if item.is_dir() else 0o666) & ~_UMASK
        if item.stat().st_mode & 0o777 != want:
            os.chmod(item, want)


def temporary_sibling(path: Path) -> Path:
    """Where ``path`` is written before its rename: a hidden sibling named by this process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def record_path(path: str | Path) -> Path:
    """The record beside ``path``: ``<name>.sha256.json``."""
    path = Path(path)
    return path.with_name(path.name + RECORD_SUFFIX)


def is_record(path: Path) -> bool:
    return path.name.endswith(RECORD_SUFFIX)


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest(path: Path) -> dict[str, Any]:
    """What a record holds about ``path``: ``{size, sha256}`` for a file, ``{files: {name: {size, sha256}}}``
    for a folder (every file under it, by ``/``-separated relative name)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"files": {p.relative_to(path).as_posix(): digest(p) for p in files}}
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record of ``path`` (what ``digest`` returned when it was written), None when it has none.

    Raises ``ValueError`` when the record itself is not one (unreadable JSON, another format).
    """
    rec = record_path(path)
    if not rec.is_file():
        return None
    try:
        value = json.loads(rec.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"its record {rec.name} is not readable JSON ({err})") from None
    if not isinstance(value, dict) or value.get("format") != RECORD_FORMAT:
        raise ValueError(f"its record {rec.name} is not a {RECORD_FORMAT} record")
    return value


def _write_record(path: Path, entry: dict[str, Any]) -> None:
    rec = record_path(path)
    tmp = temporary_sibling(rec)
    try:
        tmp.write_text(json.dumps({"format": RECORD_FORMAT, **entry}, indent=1, sort_keys=True) + "\n",
                       encoding="utf-8")
        _move(tmp, rec)
    finally:
        if tmp.exists():
            tmp.unlink()


def record_as_is(path: str | Path) -> None:
    """Record ``path`` as it is now (``verify --adopt``): for files written before records were kept."""
    path = Path(path)
    _write_record(path, digest(path))


def _current(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The entry a record vouches for (without its format and any version it replaced)."""
    if record is None:
        return None
    return {k: v for k, v in record.items() if k not in ("format", "replaces", "meta")}


@contextmanager
def atomic_path(path: str | Path, record: bool = True, meta: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file: either the old one (or none) or the complete new one. The block
    may also make a folder at the temporary path (a model checkpoint); ``path`` must then not exist yet.
    With ``record`` (the default) the write is recorded beside it (see the module docstring); ``meta`` is
    kept in the record too (e.g. the settings a part was made with: ``record_meta`` reads it back).
    """
    final = Path(path)
    guard_write(final)  # a folder removed under its run, or a planted link: refused before anything is made
    tmp = temporary_sibling(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if tmp.is_symlink() or tmp.is_file():
            tmp.unlink()
    except OSError as err:
        raise environment_failure(err, str(final.parent)) or err
    try:
        yield tmp
        share(tmp)
        if record:
            entry = digest(tmp)
            try:
                before = _current(read_record(final))
            except ValueError:  # an unreadable old record vouches for nothing
                before = None
            extra = {"meta": meta} if meta else {}
            _write_record(final, {**entry, **extra, **({"replaces": before} if before else {})})
            _move(tmp, final)
            _write_record(final, {**entry, **extra})
        else:
            _move(tmp, final)
    except Exception as err:  # the system's refusal, or a library's wrapper around it (safetensors, pyarrow)
        found = environment_failure(err, str(final))
        if found is None:
            raise
        raise found from err
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def record_meta(path: str | Path) -> dict[str, Any]:
    """What the write of ``path`` kept in its record as ``meta`` ({} when none, or no readable record)."""
    try:
        record = read_record(path)
    except ValueError:
        return {}
    meta = (record or {}).get("meta")
    return meta if isinstance(meta, dict) else {}


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], None], meta: dict[str, Any] | None = None) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically (``meta``: kept in its record)."""
    with atomic_path(path, meta=meta) as tmp:
        writer(tmp)


def text_sha256(text: str) -> str:
    """sha256 of text after normalising line endings to ``\\n`` and dropping a UTF-8 BOM.

    The authors' published CSVs mix CRLF and LF endings; hashing the normalised text makes a
    downloaded copy and a checked-out copy of the same data hash alike.
    """
    norm = text.removeprefix("\ufeff").replace("\r\n", "\n")
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()
