"""trusttrace's errors: one type for each kind of user mistake, and one for failures a rerun can mend.

Every message names the bad value, what is allowed, and the fix. The CLI prints the message without a
traceback (``trusttrace --debug <command>`` shows one) and exits with the type's ``exit_code``: 2 for a
``UsageError`` (fix the command line, a file or a folder, then run again), 1 for a ``RunFailure`` (nothing
the user did: a network, a damaged stored file, a failed checkpoint; a rerun retries). Anything else that
reaches the CLI is a bug in trusttrace and is reported as one.

The usage errors also derive from ``ValueError`` (and the "not found" ones from ``FileNotFoundError``), so
code that caught those before keeps working. ``docs/errors.md`` lists each mistake, its message and what it
leaves on disk; ``tests/user_errors/test_errors.py`` walks that list.
"""

from __future__ import annotations

import errno as _errno
import os
import re


class TrustTraceError(Exception):
    """Base of every error trusttrace raises on purpose."""

    exit_code = 1


class PathError(Exception):
    """An error about one file or folder, kept as ``path`` for callers that act on it."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class UsageError(TrustTraceError, ValueError):
    """Something the user gave is wrong (an option, a name, a file, a folder); fixing it fixes the run."""

    exit_code = 2


class OptionError(UsageError):
    """An option's value is malformed or out of range (numbers, sizes, selectors, choices, combinations)."""


class UnknownNameError(UsageError):
    """A name outside the allowed ones: a dimension, a built-in model, a revision, a layer."""


class UnknownChoiceError(UnknownNameError, OptionError):
    """An option's value outside its closed set of names (``core.names.Choices.check``: the one check)."""


class DataFileError(UsageError):
    """A dataset file cannot be used: unreadable, wrong columns or labels, one class, a clashing name."""


class DataFileNotFoundError(DataFileError, FileNotFoundError):
    """A dataset file (or data folder) named by the user does not exist."""


class StatementTooLongError(DataFileError):
    """Statements longer than the model's context (or ``--max-tokens``) without truncation asked for."""


class ModelError(UsageError):
    """A model that cannot be loaded as asked: no weights, pickle weights, remote code, an unknown layout."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model path that does not exist (and is not a hub id)."""


class VectorError(UsageError):
    """A steering-vector file that cannot be read, or does not fit the model it is applied to."""


class OutputError(UsageError):
    """An output folder or file that cannot be written, or holds a run of other settings."""


class FolderLockedError(PathError, OutputError):
    """The output folder (or one around or inside it) is being written by another trusttrace process."""


class LinkInRunFolderError(PathError, OutputError):
    """A symbolic link planted inside a run folder, where trusttrace would write through it."""


class OutputOverlapsInputError(OutputError):
    """An output that is, holds or lies inside what the same command reads (it would overwrite its input)."""


class RunFolderError(UsageError):
    """A run folder given as input (to probe, report, vectors, verify) is missing or holds something else."""


class RunFolderNotFoundError(RunFolderError, FileNotFoundError):
    """A run folder (or a file in it) given as input does not exist."""


class RunFailure(TrustTraceError, RuntimeError):
    """Something went wrong while running through no fault of the command line; a rerun retries it."""

    exit_code = 1


class DamagedFileError(PathError, RunFailure):
    """A stored file does not match its recorded size and sha256 (truncated or overwritten)."""


class FolderVanishedError(PathError, RunFailure):
    """The run folder was removed or replaced while the run was writing it."""


class EnvironmentFailure(RunFailure):
    """The machine refused a read or a write: a full disk, no permission, a read-only file system, a name too
    long for the file system, a closed output. Nothing the command line did wrong, and no bug: the message
    names the path and what to change; finished work is kept, and a rerun resumes."""

    def __init__(self, message: str, path: str = "", errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


USAGE_ERRORS: tuple[type[UsageError], ...] = (
    OptionError, UnknownNameError, DataFileError, DataFileNotFoundError, StatementTooLongError, ModelError,
    ModelNotFoundError, VectorError, OutputError, RunFolderError, RunFolderNotFoundError, FolderLockedError,
    LinkInRunFolderError, OutputOverlapsInputError,
)


# ---------------------------------------------------------------- the machine's refusals

_ENVIRONMENT = {  # errno name → (what happened, what to do)
    "ENOSPC": ("no space is left on the device that holds it",
               ("Free space there, or give a folder on another disk (--out; TMPDIR for temporary files; "
               "TRUSTTRACE_CACHE for downloads), then rerun: finished work is kept and the run resumes.")),
    "EDQUOT": ("the disk quota of this user is used up there",
               ("Free space within your quota, or give a folder on another disk, then rerun: finished work is "
               "kept and the run resumes.")),
    "EACCES": ("this user may not read or write it",
               "Change its permissions (chmod, or ask its owner), or give a path you can write to, then rerun."),
    "EPERM": ("the operating system does not permit this operation on it",
              "Change its permissions or owner, or give a path you can write to, then rerun."),
    "EROFS": ("it is on a read-only file system",
              "Give a folder on a writable file system (--out; TMPDIR for temporary files), then rerun."),
    "ENAMETOOLONG": ("a name in the path is longer than the file system allows (255 bytes per name on most)",
                     "Give a shorter --out (or shorter dataset file names), then rerun."),
    "EPIPE": ("the program reading trusttrace's output closed it",
              "Keep the reader open to the end (e.g. `trusttrace … | less`, not `| head`)."),
    "EIO": ("the device reported an input/output error",
            "Check the disk or network file system (dmesg), then rerun: finished work is kept."),
    "EMFILE": ("this process has too many files open", "Raise the limit (`ulimit -n 4096`), then rerun."),
    "ENFILE": ("the system has too many files open", "Close other programs or raise the system's limit, then rerun."),
    "EFBIG": ("the file is larger than the file system allows",
              "Give a folder on a file system that takes large files, then rerun."),
}
_ERRNOS = {getattr(_errno, name): name for name in _ENVIRONMENT if hasattr(_errno, name)}


def _errno_of(err: BaseException) -> tuple[int, str | None] | None:
    """The environment errno behind ``err`` (itself, its cause or context, or a library's message that quotes
    the system's words, e.g. safetensors' ``Os { code: 28 …}``), with the file name when known."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if isinstance(code, int) and code in _ERRNOS:
            return code, getattr(current, "filename", None)
        text = str(current)
        match = re.search(r"Os \{ code: (\d+)", text)
        if match and int(match.group(1)) in _ERRNOS:
            return int(match.group(1)), None
        for code in _ERRNOS:
            if os.strerror(code) in text:
                return code, None
        current = current.__cause__ or current.__context__
    return None


def environment_failure(err: BaseException, path: str | None = None) -> EnvironmentFailure | None:
    """``err`` as an ``EnvironmentFailure`` when the machine refused a read or write (see ``_ENVIRONMENT``),
    naming the path (``path``, else the one the error carries); None for any other error."""
    if isinstance(err, TrustTraceError):  # trusttrace's own verdicts keep their type
        return err if isinstance(err, EnvironmentFailure) else None
    found = _errno_of(err)
    if found is None:
        return None
    code, filename = found
    name = _ERRNOS[code]
    what, fix = _ENVIRONMENT[name]
    where = path or (str(filename) if filename else None)
    subject = f"{where}: " if where else ""
    return EnvironmentFailure(f"{subject}{what} ({name}: {os.strerror(code)}). {fix}",
                              where or "", code)
