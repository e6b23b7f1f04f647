"""HSIC estimates of I(T;X) and I(T;Y) for every layer: the paper code's estimator, exact and fast.

X is the layer-0 activations of a checkpoint, T the activations of layer l, Y the binary labels, all on the
same rows. Three estimators (m rows, H = I − 11ᵀ/m, Gaussian kernels):

``paper-code`` (the released ``hsic_normalized_cca``; the default, on the released figures' scale)::

    K_A = exp(−‖aᵢ − aⱼ‖² / (2σ²·d_A))       d_A = feature dimension of A (1 for labels), σ = 50
    R_A = K_A·H·(K_A·H + εm·I)⁻¹              ε = 1e-5
    I(A;B) = tr(R_A·R_B)

``hsic`` (the paper's Eq. 5, biased HSIC)::

    HSIC(A, B) = tr(K_A·H·K_B·H) / (m − 1)²,   K_A = exp(−‖aᵢ − aⱼ‖² / (2σ²))

``nhsic`` (normalised HSIC)::

    nHSIC(A, B) = HSIC(A, B) / √(HSIC(A, A)·HSIC(B, B))

``linear-cka`` (linear CKA, Kornblith et al. 2019: nHSIC with linear kernels, so no bandwidth at all)::

    CKA(A, B) = ‖A_cᵀ·B_c‖²_F / (‖A_cᵀ·A_c‖_F·‖B_cᵀ·B_c‖_F)      A_c, B_c: column-centred

The estimators take several label columns at once (``estimate_mi_columns``): the permutation null of
``trusttrace.analysis.mi_stats`` is one more column of labels, which costs a triangular solve's column (paper-code)
or a matrix-vector product (hsic, nhsic, linear-cka) per layer, not a new estimate.

How it is fast. Because H is a projection that commutes with S = H·K·H, one-sided centring gives the
same trace as two-sided: tr(R_A·R_B) = tr(R̃_A·R̃_B) with R̃ = S·(S + cI)⁻¹, c = εm, symmetric. So

    I(T;X) = Σᵢ wᵢ − c·‖L_T⁻¹·G_X‖²_F      (S_X = Q·diag(λ)·Qᵀ, wᵢ = λᵢ/(λᵢ + c), G_X = Q·diag(√w),
                                            L_T = Cholesky factor of S_T + cI)

X's side is factorised once per checkpoint; each layer costs one Cholesky factorisation and one
triangular solve, batched over layers. A binary label's centred kernel is rank one,
H·K_Y·H = 2(1 − k₀)·u·uᵀ with u = H·y and k₀ = exp(−1/(2σ²)), so I(T;Y) needs one more column in that
solve. The kernels are built with ``expm1`` (K − 1, whose constant part centring removes), which keeps the
small distances' precision that float32 ``exp`` loses. A consequence of the symmetric form: tr(R̃_T·R̃_Y)
is a trace of a product of two PSD matrices, so the estimator is never negative; negative values from the
released float32 code are round-off (benchmarks/mi.py measures that code against its own float64 run).
Unlike nHSIC, it is not maximal at T = X: tr(R̃_T·R̃_X) ≤ tr(R̃_X) but may exceed tr(R̃_X²) = I(X;X).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.alloc import keep_freed_memory
from ..core.errors import OptionError
from ..core.names import DEFAULT_MI_BOOTSTRAP, DEFAULT_MI_PERMUTATIONS, MI_CHECKS, MI_ESTIMATORS

ESTIMATORS = MI_ESTIMATORS
MIN_SAMPLES = 10
DEFAULT_BOOTSTRAP = DEFAULT_MI_BOOTSTRAP  # chosen from benchmarks/mi_stats.py (see the README)
DEFAULT_PERMUTATIONS = DEFAULT_MI_PERMUTATIONS


@dataclass(frozen=True)
class MIConfig:
    """How I(T;X) and I(T;Y) are estimated."""

    estimator: str = "paper-code"  # one of ESTIMATORS
    sigma: float | None = 50.0  # kernel width; None: median heuristic (hsic/nhsic only)
    eps: float = 1e-5  # paper-code regulariser, scaled by the number of rows
    max_samples: int | None = None  # above this many rows, estimate on random subsamples of this size
    n_subsamples: int = 5  # how many subsamples (their mean and std are reported)
    seed: int = 0  # draws the subsamples
    # dtype of the per-layer m×m work. None: float32 for paper-code (the expm1 kernel and the symmetric form
    # keep it within ~1e-6 of a float64 run), float64 for hsic/nhsic. X's factorisation is always float64.
    dtype: torch.dtype | None = None
    # paper-code: X directions whose weights sum to at most tail·Σw are dropped; that bounds the change of
    # I(T;X) by tail·Σw (each direction adds between 0 and its weight).
    tail: float = 1e-8
    device: str = "cpu"
    chunk_bytes: int = 64 << 20  # one batch of layers' m×m matrices; small batches stay in cache
    # What trusttrace.analysis.mi_stats adds to each estimate (mi_rows): half-sample draws for the 95 % intervals,
    # label permutations for I(T;Y)'s null, and the estimators every verdict is checked under.
    bootstrap: int = DEFAULT_BOOTSTRAP
    permutations: int = DEFAULT_PERMUTATIONS
    checks: tuple[str, ...] = MI_CHECKS

    def __post_init__(self) -> None:
        ESTIMATORS.check(self.estimator)
        MI_CHECKS.check_all(self.checks, hint="Or none.")
        if self.bootstrap == 1 or self.bootstrap < 0:
            raise OptionError(f"--mi-bootstrap {self.bootstrap}: an interval needs at least 2 half-sample draws; "
                              f"give 0 (no intervals) or 2 or more (default {DEFAULT_BOOTSTRAP}).")
        if 0 < self.permutations < 19 or self.permutations < 0:
            raise OptionError(f"--mi-permutations {self.permutations}: with K draws the smallest p-value is "
                              "1/(K+1), so fewer than 19 can never reach p < 0.05; give 0 (no null) or 19 or "
                              f"more (default {DEFAULT_PERMUTATIONS}).")
        if self.estimator == "paper-code" and self.sigma is None:
            raise OptionError("The paper-code estimator uses a fixed sigma (the released code's 50); the median "
                              "heuristic (--mi-sigma median) is for the hsic and nhsic estimators.")
        if self.max_samples is not None and self.max_samples < MIN_SAMPLES:
            raise OptionError(f"--mi-max-samples {self.max_samples}: MI needs subsamples of at least {MIN_SAMPLES} "
                              "rows; give 10 or more (e.g. 2000), or leave it out to use every row.")


def _check(x: torch.Tensor, t: torch.Tensor, y: np.ndarray, config: MIConfig) -> None:
    if t.ndim != 3 or x.ndim != 2:
        raise ValueError(f"Expected x [m, d] and t [layers, m, d]; got {tuple(x.shape)} and {tuple(t.shape)}.")
    m = x.shape[0]
    if t.shape[1] != m or len(y) != m:
        raise ValueError(f"Row counts differ: x has {m}, t has {t.shape[1]}, y has {len(y)}. They must match.")
    if y.ndim not in (1, 2):
        raise ValueError(f"Labels must be [m] or [m, columns]; got shape {y.shape}.")
    if m < MIN_SAMPLES:
        raise OptionError(f"{m} rows: mutual information needs at least {MIN_SAMPLES}. Use more statements.")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"Labels must be binary 0/1; found {sorted(values)}.")


def centred_gram(a: torch.Tensor, bandwidth: torch.Tensor | float) -> torch.Tensor:
    """H·(K − 11ᵀ)·H = H·K·H for the Gaussian kernel K = exp(−D/bandwidth); ``a`` is ``[..., m, d]``.

    Built in place: the m×m temporaries are the expensive part of a layer after the factorisation.
    """
    sq = (a * a).sum(-1)
    g = (sq[..., :, None] + sq[..., None, :]).sub_(a @ a.transpose(-1, -2), alpha=2.0)  # squared distances
    if isinstance(bandwidth, torch.Tensor):
        bandwidth = bandwidth[..., None, None]
    g.clamp_min_(0).div_(bandwidth).neg_().expm1_()  # K − 1: centring removes the 1, expm1 keeps the rest
    row, col = g.mean(-1, keepdim=True), g.mean(-2, keepdim=True)
    return g.sub_(row).sub_(col).add_(row.mean(-2, keepdim=True))


def median_sigma(a: torch.Tensor) -> torch.Tensor:
    """The median heuristic: σ = median pairwise distance between rows (per leading batch index)."""
    dist = torch.cdist(a, a)
    m = a.shape[-2]
    iu = torch.triu_indices(m, m, offset=1)
    pairs = dist[..., iu[0], iu[1]]
    k = pairs.shape[-1]
    # the usual median: the mean of the two middle values when the count is even
    med = (pairs.kthvalue((k + 1) // 2, -1).values + pairs.kthvalue(k // 2 + 1, -1).values) / 2
    return torch.where(med > 0, med, torch.ones_like(med))  # constant rows: any width gives the same zero


def _bandwidth(a: torch.Tensor, config: MIConfig) -> torch.Tensor | float:
    if config.sigma is None:  # the median heuristic (hsic, nhsic)
        return 2 * median_sigma(a) ** 2
    if config.estimator == "paper-code":
        return 2 * config.sigma**2 * a.shape[-1]
    return 2 * config.sigma**2


def _label_gram_factor(y: torch.Tensor, config: MIConfig) -> tuple[torch.Tensor, float]:
    """H·K_Y·H = scale·u·uᵀ with u = H·y for 0/1 labels (the label kernel takes two values); ``y`` is
    ``[m, k]`` label columns, ``u`` the ``[m, k]`` centred columns."""
    u = y - y.mean(0, keepdim=True)
    # Labels are 0/1 and one-dimensional (so the paper code's d_Y = 1); the median heuristic degenerates
    # on them, so σ_Y = 1 stands in when sigma is None.
    sigma = 1.0 if config.sigma is None else config.sigma
    k0 = math.exp(-1.0 / (2 * sigma**2))
    return u, 2 * (1 - k0)


def _layer_chunks(n_layers: int, m: int, config: MIConfig, dtype: torch.dtype) -> list[slice]:
    per_layer = 3 * m * m * torch.finfo(dtype).bits // 8  # gram, factor, temporaries
    step = max(1, min(n_layers, config.chunk_bytes // max(per_layer, 1)))
    return [slice(i, min(n_layers, i + step)) for i in range(0, n_layers, step)]


def x_factor(s_x: torch.Tensor, c: float, tail: float) -> tuple[float, torch.Tensor]:
    """Σw and G with R̃_X = G·Gᵀ from X's centred kernel (float64), dropping the lightest directions whose
    weights sum to at most ``tail``·Σw."""
    lam, q = torch.linalg.eigh(s_x)
    lam = lam.clamp_min(0)
    w = lam / (lam + c)
    order = torch.argsort(w, descending=True)
    tail_mass = torch.cumsum(w[order].flip(0), 0).flip(0)  # weight of each direction and all lighter ones
    keep = order[tail_mass > tail * w.sum()]
    return float(w[keep].sum()), q[:, keep] * w[keep].sqrt()


def _paper_code(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, config: MIConfig, dtype: torch.dtype
                ) -> tuple[np.ndarray, np.ndarray]:
    m, k = x.shape[0], y.shape[1]
    c = config.eps * m
    w_sum, g = x_factor(centred_gram(x, _bandwidth(x, config)), c, config.tail)
    u, scale_y = _label_gram_factor(y, config)
    uu = (u * u).sum(0)  # [k]; equal for permuted columns (same label counts)
    w_y = scale_y * uu / (scale_y * uu + c)
    rhs = torch.cat([g, u], dim=1).to(dtype)
    eye = c * torch.eye(m, dtype=dtype, device=x.device)
    tx, ty = np.zeros(t.shape[0]), np.zeros((t.shape[0], k))
    live = (uu > 0).cpu().numpy()  # labels all equal: Y carries nothing
    for sl in _layer_chunks(t.shape[0], m, config, dtype):
        s_t = centred_gram(t[sl].to(dtype), _bandwidth(t[sl], config)).add_(eye)
        chol = torch.linalg.cholesky(s_t)
        z = torch.linalg.solve_triangular(chol, rhs.expand(chol.shape[0], -1, -1), upper=False).double()
        tx[sl] = (w_sum - c * z[..., :-k].square().sum((-1, -2))).cpu().numpy()
        safe = uu.clamp_min(1e-300)
        ty[sl] = np.where(live, (w_y * (uu - c * z[..., -k:].square().sum(-2)) / safe).cpu().numpy(), 0.0)
    # Both are traces of products of PSD matrices, so ≥ 0; float32 round-off can dip a hair below.
    return np.maximum(tx, 0.0), np.maximum(ty, 0.0)


def _hsic(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, config: MIConfig, dtype: torch.dtype
          ) -> tuple[np.ndarray, np.ndarray]:
    m, k = x.shape[0], y.shape[1]
    norm = (m - 1) ** 2
    s_x = centred_gram(x.to(dtype), _bandwidth(x, config))
    u, scale_y = _label_gram_factor(y.to(dtype), config)
    uu = (u * u).sum(0)
    hsic_xx = float((s_x * s_x).sum()) / norm
    hsic_yy = scale_y**2 * uu**2 / norm  # [k]
    tx, ty = np.empty(t.shape[0]), np.empty((t.shape[0], k))
    for sl in _layer_chunks(t.shape[0], m, config, dtype):
        s_t = centred_gram(t[sl].to(dtype), _bandwidth(t[sl], config))
        hsic_tx = (s_t * s_x).sum((-1, -2)) / norm
        hsic_ty = scale_y * ((s_t @ u) * u).sum(-2) / norm  # [layers, k]
        if config.estimator == "nhsic":
            hsic_tt = (s_t * s_t).sum((-1, -2)) / norm
            hsic_tx = hsic_tx / (hsic_tt * hsic_xx).sqrt().clamp_min(1e-300)
            hsic_ty = hsic_ty / (hsic_tt[:, None] * hsic_yy[None]).sqrt().clamp_min(1e-300)
        tx[sl], ty[sl] = hsic_tx.double().cpu().numpy(), hsic_ty.double().cpu().numpy()
    return tx, ty


def _linear_cka(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, config: MIConfig, dtype: torch.dtype
                ) -> tuple[np.ndarray, np.ndarray]:
    """Linear CKA in feature space: d×d products, cheaper than m×m Gram matrices when d < m."""
    xc = (x - x.mean(0, keepdim=True)).to(dtype)
    xx = torch.linalg.matrix_norm(xc.T @ xc)
    u = (y - y.mean(0, keepdim=True)).to(dtype)
    uu = (u * u).sum(0)
    tx, ty = np.empty(t.shape[0]), np.empty((t.shape[0], y.shape[1]))
    for sl in _layer_chunks(t.shape[0], x.shape[0], config, dtype):
        tc = t[sl].to(dtype)
        tc = tc - tc.mean(-2, keepdim=True)
        tct = tc.transpose(-1, -2)
        tt = torch.linalg.matrix_norm(tct @ tc)  # [layers]
        cross = torch.linalg.matrix_norm(tct @ xc).square()
        tx[sl] = (cross / (tt * xx).clamp_min(1e-300)).double().cpu().numpy()
        ty[sl] = ((tct @ u).square().sum(-2) / (tt[:, None] * uu[None]).clamp_min(1e-300)).double().cpu().numpy()
    return tx, ty


def estimate_mi(x: torch.Tensor, t: torch.Tensor, y: np.ndarray, config: MIConfig = MIConfig()
                ) -> tuple[np.ndarray, np.ndarray]:
    """I(T;X) and I(T;Y) for each layer of ``t`` (``[layers, m, d]``) against ``x`` (``[m, d]``) and ``y``.

    Inputs are used as given (z-score them first to follow the released code). Constant inputs give 0.
    """
    tx, ty = estimate_mi_columns(x, t, np.asarray(y)[:, None], config)
    return tx, ty[:, 0]


def estimate_mi_columns(x: torch.Tensor, t: torch.Tensor, y: np.ndarray, config: MIConfig = MIConfig()
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``estimate_mi`` for several label columns at once (``y`` is ``[m, k]``): I(T;X) ``[layers]`` and
    I(T;Y) ``[layers, k]``, one column per label column (e.g. the labels, then permutations of them)."""
    y = np.asarray(y)
    _check(x, t, y, config)
    if config.device == "cpu":
        keep_freed_memory()
    dev = torch.device(config.device)
    dtype = config.dtype or (torch.float32 if config.estimator == "paper-code" else torch.float64)
    xd, yd = x.to(dev, torch.float64), torch.as_tensor(y.reshape(len(y), -1), dtype=torch.float64, device=dev)
    td = t.to(dev)
    if config.estimator == "paper-code":
        return _paper_code(xd, td, yd, config, dtype)
    if config.estimator == "linear-cka":
        return _linear_cka(xd, td, yd, config, dtype)
    return _hsic(xd, td, yd, config, dtype)
