"""Where and in what precision a model runs: ``choose_device`` (CUDA when present) and ``choose_dtype`` (bf16
where the hardware runs it fast, else float32), with the reason for each choice recorded in the manifest."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal

import torch

from ..core.errors import OptionError
from ..core.names import DTYPES

DtypeName = Literal["auto", "bfloat16", "float16", "float32"]


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AVX-512 BF16 or AMX instructions (bf16 matmuls run several times fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def choose_device(device: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (chosen.index or 0) >= count:
            have = "no CUDA device" if count == 0 else f"CUDA devices 0..{count - 1}"
            raise OptionError(f"--device {device}: this machine has {have}. Use --device auto (CUDA when present, "
                              "else the CPU) or --device cpu.")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"--device {device}: MPS (Apple GPU) is not available here. Use --device auto or cpu.")
    return chosen


def choose_dtype(dtype: DtypeName | str, device: torch.device) -> tuple[torch.dtype, str]:
    """Resolve ``dtype`` to a torch dtype and the reason for the choice.

    ``auto`` is bf16 where the hardware runs it fast (CUDA with bf16, or a CPU with AVX-512 BF16/AMX),
    else float32.
    """
    named = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
    if dtype != "auto":
        if dtype not in named:  # bf16, fp16 and fp32 are accepted beside the names --dtype lists
            DTYPES.refuse(dtype)
        return named[dtype], "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: CUDA device supports bf16"
        return torch.float32, "auto: CUDA device without bf16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16, "auto: CPU has AVX-512 BF16/AMX"
    return torch.float32, f"auto: no fast bf16 on {device.type}"
