"""Everything a result depends on is fingerprinted: a checkpoint's config and tokenizer files beside its weights.

A change of one re-traces that checkpoint (its activations extracted again) with a warning naming the file; a
``touch`` re-traces nothing; an unchanged rerun reads no file of the series in full; a run of the previous
version (records without the new fingerprints) is adopted without a retrace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, TypeAlias

import pytest

from trusttrace.activations.store import load_activations, read_metadata, save_activations
from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.models.loading import LoadConfig
from trusttrace.runs import integrity
from trusttrace.runs.integrity import (
    changed_files,
    files_digest,
    model_files,
    model_files_stat,
    weights_fingerprint,
    weights_stat,
)
from trusttrace.runs.layout import TraceLayout
from trusttrace.trace import unit as unit_mod
from trusttrace.trace.job import TraceConfig, run_trace

NAMES = ("step0", "step10", "step100")
Patch: TypeAlias = pytest.MonkeyPatch
Logs: TypeAlias = pytest.LogCaptureFixture


def _config(series: Path, data_dir: Path, out: Path) -> TraceConfig:
    return TraceConfig(model=str(series), out=str(out), dimensions=("privacy",), limit=40, data_dir=str(data_dir),
                       load=LoadConfig(dtype="float32"),
                       analysis=AnalysisConfig.build(analyses=("probe",), protocol="paper-code", controls=()))


@pytest.fixture
def series(tiny_series: Path, tmp_path: Path) -> Path:
    """A copy of the tiny series, free to change."""
    return Path(shutil.copytree(tiny_series, tmp_path / "series"))


@pytest.fixture
def traced(series: Path, data_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    run_trace(_config(series, data_dir, out))
    return out


def _acts(out: Path) -> dict[str, str]:
    layout = TraceLayout(out)
    return {name: hashlib.sha256(layout.activation(name, "privacy").read_bytes()).hexdigest() for name in NAMES}


def _records(out: Path) -> dict[str, dict[str, Any]]:
    return json.loads((out / "manifest.json").read_text())["checkpoints"]


def _count_extractions(monkeypatch: Patch) -> list[int]:
    calls: list[int] = []
    real = unit_mod.extract_last_token

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(unit_mod, "extract_last_token", counted)
    return calls


def _rerun(series: Path, data_dir: Path, out: Path, caplog: Logs) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_trace(_config(series, data_dir, out))
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _swap_good_and_bad(tokenizer_json: Path) -> None:
    """The labels' words trade ids: the same statements, other embeddings (every activation changes)."""
    tok = json.loads(tokenizer_json.read_text())
    vocab = tok["model"]["vocab"]
    vocab["good"], vocab["bad"] = vocab["bad"], vocab["good"]
    tokenizer_json.write_text(json.dumps(tok))


def test_the_files_a_result_depends_on(series: Path) -> None:
    folder = series / "step10"
    files = model_files(folder)
    assert files is not None and sorted(files) == ["config.json", "tokenizer.json", "tokenizer_config.json"]
    assert "generation_config.json" not in files and (folder / "generation_config.json").is_file()
    assert files["tokenizer.json"] == hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    assert model_files(folder / "model.safetensors") == {}  # a single-file checkpoint (a GGUF): only its weights
    assert model_files(series / "none") is None and model_files_stat(series / "none") is None
    stat = model_files_stat(folder)
    (folder / "merges.txt").write_text("a b\n")  # a file appearing moves the stat and shows as changed
    assert model_files_stat(folder) != stat
    now = model_files(folder)
    assert now is not None and changed_files(files, now) == {"merges.txt": (None, now["merges.txt"])}
    assert files_digest(files) != files_digest(now)
    (folder / "generation_config.json").write_text("{}")  # no effect on activations: not fingerprinted
    assert model_files(folder) == now


def test_the_manifest_and_activations_record_the_files(traced: Path, series: Path) -> None:
    for name in NAMES:
        record = _records(traced)[name]
        assert record["model_files"] == model_files(series / name)
        assert record["model_files_stat"] == model_files_stat(series / name)
        assert record["weights_sha256"] == weights_fingerprint(series / name)  # beside the weights, as before
        assert record["weights_stat"] == weights_stat(series / name)
        meta = read_metadata(TraceLayout(traced).activation(name, "privacy"))
        assert meta["model_files_sha256"] == files_digest(record["model_files"])


@pytest.mark.parametrize("changed", ["tokenizer.json", "config.json"])
def test_a_changed_tokenizer_or_config_retraces_that_checkpoint(traced: Path, series: Path, data_dir: Path,
                                                                tmp_path: Path, monkeypatch: Patch,
                                                                caplog: Logs, changed: str) -> None:
    before, old = _acts(traced), load_activations(TraceLayout(traced).activation("step10", "privacy")).layers
    path = series / "step10" / changed
    was = hashlib.sha256(path.read_bytes()).hexdigest()
    if changed == "tokenizer.json":
        _swap_good_and_bad(path)
    else:  # a config value that changes every activation
        config = json.loads(path.read_text())
        config["rms_norm_eps"] = 0.5
        path.write_text(json.dumps(config))
    calls = _count_extractions(monkeypatch)
    warnings = _rerun(series, data_dir, traced, caplog)
    assert len(calls) == 1  # step10's privacy, and nothing else
    after = _acts(traced)
    assert [n for n in NAMES if after[n] != before[n]] == ["step10"]
    stored = load_activations(TraceLayout(traced).activation("step10", "privacy"))
    assert not bool((stored.layers == old).all())
    fresh = run_trace(_config(series, data_dir, tmp_path / "fresh"))
    fresh_acts = load_activations(TraceLayout(tmp_path / "fresh").activation("step10", "privacy")).layers
    assert bool((stored.layers == fresh_acts).all())  # what a fresh run extracts
    assert fresh.results.equals(run_trace(_config(series, data_dir, traced)).results)
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    assert [w for w in warnings if changed in w] == [
        (f"checkpoint step10: {changed} changed since it was traced (sha256 {was[:12]}… → {now[:12]}…); it is "
         "traced again, its part and activations replaced.")]
    assert _records(traced)["step10"]["model_files"] == model_files(series / "step10")
    calls.clear()
    assert _rerun(series, data_dir, traced, caplog) == [] and calls == []  # and then it is done


def test_a_touch_retraces_nothing_and_is_recorded(traced: Path, series: Path, data_dir: Path, monkeypatch: Patch,
                                                  caplog: Logs) -> None:
    before = _acts(traced)
    for name in ("tokenizer.json", "config.json"):
        path = series / "step10" / name
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    calls = _count_extractions(monkeypatch)
    assert _rerun(series, data_dir, traced, caplog) == []
    assert calls == [] and _acts(traced) == before
    assert _records(traced)["step10"]["model_files_stat"] == model_files_stat(series / "step10")  # the new stat


def test_an_unchanged_rerun_reads_no_file_of_the_series_in_full(traced: Path, series: Path, data_dir: Path,
                                                                monkeypatch: Patch, caplog: Logs) -> None:
    read: list[Path] = []
    real = integrity.sha256_file

    def counting(path: str | Path) -> str:
        read.append(Path(path))
        return real(path)

    monkeypatch.setattr(integrity, "_FILE_SHAS", {})  # nothing cached from the first run
    monkeypatch.setattr(integrity, "sha256_file", counting)
    calls = _count_extractions(monkeypatch)
    assert _rerun(series, data_dir, traced, caplog) == []
    assert calls == [] and [p for p in read if p.is_relative_to(series)] == []
    os.utime(series / "step10" / "tokenizer.json")  # touched: step10's config and tokenizer are read again, once
    _rerun(series, data_dir, traced, caplog)  # (not its weights, nor another checkpoint's files)
    assert sorted(p.relative_to(series).as_posix() for p in read if p.is_relative_to(series)) == [
        "step10/config.json", "step10/tokenizer.json", "step10/tokenizer_config.json"]
    read.clear()
    integrity._FILE_SHAS.clear()
    _rerun(series, data_dir, traced, caplog)  # the new stat was recorded: nothing is read again
    assert [p for p in read if p.is_relative_to(series)] == []


def _as_the_previous_version_wrote(out: Path) -> None:
    """The manifest records and activation metadata without what this version adds."""
    layout = TraceLayout(out)
    manifest = layout.read_manifest()
    assert manifest is not None
    for record in manifest["checkpoints"].values():
        del record["model_files"], record["model_files_stat"]
    layout.write_manifest(manifest)
    for name in NAMES:
        path = layout.activation(name, "privacy")
        stored = load_activations(path)
        meta = {k: v for k, v in stored.metadata.items() if k != "model_files_sha256"}
        save_activations(path, stored.layers, stored.labels, meta)


def test_a_run_of_the_previous_version_is_adopted_without_a_retrace(traced: Path, series: Path, data_dir: Path,
                                                                    monkeypatch: Patch, caplog: Logs) -> None:
    _as_the_previous_version_wrote(traced)
    before = _acts(traced)
    calls = _count_extractions(monkeypatch)
    assert _rerun(series, data_dir, traced, caplog) == []  # nothing to warn about: that version could not tell
    assert calls == [] and _acts(traced) == before
    assert all(_records(traced)[n]["model_files"] == model_files(series / n) for n in NAMES)  # recorded now
    _swap_good_and_bad(series / "step10" / "tokenizer.json")  # a change after that is seen, though the stored
    warnings = _rerun(series, data_dir, traced, caplog)  # activations lack the files' digest
    assert any("step10: tokenizer.json changed" in w for w in warnings)
    assert len(calls) == 1 and [n for n in NAMES if _acts(traced)[n] != before[n]] == ["step10"]


def test_old_activations_are_reused_when_the_part_is_redone(traced: Path, series: Path, data_dir: Path,
                                                            monkeypatch: Patch, caplog: Logs) -> None:
    """An activation file without the files' digest is still used while the files are unchanged."""
    _as_the_previous_version_wrote(traced)
    part = TraceLayout(traced).part("step10")
    part.unlink()
    calls = _count_extractions(monkeypatch)
    _rerun(series, data_dir, traced, caplog)
    assert calls == [] and part.is_file()
