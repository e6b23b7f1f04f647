"""What a rerun of a ``trace`` keeps: intact parts, activations and controls; everything else is traced again.

A checkpoint is done when its part (``parts/<revision>.csv``) matches its record, was made with this run's
settings (its record keeps their sha256, ``settings_key``), holds the columns of ``tables.RESULT_COLUMNS``,
every activation and kept probe file of it that is present is intact, and (for a local checkpoint)
its weights, config and tokenizer files still have the fingerprints its trace recorded
(``integrity.weights_fingerprint``, ``integrity.model_files``; read in full only when their stat moved). A
checkpoint whose config or tokenizer changed is traced again, its activations removed first so that they are
extracted again; a record of an earlier version, without those files' fingerprints, is given the current ones
(that version could not tell a change). A damaged or
unrecorded file is reported by name and recomputed, never used; the results table is always rebuilt from the
intact parts only. A folder of other settings is refused when it holds a finished checkpoint and started over
(with a warning) when it holds none.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.files import record_meta
from ..models.checkpoints import Checkpoint
from ..runs.integrity import (
    changed_files,
    check,
    model_files,
    model_files_stat,
    remove,
    usable,
    weights_fingerprint,
    weights_stat,
)
from ..runs.layout import TraceLayout, describe_diff, read_csv, refuse_other_settings, safe_name
from ..runs.tables import RESULT_COLUMNS, STEERING_COLUMNS

log = logging.getLogger(__name__)


def settings_key(settings: Mapping[str, Any]) -> str:
    """The sha256 of a run's settings (what its manifest records): every part keeps the key it was made with."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def read_part(path: Path, warn: bool = True, key: str | None = None) -> pd.DataFrame | None:
    """A finished checkpoint's rows, or None when its part is missing, damaged, unrecorded, made with other
    settings than ``key`` (a part from before keys were kept passes) or of other columns than
    ``tables.RESULT_COLUMNS`` (each reported unless ``warn`` is off: the checkpoint is traced again)."""
    redo = f"checkpoint {path.stem}'s part is not used; the checkpoint is traced again."
    if not (usable(path, redo) if warn else check(path).ok):
        return None
    made_with = record_meta(path).get("settings_sha256")
    if key is not None and made_with is not None and made_with != key:
        if warn:
            log.warning("%s was made with other settings than this run's (settings sha256 %s…, this run %s…); %s",
                        path, made_with[:12], key[:12], redo)
        return None
    frame = read_csv(path)
    if frame is None or list(frame.columns) != RESULT_COLUMNS:
        if warn:
            log.warning("%s has the columns %s, not %s; %s", path, None if frame is None else list(frame.columns),
                        RESULT_COLUMNS, redo)
        return None
    revisions = set(pd.read_csv(path, usecols=["revision"], dtype=str, keep_default_na=False).revision)
    if revisions and {safe_name(r) for r in revisions} != {path.stem}:  # another checkpoint's rows (an older naming)
        if warn:
            log.warning("%s holds the rows of %s; it is not used.", path, sorted(revisions))
        return None
    return frame


def finished(layout: TraceLayout, revision: str, warn: bool = True, key: str | None = None) -> bool:
    """Whether ``revision``'s part is intact and of these settings (its checkpoint counts as done)."""
    return read_part(layout.part(revision), warn, key) is not None


def merge_parts(layout: TraceLayout, key: str | None = None) -> pd.DataFrame:
    """The finished checkpoints' rows as one table, written as the results: only intact parts of this run's
    settings (``key``) count."""
    frames = [read_part(p, warn=False, key=key) for p in sorted(layout.parts.glob("*.csv"))]
    present = [f for f in frames if f is not None]
    frame = pd.concat(present, ignore_index=True) if present else pd.DataFrame(columns=RESULT_COLUMNS)
    return layout.write_results(frame)


def clear(layout: TraceLayout) -> None:
    """Delete everything a trace writes in ``layout`` (not ``log.txt``, nor the user's files): a fresh start."""
    for path in (layout.manifest, layout.results_csv, layout.results_parquet, layout.parts, layout.activations_dir,
                 layout.root / "probes", layout.root / "controls", layout.mi, layout.vectors.root):
        remove(path)


def local_weights(ckpt: Checkpoint) -> str | None:
    """The fingerprint of a local checkpoint's weights (``integrity.weights_fingerprint``); None for the hub."""
    return weights_fingerprint(ckpt.ref) if ckpt.revision is None else None


def local_model_files(ckpt: Checkpoint) -> dict[str, str] | None:
    """The sha256 of a local checkpoint's config and tokenizer files (``integrity.model_files``); None for the
    hub."""
    return model_files(ckpt.ref) if ckpt.revision is None else None


def _sha(sha: str | None) -> str:
    return "absent" if sha is None else f"{sha[:12]}…"


def model_files_changed(ckpt: Checkpoint, layout: TraceLayout, record: Mapping[str, Any]) -> bool:
    """Whether a config or tokenizer file of local ``ckpt`` changed, appeared or disappeared since its trace
    recorded them (hashed only when their stat moved). A warning names each; the checkpoint's activations are
    removed, so that its rerun extracts them again (one written before their metadata kept
    ``model_files_sha256`` could not tell)."""
    before = record.get("model_files")
    if ckpt.revision is not None or not isinstance(before, dict) \
            or model_files_stat(ckpt.ref) == record.get("model_files_stat"):
        return False
    now = model_files(ckpt.ref)
    changed = {} if now is None else changed_files(before, now)
    if not changed:
        return False
    what = ", ".join(f"{name} {'appeared' if was is None else 'disappeared' if sha is None else 'changed'} since "
                     f"it was traced (sha256 {_sha(was)} → {_sha(sha)})" for name, (was, sha) in changed.items())
    log.warning("checkpoint %s: %s; it is traced again, its part and activations replaced.", ckpt.name, what)
    remove(layout.activations(ckpt.name))
    return True


def current_record(ckpt: Checkpoint, record: Mapping[str, Any]) -> dict[str, Any]:
    """A finished checkpoint's ``record`` with its files' stats brought up to date: a record of an earlier
    version gains the current ``model_files``; a stat moved by a ``touch`` or a copy of unchanged files (which
    ``checkpoint_done`` hashed: the hashes are cached) is recorded anew, so that the next rerun reads nothing."""
    fresh = dict(record)
    stat = model_files_stat(ckpt.ref) if ckpt.revision is None else None
    if stat is not None and ("model_files" not in record or record.get("model_files_stat") != stat):
        fresh.update(model_files=model_files(ckpt.ref), model_files_stat=stat)
    weights, moved = record.get("weights_sha256"), weights_stat(ckpt.ref) if ckpt.revision is None else None
    if weights is not None and moved is not None and record.get("weights_stat") != moved \
            and weights_fingerprint(ckpt.ref) == weights:
        fresh["weights_stat"] = moved
    return fresh


def _intact_if_present(paths: Iterable[Path], redo: str) -> bool:
    return all(usable(path, redo) for path in paths if path.exists())


def checkpoint_done(ckpt: Checkpoint, datasets: Iterable[str], layout: TraceLayout,
                    record: Mapping[str, Any] | None, key: str | None = None) -> bool:
    """Whether ``ckpt`` is finished and intact (see the module docstring); a warning says why not when its
    part is there."""
    if model_files_changed(ckpt, layout, record or {}):  # before the part: its activations must not be reused
        return False
    if not finished(layout, ckpt.name, key=key):
        return False
    before, stat_before = (record or {}).get("weights_sha256"), (record or {}).get("weights_stat")
    unchanged = stat_before is not None and ckpt.revision is None and weights_stat(ckpt.ref) == stat_before
    weights = None if unchanged else local_weights(ckpt)  # read the weights in full only when their stat moved
    if weights is not None and before is not None and weights != before:
        log.warning("checkpoint %s: its weights at %s changed since it was traced (sha256 %s… → %s…); it is traced "
                    "again, its part and activations replaced.", ckpt.name, ckpt.ref, before[:12], weights[:12])
        return False
    names = list(datasets)
    return _intact_if_present([*(layout.activation(ckpt.name, name) for name in names),
                               *(layout.probe(ckpt.name, name) for name in names)],  # its kept probes too
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
    key = settings_key(manifest["settings"])
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
    todo = [c for c in checkpoints if not checkpoint_done(c, datasets, layout, recorded.get(c.name), key)]
    names, by_name = {c.name for c in todo}, {c.name: c for c in checkpoints}
    kept = {n: r for n, r in recorded.items() if n not in names and finished(layout, n, warn=False, key=key)}
    earlier_version = [n for n, r in kept.items() if n in by_name and by_name[n].revision is None
                       and "model_files" not in r]
    if earlier_version:
        log.info("%d checkpoint(s) were traced by an earlier version, which did not fingerprint their config and "
                 "tokenizer files: their current ones are recorded.", len(earlier_version))
    manifest["checkpoints"] = {n: current_record(by_name[n], r) if n in by_name else r for n, r in kept.items()}
    if not todo and random_init and checkpoints and not control_done(layout, datasets):
        todo = [checkpoints[0]]  # the control is traced from a checkpoint's architecture
    layout.write_manifest(manifest)
    return todo


# ---------------------------------------------------------------- a steering sweep's evaluations

ITEM_COLUMNS = ("dimension", "metric", "item", "outcome")


def finished_steer_part(path: Path, items: Path, label: str, key: str) -> pd.DataFrame | None:
    """A steering sweep's evaluation: its rows when its part and outcomes are both intact (they match their
    records), were made with these settings (``key``) and hold the columns the sweep reads; else None, and
    the job is evaluated again.
    A damaged or unrecorded file is reported by name; a part from before outcomes were kept (no items file)
    is done again too."""
    redo = f"evaluation {label} is run again."
    if not (usable(path, redo) and usable(items, redo)):
        return None
    made_with = {record_meta(f).get("settings_sha256", key) for f in (path, items)}
    if made_with != {key}:
        log.warning("%s was made with other settings than this sweep's; %s", path, redo)
        return None
    rows, outcomes = read_csv(path), read_csv(items)
    for frame, file, needed in ((rows, path, STEERING_COLUMNS), (outcomes, items, ITEM_COLUMNS)):
        missing = [c for c in needed if frame is None or c not in frame.columns]
        if missing:
            log.warning("%s lacks the columns %s; %s", file, missing, redo)
            return None
    return rows
