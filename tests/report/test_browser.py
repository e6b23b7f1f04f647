"""The headless-browser harness (tests/report/browser.py), on small plotly pages built here."""

from __future__ import annotations

import struct
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
import pytest

from tests.report.browser import (
    CHROMEDRIVER_ENV,
    CHROMIUM_ENV,
    browser_or_skip,
    check_page,
    find_browser,
    open_chromium,
)


@pytest.fixture(scope="module")
def driver():
    """One browser for the module: starting Chromium costs more than checking a small page."""
    with open_chromium(browser_or_skip()) as drv:
        yield drv


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """Offline pages shaped like the run report: plotly.js inlined once, one [data-figure] div per figure."""
    root = tmp_path_factory.mktemp("pages")
    plotlyjs = plotly.offline.get_plotlyjs()

    def page(name: str, body: str) -> Path:
        path = root / f"{name}.html"
        path.write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>{name} page</title>'
                        f"<script>{plotlyjs}</script></head><body><h1>{name}</h1>{body}</body></html>")
        return path

    def figure(name: str, fig: go.Figure) -> str:
        return f'<div data-figure="{name}">{pio.to_html(fig, full_html=False, include_plotlyjs=False)}</div>'

    scatter = figure("scatter", go.Figure(go.Scatter(x=[1, 2, 3, 4], y=[3, 1, 4, 2], mode="markers")))
    heatmap = figure("heatmap", go.Figure(go.Heatmap(z=[[1, 2, 3], [4, 5, 6], [7, 8, 9]])))
    line = figure("line", go.Figure(go.Scatter(x=[0, 1, 2, 3], y=[0.1, 0.4, 0.2, 0.8], mode="lines")))
    return {
        "good": page("good", scatter + heatmap + line),
        "broken": page("broken", line + '<script>throw new Error("deliberate breakage")</script>'),
        "empty": page("empty", scatter + '<div data-figure="missing"></div>'),
        "cdn": page("cdn", '<script src="https://cdn.plot.ly/plotly-2.35.2.min.js"></script>' + line),
    }


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


# ==== pages ====

def test_good_page_renders_every_figure(driver, pages, tmp_path):
    """No console errors, all three figures drawn, and a screenshot of the whole (taller than 900 px) page."""
    check = check_page(pages["good"], tmp_path / "shots" / "good.png", width=1200, driver=driver)
    assert check.console_errors == []
    assert check.figures == {"scatter": True, "heatmap": True, "line": True}
    assert check.title == "good page"
    page_height = driver.execute_script("return document.documentElement.scrollHeight")
    assert page_height > 900  # three 450 px figures: the window had to grow for the full page
    assert check.screenshot.stat().st_size > 10_000
    width, height = _png_size(check.screenshot)
    assert width == 1200 and height >= page_height


def test_thrown_error_is_a_console_error(pages, tmp_path):
    """Also the path where check_page starts and quits its own browser."""
    browser_or_skip()
    check = check_page(pages["broken"], tmp_path / "broken.png")
    assert any("deliberate breakage" in msg for msg in check.console_errors), check.console_errors
    assert check.figures == {"line": True}


def test_empty_figure_div_is_not_rendered(driver, pages, tmp_path):
    check = check_page(pages["empty"], tmp_path / "empty.png", timeout_s=5, driver=driver)
    assert check.figures == {"scatter": True, "missing": False}
    assert check.console_errors == []


def test_network_fetch_is_a_console_error(driver, pages, tmp_path):
    """The browser is offline, so a page that is not self-contained fails on any machine."""
    check = check_page(pages["cdn"], tmp_path / "cdn.png", driver=driver)
    assert any("cdn.plot.ly" in msg and "ERR_INTERNET_DISCONNECTED" in msg for msg in check.console_errors)


def test_reused_driver_does_not_carry_errors_over(driver, pages, tmp_path):
    check_page(pages["broken"], tmp_path / "broken.png", driver=driver)
    assert check_page(pages["good"], tmp_path / "good.png", driver=driver).console_errors == []


# ==== finding the browser ====

def test_env_overrides_are_honoured(monkeypatch, tmp_path):
    fake = tmp_path / "fake-chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv(CHROMIUM_ENV, str(fake))
    monkeypatch.setenv(CHROMEDRIVER_ENV, str(fake))
    assert find_browser() == (str(fake), str(fake))


def test_bad_env_override_fails_loudly(monkeypatch, tmp_path):
    monkeypatch.setenv(CHROMIUM_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=CHROMIUM_ENV):
        find_browser()


def test_no_browser_skips_with_install_hint(monkeypatch):
    monkeypatch.delenv(CHROMIUM_ENV, raising=False)
    monkeypatch.delenv(CHROMEDRIVER_ENV, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        browser_or_skip()
