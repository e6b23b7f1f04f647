"""The random-init control's activations, traced once per machine (``trusttrace.activations.random_init_cache``)."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import trusttrace.trace.unit as unit_mod
from trusttrace.activations import random_init_cache as cache
from trusttrace.activations.store import load_activations
from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.cli import app
from trusttrace.core.errors import OptionError
from trusttrace.models.loading import LoadConfig
from trusttrace.runs.layout import TraceLayout
from trusttrace.trace.job import TraceConfig, run_trace


def _config(series, data_dir, out, select, seed=0, protocol="paper-code", **kw):
    analysis = AnalysisConfig.build(analyses=("probe",), protocol=protocol, controls=("random-init",), seed=seed)
    return TraceConfig(model=str(series), out=str(out), dimensions=("privacy", "fairness"), limit=40,
                       data_dir=str(data_dir), select=select, load=LoadConfig(dtype="float32"), analysis=analysis, **kw)


def _count_extractions(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = unit_mod.extract_last_token

    def counted(lm, statements, *args, **kwargs):
        calls.append(lm.info.revision or "")
        return real(lm, statements, *args, **kwargs)

    monkeypatch.setattr(unit_mod, "extract_last_token", counted)
    return calls


def _count_control_rows(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = unit_mod.random_init_rows
    monkeypatch.setattr(unit_mod, "random_init_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _kinds() -> list[str]:
    return sorted("rows" if e.path.name.endswith(cache.ROWS_SUFFIX) else "activations" for e in cache.entries())


def _controls(out) -> dict[str, torch.Tensor]:
    layout = TraceLayout(out)
    return {name: load_activations(layout.control_activation(name)).layers for name in ("privacy", "fairness")}


def test_a_second_trace_of_the_same_model_reads_the_untrained_network_from_the_cache(tiny_series, data_dir,
                                                                                      tmp_path, monkeypatch):
    calls, analysed = _count_extractions(monkeypatch), _count_control_rows(monkeypatch)
    first = run_trace(_config(tiny_series, data_dir, tmp_path / "a", "last:1"))
    assert sum("random-init" in c for c in calls) == 2 and len(analysed) == 2  # both datasets
    assert _kinds() == ["activations"] * 2 + ["rows"] * 2
    calls.clear()
    analysed.clear()
    second = run_trace(_config(tiny_series, data_dir, tmp_path / "b", "first:1"))  # another checkpoint, folder
    assert calls and not any("random-init" in c for c in calls)  # only the checkpoint itself was extracted
    assert analysed == []  # and the control's probes were read, not fitted again
    a, b = _controls(tmp_path / "a"), _controls(tmp_path / "b")
    assert all(torch.equal(a[name], b[name]) for name in a)  # the very activations a fresh extraction gave
    random_rows = [r[r.metric.str.startswith("control_random_init")].drop(columns=["revision", "step", "commit"])
                   .reset_index(drop=True) for r in (first.results, second.results)]
    pd.testing.assert_frame_equal(*random_rows)
    meta = load_activations(TraceLayout(tmp_path / "b").control_activation("privacy")).metadata
    assert meta["revision"] == "random-init" and len(meta[cache.KEY_FIELD]) == 64
    calls.clear()
    run_trace(_config(tiny_series, data_dir, tmp_path / "c", "last:1", protocol="cv"))  # another analysis
    assert not any("random-init" in c for c in calls) and len(analysed) == 2  # same network, probes fitted anew
    assert _kinds() == ["activations"] * 2 + ["rows"] * 4


def test_another_seed_misses_and_a_damaged_file_is_extracted_again(tiny_series, data_dir, tmp_path, monkeypatch,
                                                                    caplog):
    run_trace(_config(tiny_series, data_dir, tmp_path / "a", "last:1"))
    calls = _count_extractions(monkeypatch)
    run_trace(_config(tiny_series, data_dir, tmp_path / "b", "last:1", seed=1))  # another untrained network
    assert sum("random-init" in c for c in calls) == 2 and _kinds() == ["activations"] * 4 + ["rows"] * 4
    victim = next(e.path for e in cache.entries() if e.path.suffix == ".safetensors")
    victim.write_bytes(victim.read_bytes()[:-30])  # truncated in the cache
    rows = next(e.path for e in cache.entries() if e.path.name.endswith(cache.ROWS_SUFFIX))
    rows.write_text(rows.read_text().replace("0.", "9.", 1))  # overwritten in the cache
    calls.clear()
    analysed = _count_control_rows(monkeypatch)
    run_trace(_config(tiny_series, data_dir, tmp_path / "c", "last:1"))
    run_trace(_config(tiny_series, data_dir, tmp_path / "d", "last:1", seed=1))
    assert sum("random-init" in c for c in calls) == 1  # the damaged one alone, extracted again and kept again
    assert len(analysed) == 1  # and the overwritten rows alone computed again
    assert "cannot be used" in caplog.text and len(cache.entries()) == 8
    assert all(torch.equal(x, y) for x, y in zip(_controls(tmp_path / "a").values(),
                                                  _controls(tmp_path / "c").values()))


def test_off_keeps_nothing(tiny_series, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, "off")
    calls = _count_extractions(monkeypatch)
    for out in ("a", "b"):
        run_trace(_config(tiny_series, data_dir, tmp_path / out, "last:1"))
    assert sum("random-init" in c for c in calls) == 4 and cache.entries() == []
    assert not (tmp_path / "cache" / "random-init").exists()


def test_the_key_is_the_architecture_not_the_checkpoint():
    config = {"hidden_size": 64, "num_hidden_layers": 3, "_name_or_path": "/series/step100",
              "transformers_version": "5.0", "torch_dtype": "float32", "model_type": "llama"}
    base: dict[str, Any] = {"config": config, "tokenizer": "t" * 64, "seed": 0, "dataset_sha256": "d" * 64,
                            "n_rows": 40, "extraction": {"max_tokens": 4096, "token_position": "last"},
                            "dtype": "float32", "device": "cpu"}
    key = cache.random_init_key(**base)
    other_checkpoint = {**config, "_name_or_path": "/series/step0", "torch_dtype": "bfloat16"}
    assert cache.random_init_key(**{**base, "config": other_checkpoint}) == key
    changes = [{"config": {**config, "hidden_size": 32}}, {"tokenizer": "u" * 64}, {"seed": 1},
               {"dataset_sha256": "e" * 64}, {"n_rows": 41},
               {"extraction": {"max_tokens": 512, "token_position": "last"}}, {"dtype": "bfloat16"}, {"device": "cuda"}]
    assert len({cache.random_init_key(**{**base, **change}) for change in changes} | {key}) == len(changes) + 1


def test_the_least_recently_used_files_go_first(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "c"))
    source = tmp_path / "x.safetensors"
    source.write_bytes(b"0" * 1000)
    monkeypatch.setenv(cache.ENV_LIMIT, str(2500 / 1e9))
    for i, key in enumerate("abc"):
        cache.keep(key * 64, source)
        path = tmp_path / "c" / f"{key * 64}.safetensors"
        os.utime(path, (1000 + i, 1000 + i))  # a, then b, then c
    assert [e.path.name[0] for e in cache.entries()] == ["b", "c"]  # a was evicted when c came
    os.utime(tmp_path / "c" / f"{'b' * 64}.safetensors", (2000, 2000))  # b used since
    cache.keep("d" * 64, source)
    assert sorted(e.path.name[0] for e in cache.entries()) == ["b", "d"]
    monkeypatch.setenv(cache.ENV_LIMIT, "0.0000005")  # 500 bytes: smaller than any file
    cache.keep("e" * 64, source)
    assert sorted(e.path.name[0] for e in cache.entries()) == ["b", "d"]  # too large to keep: nothing evicted


def test_bad_settings_teach_and_the_command_clears(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_LIMIT, "-1")
    with pytest.raises(OptionError, match="size limit in GB"):
        cache.limit_bytes()
    monkeypatch.delenv(cache.ENV_LIMIT)
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(cache.ENV, str(tmp_path / "file"))
    with pytest.raises(OptionError, match="is a file, not a folder"):
        cache.cache_root()
    monkeypatch.setenv(cache.ENV, str(tmp_path / "c"))
    source = tmp_path / "x.safetensors"
    source.write_bytes(b"0" * 1000)
    cache.keep("a" * 64, source)
    shown = CliRunner().invoke(app, ["cache"])
    assert shown.exit_code == 0 and "1 files" in shown.output
    cleared = CliRunner().invoke(app, ["cache", "--clear"])
    assert cleared.exit_code == 0 and "removed 1 cached files" in cleared.output and cache.entries() == []
