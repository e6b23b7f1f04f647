"""trusttrace: trace how language models come to encode trustworthiness during pre-training.

The stages, each usable alone: ``CheckpointSeries`` (which revisions), ``load_model`` (weights and decoder
blocks), ``load_dataset`` (the five dimensions), ``extract_last_token`` (activations of every block),
``probe_layers`` (one linear probe per layer), ``estimate_mi`` (HSIC), ``build_vector``/``steer``
(steering), and the jobs ``run_trace``, ``run_probe``, ``run_phases``, ``run_vectors``, ``run_steer``,
``run_evaluate``, ``run_pretrain``, ``run_finetune``, ``run_report`` and ``run_demo``, each taking its
config and returning its result.

Names are imported on first use, so ``import trusttrace`` (and the CLI's ``--help``) loads no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# public name → the module that defines it
_EXPORTS: dict[str, str] = {
    "DIMENSIONS": "names",
    "Checkpoint": "checkpoints", "CheckpointSeries": "checkpoints",
    "TrustDataset": "data", "load_dataset": "data",
    "LoadConfig": "models", "LoadedModel": "models", "ModelInfo": "models", "find_blocks": "models",
    "load_model": "models",
    "ExtractConfig": "extract", "extract_last_token": "extract",
    "load_activations": "store", "save_activations": "store",
    "BatchedLogisticRegression": "logreg", "ProbeConfig": "probes", "probe_layers": "probes",
    "ProbeSet": "saved_probes", "load_probe": "saved_probes", "fit_probes": "saved_probes",
    "MIConfig": "mutual_info", "estimate_mi": "mutual_info", "mi_rows": "mi_stats",
    "SteeringVector": "steering", "build_vector": "steering", "steer": "steering",
    "AnalysisConfig": "analysis", "ProbeRunConfig": "analysis", "ProbeRunResult": "analysis", "run_probe": "analysis",
    "VectorsConfig": "vectors", "VectorsResult": "vectors", "run_vectors": "vectors", "vector_from_run": "vectors",
    "ExecutorConfig": "executors", "FetchConfig": "fetcher",
    "TraceConfig": "trace", "TraceResult": "trace", "run_trace": "trace",
    "TraceCallback": "live", "trace_checkpoint": "live",
    "PhaseRule": "phases", "PhasesConfig": "phases", "PhasesResult": "phases", "detect_phases": "phases",
    "run_phases": "phases",
    "EvalConfig": "evaluate", "EvaluateConfig": "evaluate", "EvaluateResult": "evaluate", "run_evaluate": "evaluate",
    "SteerConfig": "sweep", "SteerResult": "sweep", "run_steer": "sweep",
    "PretrainConfig": "pretrain", "PretrainResult": "pretrain", "run_pretrain": "pretrain",
    "FinetuneConfig": "finetune", "FinetuneResult": "finetune", "run_finetune": "finetune",
    "ReportConfig": "report", "ReportResult": "report", "run_report": "report",
    "DemoConfig": "demo", "DemoResult": "demo", "run_demo": "demo",
    "RunLayout": "layout", "Progress": "progress", "trace_summary": "tables",
}

__all__ = [
    "DIMENSIONS",
    "AnalysisConfig",
    "BatchedLogisticRegression",
    "Checkpoint",
    "CheckpointSeries",
    "DemoConfig",
    "DemoResult",
    "EvalConfig",
    "EvaluateConfig",
    "EvaluateResult",
    "ExecutorConfig",
    "ExtractConfig",
    "FetchConfig",
    "FinetuneConfig",
    "FinetuneResult",
    "LoadConfig",
    "LoadedModel",
    "MIConfig",
    "ModelInfo",
    "PhaseRule",
    "PhasesConfig",
    "PhasesResult",
    "PretrainConfig",
    "PretrainResult",
    "ProbeConfig",
    "ProbeRunConfig",
    "ProbeRunResult",
    "ProbeSet",
    "Progress",
    "ReportConfig",
    "ReportResult",
    "RunLayout",
    "SteerConfig",
    "SteerResult",
    "SteeringVector",
    "TraceCallback",
    "TraceConfig",
    "TraceResult",
    "TrustDataset",
    "VectorsConfig",
    "VectorsResult",
    "__version__",
    "build_vector",
    "detect_phases",
    "estimate_mi",
    "extract_last_token",
    "find_blocks",
    "fit_probes",
    "load_activations",
    "load_dataset",
    "load_model",
    "load_probe",
    "mi_rows",
    "probe_layers",
    "run_demo",
    "run_evaluate",
    "run_finetune",
    "run_phases",
    "run_pretrain",
    "run_probe",
    "run_report",
    "run_steer",
    "run_trace",
    "run_vectors",
    "save_activations",
    "steer",
    "trace_checkpoint",
    "trace_summary",
    "vector_from_run",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trusttrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
