"""What the steering controls add to a sweep: the same sweep with and without them, one run, same machine.

Runs ``run_steer`` into fresh folders: without controls (``random_vectors=0``, ``baseline_prompt=none``), then
with the defaults (K random directions per α ≠ 0 and the prompting baseline). The vectors' trace is done once
beforehand (into a shared source folder each sweep copies), so the timings are evaluations only. With
``--before-batch N`` the sweep without controls runs once more as it ran before the controls came: N prompts
per generation call (32 then), and every evaluation run even where two are the same (the target's own vector
under two names when the source is the target), so ``cost_vs_before`` compares today's default sweep with it.
Prints one JSON line: seconds of each sweep, their ratios, the evaluation counts, and the machine.

    python benchmarks/steer_controls.py                      # a tiny random Llama, privacy
    python benchmarks/steer_controls.py --model smollm2-135m-instruct --dimension toxicity --layer 15 --limit 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

from _common import machine

import trusttrace.evaluate.suite
import trusttrace.steer.job
from trusttrace.evaluate.generation import GenerationConfig
from trusttrace.steer.job import SteerConfig, run_steer
from trusttrace.testing import save_tiny, write_planted_data_dir


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", default=None, help="source and target (default: a tiny random Llama)")
    p.add_argument("--dimension", default="privacy")
    p.add_argument("--layer", type=int, default=1)
    p.add_argument("--alphas", default="-2,-1")
    p.add_argument("--limit", type=int, default=40, help="evaluation items")
    p.add_argument("--source-limit", type=int, default=200, help="statements the vector is built from")
    p.add_argument("--random-vectors", type=int, default=3)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--before-batch", type=int, default=None,
                   help="also time the sweep without controls at this many prompts per generation call")
    args = p.parse_args()
    alphas = tuple(float(a) for a in args.alphas.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = None
        model = args.model
        if model is None:
            model = str(save_tiny(root / "model", "llama", seed=0, n_layers=4, hidden=64))
            data_dir = str(write_planted_data_dir(root / "data", rows=2 * max(args.limit, args.source_limit)))

        ran = []
        real_suite = trusttrace.steer.job.run_suite

        def counted(*args: Any, **kwargs: Any) -> Any:
            ran.append(1)
            return real_suite(*args, **kwargs)

        def sweep(out: Path, **controls: object) -> tuple[float, int]:
            config = SteerConfig(source=model, target=model, dimension=args.dimension, out=str(out),
                                 layers=(args.layer,), alphas=alphas, limit=args.limit, source_limit=args.source_limit,
                                 data_dir=data_dir, dtype=args.dtype, perplexity_source="statements", **controls)
            ran.clear()
            started = time.perf_counter()
            with mock.patch.object(trusttrace.steer.job, "run_suite", counted):
                run_steer(config)
            return time.perf_counter() - started, len(ran)

        sweep(root / "warm", random_vectors=0, baseline_prompt="none")  # the trace, the judge and the caches
        for name in ("bare", "controls"):
            shutil.copytree(root / "warm" / "source", root / name / "source")
        before_s, before_n = None, None
        if args.before_batch is not None:
            shutil.copytree(root / "warm" / "source", root / "before" / "source")
            batch = partial(GenerationConfig, max_batch=args.before_batch)
            with mock.patch.object(trusttrace.evaluate.suite, "GenerationConfig", batch), \
                    mock.patch.object(trusttrace.steer.job, "_repeats", lambda jobs: {}):
                before_s, before_n = sweep(root / "before", random_vectors=0, baseline_prompt="none")
        bare_s, bare_n = sweep(root / "bare", random_vectors=0, baseline_prompt="none")
        full_s, full_n = sweep(root / "controls", random_vectors=args.random_vectors)
    print(json.dumps({
        "benchmark": "steer_controls", "model": args.model or "tiny-llama", "dimension": args.dimension,
        "layer": args.layer, "alphas": list(alphas), "limit": args.limit, "random_vectors": args.random_vectors,
        "evaluations_run_before": before_n, "evaluations_run_bare": bare_n, "evaluations_run_with_controls": full_n,
        "seconds_bare": round(bare_s, 2), "seconds_with_controls": round(full_s, 2),
        "cost_ratio": round(full_s / bare_s, 3), "generation_batch": GenerationConfig().max_batch,
        "before_batch": args.before_batch, "seconds_bare_before": None if before_s is None else round(before_s, 2),
        "cost_vs_before": None if before_s is None else round(full_s / before_s, 3), **machine(dtype=args.dtype)}))


if __name__ == "__main__":
    main()
