"""Last-token activations of every decoder block, in one batched forward pass per bucket.

Statements are tokenised once, sorted by length and cut into buckets under a token budget, so padding
stays small. Each bucket runs through the model body only (no LM head) under ``inference_mode``; a hook on
every block keeps just the last real token's row. Padding is masked and position ids count real tokens
only, so left and right padding give the same activations as an unpadded forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ._alloc import keep_freed_memory
from .batching import length_buckets, pad_batch, pad_id_of, positions_of, untuple
from .models import LoadedModel


@dataclass(frozen=True)
class ExtractConfig:
    """How statements are batched through the model."""

    max_tokens: int = 4096  # padded tokens per forward pass: bounds memory; ~4k keeps CPU matmuls efficient
    max_batch: int = 1024  # statements per forward pass at most (short statements: the token budget binds)
    # Both sides give the same activations. With right padding, causal attention already keeps every real
    # token from seeing the pads after it, so no padding mask is passed and attention takes its is_causal
    # fast path; left padding needs the mask (and position ids that skip the pads).
    padding_side: Literal["left", "right"] = "right"
    add_special_tokens: bool = True  # BOS etc. as the tokenizer's defaults (the paper's tokenizer.encode)


@contextmanager
def record_last_token(blocks: Sequence[nn.Module], sink: Callable[[int, torch.Tensor], None]) -> Iterator[
        dict[str, torch.Tensor]]:
    """Hook every block; on each forward call ``sink(layer, hidden[state['rows'], state['pos']])``.

    The caller sets the index tensors ``state['rows']`` and ``state['pos']`` before each forward pass.
    Hooks are removed on every exit path.
    """
    state: dict[str, torch.Tensor] = {}

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            rows, pos = state["rows"], state["pos"]
            sink(layer, untuple(output)[rows, pos])  # [batch, d_model]
        return hook

    handles = [block.register_forward_hook(make_hook(i)) for i, block in enumerate(blocks)]
    try:
        yield state
    finally:
        for handle in handles:
            handle.remove()


def tokenize(lm: LoadedModel, statements: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each statement, unpadded."""
    ids = lm.tokenizer(list(statements), add_special_tokens=add_special_tokens)["input_ids"]
    empty = [i for i, seq in enumerate(ids) if len(seq) == 0]
    if empty:
        raise ValueError(f"Statements at rows {empty[:5]} tokenise to nothing; remove them or pass "
                         "add_special_tokens=True so they carry a BOS token.")
    return ids


def extract_last_token(
    lm: LoadedModel,
    statements: Sequence[str],
    config: ExtractConfig = ExtractConfig(),
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Activations of every block at each statement's last real token.

    Returns:
        A CPU tensor ``[n_layers, n_statements, d_model]`` in the model's dtype, rows in input order.
        Layer l is the output of decoder block l (0-based), before the final norm.
    """
    if lm.info.device == "cpu":
        keep_freed_memory()
    ids = tokenize(lm, statements, config.add_special_tokens)
    n_layers, d_model = len(lm.blocks), lm.info.hidden_size
    dtype = next(lm.model.parameters()).dtype
    device = torch.device(lm.info.device)
    out = torch.empty((n_layers, len(ids), d_model), dtype=dtype)  # [layer, statement, d_model]
    target: dict[str, torch.Tensor] = {}

    def sink(layer: int, rows: torch.Tensor) -> None:
        out[layer, target["idx"]] = rows.to("cpu")

    pad_id = pad_id_of(lm.tokenizer)
    buckets = length_buckets([len(s) for s in ids], config.max_tokens, config.max_batch)
    with torch.inference_mode(), record_last_token(lm.blocks, sink) as state:
        for bucket in buckets:
            input_ids, mask = pad_batch([ids[i] for i in bucket], pad_id, config.padding_side)
            positions = positions_of(mask)  # real tokens count 0, 1, 2, … on either side
            lengths = mask.sum(-1)
            last = torch.full_like(lengths, input_ids.shape[1] - 1) if config.padding_side == "left" else lengths - 1
            state["rows"] = torch.arange(len(bucket), device=device)
            state["pos"] = last.to(device)
            target["idx"] = torch.tensor(bucket)
            attention_mask = mask.to(device) if config.padding_side == "left" else None
            lm.body(input_ids=input_ids.to(device), attention_mask=attention_mask,
                    position_ids=positions.to(device), use_cache=False)
            if progress is not None:
                progress(len(bucket))
    return out
