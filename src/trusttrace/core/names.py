"""Every closed set of names a user chooses from, defined once, with the one check they all share.

A ``Choices`` is a tuple of the allowed names (so ``in``, iteration and ``", ".join`` work as on any tuple)
that knows what it names. ``Choices.check`` is the only place a bad choice is refused: an
``UnknownChoiceError`` (a usage error, exit 2) that names the bad value, lists the allowed ones and suggests
the nearest. The CLI's enums (``cli/choices.py``) and the API's ``Literal`` types are checked against these
sets by ``tests/core/test_names.py``. Nothing here imports more than the error types, so the CLI lists the
choices in ``--help`` without loading torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import final

from .errors import UnknownChoiceError


@final
class Choices(tuple[str, ...]):
    """A closed set of names and what they name (e.g. ``Choices(("group-cv", "cv"), "protocol")``)."""

    what: str

    def __new__(cls, names: Iterable[str], what: str = "name") -> Choices:
        # (names, what): copies made as of any tuple (``dataclasses.asdict``, ``copy``) give the names alone
        self = super().__new__(cls, tuple(names))
        self.what = what
        return self

    def __getnewargs__(self) -> tuple[tuple[str, ...], str]:  # pickles keep ``what``
        return tuple(self), self.what

    def nearest(self, value: object) -> str | None:
        """The allowed name closest to ``value``, when one is close enough to be a typo of it."""
        close = difflib.get_close_matches(str(value).strip().lower(), self, n=1, cutoff=0.6)
        return close[0] if close else None

    def check(self, value: object, option: str | None = None, hint: str = "") -> str:
        """``value`` when it is one of the names; else an ``UnknownChoiceError`` naming it (as ``option``, by
        default ``what``), the allowed names, the nearest one, and ``hint`` (what else to do)."""
        if isinstance(value, str) and value in self:
            return value
        return self.refuse(value, option, hint)

    def check_all(self, values: Iterable[object], option: str | None = None, hint: str = "") -> tuple[str, ...]:
        """Each of ``values`` checked (a list option such as ``--controls``), refused at the first bad one."""
        return tuple(self.check(value, option, hint) for value in values)

    def refuse(self, value: object, option: str | None = None, hint: str = "") -> str:
        """Raise the refusal ``check`` raises (for a caller that decided ``value`` is not allowed)."""
        nearest = self.nearest(value)
        guess = f"; did you mean {nearest!r}?" if nearest is not None else "."
        raise UnknownChoiceError(f"{option or self.what} {value!r} is not one of {', '.join(self)}{guess}"
                                 + (f" {hint}" if hint else ""))


DIMENSIONS = Choices(("reliability", "toxicity", "privacy", "fairness", "robustness"), "dimension")
PROTOCOLS = Choices(("group-cv", "cv", "paper-code"), "protocol")  # see trusttrace.analysis.splits
CONTROLS = Choices(("shuffled", "lexical", "random-init"), "control")  # see trusttrace.analysis.controls
ANALYSES = Choices(("probe", "mi"), "analysis")  # what trace computes per activation file
MI_ESTIMATORS = Choices(("paper-code", "hsic", "nhsic", "linear-cka"), "mi_estimator")  # analysis.mutual_info
MI_CHECKS = Choices(("nhsic", "linear-cka"), "--mi-checks")  # every MI verdict is checked under these (mi_stats)
# MI intervals and null (trusttrace.analysis.mi_stats): defaults chosen from benchmarks/mi_stats.py (see the README)
DEFAULT_MI_BOOTSTRAP = 8
DEFAULT_MI_PERMUTATIONS = 199
EXECUTORS = Choices(("local", "ray"), "executor")
VECTOR_METHODS = Choices(("paper-code", "mean-diff", "probe"), "method")  # see trusttrace.steering.vector
VECTOR_SPLITS = Choices(("first-half", "all"), "split")  # rows a vector's mean difference uses
VECTOR_FORMATS = Choices(("lm-eval", "repeng", "gguf", "numpy"), "format")  # see trusttrace.steering.interop
STEER_POSITIONS = Choices(("last", "all", "generated"), "positions")
PERPLEXITY_SOURCES = Choices(("auto", "lambada", "statements"), "perplexity source")
TRUTHFULQA_SPECS = Choices(("paper", "lm-eval", "both"), "truthfulqa_spec")  # see trusttrace.evaluate.suite
QUESTION_SETS = Choices(("all", "test"), "questions")  # lm-eval TruthfulQA: the benchmark's, or the held-out 407
BINARY_MODES = Choices(("logprob", "generate"), "binary_mode")  # how 0/1 prompts are answered
DTYPES = Choices(("auto", "bfloat16", "float16", "float32"), "--dtype")
BATCHINGS = Choices(("prefix-tree", "padded"), "batching")  # how extraction batches statements
PRECISIONS = Choices(("auto", "bf16", "fp32"), "precision")  # training: bf16 autocast or fp32
DEMO_SIZES = Choices(("small", "compact", "tiny"), "size")  # model shapes of trusttrace.demo.plan
SELECTOR_HELP = "all | first:N | last:N | every:K | log:N | comma-separated names (e.g. ckpt_000,ckpt_179)"
