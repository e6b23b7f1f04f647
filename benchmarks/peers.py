"""trusttrace against nnsight on the same statements: the last-token output of every decoder block.

Both read the same weights (for a GGUF model such as the built-in, the de-quantised copy that
``trusttrace.models.gguf_cache`` keeps) in the same dtype (fp32 unless ``--dtype`` says otherwise), back to back in
one process. Prints ONE JSON line. What is timed:

- ``load_trusttrace_s``: ``load_model`` (for a GGUF, a second load: it reads the cached copy; the first, which
  builds the copy when it is missing, runs untimed before and is reported as ``load_trusttrace_first_s``).
- ``load_nnsight_s``: ``nnsight.modeling.transformers.TransformersModel(folder, task="text-generation",
  dispatch=True)`` over the same folder: the weights loaded, ready to trace.
- ``trusttrace_s``: ``extract_last_token(lm, statements)`` with its defaults (statements packed in rows,
  each shared prefix computed once: ``trusttrace.activations.packing``).
- ``nnsight_batched_s``: nnsight 0.8's public API as a user would write it: 32 statements per
  ``model.trace(batch)``, saving ``layer.output[:, -1]`` of every block (nnsight pads on the left, so the last
  position is every statement's last token), under ``torch.no_grad()``; the saved tensors stacked.
- ``nnsight_single_s``: the same, one statement per trace, for the first ``--single`` statements (0: skipped),
  with ``nnsight_single_per_statement_s``.
Each path first runs one untimed warm-up batch. ``speedup_vs_nnsight_batched`` = nnsight_batched_s /
trusttrace_s (the goal is ≥ 2.5); ``flop_ratio`` says how much of it the arithmetic alone explains
(nnsight pads each batch to its longest statement and runs the LM head; see ``work``). ``max_rel_diff`` = the
largest ‖ours − nnsight's‖ / ‖nnsight's‖ over every (layer, statement) row.

    pip install -e '.[peers]'
    python benchmarks/peers.py --dimension fairness --limit 400 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import block_matmul_params, computed_work, machine, max_rel_diff

from trusttrace.activations.extract import ExtractConfig, extract_last_token
from trusttrace.data.datasets import load_dataset
from trusttrace.models.devices import choose_device, choose_dtype
from trusttrace.models.files import resolve_source
from trusttrace.models.gguf_cache import dequantized
from trusttrace.models.loading import load_model

try:
    import nnsight
    from nnsight.modeling.transformers import TransformersModel
except ImportError:
    sys.exit("benchmarks/peers.py compares with nnsight, which is not installed. Install the peers extra: "
             "pip install -e '.[peers]'")

BATCH = 32


def weights_folder(ref: str) -> str:
    """The folder nnsight loads: a GGUF's de-quantised copy (the weights trusttrace reads), else the model."""
    src = resolve_source(ref, None, None, allow_pickle=False)
    if src.gguf_file is None:
        return src.path
    folder = dequantized(Path(src.path) / src.gguf_file).folder
    if folder is None:
        sys.exit(f"{ref} is a GGUF and the GGUF cache is off ($TRUSTTRACE_GGUF_CACHE); nnsight needs the "
                 "de-quantised folder. Unset TRUSTTRACE_GGUF_CACHE or point it at a writable folder.")
    return str(folder)


def nnsight_last_tokens(model: Any, statements: list[str], batch: int) -> torch.Tensor:
    """[n_layers, n, d]: every block's output at the last position, ``batch`` statements per trace."""
    layers = model.model.layers
    chunks = []
    with torch.no_grad():
        for start in range(0, len(statements), batch):
            saved: list[Any] = []
            with model.trace(statements[start:start + batch]):
                for layer in layers:
                    out = layer.output
                    hidden = out[0] if isinstance(out, tuple) else out
                    saved.append(hidden[:, -1].save())
            chunks.append(torch.stack([s.detach().to("cpu") for s in saved]))
    return torch.cat(chunks, dim=1)


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def work(lm: Any, statements: list[str], batch: int) -> dict[str, Any]:
    """Tokens each side computes: ours what ``extract_last_token``'s defaults run (each shared prefix once:
    ``_common.computed_work``); nnsight's batches padded to their longest statement, through the blocks and
    the LM head. ``flop_ratio`` (matmul FLOPs, attention left out) is the speedup equal kernels would give."""
    ids = lm.tokenizer(statements)["input_ids"]
    lengths = [len(s) for s in ids]
    ours = computed_work(lm, ids, ExtractConfig())["tokens"]
    padded = sum(max(lengths[i:i + batch]) * len(lengths[i:i + batch]) for i in range(0, len(lengths), batch))
    blocks = block_matmul_params(lm)
    head = lm.model.get_output_embeddings().weight.numel()
    return {"real_tokens": sum(lengths), "trusttrace_computed_tokens": int(ours), "nnsight_padded_tokens": padded,
            "head_share_of_nnsight_flops": round(head / (blocks + head), 3),
            "flop_ratio": round(padded * (blocks + head) / (ours * blocks), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dimension", default="fairness")
    p.add_argument("--limit", type=int, default=400)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", help="float32 (the default here), bfloat16, float16 or auto")
    p.add_argument("--batch", type=int, default=BATCH, help="statements per nnsight trace")
    p.add_argument("--single", type=int, default=16, help="statements traced one at a time by nnsight (0: none)")
    args = p.parse_args()

    device = choose_device(args.device)
    dtype, reason = choose_dtype(args.dtype, device)
    statements = list(load_dataset(args.dimension, args.data_dir, limit=args.limit).statements)

    _, first_load = timed(load_model, args.model, None, args.dtype, str(device))  # builds a GGUF's copy
    lm, load_ours = timed(load_model, args.model, None, args.dtype, str(device))
    folder = weights_folder(args.model)
    placement = {"device_map": str(device)} if device.type == "cuda" else {}
    theirs_model, load_theirs = timed(
        lambda: TransformersModel(folder, task="text-generation", dispatch=True, dtype=dtype, **placement))

    extract_last_token(lm, statements[:BATCH])  # warm-ups, untimed
    nnsight_last_tokens(theirs_model, statements[:BATCH], args.batch)
    ours, ours_s = timed(extract_last_token, lm, statements)
    theirs, theirs_s = timed(nnsight_last_tokens, theirs_model, statements, args.batch)
    single: dict[str, Any] = {}
    if args.single > 0:
        subset = statements[:args.single]
        one_by_one, single_s = timed(nnsight_last_tokens, theirs_model, subset, 1)
        single = {"nnsight_single_n": len(subset), "nnsight_single_s": round(single_s, 3),
                  "nnsight_single_per_statement_s": round(single_s / len(subset), 4),
                  "max_rel_diff_single": max_rel_diff(ours[:, :len(subset)], one_by_one)}

    print(json.dumps({
        "benchmark": "peers", "model": args.model, "dimension": args.dimension, "n": len(statements),
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "dtype_reason": reason,
        "nnsight": nnsight.__version__, "nnsight_batch": args.batch, "weights_folder": folder,
        "load_trusttrace_first_s": round(first_load, 3), "load_trusttrace_s": round(load_ours, 3),
        "load_nnsight_s": round(load_theirs, 3),
        "trusttrace_s": round(ours_s, 3), "nnsight_batched_s": round(theirs_s, 3),
        "speedup_vs_nnsight_batched": round(theirs_s / ours_s, 2),
        "max_rel_diff": max_rel_diff(ours, theirs), **single, **work(lm, statements, args.batch),
        "machine": machine(device, dtype),
    }))


if __name__ == "__main__":
    main()
