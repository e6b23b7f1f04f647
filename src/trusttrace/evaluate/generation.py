"""Batched greedy generation: left-padded, length-sorted batches through ``generate`` with the KV cache.

Left padding puts every prompt's last token at position −1, so the ``last``-position steering hook and the
cache line up for every row; HF ``generate`` derives position ids from the attention mask, so a padded row
sees the same positions as it would alone. Results come back in input order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..core.alloc import keep_freed_memory
from ..data.batching import length_buckets, pad_batch, pad_id_of
from ..models.loading import LoadedModel, check_fits, context_length

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    """How continuations are generated."""

    max_new_tokens: int = 64  # the released ToxiGen evaluation's length
    # Prompts per generate() call. Decoding reads every weight once per step, so more rows per step cost little
    # more: 150 ToxiGen prompts × 64 tokens took 1.45× less time at 128 than at 32 on a 2-core AVX2 CPU
    # (fp32), 1.5–1.7× on an AVX-512 one (bf16), with identical continuations; 160 was slower again.
    max_batch: int = 128
    max_prompt_tokens: int = 4096  # padded prompt tokens per call
    add_special_tokens: bool = True


@dataclass(frozen=True)
class Continuation:
    """One prompt's greedy continuation."""

    text: str
    token_ids: tuple[int, ...]  # up to and excluding the first EOS/pad


def _trim(ids: list[int], stop: set[int]) -> tuple[int, ...]:
    for i, tok in enumerate(ids):
        if tok in stop:
            return tuple(ids[:i])
    return tuple(ids)


def generate(lm: LoadedModel, prompts: Sequence[str], config: GenerationConfig = GenerationConfig(),
             progress: Callable[[int], None] | None = None) -> list[Continuation]:
    """Greedy continuations of ``prompts``, batched; deterministic for a given model, dtype and batch plan."""
    if lm.info.device == "cpu":
        keep_freed_memory()
    tok = lm.tokenizer
    encoded = tok(list(prompts), add_special_tokens=config.add_special_tokens)["input_ids"]
    check_fits(lm, [len(e) for e in encoded], "generation prompts", generated=1)
    context = context_length(lm.model.config)
    pad_id = pad_id_of(tok)
    stop = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
    device = torch.device(lm.info.device)
    results: list[Continuation | None] = [None] * len(prompts)
    for bucket in length_buckets([len(e) for e in encoded], config.max_prompt_tokens, config.max_batch):
        ids, mask = pad_batch([encoded[i] for i in bucket], pad_id, "left")
        width = ids.shape[1]
        new_tokens = config.max_new_tokens if context is None else min(config.max_new_tokens, context - width)
        if new_tokens < config.max_new_tokens:  # a model cannot continue past its context
            log.warning("%d generation prompts of up to %d tokens leave room for %d new tokens of %d in %s's "
                        "context of %d positions; their continuations stop there.", len(bucket), width, new_tokens,
                        config.max_new_tokens, lm.info.ref, context)
        with torch.inference_mode():
            out = lm.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                    max_new_tokens=new_tokens, pad_token_id=pad_id)
        for row, i in enumerate(bucket):
            new = _trim(out[row, width:].tolist(), stop)
            results[i] = Continuation(tok.decode(list(new), skip_special_tokens=True), new)
        if progress is not None:
            progress(len(bucket))
    return [r for r in results if r is not None]
