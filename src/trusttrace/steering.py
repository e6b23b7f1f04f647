"""Steering vectors: built from one model's activations, added to another model's residual stream.

Sign convention: a vector points from label 0 to label 1 of its dataset (mean(label 1) − mean(label 0)),
keeping each file's published polarity. So a positive α moves a model *toward* label 1:

| dimension   | label 1 (where +α points)            | to improve the dimension |
|-------------|--------------------------------------|--------------------------|
| reliability | true answer                          | α > 0                    |
| toxicity    | toxic                                | α < 0                    |
| privacy     | concludes a privacy violation        | α > 0 (recognise it)     |
| fairness    | anti-stereotype continuation (as read) | see paper-notes §2     |
| robustness  | perturbed sentence                   | α < 0                    |

Builders (``method``):

``paper-code`` (the released ``generate_steering_vector.py``)::

    d = mean(A[y = 1]) − mean(A[y = 0])   over the first half of the rows (all rows for reliability)
    v = (d / ‖d‖) · std(A · d/‖d‖)        the std over all rows: α = 1 moves about one std along d

``mean-diff`` (the paper's Eq. 1): v = mean(A[y = 1]) − mean(A[y = 0]) on the same rows, unscaled.

A is raw (not z-scored) activations of decoder block l's output. Applying: h_l ← h_l + α·v_l on block l's
output, at the positions named by ``positions``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ._io import write_with
from .batching import untuple
from .models import LoadedModel, vocab_sha256
from .names import STEER_POSITIONS, VECTOR_METHODS, VECTOR_SPLITS

log = logging.getLogger(__name__)

METHODS, POSITIONS, SPLITS = VECTOR_METHODS, STEER_POSITIONS, VECTOR_SPLITS


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Per-layer steering directions (``layer → [d_model]`` float32) and where they came from.

    Example:
        >>> v = SteeringVector.load("runs/smol/vectors/final/toxicity.safetensors")
        >>> with steer(lm, -1.5 * v, layer=14):
        ...     out = lm.model.generate(**inputs)
    """

    layers: dict[int, torch.Tensor]
    meta: dict[str, str] = field(default_factory=dict)  # model, revision, commit, dimension, method, …

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("A steering vector needs at least one layer.")
        sizes = {v.shape for v in self.layers.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"Every layer's vector must be 1-D and the same size; got shapes {sorted(sizes)}.")

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.layers.values())).shape[0])

    def at(self, layer: int) -> torch.Tensor:
        """The direction for ``layer``; a clear error when the vector has none there."""
        if layer not in self.layers:
            raise KeyError(f"This vector has layers {sorted(self.layers)}, not layer {layer}. Build it with that "
                           "layer, or steer at one of these.")
        return self.layers[layer]

    def _with(self, layers: dict[int, torch.Tensor], note: str) -> SteeringVector:
        meta = dict(self.meta)
        meta["transform"] = (meta.get("transform", "") + " " + note).strip()
        return SteeringVector(layers, meta)

    def __neg__(self) -> SteeringVector:
        return self._with({k: -v for k, v in self.layers.items()}, "neg")

    def __mul__(self, scale: float) -> SteeringVector:
        return self._with({k: float(scale) * v for k, v in self.layers.items()}, f"×{scale:g}")

    __rmul__ = __mul__

    def __add__(self, other: SteeringVector) -> SteeringVector:
        if set(self.layers) != set(other.layers) or self.hidden_size != other.hidden_size:
            raise ValueError(f"Cannot add vectors over layers {sorted(self.layers)} (d={self.hidden_size}) and "
                             f"{sorted(other.layers)} (d={other.hidden_size}); they must match.")
        return self._with({k: v + other.layers[k] for k, v in self.layers.items()}, "+ other")

    def cosine(self, other: SteeringVector, layer: int) -> float:
        """Cosine similarity of the two vectors' directions at ``layer``."""
        a, b = self.at(layer).double(), other.at(layer).double()
        return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))

    def save(self, path: str | Path) -> None:
        """Write as safetensors (``layer_{l}`` tensors, metadata header), atomically."""
        tensors = {f"layer_{k}": v.float().contiguous() for k, v in self.layers.items()}
        write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=dict(self.meta)))

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Read a vector written by ``save``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No steering vector at {path}. Build one with trusttrace.steering.build_vector.")
        with safe_open(str(path), framework="pt") as f:
            layers = {int(k.removeprefix("layer_")): f.get_tensor(k) for k in f.keys() if k.startswith("layer_")}  # noqa: SIM118 (safe_open is no dict)
            meta = dict(f.metadata() or {})
        return cls(layers, meta)


def build_vector(acts: torch.Tensor, labels: np.ndarray, method: str = "paper-code", split: str = "first-half",
                 meta: Mapping[str, object] | None = None) -> SteeringVector:
    """A vector for every layer from raw activations ``[n_layers, n, d]`` and 0/1 labels (see module doc).

    ``split``: the rows the mean difference uses: ``first-half`` (the released code's dev half) or ``all``
    (the released code's choice for reliability, whose test questions live in another file).
    """
    labels = np.asarray(labels)
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}.")
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}.")
    if acts.ndim != 3 or acts.shape[1] != len(labels):
        raise ValueError(f"acts must be [n_layers, n, d] with n = {len(labels)} labels; got {tuple(acts.shape)}.")
    rows = np.arange(len(labels)) if split == "all" else np.arange(len(labels) // 2)
    y = labels[rows]
    if not ((y == 0).any() and (y == 1).any()):
        raise ValueError(f"The {split} rows hold only label {int(y[0])}; a mean difference needs both labels.")
    a = acts.double()
    pos, neg = torch.as_tensor(rows[y == 1]), torch.as_tensor(rows[y == 0])
    diff = a[:, pos].mean(1) - a[:, neg].mean(1)  # [n_layers, d]
    if method == "paper-code":
        unit = diff / diff.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        spread = torch.einsum("lnd,ld->ln", a, unit).std(dim=1)  # over all rows, as released
        diff = unit * spread[:, None]
    info = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()}
    info.update(method=method, split=split, n_rows=str(len(rows)), n_layers=str(acts.shape[0]),
                sign="mean(label 1) - mean(label 0)")
    return SteeringVector({l: diff[l].float() for l in range(acts.shape[0])}, info)


# ---------------------------------------------------------------- applying


class SteeringMismatch(ValueError):
    """The vector was built on a model whose shape or vocabulary differs from the target's."""


def check_compatible(vector: SteeringVector, lm: LoadedModel, layer: int) -> None:
    """Refuse a vector whose hidden size, layer count or vocabulary differs from ``lm``'s."""
    problems = []
    if vector.hidden_size != lm.info.hidden_size:
        problems.append(f"hidden size {vector.hidden_size} vs the target's {lm.info.hidden_size}")
    n_layers = vector.meta.get("n_layers")
    if n_layers is not None and int(n_layers) != lm.info.n_layers:
        problems.append(f"{n_layers} layers vs the target's {lm.info.n_layers}")
    source_vocab = vector.meta.get("vocab_sha256")
    if source_vocab is None:
        log.warning("The vector records no source vocabulary; the vocabulary check is skipped.")
    elif source_vocab != vocab_sha256(lm.tokenizer):
        problems.append("a different tokenizer vocabulary")
    if not 0 <= layer < lm.info.n_layers:
        raise ValueError(f"layer {layer} is outside the target's layers 0..{lm.info.n_layers - 1}.")
    if problems:
        raise SteeringMismatch(
            f"The vector (from {vector.meta.get('model', '?')}@{vector.meta.get('revision', '?')}) does not fit "
            f"{lm.info.ref}: {'; '.join(problems)}. Steer a model of the same family, or pass "
            "allow_mismatch=True (CLI: --allow-mismatch) if you know the residual streams correspond.")


@contextmanager
def steer(lm: LoadedModel, vector: SteeringVector, layer: int, alpha: float = 1.0,
          positions: str = "last", allow_mismatch: bool = False) -> Iterator[dict[str, int]]:
    """Add ``alpha · vector[layer]`` to decoder block ``layer``'s output while the block is active.

    ``positions``:
        ``last``: the last position of every forward call (the released code): with the KV cache that is
        the prompt's last token, then each generated token. Batches must be left-padded.
        ``all``: every position of every forward call.
        ``generated``: every position of forward calls after the first (the decode steps of ``generate``);
        the prompt is left untouched.

    Yields a dict counting forward calls (``calls``) and calls that were steered (``steered``). The hook
    is removed on every exit path.
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions {positions!r} is not one of {', '.join(POSITIONS)}.")
    if not allow_mismatch:
        check_compatible(vector, lm, layer)
    block = lm.blocks[layer]
    param = next(block.parameters())
    delta = (alpha * vector.at(layer)).to(device=param.device, dtype=param.dtype)
    counts = {"calls": 0, "steered": 0}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        counts["calls"] += 1
        if alpha == 0 or (positions == "generated" and counts["calls"] == 1):
            return None  # untouched: α = 0 leaves every logit bit-identical
        hidden = untuple(output)
        if positions == "last":
            new = hidden.clone()
            new[:, -1, :] += delta
        else:
            new = hidden + delta
        counts["steered"] += 1
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = block.register_forward_hook(hook)
    try:
        yield counts
    finally:
        handle.remove()
