"""The ``trusttrace`` command: a thin layer over the Python API (one ``run_<stage>`` per command).

Commands live in ``analysis_cmds`` (trace, probe, phases, checkpoints, datasets), ``model_cmds``
(evaluate, steer), ``train_cmds`` (pretrain, finetune, demo, report) and ``vector_cmds`` (vectors build,
export, import) and ``verify_cmds`` (verify); what they share is in ``_shared``, the closed choices in ``choices``.
"""

from __future__ import annotations

from . import analysis_cmds, model_cmds, train_cmds, vector_cmds, verify_cmds
from ._shared import app

__all__ = ["app", "main"]
# imported for their @app.command registrations
_COMMANDS = (analysis_cmds, model_cmds, train_cmds, vector_cmds, verify_cmds)


def main() -> None:
    """The console entry point: the app, and an output the system refuses (a full device, a closed pipe)
    said in one line on standard error, exit 1, instead of a traceback."""
    import os
    import sys

    from ..core.errors import environment_failure

    try:
        app(prog_name="trusttrace")
    except OSError as err:
        failure = environment_failure(err)
        if failure is None:
            raise
        if getattr(err, "filename", None) is None:  # the command's own output stream
            message = (f"standard output refused the command's output ({os.strerror(failure.errno or 0)}): send "
                       "it to a file or device with room, or to a reader that reads to the end. The files the "
                       "command writes are not affected.")
        else:
            message = str(failure)
        try:  # nothing more reaches the refused stream, not even the interpreter's last flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        try:
            print(f"error: {message}", file=sys.stderr)
        except OSError:
            pass
        sys.exit(failure.exit_code)
