"""Fixtures: tiny random checkpoint series and planted-label data folders (see ``trusttrace.testing``)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import settings

from trusttrace.testing import save_tiny, write_planted_data_dir

from .support import REPORTED

# The fuzz tests draw the same inputs in every run (seeded, as everything here is), and keep no example
# database: HYPOTHESIS_PROFILE=explore draws new ones each run, for looking beyond the fixed set.
settings.register_profile("trusttrace", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "trusttrace"))

# Module- and session-scoped fixtures run before a test's own environment (``_no_hub``): they keep no
# random-init activations, so no test meets another session's or the user's cached ones.
os.environ["TRUSTTRACE_RANDOM_INIT_CACHE"] = "off"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """One checkpoint folder per architecture."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: save_tiny(root / arch, arch, seed=0) for arch in ("llama", "gpt_neox", "gpt2")}


@pytest.fixture(scope="session")
def tiny_series(tmp_path_factory) -> Path:
    """A local Llama checkpoint series, deliberately created out of step order."""
    root = tmp_path_factory.mktemp("series")
    for i, step in enumerate((100, 0, 10)):
        save_tiny(root / f"step{step}", "llama", seed=i)
    return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The five published file names holding planted data (120 rows each)."""
    return write_planted_data_dir(tmp_path_factory.mktemp("data"), rows=120)


@pytest.fixture(scope="session")
def _gguf_cache(tmp_path_factory) -> Path:
    """One de-quantised copy of each GGUF for the whole session (540 MB for the built-in SmolLM2)."""
    return tmp_path_factory.mktemp("gguf-cache")


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch, tmp_path, _gguf_cache):
    """Tests never reach the network or the user's caches."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRUSTTRACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRUSTTRACE_GGUF_CACHE", str(_gguf_cache))
    monkeypatch.setenv("TRUSTTRACE_RANDOM_INIT_CACHE", str(tmp_path / "random-init"))  # each test its own
    monkeypatch.delenv("TRUSTTRACE_DATA_DIR", raising=False)


@pytest.fixture
def sft_data(data_dir, tmp_path):
    """The planted folder plus TruthfulQA-shaped train statements and the MC table."""
    folder = tmp_path / "sft-data"
    folder.mkdir()
    for f in data_dir.iterdir():
        if f.name != "truthfulqa_train.csv":
            (folder / f.name).write_bytes(f.read_bytes())
    # 20 questions with a true and a false answer each (first, so that a --limit keeps groups to split),
    # then 3 questions with many answers
    rows = [row for i in range(10, 30) for row in ((f"Q: w{i} w{i + 1}?\tA: good w{i + 2}", 1),
                                                   (f"Q: w{i} w{i + 1}?\tA: bad w{i + 3}", 0))]
    rows += [("Q: w1 w2?\tA: good w3", 1), ("Q: w1 w2?\tA: bad w4", 0), ("Q: w5?\tA: w6 good", 1),
             ("Q: w7?\tA: w8 bad", 0)] * 30
    pd.DataFrame(rows, columns=["statement", "label"]).to_csv(folder / "truthfulqa_train.csv", index=False)
    pd.DataFrame({"Question": ["w1 w2?"], "Best Answer": ["w9 good"], "Correct Answers": ["w9 good"],
                  "Incorrect Answers": ["bad"]}).to_csv(folder / "truthfulqa_mc.csv", index=False)
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The counts the fuzz, fault-injection and bad-input tests kept: they show in every run, not only -s."""
    if REPORTED:
        terminalreporter.section("inputs and kills tried")
        for module, lines in sorted(REPORTED.items()):
            for line in lines:
                terminalreporter.write_line(f"{module}: {line}")

