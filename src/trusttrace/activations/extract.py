"""Last-token activations of every decoder block, many statements per forward pass.

Statements are tokenised once. By default they are packed as prefix trees (``packing``): many statements
share a row, each shared beginning is one set of positions, and a mask lets every token see only its own
statement's earlier tokens, so each statement gets the activations of its own pass while shared prefixes are
computed once. A model is trusted with this only after three short statements agree with their own passes
(``packing_works``, once per architecture); otherwise, for statements past a sliding attention window, and
with ``batching="padded"``, each statement has a row of its own, padded to its bucket's longest, with
position ids that count real tokens only (left and right padding give the same activations). Rows are cut
into buckets under a token budget; each bucket runs through the model body only (no LM head) under
``inference_mode``, and a hook on every block keeps just each statement's last token.

Statement length: a statement longer than the model's context (``models.context_length``) is refused
(``StatementTooLongError``), unless ``max_statement_tokens`` asks to keep each statement's last N tokens (the
probe reads the last token, so the end is what matters). ``check_statements`` does this for every dataset
before a run writes anything; ``tokenize`` does it again for whoever calls the extraction directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..core.alloc import keep_freed_memory
from ..core.errors import OptionError, StatementTooLongError
from ..core.names import BATCHINGS
from ..data.batching import fewest_padded_buckets, pad_batch, pad_id_of, positions_of, untuple
from ..models.loading import LoadConfig, LoadedModel, context_length, peek_model
from .packing import pack_batch, prefix_packs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractConfig:
    """How statements are batched through the model."""

    max_tokens: int = 4096  # padded tokens per forward pass: bounds memory; ~4k keeps CPU matmuls efficient
    max_batch: int = 1024  # statements per forward pass at most (short statements: the token budget binds)
    # What one more forward pass costs, in padded tokens: bucket cuts minimise padded tokens + this × passes
    # (batching.fewest_padded_buckets). Greedy filling padded 5-9 % of the tokens of whole datasets, 24 % of
    # 400 fairness statements (SmolLM2 tokenizer); these cuts: 1-4 % and 11 %.
    pass_tokens: int = 256
    # Both sides give the same activations. With right padding, causal attention already keeps every real
    # token from seeing the pads after it, so no padding mask is passed and attention takes its is_causal
    # fast path; left padding needs the mask (and position ids that skip the pads).
    padding_side: Literal["left", "right"] = "right"
    add_special_tokens: bool = True  # BOS etc. as the tokenizer's defaults (the paper's tokenizer.encode)
    # Statements longer than this many tokens keep their last ones (CLI: --max-tokens); None: a statement
    # longer than the model's context is refused. It changes the numbers, so runs record it.
    max_statement_tokens: int | None = None
    # torch.compile each block's forward (CLI: trace --compile). Opt-in: compiling costs tens of seconds per
    # architecture and run, and pays back only over long sweeps; activations agree with eager ones to float
    # rounding (fused kernels sum in another order), so runs record it.
    compile: bool = False
    # "prefix-tree": statements share rows and their common prefixes are computed once (``packing``); every
    # statement's activations are those of its own forward pass, to float rounding. "padded": one statement
    # per row, padded to its bucket's longest. A model whose attention ignores a custom mask gets "padded"
    # (checked once per architecture, ``packing_works``), and so does a statement past a sliding window.
    batching: Literal["prefix-tree", "padded"] = "prefix-tree"
    pack_tokens: int = 128  # nodes per packed row: more shares more, but attends over more (``packing``)

    def __post_init__(self) -> None:
        if self.max_statement_tokens is not None and self.max_statement_tokens < 1:
            raise OptionError(f"--max-tokens {self.max_statement_tokens}: give a positive number of tokens (each "
                              "longer statement keeps its last N).")
        BATCHINGS.check(self.batching)
        if self.pack_tokens < 1:
            raise OptionError(f"pack_tokens={self.pack_tokens}: give a positive number of tokens per packed row.")


@contextmanager
def record_last_token(blocks: Sequence[nn.Module], sink: Callable[[int, torch.Tensor], None]) -> Iterator[
        dict[str, torch.Tensor]]:
    """Hook every block; on each forward call ``sink(layer, hidden[state['rows'], state['pos']])``.

    The caller sets the index tensors ``state['rows']`` and ``state['pos']`` before each forward pass.
    Hooks are removed on every exit path.
    """
    state: dict[str, torch.Tensor] = {}

    def make_hook(layer: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            rows, pos = state["rows"], state["pos"]
            sink(layer, untuple(output)[rows, pos])  # [batch, d_model]
        return hook

    handles = [block.register_forward_hook(make_hook(i)) for i, block in enumerate(blocks)]
    try:
        yield state
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def compiled_blocks(blocks: Sequence[nn.Module], enabled: bool) -> Iterator[None]:
    """Within the block, each block's ``forward`` is ``torch.compile``d (when ``enabled``).

    Only ``forward`` is compiled, not the module call, so the recording hooks stay eager and outside the graph.
    The blocks share one class, hence one code object: dynamo compiles it once (with dynamic shapes, so
    buckets of other sizes reuse the graph) and every block, and every later checkpoint of the same
    architecture in this process, reuses it. The eager forwards are restored on every exit path.
    """
    if not enabled:
        yield
        return
    patched = []
    try:
        for block in blocks:
            setattr(block, "forward", torch.compile(block.forward, dynamic=True))  # noqa: B010 (an instance attribute)
            patched.append(block)
        yield
    finally:
        for block in patched:
            del block.forward  # the instance attribute; the class's eager forward shows through again


def fit_to_context(ids: list[list[int]], context: int | None, max_statement_tokens: int | None, model: str,
                   dataset: str = "statements") -> tuple[list[list[int]], int]:
    """``ids`` with every statement longer than ``max_statement_tokens`` cut to its last tokens, and how many
    were cut; without ``max_statement_tokens``, a statement longer than ``context`` is refused.

    A model given more positions than it was built for either crashes (GPT-2's position table) or runs on
    silently with positions it never saw; neither is a result, so the user chooses: shorten, or truncate.
    """
    if max_statement_tokens is not None:
        if context is not None and max_statement_tokens > context:
            raise OptionError(f"--max-tokens {max_statement_tokens} is more than {model}'s context of {context} "
                              f"positions; give at most {context}.")
        cut = sum(len(seq) > max_statement_tokens for seq in ids)
        return [seq[-max_statement_tokens:] for seq in ids], cut
    if context is None:
        return ids, 0
    long = [i for i, seq in enumerate(ids) if len(seq) > context]
    if long:
        first, longest = long[0], max(len(ids[i]) for i in long)
        others = f" ({len(long)} statements are too long, the longest {longest} tokens)" if len(long) > 1 else ""
        raise StatementTooLongError(
            f"Dataset {dataset!r}, row {first} (0-based): the statement is {len(ids[first])} tokens, more than "
            f"{model}'s context of {context} positions{others}. Shorten or drop it, or pass --max-tokens N (API: "
            f"max_statement_tokens=N; N ≤ {context}) to keep each statement's last N tokens.")
    return ids, 0


def tokenize(lm: LoadedModel, statements: Sequence[str], add_special_tokens: bool = True,
             max_statement_tokens: int | None = None) -> list[list[int]]:
    """Token ids of each statement, unpadded, fitted to the model's context (``fit_to_context``)."""
    ids = lm.tokenizer(list(statements), add_special_tokens=add_special_tokens)["input_ids"]
    empty = [i for i, seq in enumerate(ids) if len(seq) == 0]
    if empty:
        raise StatementTooLongError(
            f"Statements at rows {empty[:5]} tokenise to nothing; remove them or pass add_special_tokens=True so "
            "they carry a BOS token.")
    ids, cut = fit_to_context(ids, context_length(lm.model.config), max_statement_tokens, lm.info.ref)
    if cut:
        log.info("%d statements kept their last %s tokens (--max-tokens)", cut, max_statement_tokens)
    return ids


def check_statements(ref: str, revision: str | None, datasets: Mapping[str, Sequence[str]],
                     config: ExtractConfig = ExtractConfig(), load: LoadConfig | None = None) -> dict[str, int]:
    """Refuse statements longer than ``ref``'s context before a run begins (only the tokenizer and config are
    read); return how many statements of each dataset ``max_statement_tokens`` cuts, with a warning.

    A hub model whose small files cannot be had now (offline) is not checked here; ``tokenize`` still
    refuses at extraction.
    """
    load = load or LoadConfig()
    try:
        peek = peek_model(ref, revision, trust_remote_code=load.trust_remote_code, cache_dir=load.cache_dir)
    except ConnectionError as err:
        log.info("statement lengths are checked at extraction: %s's tokenizer is not at hand (%s)", ref, err)
        return {}
    context = peek.context
    cut: dict[str, int] = {}
    for name, statements in datasets.items():
        ids = peek.tokenizer(list(statements), add_special_tokens=config.add_special_tokens)["input_ids"]
        _, cut[name] = fit_to_context(ids, context, config.max_statement_tokens, ref, name)
    if any(cut.values()):
        counts = ", ".join(f"{n} of {len(datasets[name])} in {name!r}" for name, n in cut.items() if n)
        log.warning("--max-tokens %d: statements truncated to their last %d tokens: %s.",
                    config.max_statement_tokens, config.max_statement_tokens, counts)
    return cut


# a forward pass: its inputs; for each statement read from it, the row, the index of its last token, its index
Pass = tuple[dict[str, torch.Tensor | None], list[int], list[int], list[int]]


def padded_passes(ids: Sequence[Sequence[int]], pad_id: int, config: ExtractConfig) -> Iterator[Pass]:
    """One statement per row, buckets of similar length (``fewest_padded_buckets``)."""
    for bucket in fewest_padded_buckets([len(s) for s in ids], config.max_tokens, config.max_batch,
                                        config.pass_tokens):
        input_ids, mask = pad_batch([ids[i] for i in bucket], pad_id, config.padding_side)
        lengths = mask.sum(-1).tolist()
        last = [input_ids.shape[1] - 1] * len(bucket) if config.padding_side == "left" else [n - 1 for n in lengths]
        inputs: dict[str, torch.Tensor | None] = {
            "input_ids": input_ids, "position_ids": positions_of(mask),  # real tokens count 0, 1, 2, …
            "attention_mask": mask if config.padding_side == "left" else None}
        yield inputs, list(range(len(bucket))), last, list(bucket)


def packed_passes(ids: Sequence[Sequence[int]], pad_id: int, dtype: torch.dtype, config: ExtractConfig
                  ) -> Iterator[Pass]:
    """Prefix-tree rows (``packing.prefix_packs``), in buckets of rows of similar length."""
    packs = prefix_packs(ids, config.pack_tokens)
    for bucket in fewest_padded_buckets([len(p) for p in packs], config.max_tokens, config.max_batch,
                                        config.pass_tokens):
        rows = [packs[i] for i in bucket]
        input_ids, positions, mask = pack_batch(rows, pad_id, dtype)
        inputs: dict[str, torch.Tensor | None] = {"input_ids": input_ids, "position_ids": positions,
                                                  "attention_mask": mask}
        yield (inputs, [r for r, p in enumerate(rows) for _ in p.members], [e for p in rows for e in p.ends],
               [m for p in rows for m in p.members])


def sliding_window(config: Any) -> int | None:
    """The model's attention window, when it has one (a custom mask would let tokens look past it)."""
    window = getattr(config, "sliding_window", None)
    return int(window) if isinstance(window, int) and getattr(config, "use_sliding_window", True) else None


PACKING_CHECKED: dict[tuple[str, str, str, str], bool] = {}


def packing_works(lm: LoadedModel) -> bool:
    """Whether ``lm`` gives a packed statement the activations of its own pass (checked once per
    architecture, attention implementation, dtype and device in this process, on three short statements).

    A model whose attention ignores a custom 4D mask (remote code, another attention) fails, with a warning,
    and its statements are then batched padded.
    """
    dtype = next(lm.model.parameters()).dtype
    key = (type(lm.model).__name__, str(getattr(lm.model.config, "_attn_implementation", "")), str(dtype),
           lm.info.device)
    if key not in PACKING_CHECKED:
        vocab = int(getattr(lm.model.config, "vocab_size", 0) or 0)
        t = [min(vocab - 1, 5 + 7 * k) for k in range(8)]
        seqs = [[t[0], t[1], t[2], t[3]], [t[0], t[1], t[4]], [t[5], t[6], t[7]]]
        pad_id = pad_id_of(lm.tokenizer)
        alone = _run_passes(lm, padded_passes(seqs, pad_id, ExtractConfig(batching="padded")), len(seqs))
        packed = _run_passes(lm, packed_passes(seqs, pad_id, dtype, ExtractConfig()), len(seqs))
        diff = float((alone.float() - packed.float()).norm() / alone.float().norm().clamp(min=1e-12))
        tolerance = 1e-4 if dtype == torch.float32 else 5e-2
        PACKING_CHECKED[key] = diff < tolerance
        if diff >= tolerance:
            log.warning("%s (%s attention) gives packed statements other activations than their own passes "
                        "(relative difference %.2g): its statements are batched padded.", key[0], key[1], diff)
    return PACKING_CHECKED[key]


def _run_passes(lm: LoadedModel, passes: Iterator[Pass], n: int,
                progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Every block's output at the recorded nodes of ``passes``: ``[n_layers, n, d_model]`` on the CPU."""
    dtype = next(lm.model.parameters()).dtype
    device = torch.device(lm.info.device)
    out = torch.empty((len(lm.blocks), n, lm.info.hidden_size), dtype=dtype)  # [layer, statement, d_model]
    target: dict[str, torch.Tensor] = {}

    def sink(layer: int, rows: torch.Tensor) -> None:
        out[layer, target["idx"]] = rows.to("cpu")

    with torch.inference_mode(), record_last_token(lm.blocks, sink) as state:
        for inputs, rows, pos, statements in passes:
            state["rows"] = torch.tensor(rows, device=device)
            state["pos"] = torch.tensor(pos, device=device)
            target["idx"] = torch.tensor(statements)
            lm.body(**{k: None if v is None else v.to(device) for k, v in inputs.items()}, use_cache=False)
            if progress is not None:
                progress(len(statements))
    return out


def batching_of(lm: LoadedModel, ids: Sequence[Sequence[int]], config: ExtractConfig) -> str:
    """How ``ids`` are batched through ``lm``: the configured way, or "padded" where packing would be wrong."""
    if config.batching == "padded":
        return "padded"
    window = sliding_window(lm.model.config)
    if window is not None and max(map(len, ids), default=0) > window:
        log.info("statements longer than %s's attention window of %d tokens: batched padded", lm.info.ref, window)
        return "padded"
    return "prefix-tree" if packing_works(lm) else "padded"


def extract_last_token(
    lm: LoadedModel,
    statements: Sequence[str],
    config: ExtractConfig = ExtractConfig(),
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Activations of every block at each statement's last real token.

    Returns:
        A CPU tensor ``[n_layers, n_statements, d_model]`` in the model's dtype, rows in input order.
        Layer l is the output of decoder block l (0-based), before the final norm.
    """
    if lm.info.device == "cpu":
        keep_freed_memory()
    ids = tokenize(lm, statements, config.add_special_tokens, config.max_statement_tokens)
    pad_id = pad_id_of(lm.tokenizer)
    dtype = next(lm.model.parameters()).dtype
    with compiled_blocks(lm.blocks, config.compile):
        passes = (packed_passes(ids, pad_id, dtype, config) if batching_of(lm, ids, config) == "prefix-tree"
                  else padded_passes(ids, pad_id, config))
        return _run_passes(lm, passes, len(ids), progress)
