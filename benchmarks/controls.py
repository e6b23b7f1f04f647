"""The price of the controls: `trace` on one model with every control against `--controls none`.

Both runs trace the same statements of all five dimensions from scratch (probes and MI), in one process, one
after the other; the ratio is what the controls add (the shuffled probe, the bag-of-words model, and the
random-init network's extraction and probes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import add_device_dtype, machine

from trusttrace.analysis import AnalysisConfig
from trusttrace.models import LoadConfig
from trusttrace.names import CONTROLS
from trusttrace.trace import TraceConfig, run_trace


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
    parser.add_argument("--keep", default=None, help="keep the two run folders here (none/, all/)")
    args = add_device_dtype(parser).parse_args()
    load = LoadConfig(dtype=args.dtype, device=args.device)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        run_trace(TraceConfig(model=args.model, out=f"{tmp}/warm-up", dimensions=("privacy",), limit=50, load=load,
                              analysis=AnalysisConfig.build(controls=())))  # imports, allocator, first calls
        without, _ = timed(args.model, Path(tmp) / "none", args.limit, (), load)
        with_all, _ = timed(args.model, Path(tmp) / "all", args.limit, CONTROLS, load)
    print(json.dumps({"benchmark": "controls", "model": args.model, "limit": args.limit, **machine(args.device, args.dtype),
                      "seconds_without": round(without, 1), "seconds_with": round(with_all, 1),
                      "ratio": round(with_all / without, 3)}))


if __name__ == "__main__":
    main()
