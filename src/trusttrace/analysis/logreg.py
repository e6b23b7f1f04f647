"""Batched L2 logistic regression: one independent probe per batch element, all solved together.

The estimator minimises, for each batch element (one layer, one fold) independently, the objective of
scikit-learn's ``LogisticRegression()`` defaults (L2, C = 1, intercept not penalised):

    f(w, b) = (1/n) Σᵢ [log(1 + exp(zᵢ)) − yᵢ zᵢ] + ‖w‖² / (2 C n),   zᵢ = xᵢ·w + b,

which is sklearn's ``C Σ logloss + ½‖w‖²`` divided by ``C n`` (same minimiser). All layers are solved
together by one L-BFGS loop whose every step is a batched matmul; each problem's line search is the
Moré–Thuente search L-BFGS-B uses (``trusttrace.analysis.linesearch``), so probes land where sklearn's
``lbfgs`` solver lands.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from trusttrace.analysis.linesearch import MoreThuente

# θ [B, d + 1] → (objective [B], gradient [B, d + 1]), for a batch of independent problems
ValueAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# problem rows (None: all) → the ValueAndGrad of just those problems
Problems = Callable[[torch.Tensor | None], ValueAndGrad]



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
        """Fit ``X`` ``[B, n, d]`` to labels ``y``: ``[B, n]`` (0/1), or ``[B, k, n]`` for ``k`` label vectors
        per design matrix (``k`` problems that share ``X``: each matmul reads it once for all of them).
        ``weight`` (the shape of ``y``) masks padding rows. ``coef_`` is then ``[B·k, d]``, problem ``(b, j)``
        at ``b·k + j``."""
        X = X.to(self.data_dtype)
        y = (y if y.ndim == 3 else y[:, None, :]).to(self.dtype)  # [B, k, n]
        batch, k, _ = y.shape
        w8 = torch.ones_like(y) if weight is None else weight.reshape(y.shape).to(self.dtype)
        n = w8.sum(-1).reshape(-1)  # [B·k]
        lam = 1.0 / (self.C * n)  # [B·k]
        y, w8 = y.reshape(batch * k, -1), w8.reshape(batch * k, -1)

        def problems(rows: torch.Tensor | None) -> ValueAndGrad:
            """The objective of the problems ``rows`` (whole groups of ``k``; None: all of them)."""
            Xs, ys, ws, ns, lams = (X, y, w8, n, lam) if rows is None else (
                X[rows[::k] // k], y[rows], w8[rows], n[rows], lam[rows])

            def value_and_grad(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                w, b = theta[:, :-1], theta[:, -1]
                z = _scores(Xs, w, k).to(self.dtype) + b[:, None]  # [B·k, n]
                loss = ((torch.nn.functional.softplus(z) - ys * z) * ws).sum(-1) / ns + 0.5 * lams * (w * w).sum(-1)
                r = (torch.sigmoid(z) - ys) * ws / ns[:, None]  # [B·k, n]
                gw = _weighted_rows(Xs, r.to(Xs.dtype), k).to(self.dtype)
                return loss, torch.cat([gw + lams[:, None] * w, r.sum(-1, keepdim=True)], dim=-1)

            return value_and_grad

        theta = torch.zeros(batch * k, X.shape[2] + 1, dtype=self.dtype, device=X.device)
        theta, self.n_iter_, self.converged_ = _lbfgs(problems, theta, self.tol, self.max_iter, self.history, k)
        self.coef_, self.intercept_ = theta[:, :-1], theta[:, -1]
        return self

    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        """Scores ``[B·k, n]`` of ``X`` ``[B, n, d]``; positive means label 1."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("This BatchedLogisticRegression is not fitted yet; call fit(X, y) first.")
        X = X.to(self.dtype)
        return _scores(X, self.coef_.to(X.dtype), self.coef_.shape[0] // X.shape[0]) + self.intercept_[:, None]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Labels ``[B·k, n]`` (sklearn's rule: 1 where the score is > 0)."""
        return (self.decision_function(X) > 0).long()


def _scores(X: torch.Tensor, w: torch.Tensor, k: int) -> torch.Tensor:
    """``X[b] @ w[b·k + j]`` for every problem: ``[B·k, n]`` from ``X`` ``[B, n, d]`` and ``w`` ``[B·k, d]``."""
    batch, _, d = X.shape
    # wᵀ·Xᵀ rather than X·w: for a few columns, MKL's batched X·w runs several times slower than the row form
    return torch.bmm(w.to(X.dtype).reshape(batch, k, d), X.transpose(1, 2)).reshape(batch * k, -1)


def _weighted_rows(X: torch.Tensor, r: torch.Tensor, k: int) -> torch.Tensor:
    """``r[b·k + j] @ X[b]`` for every problem: ``[B·k, d]`` from ``r`` ``[B·k, n]`` (the gradient's matmul)."""
    return torch.bmm(r.reshape(X.shape[0], k, -1), X).reshape(X.shape[0] * k, -1)


def _lbfgs(problems: Problems, theta: torch.Tensor, tol: float, max_iter: int, m: int, group: int
           ) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Batched L-BFGS: the inverse-Hessian estimate of L-BFGS-B (unconstrained), per-problem line searches.

    Every problem keeps its own history and step; converged problems freeze, and a ``group`` of problems
    that share a design matrix leaves the batch once all of them have stopped, so the later iterations
    read only the layers still being fitted. The line search is the Moré–Thuente search scipy's L-BFGS-B
    uses, with its settings, so each probe follows nearly the same path as sklearn's ``lbfgs`` solver and
    stops by the same rule (gradient max-norm ≤ ``tol``).
    """
    rows = torch.arange(theta.shape[0], device=theta.device)
    fg = problems(None)
    f, g = fg(theta)
    theta_out, gmax_out = theta.clone(), g.abs().amax(-1)
    history = _History(m)
    active = gmax_out > tol
    it = 0
    for it in range(1, max_iter + 1):
        live = active.view(-1, group).any(-1).repeat_interleave(group)
        if not live.all():
            theta_out[rows[~live]], gmax_out[rows[~live]] = theta[~live], g[~live].abs().amax(-1)
            if not live.any():
                break
            rows, theta, f, g, active = rows[live], theta[live], f[live], g[live], active[live]
            history.keep(live)
            fg = problems(rows)
        d = -history.apply(g)
        slope = (g * d).sum(-1)
        # L-BFGS-B's first step is 1/‖d‖; after that the quasi-Newton step 1
        first = 1.0 / d.norm(dim=-1).clamp_min(1e-300) if not history else torch.ones_like(f)
        step, f_new, g_new = _wolfe_search(fg, theta, f, g, d, slope, first, active)
        s = step[:, None] * d
        history.add(s, g_new - g)
        theta, f, g = theta + s, f_new, g_new
        active = active & (g.abs().amax(-1) > tol) & (step > 0)
    theta_out[rows], gmax_out[rows] = theta, g.abs().amax(-1)
    return theta_out, it, gmax_out <= tol


class _History:
    """The last ``m`` steps ``s`` and gradient changes ``y`` of every problem, and the product of their
    L-BFGS inverse-Hessian estimate (H₀ = γI, γ = sᵀy / yᵀy of the latest pair) with a gradient.

    The product is the compact form of Byrd, Nocedal & Schnabel (1994),
    ``H·g = γg + S·R⁻ᵀ((D + γYᵀY)·u − γYᵀg) − γY·u`` with ``R·u = Sᵀg``, ``R`` the upper triangle of SᵀY and
    ``D`` its diagonal: the two-loop recursion's result in a dozen batched operations rather than four per
    pair, which is what an iteration costs when each problem is one layer. A pair whose sᵀy ≤ 1e-12 is kept
    as zeros with a unit diagonal, so it drops out as the two-loop recursion skips it.
    """

    def __init__(self, m: int) -> None:
        self.m = m
        self.S: list[torch.Tensor] = []
        self.Y: list[torch.Tensor] = []
        self.gamma: torch.Tensor | None = None

    def __bool__(self) -> bool:
        return bool(self.S)

    def add(self, s: torch.Tensor, y: torch.Tensor) -> None:
        sy, yy = (s * y).sum(-1), (y * y).sum(-1)
        self.gamma = torch.where((sy > 0) & (yy > 0), sy / yy.clamp_min(1e-300), torch.ones_like(sy))
        keep = (sy > 1e-12)[:, None]
        self.S.append(torch.where(keep, s, 0.0))
        self.Y.append(torch.where(keep, y, 0.0))
        if len(self.S) > self.m:
            self.S.pop(0), self.Y.pop(0)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the problems ``rows`` (a mask)."""
        self.S, self.Y = [s[rows] for s in self.S], [y[rows] for y in self.Y]
        self.gamma = None if self.gamma is None else self.gamma[rows]

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        if self.gamma is None or not self.S:
            return g.clone()
        S, Y, gamma = torch.stack(self.S, 1), torch.stack(self.Y, 1), self.gamma[:, None]  # [B, pairs, d]
        SY = torch.bmm(S, Y.transpose(1, 2))  # [B, pairs, pairs]: sᵢᵀyⱼ
        diag = SY.diagonal(dim1=1, dim2=2)
        R = SY.triu() + torch.diag_embed((diag == 0).to(SY.dtype))  # skipped pairs: a unit diagonal
        a, b = torch.bmm(S, g[:, :, None]), torch.bmm(Y, g[:, :, None])  # [B, pairs, 1]
        u = torch.linalg.solve_triangular(R, a, upper=True)
        inner = diag[:, :, None] * u + gamma[:, :, None] * (torch.bmm(Y, torch.bmm(Y.transpose(1, 2), u)) - b)
        top = torch.linalg.solve_triangular(R.transpose(1, 2), inner, upper=False)
        return gamma * g + torch.bmm(S.transpose(1, 2), top)[:, :, 0] - gamma * torch.bmm(Y.transpose(1, 2), u)[:, :, 0]


def _wolfe_search(fg: ValueAndGrad, theta: torch.Tensor, f: torch.Tensor, g: torch.Tensor, d: torch.Tensor,
                  slope: torch.Tensor, first: torch.Tensor, active: torch.Tensor, max_evals: int = 50
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-problem strong-Wolfe steps along ``d``; each round is one batched evaluation of ``fg``.

    Returns (step, f, g) at the accepted points; a problem whose search fails keeps step 0.
    """
    searches = {b: MoreThuente() for b in torch.nonzero(active).flatten().tolist()}
    trial = torch.where(active, first, torch.zeros_like(first)).tolist()
    for b, search in searches.items():
        trial[b] = search.start(float(f[b]), float(slope[b]), trial[b])
    searches = {b: search for b, search in searches.items() if search.status == "searching"}
    step, f_out, g_out = torch.zeros_like(f), f.clone(), g.clone()
    for _ in range(max_evals):
        if not searches:
            break
        t = torch.tensor(trial, dtype=f.dtype, device=f.device)
        f_try, g_try = fg(theta + t[:, None] * d)
        dg = (g_try * d).sum(-1).tolist()
        f_list = f_try.tolist()
        for b in list(searches):
            trial[b] = searches[b].step(trial[b], f_list[b], dg[b])
            if searches[b].status == "searching":
                continue  # wants another evaluation at the new trial step
            if searches[b].status == "converged":
                step[b], f_out[b], g_out[b] = t[b], f_try[b], g_try[b]
            del searches[b]
    return step, f_out, g_out
