"""Log-likelihoods of token spans, batched: continuation scores (TruthfulQA MC) and perplexity.

Sequences are left-padded, so every row's scored tokens sit at the end; the model is asked only for the
logits of the last positions (``logits_to_keep``), so its own head (and any logit scaling it applies)
runs, but no [batch, length, vocab] tensor is ever built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..core.alloc import keep_freed_memory
from ..core.errors import DataFileError
from ..data.batching import length_buckets, pad_batch, pad_id_of, positions_of
from ..models.loading import LoadedModel, check_fits
from .kvcache import cache_keyword, cache_of


def score_tails(lm: LoadedModel, seqs: Sequence[Sequence[int]], n_scored: Sequence[int], max_batch: int = 32,
                max_tokens: int = 4096) -> np.ndarray:
    """Σ log p(token | everything before it) over the last ``n_scored[i]`` tokens of each sequence."""
    return _score_tails(lm, seqs, n_scored, max_batch, max_tokens)[0]


def _score_tails(lm: LoadedModel, seqs: Sequence[Sequence[int]], n_scored: Sequence[int], max_batch: int = 32,
                 max_tokens: int = 4096, greedy: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``score_tails``, and (when ``greedy``) whether every scored token is the model's argmax there."""
    if any(k < 1 or k >= len(s) for s, k in zip(seqs, n_scored)):
        raise ValueError("Each scored span needs at least one token and at least one token of context before it.")
    check_fits(lm, [len(s) for s in seqs], "scored prompts and answers")
    if lm.info.device == "cpu":
        keep_freed_memory()
    pad_id = pad_id_of(lm.tokenizer)
    device = torch.device(lm.info.device)
    totals, is_greedy = np.empty(len(seqs)), np.zeros(len(seqs), dtype=bool)
    for bucket in length_buckets([len(s) for s in seqs], max_tokens, max_batch):
        ids, mask = pad_batch([list(seqs[i]) for i in bucket], pad_id, "left")
        k_max = max(n_scored[i] for i in bucket)
        positions = positions_of(mask)
        with torch.inference_mode():
            logits = lm.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                              position_ids=positions.to(device), logits_to_keep=k_max + 1).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [batch, k_max, vocab]: predicts the last k_max
        targets = ids[:, -k_max:].to(device)
        picked = logp.gather(-1, targets[..., None])[..., 0]  # [batch, k_max]
        hits = (logp.argmax(-1) == targets) if greedy else None
        for row, i in enumerate(bucket):
            totals[i] = float(picked[row, k_max - n_scored[i]:].sum())
            if hits is not None:
                is_greedy[i] = bool(hits[row, k_max - n_scored[i]:].all())
    return totals, is_greedy


def score_tails_after_prefix(lm: LoadedModel, prefix: Sequence[int], suffixes: Sequence[Sequence[int]],
                             n_scored: Sequence[int], max_batch: int = 32, max_tokens: int = 4096) -> np.ndarray:
    """``score_tails`` of ``prefix + suffix`` for every suffix, running the shared prefix once.

    The prefix's keys and values are computed once and copied into each batch; the suffixes are left-padded
    after it (masked, with positions counting real tokens only), so each row sees what it would see alone.
    """
    import copy

    if any(k < 1 or k > len(s) for s, k in zip(suffixes, n_scored)):
        raise ValueError("Each scored span needs at least one token and must lie inside its suffix.")
    if lm.info.device == "cpu":
        keep_freed_memory()
    pad_id = pad_id_of(lm.tokenizer)
    device = torch.device(lm.info.device)
    n_prefix = len(prefix)
    with torch.inference_mode():
        cache = cache_of(lm.model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True))
    keyword = cache_keyword(lm.model)
    totals = np.empty(len(suffixes))
    for bucket in length_buckets([len(s) for s in suffixes], max_tokens, max_batch):
        ids, mask = pad_batch([list(suffixes[i]) for i in bucket], pad_id, "left")
        k_max = max(n_scored[i] for i in bucket)
        positions = n_prefix + positions_of(mask)
        full_mask = torch.cat([torch.ones(len(bucket), n_prefix, dtype=mask.dtype), mask], dim=1)
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(bucket))
        with torch.inference_mode():
            logits = lm.model(input_ids=ids.to(device), attention_mask=full_mask.to(device),
                              position_ids=positions.to(device), use_cache=True, logits_to_keep=k_max + 1,
                              **{keyword: past}).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = ids[:, -k_max:].to(device)
        picked = logp.gather(-1, targets[..., None])[..., 0]
        for row, i in enumerate(bucket):
            totals[i] = float(picked[row, k_max - n_scored[i]:].sum())
    return totals


def pair_tokens(lm: LoadedModel, contexts: Sequence[str], continuations: Sequence[str], joint: bool = False
                ) -> tuple[list[list[int]], list[int]]:
    """Token sequences of each context + continuation, and how many of their last tokens are the continuation.

    ``joint=False``: the two are tokenised apart and joined. ``joint=True``: lm-evaluation-harness's way,
    the pair is tokenised together and the continuation is what follows the context's own tokens.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations; they must pair up.")
    ctx = lm.tokenizer(list(contexts), add_special_tokens=True)["input_ids"]
    if joint:
        whole = lm.tokenizer([c + k for c, k in zip(contexts, continuations)], add_special_tokens=True)["input_ids"]
        return whole, [len(w) - len(c) for w, c in zip(whole, ctx)]
    cont = lm.tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
    return [c + k for c, k in zip(ctx, cont)], [len(k) for k in cont]


def continuation_logprobs(lm: LoadedModel, contexts: Sequence[str], continuations: Sequence[str],
                          max_batch: int = 32, shared_prefix: str | None = None, joint: bool = False) -> np.ndarray:
    """Σ log p(continuation | context), the pair tokenised as ``pair_tokens`` says.

    ``shared_prefix``: text every context starts with (a few-shot primer). Its tokens are run once and
    reused for every context whose tokens begin with them; the rest are scored in full. Same numbers up to
    floating-point rounding, several times faster when the prefix is most of each sequence.
    """
    seqs, n_scored = pair_tokens(lm, contexts, continuations, joint)
    if shared_prefix is None:
        return score_tails(lm, seqs, n_scored, max_batch)
    prefix = lm.tokenizer(shared_prefix, add_special_tokens=True)["input_ids"]
    shared = [i for i, (s, k) in enumerate(zip(seqs, n_scored))
              if len(s) - k > len(prefix) and s[: len(prefix)] == prefix]
    rest = sorted(set(range(len(seqs))) - set(shared))
    totals = np.empty(len(seqs))
    if shared:
        totals[shared] = score_tails_after_prefix(lm, prefix, [seqs[i][len(prefix):] for i in shared],
                                                  [n_scored[i] for i in shared], max_batch)
    if rest:
        totals[rest] = score_tails(lm, [seqs[i] for i in rest], [n_scored[i] for i in rest], max_batch)
    return totals


def greedy_tails(lm: LoadedModel, contexts: Sequence[str], continuations: Sequence[str], max_batch: int = 32
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Σ log p(continuation | context) and whether the continuation is the greedy one (lm-eval's pairing)."""
    seqs, n_scored = pair_tokens(lm, contexts, continuations, joint=True)
    return _score_tails(lm, seqs, n_scored, max_batch, greedy=True)


def perplexity(lm: LoadedModel, texts: Sequence[str], max_batch: int = 32) -> tuple[float, int]:
    """exp(mean negative log-likelihood per predicted token) over ``texts``, and the token count.

    Each text is scored on its own: every token after the first (after BOS, where the tokenizer adds one).
    """
    ids = [s for s in lm.tokenizer(list(texts), add_special_tokens=True)["input_ids"] if len(s) >= 2]
    if not ids:
        raise DataFileError("No text is long enough to score (each needs two tokens or more).")
    check_fits(lm, [len(s) for s in ids], "perplexity texts")
    n = [len(s) - 1 for s in ids]
    total = score_tails(lm, ids, n, max_batch).sum()
    return math.exp(-total / sum(n)), sum(n)
