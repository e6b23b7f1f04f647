"""Batched greedy generation against one prompt at a time with ``generate`` (the released code), same dtype.

Prompts: the first N statements of the test half of toxigen.csv, as the released ToxiGen evaluation.
Prints one JSON line: speedup_vs_one_at_a_time, identical_fraction (continuations equal token for token), and
ours' model FLOP/s (2 × (block + LM head) matmul parameters per prompt and generated token, plus causal
attention over the cache) against the best matmul FLOP/s in the run's dtype (``roofline_fraction``; decoding
reads every weight once per step for a few rows, so it is memory-bound and far from the roofline).

    python benchmarks/generation.py --model smollm2-135m-instruct --prompts 64
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import add_device_dtype, forward_flops, machine, matmul_flops_per_s, sync

from trusttrace.data.datasets import load_dataset
from trusttrace.evaluate.generation import GenerationConfig, _trim, generate
from trusttrace.models.loading import load_model


def one_at_a_time(lm, prompts: list[str], max_new_tokens: int) -> list[tuple[int, ...]]:
    """The released loop: tokenise one prompt, ``generate`` greedily, decode what follows it."""
    tok = lm.tokenizer
    stop = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
    out = []
    with torch.inference_mode():
        for p in prompts:
            ids = tok(p, return_tensors="pt")
            gen = lm.model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens,
                                    pad_token_id=tok.pad_token_id)
            out.append(_trim(gen[0, ids["input_ids"].shape[1]:].tolist(), stop))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--data-dir", default=None)
    args = add_device_dtype(parser, dtype="float32").parse_args()

    ds = load_dataset("toxicity", args.data_dir)
    prompts = list(ds.statements[len(ds) // 2:][: args.prompts])
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    generate(lm, prompts[:4], GenerationConfig(max_new_tokens=4))  # warm-up

    sync(lm.info.device)
    start = time.perf_counter()
    ours = [c.token_ids for c in generate(lm, prompts, config)]
    sync(lm.info.device)
    t_ours = time.perf_counter() - start
    prompt_lengths = [len(ids) for ids in lm.tokenizer(prompts)["input_ids"]]
    flops = forward_flops(lm, [n + len(c) for n, c in zip(prompt_lengths, ours)], lm_head=True)
    dtype = next(lm.model.parameters()).dtype
    d, vocab = lm.info.hidden_size, lm.model.get_output_embeddings().weight.shape[0]
    roof = matmul_flops_per_s(dtype, [(2048, 2048, 2048), (len(prompts), d, d), (len(prompts), d, vocab)],
                              device=lm.info.device)
    start = time.perf_counter()
    theirs = one_at_a_time(lm, prompts, args.max_new_tokens)
    t_theirs = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "generation", "model": args.model, "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens, "seconds_ours": round(t_ours, 2),
        "seconds_one_at_a_time": round(t_theirs, 2), "speedup_vs_one_at_a_time": round(t_theirs / t_ours, 2),
        "identical_fraction": round(sum(a == b for a, b in zip(ours, theirs)) / len(prompts), 4),
        "new_tokens_ours": sum(len(c) for c in ours),
        "new_tokens_per_s_ours": round(sum(len(c) for c in ours) / t_ours, 1),
        "model_gflops_per_s": round(flops / t_ours / 1e9, 2), "matmul_gflops_per_s": round(roof / 1e9, 1),
        "roofline_fraction": round(flops / t_ours / roof, 4), **machine(lm.info.device, dtype),
    }))


if __name__ == "__main__":
    main()
