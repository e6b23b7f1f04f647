"""The ``steer`` job: vectors from source checkpoints, swept over layer × α on a target model.

For each source checkpoint the vector is built from activations a ``trace`` stored (``trace`` runs first, into
``OUT/source``, reusing whatever is there). The target gets its own vector the same way, in ``OUT/target``
(the self-vector baseline); when source and target are the same single model, that is the source's vector. Every (source, layer, α) is evaluated on the dimension's benchmark plus perplexity; rows go to
``OUT/steering.csv`` (source_revision, layer, alpha, metric, value, …), the best α per source under a
perplexity budget to ``OUT/best.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ._io import write_json_atomic, write_with
from .correlation import probe_vs_effect
from .data import DIMENSIONS
from .evaluate.judges import EmbeddingJudge
from .evaluate.suite import EvalConfig, Steering, evaluate_suite
from .models import load_model
from .runner import TraceConfig, run_trace
from .steering import SteeringVector, vector_from_run

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"toxic_ratio", "perplexity"}
# The metric the best α is chosen by, per dimension.
HEADLINE = {"reliability": "mc2", "toxicity": "toxic_ratio", "privacy": "accuracy", "fairness": "accuracy",
            "robustness": "accuracy"}


@dataclass(frozen=True)
class SteerConfig:
    """A steering sweep."""

    source: str  # model of the source checkpoints (hub id, local series, folder, built-in)
    target: str  # the model that is steered
    dimension: str
    out: str
    revisions: tuple[str, ...] | None = None  # source revisions (else the series, narrowed by select)
    select: str | None = None
    layers: tuple[int, ...] = (14,)
    alphas: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)
    positions: str = "last"
    method: str = "paper-code"
    limit: int | None = None  # evaluation items at most
    source_limit: int | None = None  # statements per dataset used to build the vectors
    ppl_budget: float = 1.33  # best α only among results with perplexity ≤ budget × unsteered
    data_dir: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    allow_mismatch: bool = False

    def __post_init__(self) -> None:
        if self.dimension not in DIMENSIONS:
            raise ValueError(f"dimension {self.dimension!r} is not one of {', '.join(DIMENSIONS)}.")
        if not self.layers or not self.alphas:
            raise ValueError("Give at least one layer (--layers) and one strength (--alphas).")


def _vectors(model: str, config: SteerConfig, out: Path, revisions: Sequence[str] | None,
             select: str | None) -> dict[str, SteeringVector]:
    """Trace ``model`` (probes only) for the dimension into ``out`` and build one vector per checkpoint."""
    result = run_trace(TraceConfig(model=model, out=str(out), revisions=tuple(revisions) if revisions else None,
                                   select=select, dimensions=(config.dimension,), limit=config.source_limit,
                                   data_dir=config.data_dir, dtype=config.dtype, device=config.device,
                                   analyses=("probe",)))
    names = list(dict.fromkeys(result.results.revision))
    return {name: vector_from_run(out, name, config.dimension, config.method) for name in names}  # type: ignore[arg-type]


def run_steer(config: SteerConfig) -> pd.DataFrame:
    """Run the sweep; return (and write) the tidy rows."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "steer_config.json", asdict(config))
    sources = _vectors(config.source, config, out / "source", config.revisions, config.select)
    if config.target == config.source and len(sources) == 1:  # the source is the target: its vector is the self
        self_vector = next(iter(sources.values()))
    else:
        self_vector = next(iter(_vectors(config.target, config, out / "target", None, None).values()))
    target = load_model(config.target, dtype=config.dtype, device=config.device)
    eval_config = EvalConfig(dimensions=(config.dimension,), limit=config.limit, data_dir=config.data_dir)
    judge = EmbeddingJudge.train(config.data_dir) if config.dimension == "toxicity" else None
    frames = [evaluate_suite(target, eval_config, None, judge).assign(source_revision="unsteered", layer=-1,
                                                                       alpha=0.0)]
    runs = [("self", self_vector)] + list(sources.items())
    for name, vector in runs:
        for layer in config.layers:
            cosine = vector.cosine(self_vector, layer)
            for alpha in config.alphas:
                steering = Steering(vector, layer, alpha, config.positions, config.allow_mismatch)  # type: ignore[arg-type]
                rows = evaluate_suite(target, eval_config, steering, judge)
                extra = pd.DataFrame([{"dimension": config.dimension, "metric": "cosine_to_self", "value": cosine,
                                       "n": vector.hidden_size, "spec": "cosine(source vector, target's own vector)"}])
                frames.append(pd.concat([rows, extra]).assign(source_revision=name, layer=layer, alpha=alpha))
                log.info("%s layer %d α %+g done", name, layer, alpha)
    table = pd.concat(frames, ignore_index=True)[["source_revision", "layer", "alpha", "dimension", "metric",
                                                  "value", "n", "spec"]]
    write_with(out / "steering.csv", lambda tmp: table.to_csv(tmp, index=False))
    best = best_alphas(table, config.dimension, config.ppl_budget)
    write_with(out / "best.csv", lambda tmp: best.to_csv(tmp, index=False))
    if len(sources) >= 3:  # the paper's Fig. 5: probe accuracy at the layer against the steering effect
        probes = pd.read_csv(out / "source" / "results.csv")
        corr = probe_vs_effect(probes, table, config.dimension, HEADLINE[config.dimension])
        write_with(out / "correlation.csv", lambda tmp: corr.to_csv(tmp, index=False))
    return table


def best_alphas(table: pd.DataFrame, dimension: str, ppl_budget: float) -> pd.DataFrame:
    """Per source: the (layer, α) with the best headline metric among results within the perplexity budget."""
    metric = HEADLINE[dimension]
    wide = table.pivot_table(index=["source_revision", "layer", "alpha"], columns="metric", values="value"
                             ).reset_index()
    base = wide[wide.source_revision == "unsteered"].iloc[0]
    limit = ppl_budget * base["perplexity"]
    rows = [{"source_revision": "unsteered", "layer": -1, "alpha": 0.0, metric: base[metric],
             "perplexity": base["perplexity"], "within_budget": True}]
    for source, g in wide[wide.source_revision != "unsteered"].groupby("source_revision", sort=False):
        ok = g[g.perplexity <= limit]
        if ok.empty:
            rows.append({"source_revision": source, "layer": None, "alpha": None, metric: None, "perplexity": None,
                         "within_budget": False})
            continue
        pick = ok.loc[ok[metric].idxmin() if metric in LOWER_IS_BETTER else ok[metric].idxmax()]
        rows.append({"source_revision": source, "layer": int(pick.layer), "alpha": float(pick.alpha),
                     metric: float(pick[metric]), "perplexity": float(pick.perplexity), "within_budget": True})
    return pd.DataFrame(rows)
