"""The evaluation suite: versioned benchmark specs, judges, perplexity, and the ``evaluate`` job."""

from typing import Any

from ..core.renames import renamed
from .generation import GenerationConfig, generate
from .job import EvaluateConfig, EvaluateResult, run_evaluate
from .scoring import binary_choice
from .suite import Steering, SuiteConfig, evaluate_suite

__all__ = ["EvaluateConfig", "EvaluateResult", "GenerationConfig", "Steering", "SuiteConfig", "binary_choice",
           "evaluate_suite", "generate", "run_evaluate"]


def __getattr__(name: str) -> Any:
    """An old name of the package's (``EvalConfig``): its new object, with a warning."""
    return renamed(__name__, name, globals().__getitem__, __all__)
