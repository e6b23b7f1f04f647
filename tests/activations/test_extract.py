import pytest
import torch

from trusttrace.activations.extract import ExtractConfig, extract_last_token
from trusttrace.data.batching import length_buckets
from trusttrace.models.loading import load_model
from trusttrace.testing import planted_statements


def reference(lm, statement):
    """Each block's output at the last token from one unpadded forward pass."""
    captured = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o)) for k, b in enumerate(lm.blocks)]
    ids = lm.tokenizer(statement, return_tensors="pt")
    with torch.no_grad():
        hidden = lm.body(**ids, output_hidden_states=True).hidden_states
    for h in hooks:
        h.remove()
    last = [(captured[k][0] if isinstance(captured[k], tuple) else captured[k])[0, -1] for k in captured]
    # hidden_states[l + 1] is block l's output for all but the last block (which HF returns normed)
    for layer in range(len(lm.blocks) - 1):
        assert torch.allclose(last[layer], hidden[layer + 1][0, -1], atol=1e-6)
    return torch.stack(last)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("batch", [1, 7])
def test_matches_unpadded_forward(tiny_models, arch, side, batch):
    lm = load_model(str(tiny_models[arch]), dtype="float32")
    statements, _ = planted_statements(11, seed=3)
    acts = extract_last_token(lm, statements, ExtractConfig(max_batch=batch, padding_side=side))
    assert acts.shape == (3, 11, 32)
    for j, s in enumerate(statements):
        torch.testing.assert_close(acts[:, j], reference(lm, s), atol=1e-4, rtol=1e-4)


def test_hooks_are_removed_after_an_error(tiny_models):
    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    with pytest.raises(ValueError):
        extract_last_token(lm, ["w1 w2", ""], ExtractConfig(add_special_tokens=False))
    assert all(not b._forward_hooks for b in lm.blocks)


def test_buckets_respect_token_budget():
    lengths = [5, 50, 3, 7, 20, 20, 2]
    buckets = length_buckets(lengths, max_tokens=40, max_batch=3)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for b in buckets:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 40


def test_compile_gives_the_eager_activations(tiny_models):
    """compile=True (torch.compile of each block's forward) reads the same rows as eager, to float rounding,
    and leaves the blocks eager afterwards."""
    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    statements, _ = planted_statements(11, seed=3)
    eager = extract_last_token(lm, statements, ExtractConfig(max_batch=4))
    compiled = extract_last_token(lm, statements, ExtractConfig(max_batch=4, compile=True))
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)
    assert all("forward" not in vars(b) and not b._forward_hooks for b in lm.blocks)


@pytest.mark.parametrize("pass_tokens", [0, 7, 1000])
def test_fewest_padded_buckets_is_a_valid_partition_with_no_more_padding(pass_tokens):
    from trusttrace.data.batching import fewest_padded_buckets

    lengths = [5, 50, 3, 7, 20, 20, 2, 9, 9, 31, 4, 12]
    buckets = fewest_padded_buckets(lengths, max_tokens=60, max_batch=4, pass_tokens=pass_tokens)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for b in buckets:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 60

    def cost(bs):
        return sum(len(b) * max(lengths[i] for i in b) + pass_tokens for b in bs)
    assert cost(buckets) <= cost(length_buckets(lengths, max_tokens=60, max_batch=4))
