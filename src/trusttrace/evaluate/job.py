"""The ``evaluate`` job: one model (optionally steered) on the suite, its table written and returned."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import write_json_atomic, write_with
from .._version import package_versions
from ..errors import OptionError
from ..layout import EvaluateLayout
from ..models import load_model, peek_model
from ..outputs import check_output
from ..steering import SteeringVector, check_compatible, check_fit
from .judges import judges_for
from .suite import EvalConfig, Steering, evaluate_suite


@dataclass(frozen=True)
class EvaluateConfig:
    """A model, the suite's settings, an optional steering vector, and where the table goes."""

    model: str  # hub id, local folder, .gguf file, or a built-in name
    revision: str | None = None  # the hub revision (branch, tag or commit); None: the default branch
    suite: EvalConfig = field(default_factory=EvalConfig)
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

    def __post_init__(self) -> None:
        if self.vector is not None and self.layer is None:
            raise OptionError("--vector needs --layer (the block whose output is steered), e.g. --layer 14.")
        if not math.isfinite(self.alpha):
            raise OptionError(f"--alpha {self.alpha}: give a finite strength, e.g. --alpha -1.5.")


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
        >>> run_evaluate(EvaluateConfig("smollm2-135m-instruct", EvalConfig(limit=100)))  # doctest: +SKIP
    """
    if config.out is not None:
        check_output(config.out)  # before the vector, the model or the judges load
    steering = None
    if config.vector is not None and config.layer is not None:
        steering = Steering(SteeringVector.load(config.vector), config.layer, config.alpha, config.positions,
                            config.allow_mismatch)
        # the target's shape from its config: a vector that cannot fit is refused before the model loads
        shape = peek_model(config.model, config.revision, tokenizer=False)
        check_fit(steering.vector, config.model, shape.hidden_size or steering.vector.hidden_size, shape.n_layers,
                  None, [steering.layer], steering.allow_mismatch, option="--layer")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lm = load_model(config.model, revision=config.revision, dtype=config.dtype, device=config.device)
    if steering is not None:  # a vector that cannot steer this model is refused before any evaluation
        check_compatible(steering.vector, lm, steering.layer, steering.allow_mismatch)
    judges = judges_for(config.suite.dimensions, config.judge, config.truth_judge, config.suite.data_dir)
    table = evaluate_suite(lm, config.suite, steering, judges)
    out = Path(config.out) if config.out is not None else None
    if out is not None:
        layout = EvaluateLayout(out)
        write_with(layout.table, lambda tmp: table.to_csv(tmp, index=False))
        write_with(layout.parquet, lambda tmp: table.to_parquet(tmp, index=False))
        write_json_atomic(layout.manifest, _manifest(config, asdict(lm.info), started))
    return EvaluateResult(table, out)


def _manifest(config: EvaluateConfig, model: dict[str, Any], started: str) -> dict[str, Any]:
    return {"config": asdict(config), "model": model, "versions": package_versions(),
            "seeds": {"binary_fallback": config.suite.seed},
            "started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
