"""Reading what trusttrace wrote (JSON and CSV, checked against their records) and keeping one run's settings.

A run folder holds the results of one set of settings: ``record_settings`` writes them and refuses a rerun
with others (``OutputError``, naming each difference). ``layout`` re-exports these names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.errors import DamagedFileError, OutputError, RunFolderError
from ..core.files import write_json_atomic
from .integrity import check, damaged, describe


def read_json(path: Path, fix: str = "Rerun the command that wrote it with the same --out, or use a new --out."
              ) -> dict[str, Any]:
    """A JSON object from ``path``; a clear error when it is something else.

    A file that does not match its record, or is not JSON (truncated, overwritten), raises ``DamagedFileError``
    naming it and ``fix``.
    """
    found = check(path)
    if found.status == "damaged":
        raise DamagedFileError(f"{describe(found)}. {fix}", str(path))
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise damaged(path, err, fix) from err
    if not isinstance(value, dict):
        raise RunFolderError(f"{path} does not hold a JSON object; it was not written by trusttrace.")
    return value


def read_csv(path: Path) -> pd.DataFrame | None:
    """A table written by trusttrace, or None when absent. Only an empty field is missing (NaN): text such as
    "NA" or "None" stays text. A text column empty in every row reads as float NaN; ``tables.text`` reads it as
    text."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.is_file() else None


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every key of ``new`` whose value differs from ``old``'s, as ``key: (old, new)``."""
    new = json.loads(json.dumps(new, default=str))  # as it reads back (tuples → lists)
    return {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}


def describe_diff(diff: Mapping[str, tuple[Any, Any]]) -> str:
    """``key: old → new; …`` for messages."""
    return "; ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())


def refuse_other_settings(folder: Path, diff: Mapping[str, tuple[Any, Any]], what: str) -> None:
    """Refuse to resume ``folder`` with other settings: a run folder holds the results of one set."""
    if diff:
        changes = describe_diff(diff)
        raise OutputError(f"{folder} holds {what} made with other settings ({changes}). Resume with the same "
                         "settings, or pass a new --out.")


def record_settings(path: Path, settings: Mapping[str, Any], what: str) -> None:
    """Write ``settings`` to ``path``, refusing when an earlier run left different ones there."""
    if path.exists():
        fix = (f"Its settings cannot be compared with this run's: if they are the same, delete {path.name} (and "
               f"{path.name}.sha256.json) and rerun; else pass a new --out.")
        refuse_other_settings(path.parent, settings_diff(read_json(path, fix), settings), what)
    write_json_atomic(path, json.loads(json.dumps(settings, default=str)))
