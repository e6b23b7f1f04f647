"""``trusttrace verify RUN``: check every file of a run folder against its record (``trusttrace.integrity``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._shared import EXIT_FAILURE, app, console, fail, setup_logging, user_errors


@app.command()
def verify(
    run: Annotated[Path, typer.Argument(help="A run folder: the --out of trace, probe, steer, pretrain or demo.")],
    adopt: Annotated[bool, typer.Option(help="Record the unrecorded files of a trace, probe or steer folder that "
                                             "read back whole (a run made before records were kept), so that a "
                                             "rerun reuses them. Only for a folder you trust: overwritten bytes "
                                             "cannot be told from intact ones without a record.")] = False,
) -> None:
    """Check a run folder's files against their recorded size and sha256; say what a rerun would redo.

    Exit 0 when every file is intact (a rerun redoes nothing), 1 when something is damaged, missing or
    unrecorded (the table says what the rerun does about each), 2 when RUN is not a run folder.
    """
    setup_logging(quiet=True)
    try:
        from ..verify import adopt as adopt_files
        from ..verify import verify_run

        report = verify_run(run)
        if adopt:
            adopted, skipped = adopt_files(report)
            console.print(f"adopted {len(adopted)} unrecorded files (each read back whole)"
                          + (f"; left unrecorded: {', '.join(skipped)}" if skipped else ""), highlight=False)
            report = verify_run(run)
    except user_errors() as err:
        fail(err)
    for f in report.findings:  # one line each, so that a narrow terminal or a log keeps every word
        typer.echo(f"{f.status:<10} {f.path}" + (f" ({f.detail})" if f.detail else "") + f"\n{'':<10} a rerun: {f.redo}")
    verdict = "intact" if report.intact else "NOT intact"
    console.print(f"{report.kind} folder {report.root}: {report.checked} recorded files checked, "
                  f"{len(report.findings)} findings; {verdict}.", highlight=False)
    if not report.intact:
        raise typer.Exit(code=EXIT_FAILURE)
