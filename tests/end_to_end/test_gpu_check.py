"""benchmarks/gpu_check.py on the CPU: every part a GPU loan runs, the same functions, only the device differs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
gpu_check = pytest.importorskip("gpu_check")


def test_every_part_runs_on_the_cpu_and_names_what_it_skipped(tiny_models, data_dir, capsys):
    code = gpu_check.main(["--model", str(tiny_models["llama"]), "--data-dir", str(data_dir), "--device", "cpu",
                           "--limit", "24", "--prompts", "4", "--new-tokens", "4"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report["failed"] == [] and report["device"] == "cpu" and report["n_statements"] == 24
    parts = report["parts"]
    assert set(parts) == {"load", "equality", "attention", "throughput", "generation"}
    assert {"cuda", "memory"} <= set(report["skipped"]) and "CUDA" in report["skipped"]["memory"]
    for dtype, tolerance in gpu_check.TOLERANCE.items():
        found = parts["equality"][dtype]
        assert found["tolerance"] == tolerance and found["dtype_loaded"] == dtype
        assert 0 <= found["packed_vs_padded"] <= tolerance and found["padded_vs_cpu_float32"] <= tolerance
    assert parts["equality"]["float32"]["padded_vs_cpu_float32"] == 0  # the CPU reference itself
    attention = parts["attention"]
    assert attention["packing_used"] is True and "math" in attention
    assert isinstance(attention["math"]["prefix-tree"], float)  # the math backend takes any mask
    throughput = parts["throughput"]
    assert throughput["trusttrace_tokens_per_s"] > 0 and throughput["max_rel_diff_vs_hf"] < 1e-3
    assert ("nnsight_tokens_per_s" in throughput) != ("throughput.nnsight" in report["skipped"])
    generation = parts["generation"]
    assert {"alpha_0", "alpha_-2", "alpha_2"} <= set(generation)
    assert all(generation[k]["new_tokens"] > 0 for k in ("alpha_0", "alpha_-2", "alpha_2"))


def test_a_difference_above_the_tolerance_fails_the_check(tiny_models, data_dir, capsys, monkeypatch):
    monkeypatch.setitem(gpu_check.TOLERANCE, "bfloat16", 0.0)  # no bf16 extraction equals float32 exactly
    code = gpu_check.main(["--model", str(tiny_models["llama"]), "--data-dir", str(data_dir), "--device", "cpu",
                           "--limit", "12", "--prompts", "2", "--new-tokens", "2"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and any(f.startswith("equality bfloat16 packed_vs_cpu_float32") for f in report["failed"])
