"""Headless-Chromium checks for self-contained offline HTML pages (the run report).

``check_page`` loads one file in Debian's Chromium through its chromedriver, with the network switched off,
waits until every ``[data-figure]`` element has drawn, and returns the console errors, which figures
rendered, the title and a full-page screenshot. ``browser_or_skip`` is the entry point for tests; a test that
checks several pages can share one browser through ``open_chromium``.

Example:
    >>> browser_or_skip()  # doctest: +SKIP
    >>> check = check_page(run / "report" / "index.html", tmp_path / "report.png")  # doctest: +SKIP
    >>> assert not check.console_errors and all(check.figures.values())  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

log = logging.getLogger(__name__)

CHROMIUM_ENV = "TRUSTTRACE_CHROMIUM"
CHROMEDRIVER_ENV = "TRUSTTRACE_CHROMEDRIVER"
INSTALL_HINT = "apt-get install chromium chromium-driver (`make setup` does this where apt-get exists)"
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# --headless=new / --no-sandbox / --disable-dev-shm-usage let Chromium run as root in a container with a
# small /dev/shm. --enable-unsafe-swiftshader keeps software WebGL (plotly's *gl traces) working without a
# GPU: Chromium only warns today, but has deprecated the silent fallback; the pages are our own, so trusted.
_CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--enable-unsafe-swiftshader", "--hide-scrollbars", "--force-device-scale-factor=1",
    "--no-first-run", "--disable-extensions", "--mute-audio",
)  # fmt: skip
# Per [data-figure] element: [name, rendered]. Marks count only inside plotly's trace groups (g.trace,
# g.hm for heatmaps) and trace layers (g.mlayer), so axes, grid lines and backgrounds alone (an empty
# go.Figure()) are not "rendered". A horizontal line has zero height, hence width OR height. Canvases
# (WebGL traces) and <img> (static exports) count when they have a size.
_FIGURES_JS = """
const MARKS = 'path, rect, circle, ellipse, line, polyline, polygon, image, text';
const sized = (el, both) => {
  const r = el.getBoundingClientRect();
  return both ? r.width > 0 && r.height > 0 : r.width > 0 || r.height > 0;
};
const drawn = (mark) => {
  if (mark.tagName === 'path' && !(mark.getAttribute('d') || '').trim()) return false;
  if (mark.tagName === 'image' && !(mark.getAttribute('href') || mark.getAttribute('xlink:href'))) return false;
  if (mark.tagName === 'text' && !mark.textContent.trim()) return false;
  return sized(mark, false);
};
const rendered = (fig) => {
  for (const group of fig.querySelectorAll('.main-svg g.trace, .main-svg g.hm, .main-svg g.mlayer')) {
    for (const mark of group.querySelectorAll(MARKS)) if (drawn(mark)) return true;
  }
  for (const canvas of fig.querySelectorAll('canvas')) {
    if (canvas.width > 0 && canvas.height > 0 && sized(canvas, true)) return true;
  }
  for (const img of fig.querySelectorAll('img')) {
    if (img.complete && img.naturalWidth > 0 && sized(img, true)) return true;
  }
  return false;
};
return [document.readyState === 'complete',
        [...document.querySelectorAll('[data-figure]')].map((fig) => [fig.dataset.figure, rendered(fig)])];
"""


@dataclass
class PageCheck:
    """What a headless browser saw on one page."""

    console_errors: list[str]
    """Browser-log messages at SEVERE level: uncaught exceptions and rejections, console.error calls, and
    resources that failed to load (any network request fails: the page must be self-contained)."""
    figures: dict[str, bool]
    """data-figure name -> whether the figure drew marks; a repeated name gets a suffix ("name#2")."""
    screenshot: Path
    """PNG of the whole page (the window is as tall as the document)."""
    title: str


def find_browser() -> tuple[str, str] | None:
    """Find Chromium and its chromedriver: $TRUSTTRACE_CHROMIUM / $TRUSTTRACE_CHROMEDRIVER, else PATH.

    Returns:
        (chromium, chromedriver) paths, or None when either is missing.

    Raises:
        FileNotFoundError: an environment variable is set but does not name an executable file (a wrong
            override should fail loudly, not turn into a skipped test).
    """
    paths = []
    for env, names in ((CHROMIUM_ENV, _CHROMIUM_NAMES), (CHROMEDRIVER_ENV, ("chromedriver",))):
        override = os.environ.get(env)
        if override:
            if not (os.path.isfile(override) and os.access(override, os.X_OK)):
                raise FileNotFoundError(f"${env}={override!r} is not an executable file; fix or unset it.")
            paths.append(override)
            continue
        found = next((p for p in map(shutil.which, names) if p), None)
        if found is None:
            return None
        paths.append(found)
    return paths[0], paths[1]


def browser_or_skip() -> tuple[str, str]:
    """``find_browser()``, or skip the calling test when no browser is installed."""
    paths = find_browser()
    if paths is None:
        pytest.skip(f"no Chromium + chromedriver found (set ${CHROMIUM_ENV}/${CHROMEDRIVER_ENV}, or "
                    f"{INSTALL_HINT})")
    return paths


@contextlib.contextmanager
def open_chromium(paths: tuple[str, str] | None = None) -> Iterator[WebDriver]:
    """A headless Chromium with the network switched off, quit on exit; reuse it across ``check_page`` calls.

    Args:
        paths: (chromium, chromedriver); default ``find_browser()``.

    Raises:
        FileNotFoundError: no browser was given or found.
    """
    paths = paths or find_browser()
    if paths is None:
        raise FileNotFoundError(f"no Chromium + chromedriver found; {INSTALL_HINT}, or set ${CHROMIUM_ENV} "
                                f"and ${CHROMEDRIVER_ENV}.")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in _CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path means selenium never runs selenium-manager (which would try to download one).
    driver = webdriver.Chrome(options=options, service=Service(executable_path=paths[1]))
    try:
        # Offline for the whole session: a page that fetches anything (a CDN plotly.js, a font) gets
        # "Failed to load resource: net::ERR_INTERNET_DISCONNECTED" in its console errors, on any CI machine.
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        yield driver
    finally:
        driver.quit()


def check_page(html: Path, screenshot: Path, width: int = 1400, timeout_s: float = 30, *,
               driver: WebDriver | None = None) -> PageCheck:
    """Load ``html`` offline in headless Chromium, wait for its figures, screenshot it, report what it saw.

    Waits until every ``[data-figure]`` element has rendered, or ``timeout_s``: a page with a figure that
    never draws therefore takes the whole timeout, and reports that figure as False (it does not raise).

    Args:
        html: the page (a file; loaded through its file:// URL).
        screenshot: where to write the full-page PNG (parent folders are created).
        width: window width in CSS pixels (device scale factor 1, so also PNG pixels).
        timeout_s: bound on the page load and on the wait for figures.
        driver: a browser from ``open_chromium`` to reuse; default: start one and quit it afterwards.

    Returns:
        A ``PageCheck``.
    """
    html = Path(html).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"no page at {html}")
    with contextlib.ExitStack() as stack:
        if driver is None:
            driver = stack.enter_context(open_chromium())
        driver.get_log("browser")  # drain: whatever is buffered belongs to the page loaded before this one
        driver.set_window_size(width, 900)
        driver.set_page_load_timeout(timeout_s)
        start = time.monotonic()
        try:
            driver.get(html.as_uri())  # returns after the load event: inline plotly calls have run
        except TimeoutException as err:
            raise TimeoutError(f"{html} did not load within {timeout_s} s") from err
        figures = _wait_for_figures(driver, start + timeout_s)
        log.info("%s: loaded and drawn in %.1f s", html.name, time.monotonic() - start)
        _fit_window_to_page(driver, width)
        screenshot = Path(screenshot)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(screenshot)):
            raise OSError(f"Chromium could not write the screenshot {screenshot}")
        entries = driver.get_log("browser")
        for entry in entries:
            if entry["level"] != "SEVERE":
                log.debug("%s console %s: %s", html.name, entry["level"], entry["message"])
        return PageCheck(console_errors=[e["message"] for e in entries if e["level"] == "SEVERE"],
                         figures=figures, screenshot=screenshot, title=driver.title)


def _wait_for_figures(driver: WebDriver, deadline: float) -> dict[str, bool]:
    """Poll until every figure has rendered or the deadline passes; the last state seen."""
    while True:  # a cold browser may answer before the document is complete: wait for that too
        ready, pairs = driver.execute_script(_FIGURES_JS)
        if (ready and all(ok for _, ok in pairs)) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    figures: dict[str, bool] = {}
    for name, ok in pairs:
        key, n = name, 1
        while key in figures:
            n += 1
            key = f"{name}#{n}"
        figures[key] = ok
    return figures


def _fit_window_to_page(driver: WebDriver, width: int) -> None:
    """Make the viewport as tall as the document, so a screenshot holds the whole page.

    The window's outer height includes browser chrome (~140 px even headless), so add that back; a resize
    can reflow the page (e.g. 100vh layouts), so measure again once.
    """
    for _ in range(2):
        inner, outer, page = driver.execute_script(
            "return [window.innerHeight, window.outerHeight, document.documentElement.scrollHeight]")
        if inner >= page:
            break
        driver.set_window_size(width, page + (outer - inner))
    # Let the resize's layout and paint land before the capture.
    driver.execute_async_script("requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")
