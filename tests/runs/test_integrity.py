"""Integrity you can check: records of size and sha256, damaged files reported and recomputed, never used."""

import json
import logging
import os
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.activations.store import load_activations
from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.cli import app
from trusttrace.core.errors import DamagedFileError, OutputError, RunFolderError, RunFolderNotFoundError
from trusttrace.core.files import record_path, write_text_atomic
from trusttrace.models.loading import LoadConfig
from trusttrace.runs.integrity import check, weights_fingerprint
from trusttrace.runs.layout import TraceLayout
from trusttrace.runs.verify import verify_run
from trusttrace.testing import save_tiny
from trusttrace.trace import unit as trace_mod
from trusttrace.trace.job import TraceConfig, run_trace


def _analysis(seed=0):
    """Probes under the released 80/20 cut with the random-init control: the cheapest analysis that writes
    every kind of file a trace keeps."""
    return AnalysisConfig.build(analyses=("probe",), protocol="paper-code", controls=("random-init",), seed=seed)


def _config(series, data_dir, out, **kw):
    return TraceConfig(model=str(series), out=str(out), dimensions=("privacy",), limit=40, data_dir=str(data_dir),
                       load=LoadConfig(dtype="float32"), analysis=kw.pop("analysis", _analysis()), **kw)


@pytest.fixture(scope="module")
def reference(tiny_series, data_dir, tmp_path_factory):
    """An uninterrupted run: the table every repaired run must equal."""
    return run_trace(_config(tiny_series, data_dir, tmp_path_factory.mktemp("ref") / "run")).results


def _count_extractions(monkeypatch):
    calls = []
    real = trace_mod.extract_last_token
    monkeypatch.setattr(trace_mod, "extract_last_token",
                        lambda lm, st, *a, **k: calls.append(1) or real(lm, st, *a, **k))
    return calls


def test_every_atomic_write_is_recorded_and_checked(tmp_path):
    path = tmp_path / "a.txt"
    write_text_atomic(path, "hello")
    record = json.loads(record_path(path).read_text())
    assert record["size"] == 5 and len(record["sha256"]) == 64 and "replaces" not in record
    assert check(path).ok
    path.write_text("hellO")
    assert check(path).status == "damaged" and "sha256" in check(path).reason
    path.write_text("hell")
    assert check(path).status == "damaged" and "4 bytes, recorded 5" in check(path).reason
    record_path(path).unlink()
    assert check(path).status == "unrecorded" and check(tmp_path / "none").status == "missing"


def test_a_truncated_part_is_recomputed_from_stored_activations(tiny_series, data_dir, tmp_path, reference,
                                                                monkeypatch, caplog):
    out = tmp_path / "run"
    run_trace(_config(tiny_series, data_dir, out))
    part = TraceLayout(out).part("step10")
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # what the tester did: 62 of 75 rows
    report = verify_run(out)
    assert not report.intact
    assert [(f.path, f.status) for f in report.findings] == [("parts/step10.csv", "damaged")]
    assert report.findings[0].redo == "checkpoint step10: part damaged → recomputed from stored activations"
    calls = _count_extractions(monkeypatch)
    with caplog.at_level(logging.WARNING):
        again = run_trace(_config(tiny_series, data_dir, out))
    assert any("step10.csv is damaged" in r.getMessage() for r in caplog.records)
    assert calls == []  # its activations were intact: nothing extracted again
    pd.testing.assert_frame_equal(again.results, reference)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), reference)
    assert verify_run(out).intact
    assert CliRunner().invoke(app, ["verify", str(out)]).exit_code == 0


def test_overwritten_activations_are_extracted_again_never_used(tiny_series, data_dir, tmp_path, reference,
                                                                monkeypatch):
    out = tmp_path / "run"
    run_trace(_config(tiny_series, data_dir, out))
    acts = TraceLayout(out).activation("step10", "privacy")
    data = bytearray(acts.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(4096)  # 4 KB of tensor data overwritten: the size is unchanged
    acts.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match=r"privacy.safetensors.*trusttrace trace"):
        load_activations(acts)
    finding = next(f for f in verify_run(out).findings if f.path == "activations/step10/privacy.safetensors")
    assert finding.status == "damaged" and "extracted again" in finding.redo
    calls = _count_extractions(monkeypatch)
    again = run_trace(_config(tiny_series, data_dir, out))
    assert len(calls) == 1  # step10's privacy, and nothing else
    pd.testing.assert_frame_equal(again.results, reference)  # the accuracy of every layer as uninterrupted
    assert verify_run(out).intact


def test_a_truncated_safetensors_never_surfaces_as_a_parser_error(tiny_series, data_dir, tmp_path):
    out = tmp_path / "run"
    run_trace(_config(tiny_series, data_dir, out, select="first:1"))
    acts = TraceLayout(out).activation("step0", "privacy")
    acts.write_bytes(acts.read_bytes()[:100])
    res = CliRunner().invoke(app, ["probe", str(out), "--out", str(tmp_path / "probe")])
    assert res.exit_code == 1 and "privacy.safetensors" in res.output and "trusttrace trace" in res.output
    assert "SafetensorError" not in res.output and "internal error" not in res.output
    record_path(acts).unlink()  # and without its record: the parser's failure is reported the same way
    with pytest.raises(DamagedFileError, match="cannot be read"):
        load_activations(acts)


def test_changed_local_weights_are_traced_again(tiny_series, data_dir, tmp_path, caplog):
    series = tmp_path / "series"
    shutil.copytree(tiny_series, series)
    out = tmp_path / "run"
    run_trace(_config(series, data_dir, out))
    acts = TraceLayout(out).activation("step10", "privacy")
    old_acts = load_activations(acts).layers
    before = weights_fingerprint(series / "step10")
    assert json.loads((out / "manifest.json").read_text())["checkpoints"]["step10"]["weights_sha256"] == before
    save_tiny(series / "step10", "llama", seed=7)  # regenerated under the same name
    assert weights_fingerprint(series / "step10") != before
    with caplog.at_level(logging.WARNING):
        again = run_trace(_config(series, data_dir, out))
    assert any("step10: its weights" in r.getMessage() and "traced again" in r.getMessage() for r in caplog.records)
    fresh = run_trace(_config(series, data_dir, tmp_path / "fresh"))
    pd.testing.assert_frame_equal(again.results, fresh.results)
    stored = load_activations(acts)  # (the planted label keeps every accuracy at 1.0: compare what was stored)
    assert stored.metadata["weights_sha256"] == weights_fingerprint(series / "step10")
    assert not bool((stored.layers == old_acts).all())


def test_an_unfinished_folder_of_other_settings_starts_over(tiny_series, data_dir, tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"

    def broken(*a, **k):
        raise RuntimeError("an error found after the model loaded")

    with monkeypatch.context() as patch:
        patch.setattr(trace_mod, "analyse", broken)
        with pytest.raises(RuntimeError):
            run_trace(_config(tiny_series, data_dir, out, select="first:1"))
    assert (out / "manifest.json").is_file() and TraceLayout(out).activation("step0", "privacy").is_file()
    with caplog.at_level(logging.WARNING):
        result = run_trace(_config(tiny_series, data_dir, out, select="first:1", analysis=_analysis(seed=4)))
    assert any("starting the folder over" in r.getMessage() and "seed: 0 → 4" in r.getMessage()
               for r in caplog.records)
    assert set(result.results.seed) == {4}
    with pytest.raises(OutputError, match="seed: 4 → 0"):  # finished results: still refused
        run_trace(_config(tiny_series, data_dir, out, select="first:1"))


def test_a_damaged_manifest_stops_the_rerun_with_the_fix(tiny_series, data_dir, tmp_path, reference):
    out = tmp_path / "run"
    run_trace(_config(tiny_series, data_dir, out))
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    with pytest.raises(DamagedFileError, match="delete manifest.json"):
        run_trace(_config(tiny_series, data_dir, out))
    res = CliRunner().invoke(app, ["verify", str(out)])  # (the CLI sets up its own logging: after caplog's tests)
    assert res.exit_code == 1 and "manifest.json" in res.output and "damaged" in res.output
    assert "manifest.json" in [f.path for f in verify_run(out).findings]
    manifest.unlink()  # the message's advice
    record_path(manifest).unlink()
    pd.testing.assert_frame_equal(run_trace(_config(tiny_series, data_dir, out)).results, reference)


def test_folders_before_records_are_unrecorded_and_recomputed(tiny_series, data_dir, tmp_path, reference,
                                                              monkeypatch):
    out = tmp_path / "run"
    run_trace(_config(tiny_series, data_dir, out))
    for rec in out.rglob("*.sha256.json"):
        rec.unlink()
    report = verify_run(out)
    assert not report.intact and {f.status for f in report.findings} == {"unrecorded"}
    assert "parts/step0.csv" in {f.path for f in report.findings}
    calls = _count_extractions(monkeypatch)
    again = run_trace(_config(tiny_series, data_dir, out))
    # every checkpoint; the random-init control's unrecorded file is rewritten from the machine's cache of it
    # (trusttrace.activations.random_init_cache), which the first run filled: the untrained network is not traced again
    assert len(calls) == 3
    pd.testing.assert_frame_equal(again.results, reference)
    assert verify_run(out).intact


def test_verify_refuses_what_is_not_a_run_folder(tmp_path):
    with pytest.raises(RunFolderNotFoundError):
        verify_run(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunFolderError):
        verify_run(tmp_path / "plain")
    assert CliRunner().invoke(app, ["verify", str(tmp_path / "missing")]).exit_code == 2
    assert CliRunner().invoke(app, ["verify", str(tmp_path / "plain")]).exit_code == 2


def test_adopting_a_folder_from_before_records_reuses_it(tiny_series, data_dir, tmp_path, reference, monkeypatch):
    out = tmp_path / "run"
    run_trace(_config(tiny_series, data_dir, out))
    for rec in out.rglob("*.sha256.json"):
        rec.unlink()
    acts = TraceLayout(out).activation("step10", "privacy")
    acts.write_bytes(acts.read_bytes()[:100])  # one file broken before adoption: it must not be adopted
    res = CliRunner().invoke(app, ["verify", str(out), "--adopt"])
    assert res.exit_code == 1 and "left unrecorded" in res.output and "step10/privacy.safetensors" in res.output
    assert {f.path for f in verify_run(out).findings} == {"activations/step10/privacy.safetensors"}
    calls = _count_extractions(monkeypatch)
    again = run_trace(_config(tiny_series, data_dir, out))
    assert len(calls) == 1  # only the checkpoint whose file did not read back
    pd.testing.assert_frame_equal(again.results, reference)
    assert verify_run(out).intact


def test_unchanged_weights_are_not_read_again_on_resume(tiny_series, data_dir, tmp_path, monkeypatch):
    from trusttrace.trace import resume

    out = tmp_path / "run"
    run_trace(_config(tiny_series, data_dir, out))
    hashed = []
    monkeypatch.setattr(resume, "local_weights", lambda ckpt: hashed.append(ckpt.name))
    run_trace(_config(tiny_series, data_dir, out))
    assert hashed == []  # names, sizes and times unchanged: the weights are trusted without a full read
    weights = tiny_series / "step10" / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched: read them again
    run_trace(_config(tiny_series, data_dir, out))
    assert hashed == ["step10"]
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
