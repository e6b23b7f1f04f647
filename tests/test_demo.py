import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.demo import DemoConfig, run_demo, steering_sources
from trusttrace.testing import write_text_corpus


def test_steering_sources_are_early_middle_last():
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 125, 250, 500, 1000]
    assert steering_sources(steps, 1000) == [64, 500, 1000]
    assert steering_sources([0, 5, 12], 12) == [5, 12]  # too few checkpoints: early and middle coincide


def test_tiny_demo_runs_every_stage_and_resumes(tmp_path, sft_data):
    corpus = write_text_corpus(tmp_path / "text.txt")
    config = DemoConfig(out=str(tmp_path / "demo"), corpus=str(corpus), data_dir=str(sft_data), steps=12,
                        checkpoints="0,1,2,4,8,12", trace_limit=40, finetune_steps=4, alphas=(-4.0, 4.0),
                        steer_limit=10, size="tiny")
    summary = run_demo(config).summary
    out = tmp_path / "demo"
    assert set(summary["probes"]) == {"reliability", "toxicity", "privacy", "fairness", "robustness"}
    assert summary["steering_sources"] == ["step1", "step4", "step12"]  # 6 is as near 4 as 8: the earlier
    assert set(summary["steering"]) == {"toxicity"}
    tox = pd.read_csv(out / "steer-toxicity" / "steering.csv")
    assert set(tox.source_revision) == {"unsteered", "self", "step1", "step4", "step12", "proxy:step1", "proxy:step4",
                                        "proxy:step12",  # the sources proxy-tuned by (chat − step12), β = 1
                                        "prompt", "random", "random-0", "random-1", "random-2"}  # the controls
    shown = {r["source_revision"] for r in summary["steering"]["toxicity"]["rows"]}
    assert {"random", "prompt"} <= shown and "random-0" not in shown  # the draws pooled
    assert "toxic_ratio_effect_vs_random" in summary["steering"]["toxicity"]["extra"]
    assert "`proxy:<step>` rows" in (out / "summary.md").read_text()
    assert (out / "pretrain" / "trace" / "mi" / "phases.csv").exists() and (out / "chat" / "config.json").exists()
    assert "## Steering the chat model: toxicity (layer 1)" in (out / "summary.md").read_text()
    md = (out / "summary.md").read_text()
    assert "## Selectivity" in md and "## When each dimension emerges" in md
    assert "## Mutual information: the phases of I(T;X)" in md and md.count("**Verdict:**") == 3  # every section
    assert f"**Verdict:** {summary['steering']['toxicity']['verdict']}" in md
    phases = pd.read_csv(out / "pretrain" / "trace" / "mi" / "phases.csv")
    assert {"pattern", "trough_step", "peak_step", "robust", "unresolved", "mi_tx_random_init"} <= set(phases.columns)
    # a fall from the untrained network (step 0) is never read as compression
    assert not (phases.compression & phases.peak_step.isna()).any()
    for dim, m in summary["mi"].items():
        assert m["text"].startswith(dim) and m["text"] in md
    assert {"first_selectivity", "last_selectivity"} <= set(summary["probes"]["fairness"])
    assert 'data-figure="steer-toxicity-steering"' in (out / "report" / "index.html").read_text().replace("'", '"')
    stamp = (out / "steer-toxicity" / "steering.csv").stat().st_mtime_ns
    again = run_demo(config).summary  # every stage finds its work done
    assert json.dumps(again, sort_keys=True) == json.dumps(summary, sort_keys=True)
    assert (out / "steer-toxicity" / "steering.csv").stat().st_mtime_ns >= stamp


def test_cli_pretrain_then_finetune(tmp_path, sft_data):
    corpus = write_text_corpus(tmp_path / "text.txt")
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["pretrain", "--out", str(run), "--corpus", str(corpus), "--steps", "6",
                                   "--checkpoints", "0,6", "--hidden-size", "32", "--layers", "2", "--heads", "2",
                                   "--intermediate-size", "64", "--vocab-size", "300", "--seq-len", "32",
                                   "--batch-size", "4", "--precision", "fp32", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "2 checkpoints" in res.output
    res = CliRunner().invoke(app, ["finetune", "--model", str(run / "checkpoints" / "last"), "--out",
                                   str(tmp_path / "chat"), "--steps", "3", "--batch-size", "4", "--data-dir",
                                   str(sft_data), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "chat" / "model.safetensors").exists()
    res = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path / "x"), "--corpus", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "error" in res.output


def test_demo_rejects_an_unknown_size():
    with pytest.raises(ValueError, match="size"):
        DemoConfig(size="huge")
