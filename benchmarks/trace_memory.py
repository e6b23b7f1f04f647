"""Peak memory of `trace` against the number of checkpoints: it must not grow.

Builds a local series of random Llama checkpoints (planted-label data), then runs `run_trace` over the first
1 and over all N of them, each in a fresh process, and reports each run's peak RSS. Prints one JSON line.

    python benchmarks/trace_memory.py --checkpoints 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import add_device_dtype, machine

from trusttrace.testing import save_tiny, write_planted_data_dir

CHILD = """
import resource, sys
from trusttrace.models.loading import LoadConfig
from trusttrace.trace.job import TraceConfig, run_trace
run_trace(TraceConfig(model=sys.argv[1], out=sys.argv[2], data_dir=sys.argv[3], select=sys.argv[4],
                      load=LoadConfig(dtype=sys.argv[5], device=sys.argv[6])))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def peak_rss_mb(series: Path, out: Path, data: Path, select: str, args: argparse.Namespace) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, str(series), str(out), str(data), select, args.dtype,
                           args.device],
                          check=True, capture_output=True, text=True)
    return int(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512, help="hidden size of the random checkpoints")
    parser.add_argument("--rows", type=int, default=400, help="statements per dimension")
    args = add_device_dtype(parser, dtype="float32").parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.checkpoints):
            save_tiny(root / "series" / f"step{i * 100}", "llama", seed=i, n_layers=6, hidden=args.hidden)
        data = write_planted_data_dir(root / "data", rows=args.rows)
        one = peak_rss_mb(root / "series", root / "one", data, "first:1", args)
        many = peak_rss_mb(root / "series", root / "many", data, "all", args)
    print(json.dumps({"benchmark": "trace_memory", "checkpoints": args.checkpoints,
                      "peak_rss_mb_1_checkpoint": one, f"peak_rss_mb_{args.checkpoints}_checkpoints": many,
                      "growth_ratio": round(many / one, 3), **machine(args.device, args.dtype)}))


if __name__ == "__main__":
    main()
