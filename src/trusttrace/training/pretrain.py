"""Pre-train a small Llama-architecture model from scratch, saving a checkpoint series trusttrace can trace.

Run folder (``layout.PretrainLayout``)::

    OUT/pretrain_config.json          the settings (a rerun with other settings is refused)
    OUT/corpus.json                   what was trained on (source, sizes, sha256)
    OUT/tokenizer/                    the byte-level BPE tokenizer trained on the corpus
    OUT/data/{train,heldout}.npy      the corpus as packed token ids (uint16/uint32; no pickle)
    OUT/checkpoints/step<N>/          HF checkpoints (safetensors + tokenizer) at the chosen steps
    OUT/checkpoints/last              a link to the last one
    OUT/state/train_state.safetensors weights and optimizer moments at the newest checkpoint (for resuming)
    OUT/loss.csv                      training loss per step; OUT/checkpoints.csv held-out loss per checkpoint

Each of them (each checkpoint folder as a whole) has a record of its size and sha256 beside it
(``<name>.sha256.json``, see ``integrity``). A rerun uses only what matches its record: damaged data or a
damaged tokenizer is built again; a damaged state, loss table or checkpoint before the state's step makes
training restart from step 0 (with a warning), and a damaged later checkpoint is written again when reached.

Determinism: the model is initialised from the seed; batch ``s`` is a fixed function of (seed, s) (a seeded
permutation of the packed blocks per epoch); the learning rate is a function of the step; there is no
dropout. So a resumed run continues exactly as an uninterrupted one, and two runs with the same seed and
thread count write bit-identical checkpoints.

``run_pretrain`` calls ``on_checkpoint(folder, step)`` after each save; ``trusttrace.trace.live.tracer`` makes the
hook that traces each checkpoint as it is saved (``trusttrace pretrain --trace``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import torch

from ..core.errors import DataFileError, OptionError
from ..core.files import atomic_path, write_json_atomic, write_with
from ..core.names import PRECISIONS
from ..core.progress import Progress
from ..core.runlock import hold
from ..models.checkpoints import log_spaced_indices
from ..models.devices import choose_device
from ..runs.integrity import check, describe, remove, usable
from ..runs.layout import PretrainLayout, record_settings
from ..runs.outputs import check_output, finite_settings, removed_on_usage_error
from .loop import (
    batch_indices,
    load_state,
    lr_at,
    make_optimizer,
    save_state,
    state_step,
    train_step,
    use_bf16,
)

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedModel

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<pad>"


@dataclass(frozen=True)
class PretrainConfig:
    """A pre-training run. Defaults take about five minutes on a 2-core CPU with bf16."""

    out: str
    corpus: str = "builtin"  # builtin | PATH | hf:NAME[:COLUMN]
    vocab_size: int = 8192
    hidden_size: int = 256
    n_layers: int = 6
    n_heads: int = 4
    intermediate_size: int = 688
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 1000
    lr: float = 2e-3
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    checkpoints: str = "log:16"  # log:N | every:K | comma-separated steps
    precision: str = "auto"  # auto (bf16 autocast where the CPU/GPU has it) | bf16 | fp32
    tokenizer_chars: int = 8_000_000  # corpus characters the BPE is trained on
    heldout_blocks: int = 64  # held-out blocks scored at each checkpoint
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "n_layers", "n_heads", "intermediate_size", "seq_len",
                     "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise OptionError(f"{name}={getattr(self, name)}: must be a positive number.")
        if self.hidden_size % self.n_heads:
            raise OptionError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}; "
                             "pick sizes where it is (e.g. 256 and 4).")
        PRECISIONS.check(self.precision)
        checkpoint_steps(self.checkpoints, self.steps)  # validates the spec
        finite_settings(asdict(self), "pretrain", positive=("lr",))  # no NaN in pretrain_config.json

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change the checkpoints (a resumed run must match them)."""
        keep = {"out", "device", "checkpoints"}
        return {k: v for k, v in asdict(self).items() if k not in keep}


def checkpoint_steps(spec: str, steps: int) -> list[int]:
    """The steps to save at: ``log:N`` (log-spaced, with 0 and the last), ``every:K`` (and the last), or a list."""
    kind, _, arg = spec.partition(":")
    try:
        if kind == "log" and arg:
            chosen = [int(i) for i in log_spaced_indices(list(range(steps + 1)), int(arg))]
        elif kind == "every" and arg:
            chosen = list(range(0, steps + 1, int(arg))) + [steps]
        else:
            chosen = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise OptionError(f"--checkpoints {spec!r}: use log:N, every:K, or comma-separated steps "
                         "(e.g. log:16, every:100, 0,10,100).") from None
    bad = [s for s in chosen if not 0 <= s <= steps]
    if bad or not chosen:
        raise OptionError(f"--checkpoints {spec!r}: steps must lie in 0..{steps} (got {bad or 'none'}).")
    return sorted(set(chosen))


# ---------------------------------------------------------------- tokenizer and data


def train_tokenizer(documents: Sequence[str], vocab_size: int, folder: Path) -> Any:
    """A byte-level BPE (GPT-2 style: no BOS, ``<|endoftext|>`` between documents) saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(documents, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=EOS, eos_token=EOS, pad_token=PAD,
                                  unk_token=None, model_max_length=4096)
    with atomic_path(folder) as tmp:
        tok.save_pretrained(tmp)
    return tok


def pack(tokenizer: Any, documents: Sequence[str], batch: int = 2000) -> np.ndarray:
    """All documents as one id stream, each followed by EOS."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.uint32
    parts = []
    for i in range(0, len(documents), batch):
        for ids in tokenizer(list(documents[i:i + batch]), add_special_tokens=False)["input_ids"]:
            parts.append(np.asarray(ids + [eos], dtype=dtype))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def blocks_of(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """[n_blocks, seq_len] views of the stream (the tail shorter than a block is dropped)."""
    n = len(stream) // seq_len
    if n == 0:
        raise DataFileError(f"The corpus has {len(stream)} tokens, fewer than one block of {seq_len}; give more text "
                         "or a smaller --seq-len.")
    return stream[: n * seq_len].reshape(n, seq_len)


# ---------------------------------------------------------------- model, optimizer, state


def make_model(config: PretrainConfig, tokenizer: Any) -> LlamaForCausalLM:
    """A freshly initialised Llama of the configured size (seeded), its embeddings tied to the output head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    eos, pad = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.n_layers,
                        num_attention_heads=config.n_heads, num_key_value_heads=config.n_heads,
                        intermediate_size=config.intermediate_size, max_position_embeddings=max(config.seq_len, 2048),
                        tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    return LlamaForCausalLM(llama)


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, blocks: np.ndarray, device: torch.device, bf16: bool,
                 batch_size: int = 16) -> float:
    """Mean next-token loss over held-out blocks."""
    model.eval()
    total = 0.0
    for i in range(0, len(blocks), batch_size):
        ids = torch.from_numpy(blocks[i:i + batch_size].astype(np.int64)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            total += float(model(input_ids=ids, labels=ids).loss) * len(ids)
    model.train()
    return total / max(len(blocks), 1)


# ---------------------------------------------------------------- the run


@dataclass
class PretrainResult:
    """What a run produced."""

    out: Path
    checkpoints: list[Path]
    loss: pd.DataFrame = field(repr=False)
    seconds: float = 0.0

    @property
    def outputs(self) -> dict[str, Path]:
        layout = PretrainLayout(self.out)
        return {"checkpoints": layout.checkpoints_dir, "loss.csv": layout.loss_csv,
                "checkpoints.csv": layout.checkpoints_csv}


def prepare_data(config: PretrainConfig, progress: Progress) -> tuple[Any, np.ndarray, np.ndarray]:
    """Corpus → tokenizer → packed train/held-out blocks, each built once and reused on a rerun."""
    from transformers import AutoTokenizer

    from .corpus import prepare_corpus

    layout = PretrainLayout(Path(config.out))
    built = (layout.tokenizer, layout.data("train"), layout.data("heldout"), layout.corpus)
    redo = "the tokenizer and data are built again from the corpus."
    verdicts = [usable(path, redo) for path in built]  # each damaged one reported, not only the first
    if not all(verdicts):
        for path in built:
            if not check(path).ok:
                remove(path)
        progress.stage("preparing the corpus")
        corpus = prepare_corpus(config.corpus, seed=config.seed)
        write_json_atomic(layout.corpus, corpus.to_dict())
        train_docs = corpus.documents("train")
        if not layout.tokenizer.exists():
            progress.stage(f"training the tokenizer ({config.vocab_size} tokens)")
            sample, chars = [], 0
            for doc in train_docs:  # the corpus order is already shuffled by its builder's seed
                sample.append(doc)
                chars += len(doc)
                if chars >= config.tokenizer_chars:
                    break
            train_tokenizer(sample, config.vocab_size, layout.tokenizer)
        tokenizer = AutoTokenizer.from_pretrained(layout.tokenizer)
        progress.stage("tokenizing the corpus")
        for split, docs in (("train", train_docs), ("heldout", corpus.documents("heldout"))):
            stream = pack(tokenizer, docs)
            with atomic_path(layout.data(split)) as tmp, tmp.open("wb") as fh:
                np.save(fh, stream, allow_pickle=False)
    tokenizer = AutoTokenizer.from_pretrained(layout.tokenizer)
    train = np.load(layout.data("train"), allow_pickle=False)
    heldout = np.load(layout.data("heldout"), allow_pickle=False)
    return tokenizer, blocks_of(train, config.seq_len), blocks_of(heldout, config.seq_len)[: config.heldout_blocks]


def _save_checkpoint(layout: PretrainLayout, step: int, model: PreTrainedModel, tokenizer: Any) -> Path:
    folder = layout.checkpoint(step)
    # An intact folder was written before an interruption: training is deterministic, so it is the same.
    if not usable(folder, f"checkpoint step{step} is written again."):
        remove(folder)
        with atomic_path(folder) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    if layout.last.is_symlink() or layout.last.exists():
        layout.last.unlink()
    layout.last.symlink_to(folder.name)
    return folder


LOSS_COLUMNS = ["step", "loss", "lr", "tokens", "seconds"]
CHECKPOINT_COLUMNS = ["step", "tokens", "heldout_loss", "heldout_perplexity", "seconds"]


def _write_tables(layout: PretrainLayout, losses: list[dict[str, Any]], evals: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(losses, columns=LOSS_COLUMNS)
    write_with(layout.loss_csv, lambda tmp: frame.to_csv(tmp, index=False))
    write_with(layout.checkpoints_csv, lambda tmp: pd.DataFrame(evals, columns=CHECKPOINT_COLUMNS)
               .to_csv(tmp, index=False))
    return frame


def _resume_step(layout: PretrainLayout, saves: set[int]) -> int:
    """The step the saved state resumes from, when the state and everything the run kept before it (the loss
    tables, the checkpoints up to its step) are intact; else 0, with a warning naming what is not.

    The state holds only the newest step's optimizer moments, so a damaged state, table or earlier
    checkpoint can only be recomputed by training from step 0; training is deterministic, so the run then
    ends exactly where an uninterrupted one would (intact checkpoints are kept as they are).
    """
    if not layout.state.exists():
        return 0
    redo = "training restarts from step 0 (deterministic: it ends where an uninterrupted run would)."
    if not usable(layout.state, redo):
        return 0
    step = state_step(layout.state)
    needed = [layout.loss_csv, layout.checkpoints_csv, *(layout.checkpoint(s) for s in sorted(saves) if s <= step)]
    for path in needed:
        found = check(path)
        if not found.ok:
            log.warning("%s; %s", describe(found), redo)
            return 0
    return step


def _rows_before(path: Path, step: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    frame = pd.read_csv(path)
    rows: list[dict[str, Any]] = frame[frame.step < step].to_dict("records")
    return rows


def run_pretrain(config: PretrainConfig, progress: Progress | None = None,
                 on_checkpoint: Callable[[Path, int], None] | None = None,
                 stop_after: int | None = None) -> PretrainResult:
    """Run (or resume) pre-training; save checkpoints at the chosen steps.

    ``on_checkpoint(folder, step)`` runs after each checkpoint is saved (``live.tracer`` traces it);
    ``stop_after`` ends this call after that many optimizer steps (an interruption, for tests).
    """
    progress = progress or Progress()
    check_output(config.out)  # before the corpus loads or anything is written
    with hold(config.out, "pretrain"):  # one writer at a time
        return _pretrain(config, progress, on_checkpoint, stop_after)


def _pretrain(config: PretrainConfig, progress: Progress, on_checkpoint: Callable[[Path, int], None] | None,
              stop_after: int | None) -> PretrainResult:
    """``run_pretrain`` once its folder is held."""
    started = time.perf_counter()
    layout = PretrainLayout(Path(config.out))
    with removed_on_usage_error(layout.root, lambda: any(layout.checkpoints())):  # e.g. a corpus that is no text
        layout.root.mkdir(parents=True, exist_ok=True)
        tokenizer, train, heldout = prepare_data(config, progress)  # reused as built when the folder has them
        record_settings(layout.settings, config.fingerprint(), "a pre-training run")
    device = choose_device(config.device)
    bf16 = use_bf16(config.precision, device)
    model = make_model(config, tokenizer)
    cast(torch.nn.Module, model).to(device)  # cast: transformers' wrapped .to confuses type checkers
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    saves = set(checkpoint_steps(config.checkpoints, config.steps))
    step = _resume_step(layout, saves)
    if step:
        load_state(layout.state, model, optimizer)
        log.info("resuming %s at step %d", layout.root, step)
    losses, evals = _rows_before(layout.loss_csv, step), _rows_before(layout.checkpoints_csv, step)
    tokens_per_step = config.batch_size * config.seq_len
    model.train()
    progress.start("pretrain", "pre-training", total=config.steps, done=step)
    done_here = 0
    while True:
        if step in saves:
            folder = _save_checkpoint(layout, step, model, tokenizer)
            held = heldout_loss(model, heldout, device, bf16)
            evals.append({"step": step, "tokens": step * tokens_per_step, "heldout_loss": held,
                          "heldout_perplexity": math.exp(held), "seconds": round(time.perf_counter() - started, 3)})
            _write_tables(layout, losses, evals)  # before the state: a resume from it finds their rows
            save_state(layout.state, model, optimizer, step)
            log.info("checkpoint step %d: held-out loss %.3f", step, held)
            if on_checkpoint is not None:
                on_checkpoint(folder, step)
        if step >= config.steps or (stop_after is not None and done_here >= stop_after):
            break
        ids = torch.from_numpy(train[batch_indices(len(train), config.batch_size, step, config.seed)].astype(np.int64))
        ids = ids.to(device)
        lr = lr_at(step, config.lr, config.warmup, config.steps, config.min_lr_ratio)
        loss = train_step(model, optimizer, {"input_ids": ids, "labels": ids}, lr=lr, grad_clip=config.grad_clip,
                          bf16=bf16)
        losses.append({"step": step, "loss": loss, "lr": optimizer.param_groups[0]["lr"],
                       "tokens": (step + 1) * tokens_per_step, "seconds": round(time.perf_counter() - started, 3)})
        progress.update("pretrain", done=step + 1, description=f"pre-training (loss {loss:.3f})")
        step += 1
        done_here += 1
    progress.finish("pretrain")
    frame = _write_tables(layout, losses, evals)
    return PretrainResult(layout.root, list(layout.checkpoints()), frame, time.perf_counter() - started)
