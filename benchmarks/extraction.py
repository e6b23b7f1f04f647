"""Batched last-token extraction against the released code's loop, on the same statements in one run.

The released loop: fp32, one statement per forward pass, the full model (LM head included), a forward hook
per block. Ours: ``extract_last_token`` in the auto dtype. Also measures this machine's matmul FLOP/s in
our dtype, and reports ``roofline_fraction`` = our model FLOP/s (2 × block parameters × real tokens, plus
causal attention) over that matmul FLOP/s. Prints one JSON line.

    python benchmarks/extraction.py --model smollm2-135m-instruct --limit 400
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from trusttrace.batching import untuple
from trusttrace.data import load_dataset
from trusttrace.extract import ExtractConfig, extract_last_token
from trusttrace.models import load_model


def paper_loop(lm, statements: list[str]) -> torch.Tensor:
    """The released generate_activations loop: one statement at a time through the whole model."""
    grabbed: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: grabbed.__setitem__(k, untuple(o)[0, -1].clone()))
             for k, b in enumerate(lm.blocks)]
    out = []
    try:
        with torch.no_grad():
            for s in statements:
                ids = lm.tokenizer(s, return_tensors="pt")
                lm.model(**ids)  # with the LM head, as the released code
                out.append(torch.stack([grabbed[k] for k in range(len(lm.blocks))]))
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(out, dim=1)


def model_flops(lm, lengths: list[int]) -> float:
    """Forward FLOPs of the decoder blocks on the real tokens: 2·params per token plus causal attention."""
    block_params = sum(p.numel() for b in lm.blocks for name, p in b.named_parameters() if p.dim() == 2)
    tokens = sum(lengths)
    attention = sum(2 * 2 * lm.info.hidden_size * n * (n + 1) / 2 for n in lengths) * lm.info.n_layers
    return 2.0 * block_params * tokens + attention


def matmul_flops_per_s(dtype: torch.dtype, shapes: list[tuple[int, int, int]], repeats: int = 10) -> float:
    """The best matmul throughput over ``shapes`` (m, k, n) in ``dtype`` on this machine."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dimension", default="fairness")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours; the best is kept")
    args = parser.parse_args()

    statements = list(load_dataset(args.dimension, args.data_dir, limit=args.limit).statements)
    ours_lm = load_model(args.model)
    config = ExtractConfig()
    extract_last_token(ours_lm, statements[:32], config)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = extract_last_token(ours_lm, statements, config)
        times.append(time.perf_counter() - start)
    t_ours = min(times)
    lengths = [len(ids) for ids in ours_lm.tokenizer(statements)["input_ids"]]
    flops = model_flops(ours_lm, lengths)
    dtype = next(ours_lm.model.parameters()).dtype
    d, ff = ours_lm.info.hidden_size, getattr(ours_lm.model.config, "intermediate_size", 4 * ours_lm.info.hidden_size)
    roof = matmul_flops_per_s(dtype, [(2048, 2048, 2048), (config.max_tokens, d, ff), (config.max_tokens, ff, d)])
    del ours_lm

    paper_lm = load_model(args.model, dtype="float32")
    paper_loop(paper_lm, statements[:8])  # warm-up
    start = time.perf_counter()
    theirs = paper_loop(paper_lm, statements)
    t_paper = time.perf_counter() - start

    rel = ((ours.float() - theirs).norm(dim=-1) / theirs.norm(dim=-1)).max().item()
    print(json.dumps({
        "benchmark": "extraction", "model": args.model, "statements": len(statements), "tokens": sum(lengths),
        "layers": int(theirs.shape[0]), "dtype_ours": str(dtype).removeprefix("torch."),
        "seconds_ours": round(t_ours, 3), "seconds_paper_loop": round(t_paper, 3),
        "speedup_vs_paper_loop": round(t_paper / t_ours, 2),
        "tokens_per_s_ours": round(sum(lengths) / t_ours, 1),
        "model_gflops_per_s": round(flops / t_ours / 1e9, 1), "matmul_gflops_per_s": round(roof / 1e9, 1),
        "roofline_fraction": round(flops / t_ours / roof, 3),
        "max_rel_diff_vs_paper_loop": round(rel, 4),
    }))


if __name__ == "__main__":
    main()
