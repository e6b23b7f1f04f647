import numpy as np
import pytest
import torch

from trusttrace.evaluate import GenerationConfig, binary_choice, generate
from trusttrace.models import load_model
from trusttrace.testing import planted_statements


@pytest.fixture(scope="module", params=["llama", "gpt_neox", "gpt2"])
def lm(request, tiny_models):
    return load_model(str(tiny_models[request.param]), dtype="float32")


def test_batched_generation_equals_one_prompt_at_a_time(lm):
    prompts, _ = planted_statements(9, seed=7)
    config = GenerationConfig(max_new_tokens=6, max_batch=4)
    batched = generate(lm, prompts, config)
    alone = [generate(lm, [p], config)[0] for p in prompts]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    assert all(len(c.token_ids) <= 6 for c in batched)


def test_binary_choice_is_the_next_token_log_odds(lm):
    prompts, _ = planted_statements(7, seed=8)
    margin = binary_choice(lm, prompts, choices=("bad", "good"), max_batch=3)
    bad, good = (lm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("bad", "good"))
    for p, got in zip(prompts, margin):
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(**lm.tokenizer(p, return_tensors="pt")).logits[0, -1], -1)
        assert got == pytest.approx(float(logp[good] - logp[bad]), abs=1e-4)


def test_binary_choice_needs_single_token_choices(lm):
    with pytest.raises(ValueError, match="one token each"):
        binary_choice(lm, ["w1"], choices=("w1 w2", "good"))
    assert np.isfinite(binary_choice(lm, ["w1"], choices=("bad", "good"))).all()


# ---- likelihoods, perplexity and TruthfulQA MC

import math

import pandas as pd

from trusttrace.evaluate.likelihood import continuation_logprobs, perplexity
from trusttrace.evaluate.truthfulqa import evaluate_mc, load_mc_items, mc_scores, prompt_for


def manual_logprob(lm, context, continuation):
    ctx = lm.tokenizer(context)["input_ids"]
    cont = lm.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


def test_continuation_logprobs_match_a_single_forward(lm):
    contexts = ["w1 w2", "w3", "w4 w5 w6 w7", "w8 w9"]
    conts = [" good", " bad w1", " w2 w3 w4", " maybe"]
    got = continuation_logprobs(lm, contexts, conts, max_batch=3)
    for c, k, g in zip(contexts, conts, got):
        assert g == pytest.approx(manual_logprob(lm, c, k), abs=1e-4)


def test_perplexity_matches_the_definition(lm):
    texts = ["w1 w2 w3 good", "w4 w5 bad"]
    ppl, n = perplexity(lm, texts)
    total = sum(manual_logprob(lm, t.split(" ")[0], " " + " ".join(t.split(" ")[1:])) for t in texts)
    assert n == 3 + 2 + 2  # tokens after the first real one (BOS, then words)
    assert ppl == pytest.approx(math.exp(-(total + sum(
        manual_logprob(lm, "", t.split(" ")[0]) for t in texts)) / n), rel=1e-4)


def test_mc_scores_on_hand_made_cases():
    assert mc_scores(math.log(0.3), [math.log(0.3)], [math.log(0.7)]) == pytest.approx((0.0, 0.3))
    mc1, mc2 = mc_scores(math.log(0.6), [math.log(0.6), math.log(0.05)], [math.log(0.2), math.log(0.15)])
    assert mc1 == 1.0 and mc2 == pytest.approx(0.65 / 1.0)


def test_mc_items_and_evaluation(tmp_path, lm):
    pd.DataFrame({"Question": ["q one?", "q two?", "q missing?"]}).to_csv(tmp_path / "truthfulqa_test.csv",
                                                                         index=False)
    pd.DataFrame({"Question": ["q one?", "q two?"], "Best Answer": ["w1 good", "w2"],
                  "Correct Answers": ["w1 good; w3", "w4"], "Incorrect Answers": ["w5 bad; w6", "w7; w8; w9"]}
                 ).to_csv(tmp_path / "truthfulqa_mc.csv", index=False)
    items, skipped = load_mc_items(tmp_path)
    assert skipped == ["q missing?"] and len(items) == 2
    assert items[1].true == ("w2", "w4") and items[1].false == ("w7", "w8", "w9")
    scores = evaluate_mc(lm, items)
    assert scores.mc1.isin([0.0, 1.0]).all() and scores.mc2.between(0, 1).all()
    assert prompt_for("q one?").endswith("Barcelona, Spain.\n\nQ: q one?\nA:")


# ---- the suite end to end on a tiny model

from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.evaluate.suite import EvalConfig, Steering, evaluate_suite
from trusttrace.steering import SteeringVector


@pytest.fixture
def eval_data(data_dir, tmp_path):
    folder = tmp_path / "eval-data"
    folder.mkdir()
    for f in data_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    pd.DataFrame({"Question": ["w1 w2?", "w3?"]}).to_csv(folder / "truthfulqa_test.csv", index=False)
    pd.DataFrame({"Question": ["w1 w2?", "w3?"], "Best Answer": ["good", "w4"], "Correct Answers": ["good", "w4"],
                  "Incorrect Answers": ["bad; w5", "w6"]}).to_csv(folder / "truthfulqa_mc.csv", index=False)
    return folder


def test_suite_reports_every_dimension(tiny_models, eval_data):
    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    config = EvalConfig(limit=12, data_dir=str(eval_data), toxicity_prompts=6, max_new_tokens=4,
                        perplexity_statements=5)
    plain = evaluate_suite(lm, config)
    assert set(zip(plain.dimension, plain.metric)) == {
        ("reliability", "mc1"), ("reliability", "mc2"), ("toxicity", "toxic_ratio"), ("toxicity", "judge_accuracy"),
        ("privacy", "accuracy"), ("fairness", "accuracy"), ("robustness", "accuracy"), ("general", "perplexity"),
        ("privacy", "auc"), ("fairness", "auc"), ("robustness", "auc")}
    assert plain.value.notna().all() and (plain[plain.metric == "accuracy"].n == 12).all()
    assert "test-half statements" in plain[plain.metric == "perplexity"].spec.iloc[0]
    g = torch.Generator().manual_seed(0)
    v = SteeringVector({l: 50 * torch.randn(32, generator=g) for l in range(3)})
    steered = evaluate_suite(lm, EvalConfig(dimensions=("privacy",), limit=12, data_dir=str(eval_data),
                                            perplexity_statements=5), Steering(v, 1, 1.0, "all"))
    ppl = lambda df: df[df.metric == "perplexity"].value.iloc[0]
    assert ppl(steered) != ppl(plain)  # the vector reached the model
    last = evaluate_suite(lm, EvalConfig(dimensions=("privacy",), limit=12, data_dir=str(eval_data),
                                         perplexity_statements=5), Steering(v, 1, 1.0, "last"))
    assert ppl(last) == ppl(steered)  # single-pass scores are steered at all positions, and say so
    assert "steered at all positions" in last[last.metric == "perplexity"].spec.iloc[0]
    assert all(not b._forward_hooks for b in lm.blocks)


def test_cli_evaluate_and_its_errors(tiny_models, eval_data, tmp_path):
    res = CliRunner().invoke(app, ["evaluate", "--model", str(tiny_models["gpt2"]), "--dimensions", "fairness",
                                   "--limit", "10", "--data-dir", str(eval_data), "--dtype", "float32",
                                   "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "ev" / "evaluate.csv").metric.tolist() == ["accuracy", "auc", "perplexity"]
    res = CliRunner().invoke(app, ["evaluate", "--model", str(tiny_models["gpt2"]), "--vector", str(tmp_path / "v"),
                                   "--data-dir", str(eval_data)])
    assert res.exit_code == 2 and "needs --layer" in res.output


def test_generate_and_parse_mode_is_seeded_and_reports_fallbacks(tiny_models, eval_data):
    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    config = EvalConfig(dimensions=("privacy",), limit=12, data_dir=str(eval_data), binary_mode="generate",
                        perplexity_statements=5)
    a, b = evaluate_suite(lm, config), evaluate_suite(lm, config)
    assert a.equals(b)  # the fallback draws are seeded
    rate = a[a.metric == "fallback_rate"].value.iloc[0]
    assert 0.0 <= rate <= 1.0 and "seeded fallback" in a.spec.iloc[0]
    with pytest.raises(ValueError, match="binary_mode"):
        evaluate_suite(lm, EvalConfig(dimensions=("privacy",), binary_mode="parse", data_dir=str(eval_data)))
