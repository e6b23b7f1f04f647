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

from ..core.caches import default_cache_dir
from ..core.errors import (
    DamagedFileError,
    DataFileError,
    DataFileNotFoundError,
    OptionError,
    UnknownNameError,
)
from ..core.files import text_sha256, write_text_atomic
from ..core.names import DIMENSIONS
from .groups import FILE_RULE, GROUP_RULES, USER_RULE, group_ids, group_keys
from .statements import REPORTED, read_statements

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
    groups: np.ndarray = field(repr=False)  # int64 group id per statement (see trusttrace.data.groups)
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
            raise OptionError(f"limit={limit}: pass a positive number of statements (e.g. --limit 400), "
                              "or no limit.")
        return replace(self, statements=self.statements[:limit], labels=self.labels[:limit],
                       groups=self.groups[:limit], limit=limit)


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
        dataset_name(name)  # refuses an unknown name, a missing file or a folder, each in its own words
        path = Path(name).expanduser()
        rows = read_statements(path)
        keys = rows.groups if rows.groups is not None else group_keys(None, rows.statements)
        return TrustDataset(path.stem, rows.statements, rows.labels, rows.sha256, str(path), "user",
                            group_ids(keys), FILE_RULE if rows.groups is not None else USER_RULE).head(limit)
    path, source = locate_file(_published(spec), data_dir, download)
    rows = read_statements(path)
    statements, labels, sha = rows.statements, rows.labels, rows.sha256
    if sha != spec.sha256 and (str(path), spec.sha256) not in REPORTED:  # once per file, not on every reload
        REPORTED.add((str(path), spec.sha256))
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


DATA_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".json")


def names_a_file(name: str) -> bool:
    """Whether the user meant a file: a folder separator or a data file's suffix (``x/a.csv``, ``a.jsonl``).

    Such a name that does not exist is a missing file, not an unknown dimension: the messages differ.
    """
    return "/" in name or os.sep in name or "\\" in name or Path(name).suffix.lower() in DATA_SUFFIXES


def dataset_name(name: str) -> str:
    """The name a dataset will carry (a dimension, or a user file's stem), checked without reading it.

    Raises ``UnknownNameError`` for a name that is neither a dimension nor a path, ``DataFileNotFoundError``
    for a path that does not exist, ``DataFileError`` for a folder.
    """
    if name == HELDOUT_RELIABILITY:
        return name
    spec = SPECS.get(name) or _BY_FILE.get(name)
    if spec is not None:
        return spec.dimension
    path = Path(name)
    try:
        path = path.expanduser()
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError, RuntimeError) as err:  # NUL, too long a name, ~user of no such user
        raise DataFileError(f"Dataset {name[:80]!r} is neither a dimension ({', '.join(DIMENSIONS)}) nor a usable "
                            f"file path ({err}). Check the name or the path.") from err
    if is_dir:
        raise DataFileError(f"Dataset {name!r} is a folder, not a file. Give a CSV/JSONL file of statement,label "
                            f"rows inside it, e.g. {name}/statements.csv; the published files go in --data-dir.")
    if is_file:
        return path.stem
    if names_a_file(name):
        raise DataFileNotFoundError(f"Dataset file {name!r} does not exist ({path.absolute()}). Check the path, or "
                                    f"name a dimension instead: {', '.join(DIMENSIONS)}.")
    raise UnknownNameError(f"Unknown dimension {name!r}. Choose from {', '.join(DIMENSIONS)} or 'all', "
                           f"{HELDOUT_RELIABILITY}, or pass a CSV/JSONL file of statement,label rows.")


def dataset_names(names: Sequence[str]) -> dict[str, str]:
    """Each distinct dataset's name → what was given for it; two datasets under one name are refused.

    A trace keys its files and rows by dataset name, so ``a/data.csv,b/data.csv`` (both ``data``) or
    ``toxicity,x/toxicity.csv`` would silently keep one of the two: refused before anything loads.
    """
    if not names:
        raise OptionError("No datasets given. Name one or more dimensions (e.g. --dimensions toxicity,privacy), "
                          "'all', or CSV/JSONL files of statement,label rows.")
    found: dict[str, str] = {}
    for given in dict.fromkeys(names):
        name = dataset_name(given)
        earlier = found.get(name)
        if earlier is not None and _source(earlier) != _source(given):
            raise DataFileError(
                f"Two datasets would both be named {name!r}: {earlier!r} ({_source(earlier)}) and {given!r} "
                f"({_source(given)}); a run keeps one dataset per name. Rename one of the files (its name is "
                "the file name without the suffix), or drop one of them.")
        found.setdefault(name, given)
    return found


def _source(given: str) -> str:
    """What a dataset name stands for: the built-in dimension, or the resolved user file."""
    if given == HELDOUT_RELIABILITY or given in SPECS or given in _BY_FILE:
        return f"built-in {dataset_name(given)}"
    return str(Path(given).expanduser().resolve())


def require_both_labels(ds: TrustDataset) -> TrustDataset:
    """Refuse a dataset whose (kept) rows all carry one label: no probe can be trained or scored on it.

    Checked when the data loads, before any model loads or anything is written.
    """
    values = np.unique(ds.labels)
    if len(values) < 2:
        kept = f"its first {ds.limit} rows (--limit)" if ds.limit is not None else f"all {len(ds)} rows"
        fix = "Give it statements of both labels (0 and 1)" + (", or raise --limit" if ds.limit is not None else "")
        raise DataFileError(f"{ds.path}: {kept} of dataset {ds.name!r} have label {int(values[0])}, so a probe "
                            f"cannot tell the labels apart. {fix}.")
    return ds


def load_datasets(names: Sequence[str], data_dir: str | Path | None = None, limit: int | None = None
                  ) -> dict[str, TrustDataset]:
    """Several datasets by name or path (each once), keyed by dataset name, each with both labels.

    Two with one name are refused (``dataset_names``) before any is read.
    """
    return {name: require_both_labels(load_dataset(given, data_dir, limit=limit))
            for name, given in dataset_names(names).items()}


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
            raise DataFileNotFoundError(
                f"{path} not found: the data folder {folder} has no {name} ({published.purpose}). "
                "Put the file there, or unset TRUSTTRACE_DATA_DIR / --data-dir to download it."
            )
        return path, "data-dir"
    cached = default_cache_dir() / "datasets" / name
    if cached.is_file():
        return cached, "cache"
    if not download:
        raise DataFileNotFoundError(f"No local copy of {name} ({published.purpose}); pass --data-dir (or set "
                                    "TRUSTTRACE_DATA_DIR) to a folder holding it, or allow the download.")
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
        raise DamagedFileError(
            f"{url} has sha256 {got} but {published.sha256} was expected: the published file changed or the "
            "download was corrupted. Nothing was saved; rerun to retry, or pass --data-dir to use a copy you trust.",
            url)
    write_text_atomic(dest, text.removeprefix("\ufeff").replace("\r\n", "\n"))
    return dest
