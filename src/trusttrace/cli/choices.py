"""The CLI's closed choices as enums: typer lists them in ``--help``, checks them while parsing (a typo is
a usage error before anything loads) and offers them to shell completion. Each mirrors a tuple in
``trusttrace.core.names``, which the stages validate against (tests/core/test_names.py keeps the two equal)."""

from __future__ import annotations

import re
from enum import Enum

import typer


class Protocol(str, Enum):
    group_cv = "group-cv"
    cv = "cv"
    paper_code = "paper-code"


class MiEstimator(str, Enum):
    paper_code = "paper-code"
    hsic = "hsic"
    nhsic = "nhsic"
    linear_cka = "linear-cka"


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class VectorMethod(str, Enum):
    paper_code = "paper-code"
    mean_diff = "mean-diff"
    probe = "probe"


class Positions(str, Enum):
    last = "last"
    all = "all"
    generated = "generated"


class PerplexitySource(str, Enum):
    auto = "auto"
    lambada = "lambada"
    statements = "statements"


class BinaryMode(str, Enum):
    logprob = "logprob"
    generate = "generate"


class TruthfulQASpec(str, Enum):
    paper = "paper"
    lm_eval = "lm-eval"
    both = "both"


class QuestionSet(str, Enum):
    all = "all"
    test = "test"


class Dtype(str, Enum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class Batching(str, Enum):
    prefix_tree = "prefix-tree"
    padded = "padded"


class Precision(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


class Dimension(str, Enum):
    reliability = "reliability"
    toxicity = "toxicity"
    privacy = "privacy"
    fairness = "fairness"
    robustness = "robustness"


class VectorFormat(str, Enum):
    lm_eval = "lm-eval"
    repeng = "repeng"
    gguf = "gguf"
    numpy = "numpy"


CHOICES: dict[str, type[Enum]] = {
    "PROTOCOLS": Protocol, "MI_ESTIMATORS": MiEstimator, "EXECUTORS": Executor, "VECTOR_METHODS": VectorMethod,
    "STEER_POSITIONS": Positions, "PERPLEXITY_SOURCES": PerplexitySource, "BINARY_MODES": BinaryMode,
    "DTYPES": Dtype, "PRECISIONS": Precision, "DIMENSIONS": Dimension, "TRUTHFULQA_SPECS": TruthfulQASpec,
    "QUESTION_SETS": QuestionSet, "BATCHINGS": Batching, "VECTOR_FORMATS": VectorFormat,
}  # each enum above, by the name of its set in core.names (tests/core/test_names.py: every enum, equal)

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(value: str) -> str:
    """``--device``: auto, cpu, mps, cuda or cuda:N, checked while parsing."""
    if not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda, cuda:N or mps.")
    return value
