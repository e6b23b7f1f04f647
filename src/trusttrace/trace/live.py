"""Live tracing: trace each checkpoint of a training run as soon as it is saved.

``trace_checkpoint`` traces one saved checkpoint into a run folder (the same extraction, probes and MI as
``trace``); ``tracer`` makes the ``on_checkpoint`` hook that ``trusttrace.training.pretrain`` calls after each save;
``TraceCallback`` does it for the Hugging Face ``Trainer``. All of them write one ordinary ``trace`` folder
over the series, so ``trusttrace phases``, ``steer`` and ``report`` read it as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.probe_job import AnalysisConfig
from ..core.errors import ModelError
from ..models.loading import LoadConfig
from .job import TraceConfig, run_trace


def trace_checkpoint(checkpoint: str | Path, run_dir: str | Path, dimensions: Sequence[str] = ("toxicity",),
                     limit: int | None = 600, analyses: Sequence[str] = ("probe", "mi"),
                     data_dir: str | None = None, seed: int = 0, dtype: str = "auto",
                     device: str = "auto") -> pd.DataFrame:
    """Trace one saved checkpoint into ``run_dir`` as ``trusttrace trace`` would; return the run's whole table.

    ``checkpoint`` is a folder named with its step (``step500``, ``checkpoint-500``) inside the folder of
    the run's checkpoints; rows are added to ``run_dir/results.csv``. Use it from a custom training loop
    after each save; ``TraceCallback`` does so for the Hugging Face ``Trainer``.
    """
    folder = Path(checkpoint)
    config = TraceConfig(model=str(folder.parent), out=str(run_dir), select=folder.name, dimensions=tuple(dimensions),
                         limit=limit, data_dir=data_dir, load=LoadConfig(dtype=dtype, device=device),
                         analysis=AnalysisConfig.build(tuple(analyses), seed=seed))
    return run_trace(config).results


def tracer(run_dir: str | Path, dimensions: Sequence[str], limit: int | None = 600,
           analyses: Sequence[str] = ("probe", "mi"), data_dir: str | None = None,
           seed: int = 0) -> Callable[[Path, int], None]:
    """An ``on_checkpoint(folder, step)`` hook for ``run_pretrain`` that traces every saved checkpoint."""

    def hook(folder: Path, step: int) -> None:
        trace_checkpoint(folder, run_dir, dimensions=dimensions, limit=limit, analyses=analyses, data_dir=data_dir,
                         seed=seed)

    return hook


@cache
def _trace_callback_class() -> type:
    from transformers import TrainerCallback

    class TraceCallback(TrainerCallback):
        """Trace every checkpoint a Hugging Face ``Trainer`` saves (``on_save``); see ``trace_checkpoint``.

        ``Trainer(..., callbacks=[TraceCallback(run_dir, dimensions=[...])])``. The checkpoint folders need
        the tokenizer: give ``processing_class`` to the Trainer, or ``tokenizer`` here.
        """

        def __init__(self, run_dir: str | Path, dimensions: Sequence[str] = ("toxicity",), limit: int | None = 600,
                     analyses: Sequence[str] = ("probe", "mi"), data_dir: str | None = None, tokenizer: Any = None,
                     seed: int = 0) -> None:
            self.run_dir, self.dimensions, self.limit = Path(run_dir), tuple(dimensions), limit
            self.analyses, self.data_dir, self.tokenizer, self.seed = tuple(analyses), data_dir, tokenizer, seed
            self.results: pd.DataFrame | None = None

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
                if self.tokenizer is None:
                    raise ModelError(f"{folder} has no tokenizer; pass processing_class= to the Trainer or "
                                     "tokenizer= to TraceCallback.")
                self.tokenizer.save_pretrained(folder)
            self.results = trace_checkpoint(folder, self.run_dir, self.dimensions, self.limit, self.analyses,
                                            self.data_dir, self.seed)

    return TraceCallback


def __getattr__(name: str) -> Any:
    """``TraceCallback`` is built on first use, so importing this module does not import the Trainer stack."""
    if name == "TraceCallback":
        return _trace_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
