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
