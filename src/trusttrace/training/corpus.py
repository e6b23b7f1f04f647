"""English text for pre-training a small language model from scratch: cleaned, de-duplicated, split.

``prepare_corpus(spec)`` turns a corpus argument into two UTF-8 files, ``train.txt`` and ``heldout.txt``
(the held-out slice is for perplexity). Both hold one document per line: no empty lines, no tabs, runs of
whitespace collapsed to one space. ``spec`` is one of:

- ``builtin``: English text from two Debian packages, ``dict-gcide`` (the Collaborative International
  Dictionary of English: Webster's 1913 plus WordNet, about 126,000 entries) and ``fortunes`` (the
  ``fortune`` quotations and jokes). Both are required: the dictionary alone is terse definitional prose
  and the fortunes alone are too small (about 2.5 MB), so a missing one is an error that names it,
  rather than a silently different corpus.
- a PATH: a UTF-8 text file, or a folder of ``*.txt`` files (read in sorted order). Documents are
  separated by blank lines; the lines inside one are joined by a space, so hard-wrapped prose reads as
  running text. A file with one document per line therefore needs blank lines between its documents.
- ``hf:NAME`` or ``hf:NAME:COLUMN``: a Hugging Face dataset repository; its parquet, jsonl and txt files
  are downloaded and COLUMN (default ``text``) is read from every file, all splits together. Every call
  asks the hub (or, with ``HF_HUB_OFFLINE=1``, the Hugging Face cache) for the snapshot, because the
  snapshot's files are what the cache key is made of.

Cleaning, in order: markup is stripped (GCIDE and fortunes only, see below); whitespace is collapsed;
documents shorter than ``MIN_CHARS`` are dropped; exact duplicates are dropped, keeping the first.

GCIDE (``/usr/share/dictd/gcide.dict.dz``, a dictzip file that ``gzip`` reads): one document per
dictionary entry, because an entry keeps its headword as the subject of its senses, quotations and usage
notes ("Abandon, v. t. 1. To cast or drive out; ..."), while a single sense ("To give up absolutely") has
lost what it defines. Stripped: the ``00-database-*`` header entries; backslash-delimited syllabified
headwords (``\\A*ban"don\\``) and the phonetic parentheses after them; every ``[...]`` span (etymologies,
inflections, usage labels such as ``[Obs.]``, source tags such as ``[1913 Webster]``, and the rare
editorial insertion in a quotation); a next entry's headwords that the dictd conversion appended after a
source tag. Kept: the text of ``{cross references}`` without braces or syllable marks, quotations with
their ``--Author`` citations, sense numbers, ``Note:`` paragraphs; ``Syn:`` becomes ``Synonyms:`` and the
``Usage:`` label goes (its essay stays). GCIDE's ASCII letter codes become Unicode (``[ae]`` → æ,
``['e]`` → é, ``["o]`` → ö, ``[sect]`` → §).

Fortunes (``/usr/share/games/fortunes``): the plain files, not ``*.dat`` indexes, ``*.u8`` duplicates or
sub-folders (``off/``). A fortune is the text between lines holding only ``%``; its lines are joined,
attribution lines (``-- Mark Twain``) stay as text, typewriter overstrikes (``_\\bx``) are resolved, and a
fortune whose non-space characters are less than ``MIN_LETTER_SHARE`` letters (ASCII art) is dropped.

Held-out split and order: each document gets a number in [0, 1), the sha256 of ``seed`` and its text; it
is held out when that number is below ``heldout_fraction``, and both files list their documents sorted by
it. The split therefore depends only on the text and the seed (not on input order, machine or library
versions), adding documents never moves existing ones to the other side, and the files come shuffled: a
prefix of ``train.txt`` (say, the text a tokenizer is trained on) samples the whole corpus rather than
the dictionary's first letters. At least one document lands on each side when there are two or more.

Caching: the cleaned files go to ``<cache>/corpus/<kind>-<key>/``, where the key hashes the inputs'
paths, sizes and modification times, the split parameters and ``CLEANING_VERSION``. ``corpus.json`` is
written last, atomically like the text files, and only a folder holding it is reused, so an interrupted
build is rebuilt rather than mistaken for a complete one.

Example:
    >>> corpus = prepare_corpus("builtin")  # doctest: +SKIP
    >>> corpus.n_documents, corpus.n_heldout, corpus.train.name
    (141196, 2740, 'train.txt')
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from ..core.caches import default_cache_dir
from ..core.errors import DataFileError, DataFileNotFoundError, OptionError
from ..core.files import text_sha256, write_json_atomic, write_text_atomic
from ..models.hub import hub_call
from .corpus_builtin import fortune_documents, gcide_documents

log = logging.getLogger(__name__)

GCIDE_PATH = Path("/usr/share/dictd/gcide.dict.dz")
FORTUNE_DIR = Path("/usr/share/games/fortunes")
INSTALL_HINT = ("Install them with `sudo apt-get install dict-gcide fortunes` (`make setup` does this where "
                "apt-get is available), or pass `--corpus PATH` with a UTF-8 text file or a folder of *.txt "
                "files of your own.")
SPEC_FORMS = "'builtin', a PATH to a UTF-8 text file or a folder of *.txt files, or 'hf:NAME[:COLUMN]'"
HF_PATTERNS = ["*.parquet", "*.jsonl", "*.txt"]
MIN_CHARS = 16  # shorter documents are headword stubs or fortune fragments, not language
CLEANING_VERSION = 1  # bump when cleaning changes, so that corpora cached by older code are rebuilt
MARKER = "corpus.json"

Split = Literal["train", "heldout"]


@dataclass(frozen=True)
class Corpus:
    """Cleaned text on disk: one document per line in ``train`` and ``heldout``."""

    source: str  # the spec as the user gave it
    train: Path
    heldout: Path
    n_documents: int  # train + held-out, after cleaning and de-duplication
    n_heldout: int
    n_chars: int  # characters of both files' text, newlines included
    sha256: str  # text_sha256 of the train text followed by the held-out text

    def documents(self, split: Split = "train") -> list[str]:
        """The documents of one split, in file order."""
        if split not in ("train", "heldout"):
            raise OptionError(f"split={split!r}: use 'train' or 'heldout'.")
        path = self.train if split == "train" else self.heldout
        return path.read_text(encoding="utf-8").splitlines()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, for a run manifest."""
        return {"source": self.source, "train": str(self.train), "heldout": str(self.heldout),
                "n_documents": self.n_documents, "n_heldout": self.n_heldout, "n_chars": self.n_chars,
                "sha256": self.sha256}


def prepare_corpus(
    spec: str,
    cache: Path | None = None,
    heldout_fraction: float = 0.02,
    seed: int = 0,
    *,
    gcide_path: Path = GCIDE_PATH,
    fortune_dir: Path = FORTUNE_DIR,
) -> Corpus:
    """Clean, de-duplicate and split a corpus once; later calls return the cached files.

    Args:
        spec: ``builtin``, a PATH (text file or folder of ``*.txt``), or ``hf:NAME[:COLUMN]``.
        cache: root of the cache; default ``$TRUSTTRACE_CACHE`` or ``~/.cache/trusttrace``.
        heldout_fraction: expected share of documents held out for perplexity, in [0, 1).
        seed: selects which documents are held out.
        gcide_path: the GCIDE dictzip file (``builtin`` only).
        fortune_dir: the folder of fortune files (``builtin`` only).

    Returns:
        The cleaned corpus.

    Raises:
        FileNotFoundError: the builtin packages or the PATH are missing (the message says what to do).
        ValueError: a malformed spec or fraction, or a source without usable text.
        ConnectionError: the Hugging Face hub could not be reached.
    """
    if not 0 <= heldout_fraction < 1:
        raise OptionError(f"heldout_fraction={heldout_fraction}: use a fraction in [0, 1), e.g. 0.02.")
    kind, inputs, reader = _resolve(spec, Path(gcide_path), Path(fortune_dir))
    key = _cache_key(inputs, heldout_fraction, seed)
    folder = Path(cache or default_cache_dir()) / "corpus" / f"{kind}-{key[:16]}"
    return _load_cached(folder, spec) or _build(folder, spec, reader, heldout_fraction, seed)


def _resolve(spec: str, gcide_path: Path, fortune_dir: Path) -> tuple[str, list[Path], Callable[[], list[str]]]:
    """(cache folder prefix, input files, a reader of the raw documents) for a spec."""
    if spec == "builtin":
        fortunes = _builtin_inputs(gcide_path, fortune_dir)
        return "builtin", [gcide_path, *fortunes], partial(_builtin_documents, gcide_path, fortunes)
    if spec.startswith("hf:"):
        name, column = _parse_hf(spec)
        folder = _download_hf(name)
        return f"hf-{_slug(name)}-{_slug(column)}", _data_files(folder), partial(read_data_folder, folder, column)
    path = Path(spec).expanduser()
    scheme_like = re.match(r"[A-Za-z][\w+.-]*:", spec) is not None  # "s3:bucket", "hf/x:y"
    if not spec.strip() or not path.exists() and (scheme_like or spec.lower().replace("-", "") == "builtin"):
        raise OptionError(f"Unknown corpus {spec!r}: use {SPEC_FORMS}.")
    if not path.exists():
        raise DataFileNotFoundError(f"Corpus {spec!r}: {path} does not exist. Use {SPEC_FORMS}.")
    files = _text_files(path)
    return f"path-{_slug(path.resolve().name)}", files, partial(_text_file_documents, files)


# ---- cache --------------------------------------------------------------------------------------


def _cache_key(inputs: Iterable[Path], heldout_fraction: float, seed: int) -> str:
    """Hash of what the cleaned files depend on; a stat per input, so reuse costs no reading."""
    stats = []
    for path in inputs:
        st = path.stat()
        stats.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"inputs": stats, "heldout_fraction": heldout_fraction, "seed": seed,
                       "cleaning_version": CLEANING_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()


def _load_cached(folder: Path, spec: str) -> Corpus | None:
    """The corpus in ``folder`` if its build finished (the marker exists), else None."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    meta = json.loads(marker.read_text(encoding="utf-8"))
    train, heldout = folder / "train.txt", folder / "heldout.txt"
    if not (train.is_file() and heldout.is_file()):
        return None
    log.info("reusing the cleaned corpus in %s", folder)
    return Corpus(spec, train, heldout, meta["n_documents"], meta["n_heldout"], meta["n_chars"], meta["sha256"])


def _build(folder: Path, spec: str, reader: Callable[[], list[str]], heldout_fraction: float,
           seed: int) -> Corpus:
    start = time.perf_counter()
    docs = clean_documents(reader())
    if not docs:
        raise DataFileError(f"Corpus {spec!r} holds no document of {MIN_CHARS} or more characters.")
    train_docs, heldout_docs = split_heldout(docs, heldout_fraction, seed)
    train_text, heldout_text = _lines(train_docs), _lines(heldout_docs)
    train, heldout = folder / "train.txt", folder / "heldout.txt"
    write_text_atomic(train, train_text)
    write_text_atomic(heldout, heldout_text)
    corpus = Corpus(spec, train, heldout, len(docs), len(heldout_docs), len(train_text) + len(heldout_text),
                    text_sha256(train_text + heldout_text))
    seconds = time.perf_counter() - start
    # The marker goes last: a folder without it is an interrupted build and is rebuilt.
    write_json_atomic(folder / MARKER, {**corpus.to_dict(), "heldout_fraction": heldout_fraction, "seed": seed,
                                        "cleaning_version": CLEANING_VERSION, "build_seconds": round(seconds, 2)})
    log.info("cleaned corpus %s: %d documents (%d held out), %.1f MB in %.1f s", spec, len(docs),
             len(heldout_docs), corpus.n_chars / 1e6, seconds)
    return corpus


def _lines(docs: list[str]) -> str:
    return "".join(f"{doc}\n" for doc in docs)


# ---- cleaning and splitting shared by every source ----------------------------------------------


def clean_documents(docs: Iterable[str]) -> list[str]:
    """Collapse whitespace, drop documents under ``MIN_CHARS`` and exact duplicates (first one kept)."""
    seen: set[str] = set()
    out = []
    for doc in docs:
        text = " ".join(doc.split())
        if len(text) >= MIN_CHARS and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def split_heldout(docs: list[str], heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split ``docs`` into (train, held-out), each ordered by its seeded hash; see the module docstring."""
    scored = sorted((_unit_hash(doc, seed), doc) for doc in docs)
    n_heldout = sum(score < heldout_fraction for score, _ in scored)
    if heldout_fraction > 0 and len(docs) >= 2:
        n_heldout = min(max(n_heldout, 1), len(docs) - 1)
    heldout = [doc for _, doc in scored[:n_heldout]]
    train = [doc for _, doc in scored[n_heldout:]]
    return train, heldout


def _unit_hash(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``text``."""
    digest = hashlib.sha256(f"{seed}\n{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def paragraphs(text: str) -> list[str]:
    """Blank-line-separated paragraphs, each with its lines joined by single spaces."""
    return [" ".join(block.split()) for block in re.split(r"\n[ \t\r\f\v]*\n", text) if block.strip()]


def _builtin_documents(gcide_path: Path, fortune_files: list[Path]) -> list[str]:
    fortunes = (fortune_documents(file.read_text(encoding="utf-8", errors="replace")) for file in fortune_files)
    return [*gcide_documents(gcide_path), *(doc for docs in fortunes for doc in docs)]


def fortune_files(folder: Path) -> list[Path]:
    """The plain fortune files in ``folder``: not ``*.dat`` indexes, ``*.u8`` duplicates or sub-folders."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix not in (".dat", ".u8") and not p.name.startswith("."))


def _builtin_inputs(gcide_path: Path, fortune_dir: Path) -> list[Path]:
    """The fortune files, once both packages are known to be installed."""
    fortunes = fortune_files(fortune_dir)
    missing = [f"dict-gcide ({gcide_path})"] if not gcide_path.is_file() else []
    if not fortunes:
        missing.append(f"fortunes ({fortune_dir})")
    if missing:
        raise DataFileNotFoundError(f"The builtin corpus needs Debian's dict-gcide and fortunes packages; missing: "
                                    f"{', '.join(missing)}. {INSTALL_HINT}")
    return fortunes


# ---- PATH ---------------------------------------------------------------------------------------


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.glob("*.txt") if p.is_file())
    if not files:
        raise DataFileNotFoundError(f"Corpus folder {path} holds no *.txt file. Use {SPEC_FORMS}.")
    return files


def _text_file_documents(files: list[Path]) -> list[str]:
    return [doc for file in files for doc in paragraphs(_read_utf8(file))]


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path} is not UTF-8 text ({err}). Re-save it as UTF-8.") from err


# ---- hf:NAME[:COLUMN] ---------------------------------------------------------------------------


def _parse_hf(spec: str) -> tuple[str, str]:
    parts = spec[len("hf:"):].split(":")
    name, column = parts[0], parts[1] if len(parts) == 2 else "text"
    if len(parts) > 2 or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) or not column:
        raise OptionError(f"Unknown corpus {spec!r}: use {SPEC_FORMS}, e.g. 'hf:roneneldan/TinyStories:text'.")
    return name, column


def _download_hf(name: str) -> Path:
    from huggingface_hub import snapshot_download


    try:
        return Path(hub_call(f"Downloading dataset {name}", snapshot_download, name, repo_type="dataset",
                             allow_patterns=HF_PATTERNS))
    except ConnectionError as err:
        raise ConnectionError(f"{err} Or pass `--corpus PATH` with the text as local files.") from err


def _data_files(folder: Path) -> list[Path]:
    files = sorted(p for pattern in HF_PATTERNS for p in folder.rglob(pattern) if p.is_file())
    if not files:
        raise DataFileError(f"{folder} holds no parquet, jsonl or txt file to read text from.")
    return files


def read_data_folder(folder: Path, column: str = "text") -> list[str]:
    """The ``column`` of every parquet and jsonl file under ``folder``, and the paragraphs of its txt files.

    Files are read in sorted path order; values that are not strings (missing cells) are skipped.
    """
    docs: list[str] = []
    for path in _data_files(Path(folder)):
        if path.suffix == ".txt":
            docs.extend(paragraphs(_read_utf8(path)))
        else:
            docs.extend(v for v in _read_column(path, column) if isinstance(v, str))
    return docs


def _read_column(path: Path, column: str) -> list[Any]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if column not in names:
            raise DataFileError(f"{path} has no column {column!r}; it has {names}. Pass hf:NAME:COLUMN.")
        return pq.read_table(path, columns=[column]).column(column).to_pylist()
    rows = [json.loads(line) for line in _read_utf8(path).splitlines() if line.strip()]
    if rows and column not in rows[0]:
        raise DataFileError(f"{path} has no field {column!r}; it has {sorted(rows[0])}. Pass hf:NAME:COLUMN.")
    return [row.get(column) for row in rows]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "corpus"
