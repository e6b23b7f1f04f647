"""Where a job's units of work run: in this process, one after another, or as Ray tasks on a cluster.

``trace`` (one unit per checkpoint) and ``steer`` (one unit per evaluation) both hand their units to
``map_tasks``, which yields ``(index, result, error)`` as each unit finishes. Locally a unit that raises
stops the job (the error is the user's to see); on Ray a unit is retried ``max_retries`` times and then
reported with its error while the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import OptionError
from .names import EXECUTORS

R = TypeVar("R")


@dataclass(frozen=True)
class ExecutorConfig:
    """How a job's units of work are run (never changes the numbers)."""

    kind: str = "local"  # local | ray
    ray_address: str | None = None  # None: start a local Ray; "auto" or HOST:PORT: join a cluster
    gpus_per_task: float = 0.0
    cpus_per_task: float = 1.0
    max_retries: int = 2  # Ray: attempts after the first, per unit

    def __post_init__(self) -> None:
        EXECUTORS.check(self.kind)
        if self.max_retries < 0 or self.gpus_per_task < 0 or self.cpus_per_task < 0:
            raise OptionError(f"max_retries={self.max_retries}, gpus_per_task={self.gpus_per_task}, "
                             f"cpus_per_task={self.cpus_per_task}: none may be negative.")


def ensure_ray(address: str | None) -> Any:
    """The ``ray`` module, initialised: joins the cluster at ``address`` (None starts a local one) unless
    Ray is already running in this process."""
    try:
        import ray
    except ImportError as err:
        raise OptionError("--executor ray needs Ray: `pip install 'trusttrace[ray]'`.") from err
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def share(obj: R, config: ExecutorConfig) -> R:
    """``obj`` as the units receive it: itself locally; on Ray, put in the object store once rather than
    sent with every task (Ray hands the object, not the reference, to a task that takes it as an argument)."""
    if config.kind == "ray":
        ref: R = ensure_ray(config.ray_address).put(obj)
        return ref
    return obj


def map_tasks(fn: Callable[..., R], calls: Sequence[tuple[Any, ...]], config: ExecutorConfig
              ) -> Iterator[tuple[int, R | None, str | None]]:
    """Run ``fn(*call)`` for every call; yield ``(index, result, error)`` as each finishes.

    ``local``: in this process, in order; an exception propagates. ``ray``: one task per call with the
    configured resources; a task that raises (or whose worker dies) is retried ``max_retries`` times, then
    yielded with ``error`` set ("Type: message") and ``result`` None.
    """
    if config.kind == "local":
        for i, call in enumerate(calls):
            yield i, fn(*call), None
        return
    ray = ensure_ray(config.ray_address)
    task = ray.remote(fn).options(num_cpus=config.cpus_per_task, num_gpus=config.gpus_per_task,
                                  max_retries=config.max_retries, retry_exceptions=True)
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
