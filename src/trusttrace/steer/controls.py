"""The steering sweep's controls, read from every evaluation's per-item outcomes.

A steered row alone says what a push did, not whether *this* vector did it. Beside every row the sweep puts:

- **Random directions** (``random_directions``): K seeded Gaussian directions per layer, each scaled to the
  median norm of the sweep's vectors at that layer, evaluated at every (layer, α ≠ 0) on the same items
  (sources ``random-0`` … ``random-K-1``). Their rows are pooled into ``random``: each metric's mean over
  the draws, and for a 0/1 metric the 95 % Wilson interval of the pooled outcomes (K·n items). At α = 0 the
  random control is the unsteered target itself (a push of size zero).
- **Against random** (``<metric>_effect_vs_random``, ``<metric>_p_vs_random``): a vector's rate minus the
  pooled random rate at its (layer, α), that is its change from unsteered minus random's, and Fisher's
  exact test of the two proportions (n items against K·n pooled outcomes).
- **Against unsteered, per item** (``<metric>_p_mcnemar``, ``<metric>_improved``/``_unchanged``/
  ``_worsened`` with Wilson intervals): McNemar's exact test on the same items, and the shares of items
  that moved the good way, did not move, or moved the wrong way (Tan et al. 2024's anti-steerable items).
  "Good" is lower for ``toxic_ratio`` and higher for every other 0/1 metric.
- **Monotone in α** (``<metric>_monotone``, on each α row of a source × layer): among the items whose
  outcome changes anywhere along the α sweep (unsteered standing in for α = 0), the share whose outcome
  changes in one direction only; its n counts those items.
- **What the table can detect** (``<metric>_detectable``, on the unsteered row): the smallest improvement
  of the unsteered rate a two-sided 5 % test on n items detects with 80 % power (``stats.detectable_change``);
  NaN, with the reason in ``spec``, where the target is at its bound. A binary-answer ``accuracy`` whose
  interval holds 0.5 is marked *at chance*: the target does not do the task, so no effect on it can be read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.stats import detectable_change, fisher_exact_p, mcnemar_exact, wilson
from ..runs.tables import LOWER_IS_BETTER, RANDOM, UNSTEERED, is_control, random_draw
from ..steering.vector import SteeringVector

CHANCE_METRICS = {"accuracy": 0.5}  # a 0/1 answer: an interval that holds 0.5 is at chance


def random_directions(vectors: Sequence[SteeringVector], layers: Sequence[int], k: int, seed: int
                      ) -> list[SteeringVector]:
    """K seeded random directions per layer, each of the median norm of ``vectors`` at that layer.

    Draw k uses ``torch.Generator().manual_seed(seed + k)``, so a draw never depends on K or on the layers
    swept; its metadata records the seed, the norm and the vectors' shape and vocabulary (so the target's
    fit is checked like any vector's).
    """
    reference = vectors[0]
    norms = {layer: float(np.median([float(v.at(layer).double().norm()) for v in vectors])) for layer in layers}
    draws = []
    for draw in range(k):
        generator = torch.Generator().manual_seed(seed + draw)
        directions = {}
        for layer in sorted(layers):
            direction = torch.randn(reference.hidden_size, generator=generator, dtype=torch.float64)
            directions[layer] = (direction / direction.norm() * norms[layer]).float()
        meta: dict[str, str] = {key: reference.meta[key] for key in ("n_layers", "vocab_sha256", "model")
                                if key in reference.meta}
        meta.update(method="random", revision=random_draw(draw), seed=str(seed + draw),
                    norm="median norm of the sweep's vectors at the layer: " +
                         ", ".join(f"layer {layer} {norms[layer]:.4g}" for layer in sorted(norms)))
        draws.append(SteeringVector(directions, meta))
    return draws


@dataclass(frozen=True)
class Evaluated:
    """One finished evaluation of a sweep: who, where, and its per-item 0/1 outcomes."""

    source: str
    layer: int
    alpha: float
    items: pd.DataFrame  # dimension, metric, item, outcome


def _outcomes(items: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """(dimension, metric) → outcomes ordered by item."""
    return {(str(dim), str(metric)): g.sort_values("item").outcome.to_numpy().astype(int)
            for (dim, metric), g in items.groupby(["dimension", "metric"], sort=False)}


def _row(e: Evaluated | tuple[str, int, float], dimension: str, metric: str, value: float, n: int, spec: str
         ) -> dict[str, object]:
    source, layer, alpha = (e.source, e.layer, e.alpha) if isinstance(e, Evaluated) else e
    return {"source_revision": source, "layer": layer, "alpha": alpha, "dimension": dimension, "metric": metric,
            "value": value, "n": n, "spec": spec}


def _share_rows(e: Evaluated, dim: str, metric: str, what: str, hits: int, n: int, spec: str
                ) -> list[dict[str, object]]:
    low, high = wilson(float(hits), n)
    return [_row(e, dim, f"{metric}_{what}", hits / n if n else float("nan"), n, spec),
            _row(e, dim, f"{metric}_{what}_ci_low", low, n, f"95 % Wilson interval of {metric}_{what}"),
            _row(e, dim, f"{metric}_{what}_ci_high", high, n, f"95 % Wilson interval of {metric}_{what}")]


def paired_rows(e: Evaluated, base: Mapping[tuple[str, str], np.ndarray]) -> list[dict[str, object]]:
    """McNemar's test and the improved / unchanged / worsened shares of one evaluation against unsteered."""
    rows: list[dict[str, object]] = []
    for (dim, metric), after in _outcomes(e.items).items():
        before = base.get((dim, metric))
        if before is None or len(before) != len(after):
            continue
        p, down, up = mcnemar_exact(before, after)
        n = len(after)
        rows.append(_row(e, dim, f"{metric}_p_mcnemar", p, n,
                         f"McNemar exact test against unsteered: {down} items 1→0, {up} items 0→1"))
        good, bad = (down, up) if metric in LOWER_IS_BETTER else (up, down)
        rows += _share_rows(e, dim, metric, "improved", good, n, f"share of items whose {metric} moved the good way")
        rows += _share_rows(e, dim, metric, "unchanged", n - good - bad, n,
                            f"share of items whose {metric} did not move")
        rows += _share_rows(e, dim, metric, "worsened", bad, n,
                            f"share of items whose {metric} moved the wrong way (anti-steerable)")
    return rows


def random_rows(draws: Sequence[Evaluated], tables: Sequence[pd.DataFrame]) -> list[dict[str, object]]:
    """The pooled ``random`` rows of one (layer, α) from its draws' rows and outcomes (see the module doc)."""
    first = draws[0]
    where = (RANDOM, first.layer, first.alpha)
    values = pd.concat(tables, ignore_index=True)
    values = values[~values.metric.str.endswith(("_ci_low", "_ci_high"))]
    rows = []
    for (dim, metric), g in values.groupby(["dimension", "metric"], sort=False):
        spread = f"; draws ranged {g.value.min():.4g}–{g.value.max():.4g}" if len(g) > 1 else ""
        rows.append(_row(where, str(dim), str(metric), float(g.value.mean()), int(g.n.iloc[0]),
                         f"mean over {len(g)} random directions{spread}"))
    pooled = _pooled(draws)
    for (dim, metric), outcomes in pooled.items():
        low, high = wilson(float(outcomes.sum()), len(outcomes))
        spec = f"95 % Wilson interval of the {len(draws)} draws' pooled outcomes"
        rows += [_row(where, dim, f"{metric}_ci_low", low, len(outcomes), spec),
                 _row(where, dim, f"{metric}_ci_high", high, len(outcomes), spec)]
    return rows


def _pooled(draws: Sequence[Evaluated]) -> dict[tuple[str, str], np.ndarray]:
    found: dict[tuple[str, str], list[np.ndarray]] = {}
    for draw in draws:
        for key, outcomes in _outcomes(draw.items).items():
            found.setdefault(key, []).append(outcomes)
    return {key: np.concatenate(parts) for key, parts in found.items()}


def versus_random_rows(e: Evaluated, pooled: Mapping[tuple[str, str], np.ndarray], k: int
                       ) -> list[dict[str, object]]:
    """A vector's rate minus the pooled random rate at its (layer, α), with Fisher's exact test."""
    rows: list[dict[str, object]] = []
    for (dim, metric), outcomes in _outcomes(e.items).items():
        control = pooled.get((dim, metric))
        if control is None or not len(control) or not len(outcomes):
            continue
        p = fisher_exact_p(int(outcomes.sum()), len(outcomes), int(control.sum()), len(control))
        against = (f"{k} random directions of the vectors' norm ({len(control)} pooled outcomes)" if e.alpha
                   else "the unsteered target (α = 0: a push of size zero)")
        rows += [_row(e, dim, f"{metric}_effect_vs_random", float(outcomes.mean() - control.mean()), len(outcomes),
                      f"{metric} minus its rate under {against}"),
                 _row(e, dim, f"{metric}_p_vs_random", p, len(outcomes),
                      f"Fisher's exact test against {against}")]
    return rows


def monotone_rows(evaluated: Sequence[Evaluated], base: Mapping[tuple[str, str], np.ndarray]
                  ) -> list[dict[str, object]]:
    """Per source × layer with two or more α: the share of moving items that move one way only."""
    rows: list[dict[str, object]] = []
    groups: dict[tuple[str, int], list[Evaluated]] = {}
    for e in evaluated:
        groups.setdefault((e.source, e.layer), []).append(e)
    for group in groups.values():
        sweep = {e.alpha: _outcomes(e.items) for e in group}
        sweep.setdefault(0.0, dict(base))
        if len(sweep) < 3:  # unsteered and one α: every change is trivially monotone
            continue
        alphas = sorted(sweep)
        for key in base:
            if not all(key in sweep[a] and len(sweep[a][key]) == len(base[key]) for a in alphas):
                continue
            path = np.stack([sweep[a][key] for a in alphas], axis=1)  # items × α
            steps = np.diff(path, axis=1)
            moving = (steps != 0).any(axis=1)
            one_way = ~((steps > 0).any(axis=1) & (steps < 0).any(axis=1))
            n, hits = int(moving.sum()), int((moving & one_way).sum())
            spec = (f"share of the {n} items whose {key[1]} changes along "
                    f"α ∈ {{{', '.join(f'{a:+g}' for a in alphas)}}} "
                    "that change one way only")
            for e in group:
                rows += _share_rows(e, key[0], key[1], "monotone", hits, n, spec)
    return rows


def detectable_rows(base: Evaluated) -> list[dict[str, object]]:
    """What the unsteered row's n can detect, per 0/1 metric (see the module doc)."""
    rows: list[dict[str, object]] = []
    for (dim, metric), outcomes in _outcomes(base.items).items():
        n, rate = len(outcomes), float(outcomes.mean()) if len(outcomes) else float("nan")
        better_is_up = metric not in LOWER_IS_BETTER
        change = detectable_change(rate, n, up=better_is_up)
        low, high = wilson(float(outcomes.sum()), n)
        chance = CHANCE_METRICS.get(metric)
        if chance is not None and low <= chance <= high:
            spec = (f"at chance: {metric} {rate:.3f} ({low:.3f}–{high:.3f}) holds {chance}, so the target does not do "
                    "this task and no steering effect on it can be read")
        elif np.isnan(change):
            spec = f"at its bound: {metric} {rate:.3f} on {n} items leaves no detectable improvement"
        else:
            spec = (f"smallest {'rise' if better_is_up else 'fall'} from {rate:.3f} a two-sided 5 % test on {n} items "
                    "detects with 80 % power")
        rows.append(_row(base, dim, f"{metric}_detectable", change, n, spec))
    return rows


def control_rows(evaluated: Sequence[Evaluated], tables: Mapping[tuple[str, int, float], pd.DataFrame],
                 k: int) -> pd.DataFrame:
    """Every control row of a sweep (module doc), from its finished evaluations and their rows (``tables``,
    keyed by source, layer, α). The unsteered evaluation must be among them."""
    base_eval = next(e for e in evaluated if e.source == UNSTEERED)
    base = _outcomes(base_eval.items)
    rows = detectable_rows(base_eval)
    draws: dict[tuple[int, float], list[Evaluated]] = {}
    for e in evaluated:
        if e.source != UNSTEERED:
            rows += paired_rows(e, base)
        if e.source.startswith(f"{RANDOM}-"):
            draws.setdefault((e.layer, e.alpha), []).append(e)
    for (layer, alpha), group in draws.items():
        rows += random_rows(group, [tables[(e.source, layer, alpha)] for e in group])
    vectors = [e for e in evaluated if not is_control(e.source) and e.layer >= 0]
    for e in vectors:
        pooled = base if e.alpha == 0 else (_pooled(draws[(e.layer, e.alpha)]) if (e.layer, e.alpha) in draws else None)
        if pooled is not None:
            rows += versus_random_rows(e, pooled, k)
    rows += monotone_rows(vectors, base)
    return pd.DataFrame(rows)
