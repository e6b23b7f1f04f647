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
