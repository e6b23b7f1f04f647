"""The decoder blocks of a causal LM: "layer l" everywhere in trusttrace is the output of decoder block l
(0-based), the residual stream before the final norm, as in the paper's code. Known architectures name their
blocks' path; any other is searched for the one ``nn.ModuleList`` as long as its layer count."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core.errors import ModelError

# model_type -> dotted path of the ModuleList of decoder blocks, from the model class's root.
BLOCK_PATHS: dict[str, str] = {
    **{
        arch: "model.layers"
        for arch in (
            "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "gemma2", "gemma3_text",
            "olmo", "olmo2", "olmoe", "phi", "phi3", "granite", "cohere", "stablelm", "smollm3",
        )
    },
    "gpt_neox": "gpt_neox.layers",
    "gpt2": "transformer.h",
    "gpt_neo": "transformer.h",
    "gptj": "transformer.h",
    "falcon": "transformer.h",
    "bloom": "transformer.h",
    "opt": "model.decoder.layers",
}


def n_layers(config: Any) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text, key, None)
        if isinstance(value, int):
            return value
    raise ModelError(f"config of type {type(config).__name__} names no layer count (num_hidden_layers, n_layer or "
                     "num_layers); trusttrace cannot tell its decoder blocks. Check the model's config.json.")


def _get_path(root: nn.Module, dotted: str) -> nn.Module | None:
    obj: Any = root
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def find_blocks(model: nn.Module, blocks: str | None = None) -> tuple[list[nn.Module], str]:
    """Return the decoder blocks of ``model`` in order and the dotted path they were found at.

    Looks up ``blocks`` if given, else the architecture table, else the one ``nn.ModuleList`` whose
    length equals the configured layer count.
    """
    config = model.config
    arch = getattr(config, "model_type", "?")
    count = n_layers(config)
    path = blocks or BLOCK_PATHS.get(arch)
    if path is not None:
        found = _get_path(model, path)
        if isinstance(found, nn.ModuleList):
            return list(found), path
        if blocks is not None:
            raise ModelError(f"--blocks {blocks!r} does not name an nn.ModuleList in this {arch} model; give the "
                             "dotted path of its decoder blocks, e.g. model.layers.")
    candidates = [
        name for name, mod in model.named_modules() if isinstance(mod, nn.ModuleList) and len(mod) == count
    ]
    if len(candidates) == 1:
        found = model.get_submodule(candidates[0])
        if isinstance(found, nn.ModuleList):
            BLOCK_PATHS.setdefault(arch, candidates[0])  # resolve once per architecture
            return list(found), candidates[0]
    lists = [name for name, mod in model.named_modules() if isinstance(mod, nn.ModuleList)]
    raise ModelError(
        f"Cannot tell which modules are the decoder blocks of architecture {arch!r} "
        f"({count} layers; ModuleLists found: {lists or 'none'}). Name them with "
        "--blocks path.to.layers (API: blocks='path.to.layers'), e.g. --blocks model.layers."
    )
