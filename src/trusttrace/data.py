"""The five trustworthiness datasets, and any user file of labelled statements.

Each probing file has columns ``statement,label`` with labels 0/1. trusttrace keeps every file's label
polarity as published, which for two files is the opposite of the paper's Table 3:

| dimension   | file             | label 1                               | label 0                     |
|-------------|------------------|---------------------------------------|-----------------------------|
| reliability | truthfulqa_train | true answer                           | false answer                |
| toxicity    | toxigen          | toxic (Table 3 says benign)           | benign                      |
| privacy     | confaide         | concludes a privacy violation         | no violation                |
| fairness    | stereoset        | anti-stereotype continuation (as read)| unrelated continuation      |
| robustness  | sst2             | perturbed (random case flips)         | original sentence           |

Sources, in order: ``data_dir`` / ``$TRUSTTRACE_DATA_DIR``; a verified copy in the user cache; a download
of the authors' files (github.com/ChnQ/TracingLLM), checked against a sha256 of the line-ending-normalised
text (the published files mix CRLF and LF).
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import text_sha256, write_text_atomic
from .groups import FILE_RULE, GROUP_RULES, USER_RULE, group_ids, group_keys
from .hub import default_cache_dir
from .names import DIMENSIONS

log = logging.getLogger(__name__)

AUTHORS_COMMIT = "14d35b47a913fe3fe626bb2e6bd8381ad41881bf"
AUTHORS_URL = f"https://raw.githubusercontent.com/ChnQ/TracingLLM/{AUTHORS_COMMIT}/src/datasets/{{name}}.csv"


@dataclass(frozen=True)
class DatasetSpec:
    """A published probing dataset: which dimension it measures and what its labels mean."""

    dimension: str
    file: str  # stem of the published CSV
    sha256: str  # of the normalised text (see ``text_sha256``)
    rows: int
    label1: str
    label0: str


SPECS: dict[str, DatasetSpec] = {
    s.dimension: s
    for s in (
        DatasetSpec("reliability", "truthfulqa_train",
                    "cfce4c24b088f25b376b7c6cfcd3097827652e325b37859494bf0c6d62b9770b", 2263,
                    "statement with a true answer", "statement with a false answer"),
        DatasetSpec("toxicity", "toxigen",
                    "1cbbfcf09048305b58844d543c9bed36fa93712a7a0c456b28886b89184f9539", 6514,
                    "toxic statement", "benign statement"),
        DatasetSpec("privacy", "confaide",
                    "e817ecacea5948576edcb021253ba33727fa3d69527d00b236c78eeca19b867c", 2346,
                    "concludes a privacy violation", "no privacy violation"),
        DatasetSpec("fairness", "stereoset",
                    "71cc7c747f5070bdbf49483d5e7d8d7b5759b3e50bc68f3e937dfe95c57731dc", 1952,
                    "anti-stereotype continuation (as published)", "unrelated continuation (as published)"),
        DatasetSpec("robustness", "sst2",
                    "85232c038defed8aaaab433b71f82b7d9cd706ec9d9b33ddff08f24d9a4878d6", 3642,
                    "perturbed sentence (random case flips)", "original sentence"),
    )
}
assert tuple(SPECS) == DIMENSIONS, "names.DIMENSIONS and data.SPECS list the dimensions in one order"
_BY_FILE = {s.file: s for s in SPECS.values()}


@dataclass(frozen=True, eq=False)
class TrustDataset:
    """Labelled statements for one dimension (or a user's file), validated."""

    name: str  # dimension name, or the user file's stem
    statements: tuple[str, ...]
    labels: np.ndarray = field(repr=False)  # int64 0/1, one per statement
    sha256: str  # of the whole source file's normalised text (before any limit)
    path: str
    source: str  # data-dir | cache | download | user
    groups: np.ndarray = field(repr=False)  # int64 group id per statement (see trusttrace.groups)
    group_rule: str = ""  # what a group is, in words
    label1: str = "label 1"
    label0: str = "label 0"
    limit: int | None = None

    def __len__(self) -> int:
        return len(self.statements)

    @property
    def n_groups(self) -> int:
        return len(np.unique(self.groups))

    def head(self, limit: int | None) -> TrustDataset:
        """The first ``limit`` rows, in file order (the published files are pre-shuffled)."""
        if limit is None or limit >= len(self):
            return self
        if limit < 1:
            raise ValueError(f"limit={limit}: pass a positive number of statements, or no limit.")
        return replace(self, statements=self.statements[:limit], labels=self.labels[:limit],
                       groups=self.groups[:limit], limit=limit)


@dataclass(frozen=True, eq=False)
class StatementFile:
    """A validated ``statement,label[,group]`` file."""

    statements: tuple[str, ...]
    labels: np.ndarray  # int64 0/1
    sha256: str  # of the normalised text
    groups: tuple[str, ...] | None  # the group column, when the file has one


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    limit: int | None = None,
    download: bool = True,
) -> TrustDataset:
    """Load a dimension's dataset by name (``toxicity`` or its file stem ``toxigen``) or a user file.

    Args:
        name: a dimension, a published file stem, or a path to a CSV/JSONL with ``statement,label``.
        data_dir: folder holding the published CSVs; default ``$TRUSTTRACE_DATA_DIR``.
        limit: keep the first ``limit`` rows.
        download: fetch the authors' file into the user cache when no local copy exists.
    """
    if name == HELDOUT_RELIABILITY:
        return truthfulqa_heldout(data_dir, download).head(limit)
    spec = SPECS.get(name) or _BY_FILE.get(name)
    if spec is None:
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"Dataset {name!r} is neither a dimension ({', '.join(DIMENSIONS)}), {HELDOUT_RELIABILITY!r}, nor "
                "an existing CSV/JSONL file with statement,label columns. Check the name or the path."
            )
        rows = read_statements(path)
        keys = rows.groups if rows.groups is not None else group_keys(None, rows.statements)
        return TrustDataset(path.stem, rows.statements, rows.labels, rows.sha256, str(path), "user",
                            group_ids(keys), FILE_RULE if rows.groups is not None else USER_RULE).head(limit)
    path, source = locate_file(_published(spec), data_dir, download)
    rows = read_statements(path)
    statements, labels, sha = rows.statements, rows.labels, rows.sha256
    if sha != spec.sha256 and (str(path), spec.sha256) not in _WARNED:  # once per file, not on every reload
        _WARNED.add((str(path), spec.sha256))
        log.warning("%s differs from the published %s.csv (sha256 %s…, expected %s…); using it as given.",
                    path, spec.file, sha[:12], spec.sha256[:12])
    groups = group_ids(rows.groups if rows.groups is not None else group_keys(spec.dimension, statements))
    ds = TrustDataset(spec.dimension, statements, labels, sha, str(path), source, groups,
                      FILE_RULE if rows.groups is not None else GROUP_RULES[spec.dimension], spec.label1, spec.label0)
    return ds.head(limit)


HELDOUT_RELIABILITY = "truthfulqa_heldout"


def truthfulqa_heldout(data_dir: str | Path | None = None, download: bool = True) -> TrustDataset:
    """Reliability statements about the 407 held-out TruthfulQA questions, none of which ``truthfulqa_train``
    asks: ``Q: <question>\tA: <answer>`` (the training file's form) for each correct answer (label 1) and each
    incorrect one (label 0) in ``TruthfulQA.csv``. A transfer test for the reliability probe
    (``trace --transfer reliability:truthfulqa_heldout``): does it generalise to questions it never saw?"""
    test_path, source = locate_file(EVAL_FILES["truthfulqa_test"], data_dir, download)
    table_path, _ = locate_file(EVAL_FILES["truthfulqa_mc"], data_dir, download)
    table = pd.read_csv(table_path, encoding="utf-8-sig", keep_default_na=False).set_index("Question")
    statements, labels = [], []
    for question in pd.read_csv(test_path, encoding="utf-8-sig").Question:
        if question not in table.index:
            continue
        row = table.loc[question]
        for column, label in (("Correct Answers", 1), ("Incorrect Answers", 0)):
            for answer in (a.strip() for a in str(row[column]).split(";") if a.strip()):
                statements.append(f"Q: {question}\tA: {answer}")
                labels.append(label)
    sha = text_sha256(test_path.read_text(encoding="utf-8-sig") + table_path.read_text(encoding="utf-8-sig"))
    return TrustDataset(HELDOUT_RELIABILITY, tuple(statements), np.array(labels, dtype=np.int64), sha,
                        str(test_path), source, group_ids(group_keys("reliability", statements)),
                        GROUP_RULES["reliability"], "statement with a true answer", "statement with a false answer")


def load_datasets(names: Sequence[str], data_dir: str | Path | None = None, limit: int | None = None
                  ) -> dict[str, TrustDataset]:
    """Several datasets by name or path (each once), keyed by dataset name; two with one name are refused."""
    found: dict[str, TrustDataset] = {}
    for name in dict.fromkeys(names):
        ds = load_dataset(name, data_dir, limit=limit)
        if ds.name in found and found[ds.name].path != ds.path:
            raise ValueError(f"Two datasets are both named {ds.name!r} ({found[ds.name].path} and {ds.path}); "
                             "rename one of the files.")
        found[ds.name] = ds
    return found


@dataclass(frozen=True)
class PublishedFile:
    """A file trusttrace can fetch: where it is published and the sha256 of its normalised text."""

    file: str  # stem; the file is <stem>.csv
    url: str
    sha256: str
    purpose: str  # named in error messages


def _published(spec: DatasetSpec) -> PublishedFile:
    return PublishedFile(spec.file, AUTHORS_URL.format(name=spec.file), spec.sha256, spec.dimension)


# Evaluation tables (not probing data): the 407 held-out TruthfulQA questions (the authors' split) and the
# original TruthfulQA table with its best/correct/incorrect answers.
EVAL_FILES: dict[str, PublishedFile] = {
    "truthfulqa_test": PublishedFile(
        "truthfulqa_test", AUTHORS_URL.format(name="truthfulqa_test"),
        "51106103e08cb129d103a47f55259d52b6c9aea3b19ec3a66b268be275ce52c1", "TruthfulQA test questions"),
    "truthfulqa_mc": PublishedFile(
        "truthfulqa_mc", "https://raw.githubusercontent.com/sylinrl/TruthfulQA/main/TruthfulQA.csv",
        "b9828ea189e07e8f111efa49615867364144f25fded943318001f8310db3b9bc", "TruthfulQA answers"),
}


def locate_file(published: PublishedFile, data_dir: str | Path | None = None, download: bool = True
                ) -> tuple[Path, str]:
    """Find a published file: the data folder, else the user cache, else a verified download."""
    folder = data_dir or os.environ.get("TRUSTTRACE_DATA_DIR")
    name = f"{published.file}.csv"
    if folder:
        path = Path(folder).expanduser() / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the data folder {folder} has no {name} ({published.purpose}). "
                "Put the file there, or unset TRUSTTRACE_DATA_DIR / --data-dir to download it."
            )
        return path, "data-dir"
    cached = default_cache_dir() / "datasets" / name
    if cached.is_file():
        return cached, "cache"
    if not download:
        raise FileNotFoundError(f"No local copy of {name}; pass --data-dir or allow the download.")
    return _download(published, cached), "download"


def _download(published: PublishedFile, dest: Path) -> Path:
    url = published.url
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            text = response.read().decode("utf-8")
    except OSError as err:
        raise ConnectionError(
            f"Could not download {url} ({err}). Without a network, pass --data-dir (or set "
            f"TRUSTTRACE_DATA_DIR) to a folder holding {published.file}.csv."
        ) from err
    got = text_sha256(text)
    if got != published.sha256:
        raise ValueError(
            f"{url} has sha256 {got} but {published.sha256} was expected: the published file changed or the "
            "download was corrupted. Nothing was saved; pass --data-dir to use a copy you trust."
        )
    write_text_atomic(dest, text.removeprefix("\ufeff").replace("\r\n", "\n"))
    return dest


def read_statements(path: str | Path) -> StatementFile:
    """Read and validate a ``statement,label`` CSV or JSONL, with an optional ``group`` column.

    Errors name the file, the (1-based data) row and the fix. A UTF-8 BOM is accepted; duplicate rows
    are kept with a warning. A group column must name a group on every row and hold two groups or more.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err}). Re-save it as UTF-8.") from err
    if path.suffix in (".jsonl", ".json"):
        frame = pd.read_json(path, lines=True, dtype=False)
    else:
        try:
            frame = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False, dtype=str)
        except pd.errors.ParserError as err:
            raise ValueError(f"{path} is not a readable CSV ({err}). Quote statements that hold commas.") from err
    missing = [c for c in ("statement", "label") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {missing}; it has {list(frame.columns)}. Rename the columns to "
            "statement,label (label 1/0)."
        )
    statements = [_statement(v, path, i) for i, v in enumerate(frame["statement"], start=1)]
    labels = np.array([_label(v, path, i) for i, v in enumerate(frame["label"], start=1)], dtype=np.int64)
    if len(statements) == 0:
        raise ValueError(f"{path} has no rows. Add statement,label rows.")
    sha = text_sha256(text)
    if (str(path), sha) not in _WARNED:  # once per file and content, not on every reload
        _WARNED.add((str(path), sha))
        _warn_duplicates(statements, labels, path)
    groups = _groups(frame, path) if "group" in frame.columns else None
    return StatementFile(tuple(statements), labels, sha, groups)


def _groups(frame: pd.DataFrame, path: Path) -> tuple[str, ...]:
    groups = tuple(str(v).strip() for v in frame["group"])
    empty = [i for i, g in enumerate(groups, start=1) if not g]
    if empty:
        raise ValueError(f"{path}, data row {empty[0]}: the group is empty. Give every row a group (e.g. the "
                         "question it answers), or drop the group column to group exact duplicates only.")
    if len(set(groups)) < 2:
        raise ValueError(f"{path}: the group column holds one group ({groups[0]!r}) for all {len(groups)} rows, "
                         "so no split can keep groups apart. Give rows that belong together the same id and "
                         "others different ids, or drop the group column.")
    return groups


def _statement(value: object, path: Path, row: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}, data row {row}: the statement is empty or missing ({value!r}). "
                         "Fill it in or delete the row.")
    return value


def _label(value: object, path: Path, row: int) -> int:
    text = str(value).strip()
    if text in ("0", "1", "0.0", "1.0"):
        return int(float(text))
    raise ValueError(f"{path}, data row {row}: label {value!r} is not 0 or 1. Labels must be 0 or 1 "
                     "(see the polarity table in the trusttrace.data docs).")


_WARNED: set[tuple[str, str]] = set()  # (file, sha256) already reported in this process


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
