"""Commands over checkpoint series and stored activations: trace, probe, phases, checkpoints, datasets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..core.errors import OptionError
from ..core.names import DEFAULT_MI_BOOTSTRAP as DEFAULT_BOOTSTRAP
from ..core.names import DEFAULT_MI_PERMUTATIONS as DEFAULT_PERMUTATIONS
from ..core.names import DIMENSIONS, MI_CHECKS, SELECTOR_HELP

if TYPE_CHECKING:
    import pandas as pd

from ._shared import (
    AnalysesOpt,
    ControlsOpt,
    CpusOpt,
    DataDirOpt,
    DeviceOpt,
    DtypeOpt,
    ExecutorOpt,
    FoldsOpt,
    GpusOpt,
    MiBootstrapOpt,
    MiChecksOpt,
    MiEstimatorOpt,
    MiMaxSamplesOpt,
    MiPermutationsOpt,
    MiSigmaOpt,
    OverwriteOpt,
    ProtocolOpt,
    QuietOpt,
    RayAddressOpt,
    RetriesOpt,
    SeedOpt,
    SeedsOpt,
    TransferOpt,
    WaitOpt,
    app,
    command_errors,
    console,
    dimensions,
    executor_config,
    gigabytes,
    model_at,
    parse_checks,
    parse_controls,
    path_or_none,
    print_outputs,
    print_table,
    progress_bars,
    quiet_transformers,
    setup_logging,
    sigma,
    split,
    transfer_pairs,
    writing,
)
from .choices import Batching, Dtype, Executor, MiEstimator, Protocol

DEFAULT_CHECKS = ",".join(MI_CHECKS)
SUMMARY_HEADERS = {"best_accuracy": "accuracy", "ci": "95 % CI", "layer0_accuracy": "layer 0",
                   "majority_baseline": "majority", "control_lexical": "lexical", "control_random_init": "random init",
                   "best_selectivity": "selectivity", "selectivity_layer": "at layer"}
SUMMARY_TITLE = "probe accuracy: best layer per checkpoint and dimension (layer l = block l's output)"
EMERGENCE_TITLE = ("when each dimension emerges: the first checkpoint from which selectivity's 95 % interval stays "
                   "above zero")


def print_summaries(results: pd.DataFrame) -> None:
    """The best-layer table and, over a series, the step each dimension emerges."""
    from ..runs.tables import emergence_summary, trace_summary

    print_table(trace_summary(results), SUMMARY_TITLE, SUMMARY_HEADERS)
    emerged = emergence_summary(results)
    if not emerged.empty:
        print_table(emerged, EMERGENCE_TITLE)


@app.command()
@command_errors
def trace(
    model: Annotated[str, typer.Option(help="Hub id (MODEL@REV: that revision alone), local series folder, "
                                            "checkpoint folder, .gguf file, or smollm2-135m-instruct.")],
    out: Annotated[str, typer.Option(help="Run folder (created; a rerun resumes): a path, or an fsspec URL "
                                          "(s3://…, gs://…, file://…).")],
    revisions: Annotated[str | None, typer.Option(help="Comma-separated hub revisions.")] = None,
    select: Annotated[str | None, typer.Option(help=SELECTOR_HELP)] = None,
    dims: Annotated[str, typer.Option("--dimensions", help=f"all, or comma-separated: {', '.join(DIMENSIONS)} "
                                                           "(or CSV/JSONL files of statement,label rows).")] = "all",
    limit: Annotated[int | None, typer.Option(help="First N statements of each dataset.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Statements longer than N tokens keep their last N (the "
                                                        "probe reads the last token); without it, a statement "
                                                        "longer than the model's context is refused.", min=1)]
    = None,
    protocol: ProtocolOpt = Protocol.group_cv,
    folds: FoldsOpt = 5,
    seed: SeedOpt = 0,
    seeds: SeedsOpt = 1,
    controls: ControlsOpt = "shuffled,lexical,random-init",
    transfer: TransferOpt = None,
    data_dir: DataDirOpt = None,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = "auto",
    keep_checkpoints: Annotated[bool, typer.Option(help="Keep downloaded checkpoints after use.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Hub download folder.")] = None,
    blocks: Annotated[str | None, typer.Option(help="Dotted path of the decoder blocks, if unknown.")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Accept pickle (*.bin) weights.")] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Run model code from the hub repo.")] = False,
    analyses: AnalysesOpt = "probe,mi",
    mi_estimator: MiEstimatorOpt = MiEstimator.paper_code,
    mi_sigma: MiSigmaOpt = "50",
    mi_max_samples: MiMaxSamplesOpt = None,
    mi_bootstrap: MiBootstrapOpt = DEFAULT_BOOTSTRAP,
    mi_permutations: MiPermutationsOpt = DEFAULT_PERMUTATIONS,
    mi_checks: MiChecksOpt = DEFAULT_CHECKS,
    prefetch: Annotated[int, typer.Option(help="Hub checkpoints downloaded ahead of the one computing.")] = 1,
    cache_budget: Annotated[str | None, typer.Option(help="Downloaded, not yet deleted checkpoints at most, e.g. "
                                                          "50GB or 800MB (limits --prefetch).")] = None,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddressOpt = None,
    gpus_per_task: GpusOpt = 0.0,
    cpus_per_task: CpusOpt = 1.0,
    max_retries: RetriesOpt = 2,
    compile_blocks: Annotated[bool, typer.Option("--compile", help="torch.compile the decoder blocks for "
                                                 "extraction (opt-in: compiling takes tens of seconds; it pays "
                                                 "only on long sweeps of one architecture).")] = False,
    batching: Annotated[Batching, typer.Option(help="prefix-tree: statements share rows and each shared prefix "
                                               "is computed once (the same activations, to float rounding); "
                                               "padded: one statement per row.")] = Batching.prefix_tree,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Extract last-token activations of every layer, then probe them and estimate I(T;X), I(T;Y)."""
    from ..runs.layout import TraceLayout
    from ..runs.remote import is_url

    setup_logging(quiet, None if is_url(out) else TraceLayout(Path(out)).log)
    from ..activations.extract import ExtractConfig
    from ..analysis.probe_job import AnalysisConfig
    from ..models.fetcher import FetchConfig
    from ..models.loading import LoadConfig
    from ..runs.outputs import start_over
    from ..trace.job import TraceConfig, run_trace

    quiet_transformers()
    name, rev = model_at(model, None)
    if rev is not None and revisions:
        raise OptionError(f"--model {model!r} names a revision and --revisions gives more; use one.")
    config = TraceConfig(
        model=name, out=str(out), revisions=(rev,) if rev else split(revisions), select=select,
        dimensions=dimensions(dims), limit=limit, data_dir=path_or_none(data_dir),
        load=LoadConfig(dtype=dtype.value, device=device, trust_remote_code=trust_remote_code,
                        allow_pickle=allow_pickle, blocks=blocks, cache_dir=path_or_none(cache_dir)),
        extract=ExtractConfig(max_statement_tokens=max_tokens, compile=compile_blocks, batching=batching.value),
        analysis=AnalysisConfig.build(split(analyses) or (), protocol.value, folds, seed, mi_estimator.value,
                                      sigma(mi_sigma), mi_max_samples=mi_max_samples,
                                      controls=parse_controls(controls), seeds=seeds, mi_bootstrap=mi_bootstrap,
                                      mi_permutations=mi_permutations, mi_checks=parse_checks(mi_checks)),
        fetch=FetchConfig(prefetch=prefetch, cache_budget_gb=gigabytes(cache_budget) if cache_budget else None,
                          keep_checkpoints=keep_checkpoints),
        executor=executor_config(executor, ray_address, gpus_per_task, cpus_per_task, max_retries),
        transfer=transfer_pairs(transfer), overwrite=overwrite)
    start_over(out, overwrite, ("trace", "probe"), remove=False)  # run_trace removes it once the data passes
    with writing(out, "trace", wait), progress_bars(quiet) as progress:
        result = run_trace(config, progress)
    print_summaries(result.results)
    print_outputs(result.outputs)
    if result.failed:
        for name, error in result.failed.items():
            console.print(f"[bold red]failed:[/] {name}: {error}")
        console.print("Rerun the same command to retry the failed checkpoints; finished ones are kept.")
        raise typer.Exit(code=1)


@app.command()
@command_errors
def probe(
    run: Annotated[Path, typer.Argument(help="A trace run folder holding activations/.")],
    out: Annotated[Path, typer.Option(help="Folder for the new results table.")],
    protocol: ProtocolOpt = Protocol.group_cv,
    folds: FoldsOpt = 5,
    seed: SeedOpt = 0,
    seeds: SeedsOpt = 1,
    controls: ControlsOpt = "shuffled,lexical,random-init",
    transfer: TransferOpt = None,
    analyses: AnalysesOpt = "probe,mi",
    mi_estimator: MiEstimatorOpt = MiEstimator.paper_code,
    mi_sigma: MiSigmaOpt = "50",
    mi_max_samples: MiMaxSamplesOpt = None,
    mi_bootstrap: MiBootstrapOpt = DEFAULT_BOOTSTRAP,
    mi_permutations: MiPermutationsOpt = DEFAULT_PERMUTATIONS,
    mi_checks: MiChecksOpt = DEFAULT_CHECKS,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Re-run probes and MI on a run's stored activations, with other settings (no model needed)."""
    from ..runs.layout import TraceLayout

    setup_logging(quiet, TraceLayout(out).log)
    from ..analysis.probe_job import AnalysisConfig, ProbeJobConfig, run_probe
    from ..runs.outputs import refuse_overlap, start_over

    analysis = AnalysisConfig.build(split(analyses) or (), protocol.value, folds, seed, mi_estimator.value,
                                    sigma(mi_sigma), mi_max_samples=mi_max_samples,
                                    controls=parse_controls(controls), seeds=seeds, mi_bootstrap=mi_bootstrap,
                                    mi_permutations=mi_permutations, mi_checks=parse_checks(mi_checks))
    analysis = replace(analysis, transfer=transfer_pairs(transfer))
    refuse_overlap(out, run, "probe")  # e.g. --out RUN/activations: before anything is written
    with writing(out, "probe", wait):
        start_over(out, overwrite, ("probe", "trace"), inputs=(run,))
        result = run_probe(ProbeJobConfig(str(run), str(out), analysis))
    print_summaries(result.results)
    print_outputs(result.outputs)


@app.command()
@command_errors
def phases(
    run: Annotated[Path, typer.Argument(help="A trace run folder with MI rows over several checkpoints.")],
    smooth: Annotated[int, typer.Option(help="Checkpoints in the moving average.")] = 3,
    min_drop: Annotated[float, typer.Option(help="Relative fall after the peak that counts as compression.")] = 0.10,
    plots: Annotated[bool, typer.Option(help="Write the figures (HTML, and PNG where kaleido can).")] = True,
    wait: WaitOpt = False,
) -> None:
    """Where I(T;X) peaks per dimension and layer, whether compression follows, and whether I(T;Y) rises."""
    setup_logging(quiet=True)
    from ..analysis.phases import PhaseRule, PhasesConfig, run_phases
    from ..runs.layout import TraceLayout

    with writing(TraceLayout(run).mi if run.is_dir() else None, "phases", wait):
        result = run_phases(PhasesConfig(str(run), PhaseRule(smooth=smooth, min_drop=min_drop)))
        outputs: list[Path] = list(result.outputs)
        notes: list[str] = []
        if plots:
            from ..report import write_mi_figures

            figures, notes = write_mi_figures(run)
            outputs += figures
    print_table(result.summary, "fitting → compression per dimension (layer counts)")
    for line in result.lines:
        Console().print(line)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")
    for path in outputs:
        console.print(f"wrote {path}")


@app.command()
@command_errors
def checkpoints(
    model: Annotated[str, typer.Argument(help="Hub id, local series folder, or checkpoint.")],
    select: Annotated[str | None, typer.Option(help=SELECTOR_HELP)] = None,
    revisions: Annotated[str | None, typer.Option(help="Comma-separated hub revisions.")] = None,
) -> None:
    """List the checkpoints a trace would visit, in order."""
    setup_logging(quiet=True)
    from ..models.checkpoints import CheckpointSeries

    series = CheckpointSeries.resolve(model, split(revisions)).select(select)
    table = Table(title=f"{model}: {len(series)} checkpoints ({series.source})")
    for col in ("#", "name", "step", "commit"):
        table.add_column(col)
    for i, c in enumerate(series):
        table.add_row(str(i), c.name, "" if c.step is None else str(c.step), (c.commit or "")[:12])
    Console().print(table)


@app.command()
def datasets() -> None:
    """The five dimensions, their published files and label polarity."""
    from ..data.datasets import SPECS

    table = Table(title="trustworthiness dimensions")
    for col in ("dimension", "file", "rows", "label 1", "label 0"):
        table.add_column(col)
    for spec in SPECS.values():
        table.add_row(spec.dimension, f"{spec.file}.csv", str(spec.rows), spec.label1, spec.label0)
    Console().print(table)
