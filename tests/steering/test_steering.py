import numpy as np
import pytest
import torch

from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.core.errors import VectorError
from trusttrace.data.batching import untuple
from trusttrace.models.loading import LoadConfig, load_model, vocab_sha256
from trusttrace.steering.vector import SteeringMismatch, SteeringVector, build_vector, steer
from trusttrace.steering.vectors import vector_from_run
from trusttrace.trace.job import TraceConfig, run_trace

LAYER = 1


@pytest.fixture(scope="module")
def lm(tiny_models):
    return load_model(str(tiny_models["llama"]), dtype="float32")


def block_outputs(lm, ids):
    """Every block's output and the logits of one forward pass."""
    got = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: got.__setitem__(k, untuple(o).clone()))
             for k, b in enumerate(lm.blocks)]
    try:
        with torch.no_grad():
            logits = lm.model(**ids).logits
    finally:
        for h in hooks:
            h.remove()
    return got, logits


def vector_for(lm, seed=0, **meta):
    g = torch.Generator().manual_seed(seed)
    layers = {l: torch.randn(lm.info.hidden_size, generator=g) for l in range(lm.info.n_layers)}
    return SteeringVector(layers, {"n_layers": str(lm.info.n_layers), "vocab_sha256": vocab_sha256(lm.tokenizer),
                                   **meta})


@pytest.mark.parametrize("positions", ["all", "last"])
def test_adds_exactly_at_the_intended_positions(lm, positions):
    ids = lm.tokenizer(["w1 w2 w3 good"], return_tensors="pt")
    v = vector_for(lm)
    before, _ = block_outputs(lm, ids)
    with steer(lm, v, LAYER, alpha=2.0, positions=positions):
        after, _ = block_outputs(lm, ids)
    assert torch.equal(after[0], before[0])  # blocks before the steered one are untouched
    expected = before[LAYER].clone()
    if positions == "all":
        expected += 2.0 * v.at(LAYER)
    else:
        expected[:, -1] += 2.0 * v.at(LAYER)
    assert torch.equal(after[LAYER], expected)
    if positions == "last":  # causal: positions before the last are unaffected downstream too
        assert torch.equal(after[LAYER + 1][:, :-1], before[LAYER + 1][:, :-1])


def test_alpha_zero_is_bit_identical(lm):
    ids = lm.tokenizer(["w5 w6 bad"], return_tensors="pt")
    _, plain = block_outputs(lm, ids)
    with steer(lm, vector_for(lm), LAYER, alpha=0.0, positions="all"):
        _, steered = block_outputs(lm, ids)
    assert torch.equal(plain, steered)


def test_hook_is_removed_after_an_exception(lm):
    with pytest.raises(RuntimeError, match="boom"), steer(lm, vector_for(lm), LAYER, alpha=1.0):
        raise RuntimeError("boom")
    assert all(not b._forward_hooks for b in lm.blocks)


def test_generated_positions_skip_the_prompt(lm):
    ids = lm.tokenizer(["w1 w2 w3"], return_tensors="pt")
    with steer(lm, vector_for(lm), LAYER, alpha=1.0, positions="generated") as counts, torch.no_grad():
        lm.model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert counts["calls"] == 4 and counts["steered"] == 3  # the prefill call is left alone


def test_roundtrip_and_arithmetic(lm, tmp_path):
    v, w = vector_for(lm, 0, model="m", revision="r"), vector_for(lm, 1)
    path = tmp_path / "v.safetensors"
    v.save(path)
    back = SteeringVector.load(path)
    assert back.meta["model"] == "m" and all(torch.equal(back.at(l), v.at(l)) for l in v.layers)
    assert torch.equal((-v).at(0), -v.at(0)) and torch.equal((2 * v).at(1), 2 * v.at(1))
    assert torch.allclose((v + w).at(2), v.at(2) + w.at(2)) and (v * 0.5).meta["transform"] == "×0.5"
    assert v.cosine(v, 0) == pytest.approx(1.0) and (-v).cosine(v, 0) == pytest.approx(-1.0)
    with pytest.raises(VectorError, match="not layer 7"):
        v.at(7)


def test_mismatch_is_refused_unless_overridden(lm):
    small = SteeringVector({l: torch.ones(16) for l in range(3)}, {"model": "other"})
    with pytest.raises(SteeringMismatch, match="hidden size 16 but .* has hidden size 32"), steer(lm, small, LAYER):
        pass
    other_vocab = vector_for(lm, vocab_sha256="0" * 64)
    with pytest.raises(SteeringMismatch, match="vocabulary"), steer(lm, other_vocab, LAYER):
        pass
    deeper = vector_for(lm, n_layers="12")
    with pytest.raises(SteeringMismatch, match="12 layers"), steer(lm, deeper, LAYER):
        pass
    with steer(lm, other_vocab, LAYER, allow_mismatch=True) as counts:
        block_outputs(lm, lm.tokenizer(["w1"], return_tensors="pt"))
    assert counts["steered"] == 1
    with pytest.raises(ValueError, match="positions"), steer(lm, vector_for(lm), LAYER, positions="first"):
        pass


def planted(n=2000, d=16, seed=0, signal=3.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g).numpy()
    direction = torch.randn(d, generator=g)
    direction /= direction.norm()
    acts = torch.randn(2, n, d, generator=g) + signal * torch.as_tensor(y)[None, :, None] * direction
    return acts, y, direction


def test_builders_find_the_planted_direction():
    acts, y, direction = planted()
    raw = build_vector(acts, y, "mean-diff", split="all")
    half = np.arange(len(y) // 2)
    expected = acts[0, half[y[half] == 1]].double().mean(0) - acts[0, half[y[half] == 0]].double().mean(0)
    torch.testing.assert_close(build_vector(acts, y, "mean-diff").at(0), expected.float())
    v = build_vector(acts, y, "paper-code")
    assert torch.nn.functional.cosine_similarity(v.at(0), direction, dim=0) > 0.99
    unit = v.at(0) / v.at(0).norm()
    assert v.at(0).norm() == pytest.approx(float((acts[0] @ unit).std()), rel=1e-4)  # std of all rows
    assert raw.meta["split"] == "all" and v.meta["method"] == "paper-code" and v.meta["n_rows"] == "1000"


def test_builder_errors():
    acts, y, _ = planted()
    with pytest.raises(ValueError, match="only label"):
        build_vector(acts, np.zeros_like(y))
    with pytest.raises(ValueError, match="method"):
        build_vector(acts, y, "pca")
    with pytest.raises(ValueError, match="acts must be"):
        build_vector(acts[:, :10], y)


def test_vector_from_a_trace_run_steers_its_own_model(tiny_series, data_dir, tmp_path):
    run_trace(TraceConfig(model=str(tiny_series), out=str(tmp_path / "run"), dimensions=("toxicity", "reliability"),
                          data_dir=str(data_dir), load=LoadConfig(dtype="float32"), select="first:1",
                          analysis=AnalysisConfig(analyses=("probe",))))
    v = vector_from_run(tmp_path / "run", "step0", "toxicity")
    assert v.meta["revision"] == "step0" and v.meta["split"] == "first-half" and v.meta["dimension"] == "toxicity"
    assert vector_from_run(tmp_path / "run", "step0", "reliability").meta["split"] == "all"
    target = load_model(str(tiny_series / "step0"), dtype="float32")
    with steer(target, -v, LAYER, alpha=1.0) as counts:  # vocabulary and shape match: no override needed
        block_outputs(target, target.tokenizer(["w3 bad"], return_tensors="pt"))
    assert counts["steered"] == 1


def test_probe_method_recovers_the_decoding_direction():
    acts, y, direction = planted()
    v = build_vector(acts, y, "probe")
    assert torch.nn.functional.cosine_similarity(v.at(0), direction, dim=0) > 0.9
    unit = v.at(0) / v.at(0).norm()
    assert v.at(0).norm() == pytest.approx(float((acts[0] @ unit).std()), rel=1e-4)  # scaled as paper-code
    assert v.meta["method"] == "probe"
    # Correlated noise: the direction that decodes is Σ⁻¹Δ (Fisher's discriminant), not the mean difference Δ;
    # the probe finds the first, in the residual basis, whatever each feature's scale (classes that overlap,
    # where logistic regression and the discriminant agree).
    acts, y, _ = planted(n=8000, signal=1.0)
    g = torch.Generator().manual_seed(1)
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64)).Q
    mix = rotation * torch.linspace(0.5, 5, 16, dtype=torch.float64)  # features of scales 0.5 to 5, mixed
    skewed = acts.double() @ mix.T
    delta = skewed[0, y == 1].mean(0) - skewed[0, y == 0].mean(0)
    fisher = torch.linalg.solve(torch.cov(skewed[0, y == 0].T) + torch.cov(skewed[0, y == 1].T), delta)
    probe = build_vector(skewed.float(), y, "probe").at(0).double()
    assert torch.nn.functional.cosine_similarity(probe, fisher, dim=0) > 0.9
    assert torch.nn.functional.cosine_similarity(probe, delta, dim=0) < 0.9  # the two directions differ here
