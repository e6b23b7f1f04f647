"""Vectors that travel: lm-eval's steer file, repeng / llama.cpp GGUF control vectors, numpy; and back."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.core.errors import VectorError
from trusttrace.models.loading import load_model
from trusttrace.steering.interop import FORMATS, export_vector, hookpoint, import_vector
from trusttrace.steering.vector import SteeringVector, steer

HAS_LMEVAL = importlib.util.find_spec("lm_eval") is not None
HAS_REPENG = importlib.util.find_spec("repeng") is not None


def planted(n_layers: int = 3, d: int = 16, seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({layer: torch.randn(d, generator=g) for layer in range(n_layers)},
                          {"model": "tiny", "revision": "step10", "architecture": "llama", "dimension": "toxicity"})


@pytest.mark.parametrize("fmt", ["lm-eval", "repeng", "numpy"])
def test_every_format_round_trips_exactly(fmt, tmp_path):
    vector = planted()
    path = export_vector(vector, tmp_path / f"v{FORMATS[fmt]}", fmt)
    back = import_vector(path)
    assert sorted(back.layers) == sorted(vector.layers)
    for layer, direction in vector.layers.items():
        assert torch.equal(back.layers[layer], direction)
    assert back.meta["imported_from"] == str(path.resolve())


def test_the_llama_cpp_gguf_leaves_out_block_zero(tmp_path, caplog):
    vector = planted()
    back = import_vector(export_vector(vector, tmp_path / "v.gguf", "gguf"))
    assert sorted(back.layers) == [1, 2] and "block 0" in caplog.text
    assert back.meta["architecture"] == "llama" and back.meta["format"] == "gguf control vector"
    with pytest.raises(ValueError, match="only block 0"):
        export_vector(vector, tmp_path / "w.gguf", "gguf", layers=[0])


def test_the_gguf_is_a_control_vector_by_its_own_keys(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = export_vector(planted(), tmp_path / "v.gguf", "repeng", layers=[2, 1])
    reader = gguf.GGUFReader(str(path))
    names = sorted(t.name for t in reader.tensors)
    assert names == ["direction.1", "direction.2"]
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "controlvector"
    count = reader.fields["controlvector.layer_count"]
    assert int(count.parts[count.data[0]][0]) == 2


def test_lm_eval_steer_file_layout(tmp_path):
    path = export_vector(planted(), tmp_path / "v.pt", "lm-eval", layers=[1], coefficient=-2.0)
    config = torch.load(path, weights_only=True)
    assert list(config) == ["layers.1"]
    entry = config["layers.1"]
    assert entry["action"] == "add" and entry["steering_coefficient"] == -2.0 and entry["bias"] is None
    assert torch.equal(import_vector(path).layers[1], -2.0 * planted().layers[1])  # the coefficient is applied


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "gpt2"])
def test_hookpoints_name_the_blocks_lm_eval_hooks(tiny_models, arch):
    lm = load_model(str(tiny_models[arch]), dtype="float32")
    modules = dict(lm.model.base_model.named_modules())
    for layer, block in enumerate(lm.blocks):
        assert modules[hookpoint(arch, layer)] is block


def test_errors_name_the_file_and_the_fix(tmp_path):
    vector = SteeringVector({0: torch.ones(4)}, {})
    with pytest.raises(ValueError, match="--architecture"):
        export_vector(vector, tmp_path / "v.pt", "lm-eval")
    with pytest.raises(ValueError, match="not one of"):
        export_vector(vector, tmp_path / "v.x", "onnx")
    with pytest.raises(ValueError, match="cannot tell its format"):
        (tmp_path / "v.bin").write_bytes(b"x")
        import_vector(tmp_path / "v.bin")
    with pytest.raises(VectorError, match="not layer 5"):
        export_vector(vector, tmp_path / "v.npz", "numpy", layers=[5])
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.gguf is not a readable GGUF"):
        import_vector(tmp_path / "empty.gguf")
    not_gguf = tmp_path / "text.pt"
    torch.save(["not", "a", "dict"], not_gguf)
    with pytest.raises(ValueError, match="not an lm-eval steer file"):
        import_vector(not_gguf)


def test_cli_export_and_import(tmp_path):
    source = tmp_path / "toxicity.safetensors"
    planted().save(source)
    runner = CliRunner()
    res = runner.invoke(app, ["vectors", "export", str(source), "--format", "gguf", "--layers", "1,2"])
    assert res.exit_code == 0, res.output
    written = tmp_path / "toxicity.gguf"
    assert written.is_file()
    res = runner.invoke(app, ["vectors", "import", str(written), "--out", str(tmp_path / "back.safetensors")])
    assert res.exit_code == 0, res.output
    back = SteeringVector.load(tmp_path / "back.safetensors")
    assert torch.equal(back.layers[2], planted().layers[2]) and "imported_from" in back.meta
    res = runner.invoke(app, ["vectors", "export", str(source), "--format", "onnx"])
    assert res.exit_code == 2 and "onnx" in res.output  # refused while parsing


@pytest.mark.skipif(not HAS_REPENG, reason="repeng is not installed")
def test_repeng_reads_the_exported_gguf(tmp_path):
    from repeng import ControlVector

    path = export_vector(planted(), tmp_path / "v.gguf", "repeng")
    vector = ControlVector.import_gguf(str(path))
    assert vector.model_type == "llama" and sorted(vector.directions) == [0, 1, 2]
    assert np.array_equal(vector.directions[1], planted().layers[1].numpy())


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LMEVAL, reason="lm-eval is not installed (pip install 'trusttrace[lmeval]')")
def test_lm_eval_steered_model_scores_what_steer_scores(tiny_models, tmp_path):
    from lm_eval.api.instance import Instance
    from lm_eval.models.hf_steered import SteeredModel

    from trusttrace.evaluate.likelihood import continuation_logprobs

    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    g = torch.Generator().manual_seed(1)
    vector = SteeringVector({1: torch.randn(lm.info.hidden_size, generator=g)}, {"architecture": "llama"})
    path = export_vector(vector, tmp_path / "v.pt", "lm-eval", coefficient=3.0)
    contexts, conts = ["w1 w2 w3", "w4 w5"], [" w6 w7", " w8"]
    with steer(lm, vector, 1, alpha=3.0, positions="all", allow_mismatch=True):
        ours = continuation_logprobs(lm, contexts, conts, joint=True)
    steered = SteeredModel(pretrained=str(tiny_models["llama"]), steer_path=str(path), device="cpu",
                           dtype="float32", batch_size=1)
    requests = [Instance("loglikelihood", {}, (c, k), i) for i, (c, k) in enumerate(zip(contexts, conts))]
    theirs = np.array([ll for ll, _ in steered.loglikelihood(requests)])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    plain = continuation_logprobs(lm, contexts, conts, joint=True)
    assert np.abs(plain - ours).max() > 1e-3  # the vector did change the scores
