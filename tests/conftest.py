"""Tiny random models (Llama, GPT-NeoX, GPT-2 shapes) saved as checkpoint series, and planted-label data.

No network: the tokenizer is a word-level one built here, the models are random, and the datasets are
written to a temporary data folder under the published file names.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

WORDS = [f"w{i}" for i in range(40)] + ["good", "bad", "maybe"]


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def make_config(arch: str, n_layers: int = 3):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    vocab = 4 + len(WORDS)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                             num_attention_heads=4, max_position_embeddings=128)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=n_layers, n_head=4, n_positions=128)
    raise ValueError(arch)


def save_tiny(folder: Path, arch: str, seed: int, n_layers: int = 3) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(arch, n_layers))
    model.save_pretrained(folder)  # safetensors
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One checkpoint folder per architecture."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: save_tiny(root / arch, arch, seed=0) for arch in ("llama", "gpt_neox", "gpt2")}


@pytest.fixture(scope="session")
def tiny_series(tmp_path_factory) -> Path:
    """A local Llama checkpoint series, deliberately created out of step order."""
    root = tmp_path_factory.mktemp("series")
    for i, step in enumerate((100, 0, 10)):
        save_tiny(root / f"step{step}", "llama", seed=i)
    return root


def planted_statements(n: int, seed: int, noise: float = 0.0) -> tuple[list[str], np.ndarray]:
    """Random word strings whose label is written in the last word ("good" = 1, "bad" = 0).

    Every layer's last-token state carries the last word, so a probe should reach ~1.0; ``noise`` flips
    that fraction of labels.
    """
    rng = random.Random(seed)
    labels = np.array([rng.randint(0, 1) for _ in range(n)])
    statements = [" ".join(rng.choices(WORDS[:40], k=rng.randint(2, 9))) + (" good" if y else " bad")
                  for y in labels]
    flip = np.array([rng.random() < noise for _ in range(n)])
    return statements, np.where(flip, 1 - labels, labels)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The five published file names holding planted data (120 rows each)."""
    root = tmp_path_factory.mktemp("data")
    for i, stem in enumerate(("truthfulqa_train", "toxigen", "confaide", "stereoset", "sst2")):
        statements, labels = planted_statements(120, seed=i)
        pd.DataFrame({"statement": statements, "label": labels}).to_csv(root / f"{stem}.csv", index=False)
    return root


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch, tmp_path):
    """Tests never reach the network or the user's caches."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRUSTTRACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TRUSTTRACE_DATA_DIR", raising=False)
