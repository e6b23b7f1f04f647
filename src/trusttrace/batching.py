"""Batching token sequences: length buckets, padding, training batches, and block outputs as tensors.

Every stage that runs a model over many texts (extraction, scoring, generation, fine-tuning) batches them
here, so padding and position logic exists once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .errors import ModelError


def untuple(output: Any) -> torch.Tensor:
    """The hidden states of a block's output, whether the block returns a tensor or a tuple."""
    hidden = output[0] if isinstance(output, tuple) else output
    if not isinstance(hidden, torch.Tensor):
        raise ModelError(f"A decoder block returned {type(hidden).__name__}, not hidden states; name the blocks "
                         "with --blocks if trusttrace found the wrong modules.")
    return hidden


def length_buckets(lengths: Sequence[int], max_tokens: int, max_batch: int) -> list[list[int]]:
    """Group indices by sorted length so each bucket's padded size stays under ``max_tokens``.

    A statement longer than ``max_tokens`` gets a bucket of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # sorted ascending, so lengths[i] is the longest so far in this bucket
        if current and (len(current) + 1 > max_batch or (len(current) + 1) * lengths[i] > max_tokens):
            buckets.append(current)
            current = []
        current.append(i)
    if current:
        buckets.append(current)
    return buckets


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[batch, width]`` padded on ``side`` and the matching attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (0, 1, 2, …), so padding on either side changes nothing."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def pad_id_of(tokenizer: Any) -> int:
    """The tokenizer's padding id (0 when it has none)."""
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def collate_prompted(rows: Sequence[tuple[Sequence[int], int]], pad_id: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training batch of (ids, prompt length) rows: right-padded ids, attention mask, and labels that are
    −100 (ignored by the loss) on the prompt and the padding."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(rows):
        ids[i, : len(seq)] = torch.tensor(list(seq))
        mask[i, : len(seq)] = 1
        labels[i, n_prompt: len(seq)] = torch.tensor(list(seq[n_prompt:]))
    return ids, mask, labels
