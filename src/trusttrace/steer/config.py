"""What a steering sweep is asked to do (``SteerConfig``): its models, dimension, layers, strengths and controls,
checked when it is made, before anything loads. ``trusttrace.steer.job`` runs it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import OptionError
from ..core.executors import ExecutorConfig
from ..core.names import STEER_POSITIONS, VECTOR_METHODS
from ..data.datasets import DIMENSIONS
from ..evaluate.instructions import baseline_instruction
from ..evaluate.specs import INSTRUCTION_SPEC
from ..evaluate.suite import PERPLEXITY_SOURCES
from ..models.ref import ModelRef
from ..runs.outputs import finite_settings
from ..runs.tables import is_control
from .proxy import check_proxy_options, proxy_settings


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
    positions: str = "last"  # last | all | generated (see trusttrace.steering.vector.steer)
    method: str = "paper-code"  # paper-code | mean-diff | probe (see trusttrace.steering.vector)
    limit: int | None = None  # evaluation items at most
    source_limit: int | None = None  # statements per dataset used to build the vectors
    max_statement_tokens: int | None = None  # longer source statements keep their last N tokens (--max-tokens)
    ppl_budget: float = 1.33  # best α only among results with perplexity ≤ budget × unsteered
    data_dir: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    allow_mismatch: bool = False
    judge: str = "offline"  # toxicity: offline | an HF classifier's name
    truth_judge: str = "offline"  # reliability: offline | TRUTH_MODEL[,INFO_MODEL]
    perplexity_source: str = "auto"  # auto | lambada | statements
    perplexity_file: str | None = None
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # evaluations (and traces) as Ray tasks
    overwrite: bool = False  # start the folder over once every input is checked (outputs.start_over)
    proxy_tuned: str | None = None  # proxy-tuning (App. G): the tuned model (MODEL or MODEL@REV); each source
    proxy_base: str | None = None  # checkpoint is also evaluated as logits + β·(tuned − base), see proxy_sweep
    proxy_betas: tuple[float, ...] = (1.0,)  # the offset's strengths (the paper: 1; 0 is the checkpoint alone)
    random_vectors: int = 3  # random directions per (layer, α), of the vectors' norm (steer_controls); 0: none
    seed: int = 0  # the random directions' seeds: seed, seed + 1, …
    baseline_prompt: str = "builtin"  # the prompting baseline: builtin (evaluate.instructions) | none | a text file

    def __post_init__(self) -> None:
        _, revision = ModelRef.parse(self.source, option="--source").pair  # validates MODEL@REVISION
        ModelRef.parse(self.target, option="--target")
        if revision is not None and self.revisions:
            raise OptionError(f"--source {self.source!r} names a revision and --revisions gives more; use one.")
        DIMENSIONS.check(self.dimension)
        PERPLEXITY_SOURCES.check(self.perplexity_source, hint="--perplexity-file takes your own text.")
        STEER_POSITIONS.check(self.positions)
        VECTOR_METHODS.check(self.method)
        if not self.layers or not self.alphas:
            raise OptionError("Give at least one layer (--layers) and one strength (--alphas).")
        if self.random_vectors < 0:
            raise OptionError(f"--random-vectors {self.random_vectors}: give 0 (no random control) or more draws, "
                              "e.g. 3.")
        reserved = [r for r in self.source_revisions or () if r in ("self", "unsteered") or is_control(r)]
        if reserved:
            raise OptionError(f"Source revision(s) {reserved} share a name with the sweep's own rows (self, unsteered, "
                              "prompt, random, random-<k>); rename or copy those checkpoints.")
        self.instruction  # noqa: B018  (a missing --baseline-prompt file is refused here)
        check_proxy_options(self.proxy_tuned, self.proxy_base, self.proxy_betas)
        finite_settings(self.settings(), "steer", positive=("ppl_budget",))  # no NaN budget or α in steer_config.json

    @property
    def instruction(self) -> str | None:
        """The prompting baseline's instruction, or None without one."""
        return baseline_instruction(self.baseline_prompt, self.dimension)

    @property
    def source_model(self) -> str:
        """The source series' model, without a ``@REVISION``."""
        return ModelRef.parse(self.source).name

    @property
    def source_revisions(self) -> tuple[str, ...] | None:
        """The source revisions: the one ``MODEL@REVISION`` names, or ``revisions``."""
        revision = ModelRef.parse(self.source).revision
        return (revision,) if revision is not None else self.revisions

    @property
    def target_model(self) -> tuple[str, str | None]:
        """The target and its revision (``MODEL@REVISION``), or None for the default branch."""
        return ModelRef.parse(self.target).pair

    def settings(self) -> dict[str, Any]:
        """The settings that change the numbers (not where the work runs, nor whether the folder starts over)."""
        skip = ("executor", "overwrite", "proxy_tuned", "proxy_base", "proxy_betas")
        settings = {k: v for k, v in asdict(self).items() if k not in skip}
        settings.update(source=self.source_model, revisions=self.source_revisions, instruction=self.instruction,
                        instruction_spec=INSTRUCTION_SPEC if self.baseline_prompt == "builtin" else None)
        settings.update(proxy_settings(self.proxy_tuned, self.proxy_base, self.proxy_betas))
        return settings
