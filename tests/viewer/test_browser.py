"""The page in headless Chromium (Debian's ``chromium`` driven by the ``playwright`` package).

The server runs in a thread on a free port, on CMU-1-Small-Region from ../shared and a score file
on the patches of CLAM's reference run (see conftest). Screenshots go to ``tests/artifacts/viewer/``
(ignored by git).
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from wsi_core.formats import read_scores
from viewer.cli import serve
from viewer.registry import Registry

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "viewer"
SID = "CMU-1-Small-Region"


def _chromium() -> str | None:
    for p in (os.environ.get("CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium"),
              shutil.which("chromium-browser")):
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


@pytest.fixture(scope="module")
def server(cmu_slide, our_scores):
    srv = serve(Registry.single(cmu_slide, our_scores), "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                   "(pip install -e '.[test]')")
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary (apt-get install -y chromium, or set CHROMIUM=/path)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page(viewport={"width": 1400, "height": 800})
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    pg.close()
    assert not errors, errors


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("window.wsiViewer && window.wsiViewer.ready && window.wsiViewer.fullyLoaded()",
                           timeout=30_000)


def _settle(page) -> None:
    page.wait_for_function("window.wsiViewer.fullyLoaded()", timeout=30_000)
    page.wait_for_timeout(300)


def _canvas_pixels(page, selector: str) -> np.ndarray:
    import cv2
    png = page.locator(selector).screenshot()
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def _close(a: dict, b: dict, tol: float = 2.0) -> bool:
    return all(abs(a[k] - b[k]) <= tol for k in ("x", "y", "width", "height"))


def test_both_viewers_show_tiles_and_stay_locked(page, server):
    _open(page, server + "/")
    left, right = _canvas_pixels(page, "#left"), _canvas_pixels(page, "#right")
    assert left.std() > 10 and right.std() > 10               # tissue and colour, not blank
    assert (np.abs(left.astype(int) - right.astype(int)).sum(axis=2) > 30).mean() > 0.05   # heatmap differs
    page.screenshot(path=str(ARTIFACTS / "side_by_side.png"))
    # zoom and pan the right viewer with the mouse: the left one follows to the same level-0 region
    box = page.locator("#right").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -600)
    page.wait_for_timeout(800)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 120, box["y"] + box["height"] / 2 - 80, steps=8)
    page.mouse.up()
    page.wait_for_timeout(1200)
    views = page.evaluate("window.wsiViewer.getViews()")
    assert len(views) == 2 and views[1]["width"] < 2220 * 0.9            # zoomed in
    assert _close(views[0], views[1]), views
    # and the left leads too
    box = page.locator("#left").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.wheel(0, 400)
    page.wait_for_timeout(1200)
    views2 = page.evaluate("window.wsiViewer.getViews()")
    assert views2[0]["width"] > views[0]["width"] and _close(views2[0], views2[1]), views2
    page.evaluate("window.wsiViewer.setView({x: 1000, y: 1200, width: 800})")
    views3 = page.evaluate("window.wsiViewer.getViews()")
    for v in views3:
        assert abs(v["x"] + v["width"] / 2 - 1000) < 2 and abs(v["y"] + v["height"] / 2 - 1200) < 2
        assert abs(v["width"] - 800) < 2


def test_overlay_opacity_changes_pixels(page, server):
    _open(page, server + "/?mode=overlay")
    page.evaluate("window.wsiViewer.setView({x: 1100, y: 1400, width: 1600})")
    _settle(page)
    page.fill("#opacity", "0")
    page.dispatch_event("#opacity", "input")
    page.wait_for_timeout(400)
    a = _canvas_pixels(page, "#left")
    page.locator("#opacity").evaluate("e => { e.value = 1; e.dispatchEvent(new Event('input')); }")
    page.wait_for_timeout(400)
    b = _canvas_pixels(page, "#left")
    page.screenshot(path=str(ARTIFACTS / "overlay_opacity_1.png"))
    changed = (np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 30).mean()
    assert changed > 0.05, changed


def test_hover_shows_the_h5_value(page, server, our_scores):
    _open(page, server + "/")
    sf = read_scores(our_scores)
    i = int(np.argmax(sf.scores))
    x, y = (int(v) for v in sf.coords[i])
    page.evaluate(f"window.wsiViewer.setView({{x: {x + 128}, y: {y + 128}, width: 600}})")
    _settle(page)
    box = page.locator("#right").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("document.getElementById('readout').textContent.includes('raw attention')")
    text = page.inner_text("#readout")
    hx, hy = (int(v.split()[-1]) for v in text.splitlines()[0].split(" (")[0].split(","))
    assert abs(hx - (x + 128)) <= 2 and abs(hy - (y + 128)) <= 2, text     # the centre, level-0 px
    assert f"patch ({x}, {y})" in text and f"raw attention {float(sf.scores[i]):.6g}"[:18] in text, text
    page.screenshot(path=str(ARTIFACTS / "hover.png"))


def test_topk_click_centres_both_and_deep_link_reopens(page, server, our_scores):
    _open(page, server + "/")
    page.wait_for_selector("#gallery-top figure")
    sf = read_scores(our_scores)
    top = int(np.argmax(sf.scores))
    fig = page.locator("#gallery-top figure").first
    assert (int(fig.get_attribute("data-x")), int(fig.get_attribute("data-y"))) == tuple(sf.coords[top])
    fig.click()
    page.wait_for_timeout(500)
    cx, cy = sf.coords[top] + 128
    for v in page.evaluate("window.wsiViewer.getViews()"):
        assert abs(v["x"] + v["width"] / 2 - cx) < 2 and abs(v["y"] + v["height"] / 2 - cy) < 2
    _settle(page)
    page.screenshot(path=str(ARTIFACTS / "topk_click.png"))
    link = page.url
    assert f"slide={SID}" in link and "x=" in link and "w=" in link
    before = page.evaluate("window.wsiViewer.getViews()")[0]
    page2 = page.context.browser.new_page(viewport={"width": 1400, "height": 800})
    _open(page2, link)
    after = page2.evaluate("window.wsiViewer.getViews()")[0]
    assert _close(before, after, tol=3), (before, after)
    png = page2.evaluate("window.wsiViewer.exportPng()")
    assert png.startswith("data:image/png;base64,") and len(png) > 10_000
    page2.close()


def test_tissue_only_toggle_redraws_the_heatmap(page, server):
    """Unticking 'tissue only' asks for tiles without the tissue mask: colour appears on the
    background the patches cover past the tissue edge (the left viewer, the slide, stays)."""
    _open(page, server + "/")
    assert page.is_checked("#segment") and not page.is_disabled("#segment")
    masked, slide = _canvas_pixels(page, "#right"), _canvas_pixels(page, "#left")
    page.uncheck("#segment")
    page.wait_for_timeout(300)
    _settle(page)
    bare = _canvas_pixels(page, "#right")
    changed = (np.abs(masked.astype(int) - bare.astype(int)).sum(axis=2) > 30).mean()
    assert changed > 0.005, changed
    assert np.abs(slide.astype(int) - _canvas_pixels(page, "#left").astype(int)).mean() < 1
    page.screenshot(path=str(ARTIFACTS / "tissue_only_off.png"))
