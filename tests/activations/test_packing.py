import json
import random

import numpy as np
import pytest
import torch

from trusttrace.activations.extract import ExtractConfig, extract_last_token, packing_works
from trusttrace.activations.packing import common_prefix, pack_batch, prefix_packs, tree_pack
from trusttrace.models.loading import load_model
from trusttrace.testing import planted_statements

from .test_extract import reference


def path_of(pack, node):
    """The token ids from the root to ``node``, and their depths, read back through the parents."""
    ids, depths, all_depths = [], [], pack.depths()
    while node >= 0:
        ids.append(pack.ids[node])
        depths.append(all_depths[node])
        node = pack.parents[node]
    return ids[::-1], depths[::-1]


def random_seqs(rng, n):
    """Token sequences with shared beginnings (a few stems), duplicates, and sequences that prefix others."""
    stems = [[1] + [rng.randrange(2, 9) for _ in range(rng.randrange(0, 6))] for _ in range(4)]
    seqs = [stems[rng.randrange(4)] + [rng.randrange(2, 9) for _ in range(rng.randrange(1, 8))] for _ in range(n)]
    return seqs + [list(seqs[0]), seqs[1][:-1] or [1]]


def test_tree_pack_holds_each_prefix_once_and_each_statement_on_its_path():
    seqs = [[1, 2, 3, 4], [1, 2, 5], [1, 2, 3], [6, 7], [1, 2, 5]]
    pack = tree_pack(seqs, range(len(seqs)))
    # distinct prefixes: 1, 12, 123, 1234, 125, 6, 67
    assert len(pack) == 7
    for m, end in zip(pack.members, pack.ends, strict=True):
        ids, depths = path_of(pack, end)
        assert ids == seqs[m] and depths == list(range(len(seqs[m])))
    assert pack.ends[1] == pack.ends[4]  # identical statements end on one node
    sees = pack.sees()
    for i in range(len(pack)):  # a node sees exactly itself and its ancestors, all before it
        ancestors, node = set(), i
        while node >= 0:
            ancestors.add(node)
            node = pack.parents[node]
        assert set(np.flatnonzero(sees[i])) == ancestors and max(ancestors) == i


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pack_tokens", [4, 16, 64])
def test_prefix_packs_hold_every_statement_once_within_the_row_budget(seed, pack_tokens):
    rng = random.Random(seed)
    seqs = random_seqs(rng, rng.randrange(1, 60))
    packs = prefix_packs(seqs, pack_tokens)
    members = sorted(m for p in packs for m in p.members)
    assert members == list(range(len(seqs)))
    for p in packs:
        assert len(p) <= pack_tokens or len(p.members) == 1
        for m, end in zip(p.members, p.ends, strict=True):
            assert path_of(p, end)[0] == seqs[m]
    # never more nodes than the statements' tokens; never fewer than their distinct prefixes
    trie = {tuple(s[:k]) for s in seqs for k in range(1, len(s) + 1)}
    assert len(trie) <= sum(len(p) for p in packs) <= sum(map(len, seqs))


def test_statements_sharing_a_beginning_share_a_row_while_they_fit():
    question = [1, 9, 9, 9, 9, 9, 9]
    answers = [question + [k, k + 1] for k in range(2, 7)]
    others = [[1, 20 + k, 30 + k, 40 + k] for k in range(12)]
    seqs = others[:6] + answers + others[6:]
    packs = prefix_packs(seqs, pack_tokens=20)
    holding = [p for p in packs if 6 in p.members]
    assert all(m in holding[0].members for m in range(6, 11))
    assert sum(len(p) for p in packs) < sum(map(len, seqs))


def test_pack_batch_masks_what_a_node_may_not_see():
    packs = [tree_pack([[1, 2, 3], [1, 4]], [0, 1]), tree_pack([[5, 6]], [0])]
    ids, positions, mask = pack_batch(packs, pad_id=0, dtype=torch.float32)
    assert ids.tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert positions.tolist() == [[0, 1, 2, 1], [0, 1, 0, 0]]
    allowed = (mask == 0)[:, 0]
    assert allowed[0].tolist() == [[True, False, False, False], [True, True, False, False],
                                   [True, True, True, False], [True, False, False, True]]
    assert allowed[1].tolist() == [[True, False, False, False], [True, True, False, False],
                                   [False, False, True, False], [False, False, False, True]]  # pads: themselves


def sharing_statements():
    statements, _ = planted_statements(9, seed=3)
    return [*statements, statements[0] + " w1 w2", statements[0] + " w3", statements[2], statements[4] + " good"]


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "gpt2"])
@pytest.mark.parametrize("pack_tokens", [6, 40])
def test_packed_extraction_matches_each_statement_alone(tiny_models, arch, pack_tokens):
    lm = load_model(str(tiny_models[arch]), dtype="float32")
    statements = sharing_statements()
    acts = extract_last_token(lm, statements, ExtractConfig(pack_tokens=pack_tokens, max_tokens=64))
    assert packing_works(lm)
    for j, s in enumerate(statements):
        torch.testing.assert_close(acts[:, j], reference(lm, s), atol=1e-4, rtol=1e-4)


def test_a_model_that_ignores_the_mask_is_batched_padded(tiny_models, monkeypatch, caplog):
    """Packing is checked on the model before it is trusted: a body that drops the attention mask (as some
    remote code does) gives wrong packed activations, so the statements go padded, with a warning."""
    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    body = lm.model.base_model
    plain = body.forward

    def no_mask(*args, attention_mask=None, **kwargs):
        return plain(*args, **kwargs)

    monkeypatch.setattr(body, "forward", no_mask)
    monkeypatch.setattr("trusttrace.activations.extract.PACKING_CHECKED", {})
    statements = sharing_statements()
    acts = extract_last_token(lm, statements, ExtractConfig(pack_tokens=40))
    assert not packing_works(lm)
    assert "batched padded" in caplog.text
    monkeypatch.setattr(body, "forward", plain)
    for j, s in enumerate(statements):
        torch.testing.assert_close(acts[:, j], reference(lm, s), atol=1e-4, rtol=1e-4)


def test_statements_past_a_sliding_window_are_batched_padded(tmp_path):
    """A custom mask would let a token look past the model's attention window; such statements go padded."""
    from transformers import AutoModelForCausalLM, MistralConfig

    from trusttrace.testing import WORDS, make_tokenizer

    config = MistralConfig(vocab_size=4 + len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, sliding_window=4)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), dtype="float32")
    statements = ["w1 w2 w3 w4 w5 w6 w7", "w1 w2 w3 w4 w5 w8", "w1 w2"]
    acts = extract_last_token(lm, statements, ExtractConfig(pack_tokens=40))
    for j, s in enumerate(statements):
        torch.testing.assert_close(acts[:, j], reference(lm, s), atol=1e-4, rtol=1e-4)


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0


def test_bad_batching_options_are_refused():
    from trusttrace.core.errors import OptionError

    with pytest.raises(OptionError, match="prefix-tree"):
        ExtractConfig(batching="trie")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="pack_tokens"):
        ExtractConfig(pack_tokens=0)


def test_a_trace_packed_or_padded_stores_the_same_activations(tiny_series, data_dir, tmp_path):
    """``trace --batching padded`` and the packed default store the same activations (to float rounding),
    and the manifest records which was asked for."""
    from trusttrace.activations.store import load_activations
    from trusttrace.analysis.probe_job import AnalysisConfig
    from trusttrace.models.loading import LoadConfig
    from trusttrace.runs.layout import TraceLayout
    from trusttrace.trace.job import TraceConfig, run_trace

    runs = {}
    for batching in ("prefix-tree", "padded"):
        out = tmp_path / batching
        run_trace(TraceConfig(model=str(tiny_series), out=str(out), dimensions=("fairness",), data_dir=str(data_dir),
                              limit=40, load=LoadConfig(dtype="float32"), extract=ExtractConfig(batching=batching),
                              analysis=AnalysisConfig.build(controls=())))
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["config"]["extract"]["batching"] == batching
        runs[batching] = load_activations(TraceLayout(out).activation("step100", "fairness")).layers
    torch.testing.assert_close(runs["prefix-tree"], runs["padded"], atol=1e-5, rtol=1e-4)
