"""Issue 14: every user error about models, vectors and statement lengths is answered with a message and exit 2.

Each test reproduces one of the tester's reports with the tiny models of ``trusttrace.testing``, through the
API and through the CLI (exit code, message, no traceback, and the output folder left as it was).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from trusttrace.activations.extract import ExtractConfig, extract_last_token
from trusttrace.cli import app
from trusttrace.core.errors import (
    ModelError,
    ModelNotFoundError,
    OptionError,
    StatementTooLongError,
    VectorError,
)
from trusttrace.models.loading import load_model
from trusttrace.steering.interop import import_vector
from trusttrace.steering.vector import SteeringMismatch, SteeringVector, steer
from trusttrace.testing import planted_statements, save_tiny

runner = CliRunner()


def refused(args: list[str], *expected: str, absent: tuple[str, ...] = ()) -> str:
    """Run the CLI; it must exit 2 with each ``expected`` text in its message and no traceback."""
    res = runner.invoke(app, args)
    text = " ".join(res.output.split())
    squeezed = "".join(res.output.split())  # rich wraps long messages, paths too
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    for part in expected:
        assert "".join(part.split()) in squeezed, (part, res.output)
    for part in absent:
        assert "".join(part.split()) not in squeezed, (part, res.output)
    return text


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    """A Llama of hidden size 64 (the tiny models are 32 wide)."""
    return save_tiny(tmp_path_factory.mktemp("wide") / "step0", "llama", seed=3, hidden=64)


@pytest.fixture(scope="module")
def wide_vector(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vec") / "wide.safetensors"
    SteeringVector({l: torch.ones(64) for l in range(3)}, {"model": "wide", "n_layers": "3"}).save(path)
    return path


# ---------------------------------------------------------------- hidden sizes


def test_a_vector_of_another_hidden_size_is_refused_with_or_without_allow_mismatch(tiny_models, wide_vector):
    lm = load_model(str(tiny_models["llama"]), dtype="float32", device="cpu")
    vector = SteeringVector.load(wide_vector)
    for allow in (False, True):
        with pytest.raises(SteeringMismatch, match="hidden size 64 but .* has hidden size 32") as err, \
                steer(lm, vector, 1, allow_mismatch=allow):
            pass
        assert "--allow-mismatch" not in str(err.value)
    assert isinstance(err.value, VectorError)


@pytest.mark.parametrize("allow", [[], ["--allow-mismatch"]])
def test_evaluate_refuses_another_hidden_size_before_evaluating(tiny_models, wide_vector, tmp_path, allow):
    out = tmp_path / "eval"
    refused(["evaluate", "--model", str(tiny_models["llama"]), "--vector", str(wide_vector), "--layer", "1",
             "--dtype", "float32", "--device", "cpu", "--out", str(out), *allow],
            "hidden size 64", "hidden size 32", absent=("--allow-mismatch",))
    assert not out.exists()


@pytest.mark.parametrize("allow", [[], ["--allow-mismatch"]])
def test_steer_refuses_another_hidden_size_before_tracing(tiny_models, wide, data_dir, tmp_path, allow):
    out = tmp_path / "steer"
    text = refused(["steer", "--source", str(wide), "--target", str(tiny_models["llama"]), "--dimension", "privacy",
                    "--out", str(out), "--layers", "1", "--alphas", "1", "--data-dir", str(data_dir), "--limit", "20",
                    "--dtype", "float32", "--device", "cpu", *allow],
                   "hidden size 64", "hidden size 32", absent=("--allow-mismatch",))
    assert "Build the vector on a model with hidden size 32" in text.replace("` ", "")
    assert not out.exists()  # refused before anything was traced or written


def test_steer_refuses_layers_outside_the_target_before_tracing(tiny_models, data_dir, tmp_path):
    out = tmp_path / "steer"
    refused(["steer", "--source", str(tiny_models["llama"]), "--target", str(tiny_models["llama"]), "--dimension",
             "privacy", "--out", str(out), "--layers", "1,14", "--data-dir", str(data_dir)],
            "--layers 1,14", "14 is outside", "0..2")
    assert not out.exists()


def test_evaluate_refuses_a_layer_outside_the_target(tiny_models, tmp_path):
    path = tmp_path / "v.safetensors"
    SteeringVector({l: torch.ones(32) for l in range(3)}, {"model": "m"}).save(path)
    refused(["evaluate", "--model", str(tiny_models["llama"]), "--vector", str(path), "--layer", "7",
             "--dtype", "float32", "--device", "cpu"], "--layer 7", "outside", "0..2")


# ---------------------------------------------------------------- vector files


def _bad_vector_files(folder: Path, good: Path) -> dict[str, Path]:
    blob = good.read_bytes()
    files = {"truncated": blob[: len(blob) // 2], "garbage header": b"\xff" * 8 + blob[8:],
             "random bytes": bytes(range(256)) * 3, "text": b"layer_0,1,2,3\n"}
    out = {}
    for name, data in files.items():
        path = folder / f"{name.replace(' ', '_')}.safetensors"
        path.write_bytes(data)
        out[name] = path
    return out


def test_damaged_vector_files_are_vector_errors(tmp_path):
    good = tmp_path / "good.safetensors"
    SteeringVector({0: torch.ones(4)}, {}).save(good)
    for path in _bad_vector_files(tmp_path, good).values():
        with pytest.raises(VectorError, match="trusttrace vectors build") as err:
            SteeringVector.load(path)
        assert path.name in str(err.value)
    with pytest.raises(VectorError, match="no such file"):
        SteeringVector.load(tmp_path / "missing.safetensors")
    for suffix in (".gguf", ".pt", ".npz"):
        (tmp_path / f"text{suffix}").write_text("not a vector")
        with pytest.raises(VectorError, match=f"text{suffix}"):
            import_vector(tmp_path / f"text{suffix}")


def test_damaged_vector_files_are_refused_by_every_command(tiny_models, tmp_path):
    good = tmp_path / "good.safetensors"
    SteeringVector({0: torch.ones(32)}, {}).save(good)
    for path in _bad_vector_files(tmp_path, good).values():
        refused(["evaluate", "--model", str(tiny_models["llama"]), "--vector", str(path), "--layer", "0"],
                path.name, "trusttrace vectors build")
        refused(["vectors", "export", str(path), "--format", "numpy"], path.name, "trusttrace vectors build")
        assert not path.with_suffix(".npz").exists()
    (tmp_path / "text.gguf").write_text("hello")
    refused(["vectors", "import", str(tmp_path / "text.gguf"), "--out", str(tmp_path / "v.safetensors")],
            "text.gguf", "GGUF")
    assert not (tmp_path / "v.safetensors").exists()


# ---------------------------------------------------------------- statement lengths


def _long_dataset(folder: Path, words: int) -> Path:
    statements, labels = planted_statements(40, seed=0)
    statements[3] = " ".join(["w1"] * words) + " good"
    labels[3] = 1
    path = folder / "long.csv"
    pd.DataFrame({"statement": statements, "label": labels}).to_csv(path, index=False)
    return path


def test_a_statement_longer_than_the_context_is_refused_or_cut(tiny_models):
    lm = load_model(str(tiny_models["gpt2"]), dtype="float32", device="cpu")  # 128 positions: IndexError before
    long = " ".join(["w1"] * 300) + " good"
    with pytest.raises(StatementTooLongError, match=r"row 1 \(0-based\): the statement is 302 tokens, more than "
                                                    r".* context of 128 positions.*--max-tokens N"):
        extract_last_token(lm, ["w2 bad", long], ExtractConfig())
    cut = extract_last_token(lm, ["w2 bad", long], ExtractConfig(max_statement_tokens=50))
    last = extract_last_token(lm, [" ".join(["w1"] * 49) + " good"], ExtractConfig(add_special_tokens=False))
    assert torch.allclose(cut[:, 1], last[:, 0], atol=1e-5)  # the last 50 tokens, no BOS
    with pytest.raises(OptionError, match="--max-tokens 500 is more than .* context of 128"):
        extract_last_token(lm, ["w2 bad"], ExtractConfig(max_statement_tokens=500))
    with pytest.raises(OptionError, match="positive"):
        ExtractConfig(max_statement_tokens=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_trace_refuses_long_statements_before_writing_anything(tiny_models, tmp_path, arch):
    data = _long_dataset(tmp_path, 10_000)
    out = tmp_path / "run"
    refused(["trace", "--model", str(tiny_models[arch]), "--out", str(out), "--dimensions", str(data),
             "--analyses", "probe", "--controls", "none", "--dtype", "float32", "--device", "cpu"],
            "'long'", "row 3", "10002 tokens", "context of 128 positions", "--max-tokens N")
    assert not out.exists()


def test_trace_with_max_tokens_cuts_and_records_it(tiny_models, tmp_path, caplog):
    data = _long_dataset(tmp_path, 300)
    out = tmp_path / "run"
    res = runner.invoke(app, ["trace", "--model", str(tiny_models["gpt2"]), "--out", str(out), "--dimensions",
                              str(data), "--analyses", "probe", "--controls", "none", "--folds", "2",
                              "--protocol", "cv", "--dtype", "float32", "--device", "cpu", "--max-tokens", "64"])
    assert res.exit_code == 0, res.output
    assert "statements truncated to their last 64 tokens: 1 of" in " ".join(res.output.split())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["max_statement_tokens"] == 64


# ---------------------------------------------------------------- model folders and names


def test_a_folder_without_weights_names_what_is_expected(tiny_models, tmp_path):
    folder = tmp_path / "noweights"
    folder.mkdir()
    for f in tiny_models["llama"].iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, folder / f.name)
    with pytest.raises(ModelError, match="has a config.json but no weights: expected .*model.safetensors"):
        load_model(str(folder))
    refused(["evaluate", "--model", str(folder)], str(folder), "no weights", "model.safetensors")


@pytest.mark.parametrize("ref", ["./no/such/model", "../nope", "~/nope-trusttrace", "a/b/c"])
def test_a_mistyped_path_is_no_such_folder_not_a_network_error(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no such folder or file .*a hub id such as EleutherAI/pythia-70m"):
        load_model(ref)
    refused(["evaluate", "--model", ref], "no such folder", "a hub id such as EleutherAI/pythia-70m",
            absent=("network",))


def test_a_path_whose_first_part_exists_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        load_model("runs/smol")


def test_an_org_name_that_is_neither_says_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # offline (conftest): the hub cannot be reached
    with pytest.raises(ConnectionError, match="is not a local folder .* fetching it as a hub id failed") as err:
        load_model("someorg/somemodel")
    assert "If you meant a folder, check the path" in str(err.value)


def test_remote_code_names_the_cli_option(tiny_models, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_models["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="mycustom", auto_map={"AutoConfig": "configuration_my.MyConfig",
                                                   "AutoModelForCausalLM": "modeling_my.MyModel"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"--trust-remote-code \(API: trust_remote_code=True\)"):
        load_model(str(folder))
    refused(["evaluate", "--model", str(folder)], "--trust-remote-code (API: trust_remote_code=True)")


# ---------------------------------------------------------------- number lists


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--alphas", "abc", "--alphas 'abc': 'abc' is not a number"),
    ("--alphas", "nan", "'nan' is not a finite number"),
    ("--alphas", "1,inf", "'inf' is not a finite number"),
    ("--layers", "abc", "--layers 'abc': 'abc' is not an integer"),
    ("--layers", "1.5", "'1.5' is not an integer"),
])
def test_steer_number_lists_name_the_option(option, value, expected, tmp_path):
    out = tmp_path / "o"
    refused(["steer", "--source", "s", "--target", "t", "--dimension", "toxicity", "--out", str(out),
             f"{option}={value}"], expected)
    assert not out.exists()


def test_vectors_export_layers_name_the_option(tmp_path):
    path = tmp_path / "v.safetensors"
    SteeringVector({0: torch.ones(4)}, {}).save(path)
    refused(["vectors", "export", str(path), "--format", "numpy", "--layers", "abc"],
            "--layers 'abc': 'abc' is not an integer")


def test_evaluate_refuses_a_nan_alpha(tmp_path):
    path = tmp_path / "v.safetensors"
    SteeringVector({0: torch.ones(4)}, {}).save(path)
    refused(["evaluate", "--model", "m", "--vector", str(path), "--layer", "0", "--alpha", "nan"],
            "--alpha nan", "finite")
