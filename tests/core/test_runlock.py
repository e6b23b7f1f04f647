"""One writer per run folder (``trusttrace.core.runlock``): the lock, what it refuses, what it leaves, and two real
processes on one ``--out``."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from trusttrace.core import runlock
from trusttrace.core.errors import FolderLockedError, FolderVanishedError, LinkInRunFolderError
from trusttrace.core.files import write_text_atomic
from trusttrace.runs.outputs import start_over

from ..support import report

# ---------------------------------------------------------------- another process holding a folder

HOLDER = textwrap.dedent("""
    import sys, time
    from trusttrace.core.runlock import hold
    with hold(sys.argv[1], "trace"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(folder: Path, seconds: float = 60) -> subprocess.Popen[str]:
    """A process that holds ``folder`` for ``seconds`` (it prints 'held' once it does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_a_hold_makes_the_folder_and_leaves_nothing_when_nothing_was_written(tmp_path):
    folder = tmp_path / "a" / "b" / "run"
    with runlock.hold(folder, "trace") as held:
        assert (folder / runlock.LOCK_NAME).is_file() and held.created and runlock.holds(folder)
        info = json.loads((folder / runlock.LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "trace"
    assert not (tmp_path / "a").exists()  # the folders it made, removed again: a refused command leaves nothing


def test_a_hold_on_a_folder_that_holds_a_run_removes_only_its_lock(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.csv").write_text("x\n")
    with runlock.hold(folder, "trace"):
        write_text_atomic(folder / "more.txt", "y")
    assert sorted(p.name for p in folder.iterdir()) == ["more.txt", "more.txt.sha256.json", "results.csv"]


def test_holds_nest_within_a_process(tmp_path):
    with runlock.hold(tmp_path / "demo", "demo"), runlock.hold(tmp_path / "demo", "demo"):
        with runlock.hold(tmp_path / "demo" / "pretrain" / "trace", "trace"):  # a stage's own folder
            assert runlock.holds(tmp_path / "demo" / "pretrain" / "trace")
        assert runlock.holds(tmp_path / "demo")
    assert not runlock.holds(tmp_path / "demo")


def test_a_second_process_is_refused_and_named(tmp_path):
    folder = tmp_path / "run"
    proc = _holder(folder)
    try:
        expected = rf"being written by trusttrace process {proc.pid} \(`trusttrace trace`, since .*--wait"
        with pytest.raises(FolderLockedError, match=expected), runlock.hold(folder, "probe"):
            pass
        assert runlock.held_by_other(folder)["pid"] == proc.pid
        inner = folder / "steer-toxicity"
        with pytest.raises(FolderLockedError, match="lies inside"), runlock.hold(inner, "steer"):  # inside a held one
            pass
        assert not inner.exists()
        with runlock.hold(folder / "report", "report", nested_ok=True):  # a report of a run being written
            pass
        with pytest.raises(FolderLockedError, match="holds"):  # --overwrite of the folder around it
            start_over(tmp_path, True, ("demo",))
    finally:
        _stop(proc)
    assert runlock.held_by_other(folder) is None  # a holder that is gone holds nothing
    with runlock.hold(folder, "probe"):
        pass


def test_wait_queues_behind_the_holder(tmp_path):
    folder = tmp_path / "run"
    proc = _holder(folder, seconds=1.5)
    started = time.perf_counter()
    with runlock.hold(folder, "trace", wait=True):
        waited = time.perf_counter() - started
        assert proc.wait(timeout=30) == 0  # the holder let go as it ended
    assert waited > 0.5
    proc.wait(timeout=30)


def test_overwrite_refuses_a_folder_another_process_writes(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    proc = _holder(folder)
    try:
        with pytest.raises(FolderLockedError, match="being written"):
            start_over(folder, True, ("trace",))
        assert (folder / "manifest.json").is_file()
    finally:
        _stop(proc)


def test_a_folder_removed_under_its_run_stops_it(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(FolderVanishedError, match="was removed or replaced while"), runlock.hold(folder, "trace"):
        write_text_atomic(folder / "parts" / "a.csv", "x")
        shutil.rmtree(folder)
        write_text_atomic(folder / "parts" / "b.csv", "x")  # would make a new, empty folder
    assert not folder.exists()
    with pytest.raises(FolderVanishedError), runlock.hold(folder, "trace"):  # the end of the run notices
        write_text_atomic(folder / "a.csv", "x")
        shutil.rmtree(folder)


@pytest.mark.parametrize("where", ["log.txt", "parts", "report/tables/results.csv", "activations/step0"])
def test_a_link_planted_in_a_run_folder_is_refused_and_named(tmp_path, where):
    folder, victim = tmp_path / "run", tmp_path / "victim"
    victim.mkdir()
    (victim / "mine.txt").write_text("keep")
    link = folder / where
    link.parent.mkdir(parents=True)
    link.symlink_to(victim / "mine.txt" if where.endswith((".txt", ".csv")) else victim)
    expected = rf"{link} is a symbolic link .*never writes through"
    with pytest.raises(LinkInRunFolderError, match=expected), runlock.hold(folder, "trace"):
        pass
    assert (victim / "mine.txt").read_text() == "keep" and sorted(p.name for p in victim.iterdir()) == ["mine.txt"]


def test_a_link_planted_while_the_run_goes_is_never_written_through(tmp_path):
    folder, victim = tmp_path / "run", tmp_path / "victim.csv"
    victim.write_text("keep")
    with runlock.hold(folder, "trace"):
        (folder / "parts").mkdir()
        (folder / "parts" / "step0.csv").symlink_to(victim)
        with pytest.raises(LinkInRunFolderError, match="step0.csv is a symbolic link"):
            write_text_atomic(folder / "parts" / "step0.csv", "rows")
    assert victim.read_text() == "keep"


def test_the_links_trusttrace_makes_are_allowed(tmp_path):
    folder = tmp_path / "pretrain"
    (folder / "checkpoints" / "step10").mkdir(parents=True)
    (folder / "checkpoints" / "last").symlink_to("step10")
    with runlock.hold(folder, "pretrain"):
        pass


def test_stored_files_get_the_umask_mode(tmp_path):
    import torch

    from trusttrace.activations.store import save_activations

    path = tmp_path / "acts.safetensors"
    save_activations(path, torch.zeros(2, 3, 4), [0, 1], {"dataset": "x"})
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # safetensors alone writes 0600


# ---------------------------------------------------------------- two real trace processes on one --out

FAST = ["--controls", "none", "--analyses", "probe", "-q", "--dtype", "float32", "--dimensions", "toxicity"]


def _trace(series: Path, data: Path, out: Path, limit: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trusttrace", "trace", "--model", str(series), "--out", str(out), "--data-dir",
            str(data), "--limit", str(limit), *FAST, *extra]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRUSTTRACE_CACHE": str(tmp_path / "cache"), "COLUMNS": "300"}


def _table(out: Path) -> pd.DataFrame:
    cols = ["revision", "dimension", "layer", "metric", "value"]
    return pd.read_csv(out / "results.csv")[cols].sort_values(cols[:4]).reset_index(drop=True)


def concurrent_writers(series: Path, data: Path, tmp_path: Path, offsets: list[float],
                       second: tuple[str, ...] = ()) -> list[str]:
    """Two traces on one --out, the second (--limit 60, plus ``second``) started ``offset`` seconds after the
    first (--limit 40), for each offset; both start up for seconds, so either may take the folder first.

    What must hold whoever wins: a refused run exits 2 naming the holder (or, arriving after it ended, its other
    settings); the folder's table equals an undisturbed run of the settings its manifest records, never a mix;
    no lock is left. Returns, per offset, who wrote the folder and how the other was answered.
    """
    env = _env(tmp_path)
    reference = {}
    for limit in (40, 60):
        reference[limit] = tmp_path / f"reference{limit}"
        subprocess.run(_trace(series, data, reference[limit], limit), env=env, check=True, capture_output=True)
    said = []
    for i, offset in enumerate(offsets):
        out = tmp_path / f"run{i}"
        first = subprocess.Popen(_trace(series, data, out, 40), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        time.sleep(offset)
        other = subprocess.Popen(_trace(series, data, out, 60, *second), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        runs = {"first": first, "second": other}
        outputs = {name: " ".join(proc.communicate(timeout=600)[0].split()) for name, proc in runs.items()}
        codes = {name: proc.returncode for name, proc in runs.items()}
        for name, code in codes.items():
            holder = runs["second" if name == "first" else "first"].pid
            assert code == 0 or (code == 2 and (f"being written by trusttrace process {holder}" in outputs[name]
                                                or "other settings" in outputs[name])), (name, outputs[name])
        written = [name for name, code in codes.items() if code == 0]
        assert written, outputs
        if len(written) == 2:  # only an --overwrite that came once the first had finished
            assert "--overwrite" in second, outputs
        limit = json.loads((out / "manifest.json").read_text())["settings"]["limit"]
        assert limit == (40 if written == ["first"] else 60), (written, limit)
        pd.testing.assert_frame_equal(_table(out), _table(reference[limit]))  # one run's table, undisturbed
        assert not (out / runlock.LOCK_NAME).exists()
        refused = [name for name in runs if name not in written]
        how = "none refused" if not refused else (
            "being written" if "being written" in outputs[refused[0]] and "other settings" not in outputs[refused[0]]
            else "other settings")
        said.append(f"{'+'.join(written)} wrote; {how}")
    return said


def _offsets(seed: int, n: int, span: float) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(0.0, span), 2) for _ in range(n)]


def test_a_second_trace_on_the_same_folder_is_refused_and_the_first_is_undisturbed(tiny_series, data_dir, tmp_path):
    said = concurrent_writers(tiny_series, data_dir, tmp_path, [0.0, 1.0])
    assert any(s.endswith("being written") for s in said), said  # started together: one waits for nobody


@pytest.mark.slow
def test_concurrent_writers_over_twenty_seeded_start_offsets(tiny_series, data_dir, tmp_path):
    said = concurrent_writers(tiny_series, data_dir, tmp_path, _offsets(1, 20, 5.0))
    report("test_runlock", "two traces on one folder, 20 seeded start offsets: "
           + ", ".join(f"{n}× {what}" for what, n in sorted(Counter(said).items())))
    assert sum(s.endswith("being written") for s in said) >= 5, said  # many starts overlap the other's writing


@pytest.mark.slow
def test_concurrent_writers_with_overwrite_and_wait(tiny_series, data_dir, tmp_path):
    said = concurrent_writers(tiny_series, data_dir, tmp_path / "overwrite", [0.0, 0.5, 1.5, 3.0],
                              second=("--overwrite",))
    said += concurrent_writers(tiny_series, data_dir, tmp_path / "wait", [0.0, 1.0], second=("--wait",))
    assert said, said


def test_a_trace_whose_folder_is_removed_under_it_fails(tiny_series, data_dir, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_trace(tiny_series, data_dir, out, 40), env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (out / "manifest.json").exists():  # the run has started writing
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    shutil.rmtree(out)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "was removed or replaced while this `trusttrace trace` was writing it" in \
        " ".join(output.split()), output
    assert not out.exists() or not (out / "results.csv").exists()
