"""The price of the controls: `trace` on one model with every control against `--controls none`.

Three runs trace the same statements of all five dimensions from scratch (probes and MI), in one process, one
after the other, each into a fresh folder: without controls; with every control and an empty random-init
cache (the shuffled probe, the bag-of-words model, and the random-init network's extraction and probes:
``ratio``); and with every control again, the untrained network's activations now read from the machine's
cache (``trusttrace.activations.random_init_cache``: ``ratio_cached``, what a second trace of the same model pays, e.g.
of another checkpoint; the cache key does not depend on the checkpoint). The cache used is a fresh one in
the scratch folder, so the user's cache neither helps nor fills.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import add_device_dtype, machine

from trusttrace.activations import random_init_cache
from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.core.names import CONTROLS
from trusttrace.models.loading import LoadConfig
from trusttrace.trace.job import TraceConfig, run_trace


def timed(model: str, out: Path, limit: int | None, controls: tuple[str, ...], load: LoadConfig
          ) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    result = run_trace(TraceConfig(model=model, out=str(out), limit=limit, load=load,
                                   analysis=AnalysisConfig.build(controls=controls)))
    seconds = time.perf_counter() - started
    return seconds, {name: record["seconds"] for name, record in result.manifest["checkpoints"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=None, help="statements per dimension (default: all)")
    parser.add_argument("--keep", default=None, help="keep the run folders here (none/, all/, all-again/)")
    args = add_device_dtype(parser).parse_args()
    load = LoadConfig(dtype=args.dtype, device=args.device)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        os.environ[random_init_cache.ENV] = f"{tmp}/random-init-cache"
        run_trace(TraceConfig(model=args.model, out=f"{tmp}/warm-up", dimensions=("privacy",), limit=50, load=load,
                              analysis=AnalysisConfig.build(controls=())))  # imports, allocator, first calls
        without, _ = timed(args.model, Path(tmp) / "none", args.limit, (), load)
        with_all, _ = timed(args.model, Path(tmp) / "all", args.limit, CONTROLS, load)
        cached = len(random_init_cache.entries())
        with_cached, _ = timed(args.model, Path(tmp) / "all-again", args.limit, CONTROLS, load)
    print(json.dumps({"benchmark": "controls", "model": args.model, "limit": args.limit,
                      **machine(args.device, args.dtype),
                      "seconds_without": round(without, 1), "seconds_with": round(with_all, 1),
                      "seconds_with_cached": round(with_cached, 1), "random_init_files_cached": cached,
                      "ratio": round(with_all / without, 3), "ratio_cached": round(with_cached / without, 3)}))


if __name__ == "__main__":
    main()
