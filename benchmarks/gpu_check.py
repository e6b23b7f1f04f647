"""One prepared GPU check: what a first, short loan of a CUDA GPU must answer, in one command and one JSON line.

    python benchmarks/gpu_check.py                      # the built-in SmolLM2 on CUDA (or the CPU), ≤ 8 min
    python benchmarks/gpu_check.py --device cpu         # the same code paths on the CPU

Parts (each a key of ``parts``; one that cannot run here is named in ``skipped`` with the reason):
- ``load``: the built-in model's load time on the device, first (may build the GGUF copy) and second.
- ``equality``: for float32 and bfloat16 on the device, the packed extraction (``prefix-tree``) against the
  padded one, and both against a float32 padded extraction on the CPU: the largest relative row difference
  ‖a − b‖/‖b‖ over every (layer, statement), against the stated tolerance (``TOLERANCE``). A difference above
  it is listed in ``failed`` and the exit code is 1.
- ``attention``: which attention implementation the model runs, and which scaled-dot-product backends
  (flash, memory-efficient, cuDNN, math) accept the packed rows' 4D mask and the padded rows' causal mask,
  each timed on the same statements: what packing costs or saves against padded rows, per backend.
- ``throughput``: statement tokens per second of ``extract_last_token`` against a Hugging Face batched forward
  (``output_hidden_states``, right-padded batches of 32; ``max_rel_diff_vs_hf`` over every block but the last) and
  nnsight (``benchmarks/peers.py``'s loop; skipped when nnsight is not installed: ``make bench`` installs it), in
  the run's dtype.
- ``memory``: peak GPU memory of the extraction (CUDA only).
- ``generation``: a short steering sweep: greedy continuations of ``--prompts`` prompts unsteered and at two
  strengths of a random direction at the middle block, in new tokens per second.

On a machine without CUDA every part but ``memory`` runs on the CPU (slower: keep ``--limit`` small) and the
exit code is 0 unless an equality fails, so CI keeps the script working. The GPU figures in
``docs/scaling.md`` stay marked unmeasured until this has run on one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from _common import machine, max_rel_diff, sync

from trusttrace.activations.extract import ExtractConfig, extract_last_token, packing_works
from trusttrace.data.batching import pad_batch, pad_id_of
from trusttrace.data.datasets import load_dataset
from trusttrace.evaluate.generation import GenerationConfig, generate
from trusttrace.models.devices import choose_device
from trusttrace.models.loading import LoadedModel, load_model
from trusttrace.steering.vector import SteeringVector, steer

TOLERANCE = {"float32": 1e-3, "bfloat16": 6e-2}  # largest relative row difference allowed
HF_BATCH = 32
DTYPES = ("float32", "bfloat16")


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    sync(device)
    started = time.perf_counter()
    value = fn()
    sync(device)
    return value, time.perf_counter() - started


def part_load(model: str, device: torch.device) -> tuple[dict[str, Any], LoadedModel]:
    _, first = timed(device, lambda: load_model(model, None, "float32", str(device)))
    lm, second = timed(device, lambda: load_model(model, None, "float32", str(device)))
    return {"first_s": round(first, 3), "second_s": round(second, 3)}, lm


def part_equality(model: str, device: torch.device, statements: list[str], lm32: LoadedModel
                  ) -> tuple[dict[str, Any], list[str], dict[str, LoadedModel]]:
    """Packed against padded on the device, both against the CPU's float32 padded extraction."""
    cpu = lm32 if device.type == "cpu" else load_model(model, None, "float32", "cpu")
    reference = extract_last_token(cpu, statements, ExtractConfig(batching="padded"))
    found: dict[str, Any] = {}
    failed: list[str] = []
    models = {"float32": lm32}
    for dtype in DTYPES:
        lm = models.get(dtype) or load_model(model, None, dtype, str(device))
        models[dtype] = lm
        packed = extract_last_token(lm, statements, ExtractConfig())
        padded = extract_last_token(lm, statements, ExtractConfig(batching="padded"))
        diffs = {"packed_vs_padded": max_rel_diff(packed, padded),
                 "packed_vs_cpu_float32": max_rel_diff(packed, reference),
                 "padded_vs_cpu_float32": max_rel_diff(padded, reference)}
        found[dtype] = {**{k: float(f"{v:.3g}") for k, v in diffs.items()}, "tolerance": TOLERANCE[dtype],
                        "dtype_loaded": lm.info.dtype}
        failed += [f"equality {dtype} {k}: {v:.3g} > {TOLERANCE[dtype]}" for k, v in diffs.items()
                   if not v <= TOLERANCE[dtype]]
    return found, failed, models


def sdpa_backends() -> dict[str, Any]:
    """The scaled-dot-product attention backends this torch names (``torch.nn.attention.SDPBackend``)."""
    from torch.nn.attention import SDPBackend

    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    return {k: getattr(SDPBackend, v) for k, v in names.items() if hasattr(SDPBackend, v)}


@contextmanager
def only_backend(backend: Any) -> Iterator[None]:
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel([backend]):
        yield


def part_attention(lm: LoadedModel, device: torch.device, statements: list[str]) -> dict[str, Any]:
    """Which SDPA backends run the packed and the padded extraction, and how long each takes."""
    implementation = str(getattr(lm.model.config, "_attn_implementation", "unknown"))
    # packed rows are used only where they reproduce each statement's own pass (else extraction pads)
    found: dict[str, Any] = {"implementation": implementation, "packing_used": packing_works(lm)}
    for name, backend in sdpa_backends().items():
        row: dict[str, Any] = {}
        for batching in ("prefix-tree", "padded"):
            try:
                config = ExtractConfig(batching=batching)
                with only_backend(backend):
                    extract_last_token(lm, statements[:8], config)  # warm-up
                    _, seconds = timed(device, partial(extract_last_token, lm, statements, config))
                row[batching] = round(seconds, 4)
            except RuntimeError as err:  # "No available kernel": this backend refuses the mask, dtype or device
                row[batching] = f"refused: {str(err).splitlines()[0][:160]}"
        if isinstance(row.get("prefix-tree"), float) and isinstance(row.get("padded"), float):
            row["packed_over_padded"] = round(row["prefix-tree"] / row["padded"], 3)
        found[name] = row
    return found


def hf_last_tokens(lm: LoadedModel, statements: list[str], batch: int) -> torch.Tensor:
    """``[layers, n, d]``: Hugging Face's forward (LM head included) over right-padded batches of ``batch``,
    each statement's last token in every ``hidden_states`` entry after the embeddings. (A plain forward numbers
    positions from 0 in every row, so left padding would shift them; and the last entry is the final norm's
    output, not the last block's.)"""
    tok = lm.tokenizer
    encoded = tok(statements)["input_ids"]
    pad = pad_id_of(tok)
    device = next(lm.model.parameters()).device
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(encoded), batch):
            ids, mask = pad_batch(encoded[start:start + batch], pad, "right")
            out = lm.model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
            last = (mask.sum(1) - 1).to(device)
            rows = torch.arange(ids.shape[0], device=device)
            chunks.append(torch.stack([h[rows, last].float().cpu() for h in out.hidden_states[1:]]))
    return torch.cat(chunks, dim=1)


def part_throughput(lm: LoadedModel, device: torch.device, statements: list[str], model: str, dtype: str
                    ) -> tuple[dict[str, Any], str | None]:
    tokens = sum(len(ids) for ids in lm.tokenizer(statements)["input_ids"])
    extract_last_token(lm, statements[:8])  # warm-ups
    hf_last_tokens(lm, statements[:8], HF_BATCH)
    ours, ours_s = timed(device, lambda: extract_last_token(lm, statements))
    theirs, hf_s = timed(device, lambda: hf_last_tokens(lm, statements, HF_BATCH))
    found: dict[str, Any] = {"statement_tokens": tokens, "dtype": dtype,
                             "trusttrace_tokens_per_s": round(tokens / ours_s, 1),
                             "hf_batched_tokens_per_s": round(tokens / hf_s, 1),
                             "speedup_vs_hf_batched": round(hf_s / ours_s, 2),
                             # every block but the last, whose hidden_states entry HF normalises
                             "max_rel_diff_vs_hf": float(f"{max_rel_diff(ours[:-1], theirs[:-1]):.3g}")}
    if importlib.util.find_spec("nnsight") is None:
        return found, "nnsight is not installed (make bench installs the peers extra)"
    from nnsight.modeling.transformers import TransformersModel
    from peers import nnsight_last_tokens, weights_folder

    placement = {"device_map": str(device)} if device.type == "cuda" else {}
    their_model = TransformersModel(weights_folder(model), task="text-generation", dispatch=True,
                                    dtype=getattr(torch, dtype), **placement)
    nnsight_last_tokens(their_model, statements[:8], HF_BATCH)
    _, nn_s = timed(device, lambda: nnsight_last_tokens(their_model, statements, HF_BATCH))
    found |= {"nnsight_tokens_per_s": round(tokens / nn_s, 1), "speedup_vs_nnsight": round(nn_s / ours_s, 2)}
    return found, None


def part_memory(lm: LoadedModel, device: torch.device, statements: list[str]) -> dict[str, Any]:
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    extract_last_token(lm, statements)
    peak = torch.cuda.max_memory_allocated(device)
    return {"weights_and_state_mb": round(before / 2**20, 1), "peak_mb": round(peak / 2**20, 1),
            "extraction_mb": round((peak - before) / 2**20, 1)}


def part_generation(lm: LoadedModel, device: torch.device, prompts: list[str], new_tokens: int) -> dict[str, Any]:
    """Greedy continuations unsteered and at α −2 and 2 of a random unit direction scaled to the layer's
    typical activation norm, at the middle block."""
    layer = lm.info.n_layers // 2
    norms = extract_last_token(lm, prompts[:8])[layer].norm(dim=-1)
    direction = torch.randn(lm.info.hidden_size, generator=torch.Generator().manual_seed(0))
    vector = SteeringVector({layer: direction / direction.norm() * float(norms.median()) / 4})
    config = GenerationConfig(max_new_tokens=new_tokens)
    generate(lm, prompts[:2], config)  # warm-up
    found: dict[str, Any] = {"layer": layer, "prompts": len(prompts), "max_new_tokens": new_tokens}
    for alpha in (0.0, -2.0, 2.0):
        with steer(lm, vector, layer, alpha):
            out, seconds = timed(device, lambda: generate(lm, prompts, config))
        made = sum(len(c.token_ids) for c in out)
        found[f"alpha_{alpha:g}"] = {"new_tokens": made, "seconds": round(seconds, 3),
                                     "new_tokens_per_s": round(made / seconds, 1) if seconds > 0 else math.nan}
    return found


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Every part that can run here; the report ``main`` prints."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dimension", default="fairness")
    p.add_argument("--limit", type=int, default=None, help="statements (default: 256 on CUDA, 48 on the CPU)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu, cuda, cuda:N")
    p.add_argument("--prompts", type=int, default=None, help="generation prompts (default: 32 on CUDA, 8 on the CPU)")
    p.add_argument("--new-tokens", type=int, default=32)
    args = p.parse_args(argv)
    started = time.perf_counter()
    device = choose_device(args.device)
    cuda = device.type == "cuda"
    limit = args.limit or (256 if cuda else 48)
    statements = list(load_dataset(args.dimension, args.data_dir, limit=limit).statements)
    prompts = list(load_dataset("toxicity", args.data_dir, limit=args.prompts or (32 if cuda else 8)).statements)
    report: dict[str, Any] = {"benchmark": "gpu_check", "model": args.model, "device": str(device),
                              "n_statements": len(statements), "parts": {}, "skipped": {}, "failed": []}
    if not cuda:
        report["skipped"]["cuda"] = ("no CUDA device here (torch.cuda.is_available() is False): every part ran on "
                                     "the CPU; its figures are not GPU figures")
    report["parts"]["load"], lm32 = part_load(args.model, device)
    report["parts"]["equality"], report["failed"], models = part_equality(args.model, device, statements, lm32)
    fast = models["bfloat16"] if cuda else lm32  # the GPU's working dtype; float32 on the CPU
    report["parts"]["attention"] = part_attention(fast, device, statements)
    report["parts"]["throughput"], no_nnsight = part_throughput(fast, device, statements, args.model, fast.info.dtype)
    if no_nnsight:
        report["skipped"]["throughput.nnsight"] = no_nnsight
    if cuda:
        report["parts"]["memory"] = part_memory(fast, device, statements)
    else:
        report["skipped"]["memory"] = "peak GPU memory needs a CUDA device"
    report["parts"]["generation"] = part_generation(fast, device, prompts, args.new_tokens)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"] = machine(device, fast.info.dtype)
    return report


def main(argv: list[str] | None = None) -> int:
    report = run(argv)
    print(json.dumps(report))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
