import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.core.errors import RunFolderError
from trusttrace.report import ReportConfig, load_run, run_report

STEPS = [0, 10, 100, 1000]
REVS = [f"step{s}" for s in STEPS]


def _results(n_layers=4, dims=("toxicity", "fairness"), shift=0.0):
    rng = np.random.default_rng(0)
    rows = []
    for dim in dims:
        for rev, step in zip(REVS, STEPS):
            for layer in range(n_layers):
                acc = 0.5 + 0.1 * np.log10(step + 1) + 0.02 * layer + shift
                tx = 1 + np.log10(step + 1) - 0.4 * (step == 1000)
                rows += [(rev, step, dim, layer, "accuracy", acc), (rev, step, dim, layer, "accuracy_std", 0.02),
                         (rev, step, dim, layer, "majority_baseline", 0.55),
                         (rev, step, dim, layer, "mi_tx", tx + rng.normal(0, 0.01)),
                         (rev, step, dim, layer, "mi_ty", 0.1 * np.log10(step + 2)),
                         (rev, step, dim, layer, "accuracy_ci_low", acc - 0.04),
                         (rev, step, dim, layer, "accuracy_ci_high", acc + 0.04),
                         (rev, step, dim, layer, "control_shuffled", 0.5),
                         (rev, step, dim, layer, "control_lexical", 0.6),
                         (rev, step, dim, layer, "control_random_init", 0.55 + 0.01 * layer),
                         (rev, step, dim, layer, "selectivity", acc - 0.6)]
    frame = pd.DataFrame(rows, columns=["revision", "step", "dimension", "layer", "metric", "value"])
    return frame.assign(model="m", n_train=80, n_test=20, seed=0, protocol="cv", dtype="float32", commit="")


def _steer_folder(folder, dim="toxicity"):
    folder.mkdir(parents=True)
    rows = [("unsteered", -1, 0.0, dim, "toxic_ratio", 0.4), ("unsteered", -1, 0.0, "general", "perplexity", 10.0)]
    for src in ("self", "step10", "step100", "step1000"):
        for alpha in (-2.0, 2.0):
            tox = 0.4 + 0.05 * alpha
            rows += [(src, 1, alpha, dim, "toxic_ratio", tox),
                     (src, 1, alpha, "general", "perplexity", 11.0 + abs(alpha)),
                     (src, 1, alpha, dim, "cosine_to_self", 0.5), (src, 1, alpha, dim, "toxic_ratio_ci_low", tox - 0.1),
                     (src, 1, alpha, dim, "toxic_ratio_ci_high", tox + 0.1),
                     (src, 1, alpha, dim, "toxic_ratio_p_mcnemar", 0.01 if alpha < 0 else 0.5)]
    table = pd.DataFrame(rows, columns=["source_revision", "layer", "alpha", "dimension", "metric", "value"])
    table.assign(n=10, spec="s").to_csv(folder / "steering.csv", index=False)
    pd.DataFrame([{"source_revision": "unsteered", "layer": -1, "alpha": 0.0, "toxic_ratio": 0.4, "perplexity": 10.0,
                   "within_budget": True}]).to_csv(folder / "best.csv", index=False)
    pd.DataFrame([{"layer": 1, "alpha": -2.0, "metric": "toxic_ratio", "pearson_r": -0.5, "pearson_lo": -1.0,
                   "pearson_hi": 1.0, "spearman_r": -0.5, "spearman_lo": -1.0, "spearman_hi": 1.0, "n_sources": 3,
                   "n_boot": 2000}]).to_csv(folder / "correlation.csv", index=False)
    (folder / "steer_config.json").write_text(json.dumps({"ppl_budget": 1.33, "dimension": dim}))
    (folder / "source").mkdir()
    _results(dims=(dim,)).to_csv(folder / "source" / "results.csv", index=False)


@pytest.fixture
def full_run(tmp_path):
    """A demo-shaped folder: a pre-training run with its trace, and a steering sweep."""
    root = tmp_path / "demo"
    trace = root / "pretrain" / "trace"
    trace.mkdir(parents=True)
    _results().to_csv(trace / "results.csv", index=False)
    (trace / "manifest.json").write_text(json.dumps({
        "config": {"model": "runs/demo/pretrain/checkpoints"}, "versions": {"trusttrace": "0.1"},
        "seeds": {"cv_folds": 0}, "started": "2026-11-21T10:00:00+00:00", "finished": "2026-11-21T10:05:00+00:00",
        "checkpoints": {r: {"dtype": "bfloat16"} for r in REVS}}))
    (trace / "mi").mkdir()
    pd.DataFrame([{"dimension": "toxicity", "layer": 0, "peak_step": 100, "compression": True},
                  {"dimension": "toxicity", "layer": 3, "peak_step": 100, "compression": False}]
                 ).to_csv(trace / "mi" / "phases.csv", index=False)
    pd.DataFrame({"step": range(50), "loss": np.linspace(9, 4, 50), "lr": 1e-3, "tokens": 0, "seconds": 0.0}
                 ).to_csv(root / "pretrain" / "loss.csv", index=False)
    pd.DataFrame({"step": [0, 10, 49], "tokens": 0, "heldout_loss": [9.0, 6.0, 4.2],
                  "heldout_perplexity": np.exp([9.0, 6.0, 4.2]), "seconds": 0.0}
                 ).to_csv(root / "pretrain" / "checkpoints.csv", index=False)
    _steer_folder(root / "steer-toxicity")
    return root


def test_every_section_is_drawn_from_the_tables(full_run):
    result = run_report(ReportConfig((full_run,), png=False))
    assert result.page == full_run / "report" / "index.html"
    figs = set(result.figures)
    assert {"demo-toxicity-probe-heatmap", "demo-toxicity-selectivity-heatmap", "toxicity-probe-vs-step",
            "fairness-mi-vs-step",
            "toxicity-information-plane", "steer-toxicity-steering", "steer-toxicity-probe-vs-effect",
            "demo-loss"} <= figs
    page = result.page.read_text()
    assert page.count("data-figure=") == len(result.figures)
    assert "<script src=" not in page  # plotly.js is inlined: the page works offline
    assert "majority baseline 0.550" in page and "Pearson r -0.50 [-1.00, +1.00]" in page
    assert "McNemar" in page and "bag of words 0.600" in page  # significant α marked; controls drawn
    assert "best α per source" in page and "0:05:00" in page  # the best-α table; the run time
    assert (full_run / "report" / "tables" / "steer-toxicity_steering.csv").is_file()
    assert "tables/pretrain_loss.csv" in page


def test_empty_and_partial_runs_leave_notes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunFolderError, match="Nothing to report in .*empty: no results, steering sweep or loss curve"):
        run_report(ReportConfig((empty,), png=False))
    assert list(empty.iterdir()) == []  # no 4.8 MB page of notes
    probe_only = tmp_path / "probe-only"
    probe_only.mkdir()
    _results()[lambda f: ~f.metric.str.startswith("mi")].to_csv(probe_only / "results.csv", index=False)
    result = run_report(ReportConfig((probe_only,), png=False))
    assert "toxicity-probe-vs-step" in result.figures and "No MI rows" in result.page.read_text()


def test_two_runs_and_a_paper_csv_are_overlaid(full_run, tmp_path):
    other = tmp_path / "seed1"
    other.mkdir()
    _results(shift=0.05).to_csv(other / "results.csv", index=False)
    paper = tmp_path / "paper.csv"
    _results(dims=("toxicity",), shift=0.1)[["step", "dimension", "layer", "metric", "value"]].to_csv(
        paper, index=False)
    result = run_report(ReportConfig((full_run, other, paper), out=str(tmp_path / "cmp"), png=False))
    page = result.page.read_text()
    for name in ("demo", "seed1", "paper"):  # plotly's JSON escapes the middle dot
        assert json.dumps(f"{name} · layer 0")[1:-1] in page
    with pytest.raises(ValueError, match="columns"):
        bad = tmp_path / "bad.csv"
        pd.DataFrame({"x": [1]}).to_csv(bad, index=False)
        load_run(bad)


def test_cli_report(full_run, tmp_path):
    res = CliRunner().invoke(app, ["report", str(full_run), "--no-png"])
    assert res.exit_code == 0, res.output
    assert "index.html" in res.output and (full_run / "report" / "index.html").is_file()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "missing does not exist" in res.output


def test_the_page_renders_in_a_real_browser(full_run, tmp_path):
    """Headless Chromium: no console errors, every figure drawn; the screenshot is kept as a CI artifact."""
    import os
    import shutil

    from tests.report.browser import browser_or_skip, check_page

    browser_or_skip()
    result = run_report(ReportConfig((full_run,), png=False))
    check = check_page(result.page, full_run / "report" / "screenshot.png")
    assert check.console_errors == []
    assert set(check.figures) == set(result.figures) and all(check.figures.values()), check.figures
    artifacts = os.environ.get("TRUSTTRACE_ARTIFACTS")
    if artifacts:  # CI keeps the picture
        os.makedirs(artifacts, exist_ok=True)
        shutil.copyfile(check.screenshot, os.path.join(artifacts, "report-synthetic.png"))


def test_a_single_checkpoint_is_drawn_by_layer(tmp_path):
    single = tmp_path / "smol"
    single.mkdir()
    one = _results()[lambda f: f.revision == "step100"].assign(revision="final", step=None)
    one.to_csv(single / "results.csv", index=False)
    result = run_report(ReportConfig((single,), png=False))
    assert {"toxicity-by-layer", "fairness-by-layer"} <= set(result.figures)
    assert "smol-toxicity-probe-heatmap" not in result.figures  # a one-row grid says nothing the lines do not
    assert "toxicity-probe-vs-step" not in result.figures and "drawn by layer above" in result.page.read_text()
    assert (single / "report" / "tables" / "results.csv").is_file()


def test_heatmap_has_whole_layer_ticks_and_marks_where_each_layer_emerges():
    """Issue 24: a 4-layer axis read −0.5, 0, 0.5, …; the selectivity heatmap stars each layer's emergence step."""
    from trusttrace.report.probe_figures import probe_heatmap

    rows = []
    for step in (0, 10, 100, 1000):
        for layer in range(4):
            low = 0.05 if (layer == 2 and step >= 100) or (layer == 3 and step == 1000) else -0.02
            rows += [("toxicity", f"step{step}", step, layer, "selectivity", low + 0.04),
                     ("toxicity", f"step{step}", step, layer, "selectivity_ci_low", low),
                     ("toxicity", f"step{step}", step, layer, "accuracy", 0.8)]
    results = pd.DataFrame(rows, columns=["dimension", "revision", "step", "layer", "metric", "value"])
    fig = probe_heatmap(results, "toxicity", "run", "selectivity").figure
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tick0 == 0
    stars = [t for t in fig.data if t.type == "scatter"]
    assert len(stars) == 1 and list(stars[0].x) == [2, 3] and list(stars[0].y) == ["step100", "step1000"]
    never = results.assign(value=np.where(results.metric == "selectivity_ci_low", -0.1, results.value))
    assert [t.type for t in probe_heatmap(never, "toxicity", "run", "selectivity").figure.data] == ["heatmap"]


def test_emergence_summary_names_the_first_step_or_never():
    from trusttrace.runs.tables import NEVER, emergence_summary

    rows = []
    for step in (0, 10, 100):
        for layer in range(3):
            low = 0.02 if (layer == 1 and step >= 10) else -0.01  # toxicity layer 1 from step 10 on; step 0 dips
            rows += [("toxicity", f"s{step}", step, layer, "selectivity_ci_low", low),
                     ("privacy", f"s{step}", step, layer, "selectivity_ci_low", 0.05 if step == 10 else -0.05)]
    results = pd.DataFrame(rows, columns=["dimension", "revision", "step", "layer", "metric", "value"])
    table = emergence_summary(results).set_index("dimension")
    assert table.loc["toxicity", "emerges"] == "step 10" and table.loc["toxicity", "layer"] == 1
    assert table.loc["toxicity", "layers_emerged"] == 1 and table.loc["toxicity", "layers"] == 3
    assert table.loc["privacy", "emerges"] == NEVER  # above zero at step 10 only: it does not stay
    assert emergence_summary(results[results.step == 100]).empty  # one checkpoint: nothing to say


def test_steering_figure_draws_the_controls_and_keeps_the_perplexity_axis_to_its_values():
    import math

    from trusttrace.report.load import Sweep
    from trusttrace.report.steer_figures import steering_figure

    rows = [("unsteered", -1, 0.0, "toxicity", "toxic_ratio", 0.4),
            ("unsteered", -1, 0.0, "general", "perplexity", 108.0),
            ("prompt", -1, 0.0, "toxicity", "toxic_ratio", 0.5), ("prompt", -1, 0.0, "general", "perplexity", 108.0)]
    for src, tox in (("self", 0.2), ("random", 0.41)):
        rows += [(src, 15, -1.0, "toxicity", "toxic_ratio", tox), (src, 15, -1.0, "general", "perplexity", 120.0),
                 (src, 15, -1.0, "toxicity", "toxic_ratio_ci_low", tox - 0.05),
                 (src, 15, -1.0, "toxicity", "toxic_ratio_ci_high", tox + 0.05)]
    table = pd.DataFrame(rows, columns=["source_revision", "layer", "alpha", "dimension", "metric", "value"])
    figure = steering_figure("s", Sweep(table, None, None, {"ppl_budget": 1.33}, None))
    assert figure is not None
    names = [trace.name for trace in figure.figure.data]
    assert "random directions · layer 15" in names and not any(n and n.startswith("random ·") for n in names)
    budget = next(a for a in figure.figure.layout.annotations if str(a.text).startswith("budget"))
    assert budget.y == pytest.approx(math.log10(1.33 * 108.0))  # a log axis: the label sits at the line
    assert any(str(a.text) == "prompting baseline" for a in figure.figure.layout.annotations)
