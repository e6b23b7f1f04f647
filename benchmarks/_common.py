"""What several benchmarks share: the command line and the real-model activations they start from."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from trusttrace.data import load_dataset
from trusttrace.extract import extract_last_token
from trusttrace.models import load_model
from trusttrace.probes import _zscore


def parser(doc: str | None, limit: int) -> argparse.ArgumentParser:
    """--model, --dimension, --limit and --data-dir, with this benchmark's first docstring line."""
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dimension", default="fairness")
    p.add_argument("--limit", type=int, default=limit)
    p.add_argument("--data-dir", default=None)
    return p


def paper_split(args: argparse.Namespace) -> tuple[torch.Tensor, np.ndarray, int]:
    """All layers' activations (as stored: bf16 → float), z-scored over all rows, the labels, and the
    released code's train cut (first 80 %)."""
    ds = load_dataset(args.dimension, args.data_dir, limit=args.limit)
    acts = extract_last_token(load_model(args.model), ds.statements).to(torch.bfloat16).float()
    (z,) = _zscore(acts.double())
    return z, ds.labels, int(len(ds) * 0.8)


def machine() -> dict[str, object]:
    """What the figures depend on: the CPU, its bf16/AVX-512 flags, threads, and the dtype `auto` picks."""
    import platform
    import re
    from pathlib import Path

    from trusttrace.models import choose_device, choose_dtype

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split()) if "flags" in info else set()
    device = choose_device("auto")
    return {"cpu": model.group(1) if model else platform.processor(), "threads": torch.get_num_threads(),
            "device": str(device), "dtype": str(choose_dtype("auto", device)[0]).removeprefix("torch."),
            "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})}
