"""The activation store: one safetensors file per (checkpoint, dataset), written atomically.

Where a run keeps them: ``layout.TraceLayout.activation(revision, dataset)``. Each file holds tensors ``layer_0`` …
``layer_{L-1}`` (``[n_statements, d_model]``, 16-bit) and ``labels`` (int64), plus a string metadata header
(model, revision, commit, dataset sha256, token position, dtype, package version). A file is complete
exactly when it exists under its final name, so an interrupted sweep resumes by skipping those files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ._io import write_with

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


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata header of a stored file, without reading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_activations(path: str | Path, layers: list[int] | None = None) -> StoredActivations:
    """Read stored activations as float32 (all layers, or the ones named)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No stored activations at {path}. Run `trusttrace trace` to extract them.")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        wanted = layers if layers is not None else list(range(int(meta["n_layers"])))
        stacked = torch.stack([f.get_tensor(f"layer_{i}").float() for i in wanted])
        labels = f.get_tensor("labels").numpy()
    return StoredActivations(stacked, labels, meta)


def is_complete(path: str | Path, expect: Mapping[str, str]) -> bool:
    """True when ``path`` exists and its metadata agrees with every key of ``expect``.

    A file made from other data (another dataset sha256 or limit) is not reused.
    """
    path = Path(path)
    if not path.is_file():
        return False
    meta = read_metadata(path)
    return all(meta.get(k) == v for k, v in expect.items())
