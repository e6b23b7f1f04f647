"""Batched probes against a loop of sklearn LogisticRegression() on identical activations.

Extracts the fairness statements through a real model (all layers), z-scores them and splits them as the
released code does (first 80 % train), then fits one probe per layer both ways in the same run.
Prints one JSON line: speedup_vs_sklearn, max_acc_diff and both timings.

    python benchmarks/probes.py --limit 1952
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
from _common import machine, paper_split, parser
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from trusttrace.analysis.probes import ProbeFitConfig, fit_score


def main() -> None:
    args = parser(__doc__, limit=1952).parse_args()
    X, y, cut = paper_split(args)
    Xtr, Xte = X[:, :cut], X[:, cut:]

    start = time.perf_counter()
    ours = fit_score(Xtr, [y[:cut]], Xte, y[cut:], ProbeFitConfig())[0].mean(-1)  # [layers]
    t_ours = time.perf_counter() - start

    start = time.perf_counter()
    theirs = np.empty(X.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the released code silences these too
        for layer in range(X.shape[0]):
            clf = LogisticRegression().fit(Xtr[layer].numpy(), y[:cut])
            theirs[layer] = clf.score(Xte[layer].numpy(), y[cut:])
    t_sklearn = time.perf_counter() - start

    print(json.dumps({
        "benchmark": "probes", "model": args.model, "dimension": args.dimension, "n": len(y),
        "layers": int(X.shape[0]), "d_model": int(X.shape[2]),
        "seconds_ours": round(t_ours, 3), "seconds_sklearn": round(t_sklearn, 3),
        "speedup_vs_sklearn": round(t_sklearn / t_ours, 2),
        "max_acc_diff": round(float(np.abs(ours - theirs).max()), 4),
        "best_layer_ours": int(ours.argmax()), "best_acc_ours": round(float(ours.max()), 4),
        "best_layer_sklearn": int(theirs.argmax()), "best_acc_sklearn": round(float(theirs.max()), 4),
        "acc_layer0": round(float(ours[0]), 4), **machine(args.device, args.dtype),
    }))


if __name__ == "__main__":
    main()
