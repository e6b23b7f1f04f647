"""Download/compute overlap of the local executor, and the Ray executor's overhead per checkpoint.

A local series of random Llama checkpoints stands in for a hub series; "downloading" one copies it into a
cache folder after an artificial delay. Each repeat runs, every one into a fresh folder:

- local: no download at all; its checkpoints' own compute times (their median) set this repeat's delay,
  so the delay follows the machine's speed as it drifts (a shared machine's load comes and goes);
- sequential: download, then compute, one checkpoint after another (`prefetch=0`);
- pipelined: the next checkpoint downloads while the current one computes (`prefetch=1`, the default);
  the two alternate which goes first from one repeat to the next.

With the delay d equal to the compute time c, the ideal speedup is 2n / (n + 1) (1.78 for 8 checkpoints);
a delay calibrated k times too long or too short brings it down to 1 when k reaches n, which is why one
noisy calibration run could print "no overlap". Then each repeat runs the local executor and, with Ray
started for it alone, the Ray executor (one task per checkpoint on `--ray-cpus` CPUs, no delay), back to back.

    python benchmarks/sweep.py --checkpoints 8

Prints one JSON line: `overlap_speedup` = the median over repeats of sequential / pipelined (target ≥ 1.5),
with min and max, the calibration's spread, and `ray_overhead_per_checkpoint_s` = the median over repeats of
(ray − local) / checkpoints, flagged (`ray_overhead_valid` false) when negative in any repeat: Ray's tasks
run in parallel with one torch thread each, so the figure is then a speedup, not an overhead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import add_device_dtype, machine

from trusttrace.core.executors import ExecutorConfig
from trusttrace.models.checkpoints import Checkpoint
from trusttrace.models.fetcher import Fetch, FetchConfig, Fetched
from trusttrace.models.loading import LoadConfig
from trusttrace.testing import save_tiny, write_planted_data_dir
from trusttrace.trace.job import TraceConfig, TraceResult, run_trace


def slow_copy(cache: Path, delay: float) -> Fetch:
    """A fetch that 'downloads' a checkpoint folder: wait ``delay`` seconds, copy it into ``cache``."""

    def fetch(ckpt: Checkpoint) -> Fetched:
        time.sleep(delay)
        target = cache / ckpt.name
        shutil.copytree(ckpt.ref, target, dirs_exist_ok=True)
        return Fetched(str(target), None, True)

    return fetch


def timed(config: TraceConfig, fetch: Fetch | None = None) -> tuple[float, TraceResult]:
    started = time.perf_counter()
    result = run_trace(config, fetch=fetch)
    return time.perf_counter() - started, result


def compute_times(result: TraceResult) -> list[float]:
    """Each checkpoint's own seconds (fetch, extract, analyse), as its manifest record keeps them."""
    return [float(record["seconds"]) for record in result.manifest["checkpoints"].values()]


def spread(values: list[float], digits: int = 2) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def overlap(config: Callable[..., TraceConfig], root: Path, repeats: int,
            delay: float | None) -> dict[str, Any]:
    """Repeats of local (calibration), sequential and pipelined; the pair's order alternates."""
    seq, pipe, local, delays, per_checkpoint = [], [], [], [], []
    for r in range(repeats):
        local_s, result = timed(config(f"local-{r}"))
        times = compute_times(result)
        per_checkpoint += times
        local.append(local_s)
        d = delay if delay is not None else statistics.median(times)
        delays.append(d)
        arms = [("sequential", 0, seq), ("pipelined", 1, pipe)]
        for name, prefetch, into in arms if r % 2 == 0 else arms[::-1]:
            took, _ = timed(config(f"{name}-{r}", fetch=FetchConfig(prefetch=prefetch)),
                            slow_copy(root / f"cache-{name}-{r}", d))
            into.append(took)
    ratios = [s / p for s, p in zip(seq, pipe)]
    return {"download_delay_s": spread(delays, 3), "compute_per_checkpoint_s": spread(per_checkpoint),
            "sequential_s": spread(seq), "pipelined_s": spread(pipe), "local_s": spread(local),
            "overlap_speedup": round(statistics.median(ratios), 3),
            "overlap_speedup_range": [round(min(ratios), 3), round(max(ratios), 3)]}


def ray_overhead(config: Callable[..., TraceConfig], repeats: int, checkpoints: int, cpus: int) -> dict[str, Any]:
    """Repeats of local (no Ray running) then Ray (started for the arm, its start timed apart).

    Local runs while a Ray cluster was up in the same process measured up to 7× slower here (104 s against
    15 s), which is what a user of the local executor never pays, so Ray is up only for its own arm."""
    import ray

    local, remote, inits = [], [], []
    for r in range(repeats):
        local.append(timed(config(f"ray-local-{r}"))[0])
        started = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        inits.append(time.perf_counter() - started)
        try:
            remote.append(timed(config(f"ray-{r}", executor=ExecutorConfig(kind="ray", cpus_per_task=1)))[0])
        finally:
            ray.shutdown()
    ray_init = statistics.median(inits)
    per_checkpoint = [(b - a) / checkpoints for a, b in zip(local, remote)]
    overhead = statistics.median(per_checkpoint)
    out: dict[str, Any] = {"ray_cpus": cpus, "ray_init_s": round(ray_init, 2), "ray_local_s": spread(local),
                           "ray_s": spread(remote), "ray_overhead_per_checkpoint_s": round(overhead, 3),
                           "ray_overhead_range": [round(min(per_checkpoint), 3), round(max(per_checkpoint), 3)],
                           "ray_overhead_valid": min(per_checkpoint) >= 0}
    if min(per_checkpoint) < 0:
        out["ray_overhead_note"] = (f"Ray ran faster than the local executor in some repeat: its tasks run on {cpus} "
                                    "CPU(s), one torch thread each, and on a loaded machine one thread can beat "
                                    f"the local executor's {torch.get_num_threads()}; the difference is then not an "
                                    "overhead. --ray-cpus 1 --threads 1 compares like with like.")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the random checkpoints")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rows", type=int, default=300, help="statements per dimension")
    parser.add_argument("--delay", type=float, default=None,
                        help="download delay in s (default: each repeat's median compute time per checkpoint)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each arm; medians reported")
    parser.add_argument("--ray-cpus", type=int, default=2, help="0: skip the Ray comparison")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (fewer: a slower machine)")
    add_device_dtype(parser, dtype="float32")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        series, data = root / "series", write_planted_data_dir(root / "data", rows=args.rows)
        for step in range(args.checkpoints):
            save_tiny(series / f"step{step * 100}", "llama", seed=step, n_layers=args.layers, hidden=args.hidden)

        def config(name: str, **kw: Any) -> TraceConfig:
            return TraceConfig(model=str(series), out=str(root / name), data_dir=str(data),
                               load=LoadConfig(dtype=args.dtype, device=args.device),
                               dimensions=("privacy", "fairness"), **kw)

        run_trace(config("warm-up", select="first:1"))  # imports, allocator, first-call costs
        figures = overlap(config, root, args.repeats, args.delay)
        if args.ray_cpus > 0:
            figures |= ray_overhead(config, args.repeats, args.checkpoints, args.ray_cpus)

    print(json.dumps({
        "benchmark": "sweep", "checkpoints": args.checkpoints, "hidden": args.hidden, "layers": args.layers,
        "rows_per_dimension": args.rows, "repeats": args.repeats,
        "ideal_speedup": round(2 * args.checkpoints / (args.checkpoints + 1), 3), **figures,
        "machine": machine(args.device, args.dtype),
    }))


if __name__ == "__main__":
    main()
