"""Checkpoints fetched ahead of use, within a disk budget, and deleted after it.

A sweep over hundreds of hub checkpoints spends as long downloading as computing; the fetcher downloads
the next ``prefetch`` checkpoints in a background thread while the current one computes, stops while
the downloaded-and-not-yet-deleted checkpoints would exceed ``cache_budget_gb``, and deletes what it
downloaded once a checkpoint is done (unless ``keep_checkpoints``).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import OptionError
from .checkpoints import Checkpoint
from .hub import delete_revision, fetch_checkpoint, is_cached

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchConfig:
    """How hub checkpoints are downloaded around the computation (never changes the numbers)."""

    prefetch: int = 1  # checkpoints downloaded ahead of the one computing (0: download, then compute)
    cache_budget_gb: float | None = None  # cap on downloaded-and-not-yet-deleted checkpoints
    keep_checkpoints: bool = False  # keep downloads after use

    def __post_init__(self) -> None:
        if self.prefetch < 0:
            raise OptionError(f"prefetch={self.prefetch}: give 0 (download, then compute) or more.")
        if self.cache_budget_gb is not None and self.cache_budget_gb <= 0:
            raise OptionError(f"cache_budget_gb={self.cache_budget_gb}: give a positive size, e.g. 50GB.")


@dataclass(frozen=True)
class Fetched:
    """A checkpoint ready to load."""

    source: str  # what to load: a folder, or the checkpoint's own reference
    commit: str | None
    downloaded: bool  # whether this fetcher downloaded it (and so deletes it after use)


# A replacement for the hub download, for every checkpoint (a benchmark's slow download, another store).
Fetch = Callable[[Checkpoint], Fetched]


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it is not a folder)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


class CheckpointFetcher:
    """Fetches checkpoints in a background thread; deletes those it downloaded after use.

    Only hub checkpoints (those with a revision) are fetched by default; ``fetch`` replaces that for every
    checkpoint.
    """

    def __init__(self, config: FetchConfig, *, cache_dir: str | None = None, allow_pickle: bool = False,
                 fetch: Fetch | None = None) -> None:
        self.config, self.cache_dir, self.allow_pickle, self.custom = config, cache_dir, allow_pickle, fetch
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: dict[str, Future[Fetched]] = {}
        self.held_bytes: dict[str, int] = {}  # fetched and not yet released
        self.last_size = 0

    def _fetch(self, ckpt: Checkpoint) -> Fetched:
        started = time.perf_counter()
        log.debug("fetch %s: started", ckpt.name)
        got = self.custom(ckpt) if self.custom is not None else self._hub_fetch(ckpt)
        log.debug("fetch %s: done in %.2f s", ckpt.name, time.perf_counter() - started)
        self.last_size = folder_bytes(Path(got.source)) if got.downloaded else 0
        self.held_bytes[ckpt.name] = self.last_size
        return got

    def _hub_fetch(self, ckpt: Checkpoint) -> Fetched:
        was_cached = is_cached(ckpt.ref, ckpt.revision, self.cache_dir)
        folder, commit = fetch_checkpoint(ckpt.ref, ckpt.revision, cache_dir=self.cache_dir,
                                          allow_pickle=self.allow_pickle)
        return Fetched(str(folder), commit, not was_cached)

    def needs_fetch(self, ckpt: Checkpoint) -> bool:
        return self.custom is not None or ckpt.revision is not None

    def room_for_one_more(self) -> bool:
        """Whether another download ahead fits the cache budget (the last download's size as the guess)."""
        budget = self.config.cache_budget_gb
        if budget is None:
            return True
        if not self.last_size:  # no download measured yet: do not guess, fetch one at a time until one is
            return False
        return sum(self.held_bytes.values()) + self.last_size <= budget * 1e9

    def prefetch(self, ckpt: Checkpoint) -> None:
        """Start fetching ``ckpt`` in the background (once)."""
        if self.needs_fetch(ckpt) and ckpt.name not in self.pending:
            self.pending[ckpt.name] = self.pool.submit(self._fetch, ckpt)

    def get(self, ckpt: Checkpoint) -> Fetched:
        """``ckpt`` ready to load, waiting for its download if one runs."""
        if not self.needs_fetch(ckpt):
            return Fetched(ckpt.ref, ckpt.commit, False)
        self.prefetch(ckpt)
        return self.pending.pop(ckpt.name).result()

    def release(self, ckpt: Checkpoint, fetched: Fetched | None) -> None:
        """``ckpt`` is done: delete what this fetcher downloaded for it, unless downloads are kept."""
        self.held_bytes.pop(ckpt.name, None)
        if fetched is None or not fetched.downloaded or self.config.keep_checkpoints:
            return
        if self.custom is not None:
            shutil.rmtree(fetched.source, ignore_errors=True)
        elif fetched.commit is not None:
            freed = delete_revision(fetched.commit, self.cache_dir)
            log.info("deleted checkpoint %s (%s)", fetched.commit[:12], freed)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
