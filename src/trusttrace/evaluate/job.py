"""The ``evaluate`` job: one model (optionally steered) on the suite, its table written and returned."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .._version import package_versions
from ..core.errors import OptionError
from ..core.files import write_json_atomic, write_with
from ..core.runlock import hold
from ..models.loading import LoadedModel, load_model, peek_model
from ..models.ref import ModelRef
from ..runs.layout import EvaluateLayout
from ..runs.outputs import check_output
from ..steering.vector import SteeringVector, check_compatible, check_fit
from .judges import judges_for
from .proxy import check_same_vocab, proxy_tuned
from .suite import Steering, SuiteConfig, evaluate_suite


@dataclass(frozen=True)
class EvaluateConfig:
    """A model, the suite's settings, an optional steering vector, and where the table goes."""

    model: str  # hub id, local folder, .gguf file, or a built-in name
    revision: str | None = None  # the hub revision (branch, tag or commit); None: the default branch
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    vector: str | None = None  # a steering vector (.safetensors) to apply
    layer: int | None = None  # the block whose output is steered
    alpha: float = 1.0  # steering strength (negative: away from label 1)
    positions: str = "last"  # last | all | generated
    allow_mismatch: bool = False
    judge: str = "offline"  # toxicity: offline | an HF classifier's name
    truth_judge: str = "offline"  # reliability: offline | TRUTH_MODEL[,INFO_MODEL]
    dtype: str = "auto"
    device: str = "auto"
    out: str | None = None  # folder for evaluate.csv; None: nothing written
    proxy_tuned: str | None = None  # proxy-tuning (App. G): the tuned model, MODEL or MODEL@REV
    proxy_base: str | None = None  # ... and the base it was tuned from; logits(model) + β·(tuned − base)
    beta: float = 1.0  # the offset's strength (the paper: 1)

    def __post_init__(self) -> None:
        if self.vector is not None and self.layer is None:
            raise OptionError("--vector needs --layer (the block whose output is steered), e.g. --layer 14.")
        if not math.isfinite(self.alpha):
            raise OptionError(f"--alpha {self.alpha}: give a finite strength, e.g. --alpha -1.5.")
        if (self.proxy_tuned is None) != (self.proxy_base is None):
            given, missing = (("--proxy-tuned", "--proxy-base") if self.proxy_base is None
                              else ("--proxy-base", "--proxy-tuned"))
            raise OptionError(f"{given} needs {missing}: proxy-tuning adds β·(tuned − base) to the model's logits, "
                              "so give both, e.g. --proxy-tuned LLM360/AmberChat --proxy-base LLM360/Amber@ckpt_359.")
        if not math.isfinite(self.beta):
            raise OptionError(f"--beta {self.beta}: give a finite strength for the proxy-tuning offset, e.g. --beta 1.")
        if self.proxy_tuned is not None and self.vector is not None:
            raise OptionError("--vector with --proxy-tuned: steering a proxy-tuned model is not supported (the vector "
                              "would move the checkpoint only). Give one or the other.")
        for ref, option in ((self.proxy_tuned, "--proxy-tuned"), (self.proxy_base, "--proxy-base")):
            if ref is not None:
                ModelRef.parse(ref, option=option)  # a malformed MODEL@REV is refused before anything loads

    @property
    def proxies(self) -> tuple[tuple[str, str | None], tuple[str, str | None]] | None:
        """(tuned, base) as (MODEL, REVISION) pairs, or None without proxy-tuning."""
        if self.proxy_tuned is None or self.proxy_base is None:
            return None
        return ModelRef.parse(self.proxy_tuned).pair, ModelRef.parse(self.proxy_base).pair


@dataclass
class EvaluateResult:
    """The suite's rows (dimension, metric, value, n, spec), and where they were written."""

    table: pd.DataFrame = field(repr=False)
    out: Path | None = None

    @property
    def outputs(self) -> dict[str, Path]:
        if self.out is None:
            return {}
        layout = EvaluateLayout(self.out)
        return {"evaluate.csv": layout.table, "evaluate.parquet": layout.parquet, "manifest.json": layout.manifest}


def run_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Load the model (and vector), run the suite; with ``out``, write ``evaluate.csv``/``.parquet`` and a
    ``manifest.json`` (the config, the model that was loaded, package versions, seeds) there.

    Example:
        >>> run_evaluate(EvaluateConfig("smollm2-135m-instruct", SuiteConfig(limit=100)))  # doctest: +SKIP
    """
    if config.out is None:
        return _evaluate(config)
    check_output(config.out)  # before the vector, the model or the judges load
    with hold(config.out, "evaluate"):  # one writer at a time
        return _evaluate(config)


def _evaluate(config: EvaluateConfig) -> EvaluateResult:
    """``run_evaluate`` once its folder (if any) is held."""
    steering = None
    if config.vector is not None and config.layer is not None:
        steering = Steering(SteeringVector.load(config.vector), config.layer, config.alpha, config.positions,
                            config.allow_mismatch)
        # the target's shape from its config: a vector that cannot fit is refused before the model loads
        shape = peek_model(config.model, config.revision, tokenizer=False)
        check_fit(steering.vector, config.model, shape.hidden_size or steering.vector.hidden_size, shape.n_layers,
                  None, [steering.layer], steering.allow_mismatch, option="--layer")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lm, proxied = _load(config)
    if steering is not None:  # a vector that cannot steer this model is refused before any evaluation
        check_compatible(steering.vector, lm, steering.layer, steering.allow_mismatch)
    judges = judges_for(config.suite.dimensions, config.judge, config.truth_judge, config.suite.data_dir)
    table = evaluate_suite(lm, config.suite, steering, judges)
    out = Path(config.out) if config.out is not None else None
    if out is not None:
        layout = EvaluateLayout(out)
        write_with(layout.table, lambda tmp: table.to_csv(tmp, index=False))
        write_with(layout.parquet, lambda tmp: table.to_parquet(tmp, index=False))
        manifest = _manifest(config, asdict(lm.info), started)
        if proxied:
            manifest["proxy"] = {"tuned": asdict(proxied[0].info), "base": asdict(proxied[1].info),
                                 "beta": config.beta}
        write_json_atomic(layout.manifest, manifest)
    return EvaluateResult(table, out)


def _load(config: EvaluateConfig) -> tuple[LoadedModel, tuple[LoadedModel, LoadedModel] | None]:
    """The model to evaluate, proxy-tuned when asked (then also the tuned and base models, for the manifest).

    The three tokenizers are compared before any weights load, so mismatched vocabularies cost seconds. A
    model named twice (the checkpoint as its own base) is loaded once and run with two caches.
    """
    proxies = config.proxies
    if proxies is None:
        return load_model(config.model, config.revision, config.dtype, config.device), None
    refs = {"checkpoint": (config.model, config.revision), "tuned": proxies[0], "base": proxies[1]}
    check_same_vocab([(f"{role} {name}" + (f"@{rev}" if rev else ""), peek_model(name, rev).tokenizer)
                      for role, (name, rev) in refs.items()])
    loaded: dict[tuple[str, str | None], LoadedModel] = {}
    for ref in refs.values():
        if ref not in loaded:
            loaded[ref] = load_model(ref[0], ref[1], config.dtype, config.device)
    ckpt, tuned, base = (loaded[ref] for ref in refs.values())
    return proxy_tuned(ckpt, tuned, base, config.beta), (tuned, base)


def _manifest(config: EvaluateConfig, model: dict[str, Any], started: str) -> dict[str, Any]:
    return {"config": asdict(config), "model": model, "versions": package_versions(),
            "seeds": {"binary_fallback": config.suite.seed},
            "started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
