"""benchmarks/trace_e2e.py times trusttrace's stages by wrapping the functions run_trace calls: every wrapped
function must be where the trace calls it from, or the benchmark's stage seconds read zero (or it fails)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
trace_e2e = pytest.importorskip("trace_e2e")


def test_every_timed_stage_is_called_by_a_trace(tiny_series, data_dir, tmp_path):
    from trusttrace.analysis.probe_job import AnalysisConfig
    from trusttrace.models.loading import LoadConfig
    from trusttrace.trace.job import TraceConfig

    trace_e2e.check_timed()
    config = TraceConfig(model=str(tiny_series), out=str(tmp_path / "run"), dimensions=("toxicity",),
                         data_dir=str(data_dir), select="last:1", load=LoadConfig(dtype="float32"),
                         analysis=AnalysisConfig.build(protocol="paper-code", controls=()))
    seconds, results, _ = trace_e2e.run_trusttrace(config)
    assert {stage for stage in trace_e2e.TIMED.values() if seconds[stage] <= 0} == set()
    assert not results.empty
