"""What pre-training and fine-tuning share: the optimizer, the schedule, the batch order, one training step,
and the training state as safetensors.

Determinism: batch ``s`` is a fixed function of (seed, s), the learning rate a function of the step, so a
run resumed from its saved state continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..core.errors import RunFolderError
from ..core.files import atomic_path
from ..models.devices import choose_dtype


def batch_indices(n_rows: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """The rows of batch ``step``: a seeded permutation per epoch, read in order (a function of the step)."""
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n_rows)
        perm = np.random.default_rng([seed, epoch]).permutation(n_rows)
        out.extend(perm[offset: offset + batch_size - len(out)].tolist())
    return np.asarray(out)


def lr_at(step: int, lr: float, warmup: int, steps: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` × lr at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    plain = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": plain, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), eps=1e-8,
                             foreach=False)


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: ``auto`` where the hardware runs bf16 fast."""
    if precision == "auto":
        return choose_dtype("auto", device)[0] == torch.bfloat16
    return precision == "bf16"


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], *,
               lr: float, grad_clip: float, bf16: bool) -> float:
    """One optimizer step on ``batch`` (the model's keyword inputs, labels among them); returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Weights and AdamW moments as safetensors (no pickle), with the step in the header."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()
               if k != "lm_head.weight"}  # tied to the embeddings
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{i}.{key}"] = torch.as_tensor(value).detach().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step)})


def state_step(path: Path) -> int:
    """The step a saved state was taken at (its header), without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {})["step"])


def load_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore what ``save_state`` wrote; return its step."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        step = int(f.metadata()["step"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    missing, unexpected = model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
                                                strict=False)
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise RunFolderError(f"{path} does not match the model (missing {missing}, unexpected {unexpected}); "
                         "delete the run's state/ folder to start over.")
    sd = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    sd["state"] = state
    optimizer.load_state_dict(sd)
    return step
