import json
from dataclasses import replace

import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.cli import app
from trusttrace.core.executors import ExecutorConfig
from trusttrace.models.fetcher import FetchConfig, Fetched
from trusttrace.models.loading import LoadConfig
from trusttrace.runs.tables import RESULT_COLUMNS
from trusttrace.trace import job as trace_mod
from trusttrace.trace import unit as unit_mod
from trusttrace.trace.job import TraceConfig, run_trace

DIMS = ("reliability", "fairness")


def config(series, data_dir, out, analysis=None, **kw):
    return TraceConfig(model=str(series), out=str(out), dimensions=DIMS, data_dir=str(data_dir),
                       load=LoadConfig(dtype="float32"), analysis=analysis or AnalysisConfig(), **kw)


# The rows per checkpoint × dimension × layer: accuracy, its std and interval, majority, three controls (the
# untrained network's with its interval), selectivity and its interval; I(T;X), I(T;Y) with intervals, I(T;Y)'s
# null, the untrained network's values, and the two check estimators with intervals.
_PROBE_METRICS = ["accuracy", "accuracy_std", "accuracy_ci_low", "accuracy_ci_high", "majority_baseline",
                  "control_shuffled", "control_lexical", "control_random_init", "control_random_init_ci_low",
                  "control_random_init_ci_high", "selectivity", "selectivity_ci_low", "selectivity_ci_high"]
_MI_METRICS = [f"{p}_{a}{s}" for p in ("mi", "nhsic", "cka") for a in ("tx", "ty") for s in ("", "_ci_low", "_ci_high")]
PER_LAYER_METRICS = [*_PROBE_METRICS, *_MI_METRICS, "mi_ty_null_q95", "mi_ty_p", "mi_tx_random_init",
                     "mi_ty_random_init"]


def test_trace_writes_tidy_results_and_manifest(tiny_series, data_dir, tmp_path):
    result = run_trace(config(tiny_series, data_dir, tmp_path / "run"))
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(df.columns) == RESULT_COLUMNS
    assert sorted(df.metric.unique()) == sorted(PER_LAYER_METRICS)
    assert len(df) == 3 * len(DIMS) * 3 * len(PER_LAYER_METRICS)
    mi = df[df.metric.isin(["mi_tx", "mi_ty"])]
    assert (mi.n_train == 96).all() and (mi.value >= 0).all()  # the first cv fold's training rows
    assert list(dict.fromkeys(df.revision)) == ["step0", "step10", "step100"]
    acc = df[df.metric == "accuracy"]
    assert acc.value.min() > 0.9  # the planted label is in the last token
    by = df.pivot_table(index=["revision", "dimension", "layer"], columns="metric", values="value")
    assert (by.control_lexical > 0.85).all()  # ... and in the text: a bag of words reads it too,
    assert (by.selectivity.abs() < 0.1).all()  # and an untrained network: no layer is selective
    assert (by.accuracy_ci_low <= by.accuracy).all() and (by.accuracy <= by.accuracy_ci_high).all()
    assert by.control_shuffled.between(0.25, 0.75).all()
    assert (tmp_path / "run" / "controls" / "random-init.csv").is_file()
    base = df[df.metric == "majority_baseline"].value
    assert base.between(0.3, 0.7).all()
    assert pd.read_parquet(tmp_path / "run" / "results.parquet").shape == df.shape
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["settings"]["seed"] == 0 and manifest["config"]["analysis"]["probe"]["seed"] == 0
    assert manifest["versions"]["torch"]
    assert set(manifest["checkpoints"]) == {"step0", "step10", "step100"}
    assert manifest["datasets"]["fairness"]["rows"] == 120 and "finished" in manifest
    assert (tmp_path / "run" / "activations" / "step10" / "fairness.safetensors").exists()
    assert result.results.shape == df.shape


def test_rerun_resumes_after_interruption(tiny_series, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = []
    real = unit_mod.extract_last_token

    def flaky(lm, statements, *a, **kw):
        calls.append(1)
        if len(calls) == 6:  # die during the second checkpoint's second dataset (after the random-init control's two)
            raise KeyboardInterrupt
        return real(lm, statements, *a, **kw)

    monkeypatch.setattr(unit_mod, "extract_last_token", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_trace(config(tiny_series, data_dir, out))
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["step0.csv", "step0.csv.sha256.json"]  # + record
    assert set(pd.read_csv(out / "results.csv").revision) == {"step0"}  # current after each checkpoint
    assert not list(out.rglob(".*tmp*"))  # nothing half-written
    calls.clear()
    run_trace(config(tiny_series, data_dir, out))
    assert len(calls) == 1 + 2  # step10's missing dataset, then step100's two
    assert len(pd.read_csv(out / "results.csv")) == 3 * len(DIMS) * 3 * len(PER_LAYER_METRICS)
    calls.clear()
    run_trace(config(tiny_series, data_dir, out))
    assert calls == []


def test_rerun_with_other_settings_is_refused(tiny_series, data_dir, tmp_path):
    out = tmp_path / "run"
    run_trace(config(tiny_series, data_dir, out, select="first:1"))
    with pytest.raises(ValueError, match="seed: 0 → 4"):
        run_trace(config(tiny_series, data_dir, out, AnalysisConfig.build(seed=4), select="first:1"))


def test_paper_code_protocol_and_selection(tiny_series, data_dir, tmp_path):
    result = run_trace(config(tiny_series, data_dir, tmp_path / "r", AnalysisConfig.build(protocol="paper-code"),
                              select="last:1"))
    assert set(result.results.revision) == {"step100"}
    assert set(result.results.metric) == set(PER_LAYER_METRICS) - {"accuracy_std"}  # one split: no std
    probe_rows = result.results[result.results.metric.isin(["accuracy", "majority_baseline"])]
    assert (probe_rows.n_test == 24).all()
    assert (result.results[result.results.metric == "mi_tx"].n_train == 96).all()  # first 80 %


def test_analyses_can_leave_out_mi(tiny_series, data_dir, tmp_path):
    result = run_trace(config(tiny_series, data_dir, tmp_path / "r", AnalysisConfig(analyses=("probe",)),
                              select="first:1"))
    assert set(result.results.metric) == set(_PROBE_METRICS)


def test_bad_settings():
    with pytest.raises(ValueError, match="Unknown dimension"):
        TraceConfig(model="m", out="o", dimensions=("honesty",))
    with pytest.raises(ValueError, match="protocol"):
        AnalysisConfig.build(protocol="random")
    with pytest.raises(ValueError, match="choose one or more of probe, mi"):
        AnalysisConfig(analyses=("probes",))
    with pytest.raises(ValueError, match="mi_estimator"):
        AnalysisConfig.build(mi_estimator="kraskov")
    with pytest.raises(ValueError, match="executor"):
        TraceConfig(model="m", out="o", executor=ExecutorConfig(kind="dask"))
    with pytest.raises(ValueError, match="prefetch"):
        FetchConfig(prefetch=-1)


def test_cli_trace_and_errors(tiny_series, data_dir, tmp_path):
    cli = CliRunner()
    out = tmp_path / "cli"
    res = cli.invoke(app, ["trace", "--model", str(tiny_series), "--out", str(out), "--dimensions", "privacy",
                           "--data-dir", str(data_dir), "--select", "first:2", "--dtype", "float32", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "results.csv" in res.output and (out / "results.csv").exists() and (out / "log.txt").exists()
    res = cli.invoke(app, ["trace", "--model", str(tiny_series), "--out", str(tmp_path / "x"),
                           "--dimensions", "honesty"])
    assert res.exit_code == 2 and "Unknown dimension" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x").exists()  # a refused command leaves nothing on disk
    res = cli.invoke(app, ["checkpoints", str(tiny_series), "--select", "log:2"])
    assert res.exit_code == 0 and "step0" in res.output and "step100" in res.output


def test_each_checkpoint_model_is_released_before_the_next(tiny_series, data_dir, tmp_path, monkeypatch):
    """Memory must not grow with the number of checkpoints: no model outlives its checkpoint."""
    import gc
    import weakref

    alive = []
    real = unit_mod.load_model

    def tracking(*a, **kw):
        gc.collect()
        assert all(ref() is None for ref in alive), "an earlier checkpoint's model is still in memory"
        lm = real(*a, **kw)
        alive.append(weakref.ref(lm.model))
        return lm

    monkeypatch.setattr(unit_mod, "load_model", tracking)
    run_trace(config(tiny_series, data_dir, tmp_path / "run"))
    gc.collect()
    assert len(alive) == 4 and all(ref() is None for ref in alive)  # the random-init control's, and 3


def test_probe_refits_stored_activations_under_another_protocol(tiny_series, data_dir, tmp_path):
    first = run_trace(config(tiny_series, data_dir, tmp_path / "run"))
    cli = CliRunner()
    res = cli.invoke(app, ["probe", str(tmp_path / "run"), "--out", str(tmp_path / "pc"), "--protocol",
                           "paper-code", "-q"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "pc" / "results.csv")
    assert set(df.protocol) == {"paper-code"}
    assert set(df.metric) == set(PER_LAYER_METRICS) - {"accuracy_std"}
    assert list(dict.fromkeys(df.revision)) == ["step0", "step10", "step100"] and list(df.step.unique()) == [0, 10, 100]
    assert len(df[df.metric == "accuracy"]) == len(first.results[first.results.metric == "accuracy"])
    res = cli.invoke(app, ["probe", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "nothing' does not exist" in " ".join(res.output.split())


def test_trace_then_phases_end_to_end(tiny_series, data_dir, tmp_path):
    out = tmp_path / "run"
    run_trace(config(tiny_series, data_dir, out))
    res = CliRunner().invoke(app, ["phases", str(out)])
    assert res.exit_code == 0, res.output
    assert "reliability:" in res.output and "fairness:" in res.output
    phases = pd.read_csv(out / "mi" / "phases.csv")
    assert len(phases) == len(DIMS) * 3 and set(phases.peak_step) <= {0, 10, 100}
    assert (out / "mi" / "reliability_information_plane.png").exists()


def test_a_memory_url_works_as_the_run_folder_and_resumes(tiny_series, data_dir, tmp_path, monkeypatch):
    import fsspec

    url = "memory://trusttrace-tests/run"
    fs = fsspec.filesystem("memory")
    if fs.exists("/trusttrace-tests"):
        fs.rm("/trusttrace-tests", recursive=True)
    config = TraceConfig(model=str(tiny_series), out=url, data_dir=str(data_dir), dimensions=("privacy",), limit=40,
                         load=LoadConfig(dtype="float32"), select="first:2")
    first = run_trace(config)
    assert first.url == url and first.outputs["results.csv"] == f"{url}/results.csv"
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("/trusttrace-tests/run/parts", detail=False)) == [
        "step0.csv", "step0.csv.sha256.json", "step10.csv", "step10.csv.sha256.json"]  # each with its record
    calls = []
    real = trace_mod.trace_unit
    monkeypatch.setattr(trace_mod, "trace_unit", lambda *a, **k: calls.append(a[1].name) or real(*a, **k))
    full = run_trace(replace(config, select=None))  # a fresh mirror: what is done is read back from the URL
    assert calls == ["step100"]
    with fs.open("/trusttrace-tests/run/results.csv") as fh:
        assert pd.read_csv(fh).revision.unique().tolist() == ["step0", "step10", "step100"]
    assert not [p for p in fs.find("/trusttrace-tests") if p.endswith(".uploading")]
    local = run_trace(replace(config, select=None, out=str(tmp_path / "local")))
    pd.testing.assert_frame_equal(full.results, local.results)


def _recording_fetch(cache, events):
    import shutil as _shutil

    def fetch(ckpt):
        events.append(("fetch", ckpt.name))
        target = cache / ckpt.name
        _shutil.copytree(ckpt.ref, target, dirs_exist_ok=True)
        return Fetched(str(target), None, True)

    return fetch


@pytest.mark.parametrize(("prefetch", "budget", "ahead"), [(1, None, True), (0, None, False), (1, 1e-9, False)])
def test_downloads_run_ahead_within_the_budget_and_are_deleted(tiny_series, data_dir, tmp_path, monkeypatch,
                                                              prefetch, budget, ahead):
    events = []
    real = trace_mod.trace_unit

    def traced(config, ckpt, *a, **k):
        import time as _time

        _time.sleep(0.3)  # room for a background download to start
        events.append(("compute", ckpt.name))
        return real(config, ckpt, *a, **k)

    monkeypatch.setattr(trace_mod, "trace_unit", traced)
    cache = tmp_path / "cache"
    config = TraceConfig(model=str(tiny_series), out=str(tmp_path / "run"), data_dir=str(data_dir),
                         dimensions=("privacy",), limit=40, load=LoadConfig(dtype="float32"),
                         fetch=FetchConfig(prefetch=prefetch, cache_budget_gb=budget))
    run_trace(config, fetch=_recording_fetch(cache, events))
    first_compute = events.index(("compute", "step0"))
    assert (("fetch", "step10") in events[:first_compute + 1]) is ahead
    assert not any(cache.iterdir())  # every download deleted after use


def test_cache_budget_sizes():
    from trusttrace.cli._shared import gigabytes

    # decimal units as SI says, binary ones as IEC says; a bare number is GB
    assert [gigabytes(v) for v in ("50GB", "800MB", "1.5TB", "50", "500kb")] == [50.0, 0.8, 1500.0, 50.0, 0.0005]
    assert gigabytes("2 GiB") == pytest.approx(2 * 2**30 / 1e9)
    assert gigabytes("800MiB") == pytest.approx(800 * 2**20 / 1e9)
    for bad in ("lots", "5 XB", "iB", "1.2.3GB"):
        with pytest.raises(ValueError, match="50GB"):
            gigabytes(bad)
