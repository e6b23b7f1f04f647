"""``trusttrace demo``: the whole method on a model pre-trained here, offline, within a time budget.

With ``budget_s`` (the CLI's ``--budget``, 15 minutes by default) the model size, steps, checkpoints and
statements are first chosen from this machine's measured speed (``trusttrace.demo.plan``; ``OUT/demo_plan.json``).

Stages (each resumes when the demo is run again on the same folder):

1. ``OUT/pretrain``: pre-train a small Llama on the built-in corpus, tracing all five dimensions live at
   every checkpoint (``OUT/pretrain/trace``: probes and MI, subsampled to ``trace_limit`` statements);
2. ``OUT/pretrain/trace/mi``: the fitting → compression phases of I(T;X);
3. ``OUT/chat``: the last checkpoint instruction-tuned into a small chat model;
4. ``OUT/steer-<dimension>``: steering vectors from an early, a middle and the last checkpoint (and the chat
   model's own), swept over α on the chat model beside random directions of their norm and a prompting
   baseline (``trusttrace.steer.controls``), with perplexity. Toxicity only by default: a chat model this
   small answers the 0/1 prompts of privacy, fairness and robustness at chance, where no effect can be read
   (``steer_dimensions`` adds them, and their section then says so);
5. ``OUT/summary.md`` and ``OUT/summary.json``: the measured answers to the demo's questions, and
   ``OUT/report/index.html``: the run's report (``trusttrace report``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..analysis.phases import PhasesConfig, run_phases
from ..core.errors import OptionError
from ..core.files import write_json_atomic, write_text_atomic
from ..core.names import DEMO_SIZES
from ..core.progress import Progress
from ..core.runlock import hold
from ..data.datasets import DIMENSIONS
from ..report import ReportConfig, run_report
from ..runs.layout import DemoLayout, read_json
from ..runs.outputs import check_output, finite_settings
from ..runs.tables import ITEM_HEADLINE, UNSTEERED, steering_wide
from ..steer.job import SteerConfig, run_steer
from ..trace.live import tracer
from ..training.finetune import FinetuneConfig, run_finetune
from ..training.pretrain import PretrainConfig, run_pretrain
from .plan import PLANS, SIZES, Plan, choose, measure
from .summary import summarise, summary_markdown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """The demo's settings; the defaults fit a 2-core CPU in about 15 minutes."""

    out: str = "runs/demo"
    corpus: str = "builtin"
    data_dir: str | None = None
    steps: int = 1000
    checkpoints: str = "log:12"
    trace_limit: int = 600
    finetune_steps: int = 300
    steer_dimensions: tuple[str, ...] = ("toxicity",)
    alphas: tuple[float, ...] = (-4.0, -2.0, 2.0, 4.0)
    steer_limit: int = 100
    proxy_betas: tuple[float, ...] = (1.0,)  # the steered checkpoints also proxy-tuned by (chat − last); () for none
    random_vectors: int = 3  # random directions per α, the control each vector is tested against
    seed: int = 0
    size: str = "small"  # small (the real demo) | compact | tiny (a smoke run in seconds)
    # Seconds the whole demo may take: the model size, steps, checkpoints and statements are then chosen from
    # this machine's measured speed (``trusttrace.demo.plan``), replacing the five settings above them.
    # None: the settings as given. The CLI's default is 15 minutes.
    budget_s: float | None = None

    def __post_init__(self) -> None:
        DEMO_SIZES.check(self.size, hint="E.g. size='tiny' for a smoke run.")
        # alphas: a NaN strength steers nowhere and compares false
        finite_settings(asdict(self), "demo", positive=("steps", "budget_s"))

    def planned(self, plan: Plan) -> DemoConfig:
        """These settings with the plan's sizes."""
        p = plan.size
        return replace(self, size=p.size, steps=p.steps, checkpoints=p.checkpoints, trace_limit=p.trace_limit,
                       finetune_steps=p.finetune_steps, steer_limit=p.steer_limit)


def steering_sources(steps: list[int], total: int) -> list[int]:
    """An early (about 5% of training), a middle (about half) and the last checkpoint's steps; never step 0,
    whose vector would come from the random initialisation."""
    trained = [s for s in steps if s > 0] or steps
    pick = [min(trained, key=lambda s: (abs(s - target), s)) for target in (max(1, 0.05 * total), 0.5 * total)]
    return sorted(set(pick + [steps[-1]]))


@dataclass
class DemoResult:
    """The demo's summary (also in ``OUT/summary.json``) and where each stage wrote."""

    out: Path
    summary: dict[str, Any] = field(repr=False)

    @property
    def outputs(self) -> dict[str, Path]:
        layout = DemoLayout(self.out)
        return {"report": layout.report.page, "summary.md": layout.summary_md, "summary.json": layout.summary_json,
                "pretrain": layout.pretrain.root, "trace": layout.pretrain.trace.root, "chat": layout.chat.root}


def _pretrain_with_tracing(config: DemoConfig, layout: DemoLayout, progress: Progress,
                           spent: dict[str, float]) -> PretrainConfig:
    pre = PretrainConfig(out=str(layout.pretrain.root), corpus=config.corpus, steps=config.steps,
                         checkpoints=config.checkpoints, seed=config.seed, **SIZES[config.size])
    trace = tracer(layout.pretrain.trace.root, DIMENSIONS, limit=config.trace_limit, data_dir=config.data_dir,
                   seed=config.seed)

    def on_checkpoint(folder: Path, step: int) -> None:
        progress.stage(f"tracing step {step}")
        started = time.perf_counter()
        trace(folder, step)
        spent["live tracing"] = spent.get("live tracing", 0.0) + time.perf_counter() - started

    started = time.perf_counter()
    run_pretrain(pre, progress, on_checkpoint)
    spent["pre-training"] = time.perf_counter() - started - spent.get("live tracing", 0.0)
    return pre


def plan_demo(config: DemoConfig, layout: DemoLayout, progress: Progress) -> Plan | None:
    """The plan this folder runs: the one it was started with, else (with a budget) chosen now by measuring."""
    if layout.plan.exists():
        plan = Plan.from_dict(read_json(layout.plan))
        log.info("resuming with the plan chosen when this demo started: %s", plan.describe())
        return plan
    if config.budget_s is None:
        return None
    if any(layout.pretrain.checkpoints()):
        raise OptionError(f"{layout.root} holds a demo started without a budget, so its sizes are already fixed; "
                          "rerun it with the same settings and --budget none, or give --overwrite to start over.")
    started = time.perf_counter()
    progress.stage(f"measuring this machine to fit the demo in {config.budget_s / 60:.1f} min")
    pre = {"out": str(layout.pretrain.root), "corpus": config.corpus, "seed": config.seed}
    found = measure([p.size for p in PLANS], pre, config.data_dir, config.steer_dimensions, config.seed, progress)
    measured = _machine() | {size: asdict(t) for size, t in found.items()}
    plan = choose(config.budget_s, found, steer_dimensions=len(config.steer_dimensions), alphas=len(config.alphas),
                  proxy_betas=len(config.proxy_betas), random_vectors=config.random_vectors,
                  elapsed_s=time.perf_counter() - started, measured=measured)
    write_json_atomic(layout.plan, plan.to_dict())
    return plan


def _machine() -> dict[str, Any]:
    """The device and dtype the demo's stages pick, and the CPU flags behind the dtype."""
    from ..models.devices import choose_device, choose_dtype, cpu_has_fast_bf16

    device = choose_device("auto")
    return {"device": str(device), "dtype": str(choose_dtype("auto", device)[0]).removeprefix("torch."),
            "cpu_fast_bf16": cpu_has_fast_bf16(), "threads": torch.get_num_threads()}


def run_demo(config: DemoConfig, progress: Progress | None = None) -> DemoResult:
    """Run (or resume) every stage; return the summary (also written to ``OUT/summary.json``)."""
    progress = progress or Progress()
    check_output(config.out)  # before anything loads or is written
    with hold(config.out, "demo"):  # one writer at a time (each stage holds its own folder too)
        return _demo(config, progress)


def _demo(config: DemoConfig, progress: Progress) -> DemoResult:
    """``run_demo`` once its folder is held."""
    layout = DemoLayout(Path(config.out))
    layout.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plan = plan_demo(config, layout, progress)
    if plan is not None:
        config = config.planned(plan)
        progress.stage(plan.describe())
    spent: dict[str, float] = {"measuring and preparing": time.perf_counter() - started}
    write_json_atomic(layout.settings, asdict(config))
    progress.stage("1/4 pre-training with live tracing of the five dimensions")
    pre = _pretrain_with_tracing(config, layout, progress, spent)
    phases = run_phases(PhasesConfig(str(layout.pretrain.trace.root)))
    progress.stage("2/4 fine-tuning the last checkpoint into a chat model")
    mark = time.perf_counter()
    checkpoints = list(layout.pretrain.checkpoints())
    chat = run_finetune(FinetuneConfig(model=str(checkpoints[-1]), out=str(layout.chat.root),
                                       data_dir=config.data_dir, steps=config.finetune_steps, seed=config.seed,
                                       batch_size=min(16, pre.batch_size * 4), max_len=max(32, pre.seq_len)),
                        progress)
    spent["fine-tuning"] = time.perf_counter() - mark
    mark = time.perf_counter()
    sources = steering_sources([int(p.name[4:]) for p in checkpoints], config.steps)
    layer = pre.n_layers // 2
    steer_tables = {}
    for i, dim in enumerate(config.steer_dimensions, start=1):
        progress.stage(f"3/4 steering the chat model ({dim}, {i} of {len(config.steer_dimensions)}) with vectors "
                       f"from steps {', '.join(map(str, sources))}")
        steer_tables[dim] = run_steer(SteerConfig(
            source=str(layout.pretrain.checkpoints_dir), select=",".join(f"step{s}" for s in sources),
            target=str(chat.out), dimension=dim, out=str(layout.steer(dim).root), layers=(layer,),
            alphas=config.alphas, limit=config.steer_limit, source_limit=config.trace_limit,
            data_dir=config.data_dir, perplexity_source="statements", random_vectors=config.random_vectors,
            seed=config.seed, **_proxy(config, chat.out, checkpoints[-1])),
            progress).table
    spent["steering"] = time.perf_counter() - mark
    mark = time.perf_counter()
    progress.stage("4/4 summarising and drawing the report")
    summary = summarise(layout.pretrain.trace.read_results(), phases.phases, steer_tables, sources, layer)
    if plan is not None:
        summary["plan"] = {"name": plan.size.name, "reason": plan.reason, "budget_s": plan.budget_s,
                           "estimate_s": plan.estimate_s}
    write_json_atomic(layout.summary_json, summary)
    write_text_atomic(layout.summary_md, summary_markdown(summary, layout.root))
    report = run_report(ReportConfig((str(layout.root),)))
    for note in report.notes:
        log.warning(note)
    spent["report"] = time.perf_counter() - mark
    _record_times(layout, plan, spent | {"total": time.perf_counter() - started}, reached(steer_tables))
    return DemoResult(layout.root, summary)


def reached(steer_tables: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Per steered dimension, what the unsteered chat model reached: perplexity, the headline rate, and the
    smallest change of it the sweep can detect (whether the plan left room for an effect)."""
    found = {}
    for dim, table in steer_tables.items():
        base = steering_wide(table)
        base = base[base.source_revision == UNSTEERED]
        item = ITEM_HEADLINE[dim]
        found[dim] = {c: float(base[c].iloc[0]) for c in ("perplexity", item, f"{item}_detectable") if c in base}
    return found


def _record_times(layout: DemoLayout, plan: Plan | None, spent: dict[str, float],
                  unsteered: dict[str, dict[str, float]]) -> None:
    """What each stage took in this call (a resumed call: only what was left), beside the plan's estimate, and
    what the chat model reached."""
    rounded = {k: round(v, 1) for k, v in spent.items()}
    log.info("stage seconds: %s", rounded)
    if plan is not None:
        write_json_atomic(layout.plan, plan.to_dict() | {"actual_s": rounded, "chat_model_reached": unsteered})


def _proxy(config: DemoConfig, chat: Path, last: Path) -> dict[str, Any]:
    """The sweep's proxy-tuning options: each steered checkpoint shifted by (chat − last checkpoint), the
    paper's App. G with the chat model fine-tuned here from the last checkpoint; none when no β is given."""
    if not config.proxy_betas:
        return {}
    return {"proxy_tuned": str(chat), "proxy_base": str(last), "proxy_betas": config.proxy_betas}


def load_summary(out: str | Path) -> dict[str, Any]:
    """A finished demo's summary."""
    return read_json(DemoLayout(Path(out)).summary_json)
