"""The ``trusttrace`` command: a thin layer over the Python API (one ``run_<stage>`` per command).

Commands live in ``analysis_cmds`` (trace, probe, phases, checkpoints, datasets), ``model_cmds``
(evaluate, steer), ``train_cmds`` (pretrain, finetune, demo, report) and ``vector_cmds`` (vectors build,
export, import) and ``verify_cmds`` (verify); what they share is in ``_shared``, the closed choices in ``choices``.
"""

from __future__ import annotations

from . import analysis_cmds, model_cmds, train_cmds, vector_cmds, verify_cmds
from ._shared import app

__all__ = ["app", "main"]
_COMMANDS = (analysis_cmds, model_cmds, train_cmds, vector_cmds, verify_cmds)  # imported for their @app.command registrations


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="trusttrace")


if __name__ == "__main__":
    main()
