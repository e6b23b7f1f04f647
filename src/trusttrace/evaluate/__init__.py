"""The evaluation suite: versioned benchmark specs, judges, perplexity, and the ``evaluate`` job."""

from .generation import GenerationConfig, generate
from .job import EvaluateConfig, EvaluateResult, run_evaluate
from .scoring import binary_choice
from .suite import EvalConfig, Steering, evaluate_suite

__all__ = ["EvalConfig", "EvaluateConfig", "EvaluateResult", "GenerationConfig", "Steering", "binary_choice",
           "evaluate_suite", "generate", "run_evaluate"]
