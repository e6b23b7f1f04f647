"""Steering vectors in other tools' formats, and back.

A trusttrace vector holds, per decoder block ``l``, a direction added to that block's output. The same
convention holds in each format written here, so a vector means the same thing wherever it goes:

- ``lm-eval``: the steer file of lm-evaluation-harness's ``steered`` model (``lm_eval --model steered
  --model_args pretrained=…,steer_path=FILE.pt``): a ``torch.save``d dict ``{hookpoint: {"steering_vector",
  "steering_coefficient", "action": "add", "bias": None, "head_index": None}}``, where the hookpoint is the
  block's name under ``model.base_model`` (``layers.14`` for Llama, ``h.14`` for GPT-2). lm-eval adds the
  vector at every position: trusttrace's ``positions="all"``.
- ``repeng`` / ``gguf``: the control-vector GGUF that repeng's ``ControlVector.export_gguf`` writes and
  ``llama.cpp --control-vector`` reads: architecture ``controlvector``, ``controlvector.model_hint`` (the
  model type), ``controlvector.layer_count``, and a float32 tensor ``direction.{l}`` per block. llama.cpp
  has no direction for block 0 and refuses ``direction.0``: ``gguf`` leaves it out (with a warning);
  ``repeng`` keeps it.
- ``numpy``: an ``.npz`` with ``layers`` ``[k]`` (int64), ``directions`` ``[k, d]`` (float32) and ``meta`` (a
  JSON string): loadable with ``np.load(path)`` (no pickle).

``import_vector`` reads a GGUF control vector, an lm-eval steer file (through ``torch.load(weights_only=
True)``, which runs no pickled code) or an ``.npz`` back into a ``SteeringVector`` whose metadata says where
it came from.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import write_with
from .models import BLOCK_PATHS
from .steering import SteeringVector

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {"lm-eval": ".pt", "repeng": ".gguf", "gguf": ".gguf", "numpy": ".npz"}
GGUF_ARCH = "controlvector"


def hookpoint(architecture: str, layer: int) -> str:
    """The name of block ``layer`` under ``model.base_model`` (lm-eval's hookpoints), e.g. ``layers.14``."""
    if architecture not in BLOCK_PATHS:
        raise ValueError(f"architecture {architecture!r}: trusttrace does not know where its blocks sit; known: "
                         f"{', '.join(sorted(BLOCK_PATHS))}. Pass the model type of the vector's model.")
    # every path in the table starts with the base model's attribute (model., transformer., gpt_neox.)
    return f"{BLOCK_PATHS[architecture].split('.', 1)[1]}.{layer}"


def export_vector(vector: SteeringVector, path: str | Path, fmt: str, *, layers: Sequence[int] | None = None,
                  coefficient: float = 1.0, architecture: str | None = None) -> Path:
    """Write ``vector`` (its ``layers``, default all) to ``path`` in format ``fmt``; return the path.

    ``coefficient`` is lm-eval's ``steering_coefficient`` (repeng and llama.cpp take theirs at run time:
    ``--control-vector-scaled FILE SCALE``). ``architecture`` (the model type, e.g. ``llama``) names the
    hookpoints and the GGUF's model hint; default the vector's own ``architecture`` metadata.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}.")
    chosen = sorted(vector.layers) if layers is None else [int(layer) for layer in layers]
    for layer in chosen:
        vector.at(layer)  # a clear error for a layer the vector lacks
    path = Path(path)
    arch = architecture or vector.meta.get("architecture")
    if fmt in ("lm-eval", "repeng", "gguf") and not arch:
        raise ValueError(f"{fmt}: the vector records no architecture (vectors built before trusttrace 0.1.0 do "
                         "not); pass it (CLI: --architecture llama).")
    if fmt == "lm-eval":
        assert arch is not None
        _write_lm_eval(vector, path, chosen, coefficient, arch)
    elif fmt == "numpy":
        _write_npz(vector, path, chosen)
    else:
        if fmt == "gguf" and 0 in chosen:
            log.warning("llama.cpp has no control vector for block 0; direction.0 is left out of %s.", path)
            chosen = [layer for layer in chosen if layer != 0]
            if not chosen:
                raise ValueError("gguf: only block 0 was chosen, which llama.cpp cannot steer; pick other layers.")
        assert arch is not None
        _write_gguf(vector, path, chosen, arch)
    return path


def _write_lm_eval(vector: SteeringVector, path: Path, layers: list[int], coefficient: float, arch: str) -> None:
    config = {hookpoint(arch, layer): {"steering_vector": vector.at(layer).float().clone(),
                                       "steering_coefficient": float(coefficient), "action": "add",
                                       "bias": None, "head_index": None} for layer in layers}
    write_with(path, lambda tmp: torch.save(config, tmp))


def _write_npz(vector: SteeringVector, path: Path, layers: list[int]) -> None:
    directions = torch.stack([vector.at(layer).float() for layer in layers]).numpy()
    meta = json.dumps(vector.meta, sort_keys=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # an open file: np.savez would append .npz to a temporary name
            np.savez(f, layers=np.asarray(layers, dtype=np.int64), directions=directions, meta=np.asarray(meta))

    write_with(path, write)


def _write_gguf(vector: SteeringVector, path: Path, layers: list[int], arch: str) -> None:
    gguf = _gguf()

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", arch)
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(layers))
        for layer in layers:
            writer.add_tensor(f"direction.{layer}", vector.at(layer).float().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    write_with(path, write)


def import_vector(path: str | Path) -> SteeringVector:
    """A GGUF control vector (repeng, llama.cpp), an lm-eval steer file (``.pt``) or an ``.npz`` as a vector."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No vector file at {path}.")
    suffix = path.suffix.lower()
    readers = {".gguf": _read_gguf, ".pt": _read_lm_eval, ".pth": _read_lm_eval, ".npz": _read_npz}
    if suffix not in readers:
        raise ValueError(f"{path}: cannot tell its format from {suffix or 'no suffix'!r}; trusttrace reads .gguf "
                         "(repeng, llama.cpp), .pt (lm-eval's steered model) and .npz.")
    layers, meta = readers[suffix](path)
    if not layers:
        raise ValueError(f"{path} holds no steering directions.")
    return SteeringVector(layers, {**meta, "imported_from": str(path.resolve())})


def _read_gguf(path: Path) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    try:
        reader = _gguf().GGUFReader(str(path))
    except ValueError as err:  # gguf's error for an empty, truncated or foreign file
        raise ValueError(f"{path} is not a readable GGUF file ({err}).") from err
    fields = {name: _field_value(field) for name, field in reader.fields.items()}
    if fields.get("general.architecture") != GGUF_ARCH:
        raise ValueError(f"{path} is a GGUF of architecture {fields.get('general.architecture')!r}, not a control "
                         f"vector ({GGUF_ARCH!r}).")
    layers = {}
    for tensor in reader.tensors:
        match = re.fullmatch(r"direction\.(\d+)", tensor.name)
        if match is not None:
            layers[int(match.group(1))] = torch.from_numpy(np.array(tensor.data, dtype=np.float32).reshape(-1))
    hint = fields.get(f"{GGUF_ARCH}.model_hint")
    meta = {"format": "gguf control vector"}
    if isinstance(hint, str):
        meta["architecture"] = hint
    return layers, meta


def _field_value(field: Any) -> Any:
    """A scalar or string GGUF metadata value (None for arrays)."""
    if len(field.types) != 1:
        return None
    part = field.parts[field.data[0]]
    if field.types[0].name == "STRING":
        return bytes(part).decode("utf-8")
    return part.tolist()[0] if len(part) == 1 else None


def _read_lm_eval(path: Path) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    config = torch.load(path, map_location="cpu", weights_only=True)  # a restricted unpickler: no code runs
    if not isinstance(config, dict):  # a user's file of the wrong kind: a usage error, not a TypeError
        raise ValueError(f"{path} is not an lm-eval steer file (a dict of hookpoint → settings).")  # noqa: TRY004
    layers, hooks = {}, []
    for name, info in config.items():
        match = re.search(r"(\d+)$", str(name))
        if match is None or not isinstance(info, dict) or "steering_vector" not in info:
            raise ValueError(f"{path}: entry {name!r} is not a block hookpoint with a steering_vector.")
        if info.get("action", "add") != "add":
            raise ValueError(f"{path}: hookpoint {name!r} uses action {info.get('action')!r}; only 'add' is a "
                             "steering vector trusttrace can apply.")
        coefficient = float(info.get("steering_coefficient", 1.0))
        layers[int(match.group(1))] = coefficient * info["steering_vector"].float().reshape(-1)
        hooks.append(str(name))
    return layers, {"format": "lm-eval steer file", "hookpoints": ",".join(hooks)}


def _read_npz(path: Path) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    with np.load(path, allow_pickle=False) as data:
        missing = {"layers", "directions"} - set(data.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}; trusttrace's .npz holds layers and directions.")
        layers = {int(layer): torch.from_numpy(np.array(row, dtype=np.float32))
                  for layer, row in zip(data["layers"], data["directions"])}
        meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    return layers, {str(k): str(v) for k, v in meta.items()}


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as err:
        raise ValueError("GGUF control vectors need the gguf package: `pip install 'trusttrace[gguf]'`.") from err
    return gguf
