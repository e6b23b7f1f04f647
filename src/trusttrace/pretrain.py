"""Pre-train a small Llama-architecture model from scratch, saving a checkpoint series trusttrace can trace.

Run folder::

    OUT/pretrain_config.json          the settings (a rerun with other settings is refused)
    OUT/corpus.json                   what was trained on (source, sizes, sha256)
    OUT/tokenizer/                    the byte-level BPE tokenizer trained on the corpus
    OUT/data/{train,heldout}.npy      the corpus as packed token ids (uint16/uint32; no pickle)
    OUT/checkpoints/step<N>/          HF checkpoints (safetensors + tokenizer) at the chosen steps
    OUT/checkpoints/last              a link to the last one
    OUT/state/train_state.safetensors weights and optimizer moments at the newest checkpoint (for resuming)
    OUT/loss.csv                      training loss per step; held-out loss at each checkpoint
    OUT/trace/                        a ``trace`` run folder when live tracing is on

Determinism: the model is initialised from the seed; batch ``s`` is a fixed function of (seed, s) (a seeded
permutation of the packed blocks per epoch); the learning rate is a function of the step; there is no
dropout. So a resumed run continues exactly as an uninterrupted one, and two runs with the same seed and
thread count write bit-identical checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._io import atomic_path, record_settings, write_json_atomic, write_with
from .checkpoints import log_spaced_indices

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
    trace: tuple[str, ...] = ()  # dimensions traced live at each checkpoint
    trace_limit: int | None = 600  # statements per dimension
    trace_analyses: tuple[str, ...] = ("probe", "mi")
    data_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "n_layers", "n_heads", "intermediate_size", "seq_len",
                     "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be a positive number.")
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}; "
                             "pick sizes where it is (e.g. 256 and 4).")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision {self.precision!r} is not one of auto, bf16, fp32.")
        checkpoint_steps(self.checkpoints, self.steps)  # validates the spec

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change the checkpoints (a resumed run must match them)."""
        keep = {"out", "trace", "trace_limit", "trace_analyses", "data_dir", "device", "checkpoints"}
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
        raise ValueError(f"--checkpoints {spec!r}: use log:N, every:K, or comma-separated steps "
                         "(e.g. log:16, every:100, 0,10,100).") from None
    bad = [s for s in chosen if not 0 <= s <= steps]
    if bad or not chosen:
        raise ValueError(f"--checkpoints {spec!r}: steps must lie in 0..{steps} (got {bad or 'none'}).")
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
        raise ValueError(f"The corpus has {len(stream)} tokens, fewer than one block of {seq_len}; give more text "
                         "or a smaller --seq-len.")
    return stream[: n * seq_len].reshape(n, seq_len)


def batch_indices(n_blocks: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """The blocks of batch ``step``: a seeded permutation per epoch, read in order (a function of the step)."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n_blocks)
        perm = np.random.default_rng([seed, epoch]).permutation(n_blocks)
        out.extend(perm[offset: offset + batch_size - len(out)].tolist())
    return np.asarray(out)


def lr_at(step: int, lr: float, warmup: int, steps: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` × lr at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------- model, optimizer, state


def make_model(config: PretrainConfig, tokenizer: Any) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    eos, pad = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.n_layers,
                        num_attention_heads=config.n_heads, num_key_value_heads=config.n_heads,
                        intermediate_size=config.intermediate_size, max_position_embeddings=max(config.seq_len, 2048),
                        tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    return LlamaForCausalLM(llama)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    plain = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": plain, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), eps=1e-8,
                             foreach=False)


def save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Weights and AdamW moments as safetensors (no pickle), with the step in the header."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()
               if k != "lm_head.weight"}  # tied to the embeddings
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{i}.{key}"] = torch.as_tensor(value).detach().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step)})


def load_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore what ``save_state`` wrote; return its step."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        step = int(f.metadata()["step"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    missing, unexpected = model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
                                                strict=False)
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise ValueError(f"{path} does not match the model (missing {missing}, unexpected {unexpected}); "
                         "delete the run's state/ folder to start over.")
    sd = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    sd["state"] = state
    optimizer.load_state_dict(sd)
    return step


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: ``auto`` where the hardware runs bf16 fast."""
    from .models import choose_dtype

    if precision == "auto":
        return choose_dtype("auto", device)[0] == torch.bfloat16
    return precision == "bf16"


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
        return {"checkpoints": self.out / "checkpoints", "loss.csv": self.out / "loss.csv",
                "trace": self.out / "trace"}


class PretrainProgress:
    """Callbacks the run reports through; the CLI renders them as a progress bar."""

    def stage(self, text: str) -> None: ...
    def start(self, total: int, done: int) -> None: ...
    def step(self, step: int, loss: float) -> None: ...


def prepare_data(config: PretrainConfig, progress: PretrainProgress) -> tuple[Any, np.ndarray, np.ndarray]:
    """Corpus → tokenizer → packed train/held-out blocks, each built once and reused on a rerun."""
    from transformers import AutoTokenizer

    from .corpus import prepare_corpus

    out = Path(config.out)
    tok_dir, data_dir = out / "tokenizer", out / "data"
    if not (tok_dir.exists() and (data_dir / "heldout.npy").exists()):
        progress.stage("preparing the corpus")
        corpus = prepare_corpus(config.corpus, seed=config.seed)
        write_json_atomic(out / "corpus.json", corpus.to_dict())
        train_docs = corpus.documents("train")
        if not tok_dir.exists():
            progress.stage(f"training the tokenizer ({config.vocab_size} tokens)")
            sample, chars = [], 0
            for doc in train_docs:  # the corpus order is already shuffled by its builder's seed
                sample.append(doc)
                chars += len(doc)
                if chars >= config.tokenizer_chars:
                    break
            train_tokenizer(sample, config.vocab_size, tok_dir)
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        progress.stage("tokenizing the corpus")
        for split, docs in (("train", train_docs), ("heldout", corpus.documents("heldout"))):
            stream = pack(tokenizer, docs)
            with atomic_path(data_dir / f"{split}.npy") as tmp, tmp.open("wb") as fh:
                np.save(fh, stream, allow_pickle=False)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    train = np.load(data_dir / "train.npy", allow_pickle=False)
    heldout = np.load(data_dir / "heldout.npy", allow_pickle=False)
    return tokenizer, blocks_of(train, config.seq_len), blocks_of(heldout, config.seq_len)[: config.heldout_blocks]


def _save_checkpoint(folder: Path, model: torch.nn.Module, tokenizer: Any) -> None:
    if not folder.exists():  # else written before an interruption: training is deterministic, so it is the same
        with atomic_path(folder) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    last = folder.parent / "last"
    if last.is_symlink() or last.exists():
        last.unlink()
    last.symlink_to(folder.name)


LOSS_COLUMNS = ["step", "loss", "lr", "tokens", "seconds"]
CHECKPOINT_COLUMNS = ["step", "tokens", "heldout_loss", "heldout_perplexity", "seconds"]


def _write_tables(out: Path, losses: list[dict[str, Any]], evals: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(losses, columns=LOSS_COLUMNS)
    write_with(out / "loss.csv", lambda tmp: frame.to_csv(tmp, index=False))
    write_with(out / "checkpoints.csv", lambda tmp: pd.DataFrame(evals, columns=CHECKPOINT_COLUMNS)
               .to_csv(tmp, index=False))
    return frame


def _rows_before(path: Path, step: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    frame = pd.read_csv(path)
    return frame[frame.step < step].to_dict("records")


def pretrain(config: PretrainConfig, progress: PretrainProgress | None = None,
             on_checkpoint: Callable[[Path, int], None] | None = None,
             stop_after: int | None = None) -> PretrainResult:
    """Run (or resume) pre-training; save checkpoints at the chosen steps and trace them if asked.

    ``on_checkpoint(folder, step)`` runs after each checkpoint is saved (by default: live tracing when
    ``config.trace`` names dimensions); ``stop_after`` ends this call after that many optimizer steps (an
    interruption, for tests).
    """
    from .models import choose_device

    progress = progress or PretrainProgress()
    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, train, heldout = prepare_data(config, progress)  # reused as built when the folder has them
    record_settings(out / "pretrain_config.json", config.fingerprint(), "a pre-training run")
    device = choose_device(config.device)
    bf16 = use_bf16(config.precision, device)
    model = make_model(config, tokenizer).to(device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    state_path = out / "state" / "train_state.safetensors"
    step = load_state(state_path, model, optimizer) if state_path.exists() else 0
    if step:
        log.info("resuming %s at step %d", out, step)
    losses, evals = _rows_before(out / "loss.csv", step), _rows_before(out / "checkpoints.csv", step)
    saves = set(checkpoint_steps(config.checkpoints, config.steps))
    hook = on_checkpoint or _tracer(config)
    tokens_per_step = config.batch_size * config.seq_len
    model.train()
    progress.start(config.steps, step)
    done_here = 0
    while True:
        if step in saves:
            folder = out / "checkpoints" / f"step{step}"
            _save_checkpoint(folder, model, tokenizer)
            held = heldout_loss(model, heldout, device, bf16)
            evals.append({"step": step, "tokens": step * tokens_per_step, "heldout_loss": held,
                          "heldout_perplexity": math.exp(held), "seconds": round(time.perf_counter() - started, 3)})
            save_state(state_path, model, optimizer, step)
            _write_tables(out, losses, evals)
            log.info("checkpoint step %d: held-out loss %.3f", step, held)
            if hook is not None:
                progress.stage(f"tracing step {step}")
                hook(folder, step)
        if step >= config.steps or (stop_after is not None and done_here >= stop_after):
            break
        loss = _train_step(model, optimizer, train, step, config, device, bf16)
        losses.append({"step": step, "loss": loss, "lr": optimizer.param_groups[0]["lr"], "tokens": (step + 1) * tokens_per_step,
                       "seconds": round(time.perf_counter() - started, 3)})
        progress.step(step, loss)
        step += 1
        done_here += 1
    frame = _write_tables(out, losses, evals)
    return PretrainResult(out, list(iter_checkpoints(out)), frame, time.perf_counter() - started)


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, train: np.ndarray, step: int,
                config: PretrainConfig, device: torch.device, bf16: bool) -> float:
    ids = torch.from_numpy(train[batch_indices(len(train), config.batch_size, step, config.seed)].astype(np.int64))
    ids = ids.to(device)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, config.lr, config.warmup, config.steps, config.min_lr_ratio)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


# ---------------------------------------------------------------- live tracing


def _tracer(config: PretrainConfig) -> Callable[[Path, int], None] | None:
    if not config.trace:
        return None
    out = Path(config.out) / "trace"

    def hook(folder: Path, step: int) -> None:
        trace_checkpoint(folder, out, dimensions=config.trace, limit=config.trace_limit,
                         analyses=config.trace_analyses, data_dir=config.data_dir, seed=config.seed)

    return hook


def trace_checkpoint(checkpoint: str | Path, run_dir: str | Path, dimensions: Sequence[str] = ("toxicity",),
                     limit: int | None = 600, analyses: Sequence[str] = ("probe", "mi"),
                     data_dir: str | None = None, seed: int = 0, dtype: str = "auto",
                     device: str = "auto") -> pd.DataFrame:
    """Trace one saved checkpoint into ``run_dir`` as ``trusttrace trace`` would; return the run's whole table.

    ``checkpoint`` is a folder named with its step (``step500``, ``checkpoint-500``) inside the folder of
    the run's checkpoints; rows are added to ``run_dir/results.csv`` (one ``trace`` run folder over the
    series, so ``trusttrace phases``/``steer`` read it as usual). Use it from a custom training loop after
    each save; ``TraceCallback`` does so for the Hugging Face ``Trainer``.
    """
    from .runner import TraceConfig, run_trace

    folder = Path(checkpoint)
    config = TraceConfig(model=str(folder.parent), out=str(run_dir), select=folder.name, dimensions=tuple(dimensions),
                         limit=limit, data_dir=data_dir, seed=seed, dtype=dtype, device=device,
                         analyses=tuple(analyses))
    return run_trace(config).results


@cache
def _trace_callback_class() -> type:
    from transformers import TrainerCallback

    class TraceCallback(TrainerCallback):
        """Trace every checkpoint a Hugging Face ``Trainer`` saves (``on_save``); see ``trace_checkpoint``.

        ``Trainer(..., callbacks=[TraceCallback(run_dir, dimensions=[...])])``. The checkpoint folders need
        the tokenizer: give ``processing_class`` to the Trainer, or ``tokenizer`` here.
        """

        def __init__(self, run_dir: str | Path, dimensions: Sequence[str] = ("toxicity",), limit: int | None = 600,
                     analyses: Sequence[str] = ("probe", "mi"), data_dir: str | None = None, tokenizer: Any = None,
                     seed: int = 0) -> None:
            self.run_dir, self.dimensions, self.limit = Path(run_dir), tuple(dimensions), limit
            self.analyses, self.data_dir, self.tokenizer, self.seed = tuple(analyses), data_dir, tokenizer, seed
            self.results: pd.DataFrame | None = None

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
                if self.tokenizer is None:
                    raise ValueError(f"{folder} has no tokenizer; pass processing_class= to the Trainer or "
                                     "tokenizer= to TraceCallback.")
                self.tokenizer.save_pretrained(folder)
            self.results = trace_checkpoint(folder, self.run_dir, self.dimensions, self.limit, self.analyses,
                                            self.data_dir, self.seed)

    return TraceCallback


def __getattr__(name: str) -> Any:
    """``TraceCallback`` is built on first use, so importing this module does not import the Trainer stack."""
    if name == "TraceCallback":
        return _trace_callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def iter_checkpoints(out: str | Path) -> Iterator[Path]:
    """The checkpoint folders of a pre-training run, in step order."""
    root = Path(out) / "checkpoints"
    yield from sorted((p for p in root.glob("step*") if p.is_dir() and not p.is_symlink()),
                      key=lambda p: int(p.name[4:]))
