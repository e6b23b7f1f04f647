"""Perplexity texts: LAMBADA from the hub, a file of your own, or the datasets' held-out statements.

LAMBADA (OpenAI's English test set, ``EleutherAI/lambada_openai``, as lm-eval uses it) is the paper's
perplexity corpus. The hub folder's layout has changed over time (a JSONL per language, later Parquet per
config), so the English test file is chosen by name from what the snapshot holds, and the resolved commit
goes into the result's ``spec``.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..core.errors import DataFileNotFoundError

log = logging.getLogger(__name__)

LAMBADA_REPO = "EleutherAI/lambada_openai"
_PATTERNS = ["*.jsonl", "*.parquet"]


def _english_test_file(folder: Path) -> Path:
    """The English test split among a snapshot's files (``data/lambada_test_en.jsonl`` or ``en/test-*.parquet``)."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".jsonl", ".parquet") and "test" in p.name)
    for pick in (lambda p: p.parent.name == "en", lambda p: p.stem.endswith("_en"), lambda p: p.stem == "lambada_test"):
        chosen = [p for p in files if pick(p)]
        if chosen:
            return chosen[0]
    raise DataFileNotFoundError(f"No English LAMBADA test file in {folder} (found {[p.name for p in files]}). "
                                "Pass --perplexity-file with your own text instead.")


def read_lambada(folder: str | Path) -> list[str]:
    """The passages of the English test split in a downloaded ``lambada_openai`` folder."""
    path = _english_test_file(Path(folder))
    if path.suffix == ".parquet":
        texts = pd.read_parquet(path, columns=["text"])["text"].tolist()
    else:
        texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [t.strip() for t in texts if t.strip()]


@lru_cache(maxsize=2)
def lambada_texts(cache_dir: str | None = None) -> tuple[tuple[str, ...], str]:
    """(passages, description) from the hub (or the Hugging Face cache); errors as ``hub_call`` raises them."""
    from huggingface_hub import snapshot_download

    from ..models.hub import commit_of, hub_call

    folder = Path(hub_call(f"Downloading {LAMBADA_REPO}", snapshot_download, LAMBADA_REPO, repo_type="dataset",
                           cache_dir=cache_dir, allow_patterns=_PATTERNS))
    commit = commit_of(folder) or "local"
    texts = tuple(read_lambada(folder))
    return texts, f"LAMBADA ({LAMBADA_REPO}@{commit[:12]}, English test)"
