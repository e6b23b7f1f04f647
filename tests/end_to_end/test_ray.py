"""The Ray executor on a local 2-CPU cluster: same table as the local executor, retries, failures, resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="the Ray executor needs `pip install 'trusttrace[ray]'` (make setup does)")

from trusttrace.core.executors import ExecutorConfig
from trusttrace.models.loading import LoadConfig
from trusttrace.trace.job import TraceConfig, _checkpoint_task, run_trace


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fault-injecting tasks below
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _config(series, data_dir, out, executor="local", max_retries=2):
    return TraceConfig(model=str(series), out=str(out), data_dir=str(data_dir), dimensions=("privacy", "fairness"),
                       limit=60, load=LoadConfig(dtype="float32"),
                       executor=ExecutorConfig(kind=executor, max_retries=max_retries))


def fail_first_attempt(config, ckpt, datasets, analysis):
    """Fails the first time it sees each checkpoint (a marker file remembers), then does the real work."""
    marker = Path(config.out) / f"attempted-{ckpt.name}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure on {ckpt.name}")
    return _checkpoint_task(config, ckpt, datasets, analysis)


def always_fail_step10(config, ckpt, datasets, analysis):
    if ckpt.name == "step10":
        raise RuntimeError("step10 is broken")
    return _checkpoint_task(config, ckpt, datasets, analysis)


def slow_task(config, ckpt, datasets, analysis):
    time.sleep(3 if ckpt.name != "step0" else 0)
    return _checkpoint_task(config, ckpt, datasets, analysis)


def test_ray_gives_the_local_table(cluster, tiny_series, data_dir, tmp_path):
    local = run_trace(_config(tiny_series, data_dir, tmp_path / "local"))
    remote = run_trace(_config(tiny_series, data_dir, tmp_path / "ray", executor="ray"))
    assert remote.failed == {}
    pd.testing.assert_frame_equal(local.results, remote.results)
    assert sorted(p.name for p in (tmp_path / "ray" / "activations").iterdir()) == ["step0", "step10", "step100"]


def test_a_failed_task_is_retried_and_a_broken_one_reported(cluster, tiny_series, data_dir, tmp_path):
    retried = run_trace(_config(tiny_series, data_dir, tmp_path / "retry", executor="ray", max_retries=1),
                        checkpoint_task=fail_first_attempt)
    assert retried.failed == {} and set(retried.results.revision) == {"step0", "step10", "step100"}
    broken = run_trace(_config(tiny_series, data_dir, tmp_path / "broken", executor="ray", max_retries=1),
                       checkpoint_task=always_fail_step10)
    assert list(broken.failed) == ["step10"] and "step10 is broken" in broken.failed["step10"]
    assert set(broken.results.revision) == {"step0", "step100"}  # the others finished
    stamp = (tmp_path / "broken" / "parts" / "step0.csv").stat().st_mtime_ns
    fixed = run_trace(_config(tiny_series, data_dir, tmp_path / "broken", executor="ray"))
    assert fixed.failed == {} and set(fixed.results.revision) == {"step0", "step10", "step100"}
    assert (tmp_path / "broken" / "parts" / "step0.csv").stat().st_mtime_ns == stamp  # not recomputed


def test_a_killed_driver_resumes_without_recomputing(cluster, tiny_series, data_dir, tmp_path):
    out = tmp_path / "killed"
    script = (
        "import sys, ray\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[2])!r})\n"
        "from tests.end_to_end import test_ray as t\n"
        f"ray.init(address={cluster!r}, log_to_driver=False)\n"
        "ray.cloudpickle.register_pickle_by_value(t)\n"
        f"config = t._config({str(tiny_series)!r}, {str(data_dir)!r}, {str(out)!r}, executor='ray', max_retries=0)\n"
        "t.run_trace(config, checkpoint_task=t.slow_task)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 120
    while not (out / "parts" / "step0.csv").exists():
        assert driver.poll() is None and time.time() < deadline, "the driver ended before its first checkpoint"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = sorted(p.name for p in (out / "parts").glob("*.csv"))
    assert "step0.csv" in done_before and len(done_before) < 3
    stamp = (out / "parts" / "step0.csv").stat().st_mtime_ns
    resumed = run_trace(_config(tiny_series, data_dir, out, executor="ray"))
    assert set(resumed.results.revision) == {"step0", "step10", "step100"}
    assert (out / "parts" / "step0.csv").stat().st_mtime_ns == stamp


def test_a_steering_sweep_on_ray_matches_the_local_one(cluster, tiny_series, data_dir, tmp_path):
    from trusttrace.steer.job import SteerConfig, run_steer

    def config(out, **kw):
        return SteerConfig(source=str(tiny_series), select="step0,step100", target=str(tiny_series / "step10"),
                           dimension="privacy", layers=(1,), alphas=(-4.0, 4.0), limit=20, data_dir=str(data_dir),
                           dtype="float32", positions="all", perplexity_source="statements", out=str(out), **kw)

    local = run_steer(config(tmp_path / "local"))
    remote = run_steer(config(tmp_path / "ray", executor=ExecutorConfig(kind="ray")))
    pd.testing.assert_frame_equal(local.table, remote.table)
    assert set(remote.table.source_revision) == {"unsteered", "self", "step0", "step100", "prompt", "random",
                                                 "random-0", "random-1", "random-2"}


def test_a_file_url_run_folder_on_ray(cluster, tiny_series, data_dir, tmp_path):
    url = f"file://{tmp_path}/url-run"
    remote = run_trace(_config(tiny_series, data_dir, url, executor="ray"))
    local = run_trace(_config(tiny_series, data_dir, tmp_path / "local"))
    pd.testing.assert_frame_equal(local.results, remote.results)
    stored = pd.read_csv(tmp_path / "url-run" / "results.csv")
    assert sorted(stored.revision.unique()) == ["step0", "step10", "step100"]
    assert sorted(p.name for p in (tmp_path / "url-run" / "activations").iterdir()) == ["step0", "step10", "step100"]
