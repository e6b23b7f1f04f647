"""The one place trusttrace talks to Ray: run a function as tasks and hear about each as it finishes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any


def ensure_ray(address: str | None) -> Any:
    """The ``ray`` module, initialised: joins the cluster at ``address`` (None starts a local one) unless
    Ray is already running in this process."""
    try:
        import ray
    except ImportError as err:
        raise ValueError("--executor ray needs Ray: `pip install 'trusttrace[ray]'`.") from err
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def ray_map(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, address: str | None, cpus: float,
            gpus: float, max_retries: int) -> Iterator[tuple[int, Any, str | None]]:
    """Run ``fn(*call)`` for every call as a Ray task; yield ``(index, result, error)`` as each finishes.

    A task that raises (or whose worker dies) is retried ``max_retries`` times; after that it is yielded
    with ``error`` set ("Type: message") and ``result`` None, and the others go on.
    """
    ray = ensure_ray(address)
    task = ray.remote(fn).options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=True)
    futures = {task.remote(*call): i for i, call in enumerate(calls)}
    pending = list(futures)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        index = futures[done[0]]
        try:
            yield index, ray.get(done[0]), None
        except ray.exceptions.RayError as err:  # the task's own error after its retries, or a lost worker
            cause = getattr(err, "cause", None) or err
            yield index, None, f"{type(cause).__name__}: {cause}"
