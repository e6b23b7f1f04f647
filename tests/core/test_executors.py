"""The local executor: units in order, in this process, and an error stops the job."""

import pytest

from trusttrace.core.executors import ExecutorConfig, map_tasks, share


def test_local_units_run_in_order_and_errors_propagate():
    config = ExecutorConfig()
    assert list(map_tasks(lambda a, b: a * b, [(1, 2), (3, 4)], config)) == [(0, 2, None), (1, 12, None)]
    assert share([1, 2], config) == [1, 2]

    def broken(x):
        raise RuntimeError(f"unit {x}")

    with pytest.raises(RuntimeError, match="unit 0"):
        list(map_tasks(broken, [(0,)], config))


def test_bad_executor_settings():
    with pytest.raises(ValueError, match="is not one of local, ray"):
        ExecutorConfig(kind="dask")
    with pytest.raises(ValueError, match="none may be negative"):
        ExecutorConfig(max_retries=-1)
