"""The random-init control's activations, kept per machine: an untrained network is traced once, not per run.

The ``random-init`` control extracts every dataset through the checkpoint's architecture, freshly
initialised with the analysis seed (``trace_unit.random_init_control``). On SmolLM2 that second extraction is
most of what the controls cost, and it is the same for every checkpoint of a model and every run folder.
So each extraction is also kept here, and a later trace reads it instead of extracting again:

    <cache>/<key>.safetensors              the activations as a run folder stores them
                                           (``trusttrace.activations.store``)
    <cache>/<key>.safetensors.sha256.json  their record (size, sha256), checked before every use
    <cache>/<rows key>.rows.csv            the control's probe and MI rows of those activations under one
                                           analysis (``rows_key``: the activations' key and every analysis
                                           setting), with its record

- **Keyed by what they depend on** (``random_init_key``): the architecture's config (without its name, path
  or dtype), the tokenizer (``tokenizer_sha256``), the seed, the dataset's sha256 and row count, the extraction
  settings (``ExtractConfig``, the token position), the dtype and device, and the versions of torch,
  transformers and trusttrace. Any change misses the cache and extracts again.
- **Checked.** A cached file that does not match its record, or whose key differs from its name, is deleted
  with a warning and extracted again; its numbers are never used.
- **Bounded.** At most ``$TRUSTTRACE_RANDOM_INIT_CACHE_GB`` GB (default 4); past that the least recently
  used files go first (a hit counts as a use). The file just written is never the one evicted.
- **Where, and off.** ``$TRUSTTRACE_RANDOM_INIT_CACHE`` when set, else ``random-init/`` in trusttrace's cache
  (``$TRUSTTRACE_CACHE`` or ``~/.cache/trusttrace``); ``off`` (or ``0``, ``false``, ``no``) turns it off.
  ``trusttrace cache --clear`` (``clear()``) empties it; deleting the folder is safe too.

The run folder keeps its own copy as before (``controls/activations``), with its own metadata and a
``random_init_key`` entry naming the cache key it came from or went to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .._version import package_versions
from ..core.caches import cache_folder
from ..core.errors import DamagedFileError, OptionError
from ..core.files import is_record, write_with
from ..runs.integrity import check, describe, remove
from .store import StoredActivations, load_activations

log = logging.getLogger(__name__)

ENV = "TRUSTTRACE_RANDOM_INIT_CACHE"
ENV_LIMIT = "TRUSTTRACE_RANDOM_INIT_CACHE_GB"
DEFAULT_LIMIT_GB = 4.0
KEY_FIELD = "random_init_key"
ROWS_SUFFIX = ".rows.csv"  # the control's probe and MI rows of one activation file and analysis
FORMAT = "trusttrace-random-init-cache/1"
# Config entries that name or locate a checkpoint, or set the load dtype (keyed separately): two checkpoints
# of one model differ in these only, and their random-init networks are the same.
_NOT_ARCHITECTURE = ("transformers_version", "torch_dtype", "dtype")


def cache_root() -> Path | None:
    """The cache folder (see the module docstring), None when ``$TRUSTTRACE_RANDOM_INIT_CACHE`` turns it off."""
    return cache_folder(ENV, "random-init", "the random-init control's activations", "extract them in every run")


def limit_bytes() -> int:
    """The cache's size limit in bytes (``$TRUSTTRACE_RANDOM_INIT_CACHE_GB``, default 4)."""
    value = os.environ.get(ENV_LIMIT, "").strip()
    try:
        gb = float(value) if value else DEFAULT_LIMIT_GB
    except ValueError:
        gb = -1.0
    if not gb >= 0:
        raise OptionError(f"{ENV_LIMIT}={value!r}: give the random-init cache's size limit in GB, a number such as "
                          f"{DEFAULT_LIMIT_GB:g} (0 keeps nothing).")
    return int(gb * 1e9)


def architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """A model config without what names, locates or types one checkpoint (``_NOT_ARCHITECTURE``, private keys)."""
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in _NOT_ARCHITECTURE}


def tokenizer_sha256(tokenizer: Any) -> str:
    """A fingerprint of how a tokenizer splits text: its whole serialised pipeline when it has one (vocabulary,
    merges, normaliser, special tokens), else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def random_init_key(config: Mapping[str, Any], tokenizer: str, seed: int, dataset_sha256: str, n_rows: int,
                    extraction: Mapping[str, Any], dtype: str, device: str) -> str:
    """sha256 of everything the random-init activations depend on (the module docstring lists it)."""
    versions = package_versions()
    spec = {"format": FORMAT, "architecture": architecture(config), "tokenizer": tokenizer, "seed": seed,
            "dataset_sha256": dataset_sha256, "n_rows": n_rows, "extraction": dict(extraction), "dtype": dtype,
            "device": device, **{k: versions[k] for k in ("torch", "transformers", "trusttrace")}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


ACTIVATIONS_SUFFIX = ".safetensors"


def _intact(name: str, what: str, redo: str) -> Path | None:
    """The cached file ``name`` when it is there and matches its record, else None (cache off, absent, or
    damaged: then deleted, with a warning naming ``what`` and that it is ``redo``)."""
    root = cache_root()
    path = None if root is None else root / name
    if path is None or not path.is_file():
        return None
    found = check(path)
    if not found.ok:
        _discard(path, what, describe(found), redo)
        return None
    return path


def _discard(path: Path, what: str, why: object, redo: str) -> None:
    log.warning("The cached random-init %s %s cannot be used (%s); deleted, they are %s again.", what, path, why, redo)
    remove(path)


def _used(path: Path) -> None:
    os.utime(path)  # a use: the least recently used files are evicted first


def fetch(key: str) -> StoredActivations | None:
    """The cached activations of ``key``, or None (not cached, cache off, or damaged: then deleted)."""
    path = _intact(key + ACTIVATIONS_SUFFIX, "activations", "extracted")
    if path is None:
        return None
    try:
        stored = load_activations(path)
        if stored.metadata.get(KEY_FIELD) != key:
            raise DamagedFileError(f"{path} holds the activations of key {stored.metadata.get(KEY_FIELD)!r}")
    except DamagedFileError as err:
        _discard(path, "activations", err, "extracted")
        return None
    _used(path)
    return stored


def _store(name: str, size: int, writer: Callable[[Path], None]) -> None:
    """Write cache file ``name`` (``size`` bytes) with ``writer``, then evict the least recently used files past
    the size limit; a file larger than the limit is not kept. Nothing happens with the cache off."""
    root = cache_root()
    if root is None:
        return
    limit = limit_bytes()
    if size > limit:
        log.info("The random-init cache's limit is %d bytes (%s): %s (%d bytes) is not kept.", limit, ENV_LIMIT,
                 name, size)
        return
    target = root / name
    write_with(target, writer)
    evict(limit, keep=target)


def keep(key: str, source: Path) -> None:
    """Copy the run folder's control file ``source`` (carrying ``KEY_FIELD`` = ``key``) into the cache."""

    def copy(tmp: Path) -> None:
        shutil.copyfile(source, tmp)

    _store(key + ACTIVATIONS_SUFFIX, source.stat().st_size, copy)


def rows_key(key: str, analysis: Mapping[str, Any]) -> str:
    """The key of the control's rows: its activations' ``key`` and every analysis setting."""
    spec = {"format": FORMAT, "activations": key, "analysis": dict(analysis)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def fetch_rows(key: str) -> pd.DataFrame | None:
    """The cached control rows of ``rows_key`` ``key``, or None (not cached, cache off, or damaged: deleted)."""
    path = _intact(key + ROWS_SUFFIX, "rows", "computed")
    if path is None:
        return None
    _used(path)
    return pd.read_csv(path)


def keep_rows(key: str, rows: pd.DataFrame) -> None:
    """Keep the control's rows under ``rows_key`` ``key`` (floats written to round-trip exactly)."""
    text = rows.to_csv(index=False, float_format="%.17g")

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    _store(key + ROWS_SUFFIX, len(text.encode()), write)


@dataclass(frozen=True)
class Entry:
    """One cached file: its path, size in bytes and last use."""

    path: Path
    size: int
    used: float


def entries() -> list[Entry]:
    """The cached files, least recently used first (none with the cache off or absent)."""
    root = cache_root()
    if root is None or not root.is_dir():
        return []
    found = []
    for path in [*root.glob(f"*{ACTIVATIONS_SUFFIX}"), *root.glob(f"*{ROWS_SUFFIX}")]:
        if path.is_file() and not is_record(path):
            st = path.stat()
            found.append(Entry(path, st.st_size, st.st_mtime))
    return sorted(found, key=lambda e: (e.used, e.path.name))


def evict(limit: int, keep: Path | None = None) -> int:
    """Delete the least recently used files until the cache holds at most ``limit`` bytes (never ``keep``);
    returns the bytes freed."""
    found = entries()
    total = sum(e.size for e in found)
    freed = 0
    for entry in found:
        if total - freed <= limit:
            break
        if entry.path == keep:
            continue
        remove(entry.path)
        freed += entry.size
    return freed


def clear() -> tuple[int, int]:
    """Empty the cache: (files removed, bytes freed)."""
    found = entries()
    for entry in found:
        remove(entry.path)
    return len(found), sum(e.size for e in found)
