"""What the MI intervals, null and check estimators cost against the bare estimate, on a trace's own activations.

The MI stage of a trace is ``mi_rows`` on every (checkpoint, dataset) activation file. This times it on the
stored activations of a run folder (``--run``, e.g. a ``pretrain --trace`` or demo folder: its
``trace/activations``), or on a real model's activations of one dimension (``--model``/``--limit``):
``before`` (``estimate_mi``: what trace computed before the intervals, null and checks), ``bare`` (the same
estimate through ``mi_rows``) and the defaults, and each ``--bootstrap`` and ``--permutations`` count given,
in one process, alternating, best of ``--rounds``. Prints one JSON line; ``ratio_default`` is the default's
cost over ``before``'s (the issue's goal: at most 2); ``intervals_and_null`` leaves out the check estimators.

    python benchmarks/mi_stats.py --run runs/demo/pretrain/trace --files 10
    python benchmarks/mi_stats.py --limit 1952          # SmolLM2, fairness
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import machine, paper_split, parser

from trusttrace.activations.store import load_activations
from trusttrace.analysis.mi_stats import mi_rows
from trusttrace.analysis.mutual_info import DEFAULT_BOOTSTRAP, DEFAULT_PERMUTATIONS, MIConfig, estimate_mi
from trusttrace.analysis.probes import ProbeFitConfig, training_split
from trusttrace.runs.layout import TraceLayout

Case = tuple[torch.Tensor, np.ndarray]


def run_cases(run: Path, files: int) -> list[Case]:
    """The training split of up to ``files`` stored activation files, spread over the run's checkpoints."""
    paths = TraceLayout(run).activation_files()
    chosen = [paths[i] for i in np.linspace(0, len(paths) - 1, min(files, len(paths))).round().astype(int)]
    cases = []
    for path in chosen:
        stored = load_activations(path)
        cases.append(training_split(stored.layers, stored.labels, ProbeFitConfig(protocol="cv")))
    return cases


def time_stage(cases: list[Case], config: MIConfig | None) -> float:
    """Seconds for the MI rows of every case; ``None``: the estimate alone, as trace computed it before the
    intervals, null and checks (``estimate_mi``)."""
    started = time.perf_counter()
    for t, y in cases:
        if config is None:
            estimate_mi(t[0], t, y)
        else:
            mi_rows(t[0], t, y, config)
    return time.perf_counter() - started


def main() -> None:
    p = parser(__doc__, limit=1952)
    p.add_argument("--run", type=Path, default=None, help="a trace folder with stored activations")
    p.add_argument("--files", type=int, default=10, help="activation files of --run to time")
    p.add_argument("--bootstrap", default="4,8,16", help="half-sample counts to time beside the default")
    p.add_argument("--permutations", default="99", help="permutation counts to time beside the default")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if args.run is not None:
        cases = run_cases(args.run, args.files)
        source = str(args.run)
    else:
        z, labels, cut = paper_split(args)
        cases = [(z[:, :cut].contiguous(), labels[:cut])]
        source = f"{args.model} {args.dimension} --limit {args.limit}"
    bare = MIConfig(bootstrap=0, permutations=0, checks=())
    configs: dict[str, MIConfig | None] = {
        "before": None, "bare": bare, "default": MIConfig(),
        "null_only": replace(bare, permutations=DEFAULT_PERMUTATIONS),
        "intervals_only": replace(bare, bootstrap=DEFAULT_BOOTSTRAP),
        "intervals_and_null": replace(bare, bootstrap=DEFAULT_BOOTSTRAP, permutations=DEFAULT_PERMUTATIONS),
        "checks_only": replace(bare, checks=MIConfig().checks)}
    configs |= {f"bootstrap_{b}": MIConfig(bootstrap=int(b)) for b in args.bootstrap.split(",")}
    configs |= {f"permutations_{k}": MIConfig(permutations=int(k)) for k in args.permutations.split(",")}
    best = {name: float("inf") for name in configs}
    for _ in range(args.rounds):  # alternating, so drifts of a shared machine hit every configuration alike
        for name, config in configs.items():
            best[name] = min(best[name], time_stage(cases, config))
    shapes = sorted({(int(t.shape[0]), int(t.shape[1]), int(t.shape[2])) for t, _ in cases})
    print(json.dumps({"benchmark": "mi_stats", "source": source, "files": len(cases),
                      "shapes_layers_rows_dim": shapes, "defaults": {"bootstrap": DEFAULT_BOOTSTRAP,
                                                                    "permutations": DEFAULT_PERMUTATIONS,
                                                                    "checks": list(MIConfig().checks)},
                      "seconds": {k: round(v, 3) for k, v in best.items()},
                      "ratio_default": round(best["default"] / best["before"], 2),
                      "ratios_to_before": {k: round(v / best["before"], 2) for k, v in best.items()},
                      **machine(dtype="float32")}))


if __name__ == "__main__":
    main()
