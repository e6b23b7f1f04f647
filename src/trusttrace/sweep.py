"""The ``steer`` job: vectors from source checkpoints, swept over layer × α on a target model.

For each source checkpoint the vector is built from activations a ``trace`` stored (``trace`` runs first, into
``OUT/source``, reusing whatever is there). The target gets its own vector the same way, in ``OUT/target``
(the self-vector baseline); when source and target are the same single model, that is the source's vector. Every (source, layer, α) is evaluated on the dimension's benchmark plus perplexity; rows go to
``OUT/steering.csv`` (source_revision, layer, alpha, metric, value, …), the best α per source under a
perplexity budget to ``OUT/best.csv``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ._io import write_json_atomic, write_with
from .correlation import probe_vs_effect
from .data import DIMENSIONS
from .evaluate.judges import toxicity_judge, truth_judge
from .evaluate.suite import PERPLEXITY_SOURCES, EvalConfig, Steering, evaluate_suite
from .models import load_model
from .runner import TraceConfig, run_trace
from .steering import POSITIONS, SteeringVector, vector_from_run

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"toxic_ratio", "perplexity"}
# The metric the best α is chosen by, per dimension.
HEADLINE = {"reliability": "mc2", "toxicity": "toxic_ratio", "privacy": "accuracy", "fairness": "accuracy",
            "robustness": "accuracy"}


@dataclass(frozen=True)
class SteerConfig:
    """A steering sweep."""

    source: str  # model of the source checkpoints (hub id, local series, folder, built-in), or MODEL@REVISION
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
    judge: str = "offline"  # toxicity: offline | an HF classifier's name
    truth_judge: str = "offline"  # reliability: offline | TRUTH_MODEL[,INFO_MODEL]
    perplexity_source: str = "auto"  # auto | lambada | statements
    perplexity_file: str | None = None

    def __post_init__(self) -> None:
        model, revision = split_revision(self.source)
        if revision is not None:
            if self.revisions:
                raise ValueError(f"--source {self.source!r} names a revision and --revisions gives more; use one.")
            object.__setattr__(self, "source", model)
            object.__setattr__(self, "revisions", (revision,))
        if self.dimension not in DIMENSIONS:
            raise ValueError(f"dimension {self.dimension!r} is not one of {', '.join(DIMENSIONS)}.")
        if self.perplexity_source not in PERPLEXITY_SOURCES:
            raise ValueError(f"perplexity source {self.perplexity_source!r} is not one of "
                             f"{', '.join(PERPLEXITY_SOURCES)}; --perplexity-file takes your own text.")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions {self.positions!r} is not one of {', '.join(POSITIONS)}.")
        if not self.layers or not self.alphas:
            raise ValueError("Give at least one layer (--layers) and one strength (--alphas).")


def split_revision(ref: str) -> tuple[str, str | None]:
    """``MODEL@REVISION`` → (MODEL, REVISION); a local path that exists is never split."""
    if Path(ref).exists() or "@" not in ref:
        return ref, None
    model, _, revision = ref.rpartition("@")
    if not model or not revision or "/" in revision:
        raise ValueError(f"{ref!r} is neither an existing path nor MODEL@REVISION (e.g. LLM360/Amber@ckpt_179).")
    return model, revision


def _vectors(model: str, config: SteerConfig, out: Path, revisions: Sequence[str] | None,
             select: str | None) -> dict[str, SteeringVector]:
    """Trace ``model`` (probes only) for the dimension into ``out`` and build one vector per checkpoint."""
    result = run_trace(TraceConfig(model=model, out=str(out), revisions=tuple(revisions) if revisions else None,
                                   select=select, dimensions=(config.dimension,), limit=config.source_limit,
                                   data_dir=config.data_dir, dtype=config.dtype, device=config.device,
                                   analyses=("probe",)))
    names = list(dict.fromkeys(result.results.revision))
    return {name: vector_from_run(out, name, config.dimension, config.method) for name in names}  # type: ignore[arg-type]


def _check_config(out: Path, config: SteerConfig) -> None:
    """Record the sweep's settings; refuse to resume a folder made with others."""
    path = out / "steer_config.json"
    new = json.loads(json.dumps(asdict(config)))
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
        if diff:
            changes = "; ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{out} holds a steering sweep with other settings ({changes}). Resume with the same "
                             "settings, or pass a new --out.")
    write_json_atomic(path, new)


def _part(out: Path, name: str, layer: int, alpha: float, evaluate: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """One evaluation's rows, read back from ``out/parts`` when an earlier attempt finished it."""
    path = out / "parts" / f"{name.replace('/', '__')}__L{layer}__a{alpha:+g}.csv"
    if path.exists():
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    rows = evaluate().assign(source_revision=name, layer=layer, alpha=alpha)
    write_with(path, lambda tmp: rows.to_csv(tmp, index=False))
    return rows


def run_steer(config: SteerConfig, progress: Callable[[int, int, str], None] | None = None) -> pd.DataFrame:
    """Run the sweep; return (and write) the tidy rows.

    ``progress(done, total, what)`` is called after each evaluation (the unsteered one first). Each
    evaluation's rows are kept in ``OUT/parts``, so a rerun with the same settings resumes the sweep.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, config)
    sources = _vectors(config.source, config, out / "source", config.revisions, config.select)
    if config.target == config.source and len(sources) == 1:  # the source is the target: its vector is the self
        self_vector = next(iter(sources.values()))
    else:
        self_vector = next(iter(_vectors(config.target, config, out / "target", None, None).values()))
    target = load_model(config.target, dtype=config.dtype, device=config.device)
    eval_config = EvalConfig(dimensions=(config.dimension,), limit=config.limit, data_dir=config.data_dir,
                             perplexity_source=config.perplexity_source, perplexity_file=config.perplexity_file)
    judges = {"judge": toxicity_judge(config.judge, config.data_dir) if config.dimension == "toxicity" else None,
              "truth_judge": truth_judge(config.truth_judge) if config.dimension == "reliability" else None}
    runs = [("self", self_vector)] + list(sources.items())
    total, done = 1 + len(runs) * len(config.layers) * len(config.alphas), 1
    frames = [_part(out, "unsteered", -1, 0.0, lambda: evaluate_suite(target, eval_config, None, **judges))]
    if progress is not None:
        progress(done, total, "unsteered")
    for name, vector in runs:
        for layer in config.layers:
            cosine = vector.cosine(self_vector, layer)
            for alpha in config.alphas:
                steering = Steering(vector, layer, alpha, config.positions, config.allow_mismatch)  # type: ignore[arg-type]

                def evaluate(steering: Steering = steering, cosine: float = cosine) -> pd.DataFrame:
                    rows = evaluate_suite(target, eval_config, steering, **judges)
                    extra = pd.DataFrame([{"dimension": config.dimension, "metric": "cosine_to_self",
                                           "value": cosine, "n": self_vector.hidden_size,
                                           "spec": "cosine(source vector, target's own vector)"}])
                    return pd.concat([rows, extra], ignore_index=True)

                frames.append(_part(out, name, layer, alpha, evaluate))
                done += 1
                log.info("%s layer %d α %+g done", name, layer, alpha)
                if progress is not None:
                    progress(done, total, f"{name} layer {layer} α {alpha:+g}")
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
