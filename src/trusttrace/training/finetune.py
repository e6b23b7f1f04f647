"""Supervised fine-tuning of a pre-trained checkpoint into a small "chat" model: the steering target.

The paper steers AmberChat (Amber after instruction tuning) with vectors from Amber's pre-training
checkpoints. ``finetune`` makes the same pair for a run of your own: a checkpoint of ``trusttrace pretrain``
(or any causal LM folder), tuned on instruction-style pairs.

Built-in data (never the test halves, which the evaluation suite uses):
- TruthfulQA train questions (``truthfulqa_train.csv``) → their best answer (from ``truthfulqa_mc.csv``;
  failing that, the question's first true answer in the train file);
- statement completions from the dev halves (rows [:n/2]) of the other four files: the first half of a
  statement's words → the rest. Only the benign side is used where a side is harmful: toxigen label 0
  (benign), confaide label 0 (no violation), sst2 label 0 (original); stereoset rows on both sides.

Format: ``"Question: {prompt}\\nAnswer: {response}<eos>"``; the loss is on the response tokens only.
A ``--data`` JSONL file of ``{"prompt": ..., "response": ...}`` rows replaces the built-in pairs.

Output: ``OUT`` is a Hugging Face model folder (safetensors + tokenizer), plus ``finetune.json`` (settings,
data counts, timings) and ``loss.csv``. It is written at the end, atomically; a rerun with the same settings
finds it finished and returns.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from ..core.errors import DataFileError, DataFileNotFoundError, ModelNotFoundError, OptionError
from ..core.files import atomic_path, write_json_atomic
from ..core.progress import Progress
from ..core.runlock import hold
from ..data.batching import collate_prompted
from ..data.datasets import EVAL_FILES, load_dataset, locate_file
from ..models.devices import choose_device
from ..models.hub import fetch_checkpoint
from ..models.ref import ModelRef
from ..runs.layout import FinetuneLayout, read_json, refuse_other_settings, settings_diff
from ..runs.outputs import check_output
from .loop import batch_indices, lr_at, make_optimizer, train_step, use_bf16

log = logging.getLogger(__name__)

TEMPLATE = "Question: {prompt}\nAnswer:"


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run."""

    model: str  # checkpoint folder (e.g. RUN/checkpoints/last) or hub id
    out: str
    revision: str | None = None  # the hub revision of ``model``; None: its default branch
    data: str = "builtin"  # builtin | a JSONL file of {"prompt", "response"} rows
    data_dir: str | None = None  # the published CSVs (else $TRUSTTRACE_DATA_DIR, else download)
    steps: int = 300
    batch_size: int = 16
    lr: float = 5e-4
    warmup: int = 20
    weight_decay: float = 0.0
    max_len: int = 128
    seed: int = 0
    precision: str = "auto"  # auto | bf16 | fp32
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.max_len < 8:
            raise OptionError(f"steps={self.steps}, batch_size={self.batch_size}, max_len={self.max_len}: steps and "
                              "batch size must be positive and max_len at least 8, e.g. --steps 300 --batch-size 16.")
        if not (math.isfinite(self.lr) and self.lr > 0) or not (math.isfinite(self.weight_decay)
                                                                and self.weight_decay >= 0):
            raise OptionError(f"lr={self.lr}, weight_decay={self.weight_decay}: the learning rate must be a positive "
                              "finite number and the weight decay a finite one ≥ 0, e.g. --lr 5e-4.")
        if ModelRef(self.model).kind not in ("hub", "checkpoint"):
            raise ModelNotFoundError(f"--model {self.model!r} is neither a checkpoint folder (one with a config.json, "
                                    "e.g. RUN/checkpoints/last of `trusttrace pretrain`) nor a hub id (ORG/NAME).")
        if self.data != "builtin" and not Path(self.data).is_file():
            raise DataFileNotFoundError(f"--data {self.data!r}: no such file. Give `builtin` or a JSONL file of "
                                        '{"prompt": ..., "response": ...} rows.')


def _dev_half(name: str, data_dir: str | None) -> tuple[list[str], np.ndarray]:
    ds = load_dataset(name, data_dir)
    half = len(ds) // 2
    return list(ds.statements[:half]), ds.labels[:half]


def _truthfulqa_pairs(data_dir: str | None) -> list[tuple[str, str]]:
    train = load_dataset("reliability", data_dir)
    best: dict[str, str] = {}
    try:
        table = pd.read_csv(locate_file(EVAL_FILES["truthfulqa_mc"], data_dir)[0], encoding="utf-8-sig")
        best = dict(zip(table["Question"], table["Best Answer"].astype(str)))
    except FileNotFoundError:
        log.warning("truthfulqa_mc.csv not found: using each train question's first true answer")
    pairs: dict[str, str] = {}
    for statement, label in zip(train.statements, train.labels):
        question, _, answer = statement.partition("\t")
        question, answer = question.removeprefix("Q:").strip(), answer.removeprefix("A:").strip()
        if question and question not in pairs and (question in best or label == 1):
            pairs[question] = best.get(question, answer).strip()
    return list(pairs.items())


def _completion_pairs(statements: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for s in statements:
        words = s.split()
        if len(words) >= 4:
            cut = len(words) // 2
            pairs.append((f"Continue this sentence: {' '.join(words[:cut])}", " ".join(words[cut:])))
    return pairs


# dimension: the label whose rows are used for completions (None: both)
COMPLETION_SIDES: dict[str, int | None] = {"toxicity": 0, "privacy": 0, "fairness": None, "robustness": 0}


def builtin_pairs(data_dir: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """The built-in instruction pairs by source (see the module docstring)."""
    out = {"truthfulqa": _truthfulqa_pairs(data_dir)}
    for name, side in COMPLETION_SIDES.items():
        statements, labels = _dev_half(name, data_dir)
        keep = [s for s, y in zip(statements, labels) if side is None or y == side]
        out[name] = _completion_pairs(keep)
    return out


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """``{"prompt", "response"}`` rows of a JSONL file."""
    pairs = []
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}). Re-save it as UTF-8.") from err
    example = '{"prompt": "What is the capital of France?", "response": "Paris."}'
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            raise DataFileError(f"{path}, line {i} is not JSON ({err}). Write one object per line, e.g. "
                                f"{example}.") from err
        if not isinstance(row, dict) or not {"prompt", "response"} <= row.keys():
            raise DataFileError(f"{path}, line {i}: expected an object with 'prompt' and 'response', e.g. {example}.")
        pairs.append((str(row["prompt"]), str(row["response"])))
    if not pairs:
        raise DataFileError(f"{path} holds no prompt/response rows. Add one JSON object per line, e.g. {example}.")
    return pairs


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_len: int) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per pair: template prompt, then " response" and EOS; truncated to max_len."""
    eos = tokenizer.eos_token_id
    prompts = tokenizer([TEMPLATE.format(prompt=p) for p, _ in pairs], add_special_tokens=True)["input_ids"]
    answers = tokenizer([" " + r for _, r in pairs], add_special_tokens=False)["input_ids"]
    encoded = []
    for p, a in zip(prompts, answers):
        ids = (p + a + ([eos] if eos is not None else []))[:max_len]
        if len(ids) > len(p):  # keep pairs whose answer survives truncation
            encoded.append((ids, len(p)))
    return encoded


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run wrote: the model folder and its record."""

    out: Path
    record: dict[str, Any] = field(repr=False)

    @property
    def outputs(self) -> dict[str, Path]:
        layout = FinetuneLayout(self.out)
        return {"model": self.out, "finetune.json": layout.record, "loss.csv": layout.loss_csv}


def run_finetune(config: FinetuneConfig, progress: Progress | None = None) -> FinetuneResult:
    """Fine-tune ``config.model``; write the model folder ``config.out`` (atomically) and return it."""
    progress = progress or Progress()
    check_output(config.out)  # before the model loads or anything is written
    with hold(config.out, "finetune", beside=True):  # one writer at a time; the folder appears whole
        return _finetune(config, progress)


def _finetune(config: FinetuneConfig, progress: Progress) -> FinetuneResult:
    """``run_finetune`` once its folder is held."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    layout = FinetuneLayout(Path(config.out))
    if layout.is_finished():
        record = read_json(layout.record)
        refuse_other_settings(layout.root, settings_diff(record["config"], asdict(config)), "a fine-tuned model")
        log.info("%s is already fine-tuned; nothing to do", layout.root)
        return FinetuneResult(layout.root, record)
    started = time.perf_counter()
    # the data first: a bad file is refused before a download or a model load
    sources = {"file": read_pairs(config.data)} if config.data != "builtin" else builtin_pairs(config.data_dir)
    folder = config.model
    if not Path(folder).expanduser().is_dir():  # a hub id: its safetensors snapshot, through the shared cache
        folder = str(fetch_checkpoint(config.model, config.revision)[0])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pairs = [p for rows in sources.values() for p in rows]
    encoded = encode_pairs(tokenizer, pairs, config.max_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = choose_device(config.device)
    bf16 = use_bf16(config.precision, device)
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    cast(torch.nn.Module, model).to(device)  # cast: transformers' wrapped .to confuses type checkers
    model.train()
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    losses: list[dict[str, float]] = []
    progress.start("finetune", "fine-tuning", total=config.steps)
    for step in range(config.steps):
        batch = [encoded[i] for i in batch_indices(len(encoded), config.batch_size, step, config.seed)]
        ids, mask, labels = (t.to(device) for t in collate_prompted(batch, pad_id))
        loss = train_step(model, optimizer, {"input_ids": ids, "attention_mask": mask, "labels": labels},
                          lr=lr_at(step, config.lr, config.warmup, config.steps), grad_clip=1.0, bf16=bf16)
        losses.append({"step": step, "loss": loss, "lr": optimizer.param_groups[0]["lr"]})
        progress.update("finetune", done=step + 1, description=f"fine-tuning (loss {loss:.3f})")
    progress.finish("finetune")
    record = {"config": asdict(config), "pairs": {k: len(v) for k, v in sources.items()}, "encoded": len(encoded),
              "bf16_autocast": bf16, "seconds": round(time.perf_counter() - started, 2),
              "final_loss": float(np.mean([r["loss"] for r in losses[-20:]])) if losses else math.nan}
    with atomic_path(layout.root) as tmp:  # the folder appears whole, or not at all
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        pd.DataFrame(losses).to_csv(FinetuneLayout(tmp).loss_csv, index=False)
        write_json_atomic(FinetuneLayout(tmp).record, record)
    log.info("fine-tuned %s → %s in %.0f s (final loss %.3f)", config.model, layout.root, record["seconds"],
             record["final_loss"])
    return FinetuneResult(layout.root, record)
