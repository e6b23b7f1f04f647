"""Reading a file of labelled statements: a user's ``statement,label[,group]`` CSV, TSV, JSONL or JSON, or
one of the published CSVs, checked row by row.

Every refusal is a ``DataFileError`` naming the file, the 1-based data row and the fix; encodings are read
as written (UTF-8, with or without a BOM; UTF-16 with its BOM), never guessed.
"""

from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import DataFileError, DataFileNotFoundError, environment_failure
from ..core.files import text_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class StatementFile:
    """A validated ``statement,label[,group]`` file."""

    statements: tuple[str, ...]
    labels: np.ndarray  # int64 0/1
    sha256: str  # of the normalised text
    groups: tuple[str, ...] | None  # the group column, when the file has one


def read_statements(path: str | Path) -> StatementFile:
    """Read and validate a ``statement,label`` CSV, TSV or JSONL, with an optional ``group`` column.

    Errors (``DataFileError``) name the file, the (1-based data) row and the fix. UTF-8 (with or without a
    BOM) and UTF-16 with its BOM are read; other encodings are refused rather than guessed. Labels are 0 or
    1, written as integers or as 0.0/1.0. Duplicate rows are kept with a warning. A group column must name a
    group on every row and hold two groups or more.
    """
    path = Path(path)
    text = _decoded(path)
    frame = _jsonl_frame(text, path) if path.suffix.lower() in (".jsonl", ".json") else _csv_frame(text, path)
    missing = [c for c in ("statement", "label") if c not in frame.columns]
    if missing:
        raise DataFileError(
            f"{path} lacks column(s) {missing}; it has {[str(c) for c in frame.columns][:10]}. Rename the columns "
            "to statement,label (label 1/0), with a header row."
        )
    statements = [_statement(v, path, i) for i, v in enumerate(frame["statement"], start=1)]
    labels = np.array([_label(v, path, i) for i, v in enumerate(frame["label"], start=1)], dtype=np.int64)
    if len(statements) == 0:
        raise DataFileError(f"{path} has no rows (only a header). Add statement,label rows.")
    sha = text_sha256(text)
    if (str(path), sha) not in REPORTED:  # once per file and content, not on every reload
        REPORTED.add((str(path), sha))
        _warn_duplicates(statements, labels, path)
    groups = _groups(frame, path) if "group" in frame.columns else None
    return StatementFile(tuple(statements), labels, sha, groups)


def _decoded(path: Path) -> str:
    """The file's text: UTF-8 (a BOM is dropped), or UTF-16 when it starts with a UTF-16 BOM."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError as err:
        raise DataFileError(f"{path} is a folder, not a file. Give a CSV/JSONL file of statement,label rows.") from err
    except FileNotFoundError as err:
        raise DataFileNotFoundError(f"Dataset file {str(path)!r} does not exist. Check the path.") from err
    except OSError as err:
        raise environment_failure(err, str(path)) or DataFileError(f"{path} cannot be read ({err.strerror or err})."
                                                                   " Check its permissions.") from err
    encoding = "utf-16" if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path} is not {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text (byte "
                            f"{err.start}: {err.reason}). Re-save it as UTF-8.") from err
    if "\x00" in text:
        raise DataFileError(f"{path} holds NUL characters (at character {text.index(chr(0))}): it is binary, or "
                            "text in an encoding other than UTF-8/UTF-16. Re-save it as UTF-8 text.")
    if not text.strip():
        raise DataFileError(f"{path} is empty. Give it a statement,label header and rows.")
    # line endings as text mode reads them (the sha256 of a file has always been of this text)
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _csv_frame(text: str, path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, keep_default_na=False, dtype=str)
    except (ValueError, pd.errors.ParserError) as err:  # EmptyDataError and the parser's errors are ValueErrors
        raise DataFileError(f"{path} is not a readable {'TSV' if sep != ',' else 'CSV'} "
                            f"({str(err).strip() or type(err).__name__}). Quote statements that hold "
                            f"{'tabs' if sep != ',' else 'commas'} or quotes (\"like, this\").") from err


def _jsonl_frame(text: str, path: Path) -> pd.DataFrame:
    """JSON Lines: one object per line (blank lines skipped); a ``.json`` file may instead hold one list of
    objects."""
    stripped = text.strip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        rows = _json_value(stripped, path, "the file")
        if not isinstance(rows, list):
            raise DataFileError(f"{path} does not hold a JSON list of objects. Write one object per line (JSONL).")
    else:
        rows = [_json_value(line, path, f"line {i}") for i, line in enumerate(text.splitlines(), start=1)
                if line.strip()]
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataFileError(f"{path}, row {i}: {str(row)[:60]!r} is not an object. Write one object per line, "
                                'e.g. {"statement": "The sky is blue.", "label": 1}.')
    return pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=["statement", "label"])


def _json_value(text: str, path: Path, where: str) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise DataFileError(f"{path}, {where} is not JSON ({err}). Write one object per line, e.g. "
                            '{"statement": "The sky is blue.", "label": 1}.') from err


def _groups(frame: pd.DataFrame, path: Path) -> tuple[str, ...]:
    groups = tuple("" if _missing(v) else str(v).strip() for v in frame["group"])
    empty = [i for i, g in enumerate(groups, start=1) if not g]
    if empty:
        raise DataFileError(f"{path}, data row {empty[0]}: the group is empty. Give every row a group (e.g. the "
                            "question it answers), or drop the group column to group exact duplicates only.")
    if len(set(groups)) < 2:
        raise DataFileError(f"{path}: the group column holds one group ({groups[0]!r}) for all {len(groups)} rows, "
                            "so no split can keep groups apart. Give rows that belong together the same id and "
                            "others different ids, or drop the group column.")
    return groups


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _statement(value: object, path: Path, row: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataFileError(f"{path}, data row {row}: the statement is empty or missing ({str(value)[:60]!r}). "
                            "Fill it in (as text) or delete the row.")
    return value


def _label(value: object, path: Path, row: int) -> int:
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = float(str(value).strip())
        except ValueError:
            number = float("nan")
        if number in (0.0, 1.0):
            return int(number)
    raise DataFileError(f"{path}, data row {row}: label {str(value)[:40]!r} is not 0 or 1. Labels must be 0 or 1 "
                        "(1.0 and 0.0 are read as 1 and 0; see the polarity table in the "
                        "trusttrace.data.datasets docs).")


REPORTED: set[tuple[str, str]] = set()  # (file, sha256) already reported in this process


def _warn_duplicates(statements: list[str], labels: np.ndarray, path: Path) -> None:
    pairs = pd.DataFrame({"s": statements, "y": labels})
    dup = pairs.duplicated()
    if dup.any():
        first = int(np.flatnonzero(dup.to_numpy())[0]) + 1
        log.warning("%s: %d duplicate statement,label rows (first at data row %d); kept as they are.",
                    path, int(dup.sum()), first)
    conflicting = pairs.drop_duplicates().duplicated("s")
    if conflicting.any():
        log.warning("%s: %d statements appear with both labels; kept as they are.", path, int(conflicting.sum()))
