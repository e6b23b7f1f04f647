"""Linear probes for every layer at once: batched L2 logistic regression and the probing protocols.

The estimator minimises, for each batch element (one layer, one fold) independently, the objective of
scikit-learn's ``LogisticRegression()`` defaults (L2, C = 1, intercept not penalised):

    f(w, b) = (1/n) Σᵢ [log(1 + exp(zᵢ)) − yᵢ zᵢ] + ‖w‖² / (2 C n),   zᵢ = xᵢ·w + b,

which is sklearn's ``C Σ logloss + ½‖w‖²`` divided by ``C n`` (same minimiser). All layers are solved
together by one L-BFGS loop whose every step is a batched matmul; each problem's line search is the
Moré–Thuente search of scipy's L-BFGS-B, so probes land where sklearn's ``lbfgs`` solver lands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold

from .names import PROTOCOLS

# θ [B, d + 1] → (objective [B], gradient [B, d + 1]), for a batch of independent problems
ValueAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

try:  # the Moré–Thuente line search of scipy's L-BFGS-B, in its reverse-communication form
    from scipy.optimize._dcsrch import DCSRCH
except ImportError as err:  # pragma: no cover - scipy < 1.11 or a moved private module
    raise ImportError("trusttrace's probes need scipy>=1.11 (scipy.optimize._dcsrch); "
                      "`pip install -U scipy`.") from err



class BatchedLogisticRegression:
    """L2 logistic regression fitted for a batch of independent problems ``X[b], y[b]``.

    Args:
        C: inverse regularisation strength, as in sklearn.
        tol: stop when every problem's gradient max-norm falls below this.
        max_iter: L-BFGS iterations at most.
        history: L-BFGS memory.
        dtype: dtype of the parameters, losses and line search (float64 keeps it exact near the optimum).
        data_dtype: dtype ``X`` is held in for the matmuls; float32 halves the bytes each step streams.

    Attributes (after ``fit``):
        coef_: ``[B, d]``; intercept_: ``[B]``; n_iter_: iterations used; converged_: ``[B]`` bool.
    """

    def __init__(self, C: float = 1.0, tol: float = 1e-4, max_iter: int = 1000, history: int = 10,
                 dtype: torch.dtype = torch.float64, data_dtype: torch.dtype = torch.float32) -> None:
        if C <= 0:
            raise ValueError(f"C={C}: the inverse regularisation strength must be positive (sklearn default 1.0).")
        self.C, self.tol, self.max_iter, self.history = C, tol, max_iter, history
        self.dtype, self.data_dtype = dtype, data_dtype

    def fit(self, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> BatchedLogisticRegression:
        """Fit ``X`` ``[B, n, d]`` to labels ``y`` ``[B, n]`` (0/1); ``weight`` ``[B, n]`` masks padding rows."""
        X = X.to(self.data_dtype)
        y = y.to(self.dtype)
        w8 = torch.ones_like(y) if weight is None else weight.to(self.dtype)
        n = w8.sum(-1)  # [B]
        lam = 1.0 / (self.C * n)  # [B]

        def value_and_grad(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            w, b = theta[:, :-1], theta[:, -1]
            z = torch.bmm(X, w.to(X.dtype).unsqueeze(-1)).squeeze(-1).to(self.dtype) + b[:, None]  # [B, n]
            loss = ((torch.nn.functional.softplus(z) - y * z) * w8).sum(-1) / n + 0.5 * lam * (w * w).sum(-1)
            r = (torch.sigmoid(z) - y) * w8 / n[:, None]  # [B, n]
            gw = torch.bmm(r.to(X.dtype).unsqueeze(1), X).squeeze(1).to(self.dtype) + lam[:, None] * w
            return loss, torch.cat([gw, r.sum(-1, keepdim=True)], dim=-1)

        theta = torch.zeros(X.shape[0], X.shape[2] + 1, dtype=self.dtype, device=X.device)
        theta, self.n_iter_, self.converged_ = _lbfgs(value_and_grad, theta, self.tol, self.max_iter, self.history)
        self.coef_, self.intercept_ = theta[:, :-1], theta[:, -1]
        return self

    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n]``; positive means label 1."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("This BatchedLogisticRegression is not fitted yet; call fit(X, y) first.")
        X = X.to(self.dtype)
        return torch.bmm(X, self.coef_.to(X.dtype).unsqueeze(-1)).squeeze(-1) + self.intercept_[:, None]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Labels ``[B, n]`` (sklearn's rule: 1 where the score is > 0)."""
        return (self.decision_function(X) > 0).long()


def _lbfgs(fg: ValueAndGrad, theta: torch.Tensor, tol: float, max_iter: int, m: int
           ) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Batched L-BFGS: the two-loop recursion of L-BFGS-B (unconstrained), per-problem line searches.

    Every problem keeps its own history and step; converged problems freeze. The line search is the
    Moré–Thuente search scipy's L-BFGS-B uses, with its settings, so each probe follows nearly the same
    path as sklearn's ``lbfgs`` solver and stops by the same rule (gradient max-norm ≤ ``tol``).
    """
    f, g = fg(theta)
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    R: list[torch.Tensor] = []
    active = g.abs().amax(-1) > tol
    it = 0
    for it in range(1, max_iter + 1):
        if not active.any():
            break
        d = -_two_loop(g, S, Y, R)
        slope = (g * d).sum(-1)
        # L-BFGS-B's first step is 1/‖d‖; after that the quasi-Newton step 1
        first = 1.0 / d.norm(dim=-1).clamp_min(1e-300) if not S else torch.ones_like(f)
        step, f_new, g_new = _wolfe_search(fg, theta, f, g, d, slope, first, active)
        s = step[:, None] * d
        yv = g_new - g
        sy = (s * yv).sum(-1)
        S.append(s)
        Y.append(yv)
        R.append(torch.where(sy > 1e-12, 1.0 / sy.clamp_min(1e-300), torch.zeros_like(sy)))
        if len(S) > m:
            S.pop(0), Y.pop(0), R.pop(0)
        theta, f, g = theta + s, f_new, g_new
        active = active & (g.abs().amax(-1) > tol) & (step > 0)
    return theta, it, g.abs().amax(-1) <= tol


def _two_loop(g: torch.Tensor, S: list[torch.Tensor], Y: list[torch.Tensor], R: list[torch.Tensor]
              ) -> torch.Tensor:
    """H·g for the L-BFGS inverse-Hessian estimate of every problem, H₀ = (sᵀy / yᵀy)·I."""
    q = g.clone()
    alphas = []
    for s, yv, rho in zip(reversed(S), reversed(Y), reversed(R)):
        a = rho * (s * q).sum(-1)
        q -= a[:, None] * yv
        alphas.append(a)
    if S:
        sy, yy = (S[-1] * Y[-1]).sum(-1), (Y[-1] * Y[-1]).sum(-1)
        q *= torch.where((sy > 0) & (yy > 0), sy / yy.clamp_min(1e-300), torch.ones_like(sy))[:, None]
    for s, yv, rho, a in zip(S, Y, R, reversed(alphas)):
        q += s * (a - rho * (yv * q).sum(-1))[:, None]
    return q


def _wolfe_search(fg: ValueAndGrad, theta: torch.Tensor, f: torch.Tensor, g: torch.Tensor, d: torch.Tensor,
                  slope: torch.Tensor, first: torch.Tensor, active: torch.Tensor, max_evals: int = 50
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-problem strong-Wolfe steps along ``d``; each round is one batched evaluation of ``fg``.

    Returns (step, f, g) at the accepted points; a problem whose search fails keeps step 0.
    """
    searches = {b: DCSRCH(None, None, ftol=1e-3, gtol=0.9, xtol=0.1, stpmin=0.0, stpmax=1e10)
                for b in torch.nonzero(active).flatten().tolist()}
    trial = torch.where(active, first, torch.zeros_like(first)).tolist()
    task: dict[int, bytes] = {}
    for b, search in searches.items():
        trial[b], _, _, task[b] = search._iterate(trial[b], float(f[b]), float(slope[b]), b"START")
    step, f_out, g_out = torch.zeros_like(f), f.clone(), g.clone()
    for _ in range(max_evals):
        if not searches:
            break
        t = torch.tensor(trial, dtype=f.dtype, device=f.device)
        f_try, g_try = fg(theta + t[:, None] * d)
        dg = (g_try * d).sum(-1)
        for b in list(searches):
            trial[b], _, _, task[b] = searches[b]._iterate(trial[b], float(f_try[b]), float(dg[b]), task[b])
            if task[b][:2] == b"FG":
                continue  # wants another evaluation at the new trial step
            del searches[b]
            if task[b][:4] == b"CONV":
                step[b], f_out[b], g_out[b] = t[b], f_try[b], g_try[b]
    return step, f_out, g_out


# ---------------------------------------------------------------- protocols


@dataclass(frozen=True)
class ProbeConfig:
    """How probes are trained and scored."""

    protocol: str = "cv"  # one of PROTOCOLS: cv (seeded stratified k-fold, train-only z-scoring) | paper-code
    folds: int = 5  # k for the cv protocol
    seed: int = 0  # shuffles the cv folds
    C: float = 1.0  # sklearn LogisticRegression default
    tol: float = 1e-4  # gradient max-norm at which a probe counts as converged (sklearn lbfgs gtol)
    max_iter: int = 1000
    # Activation bytes per batched fit. Each L-BFGS step streams the chunk twice, so a chunk that stays in
    # the CPU's last-level cache (tens of MB) runs several times faster than one that must come from RAM.
    chunk_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}.")
        if self.folds < 2:
            raise ValueError(f"folds={self.folds}: cross-validation needs at least 2 folds.")


def _zscore(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardise every feature with ``train``'s mean and std (std 0 → 1, as sklearn's StandardScaler)."""
    mean = train.mean(1, keepdim=True)
    std = train.std(1, unbiased=False, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(t - mean) / std for t in (train, *others)]


def _fit_score(X_tr: torch.Tensor, y_tr: np.ndarray, X_te: torch.Tensor, y_te: np.ndarray,
               config: ProbeConfig) -> np.ndarray:
    """Test accuracy ``[n_layers]`` of probes fitted on ``X_tr`` ``[L, n, d]``, chunked to bound memory."""
    n_layers, n, d = X_tr.shape
    per_layer = 4 * n * d  # float32 training rows
    chunk = max(1, min(n_layers, config.chunk_bytes // per_layer))
    ytr = torch.as_tensor(y_tr, dtype=torch.float64)
    yte = torch.as_tensor(y_te)
    acc = np.empty(n_layers)
    for lo in range(0, n_layers, chunk):
        sl = slice(lo, min(n_layers, lo + chunk))
        tr, te = X_tr[sl], X_te[sl]
        model = BatchedLogisticRegression(config.C, config.tol, config.max_iter).fit(
            tr, ytr.expand(tr.shape[0], -1))
        acc[sl] = (model.predict(te) == yte).double().mean(-1).numpy()
    return acc


def _majority(y_tr: np.ndarray, y_te: np.ndarray) -> float:
    """Accuracy on the test rows of always answering the training set's majority label."""
    majority = int(y_tr.mean() >= 0.5)
    return float((y_te == majority).mean())


def probe_layers(acts: torch.Tensor, labels: np.ndarray, config: ProbeConfig = ProbeConfig()) -> pd.DataFrame:
    """Fit and score one probe per layer.

    Args:
        acts: ``[n_layers, n, d_model]`` activations (raw; standardised here).
        labels: ``[n]`` 0/1.
        config: ``protocol="cv"`` (default) scores seeded stratified k-fold CV with each fold z-scored on
            its own training rows; ``"paper-code"`` reproduces the released code: z-score over all rows,
            the first 80 % of rows train, the last 20 % test, no shuffle.

    Returns:
        Tidy rows: layer, metric (``accuracy``, ``accuracy_std`` for cv, ``majority_baseline``), value,
        n_train, n_test.
    """
    labels = np.asarray(labels).astype(np.int64)
    _check_inputs(acts, labels, config)
    X = acts.to(torch.float64)
    n_layers, n = X.shape[0], X.shape[1]
    if config.protocol == "paper-code":
        (Xz,) = _zscore(X)
        cut = int(n * 0.8)
        acc = _fit_score(Xz[:, :cut], labels[:cut], Xz[:, cut:], labels[cut:], config)
        base = _majority(labels[:cut], labels[cut:])
        rows = [(l, "accuracy", acc[l], cut, n - cut) for l in range(n_layers)]
        rows += [(l, "majority_baseline", base, cut, n - cut) for l in range(n_layers)]
    else:
        folds = StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
        accs, bases, sizes = [], [], []
        for tr, te in folds.split(np.zeros(n), labels):
            Xtr, Xte = _zscore(X[:, tr], X[:, te])
            accs.append(_fit_score(Xtr, labels[tr], Xte, labels[te], config))
            bases.append(_majority(labels[tr], labels[te]))
            sizes.append((len(tr), len(te)))
        acc_mat = np.stack(accs)  # [folds, layers]
        n_tr, n_te = (int(np.rint(np.mean(s))) for s in zip(*sizes))
        rows = [(l, "accuracy", acc_mat[:, l].mean(), n_tr, n_te) for l in range(n_layers)]
        rows += [(l, "accuracy_std", acc_mat[:, l].std(ddof=1), n_tr, n_te) for l in range(n_layers)]
        rows += [(l, "majority_baseline", float(np.mean(bases)), n_tr, n_te) for l in range(n_layers)]
    return pd.DataFrame(rows, columns=["layer", "metric", "value", "n_train", "n_test"])


def training_split(acts: torch.Tensor, labels: np.ndarray, config: ProbeConfig) -> tuple[torch.Tensor, np.ndarray]:
    """The probe's training rows, z-scored as the protocol does, for analyses that follow the probe (MI).

    ``paper-code``: the first 80 % of rows, z-scored with statistics over all rows (the released code).
    ``cv``: the training rows of the first seeded fold, z-scored on themselves.
    """
    labels = np.asarray(labels).astype(np.int64)
    _check_inputs(acts, labels, config)
    X = acts.to(torch.float64)
    if config.protocol == "paper-code":
        cut = int(X.shape[1] * 0.8)
        return _zscore(X)[0][:, :cut], labels[:cut]
    folds = StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
    train, _ = next(folds.split(np.zeros(len(labels)), labels))
    return _zscore(X[:, train])[0], labels[train]


def _check_inputs(acts: torch.Tensor, labels: np.ndarray, config: ProbeConfig) -> None:
    if acts.ndim != 3:
        raise ValueError(f"acts must be [n_layers, n, d_model]; got shape {tuple(acts.shape)}.")
    if acts.shape[1] != len(labels):
        raise ValueError(f"{acts.shape[1]} activation rows but {len(labels)} labels; they must match.")
    if set(np.unique(labels)) - {0, 1}:
        raise ValueError(f"labels must be 0/1; found {sorted(set(np.unique(labels).tolist()))}.")
    counts = np.bincount(labels, minlength=2)
    need = config.folds if config.protocol == "cv" else 2
    if counts.min() < need:
        raise ValueError(
            f"Each label needs at least {need} rows for protocol {config.protocol!r}; got {counts[0]} zeros and "
            f"{counts[1]} ones. Use more statements (a larger --limit) or fewer --folds."
        )
