"""What a probe's accuracy is compared with: controls that cannot be the concept, and the selectivity left.

- ``control_shuffled`` (``trusttrace.analysis.probes``): the same probe and folds on permuted training labels, what
  the probe's capacity alone reaches.
- ``control_lexical`` (here): a bag-of-words model of the statement text, no language model at all:
  TF-IDF of word unigrams and bigrams (fitted on the training rows of each fold) and the same logistic
  regression (sklearn's ``LogisticRegression()``), on the same folds. One value per dataset, repeated on
  every layer's row. Case is kept (sklearn lowercases by default): the model's tokenizer sees case, so the
  text alone must too; folded, the control would be blind to sst2's perturbations (random case flips) and
  read 0.50 where the cased one reads 0.69.
- ``control_random_init`` (``trusttrace.trace.job``): the probe on activations of the same architecture with
  freshly initialised weights (seeded, built from the checkpoint's config): what an untrained network and
  the tokenizer read.
- ``selectivity`` = ``accuracy`` − max(``control_lexical``, ``control_random_init``), per layer: what the
  layer encodes beyond the surface of the text and the shape of the network (with one of the two controls
  off, the other alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..core.names import CONTROLS
from .splits import Split

SELECTIVITY_OF = ("control_lexical", "control_random_init")


def check_controls(controls: Sequence[str]) -> None:
    CONTROLS.check_all(controls, "controls", hint="Or none.")


def lexical_accuracy(statements: Sequence[str], labels: np.ndarray, fold_sets: Sequence[Sequence[Split]]) -> float:
    """The bag-of-words baseline's mean test accuracy over the folds (of every fold seed)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    text = np.asarray(statements, dtype=object)
    labels = np.asarray(labels)
    accs = []
    for folds in fold_sets:
        for tr, te in folds:
            vectorizer = TfidfVectorizer(ngram_range=(1, 2), lowercase=False)
            features = vectorizer.fit_transform(text[tr])
            model = LogisticRegression(max_iter=1000).fit(features, labels[tr])
            accs.append(float(model.score(vectorizer.transform(text[te]), labels[te])))
    return float(np.mean(accs))


def with_selectivity(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (one dataset's per-layer metrics) with ``selectivity`` rows added where a control allows, and
    ``selectivity_ci_low``/``_ci_high`` where the accuracy has its interval.

    The interval combines the accuracy's 95 % Wilson interval with the stronger control's (Newcombe's hybrid
    score method for a difference): low = d − √((acc − acc_low)² + (ctrl_high − ctrl)²), and the mirror for
    high. The lexical control has no interval of its own here and counts as exact.
    """
    present = [m for m in SELECTIVITY_OF if (rows.metric == m).any()]
    acc = rows[rows.metric == "accuracy"]
    if not present or acc.empty:
        return rows
    wide = rows.pivot_table(index="layer", columns="metric", values="value")
    controls = wide[present]
    strongest, which = controls.max(axis=1), controls.idxmax(axis=1)
    layers = acc.layer.to_numpy()
    value = acc.value.to_numpy() - strongest.reindex(layers).to_numpy()
    frames = [rows, acc.assign(metric="selectivity", value=value)]
    if {"accuracy_ci_low", "accuracy_ci_high"} <= set(wide.columns):
        ctrl = strongest.reindex(layers).to_numpy()
        ctrl_low, ctrl_high = ctrl.copy(), ctrl.copy()
        if {"control_random_init_ci_low", "control_random_init_ci_high"} <= set(wide.columns):
            random = (which.reindex(layers) == "control_random_init").to_numpy()
            ctrl_low[random] = wide.control_random_init_ci_low.reindex(layers).to_numpy()[random]
            ctrl_high[random] = wide.control_random_init_ci_high.reindex(layers).to_numpy()[random]
        a = acc.value.to_numpy()
        a_low = wide.accuracy_ci_low.reindex(layers).to_numpy()
        a_high = wide.accuracy_ci_high.reindex(layers).to_numpy()
        low = value - np.sqrt((a - a_low) ** 2 + (ctrl_high - ctrl) ** 2)
        high = value + np.sqrt((a_high - a) ** 2 + (ctrl - ctrl_low) ** 2)
        frames += [acc.assign(metric="selectivity_ci_low", value=low),
                   acc.assign(metric="selectivity_ci_high", value=high)]
    return pd.concat(frames, ignore_index=True)
