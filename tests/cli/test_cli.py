"""The command line's conventions: --version, python -m, choices checked while parsing, exit codes, MODEL@REV."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from trusttrace import __version__
from trusttrace.cli import app
from trusttrace.cli._shared import model_at, numbers
from trusttrace.cli.choices import CHOICES, check_device
from trusttrace.core import names

runner = CliRunner()


def test_version_and_python_dash_m():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"trusttrace {__version__}"
    done = subprocess.run([sys.executable, "-m", "trusttrace", "--help"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and "trace" in done.stdout and "Exit codes" in done.stdout


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_every_enum_lists_exactly_the_names_the_stages_accept(name):
    assert tuple(member.value for member in CHOICES[name]) == getattr(names, name)


@pytest.mark.parametrize("argv", [
    ["trace", "--model", "m", "--out", "o", "--protocol", "group_cv"],
    ["trace", "--model", "m", "--out", "o", "--dtype", "fp64"],
    ["trace", "--model", "m", "--out", "o", "--device", "gpu"],
    ["probe", "run", "--out", "o", "--mi-estimator", "knn"],
    ["steer", "--source", "s", "--target", "t", "--dimension", "honesty", "--out", "o"],
    ["evaluate", "--model", "m", "--binary-mode", "parse"],
    ["pretrain", "--out", "o", "--precision", "fp8"],
    ["vectors", "export", "v.safetensors", "--format", "onnx"],
])
def test_a_bad_choice_is_a_usage_error_before_anything_runs(argv, tmp_path):
    res = runner.invoke(app, argv)
    assert res.exit_code == 2 and "Invalid value" in res.output
    assert not (tmp_path / "o").exists()


def test_help_lists_the_choices():
    res = runner.invoke(app, ["trace", "--help"], env={"COLUMNS": "200"})
    assert "group-cv" in res.output and "paper-code" in res.output and "bfloat16" in res.output


def test_devices():
    assert [check_device(d) for d in ("auto", "cpu", "cuda", "cuda:1", "mps")] == ["auto", "cpu", "cuda", "cuda:1",
                                                                                   "mps"]


def test_model_at_revision(tmp_path):
    assert model_at("EleutherAI/pythia-70m@step1000", None) == ("EleutherAI/pythia-70m", "step1000")
    assert model_at("EleutherAI/pythia-70m", "step1000") == ("EleutherAI/pythia-70m", "step1000")
    assert model_at("EleutherAI/pythia-70m@step1000", "step1000") == ("EleutherAI/pythia-70m", "step1000")
    with pytest.raises(ValueError, match="give one"):
        model_at("EleutherAI/pythia-70m@step1000", "step2000")
    with pytest.raises(ValueError, match="MODEL@REVISION"):
        model_at("EleutherAI/pythia-70m@", None)
    folder = tmp_path / "run@2"
    folder.mkdir()
    assert model_at(str(folder), None) == (str(folder), None)  # an existing path is never split


def test_number_lists_say_what_is_wrong():
    assert numbers("-2,-1, 1,2", "--alphas", float) == (-2.0, -1.0, 1.0, 2.0)
    assert numbers("12,14", "--layers", int) == (12, 14)
    with pytest.raises(ValueError, match="'abc' is not a number"):
        numbers("1,abc", "--alphas", float)
    with pytest.raises(ValueError, match="not a finite number"):
        numbers("nan", "--alphas", float)
    with pytest.raises(ValueError, match="'1.5' is not an integer"):
        numbers("1.5", "--layers", int)
    with pytest.raises(ValueError, match="at least one"):
        numbers(",,", "--layers", int)


def test_exit_codes_runtime_failure_is_1_usage_error_is_2(monkeypatch, tmp_path):
    from trusttrace import evaluate

    def offline(config):
        raise ConnectionError("Downloading x failed. Check the network.")

    monkeypatch.setattr(evaluate, "run_evaluate", offline)
    res = runner.invoke(app, ["evaluate", "--model", "org/name@main"])
    assert res.exit_code == 1 and "Check the network" in res.output

    def bad_id(config):
        raise ValueError("no such repository on the hub")

    monkeypatch.setattr(evaluate, "run_evaluate", bad_id)
    res = runner.invoke(app, ["evaluate", "--model", "org/name"])
    assert res.exit_code == 2 and "no such repository" in res.output
    res = runner.invoke(app, ["steer", "--source", "s", "--target", "t", "--dimension", "toxicity", "--out",
                              str(tmp_path / "o"), "--alphas", "abc"])
    assert res.exit_code == 2 and "'abc' is not a number" in res.output


def test_evaluate_passes_the_revision(monkeypatch):
    from trusttrace import evaluate

    seen = {}

    def capture(config):
        seen.update(model=config.model, revision=config.revision)
        raise ValueError("stop here")

    monkeypatch.setattr(evaluate, "run_evaluate", capture)
    runner.invoke(app, ["evaluate", "--model", "EleutherAI/pythia-70m@step1000"])
    assert seen == {"model": "EleutherAI/pythia-70m", "revision": "step1000"}
    runner.invoke(app, ["evaluate", "--model", "EleutherAI/pythia-70m", "--revision", "step3000"])
    assert seen == {"model": "EleutherAI/pythia-70m", "revision": "step3000"}
