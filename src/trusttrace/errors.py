"""trusttrace's errors: one type for each kind of user mistake, and one for failures a rerun can mend.

Every message names the bad value, what is allowed, and the fix. The CLI prints the message without a
traceback (``trusttrace --debug <command>`` shows one) and exits with the type's ``exit_code``: 2 for a
``UsageError`` (fix the command line, a file or a folder, then run again), 1 for a ``RunFailure`` (nothing
the user did: a network, a damaged stored file, a failed checkpoint; a rerun retries). Anything else that
reaches the CLI is a bug in trusttrace and is reported as one.

The usage errors also derive from ``ValueError`` (and the "not found" ones from ``FileNotFoundError``), so
code that caught those before keeps working. ``docs/errors.md`` lists each mistake, its message and what it
leaves on disk; ``tests/test_errors.py`` walks that list.
"""

from __future__ import annotations


class TrustTraceError(Exception):
    """Base of every error trusttrace raises on purpose."""

    exit_code = 1


class UsageError(TrustTraceError, ValueError):
    """Something the user gave is wrong (an option, a name, a file, a folder); fixing it fixes the run."""

    exit_code = 2


class OptionError(UsageError):
    """An option's value is malformed or out of range (numbers, sizes, selectors, choices, combinations)."""


class UnknownNameError(UsageError):
    """A name that is not one of the allowed ones: a dimension, a built-in model, a revision, a layer."""


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


class RunFolderError(UsageError):
    """A run folder given as input (to probe, report, vectors, verify) is missing or holds something else."""


class RunFolderNotFoundError(RunFolderError, FileNotFoundError):
    """A run folder (or a file in it) given as input does not exist."""


class RunFailure(TrustTraceError, RuntimeError):
    """Something went wrong while running through no fault of the command line; a rerun retries it."""

    exit_code = 1


class DamagedFileError(RunFailure):
    """A stored file does not match its recorded size and sha256 (truncated or overwritten)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


USAGE_ERRORS: tuple[type[UsageError], ...] = (
    OptionError, UnknownNameError, DataFileError, DataFileNotFoundError, StatementTooLongError, ModelError,
    ModelNotFoundError, VectorError, OutputError, RunFolderError, RunFolderNotFoundError,
)
