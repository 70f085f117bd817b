"""report.html in a real headless Chromium: no console errors, no fetches, every plot drawn."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hwkit.report.html import render_html
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # end-to-end: compiles or trains through the real toolchains

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTEFACTS = ROOT / "build" / "test-artifacts"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]


def _chromium_or_skip() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: scripts/setup.sh --dev installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --dev installs it)")


def _open(html_path: Path, screenshot: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        console, requests, errors = [], [], []
        page.on("console", lambda m: console.append((m.type, m.text)))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html_path.as_uri())
        plots = page.evaluate(
            """() => [...document.querySelectorAll('figure[data-plot]')].map(f => {
                 const s = f.querySelector('svg'); const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};
                 const marks = s ? [...s.querySelectorAll('rect,circle,polyline')]
                     .filter(e => e.getBBox().width > 0 || e.getBBox().height > 0).length : 0;
                 return {name: f.dataset.plot, width: r.width, height: r.height, marks};
               })"""
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return console, requests, errors, plots


def test_report_html_renders_in_chromium(tiny_build, tmp_path):
    _chromium_or_skip()
    out, _ = tiny_build
    doc = json.loads((out / "report.json").read_text())
    # what later stages add to a report: training metrics, energy tiers, a design-space exploration
    doc["model"]["checkpoint_meta"] = {"metrics": {"confusion_matrix": [[50, 1], [2, 47]], "classes": ["a", "b"]}}
    doc["energy"] = [{"name": "PL", "low": 0.1, "high": 0.3, "value": 0.2, "unit": "mJ",
                      "source": "analytical-estimate"}]
    doc["pareto"] = [{"cost": 0.27, "accuracy": 0.99, "label": "2-bit"},
                     {"cost": 1.0, "accuracy": 0.995, "label": "4-bit"}]
    page = tmp_path / "report.html"
    page.write_text(render_html(doc))
    shot = ARTEFACTS / "report-html.png"
    console, requests, errors, plots = _open(page, shot)

    assert errors == [] and [c for c in console if c[0] in ("error", "warning")] == []
    assert requests == [page.as_uri()]  # self-contained: nothing fetched but the page itself
    names = {p["name"] for p in plots}
    assert {"layer-LUT", "layer-cycles", "latency-breakdown", "utilisation", "energy-0", "confusion-matrix",
            "pareto"} <= names
    for p in plots:
        assert p["width"] > 100 and p["height"] > 20 and p["marks"] > 0, p
    assert shot.stat().st_size > 10_000


def test_html_escapes_names(tiny_build):
    out, _ = tiny_build
    doc = json.loads((out / "report.json").read_text())
    doc["layers"][0]["name"] = "<script>alert(1)</script>"
    text = render_html(doc)
    assert "<script>" not in text and "&lt;script&gt;" in text
