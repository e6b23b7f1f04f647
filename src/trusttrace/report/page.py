"""The report page: a header per run, the sections' figures and tables, the download links, all in one
self-contained HTML file (plotly.js inlined, so it opens offline).

Everything from the runs' tables, names and folders is data: it is HTML-escaped where it is text or an
attribute, URL-quoted in a link, and never part of an id or a script: figures carry ``figure_id`` names, the
only thing besides plotly's JSON (which escapes ``<``, ``>`` and U+2028/U+2029) that reaches a ``<script>``,
and ``figure_html`` checks that each figure's script stays one script.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from .._version import __version__
from ..core.files import write_with
from ..runs.layout import safe_name
from .export import inside
from .load import Run
from .style import Figure, id_part, slug


class Html(str):
    """A piece of the page that the report wrote itself, as HTML (data in it escaped where it was built);
    any other ``str`` in a section is a note, and is escaped."""


Section = tuple[str, list[Figure | str]]  # title, figures and notes (``Html``, or plain text)


def figure_html(item: Figure) -> str:
    """A figure's ``<div>`` and the ``<script>`` that draws it (plotly.js not included).

    Raises ``ValueError`` where data could end that script early or open a comment in it (plotly's JSON
    escapes ``<``, so this would be a plotly change, caught before the page is written).
    """
    import plotly.io as pio

    div: str = pio.to_html(item.figure, full_html=False, include_plotlyjs=False, div_id=f"fig-{item.name}",
                           config={"displaylogo": False, "responsive": True})
    lowered = div.lower()
    if lowered.count("<script") != 1 or lowered.count("</script") != 1 or "<!--" in div:
        raise ValueError(f"figure {item.name}: its script would not stay one <script> element")
    return div


def link(folder: str, name: str) -> str:
    """A relative link to ``folder/name`` as an attribute value: URL-quoted, then HTML-escaped."""
    return html.escape(f"{folder}/{quote(name, safe='')}", quote=True)


def header(runs: Sequence[Run]) -> str:
    """One facts table per run: model, folder, checkpoints, dimensions, dtype, seeds, versions, run time."""
    rows = []
    for run in runs:
        m = run.manifest or {}
        cfg = m.get("config", {})
        res = run.results
        ckpts = list(dict.fromkeys(res.revision)) if res is not None and "revision" in res else []
        dtypes = sorted({str(v.get("dtype")) for v in m.get("checkpoints", {}).values() if v.get("dtype")})
        versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
        started, finished = m.get("started"), m.get("finished")
        took = ""
        if started and finished:
            took = str(datetime.fromisoformat(finished) - datetime.fromisoformat(started))
        facts = {"model": cfg.get("model", "—"), "folder": str(run.path),
                 "checkpoints": f"{len(ckpts)} ({ckpts[0]} … {ckpts[-1]})" if ckpts else "—",
                 "dimensions": ", ".join(sorted(res.dimension.unique())) if res is not None else "—",
                 "dtype": ", ".join(dtypes) or "—", "seeds": json.dumps(m.get("seeds", {})) if m else "—",
                 "versions": versions or "—", "run time": f"{started or '—'} → {finished or '—'}" + (
                     f" ({took})" if took else ""),
                 "steering sweeps": ", ".join(run.sweeps) or "—",
                 "pre-training": f"{len(run.loss)} steps" if run.loss is not None else "—"}
        cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
        rows.append(f"<div class='run'><h3>{html.escape(run.label)}</h3><table class='facts'>{cells}</table></div>")
    return "<section id='header'>" + "".join(rows) + "</section>"


def table_html(frame: pd.DataFrame) -> str:
    """A small table as HTML, numbers to 4 decimals."""
    def number(v: float) -> str:
        return f"{v:g}" if float(v).is_integer() else f"{v:.4f}"

    return frame.to_html(index=False, na_rep="–", float_format=number, classes="data", border=0, escape=True)


def copy_tables(runs: Sequence[Run], folder: Path) -> list[Path]:
    """Every table the runs hold, copied beside the page for download (atomically, never through a link),
    each under a ``safe_name`` of its own."""
    copied: list[Path] = []
    for run in runs:
        for name, source in run.tables.items():
            if not source.is_file():
                continue
            target = inside(folder, safe_name(f"{id_part(run.label)}_{name}" if len(runs) > 1 else name))
            n = 1
            while target in copied:  # ``id_part`` keeps labels apart; this keeps any two tables apart too
                n += 1
                target = inside(folder, safe_name(f"{n}_{target.name}"))
            write_with(target, partial(shutil.copyfile, source))
            copied.append(target)
    return copied


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 24px 48px;
color:#222}
h1{font-size:1.6em;margin:24px 0 8px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
table.facts th{text-align:left;padding:2px 12px 2px 0;color:#555;font-weight:600;vertical-align:top}
table.data{border-collapse:collapse;font-size:.9em} \
table.data td,table.data th{padding:3px 10px;border-bottom:1px solid #eee}
.run{display:inline-block;vertical-align:top;margin-right:32px} .note{color:#8a5300;background:#fff8e6;padding:6px 10px}
figure{margin:12px 0 24px} figcaption{font-size:.85em;color:#555}
nav a{margin-right:14px}
"""


def page(runs: Sequence[Run], sections: Sequence[Section], tables: Sequence[Path], pngs: Sequence[Path],
         notes: Sequence[str]) -> str:
    """The whole page as HTML."""
    from plotly.offline import get_plotlyjs

    png_names = {p.stem for p in pngs}
    body = []
    for title, items in sections:
        parts = [f"<section id='{html.escape(slug(title))}'><h2>{html.escape(title)}</h2>"]
        for item in items:
            if isinstance(item, Html):
                parts.append(item)
                continue
            if isinstance(item, str):
                parts.append(f"<p class='note'>{html.escape(item)}</p>")
                continue
            name = item.name  # a figure_id: [a-z0-9-] only (``Figure`` refuses any other), escaped all the same
            png = f" <a href='{link('figures', f'{name}.png')}'>PNG</a>" if name in png_names else ""
            caption = f"<figcaption>{html.escape(item.caption)}{png}</figcaption>" if item.caption or png else ""
            parts.append(f"<figure data-figure='{html.escape(name, quote=True)}'>{figure_html(item)}{caption}"
                         "</figure>")
        parts.append("</section>")
        body.append("".join(parts))
    links = "".join(f"<li><a href='{link('tables', p.name)}' download>{html.escape(p.name)}</a></li>"
                    for p in tables)
    note_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    nav = "".join(f"<a href='#{html.escape(slug(t))}'>{html.escape(t)}</a>" for t, _ in sections) + \
        "<a href='#tables'>Tables</a>"
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    title = "trusttrace report: " + " vs ".join(r.label for r in runs)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>{note_html}{header(runs)}{''.join(body)}"
            f"<section id='tables'><h2>Tables</h2><ul>{links or '<li>none</li>'}</ul></section>"
            f"<footer><p>Drawn by trusttrace {__version__} at {stamp} from the run's tables only.</p></footer>"
            "</body></html>")
