"""Fault injection: runs killed at random writes, stored files damaged between reruns; every rerun must end
with the tables of an uninterrupted run, and no damaged file may be used.

A kill is a ``Killed`` BaseException raised where a write is published (``core_files._move``: before a record, before
the file's rename, or between the rename and its final record), as SIGKILL would stop the process there:
nothing after it runs, and half the time the temporary file is left behind under another process's name.
Between reruns a random stored file (or a record) is truncated or has bytes overwritten. A damaged settings
file (manifest.json, steer_config.json, pretrain_config.json) stops the rerun with a message saying what to
delete; the test follows it, as a user would. The counts of kills and damages are shown at the end of every run
and named in the assertion messages.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.core import files as core_files
from trusttrace.core.errors import DamagedFileError
from trusttrace.models.loading import LoadConfig
from trusttrace.runs.integrity import remove
from trusttrace.runs.verify import verify_run
from trusttrace.steer.job import SteerConfig, run_steer
from trusttrace.testing import write_text_corpus
from trusttrace.trace.job import TraceConfig, run_trace
from trusttrace.training.pretrain import PretrainConfig, run_pretrain

from ..support import report

SETTINGS_FILES = ("manifest.json", "steer_config.json", "pretrain_config.json")
_TMP = re.compile(r"\.tmp-\d+$")


class Killed(BaseException):
    """The process was killed (in process: nothing after the raise runs, as after SIGKILL)."""


class Faults:
    """Kills at the k-th published write (k random), and damage to random stored files; counts both."""

    def __init__(self, seed: int, max_gap: int) -> None:
        self.rng = random.Random(seed)
        self.max_gap = max_gap
        self.countdown = 0
        self.kills = self.damages = self.advice_followed = 0

    def arm(self) -> None:
        self.countdown = self.rng.randint(1, self.max_gap)

    def disarm(self) -> None:
        self.countdown = 0

    def move(self, source: Path, target: Path) -> None:
        if self.countdown > 0:
            self.countdown -= 1
            if self.countdown == 0:
                self.kills += 1
                if source.is_file() and self.rng.random() < 0.5:  # the temporary file SIGKILL leaves behind
                    data = source.read_bytes()
                    leftover = source.with_name(_TMP.sub(".tmp-4194304", source.name))
                    leftover.write_bytes(data[: self.rng.randint(0, len(data))])
                raise Killed
        os.replace(source, target)

    def damage(self, root: Path) -> str:
        """Truncate, or overwrite bytes of, one random stored file under ``root`` (records included)."""
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.name != "log.txt"
                       and not _TMP.search(p.name) and p.stat().st_size > 0)
        if not files:
            return ""
        path = self.rng.choice(files)
        data = bytearray(path.read_bytes())
        if self.rng.random() < 0.5:
            data = data[: self.rng.randint(0, len(data) - 1)]
        else:
            start = self.rng.randrange(len(data))
            for i in range(start, min(len(data), start + self.rng.randint(1, 4096))):
                data[i] ^= 0xFF
        path.write_bytes(bytes(data))
        self.damages += 1
        return path.relative_to(root).as_posix()

    def summary(self, what: str) -> str:
        return (f"{what}: {self.kills} kills, {self.damages} damaged files, {self.advice_followed} damaged "
                "settings files deleted as their message said")


def _until_finished(run, root: Path, faults: Faults, kills: int, damage_p: float):
    """Run ``run()`` until it finishes: killed ``kills`` times first, a file damaged after a kill with
    probability ``damage_p``; a damaged settings file is deleted as its error says."""
    for _ in range(20 * kills):
        if faults.kills < kills:
            faults.arm()
        else:
            faults.disarm()
        try:
            return run()
        except Killed:
            if faults.rng.random() < damage_p:
                faults.damage(root)
        except DamagedFileError as err:
            name = Path(err.path).name
            assert name in SETTINGS_FILES and "delete" in str(err), f"{err} ({faults.summary('so far')})"
            remove(Path(err.path))
            faults.advice_followed += 1
    raise AssertionError(f"never finished: {faults.summary('so far')}")


def _intact(root: Path, faults: Faults, what: str) -> None:
    report = verify_run(root)
    bad = [f for f in report.findings if f.status != "leftover"]
    assert not bad, f"{faults.summary(what)}; left damaged after the last rerun: {bad}"


# ---------------------------------------------------------------- trace


def _trace_config(series: Path, data_dir: Path, out: Path) -> TraceConfig:
    analysis = AnalysisConfig.build(analyses=("probe",), protocol="paper-code", controls=("random-init",))
    return TraceConfig(model=str(series), out=str(out), dimensions=("privacy",), limit=40, data_dir=str(data_dir),
                       load=LoadConfig(dtype="float32"), analysis=analysis)


def _kill_trace(tiny_series, data_dir, tmp_path, monkeypatch, seed: int, kills: int, require: bool = True) -> Faults:
    reference = run_trace(_trace_config(tiny_series, data_dir, tmp_path / "reference")).results
    out = tmp_path / "run"
    faults = Faults(seed, max_gap=14)
    monkeypatch.setattr(core_files, "_move", faults.move)
    result = _until_finished(lambda: run_trace(_trace_config(tiny_series, data_dir, out)), out, faults, kills, 0.6)
    monkeypatch.undo()
    report("test_faults", faults.summary("run_trace"))
    pd.testing.assert_frame_equal(result.results, reference, obj=faults.summary("run_trace"))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), reference)
    _intact(out, faults, "run_trace")
    assert faults.kills >= kills or not require, faults.summary("run_trace")
    return faults


def test_trace_survives_random_kills_and_damage(tiny_series, data_dir, tmp_path, monkeypatch):
    _kill_trace(tiny_series, data_dir, tmp_path, monkeypatch, seed=14, kills=20)


# ---------------------------------------------------------------- steer


def _steer_config(tiny_series, data_dir, out: Path) -> SteerConfig:
    return SteerConfig(source=str(tiny_series), target=str(tiny_series / "step100"), dimension="privacy",
                       out=str(out), select="first:1", layers=(1,), alphas=(-4.0, 4.0), limit=10, source_limit=40,
                       data_dir=str(data_dir), dtype="float32")


def test_steer_survives_random_kills_and_damage(tiny_series, data_dir, tmp_path, monkeypatch):
    reference = run_steer(_steer_config(tiny_series, data_dir, tmp_path / "reference"))
    out = tmp_path / "run"
    faults = Faults(seed=15, max_gap=30)
    monkeypatch.setattr(core_files, "_move", faults.move)
    result = _until_finished(lambda: run_steer(_steer_config(tiny_series, data_dir, out)), out, faults, 20, 0.6)
    monkeypatch.undo()
    report("test_faults", faults.summary("run_steer"))
    pd.testing.assert_frame_equal(result.table, reference.table, obj=faults.summary("run_steer"))
    pd.testing.assert_frame_equal(pd.read_csv(out / "best.csv"), pd.read_csv(tmp_path / "reference" / "best.csv"))
    _intact(out, faults, "run_steer")


# ---------------------------------------------------------------- pretrain


def _pretrain_config(out: Path, corpus: Path) -> PretrainConfig:
    return PretrainConfig(out=str(out), corpus=str(corpus), vocab_size=300, hidden_size=32, n_layers=2, n_heads=2,
                          intermediate_size=64, seq_len=32, batch_size=4, steps=12, warmup=3, checkpoints="0,5,12",
                          tokenizer_chars=100_000, heldout_blocks=4, precision="fp32")


def _checkpoint_bytes(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted((run / "checkpoints").rglob("*"))
            if p.is_file() and not p.is_symlink() and not _TMP.search(p.name)}


def _table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns="seconds")  # wall time: the one column no rerun repeats


def test_pretrain_survives_random_kills_and_damage(tmp_path, monkeypatch):
    corpus = write_text_corpus(tmp_path / "text.txt")
    run_pretrain(_pretrain_config(tmp_path / "reference", corpus))
    out = tmp_path / "run"
    faults = Faults(seed=16, max_gap=12)
    monkeypatch.setattr(core_files, "_move", faults.move)
    _until_finished(lambda: run_pretrain(_pretrain_config(out, corpus)), out, faults, 20, 0.5)
    monkeypatch.undo()
    report("test_faults", faults.summary("run_pretrain"))
    what = faults.summary("run_pretrain")
    assert _checkpoint_bytes(out) == _checkpoint_bytes(tmp_path / "reference"), what
    for name in ("loss.csv", "checkpoints.csv"):
        pd.testing.assert_frame_equal(_table(out / name), _table(tmp_path / "reference" / name), obj=what)
    _intact(out, faults, "run_pretrain")


# ---------------------------------------------------------------- bigger, and a real SIGKILL


@pytest.mark.slow
def test_trace_survives_many_more_kills(tiny_series, data_dir, tmp_path, monkeypatch):
    """Runs from scratch with their own seeds, each killed up to 20 times, until 100 kills or more in all (one
    run cannot take 100: after about twenty resumes too little of it is left to kill)."""
    campaigns: list[Faults] = []
    while sum(f.kills for f in campaigns) < 100 and len(campaigns) < 12:
        i = len(campaigns)
        campaigns.append(_kill_trace(tiny_series, data_dir, tmp_path / f"run{i}", monkeypatch, seed=114 + i, kills=20,
                                     require=False))
    kills, damages = sum(f.kills for f in campaigns), sum(f.damages for f in campaigns)
    report("test_faults", f"run_trace, {len(campaigns)} runs: {kills} kills, {damages} damaged files")
    assert kills >= 100 and damages >= 30, (kills, damages)


@pytest.mark.slow
def test_trace_survives_sigkill_of_the_command(tiny_series, data_dir, tmp_path):
    """``python -m trusttrace trace`` killed with SIGKILL at random times, then run to the end."""
    reference = run_trace(_trace_config(tiny_series, data_dir, tmp_path / "reference")).results
    out = tmp_path / "run"
    command = [sys.executable, "-m", "trusttrace", "trace", "--model", str(tiny_series), "--out", str(out),
               "--dimensions", "privacy", "--limit", "40", "--data-dir", str(data_dir), "--dtype", "float32",
               "--analyses", "probe", "--protocol", "paper-code", "--controls", "random-init", "--quiet"]
    rng, kills = random.Random(7), 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(8):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 12.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report("test_faults", f"trace command: {kills} SIGKILLs")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), reference, obj=f"{kills} SIGKILLs")
    assert all(f.status == "leftover" for f in verify_run(out).findings)
