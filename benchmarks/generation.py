"""Batched greedy generation against one prompt at a time with ``generate`` (the released code), same dtype.

Prompts: the first N statements of the test half of toxigen.csv, as the released ToxiGen evaluation.
Prints one JSON line: speedup_vs_one_at_a_time and identical_fraction (continuations equal token for token).

    python benchmarks/generation.py --model smollm2-135m-instruct --prompts 64
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from trusttrace.data import load_dataset
from trusttrace.evaluate.generation import GenerationConfig, _trim, generate
from trusttrace.models import load_model


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
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    ds = load_dataset("toxicity", args.data_dir)
    prompts = list(ds.statements[len(ds) // 2:][: args.prompts])
    lm = load_model(args.model, dtype=args.dtype)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    generate(lm, prompts[:4], GenerationConfig(max_new_tokens=4))  # warm-up

    start = time.perf_counter()
    ours = [c.token_ids for c in generate(lm, prompts, config)]
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = one_at_a_time(lm, prompts, args.max_new_tokens)
    t_theirs = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "generation", "model": args.model, "dtype": args.dtype, "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens, "seconds_ours": round(t_ours, 2),
        "seconds_one_at_a_time": round(t_theirs, 2), "speedup_vs_one_at_a_time": round(t_theirs / t_ours, 2),
        "identical_fraction": round(sum(a == b for a, b in zip(ours, theirs)) / len(prompts), 4),
        "new_tokens_ours": sum(len(c) for c in ours),
    }))


if __name__ == "__main__":
    main()
