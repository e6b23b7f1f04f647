"""Probes you can keep: one checkpoint × dataset's per-layer linear probes, saved beside its activations.

``trace`` keeps, for every layer, the L2 logistic regression (``BatchedLogisticRegression``, the probe's
``C``) that its probe table fitted on the first fold's training rows (``probes.training_rows``, as the MI
analysis uses; ``probe_layers(keep=)``), with the standardisation it was fitted under (those rows'
statistics; all rows' under ``paper-code``), and writes ``probes/<revision>/<dataset>.safetensors``:

    weight [n_layers, d], intercept [n_layers], mean [n_layers, d], std [n_layers, d]   (float32)

with the provenance a vector carries (model, revision, step, dataset, dtype, vocabulary, rows, protocol,
seed, trusttrace version) in the header. ``load_probe(path)`` reads one back; ``ProbeSet.scores(acts)``
gives the log-odds of label 1 for new last-token activations of the same model (``extract_last_token``), so
a probe fitted during a trace labels statements it never saw. ``ProbeSet.direction(layer)`` is its weight in
the residual basis (``weight / std``), the direction ``--method probe`` steers with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..core.errors import VectorError, environment_failure
from ..core.files import write_with
from .logreg import BatchedLogisticRegression
from .probes import FoldProbes

TENSORS = ("weight", "intercept", "mean", "std")


@dataclass(frozen=True, eq=False)
class ProbeSet:
    """Per-layer probes of one checkpoint × dataset (see the module doc); label 1 where ``scores`` > 0."""

    weight: torch.Tensor  # [n_layers, d], on z-scored features
    intercept: torch.Tensor  # [n_layers]
    mean: torch.Tensor  # [n_layers, d]
    std: torch.Tensor  # [n_layers, d], 1 where a feature was constant
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layers, width = self.weight.shape if self.weight.ndim == 2 else (0, 0)
        shapes = {"weight": (layers, width), "intercept": (layers,), "mean": (layers, width), "std": (layers, width)}
        wrong = {k: tuple(getattr(self, k).shape) for k, shape in shapes.items()
                 if tuple(getattr(self, k).shape) != shape}
        if not layers or not width or wrong:
            raise VectorError(f"A probe file holds weight [n_layers, d], intercept [n_layers], mean and std [n_layers, "
                              f"d]; got weight {tuple(self.weight.shape)} and {wrong or 'empty tensors'}.")

    @property
    def n_layers(self) -> int:
        return int(self.weight.shape[0])

    def scores(self, acts: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Log-odds of label 1: ``[n_layers, n]`` for ``acts`` ``[n_layers, n, d]``, or ``[n]`` for one
        ``layer``'s ``[n, d]``."""
        if layer is not None:
            if not 0 <= layer < self.n_layers:
                raise VectorError(f"This probe set has layers 0..{self.n_layers - 1}, not layer {layer}.")
            z = (acts.double() - self.mean[layer].double()) / self.std[layer].double()
            return z @ self.weight[layer].double() + float(self.intercept[layer])
        if acts.ndim != 3 or acts.shape[0] != self.n_layers or acts.shape[2] != self.weight.shape[1]:
            raise VectorError(f"acts must be [n_layers={self.n_layers}, n, d={self.weight.shape[1]}]; got "
                              f"{tuple(acts.shape)}. Give one layer's [n, d] with layer=.")
        z = (acts.double() - self.mean[:, None].double()) / self.std[:, None].double()
        return torch.einsum("lnd,ld->ln", z, self.weight.double()) + self.intercept.double()[:, None]

    def direction(self, layer: int) -> torch.Tensor:
        """The probe's weight in the residual basis (``weight / std``): ``w · a`` is its score up to a constant."""
        return (self.weight[layer].double() / self.std[layer].double()).float()

    def save(self, path: str | Path) -> None:
        """Write as safetensors (float32 tensors, provenance in the header), atomically."""
        tensors = {k: getattr(self, k).float().contiguous() for k in TENSORS}
        write_with(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=dict(self.meta)))


def fit_probes(acts: torch.Tensor, labels: np.ndarray, rows: np.ndarray, meta: Mapping[str, object] | None = None
               ) -> ProbeSet:
    """Per-layer probes of ``acts`` ``[n_layers, n, d]`` fitted on ``rows``, z-scored on those rows."""
    train = acts[:, torch.as_tensor(rows)].double()
    mean = train.mean(1)
    std = train.std(1, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    z = (train - mean[:, None]) / std[:, None]
    y = torch.as_tensor(np.asarray(labels)[rows], dtype=torch.float64).expand(acts.shape[0], -1)
    fitted = BatchedLogisticRegression().fit(z, y)
    return ProbeSet(fitted.coef_.float(), fitted.intercept_.float(), mean.float(), std.float(),
                    _info(meta, len(rows), acts.shape[0]))


def kept_probes(fold: FoldProbes, meta: Mapping[str, object] | None = None) -> ProbeSet:
    """The probes ``probe_layers`` fitted on its first fold (``keep=``), as a ``ProbeSet`` to save."""
    return ProbeSet(fold.weight.float(), fold.intercept.float(), fold.mean.float(), fold.std.float(),
                    _info(meta, len(fold.rows), fold.weight.shape[0]))


def _info(meta: Mapping[str, object] | None, n_rows: int, n_layers: int) -> dict[str, str]:
    info = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()}
    info.update(n_rows=str(n_rows), n_layers=str(n_layers), sign="label 1 where the score is > 0")
    return info


def load_probe(path: str | Path) -> ProbeSet:
    """Read a probe file a trace wrote (``probes/<revision>/<dataset>.safetensors``); a damaged or foreign
    file is a ``VectorError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise VectorError(f"{path}: no such probe file. A trace writes RUN/probes/<revision>/<dataset>.safetensors.")
    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            missing = [k for k in TENSORS if k not in names]
            if missing:
                raise VectorError(f"{path} lacks {missing}, so it is not a probe file (it has {names[:5]}).")
            tensors = {k: f.get_tensor(k) for k in TENSORS}
            meta = {str(k): str(v) for k, v in (f.metadata() or {}).items()}
    except SafetensorError as err:
        raise VectorError(f"{path} is not a readable safetensors file ({err}); it may be truncated.") from err
    except OSError as err:
        raise environment_failure(err, str(path)) or VectorError(f"{path} cannot be read ({err}).") from err
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise VectorError(f"{path} holds NaN or infinite values; trace the checkpoint again to refit its probes.")
    return ProbeSet(**tensors, meta=meta)
