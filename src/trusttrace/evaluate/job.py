"""The ``evaluate`` job: one model (optionally steered) on the suite, its table written and returned."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .._io import write_with
from ..layout import EvaluateLayout
from ..models import load_model
from ..steering import SteeringVector
from .judges import judges_for
from .suite import EvalConfig, Steering, evaluate_suite


@dataclass(frozen=True)
class EvaluateConfig:
    """A model, the suite's settings, an optional steering vector, and where the table goes."""

    model: str  # hub id, local folder, .gguf file, or a built-in name
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
            raise ValueError("--vector needs --layer (the block whose output is steered).")


@dataclass
class EvaluateResult:
    """The suite's rows (dimension, metric, value, n, spec), and where they were written."""

    table: pd.DataFrame = field(repr=False)
    out: Path | None = None

    @property
    def outputs(self) -> dict[str, Path]:
        return {} if self.out is None else {"evaluate.csv": EvaluateLayout(self.out).table}


def run_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Load the model (and vector), run the suite, write ``OUT/evaluate.csv`` when ``out`` is given.

    Example:
        >>> run_evaluate(EvaluateConfig("smollm2-135m-instruct", EvalConfig(limit=100)))  # doctest: +SKIP
    """
    steering = None
    if config.vector is not None and config.layer is not None:
        steering = Steering(SteeringVector.load(config.vector), config.layer, config.alpha, config.positions,
                            config.allow_mismatch)
    lm = load_model(config.model, dtype=config.dtype, device=config.device)
    judges = judges_for(config.suite.dimensions, config.judge, config.truth_judge, config.suite.data_dir)
    table = evaluate_suite(lm, config.suite, steering, judges)
    out = Path(config.out) if config.out is not None else None
    if out is not None:
        write_with(EvaluateLayout(out).table, lambda tmp: table.to_csv(tmp, index=False))
    return EvaluateResult(table, out)
