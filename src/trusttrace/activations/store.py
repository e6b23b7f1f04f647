"""The activation store: one safetensors file per (checkpoint, dataset), written atomically.

Where a run keeps them: ``layout.TraceLayout.activation(revision, dataset)``. Each file holds tensors ``layer_0`` …
``layer_{L-1}`` (``[n_statements, d_model]``, 16-bit) and ``labels`` (int64), plus a string metadata header
(model, revision, commit, dataset sha256, token position, dtype, package version). A file is complete
when it exists under its final name *and* matches the size and sha256 recorded beside it (``integrity``): an
interrupted sweep resumes by skipping those files, and a truncated or overwritten one is extracted again.
Reading a file for use (``load_activations``) checks it first, so damage surfaces as a ``DamagedFileError``
naming the file and the fix, never as a parser's error or as silently wrong numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..core.errors import RunFolderNotFoundError
from ..core.files import write_with
from ..runs.integrity import check, damaged, require_readable, usable

STORAGE_DTYPE = torch.bfloat16  # 16-bit storage; bf16 keeps the range of the large outlier dimensions


@dataclass(frozen=True)
class StoredActivations:
    """Activations read back from the store."""

    layers: torch.Tensor  # [n_layers, n_statements, d_model], float32
    labels: np.ndarray  # [n_statements] int64
    metadata: dict[str, str]


def save_activations(
    path: str | Path, layers: torch.Tensor, labels: np.ndarray, metadata: Mapping[str, object]
) -> None:
    """Write ``layers`` ``[n_layers, n, d]`` and ``labels`` to ``path`` atomically, with string metadata."""
    tensors = {f"layer_{i}": layers[i].to(STORAGE_DTYPE).contiguous() for i in range(layers.shape[0])}
    tensors["labels"] = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    header = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    header["n_layers"] = str(layers.shape[0])
    header["storage_dtype"] = str(STORAGE_DTYPE).removeprefix("torch.")
    write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


RECOMPUTE = "rerun `trusttrace trace` with the same --out to recompute it (the checkpoint is loaded again)."
_PARSE_ERRORS = (SafetensorError, OSError, ValueError, KeyError, RuntimeError)  # a truncated or garbage file


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata header of a stored file, without reading its tensors (nor checking them).

    A file whose header cannot be parsed raises ``DamagedFileError``.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except _PARSE_ERRORS as err:
        raise damaged(path, err, RECOMPUTE) from err


def load_activations(path: str | Path, layers: list[int] | None = None) -> StoredActivations:
    """Read stored activations as float32 (all layers, or the ones named), after checking the file.

    A file that does not match its record, or cannot be parsed, raises ``DamagedFileError`` (naming it and
    the fix: rerun ``trusttrace trace`` with the same --out); its numbers are never used. A file without a
    record (written before records were kept) is read if it parses.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFolderNotFoundError(f"No stored activations at {path}. Run `trusttrace trace` to extract them.")
    require_readable(path, RECOMPUTE)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            wanted = layers if layers is not None else list(range(int(meta["n_layers"])))
            stacked = torch.stack([f.get_tensor(f"layer_{i}").float() for i in wanted])
            labels = f.get_tensor("labels").numpy()
    except _PARSE_ERRORS as err:
        raise damaged(path, err, RECOMPUTE) from err
    return StoredActivations(stacked, labels, meta)


def is_complete(path: str | Path, expect: Mapping[str, str], *, quiet: bool = False) -> bool:
    """True when ``path`` is intact (it matches its record) and its metadata agrees with every key of ``expect``.

    A file made from other data (another dataset sha256 or limit) is not reused; a damaged or unrecorded one
    is reported (a warning, unless ``quiet``) and not reused either: the caller extracts it again.
    """
    path = Path(path)
    redo = "it is extracted again."
    if not (check(path).ok if quiet else usable(path, redo)):
        return False
    meta = read_metadata(path)
    return all(meta.get(k) == v for k, v in expect.items())
