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

``probe``: the direction that *decodes*, beside the one that steers (Marks & Tegmark 2023 found the second
more causal). An L2 logistic regression (sklearn's defaults, ``BatchedLogisticRegression``) is fitted on
the same rows, z-scored per feature; its weight w mapped back to the residual basis (w / std, so that
w · a is the probe's score up to a constant) is scaled as ``paper-code`` scales d: unit · std(A · unit).
It points toward label 1, as every vector here does.

A is raw (not z-scored) activations of decoder block l's output. Applying: h_l ← h_l + α·v_l on block l's
output, at the positions named by ``positions``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..analysis.saved_probes import fit_probes
from ..core.errors import OptionError, VectorError, environment_failure
from ..core.files import write_with
from ..core.names import STEER_POSITIONS, VECTOR_METHODS, VECTOR_SPLITS
from ..data.batching import untuple
from ..models.loading import LoadedModel, vocab_sha256

log = logging.getLogger(__name__)

METHODS, POSITIONS, SPLITS = VECTOR_METHODS, STEER_POSITIONS, VECTOR_SPLITS

WHAT_A_VECTOR_IS = ("A trusttrace vector file is a safetensors file with one 1-D float tensor layer_<N> per decoder "
                    "block; make one with `trusttrace vectors build RUN --dimension D`, or convert another tool's "
                    "with `trusttrace vectors import FILE --out V.safetensors`.")


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
            raise VectorError("A steering vector needs at least one layer; got none.")
        sizes = {tuple(v.shape) for v in self.layers.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1 or next(iter(sizes))[0] == 0:
            raise VectorError(f"Every layer's vector must be 1-D, non-empty and the same size; got shapes "
                              f"{sorted(sizes)}. Build the vector from one model's activations.")
        negative = [layer for layer in self.layers if layer < 0]
        if negative:
            raise VectorError(f"Layer numbers count decoder blocks from 0; got {negative}.")

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.layers.values())).shape[0])

    def at(self, layer: int) -> torch.Tensor:
        """The direction for ``layer``; a clear error when the vector has none there."""
        if layer not in self.layers:
            raise VectorError(f"This vector has layers {sorted(self.layers)}, not layer {layer}. Build it with that "
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
            raise VectorError(f"Cannot add vectors over layers {sorted(self.layers)} (d={self.hidden_size}) and "
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
        """Read a vector written by ``save``.

        Whatever the file holds, the answer is a vector or a ``VectorError`` that names the file and says
        what a vector file is: a damaged or foreign file is the user's to replace, not a crash.
        """
        path = Path(path)
        if not path.is_file():
            what = "a folder, not a file" if path.is_dir() else "no such file"
            raise VectorError(f"--vector {path}: {what}. {WHAT_A_VECTOR_IS}")
        try:
            with safe_open(str(path), framework="pt") as f:
                names = list(f.keys())
                meta = {str(k): str(v) for k, v in (f.metadata() or {}).items()}
                layers = {_layer_number(path, k): f.get_tensor(k) for k in names if k.startswith("layer_")}
        except SafetensorError as err:
            raise VectorError(f"{path} is not a readable safetensors file ({err}); it may be truncated or of "
                              f"another kind. {WHAT_A_VECTOR_IS}") from err
        except OSError as err:
            raise environment_failure(err, str(path)) or VectorError(f"{path} cannot be read ({err}). "
                                                                     f"{WHAT_A_VECTOR_IS}") from err
        if not layers:
            raise VectorError(f"{path} holds no layer_<N> tensors (it has {names[:5] or 'none'}), so it is not a "
                              f"steering vector. {WHAT_A_VECTOR_IS}")
        return cls(checked_directions(path, layers), meta)


def _layer_number(path: Path, name: str) -> int:
    """N of a ``layer_N`` tensor name; anything else in that place is a foreign file."""
    number = name.removeprefix("layer_")
    if not number.isdigit() or not number.isascii():
        raise VectorError(f"{path}: tensor {name!r} is not layer_<N> with N a block number. {WHAT_A_VECTOR_IS}")
    return int(number)


def checked_directions(path: str | Path, layers: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """The directions as 1-D float32 tensors, refused when they are not floats, not 1-D or not finite.

    A NaN or infinite direction would steer every hidden state to NaN, and an integer one says the file is
    something else; both are refused here, where the file can still be named.
    """
    out = {}
    for layer, tensor in layers.items():
        if not (tensor.is_floating_point()):
            raise VectorError(f"{path}: layer {layer} holds {str(tensor.dtype).removeprefix('torch.')} values, not "
                              f"floats. {WHAT_A_VECTOR_IS}")
        if tensor.ndim != 1 or tensor.numel() == 0:
            raise VectorError(f"{path}: layer {layer} has shape {tuple(tensor.shape)}; a direction is 1-D "
                              f"[hidden size]. {WHAT_A_VECTOR_IS}")
        direction = tensor.float()
        if not bool(torch.isfinite(direction).all()):
            raise VectorError(f"{path}: layer {layer} holds NaN or infinite values (or values too large for "
                              "float32); such a direction would turn every steered hidden state into NaN. Rebuild "
                              "the vector.")
        out[layer] = direction
    return out


def build_vector(acts: torch.Tensor, labels: np.ndarray, method: str = "paper-code", split: str = "first-half",
                 meta: Mapping[str, object] | None = None) -> SteeringVector:
    """A vector for every layer from raw activations ``[n_layers, n, d]`` and 0/1 labels (see module doc).

    ``split``: the rows the mean difference uses: ``first-half`` (the released code's dev half) or ``all``
    (the released code's choice for reliability, whose test questions live in another file).
    """
    labels = np.asarray(labels)
    METHODS.check(method)
    SPLITS.check(split)
    if acts.ndim != 3 or acts.shape[1] != len(labels):
        raise VectorError(f"acts must be [n_layers, n, d] with n = {len(labels)} labels; got {tuple(acts.shape)}.")
    rows = np.arange(len(labels)) if split == "all" else np.arange(len(labels) // 2)
    y = labels[rows]
    if not ((y == 0).any() and (y == 1).any()):
        raise VectorError(f"The {split} rows hold only label {int(y[0])}; a mean difference needs both labels. "
                          "Use more rows (a larger --limit/--source-limit) or split='all'.")
    a = acts.double()
    pos, neg = torch.as_tensor(rows[y == 1]), torch.as_tensor(rows[y == 0])
    diff = a[:, pos].mean(1) - a[:, neg].mean(1)  # [n_layers, d]
    if method == "probe":  # the kept probes' fit (saved_probes), its weight in the residual basis
        probe = fit_probes(a, labels, rows)
        diff = torch.stack([probe.direction(layer) for layer in range(a.shape[0])]).double()
    if method in ("paper-code", "probe"):
        unit = diff / diff.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        spread = torch.einsum("lnd,ld->ln", a, unit).std(dim=1)  # over all rows, as released
        diff = unit * spread[:, None]
    info = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()}
    info.update(method=method, split=split, n_rows=str(len(rows)), n_layers=str(acts.shape[0]),
                sign="mean(label 1) - mean(label 0)")
    return SteeringVector({l: diff[l].float() for l in range(acts.shape[0])}, info)


# ---------------------------------------------------------------- applying


class SteeringMismatch(VectorError):
    """The vector was built on a model whose shape or vocabulary differs from the target's."""


def hidden_size_mismatch(source: str, source_size: int, target: str, target_size: int) -> SteeringMismatch:
    """The refusal of a vector whose width differs from the target's residual stream.

    No option relaxes it: adding a ``[source_size]`` direction to a ``[target_size]`` hidden state is not
    defined, so the message points at the one fix, a source of the target's width.
    """
    return SteeringMismatch(
        f"The vector from {source} has hidden size {source_size} but {target} has hidden size {target_size}: a "
        "steering vector can only be added to a residual stream of its own width, whatever the options. Build "
        f"the vector on a model with hidden size {target_size} (a checkpoint of the target's family), or steer a "
        f"target with hidden size {source_size}.")


def _source_name(vector: SteeringVector) -> str:
    return f"{vector.meta.get('model', '?')}@{vector.meta.get('revision', '?')}"


def check_compatible(vector: SteeringVector, lm: LoadedModel, layer: int, allow_mismatch: bool = False) -> None:
    """Refuse a vector that cannot steer ``lm`` at ``layer``, before any forward pass (see ``check_fit``)."""
    check_fit(vector, lm.info.ref, lm.info.hidden_size, lm.info.n_layers, vocab_sha256(lm.tokenizer), [layer],
              allow_mismatch, option="--layer")


def check_fit(vector: SteeringVector, target: str, hidden_size: int, n_layers: int, vocab: str | None,
              layers: Sequence[int], allow_mismatch: bool = False, option: str = "--layers") -> None:
    """Refuse ``vector`` for a target of this shape and vocabulary fingerprint, steered at ``layers``.

    Always refused: another hidden size (``hidden_size_mismatch``), a layer outside the target's blocks, a
    layer the vector lacks; no option makes those work. Refused unless ``allow_mismatch``: another layer
    count or vocabulary, which can still work when the residual streams correspond (a warning says so).
    ``vocab`` None skips the vocabulary check (the target's is not known yet).
    """
    if vector.hidden_size != hidden_size:
        raise hidden_size_mismatch(_source_name(vector), vector.hidden_size, target, hidden_size)
    check_layers(layers, n_layers, target, option)
    for layer in layers:
        vector.at(layer)
    problems = []
    source_layers = vector.meta.get("n_layers")
    if source_layers is not None and source_layers.isdigit() and int(source_layers) != n_layers:
        problems.append(f"{source_layers} layers vs the target's {n_layers}")
    source_vocab = vector.meta.get("vocab_sha256")
    if vocab is not None and source_vocab is None:
        log.warning("The vector records no source vocabulary; the vocabulary check is skipped.")
    elif vocab is not None and source_vocab != vocab:
        problems.append("a different tokenizer vocabulary")
    if problems and allow_mismatch:
        log.warning("The vector (from %s) differs from %s: %s; applied anyway, as --allow-mismatch asks.",
                    _source_name(vector), target, "; ".join(problems))
    elif problems:
        raise SteeringMismatch(
            f"The vector (from {_source_name(vector)}) does not fit {target}: {'; '.join(problems)}. Steer a "
            "model of the same family, or pass --allow-mismatch (API: allow_mismatch=True) if you know the "
            "residual streams correspond.")


def check_layers(layers: Sequence[int], n_layers: int, model: str, option: str = "--layers") -> None:
    """Refuse layers outside ``model``'s decoder blocks ``0..n_layers-1`` (before any evaluation runs)."""
    outside = [layer for layer in layers if not 0 <= layer < n_layers]
    if outside:
        raise OptionError(f"{option} {','.join(map(str, layers))}: {', '.join(map(str, outside))} is outside "
                          f"{model}'s decoder blocks 0..{n_layers - 1}; give layers in that range.")


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
    POSITIONS.check(positions)
    if not math.isfinite(alpha):
        raise OptionError(f"alpha {alpha!r} is not a finite number; give a strength such as -2, 1 or 1.5.")
    check_compatible(vector, lm, layer, allow_mismatch)
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
