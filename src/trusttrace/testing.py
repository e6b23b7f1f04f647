"""Tiny random models (Llama, GPT-NeoX, GPT-2 shapes) and planted-label statements, for tests and benchmarks.

No network: the tokenizer is a word-level one built here (needs the ``tokenizers`` package, in the ``dev``
extra) and the models are random. Statements carry their label in the last word, so the right probe
accuracy is known.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

WORDS = [f"w{i}" for i in range(40)] + ["good", "bad", "maybe", "0", "1"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def make_config(arch: str, n_layers: int = 3, hidden: int = 32) -> PretrainedConfig:
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    vocab = 4 + len(WORDS)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=128)
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=n_layers, num_attention_heads=4, max_position_embeddings=128)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=n_layers, n_head=4, n_positions=128)
    raise ValueError(arch)


def save_tiny(folder: Path, arch: str, seed: int, n_layers: int = 3, hidden: int = 32) -> Path:
    """A random ``arch`` model and the word-level tokenizer, saved as an HF folder (safetensors)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(arch, n_layers, hidden))
    model.save_pretrained(folder)  # safetensors
    make_tokenizer().save_pretrained(folder)
    return folder


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


def write_planted_data_dir(root: Path, rows: int = 120) -> Path:
    """Planted-label CSVs under the five published file names, usable as ``--data-dir``."""
    import pandas as pd

    from .data.datasets import SPECS

    root.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(SPECS.values()):
        statements, labels = planted_statements(rows, seed=i)
        pd.DataFrame({"statement": statements, "label": labels}).to_csv(root / f"{spec.file}.csv", index=False)
    return root


NOUNS = ["cat", "dog", "river", "king", "garden", "ship", "word", "stone", "bird", "house"]
VERBS = ["sees", "likes", "finds", "keeps", "makes", "holds"]


def write_text_corpus(path: Path, n: int = 400, seed: int = 0) -> Path:
    """A small English-like text file (blank-line-separated paragraphs) for pre-training tests."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(n):
        clauses = [f"The {rng.choice(NOUNS)} {rng.choice(VERBS)} a {rng.choice(NOUNS)}"
                   for _ in range(rng.randint(1, 3))]
        paragraphs.append(", and ".join(clauses) + ".")
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path
