"""Commands that train: pretrain (with optional live tracing), finetune, and the demo that runs it all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..core.progress import Progress
from ._shared import (
    DataDirOpt,
    DeviceOpt,
    OverwriteOpt,
    QuietOpt,
    RevisionOpt,
    TrainSeedOpt,
    WaitOpt,
    app,
    command_errors,
    console,
    dimensions,
    model_at,
    path_or_none,
    print_outputs,
    progress_bars,
    quiet_transformers,
    setup_logging,
    writing,
)
from .choices import Precision


def _live_tracing(progress: Progress, trace: Callable[[Path, int], None]) -> Callable[[Path, int], None]:
    """The pre-training hook: say which step is traced, then trace it."""

    def hook(folder: Path, step: int) -> None:
        progress.stage(f"tracing step {step}")
        trace(folder, step)

    return hook


@app.command()
@command_errors
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
    seed: TrainSeedOpt = 0,
    precision: Annotated[Precision, typer.Option(help="bf16 autocast or fp32 (auto: bf16 where the hardware runs it "
                                                      "fast).")] = Precision.auto,
    device: DeviceOpt = "auto",
    trace: Annotated[str | None, typer.Option(help="Trace these dimensions at every checkpoint into OUT/trace: all, "
                                                   "or comma-separated.")] = None,
    trace_limit: Annotated[int | None, typer.Option(help="Statements per traced dimension.")] = 600,
    data_dir: DataDirOpt = None,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pre-train a small Llama model from scratch, saving (and optionally tracing) a checkpoint series."""
    from ..runs.layout import PretrainLayout

    setup_logging(quiet, PretrainLayout(out).log)
    from ..runs.outputs import start_over
    from ..trace.live import tracer
    from ..training.pretrain import PretrainConfig, run_pretrain

    quiet_transformers()
    config = PretrainConfig(out=str(out), corpus=corpus, steps=steps, checkpoints=checkpoints,
                            hidden_size=hidden_size, n_layers=layers, n_heads=heads,
                            intermediate_size=intermediate_size, vocab_size=vocab_size, seq_len=seq_len,
                            batch_size=batch_size, lr=lr, seed=seed, precision=precision.value,
                            device=device)
    trace_dir = PretrainLayout(out).trace.root
    traced = dimensions(trace, "--trace") if trace else None
    with writing(out, "pretrain", wait), progress_bars(quiet) as progress:
        start_over(out, overwrite, ("pretrain",))
        hook = _live_tracing(progress, tracer(trace_dir, traced, limit=trace_limit,
                                              data_dir=path_or_none(data_dir), seed=seed)) if traced else None
        result = run_pretrain(config, progress, hook)
    console.print(f"{len(result.checkpoints)} checkpoints in {result.seconds:.0f} s")
    print_outputs({**result.outputs, **({"trace": trace_dir} if trace_dir.exists() else {})})


@app.command()
@command_errors
def finetune(
    model: Annotated[str, typer.Option(help="Checkpoint folder to tune (e.g. RUN/checkpoints/last), or a hub id "
                                            "(MODEL@REV for a revision).")],
    out: Annotated[Path, typer.Option(help="Folder for the fine-tuned model.")],
    revision: RevisionOpt = None,
    data: Annotated[str, typer.Option(help="builtin (TruthfulQA train Q→A + dev-half completions) | a JSONL "
                                           "file of prompt/response rows.")] = "builtin",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 5e-4,
    seed: TrainSeedOpt = 0,
    precision: Annotated[Precision, typer.Option(help="bf16 autocast or fp32 (auto: bf16 where fast).")]
    = Precision.auto,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Instruction-tune a checkpoint into a small chat model (the steering target)."""
    setup_logging(quiet)
    from ..runs.outputs import start_over
    from ..training.finetune import FinetuneConfig, run_finetune

    quiet_transformers()
    name, rev = model_at(model, revision)
    config = FinetuneConfig(model=name, revision=rev, out=str(out), data=data, steps=steps, batch_size=batch_size,
                            lr=lr, seed=seed, data_dir=path_or_none(data_dir), precision=precision.value,
                            device=device)
    with writing(out, "finetune", wait, beside=True), progress_bars(quiet) as progress:
        start_over(out, overwrite, ("finetune",))
        result = run_finetune(config, progress)
    console.print(f"fine-tuned model: {result.out}")


@app.command()
@command_errors
def demo(
    out: Annotated[Path, typer.Option(help="Demo folder (a rerun resumes every stage).")] = Path("runs/demo"),
    corpus: Annotated[str, typer.Option(help="builtin | PATH | hf:DATASET[:COLUMN].")] = "builtin",
    budget: Annotated[str | None, typer.Option(
        help="Time for the whole demo (15m, 900s, 1h; default 15m): the model size, steps, checkpoints and "
             "statements are chosen from this machine's measured speed. 'none': the full plan, however long. "
             "Not with --steps/--trace-limit/--steer-limit.")] = None,
    steps: Annotated[int | None, typer.Option(help="Pre-training steps (instead of a --budget plan).")] = None,
    trace_limit: Annotated[int | None, typer.Option(
        help="Statements per dimension traced at each checkpoint (instead of a --budget plan).")] = None,
    steer_limit: Annotated[int | None, typer.Option(
        help="Evaluation items per steered result (instead of a --budget plan).")] = None,
    data_dir: DataDirOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of everything: weights, batches, folds, vectors' statements.")] = 0,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
) -> None:
    """Pre-train a small model with live tracing, fine-tune it, steer it with its own checkpoints: offline."""
    from ..runs.layout import DemoLayout

    setup_logging(False, DemoLayout(out).log)
    from ..core.errors import OptionError
    from ..demo.job import DemoConfig, run_demo
    from ..demo.plan import parse_budget
    from ..runs.outputs import start_over

    quiet_transformers()
    sizes = {k: v for k, v in (("steps", steps), ("trace_limit", trace_limit), ("steer_limit", steer_limit))
             if v is not None}
    if sizes and budget is not None:
        given = ", ".join("--" + k.replace("_", "-") for k in sizes)
        raise OptionError(f"--budget {budget} and {given} both size the demo: give --budget to have the sizes "
                          f"chosen for this machine, or {given} (and --budget none is implied), not both.")
    budget_s = None if sizes else parse_budget(budget or "15m")
    default = DemoConfig()
    config = DemoConfig(out=str(out), corpus=corpus, data_dir=path_or_none(data_dir), seed=seed,
                        budget_s=budget_s, steps=default.steps if steps is None else steps,
                        trace_limit=default.trace_limit if trace_limit is None else trace_limit,
                        steer_limit=default.steer_limit if steer_limit is None else steer_limit)
    with writing(out, "demo", wait), progress_bars(False) as progress:
        start_over(out, overwrite, ("demo",))
        result = run_demo(config, progress)
    Console().print(result.outputs["summary.md"].read_text())
    print_outputs(result.outputs)


@app.command()
@command_errors
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folder(s) (trace, steer, pretrain, demo) or results CSVs; "
                                                     "several are overlaid.")],
    out: Annotated[Path | None, typer.Option(help="Report folder (default RUN/report, or RUN/report-compare).")]
    = None,
    png: Annotated[bool, typer.Option(help="Also write a PNG of each figure (needs kaleido and Chromium).")] = True,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
) -> None:
    """Draw one offline HTML page (and PNGs) of a run's dynamics from its tables."""
    setup_logging(quiet=True)
    from ..report import ReportConfig, run_report

    with writing(None, "report", wait):  # run_report holds its folder once it knows where it goes
        result = run_report(ReportConfig(tuple(str(r) for r in runs), path_or_none(out), png, overwrite))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"{len(result.figures)} figures, {len(result.pngs)} PNGs")
    print_outputs({"report": result.page})
    if open_page:
        import webbrowser

        webbrowser.open(result.page.resolve().as_uri())
