"""Deterministic scorers that read the model's next-token distribution instead of parsing generations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.errors import ModelError
from ..data.batching import length_buckets, pad_batch, pad_id_of, positions_of
from ..models.loading import LoadedModel, check_fits


def _single_token(lm: LoadedModel, text: str) -> int:
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ModelError(f"{text!r} is {len(ids)} tokens for this tokenizer; the 0/1 scorer needs one token each.")
    return int(ids[0])


def binary_choice(lm: LoadedModel, prompts: Sequence[str], choices: tuple[str, str] = ("0", "1"),
                  max_batch: int = 32, max_tokens: int = 4096) -> np.ndarray:
    """log p(choices[1]) − log p(choices[0]) for the token after each prompt; > 0 means the model says 1.

    The released code generated two tokens and parsed them, falling back to an unseeded random label; this
    compares the two next-token log-probabilities, so every prompt gets a deterministic answer.
    """
    zero, one = (_single_token(lm, c) for c in choices)
    tok = lm.tokenizer
    encoded = tok(list(prompts))["input_ids"]
    check_fits(lm, [len(e) for e in encoded], "0/1 prompts")
    pad_id = pad_id_of(tok)
    device = torch.device(lm.info.device)
    margin = np.empty(len(prompts))
    for bucket in length_buckets([len(e) for e in encoded], max_tokens, max_batch):
        # left padding: every prompt's next-token logits sit at position −1
        ids, mask = pad_batch([encoded[i] for i in bucket], pad_id, "left")
        positions = positions_of(mask)
        with torch.inference_mode():
            logits = lm.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                              position_ids=positions.to(device), logits_to_keep=1).logits[:, -1].float()
        logp = torch.log_softmax(logits, dim=-1)
        margin[bucket] = (logp[:, one] - logp[:, zero]).cpu().numpy()
    return margin


def parse_binary(lm: LoadedModel, prompts: Sequence[str], seed: int = 0) -> tuple[np.ndarray, float]:
    """The released generate-and-parse answers, made reproducible: (answers, fallback rate).

    As released: greedy, two new tokens, the last one dropped (its ``[input_len:-1]`` slice), then "0"
    is looked for before "1". Where neither appears the released code drew an unseeded random label; here
    the draw is seeded and the share of such answers is returned, so it can be reported.
    """
    from .generation import GenerationConfig, generate

    outputs = generate(lm, prompts, GenerationConfig(max_new_tokens=2))
    rng = np.random.default_rng(seed)
    answers, fallbacks = np.empty(len(prompts), dtype=np.int64), 0
    for i, out in enumerate(outputs):
        text = lm.tokenizer.decode(list(out.token_ids[:1]), skip_special_tokens=True)
        if "0" in text:
            answers[i] = 0
        elif "1" in text:
            answers[i] = 1
        else:
            answers[i] = int(rng.integers(0, 2))
            fallbacks += 1
    return answers, fallbacks / max(len(prompts), 1)
