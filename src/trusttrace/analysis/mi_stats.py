"""Intervals, a null and second estimators for every MI estimate: what a phase verdict needs before it is a finding.

``mi_rows`` gives, per layer, beside the chosen estimator's ``mi_tx`` and ``mi_ty``:

- ``mi_tx_ci_low``/``mi_tx_ci_high`` and ``mi_ty_ci_low``/``mi_ty_ci_high``: a 95 % interval from B seeded
  **half-samples** of the statements (``MIConfig.bootstrap``). Each draw keeps half of the rows, taken as
  whole groups (the probe's group-cv groups, so near-twins stay together) without replacement. The standard
  error is the draws' standard deviation: for half-samples the delete-d jackknife's factor r/d is 1 (Shao &
  Wu 1989), so no rescaling is needed. The interval is estimate ± t(0.975, B − 1)·se, clipped at 0. The
  draws share the estimate's kernels (``trusttrace.analysis.mi_engine``).
  Why half-samples and not the ordinary bootstrap:
  - resampling with replacement puts duplicate rows into the kernel matrices, which lowers their rank and
    biases every kernel estimator (``tests/analysis/test_mi_stats.py`` measures it);
  - a full-size draw costs a whole estimate, where a half-sample is a sub-matrix of the estimate's kernels
    and costs an eighth of its factorisation.
- ``mi_ty_null_q95`` and ``mi_ty_p``: a **permutation null** for I(T;Y) from K seeded relabellings
  (``MIConfig.permutations``). The permutation is restricted, so that it keeps what the data's groups tie
  together:
  - within each group, the labels are shuffled;
  - groups of the same size exchange their blocks of labels.
  
  So twins that share a label (sst2's case-perturbed copies) still share one, and each question keeps its
  count of true answers. p = (1 + #{null ≥ observed}) / (K + 1). Each relabelling is one more label
  column in the estimate (``mutual_info.estimate_mi_columns``), not a new estimate.
- the estimates and intervals (not the null) under each **check estimator** (``MIConfig.checks``), under
  its own prefix:
  - ``nhsic_*``: normalised HSIC at the median bandwidth;
  - ``cka_*``: linear CKA, which has no bandwidth at all.
  
  Saxe et al. (2018) showed that the information plane's "compression" can depend on the estimator and
  its bandwidth. A phase that holds under all three is not an artefact of σ = 50 (``trusttrace.analysis.phases``,
  column ``robust``).

With ``max_samples`` below the row count:
- each estimate is the mean over ``n_subsamples`` seeded subsamples (``*_std`` gives their spread);
- the null is that same mean under each relabelling of all the rows;
- the half-samples are drawn within each subsample, and the interval uses their mean standard error: that
  of one subsample's estimate, which is wider than the mean's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import t as student_t

from .mi_engine import Estimates, estimate_all
from .mutual_info import MIN_SAMPLES, MIConfig

PRIMARY = "mi"  # the prefix of the chosen estimator's metrics
PREFIXES = {"nhsic": "nhsic", "linear-cka": "cka"}  # check estimator -> metric prefix
_CHECK_SETTINGS: dict[str, dict[str, Any]] = {"nhsic": {"estimator": "nhsic", "sigma": None},
                                              "linear-cka": {"estimator": "linear-cka"}}
_STREAMS = {"permutations": 1, "halves": 2}  # independent seeded streams of one MI seed


def check_config(config: MIConfig, check: str) -> MIConfig:
    """The settings of a check estimator: the primary's rows, sampling and seed, its own kernel."""
    return replace(config, dtype=None, checks=(), **_CHECK_SETTINGS[check])


def prefixes(config: MIConfig) -> list[str]:
    """The metric prefixes ``mi_rows`` writes under ``config``: the primary's, then each check's."""
    return [PRIMARY, *(PREFIXES[c] for c in config.checks)]


def _group_members(groups: np.ndarray | None, m: int) -> list[np.ndarray]:
    """Row indices of each group, in order of first appearance; every row its own group without groups."""
    if groups is None:
        return [np.array([i]) for i in range(m)]
    _, first, inverse = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    cuts = np.cumsum(np.bincount(inverse))[:-1]
    members = np.split(order, cuts)
    return [members[g] for g in np.argsort(first, kind="stable")]


def restricted_permutations(labels: np.ndarray, groups: np.ndarray | None, k: int,
                            rng: np.random.Generator) -> np.ndarray:
    """``[m, k]``: k relabellings that shuffle labels within each group and swap blocks between groups of
    the same size (see the module docstring)."""
    labels = np.asarray(labels)
    out = np.empty((len(labels), k), dtype=labels.dtype)
    by_size: dict[int, list[np.ndarray]] = defaultdict(list)
    if groups is None:  # every row its own group: one block of singletons
        by_size[1] = list(np.arange(len(labels))[:, None])
    else:
        for members in _group_members(groups, len(labels)):
            by_size[len(members)].append(members)
    for size, groups_of_size in by_size.items():
        rows = np.stack(groups_of_size)  # [G, size] row indices
        g = len(rows)
        moved = labels[rows][np.argsort(rng.random((k, g)), axis=1)]  # [k, G, size]: blocks swapped
        within = np.argsort(rng.random((k, g, size)), axis=2)  # each block shuffled
        out[rows] = np.take_along_axis(moved, within, axis=2).transpose(1, 2, 0)
    return out


def half_samples(groups: np.ndarray | None, m: int, size: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """``[draws, size]`` sorted row indices: whole groups taken without replacement until ``size`` rows, the
    last group cut to fit (so every draw has the same size and the draws run as one batch)."""
    members = _group_members(groups, m)
    rows = np.concatenate(members)  # grouped, each group's rows in order
    group_of = np.repeat(np.arange(len(members)), [len(g) for g in members])
    out = np.empty((draws, size), dtype=np.int64)  # [0, size] when no draws are asked for
    rank = np.empty(len(members), dtype=np.int64)
    for b in range(draws):  # the groups in a random order, concatenated: a stable sort of the rows by rank
        rank[rng.permutation(len(members))] = np.arange(len(members))
        out[b] = np.sort(rows[np.argsort(rank[group_of], kind="stable")[:size]])
    return out


def _usable(y: np.ndarray, halves: np.ndarray) -> bool:
    """Every draw has enough rows and both labels."""
    return halves.shape[1] >= MIN_SAMPLES and all(len(np.unique(y[h])) == 2 for h in halves)


@lru_cache
def _t_quantile(dof: int) -> float:
    return float(student_t.ppf(0.975, dof))


def _interval(estimate: np.ndarray, se: np.ndarray, draws: int) -> tuple[np.ndarray, np.ndarray]:
    half = _t_quantile(draws - 1) * se
    return np.maximum(estimate - half, 0.0), estimate + half


def _metrics(prefix: str, found: list[Estimates], draws: int) -> dict[str, np.ndarray]:
    """One estimator's rows from its estimates on each row set (one, or each subsample)."""
    tx = np.mean([e.tx for e in found], 0)
    ty_cols = np.mean([e.ty for e in found], 0)
    ty = ty_cols[:, 0]
    metrics = {f"{prefix}_tx": tx, f"{prefix}_ty": ty}
    if len(found) > 1:
        metrics |= {f"{prefix}_tx_std": np.std([e.tx for e in found], 0, ddof=1),
                    f"{prefix}_ty_std": np.std([e.ty[:, 0] for e in found], 0, ddof=1)}
    if draws:  # the draws' spread is the standard error of an estimate on their row set (module docstring)
        for name, est, half in (("tx", tx, "tx_half"), ("ty", ty, "ty_half")):
            se = np.mean([getattr(e, half).std(0, ddof=1) for e in found], 0)
            low, high = _interval(est, se, draws)
            metrics |= {f"{prefix}_{name}_ci_low": low, f"{prefix}_{name}_ci_high": high}
    if ty_cols.shape[1] > 1:
        null = ty_cols[:, 1:]
        metrics[f"{prefix}_ty_null_q95"] = np.quantile(null, 0.95, axis=1)
        metrics[f"{prefix}_ty_p"] = (1 + (null >= ty[:, None]).sum(1)) / (null.shape[1] + 1)
    return metrics


DEFAULT_CONFIG = MIConfig()


def mi_rows(x: torch.Tensor, t: torch.Tensor, y: np.ndarray, config: MIConfig = DEFAULT_CONFIG,
            groups: np.ndarray | None = None) -> pd.DataFrame:
    """Tidy rows (layer, metric, value, n_train, n_test): the estimates, their intervals and null, under the
    chosen estimator (``mi_*``) and each check estimator (``nhsic_*``, ``cka_*``); see the module docstring.

    ``x`` is ``[m, d]`` (layer 0), ``t`` ``[layers, m, d]``, ``y`` the 0/1 labels and ``groups`` the rows' groups
    (the null and the half-samples keep them together; None: every row its own group).
    """
    y = np.asarray(y)
    m = len(y)
    seed = config.seed
    perms = restricted_permutations(y, groups, config.permutations,
                                    np.random.default_rng([seed, _STREAMS["permutations"]]))
    ycols = np.column_stack([y, perms])
    if config.max_samples is None or m <= config.max_samples:
        subsets = [np.arange(m)]
    else:
        rng = np.random.default_rng(seed)
        subsets = [np.sort(rng.choice(m, size=config.max_samples, replace=False)) for _ in range(config.n_subsamples)]
    configs = {PRIMARY: config, **{PREFIXES[c]: check_config(config, c) for c in config.checks}}
    dtype = config.dtype or (torch.float32 if config.estimator == "paper-code" else torch.float64)
    halves_rng = np.random.default_rng([seed, _STREAMS["halves"]])
    found: list[dict[str, Estimates]] = []
    draws = config.bootstrap
    for idx in subsets:
        halves = half_samples(None if groups is None else np.asarray(groups)[idx], len(idx), len(idx) // 2,
                              config.bootstrap, halves_rng)
        if draws and not _usable(y[idx], halves):  # too few rows, or one label only, in some draw: no intervals
            draws = 0
        whole = len(idx) == m  # every row: no copy of the activations
        found.append(estimate_all(x if whole else x[idx], t if whole else t[:, idx], ycols if whole else ycols[idx],
                                  configs, halves if draws else halves[:0], dtype, config.chunk_bytes, config.device,
                                  all_columns=(PRIMARY,)))
    metrics: dict[str, np.ndarray] = {}
    for prefix in configs:
        metrics |= _metrics(prefix, [f[prefix] for f in found], draws)
    layers = np.arange(t.shape[0])
    s = len(subsets[0])
    return pd.DataFrame({"layer": np.tile(layers, len(metrics)), "metric": np.repeat(list(metrics), len(layers)),
                         "value": np.concatenate(list(metrics.values())), "n_train": s, "n_test": 0})


def random_init_mi_rows(x: torch.Tensor, t: torch.Tensor, y: np.ndarray, config: MIConfig) -> pd.DataFrame:
    """``mi_tx_random_init``/``mi_ty_random_init`` per layer: the chosen estimator on a freshly initialised
    network's activations, the level an untrained network reaches (no interval: a reference line)."""
    plain = replace(config, bootstrap=0, permutations=0, checks=())
    rows = mi_rows(x, t, y, plain)
    rows = rows[rows.metric.isin([f"{PRIMARY}_tx", f"{PRIMARY}_ty"])]
    return rows.assign(metric=rows.metric + "_random_init")
