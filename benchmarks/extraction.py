"""Batched last-token extraction against the released code's loop, on the same statements in one run.

The released loop: fp32, one statement per forward pass, the full model (LM head included), a forward hook
per block. Ours: ``extract_last_token`` in --dtype (default auto: bf16 where the hardware runs it fast) on
--device, with --batching (default prefix-tree: each shared prefix computed once; padded: one statement per
row). Also measures this machine's matmul FLOP/s in our dtype (``_common.matmul_flops_per_s``: the fastest of
a 2048³ product and the model's own projection shapes at the bucket size), and reports
``roofline_fraction`` = the FLOP/s of what ours computes (2 × block parameters × computed tokens, plus the
attention each token needs; padding, masked attention and the final norm count for nothing) over that matmul
FLOP/s, and ``statement_gflops_per_s``: the FLOPs of every statement's own forward pass over our time (above
the roofline when sharing saves more than the kernels lose). Prints one JSON line.

    python benchmarks/extraction.py --model smollm2-135m-instruct --limit 400
    python benchmarks/extraction.py --dtype float32            # the fp32 path on a bf16 machine
    python benchmarks/extraction.py --compile                  # torch.compile the blocks (opt-in)
    python benchmarks/extraction.py --batching padded          # one statement per row, as before packing
"""

from __future__ import annotations

import json
import time

import torch
from _common import computed_work, machine, matmul_flops_per_s, parser, roofline_shapes, sync

from trusttrace.activations.extract import ExtractConfig, extract_last_token
from trusttrace.data.batching import untuple
from trusttrace.data.datasets import load_dataset
from trusttrace.models.loading import load_model


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


def main() -> None:
    p = parser(__doc__, limit=400)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of ours; the best is kept")
    p.add_argument("--compile", action="store_true", help="ExtractConfig(compile=True): torch.compile the blocks")
    p.add_argument("--batching", default="prefix-tree", choices=["prefix-tree", "padded"])
    args = p.parse_args()

    statements = list(load_dataset(args.dimension, args.data_dir, limit=args.limit).statements)
    ours_lm = load_model(args.model, dtype=args.dtype, device=args.device)
    config = ExtractConfig(compile=args.compile, batching=args.batching)
    start = time.perf_counter()
    extract_last_token(ours_lm, statements[:32], config)  # warm-up (and compilation, with --compile)
    t_warm = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        sync(ours_lm.info.device)
        start = time.perf_counter()
        ours = extract_last_token(ours_lm, statements, config)
        sync(ours_lm.info.device)
        times.append(time.perf_counter() - start)
    t_ours = min(times)
    ids = ours_lm.tokenizer(statements)["input_ids"]
    done = computed_work(ours_lm, ids, config)
    flops = done["flops"]
    dtype = next(ours_lm.model.parameters()).dtype
    roof = matmul_flops_per_s(dtype, roofline_shapes(ours_lm, config.max_tokens), device=ours_lm.info.device)
    host = machine(ours_lm.info.device, dtype)
    del ours_lm

    paper_lm = load_model(args.model, dtype="float32", device="cpu")
    paper_loop(paper_lm, statements[:8])  # warm-up
    start = time.perf_counter()
    theirs = paper_loop(paper_lm, statements)
    t_paper = time.perf_counter() - start

    rel = ((ours.float() - theirs).norm(dim=-1) / theirs.norm(dim=-1)).max().item()
    print(json.dumps({
        "benchmark": "extraction", "model": args.model, "statements": len(statements),
        "tokens": int(done["statement_tokens"]), "tokens_computed": int(done["tokens"]), "batching": args.batching,
        "pack_tokens": config.pack_tokens, "layers": int(theirs.shape[0]),
        "dtype_ours": str(dtype).removeprefix("torch."), "compile": args.compile,
        "seconds_ours": round(t_ours, 3), "seconds_ours_runs": [round(t, 3) for t in times],
        "seconds_warm_up": round(t_warm, 2), "seconds_paper_loop": round(t_paper, 3),
        "speedup_vs_paper_loop": round(t_paper / t_ours, 2),
        "tokens_per_s_ours": round(done["statement_tokens"] / t_ours, 1),
        "model_gflops_per_s": round(flops / t_ours / 1e9, 1), "matmul_gflops_per_s": round(roof / 1e9, 1),
        "statement_gflops_per_s": round(done["statement_flops"] / t_ours / 1e9, 1),
        "roofline_fraction": round(flops / t_ours / roof, 3),
        "max_rel_diff_vs_paper_loop": round(rel, 4), **host,
    }))


if __name__ == "__main__":
    main()
