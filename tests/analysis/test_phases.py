import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.analysis.phases import (
    PhaseRule,
    PhasesConfig,
    detect_phases,
    layer_phases,
    run_phases,
    summarise,
)
from trusttrace.cli import app
from trusttrace.runs.tables import select_layers

STEPS = np.array([0, 100, 200, 300, 500, 1000, 1500, 2000, 2500, 3000])


RISE_FALL = np.array([0.5, 2.5, 4.0, 4.6, 4.2, 3.4, 2.9, 2.5, 2.2, 2.0])
# Planted curves of each pattern (I(T;X) by checkpoint of STEPS), with the pattern the rule must read.
PLANTED = {
    "fit-compress": RISE_FALL,
    "fit": np.linspace(1, 5, 10),
    "decay": np.array([7.5, 7.0, 5.0, 3.0, 2.2, 2.1, 2.0, 2.05, 2.0, 2.02]),
    "decay-fit": np.array([7.48, 7.47, 7.40, 6.84, 3.47, 2.24, 2.20, 3.47, 4.34, 4.60]),  # the demo's fairness L0
    "decay-fit-compress": np.array([7.5, 6.0, 3.0, 2.0, 3.5, 5.0, 5.2, 4.0, 3.0, 2.6]),
    "flat": np.full(10, 3.0),
}


def bounds(tx, width):
    return {"tx_low": tx - width, "tx_high": tx + width}


@pytest.mark.parametrize("pattern", list(PLANTED))
def test_planted_curves_read_as_their_pattern(pattern):
    tx = PLANTED[pattern]
    for given in (None, bounds(tx, 0.05)):  # with narrow intervals and with none
        got = layer_phases(STEPS, tx, np.linspace(0.01, 0.3, 10), bounds=given)
        assert got["pattern"] == pattern, (given is not None, got)
        assert got["intervals"] == (given is not None)
    assert got["compression"] == ("compress" in pattern) and got["decay"] == ("decay" in pattern)


def test_a_fall_from_step_0_is_decay_never_compression():
    """The demo's mistake: the random-init network's I(T;X) is the largest of the run."""
    got = layer_phases(STEPS, PLANTED["decay-fit"], np.zeros(10))
    assert not got["compression"] and got["pattern"] == "decay-fit"
    assert got["first_step"] == 0 and got["trough_step"] in (300, 500, 1000) and got["peak_step"] == 3000


def test_trough_and_peak_steps():
    got = layer_phases(STEPS, RISE_FALL, np.linspace(0.01, 0.3, 10))
    assert got["trough_step"] == 0 and got["peak_step"] == 300 and got["drop_after_peak"] > 0.4
    assert got["mi_ty_rising"]


def test_monotone_rise_has_no_compression():
    got = layer_phases(STEPS, np.linspace(1, 5, 10), np.linspace(0.3, 0.01, 10))
    assert got["fitting"] and not got["compression"] and got["peak_step"] == 3000
    assert not got["mi_ty_rising"]


def test_wide_intervals_leave_a_change_unresolved():
    got = layer_phases(STEPS, RISE_FALL, np.zeros(10), bounds=bounds(RISE_FALL, 3.0))
    assert got["pattern"] == "flat" and got["unresolved"] == "fit"  # compression is judged after a resolved peak only
    # the fall after the peak alone inside its interval: fitting holds, compression is unresolved
    got = layer_phases(STEPS, RISE_FALL, np.zeros(10), bounds={"tx_low": RISE_FALL - 2.2, "tx_high": RISE_FALL + 0.2})
    assert got["pattern"] == "fit" and got["unresolved"] == "compress"


@pytest.mark.parametrize("seed", range(20))
def test_noise_is_flat_or_unresolved(seed):
    """Pure noise around a level, with intervals as wide as the noise: never a resolved phase."""
    rng = np.random.default_rng(seed)
    sd = 0.3
    tx = 3.0 + sd * rng.standard_normal(10)
    got = layer_phases(STEPS, tx, 0.1 + 0.01 * rng.standard_normal(10), bounds=bounds(tx, 1.96 * sd))
    assert got["pattern"] == "flat", got  # (I(T;Y)'s rise is a rank test at 5 %: one seed in 20 may pass it)
    assert not got["compression"]


@pytest.mark.parametrize("seed", range(5))
def test_small_noise_without_intervals_is_not_a_phase(seed):
    rng = np.random.default_rng(seed)
    tx = 3.0 + 0.05 * rng.standard_normal(10)  # ±1.7 %: checkpoint noise
    got = layer_phases(STEPS, tx, 0.1 + 0.01 * rng.standard_normal(10))
    assert got["pattern"] == "flat" and not got["mi_ty_rising"]


def test_one_low_point_at_the_end_is_not_sustained():
    tx = np.array([1.0, 2.0, 3.0, 3.1, 3.05, 3.0, 3.1, 3.0, 3.05, 1.0])
    got = layer_phases(STEPS, tx, np.zeros(10), PhaseRule(smooth=1))
    assert got["fitting"] and not got["compression"]


def test_checks_decide_robustness():
    checks = {"nhsic": {"tx": RISE_FALL / 10}, "cka": {"tx": np.linspace(0.1, 0.5, 10)}}
    got = layer_phases(STEPS, RISE_FALL, np.zeros(10), checks=checks)
    assert got["pattern_nhsic"] == "fit-compress" and got["pattern_cka"] == "fit" and got["robust"] is False
    got = layer_phases(STEPS, RISE_FALL, np.zeros(10), checks={"nhsic": {"tx": RISE_FALL * 2}})
    assert got["robust"] is True
    assert layer_phases(STEPS, RISE_FALL, np.zeros(10))["robust"] is None  # one estimator: nothing to compare


def test_order_of_rows_does_not_matter():
    tx = RISE_FALL
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
    assert phases.pattern.tolist() == ["fit", "fit-compress", "fit-compress", "fit-compress"]
    summary, lines = summarise(phases)
    assert summary.iloc[0].compression == 3 and summary.iloc[0].peak_step == 300
    assert summary.iloc[0].pattern == "fit-compress"
    assert lines == [("fairness: I(T;X) rises (fitting) from step 0 to step 300, then falls again (compression) "
                      "in 3 of 4 layers; I(T;Y) above its permutation null at the last checkpoint in 0 of 4 layers.")]


def with_uncertainty(frame, width):
    """The table with interval rows, a null p-value, and an nhsic check that agrees on every layer but one."""
    extra = []
    for _, r in frame[frame.metric == "mi_tx"].iterrows():
        base = r.to_dict()
        extra += [base | {"metric": "mi_tx_ci_low", "value": r.value - width},
                  base | {"metric": "mi_tx_ci_high", "value": r.value + width},
                  base | {"metric": "nhsic_tx", "value": r.value / 10 if r.layer != 3 else 0.3},
                  base | {"metric": "mi_tx_random_init", "value": 0.5},
                  base | {"metric": "mi_ty_p", "value": 0.01}]
    return pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)


def test_detect_with_intervals_checks_and_nulls():
    phases = detect_phases(with_uncertainty(table(), 0.05))
    assert phases.robust.tolist() == [True, True, True, False]
    assert phases.mi_tx_random_init.tolist() == [0.5] * 4 and phases.mi_ty_above_null_last.all()
    summary, lines = summarise(phases)
    assert summary.iloc[0].robust_layers == 3 and summary.iloc[0].estimator_dependent == 1
    assert "robust under every estimator" in lines[0] \
        and "estimator-dependent in 1 layer(s): chosen/nHSIC: L3 fit-compress/flat" in lines[0]
    wide = detect_phases(with_uncertainty(table(), 5.0))
    assert (wide.pattern == "flat").all() and (wide.unresolved != "").all()
    assert "not resolved at this sample size" in summarise(wide)[1][0]


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
    assert "(compression)" in res.output
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


def test_mi_figure_draws_intervals_null_and_phase_marks():
    """Item 5 of issue 24: bands for the intervals, the null as a line, the trough and peak as marks."""
    from pathlib import Path

    from trusttrace.report.load import Run
    from trusttrace.report.mi_figures import mi_curves

    frame = with_uncertainty(table(), 0.05)
    nulls = frame[frame.metric == "mi_tx"].assign(metric="mi_ty_null_q95", value=0.02)
    highs = frame[frame.metric == "mi_ty"].assign(metric="mi_ty_ci_high")
    lows = frame[frame.metric == "mi_ty"].assign(metric="mi_ty_ci_low")
    frame = pd.concat([frame, nulls, highs, lows], ignore_index=True)
    run = Run("r", Path("."), results=frame, phases=detect_phases(frame))
    fig = mi_curves([run], "fairness").figure
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 2 * len(select_layers(4))  # I(T;X) and I(T;Y), each layer drawn
    nulls = [t for t in fig.data if t.line.dash == "dash" and t.mode == "lines"]
    assert nulls and all(np.allclose(t.y, 0.02) for t in nulls)
    symbols = {t.marker.symbol for t in fig.data if t.mode == "markers"}
    assert {"triangle-down", "triangle-up"} <= symbols  # layer 1-3: trough at step 0, peak at step 300
    peaks = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "triangle-up"]
    assert {float(t.x[0]) for t in peaks} == {301.0, 3001.0}  # step + 1 (log axis); layer 0 rises to the end
    assert len(fig.layout.shapes) == 3  # a dotted line per layer whose compression is resolved
    without = mi_curves([Run("r", Path("."), results=table(), phases=detect_phases(table()))], "fairness").figure
    assert not [t for t in without.data if t.fill == "toself"]  # no intervals, no band
