"""Scores that mean what lm-evaluation-harness means: TruthfulQA MC1/MC2 and LAMBADA (OpenAI) last word.

Spec ``truthfulqa-mc-lmeval/1`` scores what ``lm_eval --tasks truthfulqa_mc1,truthfulqa_mc2`` scores:
- Documents: the ``multiple_choice`` rows of the hub's ``truthfulqa/truthful_qa`` (817 questions, each
  with ``mc1_targets``: one true answer first, then false ones, and ``mc2_targets``: every true answer,
  then the false ones). Where the hub cannot be reached, the same rows are built from the TruthfulQA table
  (``truthfulqa_mc.csv``: MC1 = the best answer + the incorrect answers, MC2 = the correct answers with the
  best one + the incorrect answers); the answer lists of that table and of the hub's release differ for
  some questions, so the ``spec`` column says which was used. ``questions="test"`` keeps the 407 held-out
  questions of the paper's split.
- Prompt: the 6-shot QA primer + ``"\\n\\nQ: {question}\\nA:"``; each choice is the continuation
  ``" {choice}"``, tokenised as lm-eval does (context and continuation encoded together, the continuation
  being the tokens after the context's own encoding; special tokens as the tokenizer adds them).
- ``truthfulqa_mc1`` = 1 when ``argmax`` of the MC1 log-likelihoods is the true answer (the first maximum
  wins a tie, as ``numpy.argmax``); ``truthfulqa_mc2`` = the normalised probability mass of the true
  answers among the MC2 choices.

Spec ``lambada-openai-lmeval/1``: each passage's last space-separated word is the continuation ``" word"``
of the rest; ``lambada_openai_acc`` = 1 when every token of it is the greedy choice, and
``lambada_openai_perplexity`` = exp(−mean log-likelihood of the last word) over passages. The suite's
``perplexity`` (every token of every passage) is another number and keeps its own name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from ..core.errors import DataFileError, DataFileNotFoundError
from ..core.names import QUESTION_SETS
from ..models.loading import LoadedModel
from .likelihood import continuation_logprobs, greedy_tails
from .truthfulqa import QA_PRIMER, answer_lists, load_mc_items, prompt_for

log = logging.getLogger(__name__)

TRUTHFULQA_REPO = "truthfulqa/truthful_qa"


@dataclass(frozen=True)
class MCDoc:
    """One ``truthful_qa`` multiple-choice row: the question and both target lists (true answers label 1)."""

    question: str
    mc1_choices: tuple[str, ...]
    mc1_labels: tuple[int, ...]
    mc2_choices: tuple[str, ...]
    mc2_labels: tuple[int, ...]


def load_docs(data_dir: str | Path | None = None, questions: str = "all", limit: int | None = None,
              hub: bool = True) -> tuple[list[MCDoc], str]:
    """The documents and where they came from (the hub's rows, or rows built from the TruthfulQA table)."""
    QUESTION_SETS.check(questions, hint="all: the benchmark's 817; test: the 407 held-out questions of the paper's "
                                        "split.")
    docs, source = None, ""
    if hub:
        try:
            docs, source = _hub_docs()
        except (ConnectionError, ValueError, FileNotFoundError) as err:
            log.warning("The hub's %s could not be had (%s); its rows are rebuilt from the TruthfulQA table.",
                        TRUTHFULQA_REPO, type(err.__cause__ or err).__name__)
    if docs is None:
        docs, source = _table_docs(data_dir), "rows built from TruthfulQA.csv (hub unreachable)"
    if questions == "test":
        held_out = {item.question for item in load_mc_items(data_dir)[0]}
        docs = [d for d in docs if d.question in held_out]
    return (docs[:limit] if limit else docs), f"{source}; {questions} questions"


def _hub_docs() -> tuple[list[MCDoc], str]:
    from huggingface_hub import snapshot_download

    from ..models.hub import commit_of, hub_call

    folder = Path(hub_call(f"Downloading {TRUTHFULQA_REPO}", snapshot_download, TRUTHFULQA_REPO,
                           repo_type="dataset", allow_patterns=["multiple_choice/*"]))
    files = sorted(folder.glob("multiple_choice/validation-*.parquet"))
    if not files:
        raise DataFileNotFoundError(f"{folder} holds no multiple_choice/validation-*.parquet.")
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    docs = [MCDoc(str(r.question), tuple(r.mc1_targets["choices"]), tuple(int(x) for x in r.mc1_targets["labels"]),
                  tuple(r.mc2_targets["choices"]), tuple(int(x) for x in r.mc2_targets["labels"]))
            for r in frame.itertuples(index=False)]
    return docs, f"hub {TRUTHFULQA_REPO}@{(commit_of(folder) or 'local')[:12]}"


def _table_docs(data_dir: str | Path | None) -> list[MCDoc]:
    from ..data.datasets import EVAL_FILES, locate_file

    table = pd.read_csv(locate_file(EVAL_FILES["truthfulqa_mc"], data_dir)[0], encoding="utf-8-sig")
    docs = []
    for question, best_cell, correct, incorrect in zip(table["Question"], table["Best Answer"],
                                                       table["Correct Answers"], table["Incorrect Answers"]):
        best, true, false = answer_lists(best_cell, correct, incorrect)
        docs.append(MCDoc(str(question), (best, *false), (1,) + (0,) * len(false), (*true, *false),
                          (1,) * len(true) + (0,) * len(false)))
    return docs


def score_docs(lm: LoadedModel, docs: Sequence[MCDoc], max_batch: int = 32) -> pd.DataFrame:
    """Per-question ``truthfulqa_mc1`` and ``truthfulqa_mc2`` (mean them for the benchmark's scores)."""
    contexts: list[str] = []
    answers: list[str] = []
    index: list[dict[str, int]] = []
    for doc in docs:
        choices = list(dict.fromkeys((*doc.mc1_choices, *doc.mc2_choices)))  # each answer scored once
        index.append({c: len(answers) + i for i, c in enumerate(choices)})
        contexts += [prompt_for(doc.question)] * len(choices)
        answers += [" " + c for c in choices]
    logp = continuation_logprobs(lm, contexts, answers, max_batch, shared_prefix=QA_PRIMER, joint=True)
    rows = []
    for doc, where in zip(docs, index):
        ll1 = np.array([logp[where[c]] for c in doc.mc1_choices])
        ll2 = np.array([logp[where[c]] for c in doc.mc2_choices])
        mc1 = float(doc.mc1_labels[int(np.argmax(ll1))] == 1)
        true = np.array(doc.mc2_labels) == 1
        mc2 = float(np.exp(logsumexp(ll2[true]) - logsumexp(ll2)))
        rows.append({"question": doc.question, "truthfulqa_mc1": mc1, "truthfulqa_mc2": mc2})
    return pd.DataFrame(rows)


def lambada_last_word(lm: LoadedModel, passages: Sequence[str], max_batch: int = 32) -> pd.DataFrame:
    """Per passage: the last word's log-likelihood and whether it is the greedy continuation."""
    contexts, words = [], []
    for text in passages:
        head, _, last = text.rpartition(" ")
        if head and last:
            contexts.append(head)
            words.append(" " + last)
    if not contexts:
        raise DataFileError("No passage has a last word after a space; LAMBADA passages are plain text.")
    logp, greedy = greedy_tails(lm, contexts, words, max_batch)
    return pd.DataFrame({"loglikelihood": logp, "greedy": greedy})


def lambada_scores(per_passage: pd.DataFrame) -> tuple[float, float]:
    """(``lambada_openai_acc``, ``lambada_openai_perplexity``) from ``lambada_last_word``'s rows."""
    return float(per_passage.greedy.mean()), math.exp(-float(per_passage.loglikelihood.mean()))
