"""TruthfulQA MC scoring with the 6-shot primer run once (shared prefix) against scoring every sequence whole.

    python benchmarks/truthfulqa_mc.py --model smollm2-135m-instruct --limit 50

Prints one JSON line: both timings, `speedup`, the largest difference in an answer's log-likelihood, and
whether MC1/MC2 agree.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import add_device_dtype, machine

from trusttrace.evaluate.likelihood import continuation_logprobs
from trusttrace.evaluate.truthfulqa import QA_PRIMER, load_mc_items, mc_scores, prompt_for
from trusttrace.models.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=50, help="questions")
    parser.add_argument("--data-dir", default=None)
    args = add_device_dtype(parser).parse_args()
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    items, _ = load_mc_items(args.data_dir, args.limit)
    contexts = [prompt_for(item.question) for item in items for _ in (*item.true, *item.false)]
    answers = [" " + a for item in items for a in (*item.true, *item.false)]
    continuation_logprobs(lm, contexts[:8], answers[:8], shared_prefix=QA_PRIMER)  # warm-up
    started = time.perf_counter()
    cached = continuation_logprobs(lm, contexts, answers, shared_prefix=QA_PRIMER)
    cached_s = time.perf_counter() - started
    started = time.perf_counter()
    plain = continuation_logprobs(lm, contexts, answers)
    plain_s = time.perf_counter() - started
    def mc(logp: np.ndarray) -> np.ndarray:
        out, cursor = [], 0
        for item in items:
            n_true, n_false = len(item.true), len(item.false)
            true, false = logp[cursor:cursor + n_true], logp[cursor + n_true:cursor + n_true + n_false]
            cursor += n_true + n_false
            out.append(mc_scores(true[item.true.index(item.best)], true, false))
        return np.array(out)

    mc_cached, mc_plain = mc(cached), mc(plain)
    print(json.dumps({"benchmark": "truthfulqa_mc", "model": args.model, **machine(lm.info.device, lm.info.dtype),
                      "questions": len(items), "sequences": len(contexts), "cached_s": round(cached_s, 2),
                      "plain_s": round(plain_s, 2), "speedup": round(plain_s / cached_s, 2),
                      "max_abs_logp_diff": float(np.max(np.abs(cached - plain))),
                      "median_abs_logp_diff": float(np.median(np.abs(cached - plain))),
                      "mc1_cached": mc_cached[:, 0].mean(), "mc1_plain": mc_plain[:, 0].mean(),
                      "mc2_cached": round(float(mc_cached[:, 1].mean()), 4),
                      "mc2_plain": round(float(mc_plain[:, 1].mean()), 4),
                      "mc1_changed": int((mc_cached[:, 0] != mc_plain[:, 0]).sum())}))


if __name__ == "__main__":
    main()
