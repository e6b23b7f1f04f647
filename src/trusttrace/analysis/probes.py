"""Linear probes for every layer at once, scored under a protocol, with an interval and a capacity control.

For every layer: ``accuracy`` (the mean over folds, and over seeds with ``seeds > 1``), ``accuracy_std``
(over folds), ``accuracy_ci_low``/``accuracy_ci_high`` (a 95 % Wilson interval of the out-of-fold
predictions, pooled over the folds: every row is predicted once, so n is the number of rows), the
``majority_baseline``, and ``control_shuffled``: the same probe on the same folds, trained on labels
permuted among the training rows (seeded), i.e. what the probe's capacity reaches with no signal.
``accuracy_seed_std`` (with ``seeds > 1``) is the spread of the accuracy over fold seeds.

The splits are the protocol's (``trusttrace.analysis.splits``); each fold is z-scored on its own training rows,
except ``paper-code``, which z-scores over all rows as the released code does (its test statistics leak
into the scaling; it is there for parity). The probe is sklearn's ``LogisticRegression()`` objective,
fitted for all layers (and the shuffled control) at once (``trusttrace.analysis.logreg``). The shuffled control's
probe shares its layer's rows with the real one, so each step reads them once for both; its products then
run through another BLAS kernel, so the real probe's accuracy may differ from a run without the control by
a rounding-level amount (at most 0.002 on SmolLM2's privacy layers), within the solver's tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.errors import OptionError, RunFolderError
from ..core.names import PROTOCOLS
from ..core.stats import wilson
from .logreg import BatchedLogisticRegression
from .splits import Split, splits


@dataclass(frozen=True)
class ProbeFitConfig:
    """How probes are trained and scored."""

    protocol: str = "group-cv"  # group-cv | cv | paper-code (see trusttrace.analysis.splits)
    folds: int = 5  # k for the k-fold protocols
    seed: int = 0  # shuffles the folds (and the shuffled control's labels)
    seeds: int = 1  # repeat the folds with seeds seed, seed + 1, …; the accuracy is their mean
    control_shuffled: bool = True  # also fit each probe on permuted training labels
    C: float = 1.0  # sklearn LogisticRegression default
    tol: float = 1e-4  # gradient max-norm at which a probe counts as converged (sklearn lbfgs gtol)
    max_iter: int = 1000
    # Activation bytes per batched fit. Each L-BFGS step streams the chunk's unconverged layers twice, so a
    # chunk that stays in the CPU's last-level cache runs several times faster than one that must come from
    # RAM, and more layers per step spread the step's fixed Python cost: 16 MB (4 of SmolLM2's layers at
    # 1561 rows) measured fastest on a 32 MB-L3 EPYC, against 1 and 10 layers per chunk.
    chunk_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        PROTOCOLS.check(self.protocol)
        if self.folds < 2:
            raise OptionError(f"folds={self.folds}: cross-validation needs at least 2 folds.")
        if self.seeds < 1:
            raise OptionError(f"seeds={self.seeds}: give 1 or more fold seeds.")

    def fold_sets(self, labels: np.ndarray, groups: np.ndarray | None) -> list[list[Split]]:
        """The splits of every fold seed (one set for ``paper-code``, whose split has no seed)."""
        seeds = range(self.seed, self.seed + (1 if self.protocol == "paper-code" else self.seeds))
        return [splits(labels, groups, self.protocol, self.folds, s) for s in seeds]


@dataclass(frozen=True, eq=False)
class FoldProbes:
    """The per-layer probes ``probe_layers`` fitted on the first fold's training rows (of the first fold seed),
    with the standardisation they were fitted under: the probes a trace keeps (``saved_probes``)."""

    weight: torch.Tensor  # [n_layers, d], on standardised features
    intercept: torch.Tensor  # [n_layers]
    mean: torch.Tensor  # [n_layers, d]
    std: torch.Tensor  # [n_layers, d], 1 where a feature was constant
    rows: np.ndarray  # the training rows


def _stats(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every feature's mean and population std over ``train``'s rows (std 0 → 1, as sklearn's StandardScaler)."""
    mean = train.mean(1, keepdim=True)
    std = train.std(1, unbiased=False, keepdim=True)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _zscore(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardise every feature with ``train``'s mean and std (``_stats``)."""
    mean, std = _stats(train)
    return [(t - mean) / std for t in (train, *others)]


def fit_score(X_tr: torch.Tensor, ys_tr: list[np.ndarray], X_te: torch.Tensor, y_te: np.ndarray,
              config: ProbeFitConfig, kept: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> np.ndarray:
    """Correct test predictions ``[len(ys_tr), n_layers, n_test]`` of one probe per layer and label vector.

    ``X_tr`` is ``[L, n, d]``; every label vector in ``ys_tr`` (the labels, and their permutation for the
    shuffled control) gets its own probe per layer, all fitted in one batch, chunked to bound memory; the
    probes of one layer share its rows, so each step reads them once for all label vectors. ``kept``, when
    given, receives each chunk's probes of the first label vector: (weight ``[c, d]``, intercept ``[c]``).
    """
    n_layers, n, d = X_tr.shape
    k = len(ys_tr)
    per_layer = 4 * n * d  # float32 training rows: read once per step for all k label vectors
    chunk = max(1, min(n_layers, config.chunk_bytes // per_layer))
    ytr = torch.stack([torch.as_tensor(y, dtype=torch.float64) for y in ys_tr])  # [k, n]
    yte = torch.as_tensor(y_te)
    correct = torch.empty((k, n_layers, len(y_te)), dtype=torch.bool)
    for lo in range(0, n_layers, chunk):
        hi = min(n_layers, lo + chunk)
        y = ytr.expand(hi - lo, k, n)  # [c, k, n]: problem (layer, j) at layer·k + j, sharing the layer's rows
        model = BatchedLogisticRegression(config.C, config.tol, config.max_iter).fit(X_tr[lo:hi], y)
        if kept is not None:
            kept.append((model.coef_.view(hi - lo, k, d)[:, 0].clone(),
                         model.intercept_.view(hi - lo, k)[:, 0].clone()))
        pred = model.predict(X_te[lo:hi])  # [c·k, n_test]
        correct[:, lo:hi] = (pred == yte).reshape(hi - lo, k, -1).transpose(0, 1)
    return correct.numpy()


def _majority(y_tr: np.ndarray, y_te: np.ndarray) -> float:
    """Accuracy on the test rows of always answering the training set's majority label."""
    majority = int(y_tr.mean() >= 0.5)
    return float((y_te == majority).mean())


def probe_layers(acts: torch.Tensor, labels: np.ndarray, config: ProbeFitConfig = ProbeFitConfig(),
                 groups: np.ndarray | None = None, keep: Callable[[FoldProbes], None] | None = None) -> pd.DataFrame:
    """Fit and score one probe per layer (see the module docstring for the metrics).

    Args:
        acts: ``[n_layers, n, d_model]`` activations (raw; standardised here).
        labels: ``[n]`` 0/1.
        config: the protocol, folds, seeds and controls.
        groups: ``[n]`` group ids, needed by ``group-cv`` (``TrustDataset.groups``).
        keep: called once with the first fold's probes (``FoldProbes``), which a trace saves: the table's own
            fit, not a second one.

    Returns:
        Tidy rows: layer, metric, value, n_train, n_test.
    """
    labels = np.asarray(labels).astype(np.int64)
    _check_acts(acts, labels)
    fold_sets = config.fold_sets(labels, groups)
    X = acts.to(torch.float64)
    n_layers = X.shape[0]
    accs, shuffled, bases, sizes = [], [], [], []
    pooled = np.zeros((len(fold_sets), n_layers))  # correct out-of-fold predictions per seed and layer
    for s_i, folds in enumerate(fold_sets):
        for f_i, (tr, te) in enumerate(folds):
            mean, std = _stats(X if config.protocol == "paper-code" else X[:, tr])  # paper-code: all rows' statistics
            Xtr, Xte = (X[:, tr] - mean) / std, (X[:, te] - mean) / std
            ys = [labels[tr]]
            if config.control_shuffled:
                ys.append(np.random.default_rng([config.seed + s_i, f_i]).permutation(labels[tr]))
            kept: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if keep is not None and s_i == f_i == 0 else None
            correct = fit_score(Xtr, ys, Xte, labels[te], config, kept)
            if keep is not None and kept is not None:
                keep(FoldProbes(torch.cat([w for w, _ in kept]), torch.cat([b for _, b in kept]), mean[:, 0], std[:, 0],
                                np.asarray(tr)))
            accs.append(correct[0].mean(-1))
            pooled[s_i] += correct[0].sum(-1)
            if config.control_shuffled:
                shuffled.append(correct[1].mean(-1))
            bases.append(_majority(labels[tr], labels[te]))
            sizes.append((len(tr), len(te)))
    acc = np.stack(accs)  # [seeds × folds, layers]
    n_tr, n_te = (int(np.rint(np.mean(s))) for s in zip(*sizes))
    n_scored = sum(len(te) for _, te in fold_sets[0])  # rows predicted once per seed
    rows = [(layer, "accuracy", acc[:, layer].mean()) for layer in range(n_layers)]
    if config.protocol != "paper-code":
        rows += [(layer, "accuracy_std", acc[:, layer].std(ddof=1)) for layer in range(n_layers)]
    for layer in range(n_layers):
        low, high = wilson(pooled[:, layer].mean(), n_scored)
        rows += [(layer, "accuracy_ci_low", low), (layer, "accuracy_ci_high", high)]
    if len(fold_sets) > 1:
        per_seed = acc.reshape(len(fold_sets), -1, n_layers).mean(1)
        rows += [(layer, "accuracy_seed_std", per_seed[:, layer].std(ddof=1)) for layer in range(n_layers)]
    rows += [(layer, "majority_baseline", float(np.mean(bases))) for layer in range(n_layers)]
    if config.control_shuffled:
        control = np.stack(shuffled).mean(0)
        rows += [(layer, "control_shuffled", control[layer]) for layer in range(n_layers)]
    frame = pd.DataFrame(rows, columns=["layer", "metric", "value"])
    return frame.assign(n_train=n_tr, n_test=n_te)


def training_rows(labels: np.ndarray, config: ProbeFitConfig, groups: np.ndarray | None = None) -> np.ndarray:
    """The rows ``training_split`` keeps: the first fold's training rows (of the first fold seed)."""
    return np.asarray(config.fold_sets(np.asarray(labels).astype(np.int64), groups)[0][0][0])


def training_split(acts: torch.Tensor, labels: np.ndarray, config: ProbeFitConfig,
                   groups: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """The probe's training rows, z-scored as the protocol does, for analyses that follow the probe (MI).

    ``paper-code``: the first 80 % of rows, z-scored with statistics over all rows (the released code).
    ``cv``, ``group-cv``: the training rows of the first fold of the first seed, z-scored on themselves.
    """
    labels = np.asarray(labels).astype(np.int64)
    _check_acts(acts, labels)
    train = training_rows(labels, config, groups)
    X = acts.to(torch.float64)
    if config.protocol == "paper-code":
        return _zscore(X)[0][:, train], labels[train]
    return _zscore(X[:, train])[0], labels[train]


def _check_acts(acts: torch.Tensor, labels: np.ndarray) -> None:
    if acts.ndim != 3:
        raise ValueError(f"acts must be [n_layers, n, d_model]; got shape {tuple(acts.shape)}.")
    if acts.shape[1] != len(labels):
        raise ValueError(f"{acts.shape[1]} activation rows but {len(labels)} labels; they must match.")



def transfer_layers(train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray,
                    config: ProbeFitConfig = ProbeFitConfig()) -> pd.DataFrame:
    """One probe per layer trained on all of one dataset and scored on all of another.

    Both are z-scored with the training set's statistics. Rows: ``transfer_accuracy`` with its 95 % Wilson
    interval (``transfer_accuracy_ci_low``/``_ci_high``) and the test set's ``transfer_majority`` (always
    answering the training majority label), per layer.
    """
    train_labels, test_labels = (np.asarray(y).astype(np.int64) for y in (train_labels, test_labels))
    _check_acts(train, train_labels)
    _check_acts(test, test_labels)
    if train.shape[0] != test.shape[0] or train.shape[2] != test.shape[2]:
        raise RunFolderError(f"Transfer needs activations of one model: [layers, n, d] {tuple(train.shape)} vs "
                             f"{tuple(test.shape)}.")
    Xtr, Xte = _zscore(train.to(torch.float64), test.to(torch.float64))
    correct = fit_score(Xtr, [train_labels], Xte, test_labels, config)[0]  # [layers, n_test]
    majority = _majority(train_labels, test_labels)
    rows = []
    for layer in range(train.shape[0]):
        low, high = wilson(float(correct[layer].sum()), len(test_labels))
        rows += [(layer, "transfer_accuracy", float(correct[layer].mean())), (layer, "transfer_accuracy_ci_low", low),
                 (layer, "transfer_accuracy_ci_high", high), (layer, "transfer_majority", majority)]
    return pd.DataFrame(rows, columns=["layer", "metric", "value"]).assign(n_train=len(train_labels),
                                                                           n_test=len(test_labels))
