"""Every MI estimator and every half-sample of one activation set, in one pass over the layers.

``trusttrace.analysis.mi_stats`` asks, per activation set, for the chosen estimator, the check estimators, K label
permutations and B half-samples. Computed one by one, the intervals and checks cost several times the bare
estimate. Here they share its work:

- **One distance matrix per layer.** T·Tᵀ is the m²·d product every kernel starts from; its squared
  distances D give the Gaussian kernels (paper-code's fixed width, nHSIC's median width) and stand in for
  CKA's linear kernel (H·T·Tᵀ·H = −½·H·D·H).
- **Half-samples are sub-matrices.** A half-sample's kernel is the full kernel restricted to its rows, so a
  draw costs a gather of D and (paper-code) a centring and an (m/2)³ factorisation, never another m²·d
  product. All B draws have the same size and run as one batch. nHSIC's median width is the full sample's,
  held fixed in the draws, so their spread leaves out the width's own variation.
- **No centring for nHSIC and CKA.** With X's kernel and the labels centred, every sum they need is one of
  T's uncentred kernel (``_Side._hsic``).
- **Permutations are label columns** (``mutual_info.estimate_mi_columns``).

The results equal ``mutual_info.estimate_mi`` per estimator (``tests/analysis/test_mi_stats.py``). They are computed
in the chosen estimator's work dtype: float32 for paper-code, so the check estimators are in float32 there
too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .mutual_info import MIConfig, x_factor

# The half-samples' X factor drops the lightest directions whose weights sum to at most this share of Σw
# (the full sample keeps MIConfig.tail, 1e-8): each draw's I(T;X) moves by at most HALF_TAIL·Σw, far below
# the spread of the draws it exists to measure, and the triangular solve per draw shrinks several-fold.
HALF_TAIL = 1e-4


@dataclass(frozen=True)
class Estimates:
    """One estimator's results on one row set: full-sample values and each half-sample's."""

    tx: np.ndarray  # [layers]
    ty: np.ndarray  # [layers, label columns]
    tx_half: np.ndarray  # [draws, layers]
    ty_half: np.ndarray  # [draws, layers]


def _centre(k: torch.Tensor) -> torch.Tensor:
    """H·K·H in place, over the last two dimensions."""
    row, col = k.mean(-1, keepdim=True), k.mean(-2, keepdim=True)
    return k.sub_(row).sub_(col).add_(row.mean(-2, keepdim=True))


def _sqdist(gram: torch.Tensor) -> torch.Tensor:
    """Squared distances from a Gram matrix (a new tensor)."""
    sq = torch.diagonal(gram, dim1=-2, dim2=-1)
    return (sq[..., :, None] + sq[..., None, :]).sub_(gram, alpha=2.0).clamp_min_(0)


@lru_cache(maxsize=8)
def _upper_flat(m: int, device: torch.device) -> torch.Tensor:
    """Flat indices (row·m + column) of the pairs above the diagonal of an m × m matrix."""
    iu = torch.triu_indices(m, m, offset=1, device=device)
    return iu[0] * m + iu[1]


def _median_width(dist2: torch.Tensor) -> torch.Tensor:
    """2·σ² with σ the median distance between distinct rows (the mean of the middle two for an even count)."""
    pairs = dist2.flatten(-2).index_select(-1, _upper_flat(dist2.shape[-1], dist2.device))
    k = pairs.shape[-1]
    low = pairs.kthvalue((k + 1) // 2, -1).values
    high = low
    if k % 2 == 0:  # the next value up: ``low`` again when it is tied, else the least value above it
        tied = (pairs <= low[..., None]).sum(-1) > k // 2
        above = torch.where(pairs > low[..., None], pairs, torch.inf).amin(-1)
        high = torch.where(tied, low, above)
    med = (low.sqrt() + high.sqrt()) / 2
    return 2 * torch.where(med > 0, med, torch.ones_like(med)) ** 2


def _width(dist2: torch.Tensor, config: MIConfig, d: int) -> torch.Tensor | float:
    """2·σ² of the Gaussian kernel (per layer for the median width); unused by the linear kernel."""
    if config.estimator == "linear-cka":
        return 1.0
    if config.sigma is None:
        return _median_width(dist2)[..., None, None]
    return 2 * config.sigma**2 * (d if config.estimator == "paper-code" else 1)


# The linear kernel's stand-in: the squared distances D, whose centred matrix times this factor is the centred
# Gram matrix (H·G·H = −½·H·D·H), so CKA needs no Gram sub-matrices. The HSIC sums apply it.
LINEAR_FACTOR = -0.5


def _kernel(dist2: torch.Tensor, config: MIConfig, width: torch.Tensor | float) -> torch.Tensor:
    """The uncentred kernel minus one (Gaussian: expm1 keeps small distances' precision), or for the linear
    kernel ``dist2`` itself (``LINEAR_FACTOR``; read, never written). A half-sample's kernel is this on its
    sub-matrices, with the full sample's ``width`` (``[..., 1, 1]``)."""
    if config.estimator == "linear-cka":
        return dist2
    if isinstance(width, torch.Tensor) and dist2.dim() > width.dim():  # [l, 1, 1] widths of [l, draws, h, h]
        width = width[..., None, :, :]
    return torch.div(dist2, -width).expm1_()  # exact negation: the same values as −(dist2 / width)


def _label_scale(config: MIConfig) -> float:
    """H·K_Y·H = scale·u·uᵀ for 0/1 labels (``mutual_info._label_gram_factor``); 1 for the linear kernel."""
    if config.estimator == "linear-cka":
        return 1.0
    sigma = 1.0 if config.sigma is None else config.sigma
    return 2 * (1 - math.exp(-1.0 / (2 * sigma**2)))


def _sub(k: torch.Tensor, flat: torch.Tensor, h: int) -> torch.Tensor:
    """``k[..., m, m]`` restricted to each half's rows: ``[..., draws, h, h]``; ``flat`` holds each draw's
    (row·m + column) indices, so one ``index_select`` gathers them all."""
    return k.flatten(-2).index_select(-1, flat).view(*k.shape[:-2], -1, h, h)


def _flat_indices(halves: torch.Tensor, m: int) -> torch.Tensor:
    return (halves[:, :, None] * m + halves[:, None, :]).reshape(-1)


@dataclass(frozen=True)
class _Distances:
    """A chunk's squared distances and their half-sample sub-matrices (gathered once for every estimator: a
    half-sample's kernel is the kernel of these)."""

    dist2: torch.Tensor
    sub_dist2: torch.Tensor | None  # [..., draws, h, h]; None without draws

    @classmethod
    def of(cls, gram: torch.Tensor, flat: torch.Tensor | None, h: int) -> _Distances:
        dist2 = _sqdist(gram)
        return cls(dist2, None if flat is None else _sub(dist2, flat, h))

    def kernels(self, config: MIConfig, d: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The centred-to-be kernel of the full sample and of each half-sample (None without draws)."""
        width = _width(self.dist2, config, d)
        full = _kernel(self.dist2, config, width)
        if self.sub_dist2 is None:
            return full, None
        return full, _kernel(self.sub_dist2, config, width)


class _Side:
    """What one estimator needs of X and Y, for the full sample and the half-samples."""

    def __init__(self, config: MIConfig, x: _Distances, d_x: int, y: torch.Tensor, halves: torch.Tensor,
                 dtype: torch.dtype) -> None:
        self.config, self.dtype = config, dtype
        k_x, k_x_half = x.kernels(config, d_x)
        self.scale = _label_scale(config)
        self.u = (y - y.mean(0, keepdim=True))
        self.draws = k_x_half is not None
        if self.draws:
            yh = y[halves, 0]  # [draws, h]: the observed labels of each half
            self.u_half = (yh - yh.mean(-1, keepdim=True))[..., None]
        m = y.shape[0]
        if config.estimator == "paper-code":
            self.c, self.c_half = config.eps * m, config.eps * halves.shape[1]
            if k_x_half is not None:
                # in the work dtype: float32's eigenvalue error (~1e-7 of the largest) is far below c
                s_x_half = _centre(k_x_half).to(dtype)
                self.w_sum_half, g_half = _batched_x_factor(s_x_half, self.c_half, max(config.tail, HALF_TAIL))
                self.rhs_half = torch.cat([g_half, self.u_half], -1).to(dtype)
            self.w_sum, g = x_factor(_centre(k_x), self.c, config.tail)
            self.rhs = torch.cat([g, self.u], 1).to(dtype)
        else:
            self.factor = LINEAR_FACTOR if config.estimator == "linear-cka" else 1.0
            if k_x_half is not None:  # copies: the linear kernel is the shared distance matrix itself
                self.s_x_half = _centre(k_x_half.to(dtype, copy=True)).mul_(self.factor)
                self.xx_half = self._sq_norm(self.s_x_half)
            self.s_x = _centre(k_x.clone()).mul_(self.factor).to(dtype)
            self.xx = self._sq_norm(self.s_x)

    @staticmethod
    def _sq_norm(s: torch.Tensor) -> torch.Tensor:
        """‖S‖²/(m − 1)² per matrix, in float64."""
        return s.double().square().sum((-1, -2)) / (s.shape[-1] - 1) ** 2

    def layers(self, t: _Distances, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """tx ``[l]``, ty ``[l, k]``, tx_half ``[l, draws]``, ty_half ``[l, draws]`` of a chunk of layers."""
        k_t, k_t_half = t.kernels(self.config, d)
        paper = self.config.estimator == "paper-code"
        tx, ty = self._paper(_centre(k_t), self.c, self.w_sum, self.rhs, self.u) if paper else \
            self._hsic(k_t, self.s_x, self.xx, self.u)
        if k_t_half is None:
            none = torch.zeros(tx.shape[0], 0, dtype=torch.float64)
            return tx, ty, none, none
        tx_h, ty_h = self._paper(_centre(k_t_half), self.c_half, self.w_sum_half, self.rhs_half, self.u_half) if paper \
            else self._hsic(k_t_half, self.s_x_half, self.xx_half, self.u_half)
        return tx, ty, tx_h, ty_h[..., 0]

    def _paper(self, s_t: torch.Tensor, c: float, w_sum: torch.Tensor | float, rhs: torch.Tensor, u: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        m, k = s_t.shape[-1], u.shape[-1]
        s_t.diagonal(dim1=-2, dim2=-1).add_(c)
        chol = torch.linalg.cholesky(s_t)
        z = torch.linalg.solve_triangular(chol, rhs.expand(*chol.shape[:-2], m, rhs.shape[-1]), upper=False)
        uu = (u * u).sum(-2)
        w_y = self.scale * uu / (self.scale * uu + c)
        # squares summed in float64 without a float64 copy of z
        tx = w_sum - c * torch.linalg.vector_norm(z[..., :-k], dim=(-1, -2), dtype=torch.float64).square()
        zy = torch.linalg.vector_norm(z[..., -k:], dim=-2, dtype=torch.float64).square()
        ty = torch.where(uu > 0, w_y * (uu - c * zy) / uu.clamp_min(1e-300), 0.0)
        return tx.clamp_min(0), ty.clamp_min(0)

    def _hsic(self, k_t: torch.Tensor, s_x: torch.Tensor, xx: torch.Tensor, u: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """HSIC (normalised for nHSIC and CKA) from T's *uncentred* kernel: with S_X and u centred,
        ⟨HK_TH, S_X⟩ = ⟨K_T, S_X⟩ and uᵀHK_THu = uᵀK_Tu, and ‖HK_TH‖² = ‖K_T‖² − (2/m)‖K_T1‖² + (1ᵀK_T1)²/m², so
        K_T is read a few times and never centred. The linear kernel's K_T is −½·D (``LINEAR_FACTOR``)."""
        m = k_t.shape[-1]
        norm = (m - 1) ** 2
        u = u.to(k_t.dtype)
        flat = k_t.flatten(-2)
        f = self.factor
        tx = f * _dots(flat, s_x.flatten(-2)).double() / norm
        ty = f * self.scale * ((k_t @ u) * u).sum(-2).double() / norm
        if self.config.estimator in ("nhsic", "linear-cka"):
            uu = (u * u).sum(-2).double()
            rows = k_t.sum(-1).double()  # reductions in the work dtype: asking sum/norm for float64 is ~30x slower
            tt = (torch.linalg.vector_norm(flat, dim=-1).double().square() - 2 / m * rows.square().sum(-1)
                  + rows.sum(-1).square() / m**2).clamp_min(0) * f**2 / norm
            yy = self.scale**2 * uu**2 / norm
            tx = tx / (tt * xx).sqrt().clamp_min(1e-300)
            ty = ty / (tt[..., None] * yy).sqrt().clamp_min(1e-300)
        return tx, ty


def _dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a, b⟩ over the last dimension: ``a`` ``[l, n]`` with ``b`` ``[n]``, or ``a`` ``[l, draws, n]`` with ``b``
    ``[draws, n]``; one BLAS matrix-vector product per draw, several times faster than ``linalg.vecdot``'s
    element-wise product and sum."""
    if b.dim() == 1:
        return a @ b
    return torch.stack([a[..., i, :] @ b[i] for i in range(b.shape[0])], -1)


def _batched_x_factor(s_x: torch.Tensor, c: float, tail: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_factor`` for a batch of half-samples: directions dropped within ``tail`` are zeroed, and the columns
    zero in every draw removed (``eigh`` sorts them first)."""
    lam, q = torch.linalg.eigh(s_x)
    w = lam.clamp_min(0) / (lam.clamp_min(0) + c)
    total = w.sum(-1, keepdim=True)
    keep = torch.cumsum(w, -1) > tail * total  # ascending weights: the light tail comes first
    w = w * keep
    first = int((~keep).sum(-1).min())
    return w.sum(-1), (q * w.sqrt()[..., None, :])[..., first:]


def estimate_all(x: torch.Tensor, t: torch.Tensor, y: np.ndarray, configs: dict[str, MIConfig],
                 halves: np.ndarray, dtype: torch.dtype, chunk_bytes: int = 64 << 20, device: str = "cpu",
                 all_columns: tuple[str, ...] | None = None) -> dict[str, Estimates]:
    """Every estimator of ``configs`` (prefix → settings) on one row set: ``x`` ``[m, d]``, ``t`` ``[layers, m, d]``,
    ``y`` ``[m, k]`` label columns (observed first), ``halves`` ``[draws, h]`` row indices (``[0, h]``: none).
    ``all_columns`` names the estimators that get every label column (None: all); the others get the first."""
    dev = torch.device(device)
    x = x.to(dev, torch.float64)
    yd = torch.as_tensor(np.asarray(y).reshape(len(y), -1), dtype=torch.float64, device=dev)
    idx = torch.as_tensor(np.asarray(halves, dtype=np.int64), device=dev)  # [draws, h]; draws may be 0
    m, h = x.shape[0], idx.shape[1]
    flat = _flat_indices(idx, m) if idx.shape[0] else None
    x_dist = _Distances.of(x @ x.T, flat, h)
    sides = {p: _Side(cfg, x_dist, x.shape[1], yd if all_columns is None or p in all_columns else yd[:, :1],
                      idx, dtype) for p, cfg in configs.items()}
    n_layers = t.shape[0]
    out: dict[str, tuple[list[np.ndarray], ...]] = {p: ([], [], [], []) for p in configs}
    half_share = idx.shape[0] * idx.shape[1] ** 2 / max(m * m, 1)  # the draws' sub-matrices, in full kernels
    per_layer = int((6 + 2 * half_share) * m * m * torch.finfo(dtype).bits // 8)
    step = max(1, min(n_layers, chunk_bytes // max(per_layer, 1)))
    for start in range(0, n_layers, step):
        chunk = t[start:start + step].to(dev, dtype)
        dist = _Distances.of(chunk @ chunk.transpose(-1, -2), flat, h)
        for p, side in sides.items():
            for acc, value in zip(out[p], side.layers(dist, chunk.shape[-1])):
                acc.append(value.double().cpu().numpy())
    results = {}
    for p, (tx, ty, tx_h, ty_h) in out.items():
        results[p] = Estimates(np.concatenate(tx), np.concatenate(ty), np.concatenate(tx_h).T, np.concatenate(ty_h).T)
    return results
