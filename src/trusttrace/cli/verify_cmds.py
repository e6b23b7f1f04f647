"""``trusttrace verify RUN``: check every file of a run folder against its record (``trusttrace.runs.integrity``)
and say what the run has not done yet (``trusttrace.runs.unfinished``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._shared import (
    EXIT_FAILURE,
    EXIT_OK,
    WaitOpt,
    app,
    command_errors,
    console,
    setup_logging,
    writing,
)

if TYPE_CHECKING:
    from ..runs.verify import VerifyReport

EXIT_INCOMPLETE = 3  # every file intact, but work left (or another process writing the folder)
EXIT_CODES = {"intact": EXIT_OK, "damaged": EXIT_FAILURE, "incomplete": EXIT_INCOMPLETE}


@app.command()
@command_errors
def verify(
    run: Annotated[Path, typer.Argument(help="A run folder: the --out of trace, probe, steer, pretrain or demo.")],
    adopt: Annotated[bool, typer.Option(help="Record the unrecorded files of a trace, probe or steer folder that "
                                             "read back whole (a run made before records were kept), so that a "
                                             "rerun reuses them. Only for a folder you trust: overwritten bytes "
                                             "cannot be told from intact ones without a record.")] = False,
    wait: WaitOpt = False,
) -> None:
    """Check a run folder's files against their recorded size and sha256; say what a rerun would redo and what
    the run has not done yet (checkpoints to trace, evaluations to run, training steps to take).

    Exit codes: 0 intact (every file intact, the run finished: a rerun redoes nothing); 1 damaged (something
    is damaged, missing or unrecorded: each finding says what the rerun does about it); 3 incomplete (every
    file intact but work is left, listed as `todo` lines: a rerun of the same command with the same settings
    does it; or another trusttrace process is writing the folder now, so its files may be work in progress);
    2 RUN is not a run folder.
    """
    setup_logging(quiet=True)
    from ..runs.verify import adopt as adopt_files
    from ..runs.verify import verify_run

    report = verify_run(run)
    if adopt:
        with writing(run, "verify --adopt", wait):
            adopted, skipped = adopt_files(verify_run(run))
        console.print(f"adopted {len(adopted)} unrecorded files (each read back whole)"
                      + (f"; left unrecorded: {', '.join(skipped)}" if skipped else ""), highlight=False)
        report = verify_run(run)
    # one line each (typer.echo, not rich), so that a narrow terminal or a log keeps every word
    if report.writing is not None:
        typer.echo(f"{'writing':<10} {report.writing}")
    for f in report.findings:
        typer.echo(f"{f.status:<10} {f.path}" + (f" ({f.detail})" if f.detail else "")
                   + f"\n{'':<10} a rerun: {f.redo}")
    for line in report.todo:
        typer.echo(f"{'todo':<10} {line}")
    console.print(f"{report.kind} folder {report.root}: {report.checked} recorded files checked, "
                  f"{len(report.findings)} findings; {_verdict(report)}.", highlight=False, soft_wrap=True)
    if report.status != "intact":
        raise typer.Exit(code=EXIT_CODES[report.status])


def _verdict(report: VerifyReport) -> str:
    """The last line's verdict: intact, NOT intact, or incomplete and why."""
    n = len(report.todo)
    left = f"{n} {'thing' if n == 1 else 'things'} left to do"
    if report.status == "damaged":
        return "NOT intact" + (f"; {left} as well" if n else "")
    if report.status == "incomplete":
        if report.writer is not None:
            return "incomplete: being written by another process; verify again once it ends"
        return (f"incomplete: {left}; a rerun of the same command with the same settings does "
                f"{'it' if n == 1 else 'them'}")
    return "intact"


@app.command()
@command_errors
def cache(
    clear: Annotated[bool, typer.Option(help="Delete every cached file.")] = False,
) -> None:
    """Show (or --clear) the machine's cache of random-init control activations: an untrained network is
    traced once per model, seed, dataset and extraction settings, and later traces read it from here
    (trusttrace.activations.random_init_cache). TRUSTTRACE_RANDOM_INIT_CACHE moves it (or turns it off), and
    TRUSTTRACE_RANDOM_INIT_CACHE_GB bounds it (default 4 GB; least recently used files go first)."""
    setup_logging(quiet=True)
    from ..activations.random_init_cache import cache_root, entries, limit_bytes
    from ..activations.random_init_cache import clear as clear_cache

    root = cache_root()
    if root is None:
        console.print("The random-init cache is off (TRUSTTRACE_RANDOM_INIT_CACHE); nothing is kept.",
                      highlight=False)
        return
    if clear:
        files, size = clear_cache()
        console.print(f"removed {files} cached files ({size / 1e6:.1f} MB) from {root}", highlight=False)
        return
    found = entries()
    console.print(f"random-init cache {root}: {len(found)} files, {sum(e.size for e in found) / 1e6:.1f} MB of "
                  f"{limit_bytes() / 1e6:.0f} MB allowed", highlight=False, soft_wrap=True)
