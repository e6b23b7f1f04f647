"""Proxy-tuning (App. G): the wrapper's logits, cache and greedy decoding against plain forward passes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.core.errors import ModelError, OptionError
from trusttrace.data.batching import pad_batch, positions_of
from trusttrace.evaluate import EvaluateConfig
from trusttrace.evaluate.generation import GenerationConfig, _trim, generate
from trusttrace.evaluate.likelihood import continuation_logprobs
from trusttrace.evaluate.proxy import ProxyTuned, proxy_tuned
from trusttrace.evaluate.scoring import binary_choice
from trusttrace.evaluate.suite import Steering, SuiteConfig, evaluate_suite
from trusttrace.models.loading import load_model
from trusttrace.steering.vector import SteeringVector
from trusttrace.testing import make_tokenizer, planted_statements, save_tiny

PROMPTS = ["w1 w2 w3 w4 w5 w6 w7", "w8", "w9 w10 good", "w11 w12 w13 bad w14", "maybe"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy")
    return {role: save_tiny(root / role, "llama", seed) for role, seed in (("ckpt", 1), ("tuned", 2), ("base", 3))}


@pytest.fixture(scope="module")
def models(folders):
    return {role: load_model(str(path), dtype="float32") for role, path in folders.items()}


def _logits(model, prompts, tokenizer):
    """Next-token logits at every real position of each prompt, left-padded into one batch."""
    encoded = tokenizer(prompts)["input_ids"]
    ids, mask = pad_batch(encoded, tokenizer.pad_token_id, "left")
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask)).logits.float()
    return [out[row, ids.shape[1] - len(e):] for row, e in enumerate(encoded)]


def test_beta_zero_is_the_checkpoint_exactly(models):
    lm = proxy_tuned(models["ckpt"], models["tuned"], models["base"], beta=0.0)
    for ours, theirs in zip(_logits(lm.model, PROMPTS, lm.tokenizer),
                            _logits(models["ckpt"].model, PROMPTS, lm.tokenizer)):
        assert torch.equal(ours, theirs)


def test_checkpoint_as_its_own_base_is_the_tuned_model(models):
    lm = proxy_tuned(models["ckpt"], models["tuned"], models["ckpt"], beta=1.0)
    for ours, theirs in zip(_logits(lm.model, PROMPTS, lm.tokenizer),
                            _logits(models["tuned"].model, PROMPTS, lm.tokenizer)):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert "proxy-tuned by" in lm.info.ref and "β=1" in lm.info.ref
    assert lm.blocks is models["ckpt"].blocks and lm.body is models["ckpt"].body


def test_the_offset_is_beta_times_tuned_minus_base(models):
    lm = proxy_tuned(models["ckpt"], models["tuned"], models["base"], beta=-0.7)
    tok = lm.tokenizer
    parts = {role: _logits(m.model, PROMPTS, tok) for role, m in models.items()}
    for i, ours in enumerate(_logits(lm.model, PROMPTS, tok)):
        want = parts["ckpt"][i] - 0.7 * (parts["tuned"][i] - parts["base"][i])
        torch.testing.assert_close(ours, want, atol=1e-5, rtol=0)


def test_batched_equals_one_prompt_at_a_time(models):
    lm = proxy_tuned(models["ckpt"], models["tuned"], models["base"], beta=1.0)
    batched = _logits(lm.model, PROMPTS, lm.tokenizer)
    for p, ours in zip(PROMPTS, batched):
        torch.testing.assert_close(ours, _logits(lm.model, [p], lm.tokenizer)[0], atol=1e-5, rtol=0)
    contexts, answers = PROMPTS, [" good", " bad w3", " w4", " maybe", " 0 1"]
    together = continuation_logprobs(lm, contexts, answers, max_batch=8)
    alone = [continuation_logprobs(lm, [c], [a])[0] for c, a in zip(contexts, answers)]
    np.testing.assert_allclose(together, alone, atol=1e-4)
    prefix = "w1 w2 w3 w4"  # the shared-prefix path copies and repeats the three caches
    shared = continuation_logprobs(lm, [prefix + " w5", prefix + " w6 w7", "w8"], [" good", " bad", " w9"],
                                   max_batch=2, shared_prefix=prefix)
    plain = continuation_logprobs(lm, [prefix + " w5", prefix + " w6 w7", "w8"], [" good", " bad", " w9"])
    np.testing.assert_allclose(shared, plain, atol=1e-4)
    margin = binary_choice(lm, PROMPTS, max_batch=2)
    np.testing.assert_allclose(margin, [binary_choice(lm, [p])[0] for p in PROMPTS], atol=1e-4)
    prompts, _ = planted_statements(7, seed=3)
    config = GenerationConfig(max_new_tokens=6, max_batch=3)
    assert ([c.token_ids for c in generate(lm, prompts, config)]
            == [generate(lm, [p], config)[0].token_ids for p in prompts])


def _naive(models, prompt: str, beta: float, max_new_tokens: int) -> tuple[int, ...]:
    """Three full forward passes on the whole sequence per new token, no cache: the definition."""
    tok = models["ckpt"].tokenizer
    ids = tok(prompt)["input_ids"]
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            x = torch.tensor([ids + new])
            ckpt, tuned, base = (models[r].model(input_ids=x, use_cache=False).logits[0, -1]
                                 for r in ("ckpt", "tuned", "base"))
            new.append(int((ckpt + beta * (tuned - base)).argmax()))
            if new[-1] == tok.eos_token_id:
                break
    return _trim(new, {tok.eos_token_id, tok.pad_token_id})


def test_generation_equals_the_naive_loop(models):
    lm = proxy_tuned(models["ckpt"], models["tuned"], models["base"], beta=1.5)
    prompts, _ = planted_statements(6, seed=5)
    ours = generate(lm, prompts, GenerationConfig(max_new_tokens=8, max_batch=4))
    assert [c.token_ids for c in ours] == [_naive(models, p, 1.5, 8) for p in prompts]
    # and differs from the checkpoint alone: the offset reached the generation
    alone = generate(models["ckpt"], prompts, GenerationConfig(max_new_tokens=8))
    assert [c.token_ids for c in ours] != [c.token_ids for c in alone]


def test_generate_stops_every_row_at_eos_and_pads_after(models):
    wrapper = proxy_tuned(models["ckpt"], models["tuned"], models["base"]).model
    assert isinstance(wrapper, ProxyTuned)
    ids, mask = pad_batch([[1, 5, 6], [1, 7]], 0, "left")
    first = wrapper.generate(ids, mask, max_new_tokens=1, pad_token_id=0)[:, -1].tolist()
    out = wrapper.generate(ids, mask, max_new_tokens=5, pad_token_id=0, eos_token_id=first[0])
    assert out[0, 3].item() == first[0] and (out[0, 4:] == 0).all()  # row 0 ended at once, padded after
    assert out.shape[1] <= 3 + 5
    with pytest.raises(OptionError, match="greedily"):
        wrapper.generate(ids, mask, do_sample=True)


def test_mismatched_vocabularies_and_bad_beta_are_refused(models, tmp_path):
    other = save_tiny(tmp_path / "other", "llama", seed=4)
    tok = make_tokenizer()
    tok.add_tokens(["extra"])
    tok.save_pretrained(other)
    with pytest.raises(ModelError, match=r"tuned .*other.*differ|differ.*tuned .*other"):
        proxy_tuned(models["ckpt"], load_model(str(other), dtype="float32"), models["base"])
    with pytest.raises(OptionError, match="finite"):
        proxy_tuned(models["ckpt"], models["tuned"], models["base"], beta=float("nan"))
    lm = proxy_tuned(models["ckpt"], models["tuned"], models["base"])
    vector = SteeringVector({layer: torch.ones(32) for layer in range(3)})
    with pytest.raises(OptionError, match="proxy-tuned"):
        evaluate_suite(lm, SuiteConfig(dimensions=("privacy",)), Steering(vector, 1, 1.0))


def test_evaluate_config_refuses_half_given_options():
    with pytest.raises(OptionError, match="--proxy-tuned needs --proxy-base"):
        EvaluateConfig("m", proxy_tuned="t")
    with pytest.raises(OptionError, match="--proxy-base needs --proxy-tuned"):
        EvaluateConfig("m", proxy_base="b")
    with pytest.raises(OptionError, match="--beta inf"):
        EvaluateConfig("m", proxy_tuned="t", proxy_base="b", beta=float("inf"))
    with pytest.raises(OptionError, match="--vector with --proxy-tuned"):
        EvaluateConfig("m", proxy_tuned="t", proxy_base="b", vector="v.safetensors", layer=1)
    assert EvaluateConfig("m", proxy_tuned="org/chat@main", proxy_base="org/base@ckpt_9").proxies == (
        ("org/chat", "main"), ("org/base", "ckpt_9"))


def test_cli_evaluates_a_proxy_tuned_model(folders, data_dir, tmp_path):
    common = ["evaluate", "--model", str(folders["ckpt"]), "--dimensions", "fairness", "--limit", "8",
              "--data-dir", str(data_dir), "--dtype", "float32", "--perplexity", "statements"]
    res = CliRunner().invoke(app, [*common, "--proxy-tuned", str(folders["tuned"]), "--proxy-base",
                                   str(folders["base"]), "--beta", "0.5", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "ev" / "evaluate.csv")
    assert {"accuracy", "perplexity"} <= set(table.metric) and table.value.notna().all()
    manifest = json.loads((tmp_path / "ev" / "manifest.json").read_text())
    assert manifest["config"]["proxy_tuned"] == str(folders["tuned"]) and manifest["config"]["beta"] == 0.5
    assert "proxy-tuned by" in manifest["model"]["ref"] and manifest["proxy"]["base"]["path"] == str(folders["base"])
    res = CliRunner().invoke(app, [*common, "--proxy-tuned", str(folders["tuned"])])
    assert res.exit_code == 2 and "--proxy-base" in res.output
    res = CliRunner().invoke(app, [*common, "--beta", "2"])
    assert res.exit_code == 2 and "--beta 2" in res.output
    other = save_tiny(tmp_path / "other", "llama", seed=4)
    tok = make_tokenizer()
    tok.add_tokens(["extra"])
    tok.save_pretrained(other)
    res = CliRunner().invoke(app, [*common, "--proxy-tuned", str(other), "--proxy-base", str(folders["base"])])
    assert res.exit_code == 2 and "vocabulary" in res.output
