"""Commands that run a model on the evaluation suite: evaluate (optionally steered) and steer (a sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..names import BINARY_MODES, DIMENSIONS, SELECTOR_HELP, VECTOR_METHODS
from ._shared import (
    CpusOpt,
    DataDirOpt,
    DeviceOpt,
    DtypeOpt,
    ExecutorOpt,
    GpusOpt,
    JudgeOpt,
    PerplexityFileOpt,
    PerplexityOpt,
    PositionsOpt,
    QuietOpt,
    RayAddressOpt,
    RetriesOpt,
    TruthJudgeOpt,
    app,
    dimensions,
    executor_config,
    fail,
    path_or_none,
    print_outputs,
    print_table,
    progress_bars,
    quiet_transformers,
    setup_logging,
    split,
    user_errors,
)


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Hub id, local folder, .gguf file, or smollm2-135m-instruct.")],
    dims: Annotated[str, typer.Option("--dimensions", help=f"all, or comma-separated: {', '.join(DIMENSIONS)}.")]
    = "all",
    limit: Annotated[int | None, typer.Option(help="Items per benchmark at most.")] = None,
    vector: Annotated[Path | None, typer.Option(help="A steering vector (.safetensors) to apply.")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer to steer (block output).")] = None,
    alpha: Annotated[float, typer.Option(help="Steering strength (negative: away from label 1).")] = 1.0,
    positions: PositionsOpt = "last",
    allow_mismatch: Annotated[bool, typer.Option(help="Apply a vector from a differently shaped model.")] = False,
    perplexity_file: PerplexityFileOpt = None,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    binary_mode: Annotated[str, typer.Option(help=f"0/1 tasks: {' | '.join(BINARY_MODES)} (logprob: deterministic; "
                                                  "generate: the released parse, seeded fallback).")] = "logprob",
    perplexity: PerplexityOpt = "auto",
    judge: JudgeOpt = "offline",
    truth_judge: TruthJudgeOpt = "offline",
    out: Annotated[Path | None, typer.Option(help="Write evaluate.csv (and log.txt) here.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a model on the five dimensions (and perplexity), optionally under a steering vector."""
    from ..layout import EvaluateLayout

    setup_logging(quiet, log_file=EvaluateLayout(out).log if out else None)
    try:
        from ..evaluate import EvalConfig, EvaluateConfig, run_evaluate

        quiet_transformers()
        suite = EvalConfig(dimensions=dimensions(dims), limit=limit, data_dir=path_or_none(data_dir),
                           perplexity_file=path_or_none(perplexity_file), binary_mode=binary_mode,
                           perplexity_source=perplexity)
        result = run_evaluate(EvaluateConfig(
            model=model, suite=suite, vector=path_or_none(vector), layer=layer, alpha=alpha, positions=positions,
            allow_mismatch=allow_mismatch, judge=judge, truth_judge=truth_judge, dtype=dtype, device=device,
            out=path_or_none(out)))
    except user_errors() as err:
        fail(err)
    title = f"{model}" + (f" + {alpha:g}·{vector.name} at layer {layer} ({positions})" if vector else "")
    table = Table(title=title)
    for col in ("dimension", "metric", "value", "n", "spec"):
        table.add_column(col, overflow="fold")
    for row in result.table.itertuples(index=False):
        table.add_row(row.dimension, row.metric, f"{row.value:.4f}", str(row.n), row.spec)
    Console().print(table)
    print_outputs(result.outputs)


@app.command()
def steer(
    source: Annotated[str, typer.Option(help="Source model or series (hub id, local series folder, folder), or "
                                             "MODEL@REVISION for one checkpoint.")],
    target: Annotated[str, typer.Option(help="The model to steer.")],
    dimension: Annotated[str, typer.Option(help=f"One of {', '.join(DIMENSIONS)}.")],
    out: Annotated[Path, typer.Option(help="Output folder (steering.csv, best.csv, vectors/, traces).")],
    revisions: Annotated[str | None, typer.Option(help="Comma-separated source revisions.")] = None,
    select: Annotated[str | None, typer.Option(help=SELECTOR_HELP)] = None,
    layers: Annotated[str, typer.Option(help="Comma-separated layers (block outputs).")] = "14",
    alphas: Annotated[str, typer.Option(help="Comma-separated strengths; negative moves away from label 1.")]
    = "-2,-1,1,2",
    positions: PositionsOpt = "last",
    method: Annotated[str, typer.Option(help=f"Vector builder: {' | '.join(VECTOR_METHODS)}.")] = "paper-code",
    limit: Annotated[int | None, typer.Option(help="Evaluation items at most.")] = None,
    source_limit: Annotated[int | None, typer.Option(help="Statements used to build each vector.")] = None,
    ppl_budget: Annotated[float, typer.Option(help="Best α only within this × unsteered perplexity.")] = 1.33,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    allow_mismatch: Annotated[bool, typer.Option(help="Apply vectors across differently shaped models.")] = False,
    perplexity: PerplexityOpt = "auto",
    perplexity_file: PerplexityFileOpt = None,
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
    import logging

    from ..layout import SteerLayout

    setup_logging(quiet, log_file=SteerLayout(out).log)
    logging.getLogger("trusttrace.evaluate.suite").setLevel(logging.WARNING)  # the sweep's bar says where it is
    try:
        from ..sweep import SteerConfig, run_steer

        quiet_transformers()
        config = SteerConfig(
            source=source, target=target, dimension=dimension, out=str(out), revisions=split(revisions),
            select=select, layers=tuple(int(v) for v in split(layers) or ()),
            alphas=tuple(float(v) for v in split(alphas) or ()), positions=positions, method=method, limit=limit,
            source_limit=source_limit, ppl_budget=ppl_budget, data_dir=path_or_none(data_dir), dtype=dtype,
            device=device, allow_mismatch=allow_mismatch, judge=judge, truth_judge=truth_judge,
            perplexity_source=perplexity, perplexity_file=path_or_none(perplexity_file),
            executor=executor_config(executor, ray_address, gpus_per_task, cpus_per_task, max_retries))
        with progress_bars(quiet) as progress:
            result = run_steer(config, progress)
    except user_errors() as err:
        fail(err)
    print_table(result.best, f"best α per source for {dimension} (perplexity ≤ {ppl_budget}× unsteered)")
    print_outputs(result.outputs)
