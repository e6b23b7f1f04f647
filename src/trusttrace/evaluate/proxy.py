"""Proxy-tuning (the paper's App. G): a checkpoint's next-token logits shifted by a tuned model's offset.

    logits = logits(ckpt) + β · (logits(tuned) − logits(base))

The paper shifts Amber checkpoints by AmberChat − ckpt_359. ``ProxyTuned`` is an ``nn.Module`` with the
call surface the evaluation code uses on ``lm.model`` (a forward with ``input_ids``/``attention_mask``/
``position_ids``/``logits_to_keep``/``past_key_values``/``use_cache`` returning ``.logits`` and
``.past_key_values``, a greedy ``generate``, and a ``config``), so likelihood, scoring and generation run on
``proxy_tuned(...)`` unchanged. Each of the three models keeps its own KV cache (``ProxyCache``); no
prefix is ever run twice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..core.errors import ModelError, OptionError
from ..data.batching import positions_of
from ..models.loading import LoadedModel, context_length, vocab_sha256
from .kvcache import cache_keyword, cache_of

if TYPE_CHECKING:
    from ..models.loading import CausalLM


@dataclass
class ProxyCache:
    """The three models' own KV caches, moved together (the evaluation code copies and repeats caches)."""

    ckpt: Any
    tuned: Any
    base: Any

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every row ``repeats`` times in all three caches (a shared prefix fanned out to a batch)."""
        for cache in (self.ckpt, self.tuned, self.base):
            cache.batch_repeat_interleave(repeats)

    def get_seq_length(self) -> int:
        return int(self.ckpt.get_seq_length())


@dataclass(frozen=True)
class ProxyOutput:
    """What a forward pass gives: the shifted logits (float32) and, with ``use_cache``, the three caches."""

    logits: torch.Tensor  # [batch, kept positions, vocab]
    past_key_values: ProxyCache | None = None

    @property
    def cache(self) -> ProxyCache | None:
        """The caches under the name newer transformers give them."""
        return self.past_key_values


def _label(lm: LoadedModel) -> str:
    return lm.info.ref + (f"@{lm.info.revision}" if lm.info.revision else "")


def check_same_vocab(named: Sequence[tuple[str, Any]]) -> None:
    """Refuse tokenizers (``(name, tokenizer)`` pairs) whose vocabularies differ: the offset adds logits id by
    id, so one id must mean one token in all three models."""
    prints = {name: vocab_sha256(tok) for name, tok in named}
    if len(set(prints.values())) > 1:
        sizes = ", ".join(f"{name} ({len(tok.get_vocab())} tokens, sha256 {prints[name][:12]})" for name, tok in named)
        raise ModelError(f"Proxy-tuning needs one vocabulary in all three models, but theirs differ: {sizes}. Give a "
                         "checkpoint, a tuned and a base model of the same family (e.g. LLM360/Amber@ckpt_179, "
                         "LLM360/AmberChat, LLM360/Amber@ckpt_359).")


def _check_beta(beta: float) -> float:
    if not math.isfinite(beta):
        raise OptionError(f"--beta {beta}: the offset's strength must be a finite number, e.g. --beta 1 (the paper) "
                          "or --beta 0.5.")
    return float(beta)


def _width(model: nn.Module) -> int:
    """How many logits ``model`` gives per position (its output embedding's rows)."""
    head = cast("CausalLM", model).get_output_embeddings()
    if head is None:
        raise ModelError(f"{type(model).__name__} has no LM head; proxy-tuning needs three causal LMs.")
    return int(head.weight.shape[0])


class ProxyTuned(nn.Module):
    """``ckpt``'s logits plus ``beta`` × (``tuned`` − ``base``), with the HF causal-LM call surface trusttrace uses.

    The three models are registered submodules, so ``.to``/``.eval``/``parameters()`` reach all of them. The
    logits are combined in float32 (the evaluation code converts to float32 anyway), so β = 0 gives the
    checkpoint's logits exactly. Models whose heads are padded to different widths are cut to the narrowest:
    rows past the tokenizer's vocabulary are never real tokens.
    """

    def __init__(self, ckpt: nn.Module, tuned: nn.Module, base: nn.Module, beta: float = 1.0) -> None:
        super().__init__()
        self.ckpt, self.tuned, self.base = ckpt, tuned, base
        self.beta = _check_beta(beta)
        self.width = min(_width(m) for m in (ckpt, tuned, base))
        # check_fits and generation read the context from `config`: the shortest of the three bounds them all
        configs = [cast("CausalLM", m).config for m in (ckpt, tuned, base)]
        self.config = min(configs, key=lambda c: context_length(c) or math.inf)
        self.generation_config = cast("CausalLM", ckpt).generation_config
        self._cache_args = tuple(cache_keyword(m) for m in (ckpt, tuned, base))

    @property
    def base_model(self) -> nn.Module:
        """The checkpoint's body (HF's name for a model without its head): the offset acts on logits only, so
        the hidden states of a proxy-tuned model are the checkpoint's."""
        body = cast("CausalLM", self.ckpt).base_model
        assert isinstance(body, nn.Module)
        return body

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: ProxyCache | None = None,
                use_cache: bool | None = None, logits_to_keep: int = 0, cache: ProxyCache | None = None,
                **kwargs: Any) -> ProxyOutput:
        """The three forward passes on the same inputs, each with its own cache, and the shifted logits.

        The cache comes back as ``past_key_values`` (what the evaluation code passes) or ``cache`` (newer
        transformers' name); each model is handed its part under the name its own forward takes.
        """
        past_key_values = past_key_values if past_key_values is not None else cache
        if past_key_values is not None and not isinstance(past_key_values, ProxyCache):
            raise ModelError(f"A proxy-tuned model continues from its own ProxyCache, not a "
                             f"{type(past_key_values).__name__}; pass back the past_key_values it returned.")
        caches = (past_key_values.ckpt, past_key_values.tuned, past_key_values.base) if past_key_values else (None,) * 3
        outs = [model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs,
                      **({name: part} if part is not None else {}))
                for model, part, name in zip((self.ckpt, self.tuned, self.base), caches, self._cache_args)]
        ckpt, tuned, base = (out.logits[..., : self.width].float() for out in outs)
        logits = ckpt + self.beta * (tuned - base)
        new_caches = [cache_of(out) for out in outs]
        cache = ProxyCache(*new_caches) if all(c is not None for c in new_caches) else None
        return ProxyOutput(logits, cache)

    def _eos_ids(self, eos_token_id: int | Sequence[int] | None) -> list[int]:
        eos = self.generation_config.eos_token_id if eos_token_id is None else eos_token_id
        if eos is None:
            return []
        return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 20, do_sample: bool = False, pad_token_id: int | None = None,
                 eos_token_id: int | Sequence[int] | None = None) -> torch.Tensor:
        """Greedy continuations of left-padded prompts, the offset applied at every step: ``[batch, width + new]``
        token ids, as HF ``generate`` returns them (a row that has ended with EOS is filled with padding, and
        generation stops when every row has ended).

        The prompt runs once through each model; every later step feeds one token per row to each model
        against its own cache. Positions count real tokens only, so a padded row sees what it would alone.
        """
        if do_sample:
            raise OptionError("A proxy-tuned model generates greedily only (do_sample=False): the paper's "
                              "evaluation is greedy.")
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        eos = torch.tensor(self._eos_ids(eos_token_id), device=input_ids.device, dtype=input_ids.dtype)
        pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
        positions = positions_of(mask)
        tokens = [input_ids]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if max_new_tokens < 1:
            return input_ids
        with torch.inference_mode():
            out = self(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                       logits_to_keep=1)
            for step in range(max_new_tokens):
                nxt = torch.where(done, torch.full_like(done, pad, dtype=input_ids.dtype), out.logits[:, -1].argmax(-1))
                tokens.append(nxt[:, None])
                done |= torch.isin(nxt, eos)
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                positions = positions[:, -1:] + 1
                out = self(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions,
                           past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
        return torch.cat(tokens, dim=1)


def proxy_label(ckpt: str, tuned: str, base: str, beta: float) -> str:
    """How a proxy-tuned model is named in tables and manifests."""
    return f"{ckpt} (proxy-tuned by {tuned} − {base}, β={beta:g})"


def proxy_tuned(ckpt: LoadedModel, tuned: LoadedModel, base: LoadedModel, beta: float = 1.0) -> LoadedModel:
    """``ckpt`` proxy-tuned by ``tuned`` − ``base``: a ``LoadedModel`` the evaluation suite runs unchanged.

    Its tokenizer, blocks and info are the checkpoint's (the offset acts on logits only; ``info.revision`` stays
    the checkpoint's), its ``ref`` says it is proxy-tuned. The three must share a vocabulary and a device. Steering
    one is refused by the suite: a vector on the checkpoint's blocks would miss the tuned and base models.

    Example:
        >>> lm = proxy_tuned(load_model("LLM360/Amber", "ckpt_179"), load_model("LLM360/AmberChat"),
        ...                  load_model("LLM360/Amber", "ckpt_359"))  # doctest: +SKIP
    """
    beta = _check_beta(beta)
    models = {"checkpoint": ckpt, "tuned": tuned, "base": base}
    check_same_vocab([(f"{role} {_label(lm)}", lm.tokenizer) for role, lm in models.items()])
    devices = {f"{role} {_label(lm)}": lm.info.device for role, lm in models.items()}
    if len(set(devices.values())) > 1:
        raise ModelError(f"Proxy-tuning runs the three models side by side on one device, but they are on "
                         f"{devices}. Load them with the same device (--device).")
    wrapper = ProxyTuned(ckpt.model, tuned.model, base.model, beta)
    info = dataclasses.replace(ckpt.info, ref=proxy_label(ckpt.info.ref, _label(tuned), _label(base), beta))
    # cast: the wrapper has the call surface of an HF causal LM that the evaluation code uses, not its type
    return LoadedModel(model=cast("CausalLM", wrapper), tokenizer=ckpt.tokenizer, blocks=ckpt.blocks, info=info)


def is_proxy_tuned(lm: LoadedModel) -> bool:
    return isinstance(lm.model, ProxyTuned)
