import json

import pandas as pd
import pytest
import torch

from trusttrace.data.batching import collate_prompted
from trusttrace.models.loading import load_model
from trusttrace.training.finetune import FinetuneConfig, builtin_pairs, encode_pairs, read_pairs, run_finetune


def test_builtin_pairs_use_train_questions_and_dev_halves_only(sft_data):
    pairs = builtin_pairs(str(sft_data))
    qa = dict(pairs["truthfulqa"])  # the best answer, else the question's first true one; never a false one
    assert qa["w1 w2?"] == "w9 good" and qa["w5?"] == "w6 good" and "w7?" not in qa and len(qa) == 22
    tox = pd.read_csv(sft_data / "toxigen.csv")
    dev = tox.iloc[: len(tox) // 2]
    benign = {" ".join(s.split()[len(s.split()) // 2:]) for s in dev[dev.label == 0].statement if len(s.split()) >= 4}
    assert {r for _, r in pairs["toxicity"]} <= benign  # benign dev-half rows only: no test half, no toxic side
    assert all(p.startswith("Continue this sentence: ") for p, _ in pairs["fairness"])


def test_labels_cover_only_the_answer(tiny_models):
    lm = load_model(str(tiny_models["llama"]), dtype="float32")
    encoded = encode_pairs(lm.tokenizer, [("w1 w2", "good w3"), ("w4", "bad")], max_len=32)
    _, mask, labels = collate_prompted(encoded, pad_id=0)
    for row, (seq, n_prompt) in enumerate(encoded):
        assert (labels[row, :n_prompt] == -100).all() and labels[row, n_prompt:len(seq)].tolist() == seq[n_prompt:]
        assert mask[row].sum() == len(seq) and (labels[row, len(seq):] == -100).all()
    assert seq[-1] == lm.tokenizer.eos_token_id


def test_finetune_writes_a_loadable_model_once(tiny_models, sft_data, tmp_path):
    out = tmp_path / "chat"
    config = FinetuneConfig(model=str(tiny_models["llama"]), out=str(out), data_dir=str(sft_data), steps=6,
                            batch_size=4, precision="fp32")
    assert run_finetune(config).out == out
    record = json.loads((out / "finetune.json").read_text())
    assert record["pairs"]["truthfulqa"] == 22 and pd.read_csv(out / "loss.csv").step.tolist() == list(range(6))
    tuned, base = load_model(str(out), dtype="float32"), load_model(str(tiny_models["llama"]), dtype="float32")
    assert not torch.equal(tuned.model.model.embed_tokens.weight, base.model.model.embed_tokens.weight)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    run_finetune(config)  # finished: a rerun does nothing
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other settings"):
        run_finetune(FinetuneConfig(**{**config.__dict__, "steps": 7}))


def test_pairs_file_and_its_errors(tmp_path, tiny_models):
    good = tmp_path / "pairs.jsonl"
    good.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "response": "d"}\n')
    assert read_pairs(good) == [("a", "b"), ("c", "d")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_pairs(bad)
    with pytest.raises(FileNotFoundError, match="JSONL"):
        FinetuneConfig(model=str(tiny_models["llama"]), out="o", data=str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="no such folder or file"):
        FinetuneConfig(model=str(tmp_path / "nope"), out="o")
    (tmp_path / "series" / "step1").mkdir(parents=True)  # a series, not the one checkpoint fine-tuning starts from
    with pytest.raises(FileNotFoundError, match="checkpoints/last"):
        FinetuneConfig(model=str(tmp_path / "series"), out="o")
