"""Figures to files: PNGs through one kaleido browser session, and stand-alone offline HTML.

Every file goes to ``inside(folder, name)``: one plain name in that folder, never a path out of it. Kaleido
writes its PNGs into a private temporary folder inside ``folder``; each complete PNG is then published by
an atomic rename (``_io.write_with``), so no reader sees half a PNG and no planted link is written through.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.files import write_text_atomic, write_with
from ..core.runlock import guard_write
from .style import Figure

_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, where ``name`` must be one plain file name (no separator, not ``.``, ``..`` or hidden).

    Raises ``ValueError`` otherwise: names are built from ``figure_id`` or ``safe_name``, so this is a bug.
    """
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or Path(name).name != name:
        raise ValueError(f"{name!r} is not a plain file name; the report writes only inside {folder}")
    return folder / name


def _complete_png(path: Path) -> bool:
    """Whether ``path`` is a whole PNG: its signature at the start and the IEND chunk at the end."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(max(0, path.stat().st_size - 8))
            return head == _PNG_START and fh.read(8) == _PNG_END
    except OSError:
        return False


def _move_from(source: Path) -> Callable[[Path], None]:
    """A ``write_with`` writer that renames ``source`` onto the temporary path it is given."""
    def move(tmp: Path) -> None:
        os.replace(source, tmp)
    return move


def _unwritable_temp() -> str | None:
    """The temporary folder Chromium would use ($TMPDIR, else the system's), when no file can be made in it."""
    where = os.environ.get("TMPDIR") or ""
    try:
        where = where or tempfile.gettempdir()
        handle, name = tempfile.mkstemp(prefix=".trusttrace-check-", dir=where)
    except OSError:  # also gettempdir's "no usable temporary directory"
        return where or "(none found)"
    os.close(handle)
    os.unlink(name)
    return None


def _browser_found() -> bool:
    """Whether kaleido can find a Chromium or Chrome (its own download, $BROWSER_PATH, or on PATH)."""
    try:
        from choreographer.browsers.chromium import Chromium

        if Chromium.find_browser(skip_local=False):
            return True
    except (ImportError, RuntimeError, OSError, ValueError):
        pass
    return any(shutil.which(name) for name in _CHROMIUM_NAMES)


def png_failure(err: BaseException) -> str:
    """The note for a kaleido export that failed: its real cause, where it can be told."""
    temp = _unwritable_temp()
    if temp is not None:
        return (f"PNG figures were not written: the temporary folder {temp} is not writable (the headless browser "
                "needs it); set TMPDIR to a writable folder.")
    if not _browser_found():
        return ("PNG figures were not written: no Chromium or Chrome was found for kaleido; install Chromium "
                "(`make setup` installs Debian's) or Chrome.")
    message = " ".join(str(a) for a in err.args) if err.args else str(err)
    return f"PNG figures were not written ({type(err).__name__}: {message.strip()[:300]})."


def write_pngs(figures: Sequence[Figure], folder: Path, notes: list[str],
               stems: Sequence[str] | None = None) -> list[Path]:
    """A PNG per figure in ``folder`` (named ``<stem>.png``; default stems: the figures' names), all through one
    kaleido session; a note instead where that cannot run.

    Returns the PNGs written. Needs kaleido and a Chromium or Chrome (``make setup`` installs Debian's).
    """
    import plotly.io as pio

    stems = [f.name for f in figures] if stems is None else list(stems)
    if len(stems) != len(figures):
        raise ValueError(f"{len(figures)} figures but {len(stems)} file names")
    targets = [inside(folder, f"{stem}.png") for stem in stems]  # refused before anything is drawn
    if not figures:
        return []
    if importlib.util.find_spec("kaleido") is None:
        notes.append("PNG figures were not written: install kaleido (`pip install kaleido`) and Chromium.")
        return []
    guard_write(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=".png.tmp-", dir=folder))  # hidden, .tmp-: never a run's own file
    try:
        drawn = [private / f"{i}.png" for i in range(len(figures))]
        try:
            pio.write_images([f.figure for f in figures], drawn, format="png", scale=2, width=1100,
                             height=[int(f.figure.layout.height or 420) for f in figures])
        except (RuntimeError, ValueError, OSError) as err:  # kaleido without a browser, or one that died
            notes.append(png_failure(err))
        written = []
        for source, target in zip(drawn, targets):
            if _complete_png(source):
                write_with(target, _move_from(source))
                written.append(target)
        return written
    finally:
        shutil.rmtree(private, ignore_errors=True)


def write_html(figure: Figure, path: Path) -> None:
    """One figure as a self-contained HTML page (plotly.js inlined, so it opens offline)."""
    write_text_atomic(path, figure.figure.to_html(include_plotlyjs=True, full_html=True))
