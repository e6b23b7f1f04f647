"""What several benchmarks share: the command line, the machine they ran on, and the real-model activations
they start from."""

from __future__ import annotations

import argparse
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from trusttrace.activations.extract import ExtractConfig, extract_last_token
from trusttrace.activations.packing import prefix_packs
from trusttrace.analysis.probes import _zscore
from trusttrace.data.datasets import load_dataset
from trusttrace.models.devices import choose_device, choose_dtype
from trusttrace.models.loading import LoadedModel, load_model

CPU_FLAGS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}  # what decides the fast dtype on a CPU


def add_device_dtype(p: argparse.ArgumentParser, dtype: str = "auto") -> argparse.ArgumentParser:
    """--device and --dtype, as ``load_model`` takes them (``auto``: CUDA if present; bf16 where fast)."""
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default=dtype, help="auto (bf16 where the hardware runs it fast), bfloat16, float32")
    return p


def parser(doc: str | None, limit: int) -> argparse.ArgumentParser:
    """--model, --dimension, --limit, --data-dir, --device and --dtype, with this benchmark's first docstring
    line."""
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dimension", default="fairness")
    p.add_argument("--limit", type=int, default=limit)
    p.add_argument("--data-dir", default=None)
    return add_device_dtype(p)


def load(args: argparse.Namespace, ref: str | None = None) -> LoadedModel:
    """``ref`` (default ``--model``) on ``--device`` in ``--dtype``."""
    return load_model(ref or args.model, dtype=args.dtype, device=args.device)


def paper_split(args: argparse.Namespace) -> tuple[torch.Tensor, np.ndarray, int]:
    """All layers' activations (as stored: bf16 → float), z-scored over all rows, the labels, and the
    released code's train cut (first 80 %)."""
    ds = load_dataset(args.dimension, args.data_dir, limit=args.limit)
    acts = extract_last_token(load(args), ds.statements).to(torch.bfloat16).float()
    (z,) = _zscore(acts.double())
    return z, ds.labels, int(len(ds) * 0.8)


def machine(device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> dict[str, object]:
    """What the figures depend on: the CPU and its bf16/AVX-512 flags, torch and its threads, and the device and
    dtype the benchmark ran in (given), or those ``auto`` picks here (not given)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    flags = re.search(r"flags\s*:\s*(.*)", info)
    have = set(flags.group(1).split()) if flags else set()
    dev = device if isinstance(device, torch.device) else choose_device(device or "auto")
    if dtype is None or isinstance(dtype, str):
        resolved = choose_dtype(dtype or "auto", dev)[0]
    else:
        resolved = dtype
    return {"cpu": model.group(1) if model else platform.processor(), "cpu_flags": sorted(have & CPU_FLAGS),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "device": str(dev),
            "dtype": str(resolved).removeprefix("torch."),
            "auto_dtype": str(choose_dtype("auto", dev)[0]).removeprefix("torch.")}


def matmul_flops_per_s(dtype: torch.dtype, shapes: list[tuple[int, int, int]], repeats: int = 10,
                       rounds: int = 3, device: str | torch.device = "cpu") -> float:
    """The best matmul throughput (FLOP/s) over ``shapes`` (m, k, n) in ``dtype`` on ``device``: the roofline.

    Each shape runs ``rounds`` timed rounds of ``repeats`` products after a warm-up, and the fastest round of
    the fastest shape counts, so a round slowed by other work on the machine does not lower the figure. The
    shapes should include a large square one (what the BLAS does best) and the model's own.
    """
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
        for _ in range(3):
            a @ b
        for _ in range(rounds):
            sync(device)
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            sync(device)
            best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - start))
    return best


def roofline_shapes(lm: LoadedModel, rows: int) -> list[tuple[int, int, int]]:
    """A 2048³ product and every distinct projection shape of the blocks at ``rows`` tokens (m, k, n)."""
    shapes = {(2048, 2048, 2048)}
    for block in lm.blocks:
        for module in block.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() == 2:
                n, k = weight.shape if isinstance(module, torch.nn.Linear) else weight.shape[::-1]  # Conv1D: [k, n]
                shapes.add((rows, int(k), int(n)))
    return sorted(shapes)


def max_rel_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The largest ‖ours − theirs‖/‖theirs‖ over the rows (last dimension) of two activation tensors."""
    ours, theirs = ours.double().cpu(), theirs.double().cpu()
    return float(((ours - theirs).norm(dim=-1) / theirs.norm(dim=-1).clamp_min(1e-12)).max())


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a timer reads what it ran (nothing to do on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def block_matmul_params(lm: LoadedModel) -> int:
    """Parameters of the decoder blocks' matmuls (2-D weights; norms and biases left out)."""
    return sum(p.numel() for b in lm.blocks for p in b.parameters() if p.dim() == 2)


def forward_flops(lm: LoadedModel, lengths: list[int], lm_head: bool = False) -> float:
    """Forward FLOPs of a model over sequences of ``lengths`` real tokens: 2 per matmul parameter of the blocks
    (and of the LM head, with ``lm_head``) and token, plus causal attention (QKᵀ and AV: 2·2·d·n(n+1)/2 per
    layer and sequence). Padding, norms and activations count for nothing."""
    params = block_matmul_params(lm)
    if lm_head:
        params += lm.model.get_output_embeddings().weight.numel()
    d = lm.info.hidden_size
    attention = sum(2 * 2 * d * n * (n + 1) / 2 for n in lengths) * lm.info.n_layers
    return 2.0 * params * sum(lengths) + attention


def computed_work(lm: LoadedModel, ids: list[list[int]], config: ExtractConfig) -> dict[str, float]:
    """What ``extract_last_token`` computes for statements of token ``ids`` under ``config``: the tokens it
    runs (prefix-tree nodes, or each statement's own; padding never counts) and their FLOPs (2 per block
    matmul parameter and token, plus attention over what each token sees: 4·d per key, per layer).

    ``statement_flops`` is the same for every statement alone (``forward_flops``); the ratio is what
    prefix sharing saves.
    """
    if config.batching == "prefix-tree":
        depths = [d for pack in prefix_packs(ids, config.pack_tokens) for d in pack.depths()]
    else:
        depths = [d for seq in ids for d in range(len(seq))]
    params = block_matmul_params(lm)
    attention = 4.0 * lm.info.hidden_size * sum(d + 1 for d in depths) * lm.info.n_layers
    return {"tokens": float(len(depths)), "flops": 2.0 * params * len(depths) + attention,
            "statement_tokens": float(sum(map(len, ids))), "statement_flops": forward_flops(lm, [len(s) for s in ids])}
