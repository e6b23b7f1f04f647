"""The steering sweep's controls: random directions, the prompting baseline, per-item shares, detectability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from trusttrace.core.stats import detectable_change, fisher_exact_p, mcnemar_exact
from trusttrace.evaluate import suite as suite_mod
from trusttrace.evaluate.instructions import INSTRUCTIONS, baseline_instruction
from trusttrace.evaluate.suite import Steering, SuiteConfig, run_suite
from trusttrace.models.loading import load_model
from trusttrace.runs.tables import steering_verdict
from trusttrace.steer.controls import Evaluated, control_rows, random_directions
from trusttrace.steering.vector import SteeringVector
from trusttrace.testing import save_tiny, write_planted_data_dir


def _items(metric: str, outcomes: list[int], dimension: str = "toxicity") -> pd.DataFrame:
    return pd.DataFrame({"dimension": dimension, "metric": metric, "item": range(len(outcomes)), "outcome": outcomes})


def _rows(source: str, layer: int, alpha: float, metric: str, outcomes: list[int]) -> pd.DataFrame:
    return pd.DataFrame([{"source_revision": source, "layer": layer, "alpha": alpha, "dimension": "toxicity",
                          "metric": metric, "value": float(np.mean(outcomes)), "n": len(outcomes), "spec": ""}])


def _wide(table: pd.DataFrame) -> pd.DataFrame:
    return table.pivot_table(index=["source_revision", "layer", "alpha"], columns="metric", values="value")


def test_control_rows_on_a_hand_counted_sweep():
    base = [1, 1, 0, 0, 1, 1, 0, 1]  # toxic (1) or not, per item
    runs = {("unsteered", -1, 0.0): base,
            ("v", 3, -1.0): [0, 1, 1, 0, 0, 1, 0, 1],  # items 0, 4 improve (1→0); item 2 worsens (0→1)
            ("v", 3, -2.0): [0, 0, 0, 0, 0, 1, 0, 1],  # items 0, 1, 4 improve
            ("random-0", 3, -1.0): [1, 1, 0, 0, 1, 1, 0, 1], ("random-1", 3, -1.0): [1, 1, 1, 0, 1, 1, 0, 1],
            ("random-0", 3, -2.0): [1, 1, 0, 0, 1, 1, 0, 0], ("random-1", 3, -2.0): [1, 0, 0, 0, 1, 1, 0, 1]}
    evaluated = [Evaluated(s, layer, a, _items("toxic_ratio", o)) for (s, layer, a), o in runs.items()]
    tables = {key: _rows(*key, "toxic_ratio", o) for key, o in runs.items()}
    wide = _wide(control_rows(evaluated, tables, k=2))
    one = wide.loc[("v", 3, -1.0)]
    assert one.toxic_ratio_improved == 2 / 8 and one.toxic_ratio_worsened == 1 / 8
    assert one.toxic_ratio_unchanged == 5 / 8
    assert one.toxic_ratio_p_mcnemar == pytest.approx(mcnemar_exact(np.array(base), np.array(runs[("v", 3, -1.0)]))[0])
    # pooled: 16 outcomes, 4 + 4 toxic
    two = wide.loc[("v", 3, -2.0)]
    assert two.toxic_ratio_effect_vs_random == pytest.approx(2 / 8 - 8 / 16)
    assert two.toxic_ratio_p_vs_random == pytest.approx(fisher_exact_p(2, 8, 8, 16))
    assert wide.loc[("random", 3, -2.0)].toxic_ratio == pytest.approx(8 / 16)
    # along α ∈ {−2, −1, 0}: items 0, 1, 2, 4 move; item 1 (0 at −2, 1 at −1, 1 at 0) and 0, 4 move one way,
    # item 2 (0, 1, 0) does not
    assert one.toxic_ratio_monotone == 3 / 4 and two.toxic_ratio_monotone == 3 / 4
    assert wide.loc[("unsteered", -1, 0.0)].toxic_ratio_detectable > 0.3  # 8 items detect only large changes


def test_detectable_change_and_a_target_at_chance():
    assert detectable_change(0.37, 100, up=False) == pytest.approx(0.13, abs=0.01)
    assert detectable_change(0.5, 1000, up=True) < detectable_change(0.5, 100, up=True)
    assert np.isnan(detectable_change(0.0, 100, up=False))  # nothing left to fall
    runs = {("unsteered", -1, 0.0): [1, 0] * 30, ("v", 2, 1.0): [1, 1] * 30}
    evaluated = [Evaluated(s, layer, a, _items("accuracy", o, "fairness")) for (s, layer, a), o in runs.items()]
    tables = {k: _rows(*k, "accuracy", o) for k, o in runs.items()}
    table = control_rows(evaluated, tables, k=0)
    spec = table[table.metric == "accuracy_detectable"].spec.iloc[0]
    assert spec.startswith("at chance")
    whole = pd.concat([*tables.values(), table], ignore_index=True).assign(dimension="fairness")
    assert "cannot show a steering effect" in steering_verdict(whole, "fairness")


def test_random_directions_are_seeded_and_of_the_vectors_norm():
    gen = torch.Generator().manual_seed(0)
    vectors = [SteeringVector({layer: torch.randn(16, generator=gen) * s for layer in range(3)}) for s in (1, 2, 5)]
    draws = random_directions(vectors, [1, 2], k=3, seed=7)
    median = float(np.median([float(v.at(1).norm()) for v in vectors]))
    assert all(abs(float(d.at(1).norm()) - median) < 1e-4 for d in draws) and sorted(draws[0].layers) == [1, 2]
    again = random_directions(vectors, [1, 2], k=1, seed=7)
    assert torch.equal(again[0].at(2), draws[0].at(2))  # a draw does not depend on K
    assert abs(draws[0].cosine(draws[1], 1)) < 0.9


def test_an_instruction_goes_before_every_prompt(monkeypatch, tmp_path):
    seen: list[str] = []

    def spy(lm, prompts, *a, **kw):
        seen.extend(prompts)
        return np.zeros(len(prompts))

    monkeypatch.setattr(suite_mod, "binary_choice", spy)
    model = save_tiny(tmp_path / "m", "llama", seed=0)
    data = write_planted_data_dir(tmp_path / "data", rows=40)
    lm = load_model(str(model), dtype="float32")
    config = SuiteConfig(dimensions=("privacy",), data_dir=str(data), perplexity_source="statements",
                         perplexity_statements=2, instruction=INSTRUCTIONS["privacy"])
    table = run_suite(lm, config).table
    assert len(seen) == 20 and all(p.startswith(INSTRUCTIONS["privacy"] + "\n\n") for p in seen)
    assert "instruction before each prompt" in table[table.metric == "accuracy"].spec.iloc[0]
    assert baseline_instruction("none", "privacy") is None
    (tmp_path / "mine.txt").write_text("  Be careful.\n")
    assert baseline_instruction(str(tmp_path / "mine.txt"), "privacy") == "Be careful."
    with pytest.raises(ValueError, match="no such file"):
        baseline_instruction(str(tmp_path / "missing.txt"), "privacy")


def test_a_planted_direction_beats_random_and_a_random_source_does_not(tmp_path):
    """A tiny Llama answers "0" to every privacy prompt; the planted direction (the final norm's weight times
    the unembedding's "1" − "0" row) turns the answers to "1", on a test half that is 90 % label 1. Random
    directions of its norm, and a random vector passed off as a source, leave the answers as they were."""
    model = save_tiny(tmp_path / "m", "llama", seed=0)
    data = write_planted_data_dir(tmp_path / "data", rows=200)
    frame = pd.read_csv(data / "confaide.csv")
    frame.loc[100:, "label"] = [0 if i % 10 == 0 else 1 for i in range(100)]
    frame.to_csv(data / "confaide.csv", index=False)
    lm = load_model(str(model), dtype="float32")
    ids = lm.tokenizer.convert_tokens_to_ids(["0", "1"])
    with torch.no_grad():
        d = lm.model.model.norm.weight * (lm.model.lm_head.weight[ids[1]] - lm.model.lm_head.weight[ids[0]])
    planted = SteeringVector({2: (0.1 * d / d.norm()).float()}, {"n_layers": "3"})
    decoy = random_directions([planted], [2], k=1, seed=1000)[0]  # a random "vector" under a source's name
    draws = random_directions([planted], [2], k=3, seed=0)
    config = SuiteConfig(dimensions=("privacy",), data_dir=str(data), perplexity_source="statements",
                         perplexity_statements=2)
    runs = [("unsteered", None), ("planted", planted), ("decoy", decoy), *((f"random-{k}", v) for k, v in
                                                                         enumerate(draws))]
    evaluated, tables = [], {}
    for name, vector in runs:
        layer, alpha = (-1, 0.0) if vector is None else (2, 1.0)
        result = run_suite(lm, config, None if vector is None else Steering(vector, 2, 1.0))
        evaluated.append(Evaluated(name, layer, alpha, result.items))
        tables[(name, layer, alpha)] = result.table.assign(source_revision=name, layer=layer, alpha=alpha)
    table = control_rows(evaluated, tables, k=3)
    wide = _wide(pd.concat([*tables.values(), table], ignore_index=True))
    assert wide.loc[("unsteered", -1, 0.0)].accuracy == pytest.approx(0.1)
    assert wide.loc[("planted", 2, 1.0)].accuracy == pytest.approx(0.9)
    assert wide.loc[("planted", 2, 1.0)].accuracy_effect_vs_random == pytest.approx(0.8)
    assert wide.loc[("planted", 2, 1.0)].accuracy_p_vs_random < 1e-6
    assert wide.loc[("decoy", 2, 1.0)].accuracy_p_vs_random > 0.05
    assert wide.loc[("planted", 2, 1.0)].accuracy_improved == pytest.approx(0.9)
    assert wide.loc[("planted", 2, 1.0)].accuracy_worsened == pytest.approx(0.1)  # the label-0 items: anti-steerable
    line = steering_verdict(pd.concat([*tables.values(), table], ignore_index=True), "privacy")
    assert "1 of 2 beat the random directions, 1 of them also improve on the unsteered target: planted layer 2 α +1" \
        in line
