"""Route tests with Flask's test client on a real slide and real score files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vis_utils.heatmap import HeatmapStyle, render_heatmap
from vis_utils.percentiles import rank_percentiles
from wsi_core.formats import read_scores
from wsi_core.slide import open_slide
from viewer.app import create_app
from viewer.registry import Registry
from viewer import sources
from viewer.sources import GridIndex, TILE_SIZE
from wsi_core.tissue import contours_for_scores

SID = "CMU-1-Small-Region"


@pytest.fixture(scope="module")
def client(cmu_slide, our_scores):
    return create_app(Registry.single(cmu_slide, our_scores)).test_client()


def _png(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.data[:200]
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(resp.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_dzi_descriptors_and_tiles(client):
    for layer, fmt in (("slide", "jpeg"), ("heatmap", "png")):
        r = client.get(f"/dzi/{SID}/{layer}.dzi")
        assert r.status_code == 200 and b'Width="2220" Height="2967"' in r.data and f'Format="{fmt}"'.encode() in r.data
    top = 12    # ceil(log2(2967)) : the level of level-0 px
    r = client.get(f"/tiles/{SID}/slide/{top}/2_3.jpeg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (TILE_SIZE + 2, TILE_SIZE + 2)
    assert _png(client.get(f"/tiles/{SID}/heatmap/{top}/0_0.png")).shape == (TILE_SIZE + 1, TILE_SIZE + 1, 3)
    assert client.get(f"/tiles/{SID}/heatmap/{top}/99_0.png").status_code == 400
    assert client.get(f"/tiles/{SID}/heatmap/3/0_0.png").status_code == 200   # one tile, whole slide


@pytest.mark.parametrize("layer_max_px", [1 << 23, 0], ids=["colour layer", "per tile"])
@pytest.mark.parametrize("query,style", [
    ("", HeatmapStyle(alpha=0.4)),
    ("?segment=0", HeatmapStyle(alpha=0.4, segment=False)),
    ("?cmap=coolwarm&alpha=1&blur=1&overlap=0.5", HeatmapStyle(cmap="coolwarm", alpha=1.0, blur=True, overlap=0.5)),
    ("?binarize=1&thresh=0.6&blank=1", HeatmapStyle(binarize=True, binary_thresh=0.6, blank_canvas=True)),
])
def test_on_the_fly_tiles_equal_the_renderer(cmu_slide, our_scores, query, style, layer_max_px, monkeypatch):
    """Level-0 tiles are crops of render_heatmap at vis_level 0 (percentile scale), tissue mask and
    blur borders too - drawn from the level's colour layer or from the patches under each tile."""
    monkeypatch.setattr(sources, "LAYER_MAX_PX", layer_max_px)
    client = create_app(Registry.single(cmu_slide, our_scores)).test_client()
    sf = read_scores(our_scores)
    with open_slide(cmu_slide) as slide:
        contours, found = contours_for_scores(slide, our_scores)
        assert found == "segmented"              # no contour file beside these scores
        full = render_heatmap(slide, sf.scores, sf.coords, patch_size_level0=(256, 256), vis_level=0,
                              contours=contours, style=style, convert_to_percentiles=True)
        bare = render_heatmap(slide, sf.scores, sf.coords, patch_size_level0=(256, 256), vis_level=0,
                              contours=None, style=style, convert_to_percentiles=True)
    masked = 0
    for col, row in ((0, 0), (3, 4), (8, 11), (5, 2)):      # corner, interior, bottom-right edge, tissue edge
        tile = _png(client.get(f"/tiles/{SID}/heatmap/12/{col}_{row}.png{query}"))
        x0, y0 = col * TILE_SIZE - (col > 0), row * TILE_SIZE - (row > 0)
        ref = full[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]]
        assert tile.shape == ref.shape
        np.testing.assert_array_equal(tile, ref)
        masked += int((ref != bare[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]]).any(axis=2).sum())
    if not style.binarize:       # the tissue mask left covered background uncoloured (binarized: only tissue is above)
        assert (masked > 0) == style.segment


def test_jpeg_tiles_are_the_png_tiles_compressed(client):
    """The page asks for .jpeg (q90): the same picture as the exact .png, within JPEG loss."""
    r = client.get(f"/tiles/{SID}/heatmap/12/4_4.jpeg?alpha=0.6")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    jpg = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR).astype(int)
    png = cv2.imdecode(np.frombuffer(client.get(f"/tiles/{SID}/heatmap/12/4_4.png?alpha=0.6").data, np.uint8),
                       cv2.IMREAD_COLOR).astype(int)
    assert jpg.shape == png.shape and np.abs(jpg - png).mean() < 3


def test_style_changes_tiles(client):
    a = _png(client.get(f"/tiles/{SID}/heatmap/12/4_4.png"))
    b = _png(client.get(f"/tiles/{SID}/heatmap/12/4_4.png?scale=raw&lower=0.1&upper=0.9"))
    assert (a != b).any()


def test_value_route_returns_the_h5_numbers(client, our_scores):
    sf = read_scores(our_scores)
    x, y = 1000, 1000
    r = client.get(f"/api/value/{SID}?x={x}&y={y}")
    assert r.status_code == 200
    got = r.get_json()["patches"]
    c = sf.coords
    want = np.flatnonzero((c[:, 0] <= x) & (x < c[:, 0] + 256) & (c[:, 1] <= y) & (y < c[:, 1] + 256))
    assert [p["index"] for p in got] == want.tolist() and len(want) >= 2
    pct = rank_percentiles(sf.scores)
    for p in got:
        assert p["raw"] == pytest.approx(float(sf.scores[p["index"]]))
        assert p["percentile"] == pytest.approx(pct[p["index"]])
        assert p["class_logits"] == pytest.approx([p["raw"] / 10, -p["raw"] / 10], rel=1e-5)
        assert (p["x"], p["y"]) == tuple(c[p["index"]])
    assert client.get(f"/api/value/{SID}?x=5&y=5").get_json()["patches"] == []


def test_extremes_and_colorbar(client, our_scores):
    sf = read_scores(our_scores)
    r = client.get(f"/api/extremes/{SID}?k=3").get_json()
    assert r["top"][0]["raw"] == pytest.approx(float(sf.scores.max()))
    assert r["bottom"][0]["raw"] == pytest.approx(float(sf.scores.min()))
    cb = client.get(f"/api/colorbar/{SID}?scale=raw&lower=0&upper=1").get_json()
    assert (cb["lo"], cb["hi"]) == pytest.approx((float(sf.scores.min()), float(sf.scores.max())))
    assert "raw attention" in cb["units"] and len(cb["lut"]) == 256
    assert client.get(f"/thumb/{SID}/{r['top'][0]['index']}.jpg").mimetype == "image/jpeg"


def test_unregistered_and_dot_dot_refused(client):
    for url in ("/api/slide/other", "/dzi/other/slide.dzi", "/tiles/other/slide/12/0_0.jpeg",
                f"/dzi/{SID}/mask.dzi"):
        r = client.get(url)
        assert r.status_code == 404 and "registered" in r.get_json()["error"] or "layer" in r.get_json()["error"]
    for url in (f"/dzi/{SID}/../../etc/passwd", "/static/../app.py", f"/api/value/{SID}?x=1&y=..%2F.."):
        r = client.get(url)
        assert r.status_code in (400, 404), url
        assert b"passwd" not in r.data and b"create_app" not in r.data
    assert client.get("/static/../app.py").status_code == 400
    assert client.get(f"/tiles/{SID}/heatmap/12/0_0.png?alpha=2").status_code == 400
    assert "scale" in client.get(f"/tiles/{SID}/heatmap/12/0_0.png?scale=run").get_json()["error"]


def test_grid_index_matches_a_scan():
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 50_000, size=(20_000, 2))
    idx = GridIndex(coords, (256, 128))
    for x0, y0, x1, y1 in ((0, 0, 300, 300), (10_000, 20_000, 10_254, 20_254), (49_000, 49_000, 60_000, 60_000)):
        scan = np.flatnonzero((coords[:, 0] < x1) & (coords[:, 0] + 256 > x0) & (coords[:, 1] < y1) & (coords[:, 1] + 128 > y0))
        np.testing.assert_array_equal(idx.query(x0, y0, x1, y1), scan)


def test_page_starts_at_the_one_tile_level(client):
    assert client.get(f"/api/slide/{SID}").get_json()["min_level"] == 8   # 2220x2967 / 16 is one 254-px tile
