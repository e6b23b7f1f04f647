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
    "DIMENSIONS": "core.names",
    "Checkpoint": "models.checkpoints", "CheckpointSeries": "models.checkpoints",
    "TrustDataset": "data.datasets", "load_dataset": "data.datasets",
    "LoadConfig": "models.loading", "LoadedModel": "models.loading", "ModelInfo": "models.loading",
    "find_blocks": "models.blocks", "load_model": "models.loading",
    "ExtractConfig": "activations.extract", "extract_last_token": "activations.extract",
    "load_activations": "activations.store", "save_activations": "activations.store",
    "BatchedLogisticRegression": "analysis.logreg",
    "ProbeFitConfig": "analysis.probes", "probe_layers": "analysis.probes",
    "ProbeSet": "analysis.saved_probes", "load_probe": "analysis.saved_probes", "fit_probes": "analysis.saved_probes",
    "MIConfig": "analysis.mutual_info", "estimate_mi": "analysis.mutual_info", "mi_rows": "analysis.mi_stats",
    "SteeringVector": "steering.vector", "build_vector": "steering.vector", "steer": "steering.vector",
    "AnalysisConfig": "analysis.probe_job", "ProbeJobConfig": "analysis.probe_job",
    "ProbeJobResult": "analysis.probe_job", "run_probe": "analysis.probe_job",
    "VectorsConfig": "steering.vectors", "VectorsResult": "steering.vectors", "run_vectors": "steering.vectors",
    "vector_from_run": "steering.vectors",
    "ExecutorConfig": "core.executors", "FetchConfig": "models.fetcher",
    "TraceConfig": "trace.job", "TraceResult": "trace.job", "run_trace": "trace.job",
    "TraceCallback": "trace.live", "trace_checkpoint": "trace.live", "tracer": "trace.live",
    "PhaseRule": "analysis.phases", "PhasesConfig": "analysis.phases", "PhasesResult": "analysis.phases",
    "detect_phases": "analysis.phases", "run_phases": "analysis.phases",
    "SuiteConfig": "evaluate", "EvaluateConfig": "evaluate", "EvaluateResult": "evaluate", "run_evaluate": "evaluate",
    "SteerConfig": "steer.job", "SteerResult": "steer.job", "run_steer": "steer.job",
    "PretrainConfig": "training.pretrain", "PretrainResult": "training.pretrain", "run_pretrain": "training.pretrain",
    "FinetuneConfig": "training.finetune", "FinetuneResult": "training.finetune", "run_finetune": "training.finetune",
    "ReportConfig": "report", "ReportResult": "report", "run_report": "report",
    "DemoConfig": "demo.job", "DemoResult": "demo.job", "run_demo": "demo.job",
    "RunLayout": "runs.layout", "Progress": "core.progress", "trace_summary": "runs.tables",
}

__all__ = [
    "DIMENSIONS",
    "AnalysisConfig",
    "BatchedLogisticRegression",
    "Checkpoint",
    "CheckpointSeries",
    "DemoConfig",
    "DemoResult",
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
    "ProbeFitConfig",
    "ProbeJobConfig",
    "ProbeJobResult",
    "ProbeSet",
    "Progress",
    "ReportConfig",
    "ReportResult",
    "RunLayout",
    "SteerConfig",
    "SteerResult",
    "SteeringVector",
    "SuiteConfig",
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
    "tracer",
    "vector_from_run",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        from .core.renames import renamed

        return renamed(__name__, name, __getattr__, __all__)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
