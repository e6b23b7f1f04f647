"""trusttrace: trace how language models come to encode trustworthiness during pre-training.

The stages, each usable alone: ``CheckpointSeries`` (which revisions), ``load_model`` (weights and decoder
blocks), ``load_dataset`` (the five dimensions), ``extract_last_token`` (activations of every block),
``probe_layers`` (one linear probe per layer), and ``run_trace`` (all of it over a series, resumable).
"""

__version__ = "0.1.0"

from .checkpoints import Checkpoint, CheckpointSeries  # noqa: E402
from .data import DIMENSIONS, TrustDataset, load_dataset  # noqa: E402
from .extract import ExtractConfig, extract_last_token  # noqa: E402
from .models import LoadedModel, ModelInfo, find_blocks, load_model  # noqa: E402
from .probes import BatchedLogisticRegression, ProbeConfig, probe_layers  # noqa: E402
from .runner import TraceConfig, TraceResult, run_trace, trace_summary  # noqa: E402
from .store import load_activations, save_activations  # noqa: E402

__all__ = [
    "__version__", "Checkpoint", "CheckpointSeries", "DIMENSIONS", "TrustDataset", "load_dataset",
    "ExtractConfig", "extract_last_token", "LoadedModel", "ModelInfo", "find_blocks", "load_model",
    "BatchedLogisticRegression", "ProbeConfig", "probe_layers", "TraceConfig", "TraceResult", "run_trace",
    "trace_summary", "load_activations", "save_activations",
]
