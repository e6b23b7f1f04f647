"""Pre-training steps (``trusttrace.training.loop.train_step``) on the demo's model size, against the matmul roofline.

Builds the model ``trusttrace.training.pretrain`` builds for the default ``PretrainConfig`` (the demo's ``small`` size),
fed random token blocks of its shape, and times optimizer steps in fp32 and in the auto precision (bf16
autocast where the hardware runs it fast). Model FLOPs per step = 6 × matmul parameters (the blocks and the
tied LM head) × tokens + 3 × causal attention; ``roofline_fraction`` = model FLOP/s over the best matmul FLOP/s
of the step's compute dtype (``_common.matmul_flops_per_s``). Prints one JSON line.

    python benchmarks/pretrain.py --steps 10
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from _common import add_device_dtype, machine, matmul_flops_per_s, sync

from trusttrace.models.devices import choose_device
from trusttrace.training.loop import make_optimizer, train_step, use_bf16
from trusttrace.training.pretrain import PretrainConfig, make_model


class _Vocab:
    """What ``make_model`` reads of a tokenizer (its size and two special ids), without training a BPE."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def convert_tokens_to_ids(self, token: str) -> int:
        return 0 if token.endswith("s>") else 1


def model_flops(model: torch.nn.Module, batch: int, seq_len: int, hidden: int, n_layers: int) -> float:
    """Training FLOPs of one step: 6 per matmul parameter and token (forward 2, backward 4), plus causal
    attention (QKᵀ and AV, 2·2·d·n(n+1)/2 per layer and sequence forward), also times 3."""
    matmul = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed" not in name)
    matmul += model.get_output_embeddings().weight.numel()  # the LM head: tied to the embeddings, still a matmul
    attention = 2 * 2 * hidden * seq_len * (seq_len + 1) / 2 * n_layers * batch
    return 6.0 * matmul * batch * seq_len + 3 * attention


def time_steps(precision: str, config: PretrainConfig, device: torch.device, steps: int) -> dict[str, Any]:
    """Seconds per step (best of ``steps`` after two warm-up steps) and FLOP/s at ``precision``."""
    model = make_model(config, _Vocab(config.vocab_size)).to(device).train()
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    bf16 = use_bf16(precision, device)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 2):
        ids = torch.randint(0, config.vocab_size, (config.batch_size, config.seq_len), generator=gen).to(device)
        sync(device)
        start = time.perf_counter()
        train_step(model, optimizer, {"input_ids": ids, "labels": ids}, lr=config.lr, grad_clip=config.grad_clip,
                   bf16=bf16)
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    flops = model_flops(model, config.batch_size, config.seq_len, config.hidden_size, config.n_layers)
    compute = torch.bfloat16 if bf16 else torch.float32
    m, d, ff = config.batch_size * config.seq_len, config.hidden_size, config.intermediate_size
    roof = matmul_flops_per_s(compute, [(2048, 2048, 2048), (m, d, ff), (m, ff, d), (m, d, config.vocab_size)],
                              device=device)
    best = min(times)
    return {"precision": "bf16" if bf16 else "fp32", "seconds_per_step": round(best, 4),
            "seconds_per_step_median": round(sorted(times)[len(times) // 2], 4),
            "tokens_per_s": round(m / best, 1), "model_gflops_per_s": round(flops / best / 1e9, 1),
            "matmul_gflops_per_s": round(roof / 1e9, 1), "roofline_fraction": round(flops / best / roof, 3)}


def main() -> None:
    parser = add_device_dtype(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per precision (the best counts)")
    args = parser.parse_args()
    config = PretrainConfig(out="unused")
    device = choose_device(args.device)
    precisions = ["fp32", "auto"] if args.dtype == "auto" else [{"float32": "fp32"}.get(args.dtype, "bf16")]
    runs = [time_steps(p, config, device, args.steps) for p in precisions]
    print(json.dumps({"benchmark": "pretrain", "hidden_size": config.hidden_size, "n_layers": config.n_layers,
                      "intermediate_size": config.intermediate_size, "vocab_size": config.vocab_size,
                      "batch_size": config.batch_size, "seq_len": config.seq_len, "runs": runs,
                      **machine(device, args.dtype)}))


if __name__ == "__main__":
    main()
