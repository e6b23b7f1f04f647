import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.phases import PhaseRule, PhasesConfig, detect_phases, layer_phases, run_phases, summarise
from trusttrace.tables import select_layers

STEPS = np.array([0, 100, 200, 300, 500, 1000, 1500, 2000, 2500, 3000])


def test_rise_then_fall_is_fitting_then_compression():
    tx = np.array([0.5, 2.5, 4.0, 4.6, 4.2, 3.4, 2.9, 2.5, 2.2, 2.0])
    ty = np.linspace(0.01, 0.3, 10)
    got = layer_phases(STEPS, tx, ty)
    assert got["fitting"] and got["compression"] and got["mi_ty_rising"]
    assert got["peak_step"] == 300 and got["drop_after_peak"] > 0.4


def test_monotone_rise_has_no_compression():
    got = layer_phases(STEPS, np.linspace(1, 5, 10), np.linspace(0.3, 0.01, 10))
    assert got["fitting"] and not got["compression"] and got["peak_step"] == 3000
    assert not got["mi_ty_rising"]


@pytest.mark.parametrize("seed", range(5))
def test_noise_is_not_a_phase(seed):
    rng = np.random.default_rng(seed)
    tx = 3.0 + 0.05 * rng.standard_normal(10)  # ±1.7 %: checkpoint noise
    got = layer_phases(STEPS, tx, 0.1 + 0.01 * rng.standard_normal(10))
    assert not got["compression"] and not got["mi_ty_rising"]


def test_one_low_point_at_the_end_is_not_sustained():
    tx = np.array([3.0, 3.1, 3.0, 3.1, 3.05, 3.0, 3.1, 3.0, 3.05, 1.0])
    assert not layer_phases(STEPS, tx, np.zeros(10), PhaseRule(smooth=1))["compression"]


def test_order_of_rows_does_not_matter():
    tx = np.array([0.5, 2.5, 4.0, 4.6, 4.2, 3.4, 2.9, 2.5, 2.2, 2.0])
    perm = np.random.default_rng(0).permutation(10)
    assert layer_phases(STEPS[perm], tx[perm], tx[perm]) == layer_phases(STEPS, tx, tx)


def test_too_few_checkpoints():
    with pytest.raises(ValueError, match="at least 3 checkpoints"):
        layer_phases(np.array([0, 1]), np.ones(2), np.ones(2))


def table(n_layers=4):
    rows = []
    for layer in range(n_layers):
        tx = np.array([0.5, 2.5, 4.0, 4.6, 4.2, 3.4, 2.9, 2.5, 2.2, 2.0]) if layer else np.linspace(1, 5, 10)
        for step, a, b in zip(STEPS, tx, np.linspace(0.01, 0.3, 10)):
            rows += [("fairness", layer, step, "mi_tx", a), ("fairness", layer, step, "mi_ty", b),
                     ("fairness", layer, step, "accuracy", 0.9)]
    return pd.DataFrame(rows, columns=["dimension", "layer", "step", "metric", "value"])


def test_detect_and_summarise():
    phases = detect_phases(table())
    assert len(phases) == 4 and phases.compression.tolist() == [False, True, True, True]
    summary, lines = summarise(phases)
    assert summary.iloc[0].compression == 3 and summary.iloc[0].median_peak_step == 300
    assert lines == [("fairness: I(T;X) rises then falls (fitting, then compression) in 3 of 4 layers, "
                      "peaking at step 300 (median); I(T;Y) keeps rising in 4 of 4 layers.")]


def test_detect_needs_mi_rows_with_steps():
    with pytest.raises(ValueError, match="no mi_tx"):
        detect_phases(table().query("metric == 'accuracy'"))
    t = table()
    t["step"] = None
    with pytest.raises(ValueError, match="no training step"):
        detect_phases(t)


def test_cli_phases_writes_tables_and_figures(tmp_path):
    table(8).to_csv(tmp_path / "results.csv", index=False)
    res = CliRunner().invoke(app, ["phases", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "rises then falls" in res.output
    assert len(pd.read_csv(tmp_path / "mi" / "phases.csv")) == 8
    assert pd.read_csv(tmp_path / "mi" / "summary.csv").compression.tolist() == [7]
    for name in ("fairness_mi_vs_step.png", "fairness_information_plane.png", "fairness_mi_vs_step.html",
                 "fairness_information_plane.html"):
        assert (tmp_path / "mi" / name).stat().st_size > 10_000, name
    assert (tmp_path / "mi" / "fairness_information_plane.png").read_bytes()[:4] == b"\x89PNG"
    assert "plotly" in (tmp_path / "mi" / "fairness_mi_vs_step.html").read_text()[:200_000].lower()
    res = CliRunner().invoke(app, ["phases", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no results" in res.output


def test_run_phases_without_plots(tmp_path):
    table().to_csv(tmp_path / "results.csv", index=False)
    result = run_phases(PhasesConfig(str(tmp_path)))
    assert [p.name for p in result.outputs] == ["phases.csv", "summary.csv"]
    assert not list((tmp_path / "mi").glob("*.html"))  # figures are the report's (and the CLI's) to draw


@pytest.mark.parametrize("n,expect", [(32, [0, 6, 12, 18, 24, 30]), (30, [0, 6, 11, 17, 22, 28]),
                                      (3, [0, 1, 2]), (1, [0])])
def test_layer_selection_adapts_to_depth(n, expect):
    assert select_layers(n) == expect
