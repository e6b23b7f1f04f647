"""trusttrace: trace how language models come to encode trustworthiness during pre-training.

The stages, each usable alone: ``CheckpointSeries`` (which revisions), ``load_model`` (weights and decoder
blocks), ``load_dataset`` (the five dimensions), ``extract_last_token`` (activations of every block),
``probe_layers`` (one linear probe per layer), and ``run_trace`` (all of it over a series, resumable).
"""

__version__ = "0.1.0"

from .checkpoints import Checkpoint, CheckpointSeries
from .data import DIMENSIONS, TrustDataset, load_dataset
from .extract import ExtractConfig, extract_last_token
from .models import LoadedModel, ModelInfo, find_blocks, load_model
from .mutual_info import MIConfig, estimate_mi, mi_rows
from .phases import PhaseRule, detect_phases, run_phases
from .probes import BatchedLogisticRegression, ProbeConfig, probe_layers
from .runner import TraceConfig, TraceResult, run_probe, run_trace, trace_summary
from .steering import SteeringVector, build_vector, steer, vector_from_run
from .store import load_activations, save_activations

__all__ = [
    "DIMENSIONS",
    "BatchedLogisticRegression",
    "Checkpoint",
    "CheckpointSeries",
    "ExtractConfig",
    "LoadedModel",
    "MIConfig",
    "ModelInfo",
    "PhaseRule",
    "ProbeConfig",
    "SteeringVector",
    "TraceConfig",
    "TraceResult",
    "TrustDataset",
    "__version__",
    "build_vector",
    "detect_phases",
    "estimate_mi",
    "extract_last_token",
    "find_blocks",
    "load_activations",
    "load_dataset",
    "load_model",
    "mi_rows",
    "probe_layers",
    "run_phases",
    "run_probe",
    "run_trace",
    "save_activations",
    "steer",
    "trace_summary",
    "vector_from_run",
]
