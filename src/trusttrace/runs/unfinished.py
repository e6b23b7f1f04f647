"""What a run folder still has to do, and who is writing it: the other half of ``trusttrace verify``.

``verify`` checks the files a folder holds; this module reads the folder's settings to say what it does not
hold yet, as a rerun with the same settings would see it (one line per item, "what: state → what a rerun
does")::

    trace      every checkpoint of the manifest's ``series`` without a part (a killed run, or one that failed:
               ``failed``), and the random-init control when the settings ask for it
    steer      the evaluations the settings plan (the unsteered target, then the target's own vector and each
               source checkpoint × layers × α) without a part; failed.json's failures; steering.csv not written
    pretrain   the last step not reached (loss.csv), and the step a rerun resumes from (the saved state)
    probe      the results table not written
    demo       the summary not written (its stages' sub-folders say the rest)

A file a rerun finds damaged or missing against its record is a *finding* of ``verify``, never listed here:
an item is unfinished only when neither the file nor its record is there. ``writer`` says which other
trusttrace process holds a folder's lock (``runlock``): its files are then work in progress.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.errors import DamagedFileError, RunFolderError
from ..core.files import record_path
from ..core.runlock import held_by_other
from .integrity import check
from .layout import PretrainLayout, SteerLayout, TraceLayout, read_json
from .tables import PROMPT, RANDOM, UNSTEERED, random_draw

_SHOWN = 6  # evaluations named at most in the sweep's line
_ERROR_CHARS = 120  # of a recorded failure's message


def _there(path: Path) -> bool:
    """Whether ``path`` or its record is there: when only one is, ``verify`` reports it as a finding."""
    return path.exists() or record_path(path).exists()


def _json(path: Path) -> dict[str, Any] | None:
    """``path``'s JSON object; None when it is absent or unreadable (``verify`` reports a damaged one)."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (DamagedFileError, RunFolderError, OSError):
        return None


def _short(error: object) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


# ---------------------------------------------------------------- trace and probe


def _trace(root: Path) -> list[str]:
    layout = TraceLayout(root)
    manifest = _json(layout.manifest)
    if manifest is None:
        return []
    series = manifest.get("series", {}).get("checkpoints", [])
    names = [c["name"] for c in series if isinstance(c, dict) and isinstance(c.get("name"), str)]
    recorded = manifest.get("checkpoints", {})
    failed = manifest.get("failed") or {}
    todo = []
    for name in names:
        if _there(layout.part(name)) or name in recorded:  # done, or a finding of verify's
            continue
        if name in failed:
            todo.append(f"checkpoint {name}: failed in the last call ({_short(failed[name])}) → traced again by a "
                        "rerun")
        elif any(layout.activations(name).glob("*.safetensors")):
            todo.append(f"checkpoint {name}: activations stored, not analysed yet → its part computed by a rerun")
        else:
            todo.append(f"checkpoint {name}: not traced yet → traced by a rerun")
    settings = manifest.get("settings") or {}
    wants_control = ("random-init" in (settings.get("controls") or ())
                     and "probe" in (settings.get("analyses") or ()))
    if names and wants_control and not _there(layout.random_init_csv):
        todo.append("the random-init control: not computed yet → computed by a rerun")
    return todo


def _probe(root: Path) -> list[str]:
    layout = TraceLayout(root)
    if _there(layout.results_csv) or _there(layout.results_parquet):
        return []
    return ["the probe's results: not written yet → refitted by a rerun of `trusttrace probe` with the same --out"]


# ---------------------------------------------------------------- steer


def _steer(root: Path) -> list[str]:
    layout = SteerLayout(root)
    settings = _json(layout.settings)
    if settings is None:
        return []
    todo = []
    failed = _json(layout.failed_json) or {}
    planned = _planned(layout, settings)
    done = {p.name for p in (root / "parts").glob("*.csv") if not p.name.endswith(".items.csv")}
    if planned is None:
        if not _there(layout.steering_csv):
            todo.append(f"sweep: {len(done)} evaluations done, the rest known once the source checkpoints are traced "
                        "→ evaluated by a rerun, which then writes steering.csv and best.csv")
    else:
        left = [label for label, path in planned.items() if not _there(path) and label not in failed]
        if left or any(label in failed for label in planned):
            named = ", ".join(left[:_SHOWN]) + (", …" if len(left) > _SHOWN else "")
            finished = sum(_there(path) for path in planned.values())
            todo.append(f"sweep: {finished} of {len(planned)} evaluations done → the rest evaluated by a rerun"
                        + (f" ({named})" if left else ""))
        elif not _there(layout.steering_csv):
            todo.append(f"sweep: all {len(planned)} evaluations done, steering.csv and best.csv not written yet → "
                        "written by a rerun from the parts")
    todo += [f"evaluation {label}: failed in the last call ({_short(error)}) → evaluated again by a rerun"
             for label, error in failed.items()]
    return todo


def _planned(layout: SteerLayout, settings: dict[str, Any]) -> dict[str, Path] | None:
    """The sweep's evaluations, label → part, from its settings and its source trace's checkpoints; None when
    they cannot be known yet (the source trace has no manifest) or not from here (proxy-tuning's rows)."""
    source = _json(layout.source.manifest)
    if source is None or settings.get("proxy_tuned"):
        return None
    sources = [c["name"] for c in source.get("series", {}).get("checkpoints", []) if isinstance(c, dict)]
    try:
        layers = [int(x) for x in settings["layers"]]
        alphas = [float(x) for x in settings["alphas"]]
    except (KeyError, TypeError, ValueError):
        return None
    planned = {UNSTEERED: layout.part(UNSTEERED, -1, 0.0)}
    if settings.get("instruction"):
        planned[PROMPT] = layout.part(PROMPT, -1, 0.0)
    draws = settings.get("random_vectors", 0)
    names = ["self", *sources, *(random_draw(k) for k in range(draws if isinstance(draws, int) else 0))]
    for name in names:
        for layer in layers:
            planned.update({f"{name} layer {layer} α {alpha:+g}": layout.part(name, layer, alpha) for alpha in alphas
                            if alpha or not name.startswith(f"{RANDOM}-")})
    return planned


# ---------------------------------------------------------------- pretrain and demo


def _pretrain(root: Path) -> list[str]:
    layout = PretrainLayout(root)
    if not _there(layout.settings):
        return [("pre-training: its settings (pretrain_config.json) are not written → a rerun writes them and "
                 "trains from its saved state")]
    settings = _json(layout.settings)
    steps = settings.get("steps") if settings is not None else None
    if not isinstance(steps, int):
        return []  # a damaged settings file: a finding of verify's
    resume = _state_step(layout)
    reached = max(_loss_steps(layout), resume if resume is not None else 0)
    if reached >= steps:
        return []
    start = f"from step {resume} (the saved state)" if resume else "from step 0 (no saved state)"
    return [f"pre-training: step {reached} of {steps} reached → resumed by a rerun {start}"]


def _state_step(layout: PretrainLayout) -> int | None:
    """The step of the saved training state when it is intact (a rerun resumes there), else None."""
    from safetensors import SafetensorError, safe_open

    if not check(layout.state).ok:
        return None
    try:
        with safe_open(str(layout.state), framework="numpy") as f:
            return int((f.metadata() or {})["step"])
    except (OSError, KeyError, ValueError, SafetensorError):
        return None


def _loss_steps(layout: PretrainLayout) -> int:
    """Steps trained by the calls so far, from loss.csv (0 when it is missing or unreadable)."""
    if not layout.loss_csv.is_file() or not check(layout.loss_csv).ok:
        return 0
    try:
        steps = pd.read_csv(layout.loss_csv, usecols=["step"]).step
    except (OSError, ValueError, pd.errors.ParserError):
        return 0
    return int(steps.max()) + 1 if len(steps) else 0


def _demo(root: Path) -> list[str]:
    if all(_there(root / name) for name in ("summary.md", "summary.json")):
        return []
    return [("the demo: its summary is not written yet → a rerun of the demo with the same --out runs the stages "
             "left and writes summary.md")]


_TODO: dict[str, Callable[[Path], list[str]]] = {"trace": _trace, "probe": _probe, "steer": _steer,
                                                 "pretrain": _pretrain, "demo": _demo}


def left_to_do(root: Path, kind: str) -> list[str]:
    """What a rerun with the same settings still does in the run folder ``root`` of ``kind`` (its sub-runs not
    included), one line per item; [] when it is finished."""
    return _TODO.get(kind, lambda _: [])(root)


def writer(root: Path) -> dict[str, Any] | None:
    """The other trusttrace process writing ``root`` (its lock's pid, command, host, started), else None."""
    return held_by_other(root)


def writer_text(info: dict[str, Any]) -> str:
    """``info`` (from ``writer``) as the words ``verify`` prints."""
    if not info.get("pid"):
        return "being written by another trusttrace process (it has not said which yet)"
    host = f" on {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else ""
    return (f"being written by trusttrace process {info['pid']}{host} (`trusttrace {info.get('command', '?')}`, "
            f"since {info.get('started', '?')})")


__all__ = ["left_to_do", "writer", "writer_text"]
