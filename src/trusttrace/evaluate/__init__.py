"""The evaluation suite: batched generation and deterministic scorers (more benchmarks follow)."""

from .generation import GenerationConfig, generate
from .scoring import binary_choice

__all__ = ["GenerationConfig", "binary_choice", "generate"]
