"""Leak-free splits, controls and intervals, on planted data whose right answers are known."""

import numpy as np
import pandas as pd
import pytest
import torch

from trusttrace.analysis.controls import lexical_accuracy, with_selectivity
from trusttrace.analysis.probe_job import AnalysisConfig, analyse
from trusttrace.analysis.probes import ProbeFitConfig, probe_layers
from trusttrace.analysis.splits import splits
from trusttrace.core.stats import mcnemar_exact, wilson
from trusttrace.data.datasets import load_dataset, read_statements
from trusttrace.data.groups import contexts, group_ids, question_of


def _by_layer(rows, metric):
    return rows[rows.metric == metric].set_index("layer").value


def test_a_label_that_is_a_function_of_the_group_leaks_under_cv_only():
    """Each group has its own direction and its own label: cv memorises groups, group-cv cannot."""
    rng = np.random.default_rng(0)
    n_groups, per_group, d = 60, 5, 256  # more dimensions than groups: any group labelling is separable
    centres = rng.standard_normal((n_groups, d)) * 3
    group_labels = rng.permutation(np.repeat([0, 1], n_groups // 2))
    groups = np.repeat(np.arange(n_groups), per_group)
    acts = torch.as_tensor(centres[groups] + rng.standard_normal((len(groups), d)) * 0.3)[None]
    labels = group_labels[groups]
    cv = _by_layer(probe_layers(acts, labels, ProbeFitConfig(protocol="cv", control_shuffled=False)), "accuracy")
    grouped = _by_layer(probe_layers(acts, labels, ProbeFitConfig(control_shuffled=False), groups), "accuracy")
    assert cv[0] > 0.95 and 0.3 < grouped[0] < 0.7
    for train, test in splits(labels, groups, "group-cv", 5, seed=0):
        assert not set(groups[train]) & set(groups[test])  # no group on both sides


def test_a_planted_direction_is_selective_and_the_shuffled_control_is_chance():
    rng = np.random.default_rng(1)
    n, d = 400, 32
    labels = rng.integers(0, 2, n)
    direction = rng.standard_normal(d)
    acts = torch.as_tensor(rng.standard_normal((n, d)) + np.outer(2 * labels - 1, direction))[None]
    statements = [" ".join(rng.choice(["w1", "w2", "w3", "w4", "w5"], 6)) for _ in range(n)]  # no signal
    groups = np.arange(n)
    rows = with_selectivity(analyse(acts, labels, AnalysisConfig(analyses=("probe",), controls=("shuffled", "lexical")),
                                    groups, statements))
    assert _by_layer(rows, "accuracy")[0] > 0.95
    assert abs(_by_layer(rows, "control_shuffled")[0] - 0.5) < 0.1
    assert abs(_by_layer(rows, "control_lexical")[0] - 0.5) < 0.1
    assert _by_layer(rows, "selectivity")[0] > 0.35
    low, high = _by_layer(rows, "accuracy_ci_low")[0], _by_layer(rows, "accuracy_ci_high")[0]
    assert low < _by_layer(rows, "accuracy")[0] <= high


def test_a_keyword_label_is_read_by_the_lexical_control():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    statements = [" ".join(rng.choice(["w1", "w2", "w3"], 5)) + (" good" if y else " bad") for y in labels]
    folds = ProbeFitConfig(protocol="cv").fold_sets(labels, None)
    assert lexical_accuracy(statements, labels, folds) > 0.99


def test_wilson_intervals_cover_the_true_accuracy_at_about_the_nominal_rate():
    rng = np.random.default_rng(3)
    covered = []
    for _ in range(2000):
        p, n = rng.uniform(0.5, 0.95), int(rng.integers(30, 400))
        low, high = wilson(rng.binomial(n, p), n)
        covered.append(low <= p <= high)
    assert 0.93 <= np.mean(covered) <= 0.97


def test_seeds_report_their_spread():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 120)
    acts = torch.as_tensor(rng.standard_normal((2, 120, 8)) + 0.5 * (2 * labels - 1)[None, :, None])
    rows = probe_layers(acts, labels, ProbeFitConfig(protocol="cv", seeds=3))
    assert (rows.metric == "accuracy_seed_std").sum() == 2 and (_by_layer(rows, "accuracy_seed_std") > 0).all()


def test_group_rules_of_the_published_files():
    assert question_of("Q: Is it?\tA: Yes.") == question_of("Q: Is it?\tA: No.") == "q: is it?"
    keys = contexts(["The man was Swedish. He was tall.", "The man was Swedish. The sky is blue.",
                     "Cape Verde is an island I am hungry", "Cape Verde is an island People fish there",
                     "Cats sleep a lot"])
    assert keys[0] == keys[1] == "the man was swedish." and keys[2] == keys[3] == "cape verde is an island"
    assert len(set(keys)) == 3 and list(group_ids(["a", "b", "a"])) == [0, 1, 0]


def test_groups_of_every_dimension(data_dir):
    for dim in ("reliability", "toxicity", "privacy", "fairness", "robustness"):
        ds = load_dataset(dim, data_dir)
        assert len(ds.groups) == len(ds) and ds.group_rule
    sst2 = pd.DataFrame({"statement": ["A good film .", "a GOOD film .", "Bad ."], "label": [0, 1, 0]})
    sst2_dir = data_dir.parent / "sst2-groups"
    sst2_dir.mkdir(exist_ok=True)
    for f in data_dir.iterdir():
        (sst2_dir / f.name).write_bytes(f.read_bytes())
    sst2.to_csv(sst2_dir / "sst2.csv", index=False)
    assert list(load_dataset("robustness", sst2_dir).groups) == [0, 0, 1]  # an original and its perturbed copy


def test_a_user_group_column_is_used_and_checked(tmp_path):
    good = tmp_path / "mine.csv"
    pd.DataFrame({"statement": ["a", "b", "c", "d"], "label": [0, 1, 0, 1], "group": ["q1", "q1", "q2", "q2"]}
                 ).to_csv(good, index=False)
    assert list(load_dataset(str(good)).groups) == [0, 0, 1, 1] and read_statements(good).groups == (
        "q1", "q1", "q2", "q2")
    one = tmp_path / "one.csv"
    pd.DataFrame({"statement": ["a", "b"], "label": [0, 1], "group": ["q", "q"]}).to_csv(one, index=False)
    with pytest.raises(ValueError, match=r"one\.csv: the group column holds one group"):
        load_dataset(str(one))


def test_too_few_groups_for_the_folds_says_what_to_do():
    labels = np.array([0, 1] * 10)
    with pytest.raises(ValueError, match="2 groups cannot make 5 folds"):
        splits(labels, np.array([0] * 10 + [1] * 10), "group-cv", 5, seed=0)
    with pytest.raises(ValueError, match="needs a group id per row"):
        probe_layers(torch.zeros(1, 20, 2), labels, ProbeFitConfig())


def test_mcnemar_on_a_known_table_is_the_exact_binomial_test():
    from scipy.stats import binomtest

    before = np.array([1] * 30 + [0] * 20 + [1] * 12 + [0] * 3)  # 12 pairs went 1 → 0, 3 went 0 → 1
    after = np.array([1] * 30 + [0] * 20 + [0] * 12 + [1] * 3)
    p, down, up = mcnemar_exact(before, after)
    assert (down, up) == (12, 3)
    assert p == pytest.approx(binomtest(3, 15, 0.5).pvalue, rel=1e-12)
    assert mcnemar_exact(before, before)[0] == 1.0


# ---- transfer tests and the controls in a trace


def test_transfer_rows_for_every_checkpoint_and_layer(tiny_series, data_dir, tmp_path):
    from trusttrace.models.loading import LoadConfig
    from trusttrace.trace.job import TraceConfig, run_trace

    config = TraceConfig(model=str(tiny_series), out=str(tmp_path / "run"), dimensions=("privacy",),
                         transfer=(("privacy", "fairness"),), data_dir=str(data_dir), select="first:2",
                         load=LoadConfig(dtype="float32"), analysis=AnalysisConfig(analyses=("probe",), controls=()))
    results = run_trace(config).results
    transfer = results[results.metric == "transfer_accuracy"]
    assert len(transfer) == 2 * 3 and set(transfer.test_dataset) == {"fairness"} and set(transfer.dimension) == {
        "privacy"}
    assert transfer.value.min() > 0.9  # both planted datasets carry their label in the last word
    assert (results[results.metric == "accuracy"].test_dataset == "").all()
    assert set(results.dimension) == {"privacy", "fairness"}  # the test set is traced too
    from trusttrace.analysis.probe_job import ProbeJobConfig, run_probe

    again = run_probe(ProbeJobConfig(str(tmp_path / "run"), str(tmp_path / "refit"), AnalysisConfig(
        analyses=("probe",), controls=(), transfer=(("fairness", "privacy"),)))).results
    assert set(again[again.metric == "transfer_accuracy"].test_dataset) == {"privacy"}


def test_a_transfer_file_with_one_class_is_refused_by_name(tiny_series, data_dir, tmp_path):
    from trusttrace.trace.job import TraceConfig, run_trace

    one = tmp_path / "all_true.csv"
    pd.DataFrame({"statement": [f"w{i} good" for i in range(20)], "label": 1}).to_csv(one, index=False)
    with pytest.raises(ValueError, match=r"all_true\.csv: all 20 rows of dataset 'all_true' have label 1"):
        run_trace(TraceConfig(model=str(tiny_series), out=str(tmp_path / "run"), dimensions=("privacy",),
                              transfer=(("privacy", str(one)),), data_dir=str(data_dir)))
    with pytest.raises(ValueError, match="must be different"):
        TraceConfig(model="m", out="o", transfer=(("privacy", "privacy"),))


def test_the_lexical_control_sees_case_as_the_tokenizer_does():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(8)]
    statements, labels = [], []
    for _ in range(200):
        sentence = list(rng.choice(words, 6))
        flip = int(rng.integers(2))
        if flip:  # one word upper-cased: the perturbation sst2's label marks
            i = int(rng.integers(6))
            sentence[i] = sentence[i].upper()
        statements.append(" ".join(sentence))
        labels.append(flip)
    folds = splits(np.array(labels), None, "cv", 5, 0)
    assert lexical_accuracy(statements, np.array(labels), [folds]) > 0.8


def test_transfer_pairs_are_named_from_the_datasets_already_loaded(data_dir, tmp_path, monkeypatch):
    from trusttrace.analysis import probe_job
    from trusttrace.data.datasets import load_datasets

    mine = tmp_path / "mine.csv"
    mine.write_text("statement,label\nw1 good,1\nw2 bad,0\nw3 good,1\nw4 bad,0\n")
    datasets = load_datasets(["toxicity", str(mine)], str(data_dir))

    def read_again(*args, **kwargs):
        raise AssertionError("a transfer dataset was read from disk again")

    monkeypatch.setattr(probe_job, "load_dataset", read_again)
    pairs = probe_job.resolve_transfer([("toxicity", str(mine)), (str(mine), "toxicity")], datasets)
    assert pairs == [("toxicity", "mine"), ("mine", "toxicity")]
