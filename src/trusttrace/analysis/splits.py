"""Train/test splits for the probing protocols, shared by the probes, their controls and MI.

- ``group-cv`` (default): seeded stratified group k-fold (scikit-learn's ``StratifiedGroupKFold``): no group
  (a question, a context, a sentence and its perturbed copy; see ``trusttrace.data.groups``) has rows on both
  sides of a fold, and each fold keeps the label share as far as the groups allow.
- ``cv``: seeded stratified k-fold over rows; groups may straddle folds (it leaks where rows have twins).
- ``paper-code``: the released code's single split: the first 80 % of rows train, the last 20 % test.

Every control of a protocol uses the same splits as its probe.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..core.errors import DataFileError
from ..core.names import PROTOCOLS

Split = tuple[np.ndarray, np.ndarray]  # (train rows, test rows)
PAPER_TRAIN_SHARE = 0.8


def check(labels: np.ndarray, groups: np.ndarray | None, protocol: str, folds: int, what: str = "") -> None:
    """Refuse inputs the protocol cannot split, saying what to change (``what`` names the dataset)."""
    at = f"{what}: " if what else ""
    PROTOCOLS.check(protocol)
    if set(np.unique(labels)) - {0, 1}:
        raise DataFileError(f"{at}labels must be 0/1; found {sorted(set(np.unique(labels).tolist()))}.")
    counts = np.bincount(labels, minlength=2)
    need = folds if protocol != "paper-code" else 2
    if counts.min() < need:
        raise DataFileError(f"{at}each label needs at least {need} rows for protocol {protocol!r}; got {counts[0]} "
                         f"zeros and {counts[1]} ones. Use more statements (a larger --limit) or fewer --folds.")
    if protocol != "group-cv":
        return
    if groups is None:
        raise DataFileError(f"{at}protocol 'group-cv' needs a group id per row (groups=…; trusttrace.data.datasets "
                         "gives every dataset's), or choose protocol 'cv' for rows that have no twins.")
    if len(groups) != len(labels):
        raise DataFileError(f"{at}{len(groups)} group ids but {len(labels)} labels; they must match.")
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise DataFileError(f"{at}{n_groups} groups cannot make {folds} folds that keep groups apart. Use more "
                         "statements (a larger --limit), fewer --folds, or protocol 'cv' if the rows are independent.")


def splits(labels: np.ndarray, groups: np.ndarray | None, protocol: str, folds: int, seed: int) -> list[Split]:
    """The protocol's (train, test) row indices: k of them, or one for ``paper-code``."""
    labels = np.asarray(labels).astype(np.int64)
    check(labels, groups, protocol, folds)
    n = len(labels)
    if protocol == "paper-code":
        cut = int(n * PAPER_TRAIN_SHARE)
        return [(np.arange(cut), np.arange(cut, n))]
    if protocol == "cv":
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), labels))
    return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), labels, groups))
