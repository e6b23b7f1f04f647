"""The names a user chooses from, in a module that imports nothing: the CLI lists them in its help without
loading torch, and each stage validates its settings against the same tuples."""

from __future__ import annotations

DIMENSIONS: tuple[str, ...] = ("reliability", "toxicity", "privacy", "fairness", "robustness")
PROTOCOLS: tuple[str, ...] = ("group-cv", "cv", "paper-code")  # see trusttrace.analysis.splits
CONTROLS: tuple[str, ...] = ("shuffled", "lexical", "random-init")  # see trusttrace.analysis.controls
ANALYSES: tuple[str, ...] = ("probe", "mi")  # what trace computes per activation file
MI_ESTIMATORS: tuple[str, ...] = ("paper-code", "hsic", "nhsic", "linear-cka")  # see trusttrace.analysis.mutual_info
MI_CHECKS: tuple[str, ...] = ("nhsic", "linear-cka")  # every MI verdict is checked under these (trusttrace.analysis.mi_stats)
# MI intervals and null (trusttrace.analysis.mi_stats): defaults chosen from benchmarks/mi_stats.py (see the README)
DEFAULT_MI_BOOTSTRAP = 8
DEFAULT_MI_PERMUTATIONS = 199
EXECUTORS: tuple[str, ...] = ("local", "ray")
VECTOR_METHODS: tuple[str, ...] = ("paper-code", "mean-diff", "probe")  # see trusttrace.steering.vector
VECTOR_SPLITS: tuple[str, ...] = ("first-half", "all")  # rows a vector's mean difference uses
STEER_POSITIONS: tuple[str, ...] = ("last", "all", "generated")
PERPLEXITY_SOURCES: tuple[str, ...] = ("auto", "lambada", "statements")
TRUTHFULQA_SPECS: tuple[str, ...] = ("paper", "lm-eval", "both")  # see trusttrace.evaluate.suite
BINARY_MODES: tuple[str, ...] = ("logprob", "generate")  # how 0/1 prompts are answered
DTYPES: tuple[str, ...] = ("auto", "bfloat16", "float16", "float32")
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")  # training: bf16 autocast or fp32
SELECTOR_HELP = "all | first:N | last:N | every:K | log:N | comma-separated names (e.g. ckpt_000,ckpt_179)"
