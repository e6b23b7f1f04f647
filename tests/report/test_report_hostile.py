"""The report against hostile names: a dimension, revision, model, sweep or run label that is HTML, script,
a template or a path. Nothing may run in the page, nothing may be written outside the report folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from trusttrace.core.errors import LinkInRunFolderError
from trusttrace.core.runlock import hold
from trusttrace.report import ReportConfig, load_run, run_report, write_mi_figures
from trusttrace.report.export import inside, png_failure, write_pngs
from trusttrace.report.page import copy_tables
from trusttrace.report.style import SAFE_ID, Figure, distinct, figure_id, id_part, plot_text

ALERTS = ("x'><img src=x onerror=alert(1)>", "</script><script>alert(1)</script>", '"><svg onload=alert(1)>',
          "../../x/PWNED", "{{7*7}}", "%{x}")
# For the browser: each payload that runs leaves window.PWNED set (an alert() would block the driver instead).
MARKERS = ("x'><img src=x onerror=window.PWNED=1>", "</script><script>window.PWNED=2</script>",
           '"><svg onload=window.PWNED=3>', '<b>b</b><a href="javascript:window.PWNED=4">a</a>', "../../x/PWNED",
           "{{7*7}}", "%{x}")
STEPS = (0, 10, 100, 1000)


def _no_slash(payloads: tuple[str, ...]) -> list[str]:
    return [p for p in payloads if "/" not in p]


def _results(dims: list[str], revisions: list[str], model: str) -> pd.DataFrame:
    rows = []
    for dim in dims:
        for rev, step in zip(revisions, STEPS):
            for layer in range(3):
                acc = 0.55 + 0.1 * np.log10(step + 1) + 0.02 * layer
                rows += [(rev, step, dim, layer, metric, value) for metric, value in (
                    ("accuracy", acc), ("accuracy_ci_low", acc - 0.04), ("accuracy_ci_high", acc + 0.04),
                    ("majority_baseline", 0.55), ("control_lexical", 0.6), ("control_random_init", 0.55),
                    ("selectivity", acc - 0.6), ("mi_tx", 1 + np.log10(step + 1) + 0.01 * layer),
                    ("mi_ty", 0.1 * np.log10(step + 2)), (dim, 0.5))]  # a metric named like the dimension
    return pd.DataFrame(rows, columns=["revision", "step", "dimension", "layer", "metric", "value"]).assign(
        model=model)


def _hostile_demo(parent: Path, payloads: tuple[str, ...]) -> Path:
    """A demo-shaped run whose every name is a payload: folder, dimensions, revisions, model, sweep, sources."""
    plain = _no_slash(payloads)
    root = parent / plain[0]
    trace = root / "pretrain" / "trace"
    (trace / "mi").mkdir(parents=True)
    revisions = list(payloads[:4])
    _results(list(payloads), revisions, payloads[1]).to_csv(trace / "results.csv", index=False)
    (trace / "manifest.json").write_text(json.dumps({
        "config": {"model": payloads[0]}, "versions": {p: p for p in payloads}, "seeds": {payloads[2]: 0},
        "started": "2026-11-21T10:00:00+00:00", "finished": "2026-11-21T10:05:00+00:00",
        "checkpoints": {r: {"dtype": payloads[-1]} for r in revisions}}))
    pd.DataFrame([{"dimension": d, "layer": 0, "peak_step": 100, "compression": True} for d in payloads]
                 ).to_csv(trace / "mi" / "phases.csv", index=False)
    pd.DataFrame({"step": range(20), "loss": np.linspace(9, 4, 20)}).to_csv(root / "pretrain" / "loss.csv",
                                                                             index=False)
    sweep = root / f"steer-{plain[-1]}"
    (sweep / "source").mkdir(parents=True)
    sources = plain[:3]
    rows = [("unsteered", -1, 0.0, "toxicity", "toxic_ratio", 0.4),
            ("unsteered", -1, 0.0, "general", "perplexity", 10.0)]
    for src in ("self", *sources):
        for alpha in (-2.0, 2.0):
            rows += [(src, 1, alpha, "toxicity", "toxic_ratio", 0.4 + 0.05 * alpha),
                     (src, 1, alpha, "general", "perplexity", 11.0 + abs(alpha))]
    pd.DataFrame(rows, columns=["source_revision", "layer", "alpha", "dimension", "metric", "value"]
                 ).to_csv(sweep / "steering.csv", index=False)
    pd.DataFrame([{"source_revision": s, "layer": 1, "alpha": -2.0, "toxic_ratio": 0.3, "perplexity": 13.0}
                  for s in sources]).to_csv(sweep / "best.csv", index=False)
    pd.DataFrame([{"layer": 1, "alpha": -2.0, "metric": "toxic_ratio", "pearson_r": -0.5, "pearson_lo": -1.0,
                   "pearson_hi": 1.0, "spearman_r": -0.5, "spearman_lo": -1.0, "spearman_hi": 1.0, "n_sources": 3,
                   "n_boot": 100}]).to_csv(sweep / "correlation.csv", index=False)
    (sweep / "steer_config.json").write_text(json.dumps({"ppl_budget": 1.33, "dimension": "toxicity"}))
    _results(["toxicity"], [*sources, "step1000"], payloads[0]).to_csv(sweep / "source" / "results.csv", index=False)
    return root


def _tree(root: Path) -> set[Path]:
    """Every file, folder and link under ``root`` (links not followed)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        found.update(Path(folder) / name for name in (*dirs, *files))
    return found


def _strings(page: str, key: str) -> list[str]:
    """Every JSON string value of ``key`` in the page's plotly figures."""
    return [json.loads(m) for m in re.findall(rf'"{key}":("(?:[^"\\]|\\.)*")', page)]


def _check_page(page: str, payloads: tuple[str, ...]) -> None:
    """No payload as markup, script or template field; the figures' names and links safe by construction."""
    for raw in ("<img src=x", "</script><script>", "<svg onload", "<b>b</b>", '<a href="javascript'):
        assert raw not in page
    assert "&lt;img src=x onerror=" in page  # shown as text (the header, the tables)
    names = re.findall(r"data-figure='([^']*)'", page)
    assert names and all(SAFE_ID.fullmatch(n) for n in names) and len(set(names)) == len(names)
    assert all(SAFE_ID.fullmatch(i) for i in re.findall(r'id="fig-([^"]*)"', page))
    body = page.split("</head>", 1)[1]  # past plotly.js
    assert all(re.fullmatch(r"(tables|figures)/[A-Za-z0-9._~%-]+", h) for h in re.findall(r"href='([^'#]*)'", body))
    texts = [t for key in ("hovertemplate", "text", "name") for t in _strings(page, key)]
    for p in payloads:
        if plot_text(p) != p and "%{" not in p:  # "{{7*7}}", "../x" mean nothing to plotly; "%{x}" below
            assert not any(p in t for t in texts), p  # plotly text: every data value escaped
    hover = " ".join(_strings(page, "hovertemplate"))
    assert "%{x} ·" not in hover and "&#37;{x}" in hover  # a label is no template field


def _written_inside(tmp_path: Path, before: set[Path], out: Path) -> None:
    """Everything new under ``tmp_path`` lies in ``out``, and no temporary is left there."""
    new = _tree(tmp_path) - before
    assert all(p == out or out in p.parents for p in new), sorted(new)
    assert not [p for p in new if ".tmp-" in p.name]


def test_hostile_names_are_text_and_stay_in_the_report_folder(tmp_path):
    run = _hostile_demo(tmp_path / "deep" / "er", ALERTS)
    paper = tmp_path / "deep" / "er" / "%{x}.csv"  # a comparison CSV: its stem is a run label
    _results(["../../x/PWNED"], ["step0", "step10", "step100", "step1000"], "m").to_csv(paper, index=False)
    before = _tree(tmp_path)
    out = run / "report-compare"
    result = run_report(ReportConfig((str(run), str(paper)), png=False))
    assert result.page == out / "index.html"
    _written_inside(tmp_path, before, out)
    page = result.page.read_text()
    _check_page(page, ALERTS)
    for section in ("Probe accuracy", "Mutual information", "Steering", "Pre-training"):
        assert f"<h2>{section}</h2>" in page
    assert len(result.figures) >= 5 * len(ALERTS) and all(SAFE_ID.fullmatch(n) for n in result.figures)
    tables = [p.name for p in (out / "tables").iterdir() if not p.name.endswith(".sha256.json")]
    assert len(tables) == 7 and all(re.fullmatch(r"[A-Za-z0-9._+=%-]+", n) for n in tables)
    assert f"{id_part('%{x}')}_%25%7Bx%7D.csv" in tables  # the CSV "%{x}.csv" of the run labelled "%{x}"


def test_pngs_of_a_path_named_dimension_stay_in_the_report_folder(tmp_path):
    """kaleido draws into a private folder; each PNG is published under the figure's id, inside figures/."""
    pytest.importorskip("kaleido")
    run = tmp_path / "deep" / "er" / ALERTS[0]
    run.mkdir(parents=True)
    _results(["../../x/PWNED"], list(ALERTS[:4]), "m").to_csv(run / "results.csv", index=False)
    before = _tree(tmp_path)
    result = run_report(ReportConfig((str(run),), png=True))
    _written_inside(tmp_path, before, run / "report")
    assert len(result.pngs) == len(result.figures) or result.notes  # no Chromium: a note instead
    for pic in result.pngs:
        assert pic.parent == run / "report" / "figures" and SAFE_ID.fullmatch(pic.stem)
        assert pic.read_bytes()[:4] == b"\x89PNG"


def test_no_table_is_copied_through_a_planted_link(tmp_path):
    """A link planted at a table's name while the report runs: refused, and the file it points to kept."""
    run = _hostile_demo(tmp_path, ALERTS)
    victim = tmp_path / "victim.csv"
    victim.write_text("mine\n")
    tables = run / "report" / "tables"
    with hold(run / "report", "report"):
        tables.mkdir()
        (tables / "pretrain_trace_results.csv").symlink_to(victim)
        with pytest.raises(LinkInRunFolderError, match="symbolic link"):
            copy_tables([load_run(run)], tables)
    assert victim.read_text() == "mine\n"


def test_phases_figures_are_named_safely(tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    _results(list(ALERTS), ["step0", "step10", "step100", "step1000"], "m").to_csv(trace / "results.csv",
                                                                                  index=False)
    before = _tree(tmp_path)
    written, _ = write_mi_figures(trace, png=False)
    assert written and all(p.parent == trace / "mi" for p in written)
    assert all(p == trace / "mi" or trace / "mi" in p.parents for p in _tree(tmp_path) - before)


def test_figure_names_are_ids_and_never_collide():
    assert figure_id("toxicity", kind="probe-vs-step") == "toxicity-probe-vs-step"  # plain names unchanged
    names = {figure_id(v, kind="mi-vs-step") for v in (*ALERTS, "Toxicity", "toxicity", "x", "x-", "a--b", "a-b")}
    assert len(names) == len(ALERTS) + 6 and all(SAFE_ID.fullmatch(n) for n in names)
    with pytest.raises(ValueError, match="not an id"):
        Figure("../x", "t", go.Figure())
    figs = [Figure(figure_id("a-b", "c", kind="k"), "", go.Figure()), Figure(figure_id("a", "b-c", kind="k"), "",
                                                                             go.Figure())]
    distinct(figs)
    assert [f.name for f in figs] == ["a-b-c-k", "a-b-c-k-2"]
    assert plot_text("<b>%{x}</b> & \"'") == "&lt;b&gt;&#37;{x}&lt;/b&gt; &amp; &#34;&#39;"
    for bad in ("../x.png", ".hidden.png", "a/b.png", ""):
        with pytest.raises(ValueError, match="plain file name"):
            inside(Path("out"), bad)


def test_png_note_names_an_unwritable_temporary_folder(tmp_path, monkeypatch):
    pytest.importorskip("kaleido")
    missing = tmp_path / "no-such-tmp"
    monkeypatch.setenv("TMPDIR", str(missing))
    notes: list[str] = []
    fig = Figure("f", "f", go.Figure(go.Scatter(x=[1, 2], y=[1, 2])))
    monkeypatch.setattr("plotly.io.write_images", _fail)  # what Chromium does without a temporary folder
    assert write_pngs([fig], tmp_path / "figures", notes) == []
    assert notes == [(f"PNG figures were not written: the temporary folder {missing} is not writable (the "
                      "headless browser needs it); set TMPDIR to a writable folder.")]
    assert not [p for p in _tree(tmp_path) if ".tmp-" in p.name]


def test_png_note_says_install_chromium_only_without_one(monkeypatch):
    monkeypatch.setattr("trusttrace.report.export._browser_found", lambda: False)
    assert "install Chromium" in png_failure(RuntimeError("Browser not found."))
    monkeypatch.setattr("trusttrace.report.export._browser_found", lambda: True)
    note = png_failure(RuntimeError("The browser seemed to close immediately after starting."))
    assert "install" not in note and "RuntimeError: The browser seemed to close" in note


def _fail(*args: object, **kwargs: object) -> None:
    raise RuntimeError("The browser seemed to close immediately after starting.")


def test_no_hostile_name_runs_in_a_real_browser(tmp_path):
    """Headless Chromium loads a report of payloads that set window.PWNED if they run: none may."""
    from tests.report.browser import browser_or_skip, check_page, open_chromium

    paths = browser_or_skip()
    run = _hostile_demo(tmp_path, MARKERS)
    paper = tmp_path / "%{x}.csv"
    _results(["../../x/PWNED"], list(MARKERS[:4]), MARKERS[0]).to_csv(paper, index=False)
    result = run_report(ReportConfig((str(run), str(paper)), png=False))
    _check_page(result.page.read_text(), MARKERS)
    with open_chromium(paths) as driver:
        check = check_page(result.page, tmp_path / "hostile.png", driver=driver)
        pwned, handlers, titles = driver.execute_script(
            "return [window.PWNED, document.querySelectorAll('[onerror],[onload],[onclick]').length,"
            " [...document.querySelectorAll('.gtitle')].map((t) => t.textContent)]")
    assert pwned is None and handlers == 0
    assert check.console_errors == []  # e.g. no <img src=x> failing to load
    assert set(check.figures) == set(result.figures) and all(check.figures.values()), check.figures
    assert any(MARKERS[0] in t for t in titles)  # the payload is shown, as plain text
