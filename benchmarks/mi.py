"""Our paper-code HSIC estimator against the released algorithm as written, on identical activations.

The released ``hsic_normalized_cca``: Gaussian kernels with the feature dimension in the bandwidth,
one-sided centring by an m×m matmul, two explicit m×m inverses per call, float32, and two calls per layer
(I(T;X) and I(T;Y)). It runs here as written, and again in float64 as the reference for parity.
Activations: the fairness statements through a real model, z-scored over all rows, the first 80 % (the
probe's training split), X = layer 0. Prints one JSON line.

    python benchmarks/mi.py --limit 1952
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from _common import machine, paper_split, parser

from trusttrace.analysis.mutual_info import MIConfig, estimate_mi
from trusttrace.core.alloc import keep_freed_memory


def released_hsic_cca(a: torch.Tensor, b: torch.Tensor, sigma: float = 50.0, eps: float = 1e-5) -> float:
    """One call of the released estimator, written out as the released code computes it."""
    m = a.shape[0]
    h = torch.eye(m, dtype=a.dtype) - 1.0 / m

    def r(z: torch.Tensor) -> torch.Tensor:
        z = z.reshape(m, -1)
        sq = (z * z).sum(1, keepdim=True)
        dist = (sq - 2 * z @ z.t() + sq.t()).abs()
        kc = torch.exp(-dist / (2 * sigma**2 * z.shape[1])) @ h
        return kc @ torch.inverse(kc + eps * m * torch.eye(m, dtype=a.dtype))

    return float(torch.sum(r(a) * r(b).t()))


def released_all_layers(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    tx = np.array([released_hsic_cca(t[l], x) for l in range(t.shape[0])])
    ty = np.array([released_hsic_cca(t[l], y) for l in range(t.shape[0])])
    return tx, ty


def main() -> None:
    args = parser(__doc__, limit=1952).parse_args()
    z, labels, cut = paper_split(args)
    t64, y = z[:, :cut].contiguous(), labels[:cut]
    x64, y64 = t64[0], torch.as_tensor(y, dtype=torch.float64)
    keep_freed_memory()  # the same allocator settings for every contender

    start = time.perf_counter()
    ours_tx, ours_ty = estimate_mi(x64, t64, y, MIConfig())
    t_ours = time.perf_counter() - start

    t32 = t64.float()
    start = time.perf_counter()
    rel32_tx, rel32_ty = released_all_layers(t32[0], t32, y64.float())
    t_released = time.perf_counter() - start

    start = time.perf_counter()
    rel64_tx, rel64_ty = released_all_layers(x64, t64, y64)
    t_released64 = time.perf_counter() - start

    ref = np.concatenate([rel64_tx, rel64_ty])
    ours = np.concatenate([ours_tx, ours_ty])
    orig = np.concatenate([rel32_tx, rel32_ty])
    print(json.dumps({
        "benchmark": "mi", "model": args.model, "dimension": args.dimension, "m": int(cut),
        "layers": int(t64.shape[0]), "d_model": int(t64.shape[2]),
        "seconds_ours": round(t_ours, 3), "seconds_paper_code_fp32": round(t_released, 3),
        "seconds_paper_code_fp64": round(t_released64, 3),
        "speedup_vs_paper_code": round(t_released / t_ours, 2),
        "max_rel_diff": float(f"{np.max(np.abs(ours - ref) / np.abs(ref)):.3g}"),
        "max_rel_diff_fp32_original_vs_fp64": float(f"{np.max(np.abs(orig - ref) / np.abs(ref)):.3g}"),
        "min_mi_ty_fp32_original": round(float(rel32_ty.min()), 5), "min_mi_ty_ours": round(float(ours_ty.min()), 5),
        "mi_tx_layer0_14_29": [round(float(ours_tx[i]), 4) for i in (0, 14, 29)],
        "mi_ty_layer0_14_29": [round(float(ours_ty[i]), 4) for i in (0, 14, 29)], **machine(args.device, args.dtype),
    }))


if __name__ == "__main__":
    main()
