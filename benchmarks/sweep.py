"""Download/compute overlap of the local executor, and the Ray executor's overhead per checkpoint.

A local series of random Llama checkpoints stands in for a hub series; "downloading" one copies it into a
cache folder after an artificial delay (by default the measured compute time of one checkpoint, where
overlap matters most). Three runs of `run_trace` over the same series, each into a fresh folder:

- sequential: download, then compute, one checkpoint after another (`prefetch=0`);
- pipelined: the next checkpoint downloads while the current one computes (`prefetch=1`, the default);
- ray: one Ray task per checkpoint on a local cluster of `--ray-cpus` CPUs, no download delay, against the
  local executor without delay on the same series.

    python benchmarks/sweep.py --checkpoints 8

Prints one JSON line: `overlap_speedup` = sequential / pipelined (target ≥ 1.5), and
`ray_overhead_per_checkpoint_s` = (ray − local) / checkpoints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from trusttrace.checkpoints import Checkpoint
from trusttrace.executors import ExecutorConfig
from trusttrace.fetcher import Fetch, FetchConfig, Fetched
from trusttrace.models import LoadConfig
from trusttrace.testing import save_tiny, write_planted_data_dir
from trusttrace.trace import TraceConfig, run_trace


def slow_copy(cache: Path, delay: float) -> Fetch:
    """A fetch that 'downloads' a checkpoint folder: wait ``delay`` seconds, copy it into ``cache``."""

    def fetch(ckpt: Checkpoint) -> Fetched:
        time.sleep(delay)
        target = cache / ckpt.name
        shutil.copytree(ckpt.ref, target, dirs_exist_ok=True)
        return Fetched(str(target), None, True)

    return fetch


def timed(config: TraceConfig, **kw) -> float:
    started = time.perf_counter()
    run_trace(config, **kw)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the random checkpoints")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rows", type=int, default=300, help="statements per dimension")
    parser.add_argument("--delay", type=float, default=None, help="download delay in s (default: compute time)")
    parser.add_argument("--ray-cpus", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        series, data = root / "series", write_planted_data_dir(root / "data", rows=args.rows)
        for step in range(args.checkpoints):
            save_tiny(series / f"step{step * 100}", "llama", seed=step, n_layers=args.layers, hidden=args.hidden)

        def config(name: str, **kw) -> TraceConfig:
            return TraceConfig(model=str(series), out=str(root / name), data_dir=str(data),
                               load=LoadConfig(dtype="float32"), dimensions=("privacy", "fairness"), **kw)

        run_trace(config("warm-up", select="first:1"))  # imports, allocator, first-call costs
        local = timed(config("local"))
        delay = args.delay if args.delay is not None else local / args.checkpoints
        sequential = timed(config("sequential", fetch=FetchConfig(prefetch=0)), fetch=slow_copy(root / "cache-seq", delay))
        pipelined = timed(config("pipelined", fetch=FetchConfig(prefetch=1)), fetch=slow_copy(root / "cache-pipe", delay))

        import ray

        started = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        ray_init = time.perf_counter() - started
        ray_time = timed(config("ray", executor=ExecutorConfig(kind="ray", cpus_per_task=1)))
        ray.shutdown()

    print(json.dumps({
        "benchmark": "sweep", "checkpoints": args.checkpoints, "hidden": args.hidden, "layers": args.layers,
        "rows_per_dimension": args.rows, "download_delay_s": round(delay, 3),
        "sequential_s": round(sequential, 2), "pipelined_s": round(pipelined, 2),
        "overlap_speedup": round(sequential / pipelined, 3),
        "local_s": round(local, 2), "ray_s": round(ray_time, 2), "ray_init_s": round(ray_init, 2),
        "ray_cpus": args.ray_cpus,
        "ray_overhead_per_checkpoint_s": round((ray_time - local) / args.checkpoints, 3),
    }))


if __name__ == "__main__":
    main()
