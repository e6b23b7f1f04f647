"""What a rerun of a ``trace`` keeps: intact parts, activations and controls; everything else is traced again.

A checkpoint is done when its part (``parts/<revision>.csv``) matches its record and holds the columns of
``tables.RESULT_COLUMNS``, every activation file of it that is present is intact, and (for a local checkpoint)
its weights still have the fingerprint its trace recorded (``integrity.weights_fingerprint``). A damaged or
unrecorded file is reported by name and recomputed, never used; the results table is always rebuilt from the
intact parts only. A folder of other settings is refused when it holds a finished checkpoint and started over
(with a warning) when it holds none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .checkpoints import Checkpoint
from .integrity import check, remove, usable, weights_fingerprint, weights_stat
from .layout import TraceLayout, describe_diff, read_csv, refuse_other_settings
from .tables import RESULT_COLUMNS

log = logging.getLogger(__name__)


def read_part(path: Path, warn: bool = True) -> pd.DataFrame | None:
    """A finished checkpoint's rows, or None when its part is missing, damaged, unrecorded or of other
    columns than ``tables.RESULT_COLUMNS`` (each reported unless ``warn`` is off: the checkpoint is traced
    again)."""
    redo = f"checkpoint {path.stem}'s part is not used; the checkpoint is traced again."
    if not (usable(path, redo) if warn else check(path).ok):
        return None
    frame = read_csv(path)
    if frame is None or list(frame.columns) != RESULT_COLUMNS:
        if warn:
            log.warning("%s has the columns %s, not %s; %s", path, None if frame is None else list(frame.columns),
                        RESULT_COLUMNS, redo)
        return None
    return frame


def finished(layout: TraceLayout, revision: str, warn: bool = True) -> bool:
    """Whether ``revision``'s part is intact (its checkpoint counts as done)."""
    return read_part(layout.part(revision), warn) is not None


def merge_parts(layout: TraceLayout) -> pd.DataFrame:
    """The finished checkpoints' rows as one table, written as the results: only intact parts count."""
    frames = [read_part(p, warn=False) for p in sorted(layout.parts.glob("*.csv"))]
    present = [f for f in frames if f is not None]
    frame = pd.concat(present, ignore_index=True) if present else pd.DataFrame(columns=RESULT_COLUMNS)
    return layout.write_results(frame)


def clear(layout: TraceLayout) -> None:
    """Delete everything a trace writes in ``layout`` (not ``log.txt``, nor the user's files): a fresh start."""
    for path in (layout.manifest, layout.results_csv, layout.results_parquet, layout.parts, layout.activations_dir,
                 layout.root / "controls", layout.mi, layout.vectors.root):
        remove(path)


def local_weights(ckpt: Checkpoint) -> str | None:
    """The fingerprint of a local checkpoint's weights (``integrity.weights_fingerprint``); None for the hub."""
    return weights_fingerprint(ckpt.ref) if ckpt.revision is None else None


def _intact_if_present(paths: Iterable[Path], redo: str) -> bool:
    return all(usable(path, redo) for path in paths if path.exists())


def checkpoint_done(ckpt: Checkpoint, datasets: Iterable[str], layout: TraceLayout,
                    record: Mapping[str, Any] | None) -> bool:
    """Whether ``ckpt`` is finished and intact (see the module docstring); a warning says why not when its
    part is there."""
    if not finished(layout, ckpt.name):
        return False
    before, stat_before = (record or {}).get("weights_sha256"), (record or {}).get("weights_stat")
    unchanged = stat_before is not None and ckpt.revision is None and weights_stat(ckpt.ref) == stat_before
    weights = None if unchanged else local_weights(ckpt)  # read the weights in full only when their stat moved
    if weights is not None and before is not None and weights != before:
        log.warning("checkpoint %s: its weights at %s changed since it was traced (sha256 %s… → %s…); it is traced "
                    "again, its part and activations replaced.", ckpt.name, ckpt.ref, before[:12], weights[:12])
        return False
    return _intact_if_present((layout.activation(ckpt.name, name) for name in datasets),
                              f"checkpoint {ckpt.name} is traced again.")


def control_done(layout: TraceLayout, datasets: Iterable[str]) -> bool:
    """Whether the random-init control's table is intact and covers ``datasets``, its activations undamaged."""
    names = list(datasets)
    redo = "the random-init control is computed again."
    if not usable(layout.random_init_csv, redo):
        return False
    done = read_csv(layout.random_init_csv)
    if done is None or "dimension" not in done or not set(done.dimension) >= set(names):
        return False
    return _intact_if_present((layout.control_activation(name) for name in names), redo)


def resume_trace(layout: TraceLayout, manifest: dict[str, Any], series: Iterable[Checkpoint],
                 datasets: Mapping[str, Any], random_init: bool) -> list[Checkpoint]:
    """Compare the folder with this run's ``manifest`` (settings, datasets' sha256); keep the finished
    checkpoints' records in it and write it; return the checkpoints to trace (see the module docstring).

    An error after the model loaded leaves a manifest and activations behind; the rerun its message asks for
    (other settings) must not be refused for them, so a folder without a finished checkpoint starts over.
    """
    checkpoints = list(series)
    diff = layout.settings_diff(manifest["settings"], {name: ds.sha256 for name, ds in datasets.items()})
    if diff and not any(read_part(p, warn=False) is not None for p in sorted(layout.parts.glob("*.csv"))):
        log.warning("%s holds an unfinished run of other settings (%s) and no finished checkpoint: starting the "
                    "folder over.", layout.root, describe_diff(diff))
        clear(layout)
    else:
        refuse_other_settings(layout.root, diff, "a run")
    earlier = layout.read_manifest() or {}
    recorded: dict[str, Any] = earlier.get("checkpoints", {})
    manifest["started"] = earlier.get("started", manifest["started"])
    todo = [c for c in checkpoints if not checkpoint_done(c, datasets, layout, recorded.get(c.name))]
    names = {c.name for c in todo}
    manifest["checkpoints"] = {n: r for n, r in recorded.items()
                               if n not in names and finished(layout, n, warn=False)}
    if not todo and random_init and checkpoints and not control_done(layout, datasets):
        todo = [checkpoints[0]]  # the control is traced from a checkpoint's architecture
    layout.write_manifest(manifest)
    return todo
