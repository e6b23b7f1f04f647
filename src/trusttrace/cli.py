"""The ``trusttrace`` command: a thin layer over the Python API."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import runner
from .checkpoints import SELECTOR_HELP, CheckpointSeries
from .data import DIMENSIONS, SPECS
from .models import load_model
from .phases import PhaseRule, run_phases
from .probes import PROTOCOLS
from .remote import is_url
from .sweep import SweepFailed

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Trace how a model comes to encode trustworthiness over its pre-training checkpoints.")
console = Console(stderr=True)
# What a user can get wrong (paths, names, data, settings, network): a message, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, ConnectionError, KeyError, SweepFailed)


class _RunLog(logging.FileHandler):
    """The run folder's log, created with its folder on the first record: a command refused at validation
    leaves nothing on disk."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _setup_logging(quiet: bool, log_file: Path | None = None) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    console_handler = RichHandler(console=console, show_path=False, show_time=False)
    console_handler.setLevel(logging.WARNING if quiet else logging.INFO)
    root.addHandler(console_handler)
    if log_file is not None:
        file_handler = _RunLog(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    for noisy in ("transformers", "huggingface_hub", "accelerate", "urllib3", "filelock", "choreographer", "kaleido",
                  "logistro", "ray"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars; trusttrace shows its own progress


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


def _split(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


ProtocolOpt = Annotated[str, typer.Option(help=f"Probe protocol: {' | '.join(PROTOCOLS)}.")]
FoldsOpt = Annotated[int, typer.Option(help="k for the cv protocol.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the cv folds (and MI subsamples).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and the final summary only.")]
AnalysesOpt = Annotated[str, typer.Option(help="Comma-separated: probe, mi.")]
MiEstimatorOpt = Annotated[str, typer.Option(help="MI estimator: paper-code | hsic | nhsic.")]
MiSigmaOpt = Annotated[str, typer.Option(help="Kernel width σ, or 'median' (hsic/nhsic).")]
MiMaxSamplesOpt = Annotated[int | None, typer.Option(help="Estimate MI on seeded subsamples of this many rows.")]
ExecutorOpt = Annotated[str, typer.Option(help="local | ray (one task per unit of work on a Ray cluster).")]
RayAddressOpt = Annotated[str | None, typer.Option(help="Ray cluster to join: auto | HOST:PORT (default: start a "
                                                       "local one).")]
GpusOpt = Annotated[float, typer.Option(help="GPUs per task (ray).")]
CpusOpt = Annotated[float, typer.Option(help="CPUs per task (ray).")]
RetriesOpt = Annotated[int, typer.Option(help="Retries of a failed task (ray).")]
PerplexityOpt = Annotated[str, typer.Option(help="Perplexity text: auto (LAMBADA if reachable, else the datasets' "
                                                 "test-half statements) | lambada | statements.")]
JudgeOpt = Annotated[str, typer.Option(help="Toxicity judge: offline (MiniLM embedding classifier) | an HF "
                                            "classifier, e.g. tomh/toxigen_roberta.")]
TruthJudgeOpt = Annotated[str, typer.Option(help="TruthfulQA judge: offline (MiniLM nearest reference) | "
                                                 "TRUTH_MODEL[,INFO_MODEL], e.g. allenai/truthfulqa-truth-judge-llama2-7B.")]


def _gigabytes(value: str) -> float:
    """``50GB``, ``800MB``, ``1.5TB`` (or GiB…) or a bare number of GB, as GB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*", value.upper())
    if match is None:
        raise ValueError(f"--cache-budget {value!r}: give a size such as 50GB, 800MB or 1.5TB.")
    return float(match.group(1)) * {"": 1.0, "K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3}[match.group(2)]


def _sigma(value: str) -> float | None:
    if value == "median":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--mi-sigma {value!r} is neither a number nor 'median'.") from None


class _RichProgress(runner.Progress):
    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.ckpt_task = bars.add_task("checkpoints", total=None)
        self.step_task: TaskID | None = None

    def start(self, total_checkpoints: int) -> None:
        self.bars.update(self.ckpt_task, total=total_checkpoints)

    def checkpoint(self, name: str) -> None:
        self.bars.update(self.ckpt_task, description=f"checkpoint {name}")

    def extract(self, dimension: str, total: int) -> Callable[[int], None]:
        if self.step_task is not None:
            self.bars.remove_task(self.step_task)
        task = self.step_task = self.bars.add_task(f"  extract {dimension}", total=total)
        return lambda n: self.bars.advance(task, n)

    def done_checkpoint(self) -> None:
        self.bars.advance(self.ckpt_task)


@app.command()
def trace(
    model: Annotated[str, typer.Option(help="Hub id, local series folder, checkpoint folder, .gguf file, "
                                            "or smollm2-135m-instruct.")],
    out: Annotated[str, typer.Option(help="Run folder (created; a rerun resumes): a path, or an fsspec URL "
                                          "(s3://…, gs://…, file://…).")],
    revisions: Annotated[str | None, typer.Option(help="Comma-separated hub revisions.")] = None,
    select: Annotated[str | None, typer.Option(help=SELECTOR_HELP)] = None,
    dimensions: Annotated[str, typer.Option(help=f"all, or comma-separated: {', '.join(DIMENSIONS)}.")] = "all",
    limit: Annotated[int | None, typer.Option(help="First N statements of each dataset.")] = None,
    protocol: ProtocolOpt = "cv",
    folds: FoldsOpt = 5,
    seed: SeedOpt = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the published CSVs "
                                                          "(default $TRUSTTRACE_DATA_DIR, else download).")] = None,
    dtype: Annotated[str, typer.Option(help="auto | bfloat16 | float16 | float32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    keep_checkpoints: Annotated[bool, typer.Option(help="Keep downloaded checkpoints after use.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Hub download folder.")] = None,
    blocks: Annotated[str | None, typer.Option(help="Dotted path of the decoder blocks, if unknown.")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Accept pickle (*.bin) weights.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Run model code from the hub repo.")] = False,
    analyses: AnalysesOpt = "probe,mi",
    mi_estimator: MiEstimatorOpt = "paper-code",
    mi_sigma: MiSigmaOpt = "50",
    mi_max_samples: MiMaxSamplesOpt = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    gpus_per_task: GpusOpt = 0.0,
    cpus_per_task: CpusOpt = 1.0,
    max_retries: RetriesOpt = 2,
    prefetch: Annotated[int, typer.Option(help="Hub checkpoints downloaded ahead of the one computing.")] = 1,
    cache_budget: Annotated[str | None, typer.Option(help="Downloaded, not yet deleted checkpoints at most, e.g. "
                                                          "50GB or 800MB (limits --prefetch).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Extract last-token activations of every layer, then probe them and estimate I(T;X), I(T;Y)."""
    _setup_logging(quiet, None if is_url(out) else Path(out) / "log.txt")
    try:
        dims = DIMENSIONS if dimensions.strip() == "all" else _split(dimensions) or ()
        config = runner.TraceConfig(
            model=model, out=str(out), revisions=_split(revisions), select=select, dimensions=tuple(dims),
            limit=limit, data_dir=str(data_dir) if data_dir else None, protocol=protocol, folds=folds, seed=seed,
            dtype=dtype, device=device, keep_checkpoints=keep_checkpoints,
            cache_dir=str(cache_dir) if cache_dir else None, trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle, blocks=blocks, analyses=_split(analyses) or (),
            mi_estimator=mi_estimator, mi_sigma=_sigma(mi_sigma), mi_max_samples=mi_max_samples,
            executor=executor, ray_address=ray_address, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
            max_retries=max_retries, prefetch=prefetch,
            cache_budget_gb=_gigabytes(cache_budget) if cache_budget else None)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=quiet, transient=False) as bars:
            result = runner.run_trace(config, _RichProgress(bars))
    except USER_ERRORS as err:
        _fail(err)
    _print_summary(runner.trace_summary(result.results))
    for name, path in result.outputs.items():
        console.print(f"{name:>16}: {path}")
    if result.failed:
        for name, error in result.failed.items():
            console.print(f"[bold red]failed:[/] {name}: {error}")
        console.print("Rerun the same command to retry the failed checkpoints; finished ones are kept.")
        raise typer.Exit(code=1)


@app.command()
def probe(
    run: Annotated[Path, typer.Argument(help="A trace run folder holding activations/.")],
    out: Annotated[Path, typer.Option(help="Folder for the new results table.")],
    protocol: ProtocolOpt = "cv",
    folds: FoldsOpt = 5,
    seed: SeedOpt = 0,
    analyses: AnalysesOpt = "probe,mi",
    mi_estimator: MiEstimatorOpt = "paper-code",
    mi_sigma: MiSigmaOpt = "50",
    mi_max_samples: MiMaxSamplesOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Re-run probes and MI on a run's stored activations, with other settings (no model needed)."""
    _setup_logging(quiet, out / "log.txt")
    try:
        config = runner.AnalysisConfig.build(_split(analyses) or (), protocol, folds, seed, mi_estimator,
                                             _sigma(mi_sigma), mi_max_samples=mi_max_samples)
        result = runner.run_probe(run, out, config)
    except USER_ERRORS as err:
        _fail(err)
    _print_summary(runner.trace_summary(result.results))
    for name in ("results.csv", "results.parquet", "manifest.json"):
        console.print(f"{name:>16}: {out / name}")


@app.command()
def phases(
    run: Annotated[Path, typer.Argument(help="A trace run folder with MI rows over several checkpoints.")],
    smooth: Annotated[int, typer.Option(help="Checkpoints in the moving average.")] = PhaseRule.smooth,
    min_drop: Annotated[float, typer.Option(help="Relative fall after the peak that counts as compression.")]
    = PhaseRule.min_drop,
    plots: Annotated[bool, typer.Option(help="Write the figures (PNG and HTML).")] = True,
) -> None:
    """Where I(T;X) peaks per dimension and layer, whether compression follows, and whether I(T;Y) rises."""
    _setup_logging(quiet=True)
    try:
        result = run_phases(run, PhaseRule(smooth=smooth, min_drop=min_drop), plots=plots)
    except USER_ERRORS as err:
        _fail(err)
    table = Table(title="fitting → compression per dimension (layer counts)")
    for col in result.summary.columns:
        table.add_column(col.replace("_", " "), no_wrap=True)
    for row in result.summary.itertuples(index=False):
        table.add_row(*["-" if pd.isna(v) else str(v) for v in row])
    Console().print(table)
    for line in result.lines:
        Console().print(line)
    for path in result.outputs:
        console.print(f"wrote {path}")


_SUMMARY_HEADERS = {"revision": "revision", "step": "step", "dimension": "dimension", "best_layer": "best layer",
                    "best_accuracy": "accuracy", "layer0_accuracy": "layer 0", "majority_baseline": "majority"}


def _print_summary(summary) -> None:
    table = Table(title="probe accuracy: best layer per checkpoint and dimension (layer l = block l's output)")
    for col in summary.columns:
        table.add_column(_SUMMARY_HEADERS.get(col, col), no_wrap=True)
    for row in summary.itertuples(index=False):
        table.add_row(*["-" if pd.isna(v) else str(v) for v in row])
    Console().print(table)


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Hub id, local folder, .gguf file, or smollm2-135m-instruct.")],
    dimensions: Annotated[str, typer.Option(help=f"all, or comma-separated: {', '.join(DIMENSIONS)}.")] = "all",
    limit: Annotated[int | None, typer.Option(help="Items per benchmark at most.")] = None,
    vector: Annotated[Path | None, typer.Option(help="A steering vector (.safetensors) to apply.")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer to steer (block output).")] = None,
    alpha: Annotated[float, typer.Option(help="Steering strength (negative: away from label 1).")] = 1.0,
    positions: Annotated[str, typer.Option(help="last | all | generated.")] = "last",
    allow_mismatch: Annotated[bool, typer.Option(help="Apply a vector from a differently shaped model.")] = False,
    perplexity_file: Annotated[Path | None, typer.Option(help="Text file for perplexity, one passage a line.")]
    = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the published CSVs.")] = None,
    dtype: Annotated[str, typer.Option(help="auto | bfloat16 | float16 | float32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    binary_mode: Annotated[str, typer.Option(help="0/1 tasks: logprob (deterministic) | generate (released "
                                                  "parse, seeded fallback).")] = "logprob",
    perplexity: PerplexityOpt = "auto",
    judge: JudgeOpt = "offline",
    truth_judge: TruthJudgeOpt = "offline",
    out: Annotated[Path | None, typer.Option(help="Write evaluate.csv (and log.txt) here.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a model on the five dimensions (and perplexity), optionally under a steering vector."""
    from .evaluate.judges import toxicity_judge
    from .evaluate.judges import truth_judge as make_truth_judge
    from .evaluate.suite import EvalConfig, Steering, evaluate_suite
    from .steering import SteeringVector

    _setup_logging(quiet, log_file=out / "log.txt" if out else None)
    try:
        dims = DIMENSIONS if dimensions.strip() == "all" else _split(dimensions) or ()
        config = EvalConfig(dimensions=tuple(dims), limit=limit, data_dir=str(data_dir) if data_dir else None,
                            perplexity_file=str(perplexity_file) if perplexity_file else None,
                            binary_mode=binary_mode, perplexity_source=perplexity)
        steering = None
        if vector is not None:
            if layer is None:
                raise ValueError("--vector needs --layer (the block whose output is steered).")
            steering = Steering(SteeringVector.load(vector), layer, alpha, positions, allow_mismatch)  # type: ignore[arg-type]
        lm = load_model(model, dtype=dtype, device=device)
        judges = {"judge": toxicity_judge(judge, config.data_dir) if "toxicity" in dims else None,
                  "truth_judge": make_truth_judge(truth_judge) if "reliability" in dims else None}
        result = evaluate_suite(lm, config, steering, **judges)
    except USER_ERRORS as err:
        _fail(err)
    title = f"{model}" + (f" + {alpha:g}·{vector.name} at layer {layer} ({positions})" if vector else "")
    table = Table(title=title)
    for col in ("dimension", "metric", "value", "n", "spec"):
        table.add_column(col, overflow="fold")
    for row in result.itertuples(index=False):
        table.add_row(row.dimension, row.metric, f"{row.value:.4f}", str(row.n), row.spec)
    Console().print(table)
    if out is not None:
        from ._io import write_with

        write_with(out / "evaluate.csv", lambda tmp: result.to_csv(tmp, index=False))
        console.print(f"    evaluate.csv: {out / 'evaluate.csv'}")


@app.command()
def steer(
    source: Annotated[str, typer.Option(help="Source model or series (hub id, local series folder, folder), or "
                                             "MODEL@REVISION for one checkpoint.")],
    target: Annotated[str, typer.Option(help="The model to steer.")],
    dimension: Annotated[str, typer.Option(help=f"One of {', '.join(DIMENSIONS)}.")],
    out: Annotated[Path, typer.Option(help="Output folder (steering.csv, best.csv, traces).")],
    revisions: Annotated[str | None, typer.Option(help="Comma-separated source revisions.")] = None,
    select: Annotated[str | None, typer.Option(help=SELECTOR_HELP)] = None,
    layers: Annotated[str, typer.Option(help="Comma-separated layers (block outputs).")] = "14",
    alphas: Annotated[str, typer.Option(help="Comma-separated strengths; negative moves away from label 1.")]
    = "-2,-1,1,2",
    positions: Annotated[str, typer.Option(help="last | all | generated.")] = "last",
    limit: Annotated[int | None, typer.Option(help="Evaluation items at most.")] = None,
    source_limit: Annotated[int | None, typer.Option(help="Statements used to build each vector.")] = None,
    ppl_budget: Annotated[float, typer.Option(help="Best α only within this × unsteered perplexity.")] = 1.33,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the published CSVs.")] = None,
    dtype: Annotated[str, typer.Option(help="auto | bfloat16 | float16 | float32.")] = "auto",
    allow_mismatch: Annotated[bool, typer.Option(help="Apply vectors across differently shaped models.")] = False,
    perplexity: PerplexityOpt = "auto",
    perplexity_file: Annotated[Path | None, typer.Option(help="Text file for perplexity, one passage a line.")]
    = None,
    judge: JudgeOpt = "offline",
    truth_judge: TruthJudgeOpt = "offline",
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    gpus_per_task: GpusOpt = 0.0,
    cpus_per_task: CpusOpt = 1.0,
    max_retries: RetriesOpt = 2,
    quiet: QuietOpt = False,
) -> None:
    """Build steering vectors from source checkpoints and sweep layer × α on a target model."""
    from .sweep import SteerConfig, best_alphas, run_steer

    _setup_logging(quiet, log_file=out / "log.txt")
    logging.getLogger("trusttrace.evaluate.suite").setLevel(logging.WARNING)  # the sweep's bar says where it is
    try:
        config = SteerConfig(
            source=source, target=target, dimension=dimension, out=str(out), revisions=_split(revisions),
            select=select, layers=tuple(int(v) for v in _split(layers) or ()),
            alphas=tuple(float(v) for v in _split(alphas) or ()), positions=positions, limit=limit,
            source_limit=source_limit, ppl_budget=ppl_budget, data_dir=str(data_dir) if data_dir else None,
            dtype=dtype, allow_mismatch=allow_mismatch, judge=judge, truth_judge=truth_judge,
            perplexity_source=perplexity, perplexity_file=str(perplexity_file) if perplexity_file else None,
            executor=executor, ray_address=ray_address, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
            max_retries=max_retries)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=quiet) as bars:
            task = bars.add_task("steering sweep", total=None)

            def advance(done: int, total: int, what: str) -> None:
                bars.update(task, completed=done, total=total, description=f"steering sweep: {what}")

            table = run_steer(config, advance)
    except USER_ERRORS as err:
        _fail(err)
    best = best_alphas(table, dimension, ppl_budget)
    result = Table(title=f"best α per source for {dimension} (perplexity ≤ {ppl_budget}× unsteered)")
    for col in best.columns:
        result.add_column(col)
    for row in best.itertuples(index=False):
        result.add_row(*["-" if pd.isna(v) else (f"{v:.4f}" if isinstance(v, float) else str(v)) for v in row])
    Console().print(result)
    for name in ("steering.csv", "best.csv", "correlation.csv", "source", "target", "log.txt"):
        if (out / name).exists():
            console.print(f"{name:>16}: {out / name}")


@app.command()
def checkpoints(
    model: Annotated[str, typer.Argument(help="Hub id, local series folder, or checkpoint.")],
    select: Annotated[str | None, typer.Option(help=SELECTOR_HELP)] = None,
    revisions: Annotated[str | None, typer.Option(help="Comma-separated hub revisions.")] = None,
) -> None:
    """List the checkpoints a trace would visit, in order."""
    _setup_logging(quiet=True)
    try:
        series = CheckpointSeries.resolve(model, _split(revisions)).select(select)
    except USER_ERRORS as err:
        _fail(err)
    table = Table(title=f"{model}: {len(series)} checkpoints ({series.source})")
    for col in ("#", "name", "step", "commit"):
        table.add_column(col)
    for i, c in enumerate(series):
        table.add_row(str(i), c.name, "" if c.step is None else str(c.step), (c.commit or "")[:12])
    Console().print(table)


@app.command()
def datasets() -> None:
    """The five dimensions, their published files and label polarity."""
    table = Table(title="trustworthiness dimensions")
    for col in ("dimension", "file", "rows", "label 1", "label 0"):
        table.add_column(col)
    for spec in SPECS.values():
        table.add_row(spec.dimension, f"{spec.file}.csv", str(spec.rows), spec.label1, spec.label0)
    Console().print(table)


class _PretrainBars:
    """Renders ``pretrain`` progress: stages as log lines, steps as a bar with the running loss."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.task: TaskID | None = None

    def stage(self, text: str) -> None:
        logging.getLogger("trusttrace.pretrain").info(text)

    def start(self, total: int, done: int) -> None:
        self.task = self.bars.add_task("pre-training", total=total, completed=done)

    def step(self, step: int, loss: float) -> None:
        if self.task is not None:
            self.bars.update(self.task, completed=step + 1, description=f"pre-training (loss {loss:.3f})")


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="Run folder (created; a rerun resumes from its last checkpoint).")],
    corpus: Annotated[str, typer.Option(help="builtin (Debian dict-gcide + fortunes) | PATH (.txt file or folder) "
                                             "| hf:DATASET[:COLUMN].")] = "builtin",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 1000,
    checkpoints: Annotated[str, typer.Option(help="log:N | every:K | comma-separated steps (0 and the last "
                                                  "are in log:N).")] = "log:16",
    hidden_size: Annotated[int, typer.Option(help="Model width.")] = 256,
    layers: Annotated[int, typer.Option(help="Decoder blocks.")] = 6,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    intermediate_size: Annotated[int, typer.Option(help="MLP width.")] = 688,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 8192,
    seq_len: Annotated[int, typer.Option(help="Tokens per training sequence.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (warm-up, then cosine decay).")] = 2e-3,
    seed: SeedOpt = 0,
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast where fast) | bf16 | fp32.")] = "auto",
    trace: Annotated[str | None, typer.Option(help="Trace these dimensions at every checkpoint: all, or "
                                                   "comma-separated.")] = None,
    trace_limit: Annotated[int | None, typer.Option(help="Statements per traced dimension.")] = 600,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the published CSVs (for --trace).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Pre-train a small Llama model from scratch, saving (and optionally tracing) a checkpoint series."""
    from .pretrain import PretrainConfig
    from .pretrain import pretrain as run_pretrain

    _setup_logging(quiet, out / "log.txt")
    try:
        dims = () if not trace else DIMENSIONS if trace.strip() == "all" else _split(trace) or ()
        config = PretrainConfig(out=str(out), corpus=corpus, steps=steps, checkpoints=checkpoints,
                                hidden_size=hidden_size, n_layers=layers, n_heads=heads,
                                intermediate_size=intermediate_size, vocab_size=vocab_size, seq_len=seq_len,
                                batch_size=batch_size, lr=lr, seed=seed, precision=precision, trace=tuple(dims),
                                trace_limit=trace_limit, data_dir=str(data_dir) if data_dir else None)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=quiet) as bars:
            result = run_pretrain(config, _PretrainBars(bars))
    except USER_ERRORS as err:
        _fail(err)
    console.print(f"{len(result.checkpoints)} checkpoints in {result.seconds:.0f} s")
    for name, path in result.outputs.items():
        if path.exists():
            console.print(f"{name:>16}: {path}")


@app.command()
def finetune(
    model: Annotated[Path, typer.Option(help="Checkpoint folder to tune (e.g. RUN/checkpoints/last).")],
    out: Annotated[Path, typer.Option(help="Folder for the fine-tuned model.")],
    data: Annotated[str, typer.Option(help="builtin (TruthfulQA train Q→A + dev-half completions) | a JSONL "
                                           "file of prompt/response rows.")] = "builtin",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 5e-4,
    seed: SeedOpt = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the published CSVs.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Instruction-tune a checkpoint into a small chat model (the steering target)."""
    from .finetune import FinetuneConfig
    from .finetune import finetune as run_finetune

    _setup_logging(quiet)
    try:
        config = FinetuneConfig(model=str(model), out=str(out), data=data, steps=steps, batch_size=batch_size,
                                lr=lr, seed=seed, data_dir=str(data_dir) if data_dir else None)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=quiet) as bars:
            task = bars.add_task("fine-tuning", total=steps)
            folder = run_finetune(config, lambda done, total, loss: bars.update(
                task, completed=done, description=f"fine-tuning (loss {loss:.3f})"))
    except USER_ERRORS as err:
        _fail(err)
    console.print(f"fine-tuned model: {folder}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Demo folder (a rerun resumes every stage).")] = Path("runs/demo"),
    corpus: Annotated[str, typer.Option(help="builtin | PATH | hf:DATASET[:COLUMN].")] = "builtin",
    steps: Annotated[int, typer.Option(help="Pre-training steps.")] = 1000,
    trace_limit: Annotated[int, typer.Option(help="Statements per dimension traced at each checkpoint.")] = 600,
    steer_limit: Annotated[int, typer.Option(help="Evaluation items per steered result.")] = 100,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the published CSVs.")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Pre-train a small model with live tracing, fine-tune it, steer it with its own checkpoints: offline."""
    from .demo import DemoConfig, run_demo

    _setup_logging(False, out / "log.txt")
    try:
        config = DemoConfig(out=str(out), corpus=corpus, steps=steps, trace_limit=trace_limit,
                            steer_limit=steer_limit, data_dir=str(data_dir) if data_dir else None, seed=seed)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bars:
            run_demo(config, lambda text: console.print(f"[bold]{text}[/]"), _PretrainBars(bars))
    except USER_ERRORS as err:
        _fail(err)
    Console().print((out / "summary.md").read_text())
    for name in ("report/index.html", "summary.md", "summary.json", "pretrain", "pretrain/trace", "chat"):
        console.print(f"{name:>16}: {out / name}")


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folder(s) (trace, steer, pretrain, demo) or results CSVs; "
                                                     "several are overlaid.")],
    out: Annotated[Path | None, typer.Option(help="Report folder (default RUN/report, or RUN/report-compare).")]
    = None,
    png: Annotated[bool, typer.Option(help="Also write a PNG of each figure (needs kaleido and Chromium).")] = True,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
) -> None:
    """Draw one offline HTML page (and PNGs) of a run's dynamics from its tables."""
    from .report import build_report

    _setup_logging(quiet=True)
    try:
        result = build_report(runs, out, png=png)
    except USER_ERRORS as err:
        _fail(err)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"{len(result.figures)} figures, {len(result.pngs)} PNGs")
    console.print(f"{'report':>16}: {result.page}")
    if open_page:
        import webbrowser

        webbrowser.open(result.page.resolve().as_uri())


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="trusttrace")


if __name__ == "__main__":
    main()
