"""``verify`` tells a run folder's whole state: intact, incomplete (work left, or being written), or damaged."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.cli import app
from trusttrace.core.files import record_path, write_json_atomic
from trusttrace.core.runlock import LOCK_NAME
from trusttrace.models.loading import LoadConfig
from trusttrace.runs.layout import SteerLayout, TraceLayout
from trusttrace.runs.verify import verify_run
from trusttrace.steer.job import SteerConfig, run_steer
from trusttrace.testing import write_text_corpus
from trusttrace.trace.job import TraceConfig, run_trace
from trusttrace.training.pretrain import PretrainConfig, run_pretrain


def _trace_config(series: Path, data_dir: Path, out: Path) -> TraceConfig:
    analysis = AnalysisConfig.build(analyses=("probe",), protocol="paper-code", controls=("random-init",))
    return TraceConfig(model=str(series), out=str(out), dimensions=("privacy",), limit=40, data_dir=str(data_dir),
                       load=LoadConfig(dtype="float32"), analysis=analysis)


def _steer_config(series: Path, data_dir: Path, out: Path) -> SteerConfig:
    return SteerConfig(source=str(series), target=str(series / "step100"), dimension="privacy", out=str(out),
                       select="first:1", layers=(1,), alphas=(-4.0, 4.0), limit=10, source_limit=40,
                       data_dir=str(data_dir), dtype="float32")


def _pretrain_config(out: Path, corpus: Path) -> PretrainConfig:
    return PretrainConfig(out=str(out), corpus=str(corpus), vocab_size=300, hidden_size=32, n_layers=2, n_heads=2,
                          intermediate_size=64, seq_len=32, batch_size=4, steps=12, warmup=3, checkpoints="0,5,12",
                          tokenizer_chars=100_000, heldout_blocks=4, precision="fp32")


def _delete(*paths: Path) -> None:
    """Remove files or folders and their records, as a run killed before writing them leaves the folder."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        record_path(path).unlink(missing_ok=True)


def _verify(out: Path) -> tuple[int, str]:
    done = CliRunner().invoke(app, ["verify", str(out)])
    return done.exit_code, done.output


@pytest.fixture(scope="module")
def finished_trace(tiny_series: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trace") / "run"
    run_trace(_trace_config(tiny_series, data_dir, out))
    return out


def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(folder, out)
    return out


def test_a_finished_trace_is_intact(finished_trace: Path, tmp_path: Path) -> None:
    out = _copy(finished_trace, tmp_path)
    report = verify_run(out)
    assert (report.status, report.todo, report.writer) == ("intact", (), None)
    code, output = _verify(out)
    assert code == 0 and "0 findings; intact." in output


@pytest.mark.parametrize("stale_finished", [False, True])
def test_a_killed_trace_is_incomplete_until_a_rerun_finishes_it(finished_trace: Path, tiny_series: Path,
                                                                data_dir: Path, tmp_path: Path,
                                                                stale_finished: bool) -> None:
    """What a run killed while tracing its last checkpoint leaves: two parts of three, the manifest of the
    call (without ``finished``, or with an earlier call's), no random-init control yet."""
    out = _copy(finished_trace, tmp_path)
    layout = TraceLayout(out)
    _delete(layout.part("step100"), layout.activations("step100"), layout.root / "controls")
    manifest = layout.read_manifest() or {}
    del manifest["checkpoints"]["step100"]
    if not stale_finished:
        del manifest["finished"], manifest["failed"]
    write_json_atomic(layout.manifest, manifest)

    report = verify_run(out)
    assert report.findings == ()
    assert report.status == "incomplete" and not report.intact
    assert report.todo == ("checkpoint step100: not traced yet → traced by a rerun",
                           "the random-init control: not computed yet → computed by a rerun")
    code, output = _verify(out)
    assert code == 3, output
    assert "todo       checkpoint step100: not traced yet → traced by a rerun" in output
    assert "0 findings; incomplete: 2 things left to do" in output

    run_trace(_trace_config(tiny_series, data_dir, out))
    assert verify_run(out).status == "intact"
    assert _verify(out)[0] == 0


def test_stored_activations_and_failures_are_told_apart(finished_trace: Path, tmp_path: Path) -> None:
    out = _copy(finished_trace, tmp_path)
    layout = TraceLayout(out)
    _delete(layout.part("step10"), layout.part("step100"), layout.activations("step100"))
    manifest = layout.read_manifest() or {}
    del manifest["checkpoints"]["step10"], manifest["checkpoints"]["step100"]
    manifest["failed"] = {"step100": "CUDA out of memory"}
    write_json_atomic(layout.manifest, manifest)
    assert verify_run(out).todo == (
        "checkpoint step10: activations stored, not analysed yet → its part computed by a rerun",
        "checkpoint step100: failed in the last call (CUDA out of memory) → traced again by a rerun")


def test_a_damaged_file_outranks_work_left(finished_trace: Path, tmp_path: Path) -> None:
    out = _copy(finished_trace, tmp_path)
    layout = TraceLayout(out)
    _delete(layout.part("step100"))
    manifest = layout.read_manifest() or {}
    del manifest["checkpoints"]["step100"]
    write_json_atomic(layout.manifest, manifest)
    part = layout.part("step10")
    part.write_bytes(part.read_bytes()[:100])
    report = verify_run(out)
    assert report.status == "damaged" and len(report.todo) == 1
    code, output = _verify(out)
    assert code == 1 and "NOT intact; 1 thing left to do as well." in output


def _hold_in_another_process(folder: Path) -> subprocess.Popen[str]:
    """A process that holds ``folder`` as `trusttrace trace` does, until it is killed."""
    code = ("import sys, time\nfrom trusttrace.core.runlock import hold\n"
            "with hold(sys.argv[1], 'trace'):\n    print('held', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    assert (folder / LOCK_NAME).is_file()
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)  # as a killed run would: its lock file stays behind, held by no one
    proc.wait(timeout=30)


def test_a_folder_being_written_is_incomplete_and_names_the_writer(finished_trace: Path, tmp_path: Path) -> None:
    out = _copy(finished_trace, tmp_path)
    proc = _hold_in_another_process(out)
    try:
        report = verify_run(out)
        assert report.status == "incomplete" and report.findings == ()  # the lock file is no finding
        assert report.writer is not None and report.writer["pid"] == proc.pid
        assert report.writer["command"] == "trace" and report.writer["folder"] == ""
        code, output = _verify(out)
    finally:
        _stop(proc)
    assert code == 3, output
    assert f"is being written by trusttrace process {proc.pid} (`trusttrace trace`, since " in output
    assert "findings may be work in progress" in output and "incomplete: being written" in output
    assert (out / LOCK_NAME).is_file()  # left by the killed holder: never reported, never a writer
    assert verify_run(out).status == "intact" and _verify(out)[0] == 0


def test_a_stopped_pretraining_is_incomplete_until_resumed(tmp_path: Path) -> None:
    corpus = write_text_corpus(tmp_path / "text.txt")
    out = tmp_path / "pre"
    run_pretrain(_pretrain_config(out, corpus), stop_after=7)  # stopped after step 7, its state at step 5
    report = verify_run(out)
    assert report.findings == () and report.status == "incomplete"
    assert report.todo == ("pre-training: step 7 of 12 reached → resumed by a rerun from step 5 (the saved state)",)
    code, output = _verify(out)
    assert code == 3 and "todo       pre-training: step 7 of 12 reached" in output
    run_pretrain(_pretrain_config(out, corpus))
    assert verify_run(out).status == "intact" and _verify(out)[0] == 0


def test_an_unfinished_sweep_lists_the_evaluations_left(tiny_series: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "steer"
    run_steer(_steer_config(tiny_series, data_dir, out))
    assert verify_run(out).status == "intact"
    layout = SteerLayout(out)
    _delete(layout.part("self", 1, 4.0), layout.items("self", 1, 4.0), layout.steering_csv, layout.best_csv)
    report = verify_run(out)
    assert report.findings == ()
    assert report.todo == ("sweep: 11 of 12 evaluations done → the rest evaluated by a rerun (self layer 1 α +4)",)
    assert _verify(out)[0] == 3

    write_json_atomic(layout.failed_json, {"self layer 1 α +4": "worker died"})
    assert verify_run(out).todo == (
        "sweep: 11 of 12 evaluations done → the rest evaluated by a rerun",
        "evaluation self layer 1 α +4: failed in the last call (worker died) → evaluated again by a rerun")

    proc = _hold_in_another_process(out / "source")  # a sub-run being written
    try:
        report = verify_run(out)
    finally:
        _stop(proc)
    assert report.writer is not None and report.writer["folder"] == "source" and report.status == "incomplete"

    run_steer(_steer_config(tiny_series, data_dir, out))
    assert verify_run(out).status == "intact" and _verify(out)[0] == 0


def test_a_demo_without_its_summary_and_a_probe_without_results_are_incomplete(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    write_json_atomic(demo / "demo_config.json", {"out": str(demo)})
    assert verify_run(demo).todo == (
        ("the demo: its summary is not written yet → a rerun of the demo with the same --out runs the stages left "
         "and writes summary.md"),)
    assert _verify(demo)[0] == 3
    probe = tmp_path / "probe"
    write_json_atomic(probe / "manifest.json", {"analysis": {}})
    report = verify_run(probe)
    assert report.kind == "probe" and report.status == "incomplete"
    assert report.todo == (("the probe's results: not written yet → refitted by a rerun of `trusttrace probe` "
                            "with the same --out"),)
