"""Proxy-tuned greedy generation with the three KV caches against three uncached forward passes per token.

Both decode the same left-padded batch greedily with logits(model) + β·(logits(tuned) − logits(base)), with no
EOS stop (every row makes --max-new-tokens tokens). Prints one JSON line: tokens/s of each, the speedup, and
whether the two made the same tokens. Tiny random Llama models by default; --model (and --tuned, --base, which
default to --model) for real ones.

    python benchmarks/proxy.py
    python benchmarks/proxy.py --model smollm2-135m-instruct --prompts 8 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _common import add_device_dtype, machine

from trusttrace.data.batching import pad_batch, pad_id_of, positions_of
from trusttrace.evaluate.proxy import ProxyTuned, proxy_tuned
from trusttrace.models.loading import LoadedModel, load_model
from trusttrace.testing import planted_statements, save_tiny


def naive(models: tuple[LoadedModel, LoadedModel, LoadedModel], ids: torch.Tensor, mask: torch.Tensor, beta: float,
          max_new_tokens: int) -> torch.Tensor:
    """The definition: every step runs the three models on the whole sequence so far, without a cache."""
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            ckpt, tuned, base = (m.model(input_ids=ids, attention_mask=mask, position_ids=positions_of(mask),
                                         use_cache=False, logits_to_keep=1).logits[:, -1].float() for m in models)
            nxt = (ckpt + beta * (tuned - base)).argmax(-1)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", default=None, help="the checkpoint (default: a tiny random Llama)")
    p.add_argument("--tuned", default=None)
    p.add_argument("--base", default=None)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    args = add_device_dtype(p, dtype="float32").parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            refs = [str(save_tiny(Path(tmp) / f"m{i}", "llama", seed=i, n_layers=4, hidden=64)) for i in range(3)]
        else:
            refs = [args.model, args.tuned or args.model, args.base or args.model]
        ckpt, tuned, base = (load_model(r, dtype=args.dtype, device=args.device) for r in refs)
    lm = proxy_tuned(ckpt, tuned, base, args.beta)
    assert isinstance(lm.model, ProxyTuned)
    prompts, _ = planted_statements(args.prompts, seed=0)
    ids, mask = pad_batch(lm.tokenizer(prompts)["input_ids"], pad_id_of(lm.tokenizer), "left")
    device = torch.device(lm.info.device)
    ids, mask = ids.to(device), mask.to(device)
    lm.model.generate(ids, mask, max_new_tokens=2, eos_token_id=[])  # warm-up

    start = time.perf_counter()
    cached = lm.model.generate(ids, mask, max_new_tokens=args.max_new_tokens, eos_token_id=[])
    t_cached = time.perf_counter() - start
    start = time.perf_counter()
    uncached = naive((ckpt, tuned, base), ids, mask, args.beta, args.max_new_tokens)
    t_naive = time.perf_counter() - start
    n_tokens = args.prompts * args.max_new_tokens
    print(json.dumps({
        "benchmark": "proxy", "model": args.model or "tiny-llama (4 layers, hidden 64)", "beta": args.beta,
        "prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
        "tokens_per_s_cached": round(n_tokens / t_cached, 1), "tokens_per_s_naive": round(n_tokens / t_naive, 1),
        "speedup": round(t_naive / t_cached, 2),
        "identical_fraction": float((cached == uncached).all(dim=1).float().mean()),
        **machine(lm.info.device, args.dtype)}))


if __name__ == "__main__":
    main()
