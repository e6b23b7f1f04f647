import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.demo.job import DemoConfig, run_demo, steering_sources
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
    assert "## Mutual information: the phases of I(T;X)" in md and md.count("**Verdict:**") == 5  # every section
    assert {p["change"] for p in summary["probes"].values()} <= {"rises", "falls", "not resolved"}
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


def probe_rows(dimension, step, layer, acc, low, high, sel_low=None):
    rows = [(dimension, step, layer, "accuracy", acc), (dimension, step, layer, "accuracy_ci_low", low),
            (dimension, step, layer, "accuracy_ci_high", high), (dimension, step, layer, "majority_baseline", 0.5)]
    if sel_low is not None:
        rows += [(dimension, step, layer, "selectivity", sel_low + 0.05),
                 (dimension, step, layer, "selectivity_ci_low", sel_low),
                 (dimension, step, layer, "selectivity_ci_high", sel_low + 0.1)]
    return rows


def test_the_summary_calls_a_change_only_where_the_intervals_part():
    from trusttrace.demo.summary import summarise, summary_markdown

    rows = (probe_rows("fairness", 0, 0, 0.55, 0.50, 0.60, -0.1) + probe_rows("fairness", 9, 0, 0.80, 0.74, 0.85, 0.02)
            + probe_rows("privacy", 0, 0, 0.55, 0.45, 0.65, -0.1) + probe_rows("privacy", 9, 0, 0.62, 0.52, 0.72, -0.05)
            + probe_rows("toxicity", 0, 0, 0.70, 0.66, 0.74, 0.0)
            + probe_rows("toxicity", 9, 0, 0.52, 0.47, 0.57, -0.2))
    results = pd.DataFrame(rows, columns=["dimension", "step", "layer", "metric", "value"])
    summary = summarise(results, pd.DataFrame(), {}, [], 0)
    probes = summary["probes"]
    # a rise whose intervals overlap (privacy: 0.55 → 0.62) is not called a rise
    assert {d: p["change"] for d, p in probes.items()} == {"fairness": "rises", "privacy": "not resolved",
                                                          "toxicity": "falls"}
    assert {d for d, p in probes.items() if p["above_majority"]} == {"fairness", "privacy"}
    assert probes["fairness"]["last_ci"] == [0.74, 0.85] and probes["fairness"]["last_selective_layers"] == [0]
    md = summary_markdown(summary, Path("out"))
    assert "0.800 [0.740, 0.850] (L0)" in md and "| privacy | " in md and "| not resolved |" in md
    assert "rises beyond both 95 % intervals on 1 of 3 dimensions (fairness)" in md
    assert "above the majority baseline on 2 of 3 dimensions (fairness, privacy)" in md
    assert "lies above zero on 1 of 3 dimensions: fairness (layer 0)." in md


def test_demo_rejects_an_unknown_size():
    with pytest.raises(ValueError, match="size"):
        DemoConfig(size="huge")
