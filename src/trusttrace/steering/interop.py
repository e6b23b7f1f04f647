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
import pickle
import re
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import OptionError, VectorError, environment_failure
from ..core.files import write_with
from ..core.names import VECTOR_FORMATS
from ..models.blocks import BLOCK_PATHS
from .vector import SteeringVector, checked_directions

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {"lm-eval": ".pt", "repeng": ".gguf", "gguf": ".gguf", "numpy": ".npz"}
GGUF_ARCH = "controlvector"
IMPORTABLE = ("A vector file to import is a GGUF control vector (.gguf: repeng, llama.cpp), an lm-eval steer file "
              "(.pt: a dict of hookpoint → {steering_vector, …}) or trusttrace's .npz (layers, directions); "
              "`trusttrace vectors export` writes each.")

# What the parsers of foreign formats raise on bytes that are not theirs (random, truncated, another
# format). They document none of it, so the list is what they were seen to raise on fuzzed files
# (tests/user_errors/test_fuzz_vectors.py); each becomes a VectorError that names the file.
_PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError, IndexError, KeyError, TypeError, OverflowError, EOFError, struct.error, zipfile.BadZipFile,
    pickle.UnpicklingError, RuntimeError, OSError,
)


def hookpoint(architecture: str, layer: int) -> str:
    """The name of block ``layer`` under ``model.base_model`` (lm-eval's hookpoints), e.g. ``layers.14``."""
    if architecture not in BLOCK_PATHS:
        raise OptionError(f"architecture {architecture!r}: trusttrace does not know where its blocks sit; known: "
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
    VECTOR_FORMATS.check(fmt)
    chosen = sorted(vector.layers) if layers is None else [int(layer) for layer in layers]
    for layer in chosen:
        vector.at(layer)  # a clear error for a layer the vector lacks
    path = Path(path)
    arch = architecture or vector.meta.get("architecture")
    if fmt in ("lm-eval", "repeng", "gguf") and not arch:
        raise OptionError(f"{fmt}: the vector records no architecture (vectors built before trusttrace 0.1.0 do "
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
                raise OptionError("gguf: only block 0 was chosen, which llama.cpp cannot steer; pick other layers.")
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
    """A GGUF control vector (repeng, llama.cpp), an lm-eval steer file (``.pt``) or an ``.npz`` as a vector.

    Any file gives a vector or a ``VectorError`` naming it: the formats' parsers meet random, truncated
    and foreign bytes here, and their own errors say nothing of which file or what was expected. Nothing
    read runs code: ``.pt`` goes through ``torch.load(weights_only=True)``, ``.npz`` refuses pickled arrays.
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise VectorError(f"{path}: {what}. {IMPORTABLE}")
    suffix = path.suffix.lower()
    readers = {".gguf": _read_gguf, ".pt": _read_lm_eval, ".pth": _read_lm_eval, ".npz": _read_npz}
    if suffix not in readers:
        raise VectorError(f"{path}: cannot tell its format from {suffix or 'no suffix'!r}; trusttrace reads .gguf "
                          "(repeng, llama.cpp), .pt (lm-eval's steered model) and .npz.")
    try:
        layers, meta = readers[suffix](path)
    except VectorError:
        raise
    except _PARSE_ERRORS as err:
        refused = environment_failure(err, str(path)) if isinstance(err, OSError) else None
        if refused is not None:  # no permission, an I/O error: the machine, not the file
            raise refused from err
        raise VectorError(f"{path} is not a readable {suffix} steering vector ({_first_line(err)}); it may "
                          f"be truncated or of another kind. {IMPORTABLE}") from err
    if not layers:
        raise VectorError(f"{path} holds no steering directions. {IMPORTABLE}")
    return SteeringVector(checked_directions(path, layers), {**meta, "imported_from": str(path.resolve())})


def _first_line(err: Exception, most: int = 160) -> str:
    """A parser's error in a line: torch's unpickling errors run to a page of advice meant for its own API."""
    text = " ".join(str(err).split("\n")[0].split())
    return f"{type(err).__name__}: {text[:most]}{'…' if len(text) > most else ''}"


def _read_gguf(path: Path) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    try:
        reader = _gguf().GGUFReader(str(path))
    except _PARSE_ERRORS as err:  # gguf's errors for an empty, truncated or foreign file
        refused = environment_failure(err, str(path)) if isinstance(err, OSError) else None
        if refused is not None:
            raise refused from err
        raise VectorError(f"{path} is not a readable GGUF file ({_first_line(err)}). {IMPORTABLE}") from err
    fields = {name: _field_value(field) for name, field in reader.fields.items()}
    if fields.get("general.architecture") != GGUF_ARCH:
        raise VectorError(f"{path} is a GGUF of architecture {fields.get('general.architecture')!r}, not a control "
                          f"vector ({GGUF_ARCH!r}). {IMPORTABLE}")
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
        raise VectorError(f"{path} is not an lm-eval steer file (a dict of hookpoint → settings); it holds a "
                          f"{type(config).__name__}. {IMPORTABLE}")
    layers, hooks = {}, []
    for name, info in config.items():
        match = re.search(r"(\d+)$", str(name))
        if match is None or not isinstance(info, dict) or not isinstance(info.get("steering_vector"), torch.Tensor):
            raise VectorError(f"{path}: entry {str(name)[:80]!r} is not a block hookpoint with a steering_vector "
                              f"tensor. {IMPORTABLE}")
        if info.get("action", "add") != "add":
            raise VectorError(f"{path}: hookpoint {name!r} uses action {info.get('action')!r}; only 'add' is a "
                              "steering vector trusttrace can apply.")
        coefficient = info.get("steering_coefficient", 1.0)
        if isinstance(coefficient, torch.Tensor) and coefficient.numel() == 1:
            coefficient = coefficient.item()
        if not isinstance(coefficient, (int, float)) or isinstance(coefficient, bool):
            raise VectorError(f"{path}: hookpoint {name!r} has steering_coefficient {coefficient!r}; give a number.")
        vector = info["steering_vector"]
        if not vector.is_floating_point():
            raise VectorError(f"{path}: hookpoint {name!r} holds {str(vector.dtype).removeprefix('torch.')} values, "
                              f"not floats. {IMPORTABLE}")
        layers[int(match.group(1))] = float(coefficient) * vector.float().reshape(-1)
        hooks.append(str(name))
    return layers, {"format": "lm-eval steer file", "hookpoints": ",".join(hooks)}


def _read_npz(path: Path) -> tuple[dict[int, torch.Tensor], dict[str, str]]:
    with np.load(path, allow_pickle=False) as data:
        if not hasattr(data, "files"):  # a bare .npy saved under an .npz name
            raise VectorError(f"{path} is a single numpy array, not an .npz archive. {IMPORTABLE}")
        missing = {"layers", "directions"} - set(data.files)
        if missing:
            raise VectorError(f"{path} lacks {sorted(missing)}; trusttrace's .npz holds layers and directions. "
                              f"{IMPORTABLE}")
        numbers, directions = data["layers"], data["directions"]
        if numbers.ndim != 1 or numbers.dtype.kind not in "iu":
            raise VectorError(f"{path}: layers must be a 1-D array of block numbers; got {numbers.dtype} "
                              f"{numbers.shape}. {IMPORTABLE}")
        if directions.ndim != 2 or len(directions) != len(numbers) or directions.dtype.kind != "f":
            raise VectorError(f"{path}: directions must be a float array [{len(numbers)} layers, hidden size]; got "
                              f"{directions.dtype} {directions.shape}. {IMPORTABLE}")
        if len(set(numbers.tolist())) != len(numbers):
            raise VectorError(f"{path}: layers {numbers.tolist()} repeat a block. {IMPORTABLE}")
        layers = {int(layer): torch.from_numpy(np.array(row, dtype=np.float32))
                  for layer, row in zip(numbers, directions)}
        meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    if not isinstance(meta, dict):
        raise VectorError(f"{path}: meta must be a JSON object; got {type(meta).__name__}. {IMPORTABLE}")
    return layers, {str(k): str(v) for k, v in meta.items()}


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as err:
        raise OptionError("GGUF control vectors need the gguf package: `pip install 'trusttrace[gguf]'`.") from err
    return gguf
