"""One writer per run folder: an OS lock (``flock``) on ``<folder>/.trusttrace.lock`` while a command writes it.

Every job that writes a folder (trace, probe, steer, evaluate, vectors build, report, phases, pretrain,
finetune, demo, verify --adopt) runs inside ``hold(folder, command)``:

- A second process that asks for a folder already held is refused with ``FolderLockedError`` (exit 2),
  naming the holder's pid and command, or waits for it when asked (``--wait``, ``TRUSTTRACE_WAIT=1``). So
  is a process that asks for a folder inside a held one, or for a folder holding a held one (``--overwrite``
  of a demo whose steering sweep another process writes). A report folder is its own run: ``report RUN``
  may draw a run that is still being written (its tables are replaced whole, never half-written).
- The same process may hold a folder again (a demo's stages, a sweep's nested traces): holds nest.
- While a folder is held, every atomic write under it (``_io.atomic_path`` calls ``guard_write``) first
  checks that the folder is still the one locked: a run whose folder was removed or replaced under it
  (``rm -r``, a move) stops with ``FolderVanishedError`` (exit 1) instead of writing into a new empty folder
  and exiting 0; and that no folder or file on the way is a symbolic link: nothing is written through a
  link planted in a run folder (``LinkInRunFolderError``, naming it). ``hold`` refuses such links at once.
- The lock file exists only while held: releasing removes it (and the folder itself when this hold made it
  and nothing else was written), so a refused command leaves the disk as it found it.

The lock is advisory and per host: processes on other machines sharing a network file system are not
excluded where the file system does not carry ``flock`` (NFS before v4 does not).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import FolderLockedError, FolderVanishedError, LinkInRunFolderError, OutputError

log = logging.getLogger(__name__)

LOCK_NAME = ".trusttrace.lock"
# Links trusttrace makes itself inside a run folder: a pre-training run's ``checkpoints/last``.
_OWN_LINKS = ("checkpoints/last",)
_WAIT = {"on": os.environ.get("TRUSTTRACE_WAIT", "") not in ("", "0")}


@contextmanager
def waiting(on: bool) -> Iterator[None]:
    """While the block runs, a command queues behind another writer of its folder (``--wait``) instead of
    being refused; ``TRUSTTRACE_WAIT=1`` in the environment says the same for every command."""
    before = _WAIT["on"]
    _WAIT["on"] = bool(on) or os.environ.get("TRUSTTRACE_WAIT", "") not in ("", "0")
    try:
        yield
    finally:
        _WAIT["on"] = before


@dataclass
class Hold:
    """A folder this process holds: its lock file's descriptor and identity, and what the hold made."""

    root: Path  # absolute, as given (not resolved)
    real: str  # the resolved path
    lock_file: Path  # in the folder, or beside it (a folder published whole: a fine-tuned model)
    fd: int
    identity: tuple[int, int]  # (st_dev, st_ino) of the lock file
    command: str
    made: list[Path] = field(default_factory=list)  # folders this hold created, deepest first

    def alive(self) -> bool:
        """Whether the folder on disk is still the one locked (its lock file the same file)."""
        try:
            st = os.lstat(self.lock_file)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    def check_alive(self) -> None:
        if not self.alive():
            raise FolderVanishedError(
                f"{self.root} was removed or replaced while this `trusttrace {self.command}` was writing it (by "
                "`rm`, a move, or another program): what this run wrote there is lost. Rerun the command to write "
                "the folder again (a finished run elsewhere is not affected).", str(self.root))

    @property
    def created(self) -> bool:
        """Whether this hold made the folder (it did not exist before the command)."""
        return bool(self.made) and self.made[0] == self.root


_HELD: dict[str, Hold] = {}  # resolved folder → its hold, in this process


def is_lock_file(name: str) -> bool:
    """Whether a file name is a lock of ``hold``'s (in a folder, or beside one): never part of a run."""
    return name == LOCK_NAME or (name.startswith(".") and name.endswith(LOCK_NAME))


def lock_path(root: Path, beside: bool = False) -> Path:
    """Where ``root``'s lock lives: ``root/.trusttrace.lock``, or ``.<name>.trusttrace.lock`` beside it."""
    return root.parent / f".{root.name}{LOCK_NAME}" if beside else root / LOCK_NAME


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _holder(fd: int) -> dict[str, Any]:
    """What the holder wrote into its lock file (pid, command, host, started), {} when unreadable."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        value = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _who(info: dict[str, Any]) -> str:
    if not info:
        return "another trusttrace process"
    host = f" on {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else ""
    return (f"trusttrace process {info.get('pid', '?')}{host} (`trusttrace {info.get('command', '?')}`, since "
            f"{info.get('started', '?')})")


def held_by_other(folder: Path) -> dict[str, Any] | None:
    """The holder of ``folder``'s lock when another process holds it (``{}`` when it wrote nothing yet), else
    None: no lock file, a lock this process holds, or one left by a process that is gone."""
    if _real(folder) in _HELD:
        return None
    for lock in (lock_path(folder), lock_path(folder, beside=True)):
        info = _probe(lock)
        if info is not None:
            return info
    return None


def _probe(lock: Path) -> dict[str, Any] | None:
    """The holder's record when another process holds ``lock``, else None."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise LinkInRunFolderError(f"{lock} is a symbolic link; trusttrace does not follow links planted in a "
                                       "run folder. Delete it and rerun.", str(lock)) from None
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _innermost(path: Path) -> Hold | None:
    """The deepest folder this process holds that contains ``path`` (by its path as given, or resolved)."""
    given = os.path.abspath(path)
    real = os.path.join(_real(Path(given).parent), Path(given).name)
    best: Hold | None = None
    for hold in _HELD.values():
        for candidate, base in ((given, str(hold.root)), (real, hold.real)):
            if (candidate == base or candidate.startswith(base.rstrip(os.sep) + os.sep)) and (
                    best is None or len(str(hold.root)) > len(str(best.root))):
                best = hold
    return best


def _link_error(link: Path, root: Path) -> LinkInRunFolderError:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return LinkInRunFolderError(
        f"{link} is a symbolic link (to {target}) inside the run folder {root}: trusttrace never writes through a "
        "link planted in a run folder, which could overwrite the file it points to. Remove the link (or put a "
        "real file or folder there) and rerun; to keep a run on another disk, give that disk's folder as --out "
        "(the --out itself may be a link).", str(link))


def guard_write(path: Path) -> None:
    """Before a write to ``path``: when it lies in a folder this process holds, that folder must still be the
    one locked (else ``FolderVanishedError``), and no folder on the way nor ``path`` itself may be a symbolic
    link (else ``LinkInRunFolderError``). Writes outside held folders pass unchecked."""
    hold = _innermost(path)
    if hold is None:
        return
    hold.check_alive()
    given = Path(os.path.abspath(path))
    try:
        rel = given.relative_to(hold.root)
    except ValueError:  # matched through its resolved path: check from the resolved root
        rel = Path(os.path.join(_real(given.parent), given.name)).relative_to(hold.real)
    current = hold.root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise _link_error(current, hold.root)


def _scan(root: Path) -> tuple[list[Path], list[Path]]:
    """One walk of ``root``, following no link: the symbolic links trusttrace did not make (``_OWN_LINKS``),
    and the folders below ``root`` that hold a lock file."""
    links, locks = [], []
    for folder, dirs, files in os.walk(root, followlinks=False):
        if LOCK_NAME in files and Path(folder) != root:
            locks.append(Path(folder))
        locks += [Path(folder) / f[1:-len(LOCK_NAME)] for f in files if is_lock_file(f) and f != LOCK_NAME]
        for name in (*dirs, *files):
            path = Path(folder) / name
            if path.is_symlink():
                rel = path.relative_to(root).as_posix()
                if not any(rel == own or rel.endswith("/" + own) for own in _OWN_LINKS):
                    links.append(path)
    return links, locks


def _refuse(folder: Path, held: Path, info: dict[str, Any], command: str) -> FolderLockedError:
    where = (f"{folder} is being written" if held == folder else
             f"{folder} lies inside {held}, which is being written" if held in folder.parents else
             f"{folder} holds {held}, which is being written")
    return FolderLockedError(
        f"{where} by {_who(info)}. One command writes a run folder at a time: wait for it to finish (or pass "
        f"--wait to queue this `trusttrace {command}` behind it), or give another --out.", str(held))


def refuse_if_held(folder: Path, command: str) -> None:
    """Refuse (``FolderLockedError``) when another process holds ``folder`` or a folder inside it: what
    ``--overwrite`` asks before it removes anything."""
    folder = Path(os.path.abspath(folder))
    info = held_by_other(folder)
    if info is not None:
        raise _refuse(folder, folder, info, command)
    if folder.is_dir():
        for below in _scan(folder)[1]:
            info = held_by_other(below)
            if info is not None:
                raise _refuse(folder, below, info, command)


def _check_parents(root: Path, command: str) -> None:
    """Refuse when another process holds a folder containing ``root``."""
    for parent in root.parents:
        info = held_by_other(parent)
        if info is not None:
            raise _refuse(root, parent, info, command)


def _check_inside(root: Path, command: str) -> None:
    """Refuse a link planted in ``root``, and a folder inside it that another process holds."""
    links, locks = _scan(root)
    if links:
        raise _link_error(links[0], root)
    for below in locks:
        info = held_by_other(below)
        if info is not None:
            raise _refuse(root, below, info, command)


def _make(root: Path) -> list[Path]:
    """Create ``root`` and missing parents; return the folders made, deepest first."""
    missing = []
    for candidate in (root, *root.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing.append(candidate)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{root} (or a folder above it) is a file, so the folder cannot be made. Give a folder "
                          "path, e.g. runs/my-run.") from None
    return missing


def _acquire(root: Path, lock: Path, command: str, wait: bool) -> tuple[int, tuple[int, int]]:
    """Open and lock ``root``'s lock file ``lock``; loop until the locked file is the one at the path (a
    releasing holder removes it)."""
    announced = False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _link_error(lock, root) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _holder(fd)
            if not wait:
                os.close(fd)
                raise _refuse(root, root, info, command) from None
            if not announced:
                log.warning("%s is being written by %s; waiting for it to finish (--wait).", root, _who(info))
                announced = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        st = os.fstat(fd)
        try:
            now = os.lstat(lock)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            return fd, (st.st_dev, st.st_ino)
        os.close(fd)  # the holder removed it as we waited: lock the new one
        lock.parent.mkdir(parents=True, exist_ok=True)


def _stamp(fd: int, command: str) -> None:
    info = {"pid": os.getpid(), "command": command, "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    data = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


@contextmanager
def hold(folder: str | Path, command: str, wait: bool | None = None, nested_ok: bool = False,
         beside: bool = False) -> Iterator[Hold]:
    """Hold ``folder`` for writing while the block runs (see the module docstring); the folder is created.

    ``wait``: queue behind another writer instead of being refused (default: ``--wait`` / ``TRUSTTRACE_WAIT``).
    ``nested_ok``: the folder is a run of its own inside another (a report in ``RUN/report``), so another
    process writing the folder around it does not refuse it. ``beside``: the folder is published whole by a
    rename (a fine-tuned model), so it is not created, and its lock lives beside it.

    Raises ``FolderLockedError`` (another process holds it), ``LinkInRunFolderError`` (a link planted in it),
    and, when the block ends normally but the folder was removed under it, ``FolderVanishedError``.
    """
    root = Path(os.path.abspath(Path(folder).expanduser()))
    existing = _HELD.get(_real(root))
    if existing is not None:  # holds nest within a process
        yield existing
        return
    wait = _WAIT["on"] if wait is None else wait
    if root.is_symlink() and not root.is_dir():
        raise _link_error(root, root.parent)
    if not nested_ok:
        _check_parents(root, command)
    lock = lock_path(root, beside)
    made = _make(lock.parent)
    try:
        fd, identity = _acquire(root, lock, command, wait)
    except BaseException:
        _remove_made(made)
        raise
    hold_ = Hold(root, _real(root), lock, fd, identity, command, made)
    _HELD[hold_.real] = hold_
    try:
        _stamp(fd, command)
        if root.is_dir():
            _check_inside(root, command)
        yield hold_
        hold_.check_alive()
    finally:
        del _HELD[hold_.real]
        _release(hold_)


def _release(hold_: Hold) -> None:
    if hold_.alive():
        try:
            os.unlink(hold_.lock_file)
        except FileNotFoundError:
            pass
    os.close(hold_.fd)
    _remove_made(hold_.made)


def _remove_made(made: list[Path]) -> None:
    """Remove the folders a hold made, deepest first, where nothing was written into them."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote there), or gone
            return


def holds(folder: str | Path) -> bool:
    """Whether this process holds ``folder``."""
    return _real(Path(os.path.abspath(Path(folder).expanduser()))) in _HELD


def made_here(folder: str | Path) -> bool:
    """Whether this process's hold on ``folder`` created it (a usage error found later removes it again)."""
    hold_ = _HELD.get(_real(Path(os.path.abspath(Path(folder).expanduser()))))
    return hold_ is not None and hold_.created


__all__ = ["LOCK_NAME", "Hold", "guard_write", "held_by_other", "hold", "holds", "is_lock_file", "lock_path",
           "made_here", "refuse_if_held", "waiting"]
