"""trusttrace's truthfulqa_mc1/mc2 against lm-evaluation-harness's, on the same model and documents.

    python benchmarks/lmeval_parity.py --model smollm2-135m-instruct            # all questions, fp32
    python benchmarks/lmeval_parity.py --limit 100 --questions test

Both score the same documents (``trusttrace.evaluate.lmeval.load_docs``: the hub's ``truthful_qa`` rows,
or where the hub cannot be reached the same rows built from the TruthfulQA table; lm-eval is handed them
as a local JSON file under its own ``truthfulqa_mc1``/``truthfulqa_mc2`` task definitions, so its prompt,
tokenisation and metrics are its own). Prints one JSON line: both scores, ``mc1_abs_diff``,
``mc2_abs_diff``, ``per_question_agreement`` (MC1 equal and MC2 within 1e-4), timings and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_device_dtype, machine

from trusttrace.evaluate.lmeval import QUESTION_SETS, MCDoc, load_docs, score_docs
from trusttrace.models.loading import LoadedModel, load_model

TASKS = {"truthfulqa_mc1": "trusttrace_truthfulqa_mc1", "truthfulqa_mc2": "trusttrace_truthfulqa_mc2"}


def write_tasks(docs: list[MCDoc], folder: Path) -> None:
    """The documents as JSON lines, and lm-eval's two tasks pointed at them (everything else included as is)."""
    import lm_eval

    rows = [{"question": d.question, "mc1_targets": {"choices": list(d.mc1_choices), "labels": list(d.mc1_labels)},
             "mc2_targets": {"choices": list(d.mc2_choices), "labels": list(d.mc2_labels)}} for d in docs]
    data = folder / "truthfulqa_mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tasks = Path(lm_eval.__file__).parent / "tasks" / "truthfulqa"
    for theirs, ours in TASKS.items():
        (folder / f"{ours}.yaml").write_text(
            f"include: {tasks / (theirs + '.yaml')}\ntask: {ours}\ntag: []\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {data}\n", encoding="utf-8")


def lm_eval_scores(lm: LoadedModel, docs: list[MCDoc], batch_size: int) -> dict[str, np.ndarray]:
    """Per-document acc of both tasks, as lm-eval computes them."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        write_tasks(docs, Path(tmp))
        model = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size)
        out = simple_evaluate(model=model, tasks=list(TASKS.values()), task_manager=TaskManager(include_path=tmp),
                              log_samples=True, verbosity="WARNING")
    scores = {}
    for theirs, ours in TASKS.items():
        per_doc = np.full(len(docs), np.nan)
        for sample in out["samples"][ours]:
            per_doc[int(sample["doc_id"])] = float(sample["acc"])
        scores[theirs] = per_doc
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--questions", default="all", choices=QUESTION_SETS)
    parser.add_argument("--limit", type=int, default=None, help="questions (default: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-dir", default=None)
    args = add_device_dtype(parser, dtype="float32").parse_args()
    try:
        import lm_eval
    except ImportError:
        sys.exit("lm-eval is not installed: `pip install 'trusttrace[lmeval]'` (make setup installs it).")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # lm-eval reads the local JSON file; no hub look-ups
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    docs, source = load_docs(args.data_dir, args.questions, args.limit)

    started = time.perf_counter()
    ours = score_docs(lm, docs)
    t_ours = time.perf_counter() - started
    started = time.perf_counter()
    theirs = lm_eval_scores(lm, docs, args.batch_size)
    t_theirs = time.perf_counter() - started

    mc1, mc2 = ours["truthfulqa_mc1"].to_numpy(), ours["truthfulqa_mc2"].to_numpy()
    agree = (mc1 == theirs["truthfulqa_mc1"]) & (np.abs(mc2 - theirs["truthfulqa_mc2"]) <= 1e-4)
    print(json.dumps({
        "benchmark": "lmeval_parity", "model": args.model, "questions": len(docs), "documents": source,
        "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?",
        **machine(lm.info.device, lm.info.dtype),
        "mc1_ours": round(float(mc1.mean()), 6), "mc1_lmeval": round(float(theirs["truthfulqa_mc1"].mean()), 6),
        "mc2_ours": round(float(mc2.mean()), 6), "mc2_lmeval": round(float(theirs["truthfulqa_mc2"].mean()), 6),
        "mc1_abs_diff": float(abs(mc1.mean() - theirs["truthfulqa_mc1"].mean())),
        "mc2_abs_diff": float(abs(mc2.mean() - theirs["truthfulqa_mc2"].mean())),
        "max_mc2_question_diff": float(np.abs(mc2 - theirs["truthfulqa_mc2"]).max()),
        "per_question_agreement": round(float(agree.mean()), 4),
        "seconds_ours": round(t_ours, 1), "seconds_lmeval": round(t_theirs, 1),
    }))


if __name__ == "__main__":
    main()
