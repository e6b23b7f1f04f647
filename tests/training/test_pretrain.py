from dataclasses import replace

import pandas as pd
import pytest

from trusttrace.testing import write_text_corpus
from trusttrace.trace.live import trace_checkpoint, tracer
from trusttrace.training.loop import batch_indices
from trusttrace.training.pretrain import PretrainConfig, checkpoint_steps, run_pretrain


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    return write_text_corpus(tmp_path_factory.mktemp("corpus") / "text.txt")


def _config(out, corpus_file, **kw):
    base = {"out": str(out), "corpus": str(corpus_file), "vocab_size": 300, "hidden_size": 32, "n_layers": 2,
            "n_heads": 2, "intermediate_size": 64, "seq_len": 32, "batch_size": 4, "steps": 12, "warmup": 3,
            "checkpoints": "0,5,12", "tokenizer_chars": 100_000, "heldout_blocks": 4, "precision": "fp32"}
    return PretrainConfig(**{**base, **kw})


def _bytes(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted((run / "checkpoints").rglob("*"))
            if p.is_file() and not p.is_symlink()}


def test_checkpoint_steps():
    assert checkpoint_steps("0,5,12", 12) == [0, 5, 12]
    assert checkpoint_steps("every:5", 12) == [0, 5, 10, 12]
    log16 = checkpoint_steps("log:6", 1000)
    assert log16[0] == 0 and log16[-1] == 1000 and len(log16) == 6
    with pytest.raises(ValueError, match="0..12"):
        checkpoint_steps("0,13", 12)
    with pytest.raises(ValueError, match="log:N"):
        checkpoint_steps("log:x", 12)


def test_batches_are_a_function_of_the_step():
    first = [batch_indices(10, 4, s, seed=1).tolist() for s in range(5)]
    assert first == [batch_indices(10, 4, s, seed=1).tolist() for s in range(5)]
    epoch0 = first[0] + first[1] + first[2][:2]  # 10 blocks: each appears once per epoch
    assert sorted(epoch0) == list(range(10))


def test_pretraining_is_seeded_resumable_and_saves_the_asked_steps(tmp_path, corpus_file):
    a = run_pretrain(_config(tmp_path / "a", corpus_file))
    assert [p.name for p in a.checkpoints] == ["step0", "step5", "step12"]
    assert (tmp_path / "a" / "checkpoints" / "last").resolve() == a.checkpoints[-1].resolve()
    assert a.loss.step.tolist() == list(range(12)) and a.loss.loss.notna().all()
    evals = pd.read_csv(tmp_path / "a" / "checkpoints.csv")
    assert evals.step.tolist() == [0, 5, 12] and evals.heldout_loss.iloc[-1] < evals.heldout_loss.iloc[0]

    b = run_pretrain(_config(tmp_path / "b", corpus_file))
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")  # same seed: bit-identical checkpoints

    run_pretrain(_config(tmp_path / "c", corpus_file), stop_after=7)  # interrupted after step 7 (state at step 5)
    assert not (tmp_path / "c" / "checkpoints" / "step12").exists()
    c = run_pretrain(_config(tmp_path / "c", corpus_file))
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "c")  # the resumed run ends where the whole one did
    assert c.loss.step.tolist() == list(range(12)) and c.loss.loss.tolist() == b.loss.loss.tolist()

    other = run_pretrain(_config(tmp_path / "d", corpus_file, seed=1))
    assert _bytes(tmp_path / "d") != _bytes(tmp_path / "a") and other.checkpoints
    with pytest.raises(ValueError, match="other settings"):
        run_pretrain(_config(tmp_path / "a", corpus_file, lr=1e-4))


def test_live_tracing_writes_rows_for_each_checkpoint(tmp_path, corpus_file, data_dir):
    seen = []
    config = _config(tmp_path / "run", corpus_file)
    run_pretrain(config, on_checkpoint=lambda folder, step: seen.append(step))
    assert seen == [0, 5, 12] and not (tmp_path / "run" / "trace").exists()  # pretrain knows nothing of tracing
    live = tracer(tmp_path / "traced" / "trace", ("privacy", "fairness"), limit=40, data_dir=str(data_dir))
    run_pretrain(replace(config, out=str(tmp_path / "traced")), on_checkpoint=live)
    results = pd.read_csv(tmp_path / "traced" / "trace" / "results.csv")
    assert results.revision.unique().tolist() == ["step0", "step5", "step12"]
    assert set(results.dimension) == {"privacy", "fairness"} and {"accuracy", "mi_tx"} <= set(results.metric)
    again = trace_checkpoint(tmp_path / "traced" / "checkpoints" / "step5", tmp_path / "traced" / "trace",
                             dimensions=("privacy", "fairness"), limit=40, data_dir=str(data_dir))
    assert len(again) == len(results)  # already traced: nothing added twice


def test_trace_callback_traces_what_the_trainer_saves(tmp_path, tiny_models, data_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from trusttrace.trace.live import TraceCallback

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    ids = torch.randint(4, 40, (8, 12), generator=torch.Generator().manual_seed(0))
    train = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=4, save_steps=2,
                             per_device_train_batch_size=4, report_to=[], use_cpu=True, seed=0)
    callback = TraceCallback(tmp_path / "trace", dimensions=["privacy"], limit=40, data_dir=str(data_dir),
                             tokenizer=tok)
    Trainer(model=model, args=args, train_dataset=train, callbacks=[callback]).train()
    results = pd.read_csv(tmp_path / "trace" / "results.csv")
    assert results.revision.unique().tolist() == ["checkpoint-2", "checkpoint-4"]
    assert results.step.unique().tolist() == [2, 4]


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        PretrainConfig(out=str(tmp_path), hidden_size=30, n_heads=4)
    with pytest.raises(ValueError, match="precision"):
        PretrainConfig(out=str(tmp_path), precision="fp8")


@pytest.mark.slow
def test_pretraining_on_the_builtin_corpus_learns(tmp_path):
    """A short real run: the built-in corpus, its BPE (with "0" and "1" as single tokens), a falling loss."""
    from transformers import AutoTokenizer


    result = run_pretrain(PretrainConfig(out=str(tmp_path / "run"), steps=40, checkpoints="0,40", hidden_size=64,
                                     n_layers=2, n_heads=2, intermediate_size=128, vocab_size=2048,
                                     tokenizer_chars=2_000_000, heldout_blocks=16))
    tok = AutoTokenizer.from_pretrained(result.checkpoints[-1])
    assert [len(tok(t, add_special_tokens=False)["input_ids"]) for t in ("0", "1")] == [1, 1]
    evals = pd.read_csv(tmp_path / "run" / "checkpoints.csv")
    assert evals.heldout_loss.iloc[-1] < evals.heldout_loss.iloc[0] - 1.0
