"""Commands that run a model on the evaluation suite: evaluate (optionally steered) and steer (a sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..core.errors import OptionError
from ..core.names import DIMENSIONS, SELECTOR_HELP
from ._shared import (
    EXIT_FAILURE,
    CpusOpt,
    DataDirOpt,
    DeviceOpt,
    DtypeOpt,
    ExecutorOpt,
    GpusOpt,
    JudgeOpt,
    OverwriteOpt,
    PerplexityFileOpt,
    PerplexityOpt,
    PositionsOpt,
    ProxyBaseOpt,
    QuietOpt,
    RayAddressOpt,
    RetriesOpt,
    RevisionOpt,
    TruthJudgeOpt,
    WaitOpt,
    app,
    command_errors,
    console,
    dimensions,
    executor_config,
    model_at,
    numbers,
    path_or_none,
    print_outputs,
    print_table,
    progress_bars,
    quiet_transformers,
    setup_logging,
    split,
    writing,
)
from .choices import (
    BinaryMode,
    Dimension,
    Dtype,
    Executor,
    PerplexitySource,
    Positions,
    QuestionSet,
    TruthfulQASpec,
    VectorMethod,
)


@app.command()
@command_errors
def evaluate(
    model: Annotated[str, typer.Option(help="Hub id (MODEL@REV for a revision), local folder, .gguf file, or "
                                            "smollm2-135m-instruct.")],
    revision: RevisionOpt = None,
    dims: Annotated[str, typer.Option("--dimensions", help=f"all, or comma-separated: {', '.join(DIMENSIONS)}.")]
    = "all",
    limit: Annotated[int | None, typer.Option(help="Items per benchmark at most.")] = None,
    vector: Annotated[Path | None, typer.Option(help="A steering vector (.safetensors) to apply.")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer to steer (block output).")] = None,
    alpha: Annotated[float, typer.Option(help="Steering strength (negative: away from label 1).")] = 1.0,
    positions: PositionsOpt = Positions.last,
    allow_mismatch: Annotated[bool, typer.Option(help="Apply a vector from a model of another depth or vocabulary "
                                                      "(never another hidden size).")] = False,
    perplexity_file: PerplexityFileOpt = None,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = "auto",
    binary_mode: Annotated[BinaryMode, typer.Option(help="0/1 tasks (logprob: deterministic; generate: the "
                                                         "released parse, seeded fallback).")] = BinaryMode.logprob,
    perplexity: PerplexityOpt = PerplexitySource.auto,
    truthfulqa_spec: Annotated[TruthfulQASpec, typer.Option(help="TruthfulQA MC as the paper scores it (mc1, mc2 on "
                                                                 "the 407 held-out questions), as lm-eval does "
                                                                 "(truthfulqa_mc1, truthfulqa_mc2), or both.")]
    = TruthfulQASpec.paper,
    lmeval_questions: Annotated[QuestionSet, typer.Option(help="The lm-eval spec's questions: all (the benchmark) "
                                                               "or test (the 407 held-out).")] = QuestionSet.all,
    judge: JudgeOpt = "offline",
    truth_judge: TruthJudgeOpt = "offline",
    proxy_tuned: Annotated[str | None, typer.Option(help="Proxy-tune the model (App. G): add β·(logits of this tuned "
                                                         "model − logits of --proxy-base). MODEL@REV for a "
                                                         "revision.")] = None,
    proxy_base: ProxyBaseOpt = None,
    beta: Annotated[float | None, typer.Option(help="Strength β of the proxy-tuning offset (default 1, the "
                                                    "paper's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write evaluate.csv, .parquet, manifest.json and log.txt here.")]
    = None,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a model on the five dimensions (and perplexity), optionally under a steering vector or
    proxy-tuned by a tuned model's logit offset."""
    from ..runs.layout import EvaluateLayout

    setup_logging(quiet, log_file=EvaluateLayout(out).log if out else None)
    from ..evaluate import EvaluateConfig, SuiteConfig, run_evaluate
    from ..runs.outputs import start_over

    quiet_transformers()
    suite = SuiteConfig(dimensions=dimensions(dims), limit=limit, data_dir=path_or_none(data_dir),
                        perplexity_file=path_or_none(perplexity_file), binary_mode=binary_mode.value,
                        perplexity_source=perplexity.value, truthfulqa_spec=truthfulqa_spec.value,
                        lmeval_questions=lmeval_questions.value)
    name, rev = model_at(model, revision)
    if beta is not None and proxy_tuned is None and proxy_base is None:
        raise OptionError(f"--beta {beta:g} is the strength of a proxy-tuning offset; give it with --proxy-tuned "
                          "and --proxy-base, or leave it out.")
    config = EvaluateConfig(
        model=name, revision=rev, suite=suite, vector=path_or_none(vector), layer=layer, alpha=alpha,
        positions=positions.value, allow_mismatch=allow_mismatch, judge=judge, truth_judge=truth_judge,
        dtype=dtype.value, device=device, out=path_or_none(out), proxy_tuned=proxy_tuned,
        proxy_base=proxy_base, beta=1.0 if beta is None else beta)
    with writing(out, "evaluate", wait):
        if out is not None:
            start_over(out, overwrite, ("evaluate",))  # before the model loads
        result = run_evaluate(config)
    title = f"{model}" + (f" + {alpha:g}·{vector.name} at layer {layer} ({positions.value})" if vector else "")
    if proxy_tuned is not None:
        title += f" + {1.0 if beta is None else beta:g}·({proxy_tuned} − {proxy_base})"
    table = Table(title=title)
    for col in ("dimension", "metric", "value", "n", "spec"):
        table.add_column(col, overflow="fold")
    for row in result.table.itertuples(index=False):
        table.add_row(row.dimension, row.metric, f"{row.value:.4f}", str(row.n), row.spec)
    Console().print(table)
    print_outputs(result.outputs)


@app.command()
@command_errors
def steer(
    source: Annotated[str, typer.Option(help="Source model or series (hub id, local series folder, folder), or "
                                             "MODEL@REVISION for one checkpoint.")],
    target: Annotated[str, typer.Option(help="The model to steer (MODEL@REV for a revision).")],
    dimension: Annotated[Dimension, typer.Option(help="The dimension to steer.")],
    out: Annotated[Path, typer.Option(help="Output folder (steering.csv, best.csv, vectors/, traces).")],
    revisions: Annotated[str | None, typer.Option(help="Comma-separated source revisions.")] = None,
    select: Annotated[str | None, typer.Option(help=SELECTOR_HELP)] = None,
    layers: Annotated[str, typer.Option(help="Comma-separated layers (block outputs).")] = "14",
    alphas: Annotated[str, typer.Option(help="Comma-separated strengths; negative moves away from label 1.")]
    = "-2,-1,1,2",
    positions: PositionsOpt = Positions.last,
    method: Annotated[VectorMethod, typer.Option(help="Vector builder (see trusttrace.steering.vector).")]
    = VectorMethod.paper_code,
    limit: Annotated[int | None, typer.Option(help="Evaluation items at most.")] = None,
    source_limit: Annotated[int | None, typer.Option(help="Statements used to build each vector.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Source statements longer than N tokens keep their last N; "
                                                        "without it, one longer than the source's context is "
                                                        "refused.", min=1)] = None,
    ppl_budget: Annotated[float, typer.Option(help="Best α only within this × unsteered perplexity.")] = 1.33,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = "auto",
    allow_mismatch: Annotated[bool, typer.Option(help="Apply vectors across models of another depth or vocabulary "
                                                      "(never another hidden size).")] = False,
    perplexity: PerplexityOpt = PerplexitySource.auto,
    perplexity_file: PerplexityFileOpt = None,
    judge: JudgeOpt = "offline",
    truth_judge: TruthJudgeOpt = "offline",
    proxy_tuned: Annotated[str | None, typer.Option(help="Also evaluate each source checkpoint proxy-tuned by this "
                                                         "tuned model (MODEL or MODEL@REV) minus --proxy-base, "
                                                         "and the tuned model itself (App. G).")] = None,
    proxy_base: ProxyBaseOpt = None,
    proxy_betas: Annotated[str | None, typer.Option(help="Comma-separated proxy-tuning strengths β (default 1; "
                                                         "0 is the checkpoint alone).")] = None,
    random_vectors: Annotated[int, typer.Option(help="Random directions of the vectors' norm evaluated at every "
                                                    "(layer, α ≠ 0), the control every vector is tested against "
                                                    "(rows random-<k> and random; 0: none).", min=0)] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the random directions (draw k uses seed + k).")] = 0,
    baseline_prompt: Annotated[str, typer.Option(help="The prompting baseline (rows 'prompt'): builtin (the "
                                                      "versioned per-dimension instruction), none, or a text file "
                                                      "holding your instruction.")] = "builtin",
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddressOpt = None,
    gpus_per_task: GpusOpt = 0.0,
    cpus_per_task: CpusOpt = 1.0,
    max_retries: RetriesOpt = 2,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build steering vectors from source checkpoints and sweep layer × α on a target model, beside random
    directions, a prompting baseline (and optionally the source checkpoints proxy-tuned)."""
    import logging

    from ..runs.layout import SteerLayout

    setup_logging(quiet, log_file=SteerLayout(out).log)
    logging.getLogger("trusttrace.evaluate.suite").setLevel(logging.WARNING)  # the sweep's bar says where it is
    from ..runs.outputs import start_over
    from ..steer.job import SteerConfig, run_steer

    quiet_transformers()
    config = SteerConfig(
        source=source, target=target, dimension=dimension.value, out=str(out), revisions=split(revisions),
        select=select, layers=numbers(layers, "--layers", int), alphas=numbers(alphas, "--alphas", float),
        positions=positions.value, method=method.value, limit=limit, source_limit=source_limit,
        max_statement_tokens=max_tokens,
        ppl_budget=ppl_budget, data_dir=path_or_none(data_dir), dtype=dtype.value, device=device,
        allow_mismatch=allow_mismatch, judge=judge, truth_judge=truth_judge, perplexity_source=perplexity.value,
        perplexity_file=path_or_none(perplexity_file), proxy_tuned=proxy_tuned, proxy_base=proxy_base,
        proxy_betas=numbers(proxy_betas, "--proxy-betas", float) if proxy_betas is not None else (1.0,),
        executor=executor_config(executor, ray_address, gpus_per_task, cpus_per_task, max_retries),
        overwrite=overwrite, random_vectors=random_vectors, seed=seed, baseline_prompt=baseline_prompt)
    if proxy_betas is not None and proxy_tuned is None:
        raise OptionError(f"--proxy-betas {proxy_betas} without --proxy-tuned and --proxy-base: the strengths "
                          "are for proxy-tuning; give both models, or drop --proxy-betas.")
    start_over(out, overwrite, ("steer",), remove=False)  # run_steer removes it once its inputs pass
    with writing(out, "steer", wait), progress_bars(quiet) as progress:
        result = run_steer(config, progress)
    print_table(result.best, f"best α per source for {dimension.value} (perplexity ≤ {ppl_budget}× unsteered)")
    console.print(result.verdict)
    print_outputs(result.outputs)
    if result.failed:
        for label, error in result.failed.items():
            console.print(f"[bold red]failed:[/] {label}: {error}")
        console.print("The sweep is partial; rerun the same command to retry the failed evaluations.")
        raise typer.Exit(code=EXIT_FAILURE)
