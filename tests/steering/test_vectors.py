"""Steering vectors from a trace folder's stored activations, without a model; and the ones steer writes."""

import pytest
import torch
from typer.testing import CliRunner

from trusttrace.activations.store import load_activations
from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.cli import app
from trusttrace.models.loading import LoadConfig
from trusttrace.runs.layout import TraceLayout
from trusttrace.steering.vector import SteeringVector, build_vector
from trusttrace.steering.vectors import VectorsConfig, run_vectors
from trusttrace.trace.job import TraceConfig, run_trace


@pytest.fixture
def traced(tiny_series, data_dir, tmp_path):
    out = tmp_path / "run"
    run_trace(TraceConfig(model=str(tiny_series), out=str(out), dimensions=("toxicity", "reliability"),
                          data_dir=str(data_dir), load=LoadConfig(dtype="float32"),
                          analysis=AnalysisConfig(analyses=("probe",))))
    return out


def test_one_vector_per_stored_revision_with_its_provenance(traced):
    result = run_vectors(VectorsConfig(str(traced), "toxicity"))
    assert list(result.files) == ["step0", "step10", "step100"]
    assert result.files["step10"] == traced / "vectors" / "step10" / "toxicity.safetensors"
    loaded = SteeringVector.load(result.files["step10"])
    stored = load_activations(TraceLayout(traced).activation("step10", "toxicity"))
    expected = build_vector(stored.layers, stored.labels, "paper-code", "first-half")
    for layer in expected.layers:
        torch.testing.assert_close(loaded.layers[layer], expected.layers[layer], rtol=0, atol=0)
    meta = loaded.meta
    assert meta["revision"] == "step10" and meta["dimension"] == "toxicity" and meta["method"] == "paper-code"
    assert meta["label1"] == "toxic statement" and meta["sign"] == "mean(label 1) - mean(label 0)"
    assert meta["vocab_sha256"] and meta["dataset_sha256"] and meta["trusttrace_version"]
    assert SteeringVector.load(run_vectors(VectorsConfig(str(traced), "reliability")).files["step0"]).meta[
        "split"] == "all"  # the released code's rows for reliability


def test_choices_and_errors(traced, tmp_path):
    some = run_vectors(VectorsConfig(str(traced), "toxicity", out=str(tmp_path / "v"), method="mean-diff",
                                     revisions=("step100",)))
    assert list(some.files) == ["step100"] and some.files["step100"].parent.parent == tmp_path / "v"
    with pytest.raises(ValueError, match=r"no toxicity activations for \['step5'\]"):
        run_vectors(VectorsConfig(str(traced), "toxicity", revisions=("step5",)))
    with pytest.raises(FileNotFoundError, match="stores no activations of 'privacy'"):
        run_vectors(VectorsConfig(str(traced), "privacy"))
    with pytest.raises(ValueError, match="method"):
        VectorsConfig(str(traced), "toxicity", method="pca")


def test_cli_vectors(traced):
    res = CliRunner().invoke(app, ["vectors", "build", str(traced), "--dimension", "toxicity", "--revisions", "step0"])
    assert res.exit_code == 0, res.output
    assert "1 vectors" in res.output and (traced / "vectors" / "step0" / "toxicity.safetensors").is_file()
    res = CliRunner().invoke(app, ["vectors", "build", str(traced), "--dimension", "fairness"])
    assert res.exit_code == 2 and "stores no activations" in " ".join(res.output.split())  # rich wraps lines
