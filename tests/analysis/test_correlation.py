import numpy as np
import pandas as pd
import pytest

from trusttrace.analysis.correlation import bootstrap_r, probe_vs_effect


def test_bootstrap_r_on_a_known_relation():
    rng = np.random.default_rng(0)
    x = np.linspace(0.7, 0.95, 17)
    y = 2 * x + 0.02 * rng.standard_normal(17)
    got = bootstrap_r(x, y)
    assert got["pearson_r"] > 0.95 and got["pearson_lo"] <= got["pearson_r"] <= got["pearson_hi"]
    assert got["spearman_r"] > 0.9 and got["n_sources"] == 17
    assert bootstrap_r(x, y) == got  # seeded
    noise = bootstrap_r(x, rng.standard_normal(17))
    assert noise["pearson_lo"] < 0 < noise["pearson_hi"]  # no relation: the interval straddles 0


def test_needs_three_sources():
    with pytest.raises(ValueError, match="at least 3"):
        bootstrap_r(np.array([0.1, 0.2]), np.array([1.0, 2.0]))


def test_probe_vs_effect_pairs_revisions_at_the_steering_layer():
    probes = pd.DataFrame({"revision": ["a", "b", "c", "d"] * 2, "layer": [1] * 4 + [2] * 4,
                           "dimension": "fairness", "metric": "accuracy",
                           "value": [0.6, 0.7, 0.8, 0.9, 0.9, 0.8, 0.7, 0.6]})
    steering = pd.DataFrame({"source_revision": ["unsteered", "self", "a", "b", "c", "d"], "layer": [-1, 1, 1, 1, 1, 1],
                             "alpha": [0.0, 1, 1, 1, 1, 1], "metric": "accuracy",
                             "value": [0.5, 0.9, 0.51, 0.55, 0.58, 0.61]})
    got = probe_vs_effect(probes, steering, "fairness", "accuracy")
    assert len(got) == 1 and got.layer.iloc[0] == 1 and got.pearson_r.iloc[0] > 0.99
