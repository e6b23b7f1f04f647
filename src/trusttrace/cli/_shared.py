"""What every command shares: the console, logging, the progress bars, errors, and common options.

Only typer, rich and trusttrace's light modules are imported here: each command imports the stage it runs
when it runs, so ``trusttrace --help`` loads neither torch nor pandas.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars
from rich.table import Table

from .._version import __version__
from ..core.errors import OptionError
from ..core.names import CONTROLS, DIMENSIONS, MI_CHECKS
from ..core.progress import Progress
from ._logging import console, setup_logging  # noqa: F401 (every command takes them from here)
from .choices import Dtype, Executor, MiEstimator, PerplexitySource, Positions, Protocol, check_device

if TYPE_CHECKING:
    import pandas as pd

    from ..core.executors import ExecutorConfig

app = typer.Typer(no_args_is_help=True,
                  help="Trace how a model comes to encode trustworthiness over its pre-training checkpoints.\n\n"
                       "Exit codes: 0 done; 1 a runtime failure (network, failed checkpoints or evaluations, a "
                       "partial sweep, a full disk: rerun to retry); 2 a usage error (a bad option, name, path or "
                       "file, an output folder another trusttrace process is writing); verify: 3 unfinished.")
log = logging.getLogger("trusttrace")


EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trusttrace {__version__}")
        raise typer.Exit()


_DEBUG = {"on": False}  # set by the root callback for each invocation (``--debug`` or TRUSTTRACE_DEBUG=1)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False,
          debug: Annotated[bool, typer.Option("--debug", envvar="TRUSTTRACE_DEBUG",
                                              help="Show the traceback of an error, not only its message.")] = False,
          ) -> None:
    """Trace how a model comes to encode trustworthiness over its pre-training checkpoints."""
    _DEBUG["on"] = debug


P = ParamSpec("P")
R = TypeVar("R")


def command_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A command whose every failure ends as ``fail`` says: the message and its exit code, never a traceback
    (the CLI's own exits pass through ``fail`` unchanged)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 (each kind is sorted by fail: usage, network, bug)
            fail(err)

    return run


def exit_code(err: Exception) -> int:
    """2 for a usage error (fix the input), 1 for anything else (a rerun, or a bug report, mends it)."""
    from ..core.errors import TrustTraceError

    if isinstance(err, TrustTraceError):
        return err.exit_code
    if isinstance(err, ConnectionError):
        return EXIT_FAILURE
    if isinstance(err, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return EXIT_USAGE  # a library's own refusal of an input trusttrace passed on unchecked
    return EXIT_FAILURE


def fail(err: Exception) -> NoReturn:
    """The error's message on the console (its traceback too with ``--debug``), then its exit code.

    trusttrace's own errors and the few library errors that are plainly about the input are shown as they
    are; anything else is a bug in trusttrace, said so, with the way to see its traceback.
    """
    import click

    from ..core.errors import TrustTraceError, environment_failure

    # the CLI's own exits and usage errors: typer's (its click is vendored) and click's
    if isinstance(err, (typer.Exit, typer.Abort, typer.TyperException, click.exceptions.Exit,
                        click.exceptions.ClickException, click.exceptions.Abort)):
        raise err
    err = environment_failure(err) or err  # a full disk, a permission, a name too long: not a bug
    if _DEBUG["on"]:
        console.print_exception(show_locals=False)
    if isinstance(err, TrustTraceError) or exit_code(err) == EXIT_USAGE:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
    elif isinstance(err, ConnectionError):
        console.print(f"[bold red]error:[/] {err} (a network failure: rerun to retry)", highlight=False)
    else:
        hint = "" if _DEBUG["on"] else " Rerun with `trusttrace --debug …` to see where,"
        console.print(f"[bold red]internal error:[/] {type(err).__name__}: {err}.{hint} and please report it: "
                      "this is a bug in trusttrace, not in your input.", highlight=False)
    raise typer.Exit(code=exit_code(err))


@contextmanager
def writing(folder: Path | str | None, command: str, wait: bool, beside: bool = False) -> Iterator[None]:
    """The command's output folder held for it while the block runs (``runlock.hold``: one writer at a time;
    ``wait``: queue behind another). A URL's local mirror is held by the job itself; no folder, no hold."""
    from ..core.runlock import hold, waiting
    from ..runs.outputs import check_output

    with waiting(wait):
        if folder is None or "://" in str(folder):
            yield
        else:
            check_output(folder)  # a file where the folder should be, an unwritable parent: refused first
            with hold(folder, command, beside=beside):
                yield


def quiet_transformers() -> None:
    """Turn off transformers' weight-loading bars: trusttrace shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class RichProgress(Progress):
    """The progress protocol drawn as rich bars; stages go to the log (console and run log)."""

    def __init__(self, bars: Bars) -> None:
        self.bars = bars
        self.tasks: dict[str, TaskID] = {}

    def stage(self, text: str) -> None:
        log.info(text)

    def start(self, key: str, description: str, total: int | None, done: int = 0) -> None:
        if key in self.tasks:
            self.bars.remove_task(self.tasks[key])
        self.tasks[key] = self.bars.add_task(description, total=total, completed=done)

    def update(self, key: str, *, advance: int = 0, done: int | None = None, total: int | None = None,
               description: str | None = None) -> None:
        task = self.tasks.get(key)
        if task is not None:
            self.bars.update(task, advance=advance or None, completed=done, total=total, description=description)


@contextmanager
def progress_bars(quiet: bool) -> Iterator[RichProgress]:
    """Bars on the console while the block runs (none when ``quiet``)."""
    with Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
              console=console, disable=quiet) as bars:
        yield RichProgress(bars)


def split(value: str | None) -> tuple[str, ...] | None:
    """``a,b,c`` → ('a', 'b', 'c'); None or empty → None."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def dimensions(value: str, option: str = "--dimensions") -> tuple[str, ...]:
    """``all`` or comma-separated dimension names (or files); nothing at all is refused."""
    if value.strip() == "all":
        return DIMENSIONS
    names = split(value)
    if not names:
        raise OptionError(f"{option} {value!r}: give 'all' or comma-separated dimensions (or CSV/JSONL files), "
                          f"e.g. {option} toxicity,privacy. Dimensions: {', '.join(DIMENSIONS)}.")
    return names


def parse_controls(value: str) -> tuple[str, ...]:
    """``none`` or comma-separated control names."""
    return () if value.strip() == "none" else split(value) or ()


def transfer_pairs(value: str | None) -> tuple[tuple[str, str], ...]:
    """``TRAIN:TEST[,TRAIN:TEST…]`` → ((TRAIN, TEST), …)."""
    pairs = []
    for item in split(value) or ():
        train, sep, test = item.partition(":")
        if not sep or not train.strip() or not test.strip():
            raise OptionError(f"--transfer {item!r}: give TRAIN:TEST (dimension names or files), e.g. "
                              "reliability:truthfulqa_heldout.")
        pairs.append((train.strip(), test.strip()))
    return tuple(pairs)


_DECIMAL = {"": 1e9, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}  # a bare number is GB
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def gigabytes(value: str) -> float:
    """A size as its units say, in GB (10⁹ bytes): ``50GB``, ``800MB``, ``1.5TB`` are decimal, ``50GiB``,
    ``800MiB`` binary, and a bare number is GB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([KMGT])(I?)B?)?\s*", value.upper())
    if match is None or (match.group(3) and not match.group(2)):
        raise OptionError(f"--cache-budget {value!r}: give a size such as 50GB, 800MB, 1.5TB or 40GiB.")
    number, prefix, binary = float(match.group(1)), match.group(2) or "", match.group(3)
    size = number * (_BINARY[prefix] if binary else _DECIMAL[prefix]) / 1e9
    if not math.isfinite(size):
        raise OptionError(f"--cache-budget {value!r} is too large to be a size; give e.g. 50GB or 1.5TB.")
    return size


def sigma(value: str) -> float | None:
    """``--mi-sigma``: a number, or ``median``."""
    if value.strip() == "median":
        return None
    try:
        number = float(value)
    except ValueError:
        raise OptionError(f"--mi-sigma {value!r} is neither a number nor 'median'; e.g. --mi-sigma 50.") from None
    if not (math.isfinite(number) and number > 0):
        raise OptionError(f"--mi-sigma {value!r}: the kernel width must be a positive finite number or 'median'; "
                          "e.g. --mi-sigma 50.")
    return number


def path_or_none(value: Path | None) -> str | None:
    return str(value) if value is not None else None


def print_outputs(outputs: dict[str, Any]) -> None:
    """Where a command's outputs went, one line each."""
    for name, path in outputs.items():
        console.print(f"{name:>16}: {path}")


def print_table(frame: pd.DataFrame, title: str, headers: dict[str, str] | None = None) -> None:
    """A table on standard output; missing values as ``-``, fractions to 4 decimals."""
    import pandas as pd

    def cell(value: object) -> str:
        if pd.isna(value):
            return "-"
        if isinstance(value, float):
            return f"{value:g}" if value.is_integer() else f"{value:.4f}"
        return str(value)

    table = Table(title=title)
    for col in frame.columns:
        table.add_column((headers or {}).get(col, str(col).replace("_", " ")), no_wrap=True)
    for row in frame.itertuples(index=False):
        table.add_row(*[cell(v) for v in row])
    Console().print(table)


def parse_checks(text: str) -> tuple[str, ...]:
    """--mi-checks: ``none`` or a comma-separated list (checked by ``MIConfig``)."""
    return () if text.strip().lower() == "none" else tuple(split(text) or ())


# ---------------------------------------------------------------- options shared by several commands

ProtocolOpt = Annotated[Protocol, typer.Option(help="Probe protocol (group-cv: no question, context or sentence pair "
                                                    "on both sides of a fold; cv: shuffled k-fold; paper-code: the "
                                                    "released 80/20 cut).")]
FoldsOpt = Annotated[int, typer.Option(help="k for the k-fold protocols.")]
SeedsOpt = Annotated[int, typer.Option(help="Repeat the folds with this many seeds; the spread is reported.")]
TransferOpt = Annotated[str | None, typer.Option(help="Transfer tests TRAIN:TEST[,…]: each layer's probe trained on "
                                                     "all of TRAIN, scored on all of TEST (dimensions, "
                                                     "truthfulqa_heldout, or files).")]
ControlsOpt = Annotated[str, typer.Option(help=f"none, or comma-separated: {', '.join(CONTROLS)} (what the "
                                               "accuracy is compared with; see trusttrace.analysis.controls).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the cv folds (and MI subsamples).")]
TrainSeedOpt = Annotated[int, typer.Option(help="Seed of the initial weights, the batch order and dropout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and the final summary only.")]
AnalysesOpt = Annotated[str, typer.Option(help="Comma-separated: probe, mi.")]
MiEstimatorOpt = Annotated[MiEstimator, typer.Option(help="MI estimator (see trusttrace.analysis.mutual_info).")]
MiSigmaOpt = Annotated[str, typer.Option(help="Kernel width σ, or 'median' (hsic/nhsic).")]
MiMaxSamplesOpt = Annotated[int | None, typer.Option(help="Estimate MI on seeded subsamples of this many rows.")]
MiBootstrapOpt = Annotated[int, typer.Option(help=(
    "Half-sample draws for the 95 % intervals of every MI row (mi_*_ci_low/high; 0: none). Measured "
    "(benchmarks/mi_stats.py, SmolLM2 fairness): with 8, the null and the check estimators the MI stage costs "
    "3.6x the bare estimate on an AVX-512 Xeon, 2.8x on an AVX2 EPYC (8 draws alone 2.7x and 1.8x; the checks "
    "take it over 2x), a whole trace about 1.03x; the "
    "2x goal for the MI stage is not met (README: 'What the intervals and nulls cost'). Fewer draws widen "
    "the intervals (t critical value 3.18 at 4, 2.36 at 8)."))]
MiPermutationsOpt = Annotated[int, typer.Option(help=(
    "Label permutations (within the probe's groups) for I(T;Y)'s null: mi_ty_null_q95 and mi_ty_p "
    "(0: none; at least 19)."))]
MiChecksOpt = Annotated[str, typer.Option(help=(
    f"none, or comma-separated: {', '.join(MI_CHECKS)}. Estimators every MI phase is recomputed under "
    "(nHSIC at the median width, linear CKA); a phase is 'robust' when all agree."))]
DataDirOpt = Annotated[Path | None, typer.Option(help="Folder with the published CSVs (default $TRUSTTRACE_DATA_DIR, "
                                                      "else download).")]
DtypeOpt = Annotated[Dtype, typer.Option(help="Weights' dtype (auto: bf16 where the hardware runs it fast).")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.", callback=check_device)]
PerplexityOpt = Annotated[PerplexitySource, typer.Option(help="Perplexity text (auto: LAMBADA if reachable, else the "
                                                              "datasets' test-half statements).")]
PerplexityFileOpt = Annotated[Path | None, typer.Option(help="Text file for perplexity, one passage a line.")]
JudgeOpt = Annotated[str, typer.Option(help="Toxicity judge: offline (MiniLM embedding classifier) | an HF "
                                            "classifier, e.g. tomh/toxigen_roberta.")]
TruthJudgeOpt = Annotated[str, typer.Option(help="TruthfulQA judge: offline (MiniLM nearest reference) | "
                                                 "TRUTH_MODEL[,INFO_MODEL], e.g. "
                                                 "allenai/truthfulqa-truth-judge-llama2-7B.")]
PositionsOpt = Annotated[Positions, typer.Option(help="Steered positions.")]
ProxyBaseOpt = Annotated[str | None, typer.Option(help="The model --proxy-tuned was tuned from (MODEL@REV for a "
                                                       "revision), e.g. the last pre-training checkpoint, "
                                                       "LLM360/Amber@ckpt_359.")]
RevisionOpt = Annotated[str | None, typer.Option(help="The model's revision (branch, tag or commit); MODEL@REV "
                                                      "says the same.")]
WaitOpt = Annotated[bool, typer.Option(help="When another trusttrace process is writing the output folder, "
                                             "wait for it to finish instead of stopping (also "
                                             "TRUSTTRACE_WAIT=1).")]
OverwriteOpt = Annotated[bool, typer.Option(help="Start the output folder over: remove it first (only a folder "
                                                 "trusttrace wrote, or an empty one; anything else is refused).")]

EXECUTOR_PANEL = "Executor (where the work runs; never changes the numbers)"
ExecutorOpt = Annotated[Executor, typer.Option(help="Where the work runs (ray: one task per unit of work on a Ray "
                                                    "cluster).", rich_help_panel=EXECUTOR_PANEL)]
RayAddressOpt = Annotated[str | None, typer.Option(help="Ray cluster to join: auto | HOST:PORT (default: start a "
                                                       "local one).", rich_help_panel=EXECUTOR_PANEL)]
GpusOpt = Annotated[float, typer.Option(help="GPUs per task (ray).", rich_help_panel=EXECUTOR_PANEL)]
CpusOpt = Annotated[float, typer.Option(help="CPUs per task (ray).", rich_help_panel=EXECUTOR_PANEL)]
RetriesOpt = Annotated[int, typer.Option(help="Retries of a failed task (ray).", rich_help_panel=EXECUTOR_PANEL)]


def executor_config(executor: Executor, ray_address: str | None, gpus_per_task: float, cpus_per_task: float,
                    max_retries: int) -> ExecutorConfig:
    """The executor options as one config."""
    from ..core.executors import ExecutorConfig

    return ExecutorConfig(kind=executor.value, ray_address=ray_address, gpus_per_task=gpus_per_task,
                          cpus_per_task=cpus_per_task, max_retries=max_retries)


def model_at(model: str, revision: str | None, option: str = "--model") -> tuple[str, str | None]:
    """``MODEL@REV`` or ``MODEL`` with ``--revision REV`` → (MODEL, REV) (``models.ref.ModelRef.parse``); both at
    once must agree."""
    from ..models.ref import ModelRef

    return ModelRef.parse(model, revision, option).pair


N = TypeVar("N", int, float)


def numbers(value: str, option: str, kind: Callable[[str], N]) -> tuple[N, ...]:
    """``1,2,-3`` → (1, 2, -3) for ``option``; a value that is not a finite number is a usage error."""
    out = []
    example = "12,14" if kind is int else "-2,-1,1,2"
    for item in split(value) or ():
        try:
            number = kind(item)
        except ValueError:
            raise OptionError(f"{option} {value!r}: {item!r} is not {'an integer' if kind is int else 'a number'}; "
                              f"give comma-separated values, e.g. {example}.") from None
        if isinstance(number, float) and not math.isfinite(number):  # an int is finite, however long
            raise OptionError(f"{option} {value!r}: {item!r} is not a finite number; e.g. {example}.")
        out.append(number)
    if not out:
        raise OptionError(f"{option} {value!r}: give at least one value, e.g. {example}.")
    return tuple(out)
