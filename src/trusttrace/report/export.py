"""Figures to files: PNGs through one kaleido browser session, and stand-alone offline HTML."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from .._io import write_text_atomic
from .style import Figure


def write_pngs(figures: Sequence[Figure], paths: Sequence[Path], notes: list[str]) -> list[Path]:
    """A PNG per figure at ``paths``, all through one kaleido session; a note instead where that cannot run.

    Returns the PNGs written. Needs kaleido and a Chromium or Chrome (``make setup`` installs Debian's).
    """
    import plotly.io as pio

    if not figures:
        return []
    if importlib.util.find_spec("kaleido") is None:
        notes.append("PNG figures were not written: install kaleido (`pip install kaleido`) and Chromium.")
        return []
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        pio.write_images([f.figure for f in figures], list(paths), format="png", scale=2, width=1100,
                         height=[int(f.figure.layout.height or 420) for f in figures])
    except (RuntimeError, ValueError, OSError) as err:  # kaleido without a browser, or one that died
        notes.append(f"PNG figures were not written ({type(err).__name__}: {str(err).strip()[:200]}). "
                     "Install Chromium or Chrome for kaleido.")
        return [p for p in paths if p.is_file()]
    return list(paths)


def write_html(figure: Figure, path: Path) -> None:
    """One figure as a self-contained HTML page (plotly.js inlined, so it opens offline)."""
    write_text_atomic(path, figure.figure.to_html(include_plotlyjs=True, full_html=True))
