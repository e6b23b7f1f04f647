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
import pandas as pd
import torch

from ._alloc import keep_freed_memory
from .errors import OptionError, UnknownNameError
from .names import MI_ESTIMATORS

ESTIMATORS = MI_ESTIMATORS
MIN_SAMPLES = 10


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

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise UnknownNameError(f"mi_estimator {self.estimator!r} is not one of {', '.join(ESTIMATORS)}.")
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
    """H·K_Y·H = scale·u·uᵀ with u = H·y for 0/1 labels (the label kernel takes two values)."""
    u = y - y.mean()
    # Labels are 0/1 and one-dimensional (so the paper code's d_Y = 1); the median heuristic degenerates
    # on them, so σ_Y = 1 stands in when sigma is None.
    sigma = 1.0 if config.sigma is None else config.sigma
    k0 = math.exp(-1.0 / (2 * sigma**2))
    return u, 2 * (1 - k0)


def _layer_chunks(n_layers: int, m: int, config: MIConfig, dtype: torch.dtype) -> list[slice]:
    per_layer = 3 * m * m * torch.finfo(dtype).bits // 8  # gram, factor, temporaries
    step = max(1, min(n_layers, config.chunk_bytes // max(per_layer, 1)))
    return [slice(i, min(n_layers, i + step)) for i in range(0, n_layers, step)]


def _x_factor(x: torch.Tensor, config: MIConfig, c: float) -> tuple[float, torch.Tensor]:
    """Σw and G with R̃_X = G·Gᵀ (float64), dropping the lightest directions within ``config.tail``."""
    lam, q = torch.linalg.eigh(centred_gram(x, _bandwidth(x, config)))
    lam = lam.clamp_min(0)
    w = lam / (lam + c)
    order = torch.argsort(w, descending=True)
    tail_mass = torch.cumsum(w[order].flip(0), 0).flip(0)  # weight of each direction and all lighter ones
    keep = order[tail_mass > config.tail * w.sum()]
    return float(w[keep].sum()), q[:, keep] * w[keep].sqrt()


def _paper_code(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, config: MIConfig, dtype: torch.dtype
                ) -> tuple[np.ndarray, np.ndarray]:
    m = x.shape[0]
    c = config.eps * m
    w_sum, g = _x_factor(x, config, c)
    u, scale_y = _label_gram_factor(y, config)
    uu = float(u @ u)
    w_y = scale_y * uu / (scale_y * uu + c)
    rhs = torch.cat([g, u[:, None]], dim=1).to(dtype)
    eye = c * torch.eye(m, dtype=dtype, device=x.device)
    tx, ty = np.zeros(t.shape[0]), np.zeros(t.shape[0])
    for sl in _layer_chunks(t.shape[0], m, config, dtype):
        s_t = centred_gram(t[sl].to(dtype), _bandwidth(t[sl], config)).add_(eye)
        chol = torch.linalg.cholesky(s_t)
        z = torch.linalg.solve_triangular(chol, rhs.expand(chol.shape[0], -1, -1), upper=False).double()
        tx[sl] = (w_sum - c * z[..., :-1].square().sum((-1, -2))).cpu().numpy()
        if uu > 0:  # labels all equal: Y carries nothing
            ty[sl] = (w_y * (uu - c * z[..., -1].square().sum(-1)) / uu).cpu().numpy()
    # Both are traces of products of PSD matrices, so ≥ 0; float32 round-off can dip a hair below.
    return np.maximum(tx, 0.0), np.maximum(ty, 0.0)


def _hsic(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, config: MIConfig, dtype: torch.dtype
          ) -> tuple[np.ndarray, np.ndarray]:
    m = x.shape[0]
    norm = (m - 1) ** 2
    s_x = centred_gram(x.to(dtype), _bandwidth(x, config))
    u, scale_y = _label_gram_factor(y.to(dtype), config)
    uu = float(u @ u)
    hsic_xx = float((s_x * s_x).sum()) / norm
    hsic_yy = scale_y**2 * uu**2 / norm
    tx, ty = np.empty(t.shape[0]), np.empty(t.shape[0])
    for sl in _layer_chunks(t.shape[0], m, config, dtype):
        s_t = centred_gram(t[sl].to(dtype), _bandwidth(t[sl], config))
        hsic_tx = (s_t * s_x).sum((-1, -2)) / norm
        hsic_ty = scale_y * torch.einsum("i,lij,j->l", u, s_t, u) / norm
        if config.estimator == "nhsic":
            hsic_tt = (s_t * s_t).sum((-1, -2)) / norm
            hsic_tx = hsic_tx / (hsic_tt * hsic_xx).sqrt().clamp_min(1e-300)
            hsic_ty = hsic_ty / (hsic_tt * hsic_yy).sqrt().clamp_min(1e-300)
        tx[sl], ty[sl] = hsic_tx.double().cpu().numpy(), hsic_ty.double().cpu().numpy()
    return tx, ty


def estimate_mi(x: torch.Tensor, t: torch.Tensor, y: np.ndarray, config: MIConfig = MIConfig()
                ) -> tuple[np.ndarray, np.ndarray]:
    """I(T;X) and I(T;Y) for each layer of ``t`` (``[layers, m, d]``) against ``x`` (``[m, d]``) and ``y``.

    Inputs are used as given (z-score them first to follow the released code). Constant inputs give 0.
    """
    y = np.asarray(y)
    _check(x, t, y, config)
    if config.device == "cpu":
        keep_freed_memory()
    dev = torch.device(config.device)
    dtype = config.dtype or (torch.float32 if config.estimator == "paper-code" else torch.float64)
    xd, yd = x.to(dev, torch.float64), torch.as_tensor(y, dtype=torch.float64, device=dev)
    td = t.to(dev)
    if config.estimator == "paper-code":
        return _paper_code(xd, td, yd, config, dtype)
    return _hsic(xd, td, yd, config, dtype)


def mi_rows(x: torch.Tensor, t: torch.Tensor, y: np.ndarray, config: MIConfig = MIConfig()) -> pd.DataFrame:
    """Tidy rows (layer, metric ``mi_tx``/``mi_ty`` [and ``*_std`` when subsampled], value, n_train).

    With ``max_samples`` below the row count, the estimates are the mean over ``n_subsamples`` seeded
    subsamples, and ``mi_tx_std``/``mi_ty_std`` report their spread.
    """
    m = x.shape[0]
    layers = np.arange(t.shape[0])
    if config.max_samples is None or m <= config.max_samples:
        tx, ty = estimate_mi(x, t, y, config)
        metrics = {"mi_tx": tx, "mi_ty": ty}
        n = m
    else:
        rng = np.random.default_rng(config.seed)
        runs = []
        for _ in range(config.n_subsamples):
            idx = np.sort(rng.choice(m, size=config.max_samples, replace=False))
            runs.append(estimate_mi(x[idx], t[:, idx], np.asarray(y)[idx], config))
        tx_all, ty_all = np.stack([r[0] for r in runs]), np.stack([r[1] for r in runs])
        metrics = {"mi_tx": tx_all.mean(0), "mi_ty": ty_all.mean(0),
                   "mi_tx_std": tx_all.std(0, ddof=1), "mi_ty_std": ty_all.std(0, ddof=1)}
        n = config.max_samples
    frames = [pd.DataFrame({"layer": layers, "metric": name, "value": vals}) for name, vals in metrics.items()]
    return pd.concat(frames, ignore_index=True).assign(n_train=n, n_test=0)
