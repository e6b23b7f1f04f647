"""The demo's plan: which model, how many steps, checkpoints and statements fit the time budget here.

``trusttrace demo --budget 15m`` does not guess the machine's speed: after the corpus and tokenizer are
prepared, ``measure`` times what the demo will do, in the dtype and on the device it will use, with the
demo's own code on a freshly initialised model of each candidate shape:

- optimizer steps of pre-training (fine-tuning takes steps of the same tokens per batch);
- the live trace of one checkpoint (all five dimensions, probes and MI) into a fresh folder and then of a
  second checkpoint of the same run, which separates the run's one-time work (datasets, the random-init
  control) from each checkpoint's; both at two sizes, ``CAL_STATEMENTS`` statements per dimension, so that
  a trace's fixed part is not priced as if it grew with the statements;
- the steering sweep's evaluation of ``CAL_ITEMS`` items per steered dimension, judges included.

``choose`` then prices each plan of ``PLANS`` (largest first) from those figures and takes the first that
ends within ``SAFETY`` of the budget; when none does it takes the smallest and says by how much it will
overrun. The plan, its reason and its per-stage estimates are written to ``OUT/demo_plan.json`` before any
stage starts, and a rerun of the folder resumes with that plan instead of measuring again. The demo adds
the seconds each stage really took, so a plan's estimate can be checked against what happened.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..core.errors import OptionError
from ..core.progress import Progress
from ..data.datasets import DIMENSIONS

log = logging.getLogger(__name__)

# Model shapes by name (PretrainConfig fields); ``small`` is PretrainConfig's defaults.
SIZES: dict[str, dict[str, Any]] = {
    "small": {},
    "compact": {"hidden_size": 128, "n_layers": 4, "n_heads": 4, "intermediate_size": 344},
    "tiny": {"vocab_size": 300, "hidden_size": 32, "n_layers": 2, "n_heads": 2, "intermediate_size": 64,
             "seq_len": 32, "batch_size": 4, "warmup": 3, "tokenizer_chars": 200_000, "heldout_blocks": 4},
}


@dataclass(frozen=True)
class PlanSize:
    """One plan of the demo: the model shape and the work done with it."""

    name: str
    size: str  # a key of SIZES
    steps: int
    checkpoints: str
    trace_limit: int  # statements per dimension traced at each checkpoint
    finetune_steps: int
    steer_limit: int  # evaluation items per steered result
    shows: str  # what this plan's results can show (the README's table)


PLANS: tuple[PlanSize, ...] = (
    PlanSize("full", "small", 1000, "log:12", 600, 300, 100,
             "probe rises with selectivity over both controls; I(T;X) falls to a minimum, rises again (fitting) and "
             "on some dimensions peaks and falls (compression); steering with intervals narrow enough to rank"),
    PlanSize("standard", "small", 600, "log:10", 400, 200, 80,
             "the same model trained less: the rises and the fitting phase, wider intervals"),
    PlanSize("compact", "compact", 500, "log:9", 300, 150, 60,
             "a 4-layer, 128-wide model: the I(T;X) fall from the untrained network to its trough, and few probe "
             "rises that clear their intervals (1 of 5 in one run); steering rows mostly below what 60 items detect"),
    PlanSize("minimal", "compact", 300, "log:8", 200, 100, 40,
             "the least that still shows a probe rise from step 0 on three dimensions and an I(T;X) turn (its "
             "minimum, then the fitting phase); no compression yet; steering rows are a smoke test"),
)
SAFETY = 0.85  # a plan must fit in this share of the budget: estimates are from a few seconds' timing
CAL_STATEMENTS = (40, 100)  # statements per dimension in the calibration traces
CAL_ITEMS = 16  # evaluation items per steered dimension in the calibration
REPORT_S = 20.0  # phases, summary and the report's figures: small and nearly machine-independent


@dataclass(frozen=True)
class Throughput:
    """What one model shape costs on this machine, measured."""

    size: str
    train_step_s: float  # one optimizer step of batch_size × seq_len tokens
    trace_once_s: tuple[float, float]  # a trace run's one-time work at CAL_STATEMENTS (datasets, random-init control)
    trace_checkpoint_s: tuple[float, float]  # each further checkpoint's trace at CAL_STATEMENTS
    eval_once_s: float  # one steered dimension's judges, model and data, once per sweep
    eval_each_s: float  # one evaluation's fixed part (perplexity passages, set-up), one dimension
    eval_item_s: float  # one evaluation item, one dimension


@dataclass(frozen=True)
class Plan:
    """The chosen plan, why, and what each stage is expected to take (seconds)."""

    size: PlanSize
    budget_s: float | None
    reason: str
    estimate_s: dict[str, float]
    measured: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"plan": asdict(self.size), "budget_s": self.budget_s, "reason": self.reason,
                "estimate_s": self.estimate_s, "measured": self.measured}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(PlanSize(**data["plan"]), data["budget_s"], data["reason"], data["estimate_s"], data["measured"])

    def describe(self) -> str:
        p = self.size
        return (f"plan {p.name!r}: {p.size} model, {p.steps} steps, checkpoints {p.checkpoints}, {p.trace_limit} "
                f"statements per dimension, {p.finetune_steps} fine-tuning steps, {p.steer_limit} items per steered "
                f"result; expected {_minutes(self.estimate_s['total'])}. {self.reason}")


def parse_budget(text: str) -> float | None:
    """``15m``, ``900s``, ``900``, ``1h``, ``1.5h`` → seconds; ``none`` → no budget (the full plan)."""
    value = text.strip().lower()
    if value in ("none", "off"):
        return None
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    scale = units.get(value[-1:], None)
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise OptionError(f"--budget {text!r} is not a time: give minutes (15m), seconds (900s) or hours (1h), or "
                          "'none' for the full plan whatever it takes.")
    return seconds


def n_checkpoints(plan: PlanSize) -> int:
    from ..training.pretrain import checkpoint_steps

    return len(checkpoint_steps(plan.checkpoints, plan.steps))


def estimate(plan: PlanSize, t: Throughput, *, steer_dimensions: int, alphas: int, proxy_betas: int,
             elapsed_s: float, random_vectors: int = 3) -> dict[str, float]:
    """Seconds per stage of ``plan`` from the measured ``t`` (``elapsed_s``: already spent, e.g. measuring)."""
    n = plan.trace_limit
    saves = n_checkpoints(plan)
    heldout = 1.5 * t.train_step_s  # 64 held-out blocks scored at each save: forward passes only
    sources = 3  # early, middle, last (steering_sources)
    # unsteered and the prompting baseline; self and the sources, and the random directions, at every α
    evals = 2 + (sources + 1 + random_vectors) * alphas
    evals += proxy_betas * sources * 3 + (1 if proxy_betas else 0)  # proxy: 3 models
    stages = {
        "measuring and preparing": elapsed_s,
        "pre-training": plan.steps * t.train_step_s + saves * heldout,
        "live tracing": at(t.trace_once_s, n) + saves * at(t.trace_checkpoint_s, n),
        "fine-tuning": plan.finetune_steps * t.train_step_s,
        # each sweep traces its dimension on the sources and the chat model, then evaluates every row
        "steering": steer_dimensions * ((sources + 1) * at(t.trace_checkpoint_s, n) / len(DIMENSIONS)
                                        + t.eval_once_s + evals * (t.eval_each_s + plan.steer_limit * t.eval_item_s)),
        "report": REPORT_S,
    }
    return {k: round(v, 1) for k, v in stages.items()} | {"total": round(sum(stages.values()), 1)}


def at(seconds: tuple[float, float], n: int) -> float:
    """Seconds at ``n`` statements per dimension, on the line through the two calibration sizes; at least a
    quarter of the proportional cost per statement, so that two noisy timings cannot price statements as free."""
    (n1, n2), (t1, t2) = CAL_STATEMENTS, seconds
    slope = max((t2 - t1) / (n2 - n1), 0.25 * t2 / n2)
    return max(t1 + slope * (n - n1), 0.0)


def choose(budget_s: float | None, throughputs: dict[str, Throughput], *, steer_dimensions: int, alphas: int,
           proxy_betas: int, elapsed_s: float, measured: dict[str, Any], random_vectors: int = 3) -> Plan:
    """The largest plan of ``PLANS`` expected to end within ``SAFETY`` × ``budget_s`` (the full one without one)."""
    def price(p: PlanSize) -> dict[str, float]:
        return estimate(p, throughputs[p.size], steer_dimensions=steer_dimensions, alphas=alphas,
                        proxy_betas=proxy_betas, elapsed_s=elapsed_s, random_vectors=random_vectors)

    if budget_s is None:
        return Plan(PLANS[0], None, "No budget: the full plan.", price(PLANS[0]), measured)
    priced = [(p, price(p)) for p in PLANS]
    for i, (p, cost) in enumerate(priced):
        if cost["total"] <= SAFETY * budget_s:
            larger = ("" if i == 0 else f"; {priced[i - 1][0].name!r} would take about "
                      f"{_minutes(priced[i - 1][1]['total'])}")
            reason = (f"It is the largest plan expected to end within {SAFETY:.0%} of the {_minutes(budget_s)} "
                      f"budget on this machine ({measured.get('device')}, {measured.get('dtype')}: a training step "
                      f"of the {p.size} model takes {throughputs[p.size].train_step_s:.2f} s){larger}.")
            return Plan(p, budget_s, reason, cost, measured)
    p, cost = priced[-1]
    reason = (f"No plan fits the {_minutes(budget_s)} budget on this machine ({measured.get('device')}, "
              f"{measured.get('dtype')}); the smallest is expected to take {_minutes(cost['total'])}, "
              f"{_minutes(cost['total'] - budget_s)} over. Give a larger --budget to silence this, or run on a GPU.")
    log.warning(reason)
    return Plan(p, budget_s, reason, cost, measured)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------- measuring this machine


def measure(sizes: Sequence[str], pretrain_kwargs: dict[str, Any], data_dir: str | None,
            steer_dimensions: Sequence[str], seed: int, progress: Progress) -> dict[str, Throughput]:
    """Time each model shape in ``sizes`` as the demo will run it (see the module docstring).

    ``pretrain_kwargs`` are the demo's PretrainConfig settings (out, corpus, seed); its corpus and tokenizer
    are prepared there as the pre-training stage would, and reused by it.
    """
    from ..evaluate.judges import judges_for
    from ..models.devices import choose_device
    from ..training.loop import batch_indices, make_optimizer, train_step, use_bf16
    from ..training.pretrain import PretrainConfig, make_model, prepare_data

    found: dict[str, Throughput] = {}
    started = time.perf_counter()
    judges = judges_for(tuple(steer_dimensions), data_dir=data_dir)  # once: the sweeps build theirs once each
    judging = (time.perf_counter() - started) / max(len(steer_dimensions), 1)
    for size in dict.fromkeys(sizes):
        config = PretrainConfig(**pretrain_kwargs, **SIZES[size])
        tokenizer, train, _ = prepare_data(config, progress)
        progress.stage(f"measuring this machine: the {size} model")
        device = choose_device(config.device)
        bf16 = use_bf16(config.precision, device)
        with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory(prefix="trusttrace-plan-") as tmp:
            model = make_model(config, tokenizer)
            cast(torch.nn.Module, model).to(device)  # cast: transformers' wrapped .to confuses type checkers
            optimizer = make_optimizer(model, config.lr, config.weight_decay)
            times = []
            for step in range(4):  # the first is a warm-up (allocator, kernels)
                ids = torch.from_numpy(train[batch_indices(len(train), config.batch_size, step, seed)]
                                       .astype(np.int64)).to(device)
                started = time.perf_counter()
                train_step(model, optimizer, {"input_ids": ids, "labels": ids}, lr=1e-4, grad_clip=1.0, bf16=bf16)
                times.append(time.perf_counter() - started)
            series = Path(tmp) / "series"
            for name in ("step0", "step1"):
                model.save_pretrained(series / name)
                tokenizer.save_pretrained(series / name)
            timings = [_time_trace(series, Path(tmp) / f"trace-{n}", data_dir, seed, n) for n in CAL_STATEMENTS]
            once = (timings[0][0], timings[1][0])
            each = (timings[0][1], timings[1][1])
            first, per_eval, item = _time_evaluation(series / "step1", steer_dimensions, data_dir, judges)
        found[size] = Throughput(size, float(np.median(times[1:])), once, each, judging + first,
                                 per_eval, item)
        log.info("measured the %s model: %s", size, found[size])
    return found


def _time_trace(series: Path, out: Path, data_dir: str | None, seed: int, limit: int) -> tuple[float, float]:
    """Seconds of a run's one-time work (its first checkpoint's trace less the second's) and of each checkpoint's
    trace, at ``limit`` statements per dimension."""
    from ..trace.live import trace_checkpoint

    spent = []
    for name in ("step0", "step1"):
        started = time.perf_counter()
        trace_checkpoint(series / name, out, DIMENSIONS, limit=limit, data_dir=data_dir, seed=seed)
        spent.append(time.perf_counter() - started)
    return max(spent[0] - spent[1], 0.0), spent[1]


def _time_evaluation(folder: Path, dimensions: Sequence[str], data_dir: str | None,
                     judges: Any) -> tuple[float, float, float]:
    """Seconds of one steered dimension's evaluation, unsteered: (once per sweep: the model and data; each
    evaluation: perplexity and set-up; each item), from runs at two item counts after a warm-up run."""
    from ..evaluate.suite import SuiteConfig, run_suite
    from ..models.loading import load_model

    if not dimensions:
        return 0.0, 0.0, 0.0

    def timed(limit: int) -> float:
        config = SuiteConfig(dimensions=tuple(dimensions), limit=limit, data_dir=data_dir,
                             perplexity_source="statements")
        started = time.perf_counter()
        run_suite(lm, config, None, judges)
        return time.perf_counter() - started

    started = time.perf_counter()
    lm = load_model(str(folder))
    few, many = CAL_ITEMS // 4, CAL_ITEMS
    timed(few)  # first use: the model loaded above, data read, kernels warmed
    first = time.perf_counter() - started
    t_few, t_many = timed(few), timed(many)
    item = max(t_many - t_few, 0.0) / (many - few)
    per_eval = max(t_few - item * few, 0.0)
    n = len(dimensions)
    return max(first - t_few, 0.0) / n, per_eval / n, item / n
