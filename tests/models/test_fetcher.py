"""The pipelined sweep overlaps structurally: checkpoint k+1's download starts before checkpoint k's work ends.

Asserted from event order and timestamps of a fake download (a sleep), never from a timed speedup, so a
loaded machine cannot fail it.
"""

from __future__ import annotations

import shutil
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

import trusttrace.trace.job as trace_mod
import trusttrace.trace.unit as unit_mod
from trusttrace.models.checkpoints import Checkpoint
from trusttrace.models.fetcher import CheckpointFetcher, Fetch, FetchConfig, Fetched
from trusttrace.models.loading import LoadConfig
from trusttrace.trace.job import TraceConfig, run_trace

Events = list[tuple[str, str, float, str]]  # (what, checkpoint, perf_counter, thread)


def _sleepy_fetch(cache: Path, events: Events, delay: float) -> Fetch:
    def fetch(ckpt: Checkpoint) -> Fetched:
        events.append(("fetch_start", ckpt.name, time.perf_counter(), threading.current_thread().name))
        time.sleep(delay)
        target = cache / ckpt.name
        shutil.copytree(ckpt.ref, target, dirs_exist_ok=True)
        events.append(("fetch_end", ckpt.name, time.perf_counter(), threading.current_thread().name))
        return Fetched(str(target), None, True)

    return fetch


def _at(events: Events, what: str, name: str) -> float:
    return next(t for w, n, t, _ in events if w == what and n == name)


@pytest.mark.parametrize("prefetch", [1, 0])
def test_next_download_starts_while_the_current_checkpoint_computes(tiny_series, data_dir, tmp_path, monkeypatch,
                                                                     prefetch):
    events: Events = []
    real = trace_mod.trace_unit

    def traced(config, ckpt, *a, **k):
        events.append(("compute_start", ckpt.name, time.perf_counter(), threading.current_thread().name))
        record = real(config, ckpt, *a, **k)
        time.sleep(0.3)  # work long enough that a download started with it is still running or done
        events.append(("compute_end", ckpt.name, time.perf_counter(), threading.current_thread().name))
        return record

    real_weights = unit_mod.local_weights

    def hashing(ckpt):
        events.append(("hash", ckpt.name, time.perf_counter(), threading.current_thread().name))
        return real_weights(ckpt)

    monkeypatch.setattr(trace_mod, "trace_unit", traced)
    monkeypatch.setattr(unit_mod, "local_weights", hashing)
    config = TraceConfig(model=str(tiny_series), out=str(tmp_path / "run"), data_dir=str(data_dir),
                         dimensions=("privacy",), limit=40, load=LoadConfig(dtype="float32"),
                         fetch=FetchConfig(prefetch=prefetch))
    run_trace(config, fetch=_sleepy_fetch(tmp_path / "cache", events, delay=0.2))
    order = ["step0", "step10", "step100"]
    assert all(thread != threading.current_thread().name for w, _, _, thread in events if w.startswith("fetch"))
    for current, following in pairwise(order):
        overlapped = _at(events, "fetch_start", following) < _at(events, "compute_end", current)
        assert overlapped is (prefetch == 1), (current, following, events)
    if prefetch == 1:  # asked for as the current checkpoint starts (not after its model loads), before hashing it
        for current, following in pairwise(order[1:]):
            assert _at(events, "fetch_start", following) - _at(events, "compute_start", current) < 0.1, events
        for name in order[1:]:
            assert _at(events, "fetch_start", name) < _at(events, "hash", name), events


def test_fetcher_downloads_ahead_in_one_background_thread(tmp_path):
    """The fetcher alone: get(k) waits for k only; k+1, asked for ahead, downloads during k's work."""
    events: Events = []
    series = []
    for step in range(3):
        folder = tmp_path / "series" / f"step{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
        series.append(Checkpoint(name=f"step{step}", step=step, ref=str(folder), revision=None))
    fetcher = CheckpointFetcher(FetchConfig(prefetch=1), fetch=_sleepy_fetch(tmp_path / "cache", events, delay=0.2))
    try:
        for k, ckpt in enumerate(series):
            fetcher.prefetch(ckpt)
            for ahead in series[k + 1:k + 2]:
                assert fetcher.room_for_one_more()
                fetcher.prefetch(ahead)
            fetched = fetcher.get(ckpt)
            events.append(("compute_start", ckpt.name, time.perf_counter(), "main"))
            time.sleep(0.3)
            events.append(("compute_end", ckpt.name, time.perf_counter(), "main"))
            fetcher.release(ckpt, fetched)
    finally:
        fetcher.close()
    for current, following in pairwise(series):
        assert _at(events, "fetch_start", following.name) < _at(events, "compute_start", current.name) + 0.1
        assert _at(events, "fetch_end", following.name) < _at(events, "compute_end", current.name)
    assert not any((tmp_path / "cache").iterdir())
