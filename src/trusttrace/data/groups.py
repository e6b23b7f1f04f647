"""Which statements belong together, so that a split never puts one group on both of its sides.

A probe scored on rows whose near-twins it was trained on measures memory, not a concept. Each built-in
dataset has such twins, and its group rule keeps them together:

- reliability (``truthfulqa_train``): the **question**, the text before the answer (``Q: …`` up to the tab
  before ``A:``). The file holds 2 263 statements about 410 questions, true and false answers to each.
- fairness (``stereoset``): the **context**, the statement without its candidate sentence. The context is
  the first sentence where one ends (``.``, ``!`` or ``?`` followed by a space). 334 of the 1 952 rows join
  context and candidate without a full stop; the file lists a context's candidates next to each other, so
  there the context is the run of leading words shared with the neighbouring row (at least three words),
  and a row sharing none with its neighbours is a group of its own.
- robustness (``sst2``): the **original sentence**. A perturbed copy differs from its original only in
  letter case, so the case-folded text is the group (1 821 groups of two).
- toxicity (``toxigen``), privacy (``confaide``): the **normalised text** (case-folded, whitespace
  collapsed), so exact duplicates share a group.
- a user file: its ``group`` column when it has one, else the normalised text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

GROUP_RULES: dict[str, str] = {
    "reliability": "the question (text before the answer)",
    "fairness": "the context (the statement without its candidate sentence)",
    "robustness": "the original sentence (case-folded text: a perturbed copy differs only in case)",
    "toxicity": "the normalised text (exact duplicates)",
    "privacy": "the normalised text (exact duplicates)",
}
USER_RULE = "the normalised text (exact duplicates); give a group column to choose your own"
FILE_RULE = "the file's group column"
MIN_SHARED_WORDS = 3  # a context shared with a neighbouring row is at least this long
_SENTENCE_END = re.compile(r"^(.*?[.!?])\s")


def normalised(text: str) -> str:
    """Case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def question_of(statement: str) -> str:
    """The question of a TruthfulQA statement (``Q: … <tab> A: …``): the text before the answer."""
    for marker in ("\tA:", "\nA:", " A: "):
        if marker in statement:
            return normalised(statement.split(marker, 1)[0])
    return normalised(statement)


def _shared_words(a: str, b: str) -> list[str]:
    shared = []
    for x, y in zip(a.split(), b.split()):
        if x != y:
            break
        shared.append(x)
    return shared


def contexts(statements: Sequence[str]) -> list[str]:
    """The StereoSet context of every statement (see the module docstring)."""
    keys = []
    for i, statement in enumerate(statements):
        sentence = _SENTENCE_END.match(statement)
        if sentence is not None:
            keys.append(normalised(sentence.group(1)))
            continue
        neighbours = [statements[j] for j in (i - 1, i + 1) if 0 <= j < len(statements)]
        shared = max((_shared_words(statement, n) for n in neighbours), key=len, default=[])
        # the shared run stops before the first word of the shorter candidate
        keys.append(normalised(" ".join(shared)) if len(shared) >= MIN_SHARED_WORDS else normalised(statement))
    return keys


def group_keys(dimension: str | None, statements: Sequence[str]) -> list[str]:
    """The group of every statement by the dimension's rule (``None``: a user file without a group column)."""
    if dimension == "reliability":
        return [question_of(s) for s in statements]
    if dimension == "fairness":
        return contexts(statements)
    return [normalised(s) for s in statements]


def group_ids(keys: Sequence[str]) -> np.ndarray:
    """Integer group ids (``[n]`` int64), numbered in order of first appearance."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
