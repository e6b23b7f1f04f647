"""lm-eval's scoring: TruthfulQA MC1/MC2 documents and rules, LAMBADA's last word, its tokenisation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from trusttrace.evaluate import SuiteConfig, evaluate_suite
from trusttrace.evaluate.likelihood import continuation_logprobs, pair_tokens
from trusttrace.evaluate.lmeval import MCDoc, lambada_last_word, lambada_scores, load_docs, score_docs
from trusttrace.evaluate.truthfulqa import prompt_for
from trusttrace.models.loading import load_model


@pytest.fixture(scope="module")
def lm(tiny_models):
    return load_model(str(tiny_models["llama"]), dtype="float32")


@pytest.fixture
def mc_data(data_dir, tmp_path):
    folder = tmp_path / "mc"
    folder.mkdir()
    for f in data_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    pd.DataFrame({"Question": ["w1 w2?"]}).to_csv(folder / "truthfulqa_test.csv", index=False)
    pd.DataFrame({"Type": ["A", "A"], "Category": ["c", "c"], "Question": ["w1 w2?", "w3?"],
                  "Best Answer": ["good", "w4"], "Correct Answers": ["w7; good", "w8"],
                  "Incorrect Answers": ["bad; w5", "w6"], "Source": ["s", "s"]}).to_csv(
        folder / "truthfulqa_mc.csv", index=False)
    return folder


def test_documents_built_from_the_table_have_the_hub_layout(mc_data):
    docs, source = load_docs(mc_data, hub=False)
    assert "built from TruthfulQA.csv" in source and "all questions" in source
    first = docs[0]
    assert first.mc1_choices == ("good", "bad", "w5") and first.mc1_labels == (1, 0, 0)  # the true one first
    assert first.mc2_choices == ("w7", "good", "bad", "w5") and first.mc2_labels == (1, 1, 0, 0)
    assert docs[1].mc2_choices == ("w4", "w8", "w6")  # the best answer added when the correct list lacks it
    held_out, source = load_docs(mc_data, questions="test", hub=False)
    assert [d.question for d in held_out] == ["w1 w2?"] and "test questions" in source
    with pytest.raises(ValueError, match="all, test"):
        load_docs(mc_data, questions="dev", hub=False)


def test_offline_the_hub_rows_are_rebuilt_and_the_spec_says_so(mc_data, caplog):
    _, source = load_docs(mc_data)  # HF_HUB_OFFLINE=1 in tests
    assert "hub unreachable" in source and "rebuilt from the TruthfulQA table" in caplog.text


def test_mc1_is_argmax_with_the_first_maximum_winning_and_mc2_the_true_mass(lm):
    tie = MCDoc("w1 w2?", ("good", "good"), (1, 0), ("good", "bad"), (1, 0))
    scores = score_docs(lm, [tie]).iloc[0]
    assert scores.truthfulqa_mc1 == 1.0  # equal log-likelihoods: numpy.argmax picks the true answer
    doc = MCDoc("w3?", ("w4", "w6", "w8 w9"), (1, 0, 0), ("w4", "w8 w9", "w6"), (1, 1, 0))
    got = score_docs(lm, [doc]).iloc[0]
    ll = dict(zip(["w4", "w6", "w8 w9"], continuation_logprobs(lm, [prompt_for("w3?")] * 3,
                                                                [" w4", " w6", " w8 w9"], joint=True)))
    assert got.truthfulqa_mc1 == float(max(ll, key=ll.get) == "w4")
    p = {k: math.exp(v) for k, v in ll.items()}
    assert got.truthfulqa_mc2 == pytest.approx((p["w4"] + p["w8 w9"]) / sum(p.values()), rel=1e-9)


def test_joint_tokenisation_takes_the_tokens_after_the_context(lm):
    seqs, n = pair_tokens(lm, ["w1 w2"], [" w3 w4"], joint=True)
    whole = lm.tokenizer("w1 w2 w3 w4")["input_ids"]
    assert seqs == [whole] and n == [len(whole) - len(lm.tokenizer("w1 w2")["input_ids"])]


def test_lambada_last_word_accuracy_and_perplexity(lm):
    passages = ["w1 w2 w3 good", "w4 w5 bad", "w6 w7 w8"]
    rows = lambada_last_word(lm, passages)
    expect = continuation_logprobs(lm, ["w1 w2 w3", "w4 w5", "w6 w7"], [" good", " bad", " w8"], joint=True)
    np.testing.assert_allclose(rows.loglikelihood, expect, atol=1e-5)
    for text, greedy in zip(passages, rows.greedy):
        head = text.rpartition(" ")[0]
        ids = lm.tokenizer(head, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            nxt = int(lm.model(input_ids=ids).logits[0, -1].argmax())
        assert greedy == (nxt == lm.tokenizer(text)["input_ids"][ids.shape[1]])  # one-token words here
    acc, ppl = lambada_scores(rows)
    assert acc == rows.greedy.mean() and ppl == pytest.approx(math.exp(-rows.loglikelihood.mean()))
    with pytest.raises(ValueError, match="last word"):
        lambada_last_word(lm, ["oneword"])


def test_the_suite_reports_both_specs_under_their_own_names(lm, mc_data):
    config = SuiteConfig(dimensions=("reliability",), data_dir=str(mc_data), truthfulqa_spec="both",
                         truthfulqa_generation=False, perplexity_statements=3)
    table = evaluate_suite(lm, config).set_index("metric")
    assert {"mc1", "mc2", "truthfulqa_mc1", "truthfulqa_mc2", "truthfulqa_mc1_ci_low"} <= set(table.index)
    assert table.n["mc1"] == 1 and table.n["truthfulqa_mc1"] == 2  # the paper's 1 held-out question; all of lm-eval's
    assert table.spec["truthfulqa_mc2"].startswith("truthfulqa-mc-lmeval/1")
    with pytest.raises(ValueError, match="truthfulqa_spec"):
        SuiteConfig(truthfulqa_spec="lm_eval")
