"""Pyramidal TIFF output: the writer read back through OpenSlide, the banded heatmap renderer
against render_heatmap (pixel-equal with lossless deflate), planted patterns, size limits."""
from __future__ import annotations

import dataclasses

import cv2
import h5py
import numpy as np
import openslide
import pytest
import tifffile

from vis_utils.heatmap import HeatmapStyle, render_heatmap
from vis_utils.raster import colormap_lut, tissue_mask
from vis_utils.tiff import check_raster_size, pyramid_sizes, write_pyramidal_tiff
from vis_utils.tiled import TissueWindows, band_tissue_mask, render_heatmap_tiff, scaled_contours
from wsi_core import open_slide
from wsi_core.errors import ConfigError
from wsi_core.tissue import TissueContours, load_clam_mask_pkl

from .clam_oracle import FakeSlide


def _image(w: int, h: int) -> np.ndarray:
    """Smooth gradients plus flat colour blocks, (h, w, 3) uint8 (JPEG-friendly)."""
    y, x = np.mgrid[:h, :w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                    np.full_like(x, 200)], axis=-1).astype(np.uint8)
    img[40:140, 60:200] = (255, 0, 0)
    img[200:330, 300:460] = (0, 0, 255)
    img[350:420, 80:260] = (0, 255, 0)
    return img


def _read(path, level=0) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as osr:
        w, h = osr.level_dimensions[level]
        return np.asarray(osr.read_region((0, 0), level, (w, h)))[..., :3]


def _box_down(img: np.ndarray, times: int) -> np.ndarray:
    for _ in range(times):
        h, w = img.shape[0] // 2, img.shape[1] // 2
        img = cv2.resize(img[:2 * h, :2 * w], (w, h), interpolation=cv2.INTER_AREA)
    return img


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return _image(700, 530)


def test_jpeg_tiff_opens_in_openslide(tmp_path, picture):
    calls = []

    def band(y0, y1):
        calls.append((y0, y1))
        return picture[y0:y1]

    out = write_pyramidal_tiff(tmp_path / "a.tiff", band, size=(700, 530), mpp=(0.25, 0.5),
                               min_size=100, band_rows=200, description="test")
    assert calls == [(0, 200), (200, 400), (400, 530)]
    with openslide.OpenSlide(str(out)) as osr:
        assert osr.level_dimensions == ((700, 530), (350, 265), (175, 132), (87, 66))
        assert osr.properties["openslide.vendor"] == "generic-tiff"
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25, rel=1e-9)
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(0.5, rel=1e-9)
    level0 = _read(out).astype(int)
    # colours decode right (YCbCr tagged as such): flat blocks within JPEG q90 noise
    assert np.abs(level0[60:120, 80:180] - (255, 0, 0)).max() <= 4
    assert np.abs(level0[220:310, 320:440] - (0, 0, 255)).max() <= 4
    assert np.abs(level0 - picture).mean() < 1.0
    level2 = _read(out, 2).astype(int)
    assert np.abs(level2 - _box_down(picture, 2)).mean() < 1.5


@pytest.mark.parametrize("bigtiff", [False, True])
def test_deflate_tiff_is_lossless_at_every_level(tmp_path, picture, bigtiff):
    bands = [picture[:37], picture[37:300], picture[300:]]      # irregular band heights
    out = write_pyramidal_tiff(tmp_path / "b.tif", iter(bands), size=(700, 530), mpp=None,
                               compression="deflate", min_size=100, bigtiff=bigtiff)
    assert pyramid_sizes((700, 530), min_size=100) == [(700, 530), (350, 265), (175, 132),
                                                       (87, 66)]
    for level in range(4):                                      # odd sizes crop a column/row
        assert np.array_equal(_read(out, level), _box_down(picture, level))
    with tifffile.TiffFile(out) as tf:
        assert tf.is_bigtiff == bigtiff and len(tf.pages) == 4
        assert tf.pages[1].subfiletype == 1 and tf.pages[0].tile == (256, 256)


def test_grey_tiff_and_bad_input(tmp_path):
    grey = (np.arange(300 * 260) % 251).astype(np.uint8).reshape(260, 300)
    out = write_pyramidal_tiff(tmp_path / "g.tif", grey, size=(300, 260), mpp=(1.0, 1.0),
                               compression="none", min_size=300)
    assert np.array_equal(_read(out)[..., 0], grey)
    with pytest.raises(ValueError, match="the bands gave 100 rows, expected 260"):
        write_pyramidal_tiff(tmp_path / "x.tif", [grey[:100]], size=(300, 260), mpp=None)
    with pytest.raises(ConfigError, match="unknown TIFF compression 'lzw'"):
        write_pyramidal_tiff(tmp_path / "x.tif", grey, size=(300, 260), mpp=None, compression="lzw")
    assert not (tmp_path / "x.tif").exists()


def test_check_raster_size_messages():
    check_raster_size(65535, 1000, "jpg")
    check_raster_size(100000, 80000, "tiff")
    with pytest.raises(ConfigError) as e:
        check_raster_size(100000, 80000, "png")
    assert str(e.value) == ("a level-0 PNG of 100000x80000 px exceeds PNG/JPEG limits (JPEG 65,535 "
                            "px per side; PNG decoders ~2^31 px); use save_ext: tiff")
    with pytest.raises(ConfigError, match="a level-0 JPEG of 70000x100 px exceeds"):
        check_raster_size(70000, 100, ".jpeg")


def test_band_tissue_mask_equals_full_mask_rows():
    """OpenCV re-derives clipped polygon edges, so a naive band drawing differs at band borders
    (measured: 64 px in 1066 x 1031 for 150-row bands); band_tissue_mask must not."""
    ellipse = cv2.ellipse2Poly((1600, 1550), (1500, 1400), 0, 0, 360, 3).reshape(-1, 1, 2)
    triangle = np.array([[[200, 100]], [[3000, 1700]], [[900, 3050]]])      # long edges
    contours = TissueContours(
        tissue=[ellipse.astype(np.int32), triangle.astype(np.int32)],
        holes=[[cv2.ellipse2Poly((1500, 1500), (300, 200), 0, 0, 360, 7).reshape(-1, 1, 2)
                .astype(np.int32)], []])
    scale = np.array([1066 / 3200, 1031 / 3100])
    for tl, size in [((0, 0), (1066, 1031)), ((37, 55), (900, 1000))]:
        full = tissue_mask(contours, region_size=size, scale=scale, top_left=tl, use_holes=True)
        scaled = scaled_contours(contours, scale, True)
        for a in range(0, size[1], 150):
            b = min(size[1], a + 150)
            band = band_tissue_mask(scaled, top_left=tl, scale=scale, width=size[0], rows=(a, b),
                                    height=size[1])
            assert np.array_equal(band, full[a:b]), (tl, a)


def test_tissue_windows_equal_the_full_mask():
    """Tiles of the mask drawn alone (TissueWindows) equal the full drawing, at long edges, holes
    and canvas borders; naive tile drawings do not."""
    ellipse = cv2.ellipse2Poly((1600, 1550), (1500, 1400), 0, 0, 360, 3).reshape(-1, 1, 2)
    triangle = np.array([[[200, 100]], [[3000, 1700]], [[900, 3050]]])      # edges up to 2,600 px
    contours = TissueContours(
        tissue=[ellipse.astype(np.int32), triangle.astype(np.int32)],
        holes=[[cv2.ellipse2Poly((1500, 1500), (300, 200), 0, 0, 360, 7).reshape(-1, 1, 2)
                .astype(np.int32)], []])
    rng = np.random.default_rng(0)
    naive_diff = 0
    for d in (2, 3, 8):
        size = (-(-3200 // d), -(-3100 // d))
        full = tissue_mask(contours, region_size=size, scale=(1 / d, 1 / d), top_left=(0, 0), use_holes=True)
        windows = TissueWindows(contours, (1 / d, 1 / d), size)
        assert windows.margin < 2048                 # the longest edge is drawn whole
        for _ in range(40):
            x0, y0 = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
            box = (x0, y0, min(size[0], x0 + 254), min(size[1], y0 + 254))
            np.testing.assert_array_equal(windows.mask(box), full[box[1]:box[3], box[0]:box[2]])
            naive = np.zeros((box[3] - box[1], box[2] - box[0]), np.uint8)
            for t, hs in scaled_contours(contours, np.array([1 / d, 1 / d]), True):
                cv2.drawContours(naive, [t], -1, 1, -1, offset=(-x0, -y0))
                cv2.drawContours(naive, hs, -1, 0, -1, offset=(-x0, -y0))
            naive_diff += int((naive.astype(bool) != full[box[1]:box[3], box[0]:box[2]]).sum())
    assert naive_diff > 0          # the margin is what makes windows exact


def _grid(w0, h0, patch, step, seed):
    xs, ys = np.meshgrid(np.arange(0, w0 - patch // 2, step), np.arange(0, h0 - patch // 2, step))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    return coords, np.random.default_rng(seed).random(len(coords)).astype(np.float32)


@pytest.mark.parametrize("style", [
    HeatmapStyle(alpha=0.4, overlap=0.5),
    HeatmapStyle(alpha=0.5, overlap=0.5, blur=True),
    HeatmapStyle(alpha=1.0, binarize=True, binary_thresh=0.3, cmap="coolwarm"),
], ids=["blend", "blur", "alpha1-binarize"])
def test_banded_equals_render_heatmap_at_noninteger_level(tmp_path, style):
    """Level 1 at downsample 3.001 / 3.005 (shifted CLAM block reads), 2 x 2 CLAM blocks at the
    level, bands of 150 rows that cut through blocks and patches."""
    slide = FakeSlide(_image(3200, 3100), [(1066, 1031)], slide_id="fake")
    contours = TissueContours(
        tissue=[cv2.ellipse2Poly((1600, 1550), (1500, 1400), 0, 0, 360, 3).reshape(-1, 1, 2)
                .astype(np.int32)], holes=[[]])
    coords, scores = _grid(3200, 3100, 256, 128, 1)
    kw = dict(patch_size_level0=(256, 256), vis_level=1, contours=contours, style=style,
              convert_to_percentiles=True)
    ref = render_heatmap(slide, scores, coords, **kw)
    res = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "h.tif",
                              compression="deflate", band_rows=150, min_size=600)
    got = _read(res.heatmap)
    if style.alpha < 1.0:
        assert np.array_equal(got, ref)
    else:  # non-integer downsample: read_region per band may shift the uncoloured base
        lut = colormap_lut(style.cmap)
        coloured = np.all(ref == lut[0], axis=-1) | np.all(ref == lut[-1], axis=-1)
        assert coloured.mean() > 0.5 and np.array_equal(got[coloured], ref[coloured])
    with openslide.OpenSlide(str(res.heatmap)) as osr:
        assert osr.level_count == 2 and "openslide.mpp-x" not in osr.properties


def test_planted_pattern_lands_on_level0_pixels(tmp_path):
    """A synthetic 1536 x 1280 slide (written as a TIFF), 256-px patches without overlap, one hot
    patch: in the level-0 TIFF exactly its 256 x 256 px are the top colour of the map."""
    w0, h0 = 1536, 1280
    slide_path = write_pyramidal_tiff(tmp_path / "slide.tif", np.full((h0, w0, 3), 230, np.uint8),
                                      size=(w0, h0), mpp=(0.5, 0.5), compression="deflate",
                                      min_size=400)
    coords, _ = _grid(w0, h0, 256, 256, 0)
    scores = np.zeros(len(coords), dtype=np.float32)
    hot = np.flatnonzero((coords[:, 0] == 768) & (coords[:, 1] == 512))
    scores[hot] = 100.0
    lut = colormap_lut("jet")
    with open_slide(slide_path) as slide:
        res = render_heatmap_tiff(slide, scores, coords, patch_size_level0=(256, 256),
                                  vis_level=0, contours=None,
                                  style=HeatmapStyle(alpha=1.0, blank_canvas=True),
                                  convert_to_percentiles=False, out_path=tmp_path / "hm.tif",
                                  raw_scores=tmp_path / "hm_scores.tif", compression="deflate", band_rows=200)
        level1 = slide.level_dimensions[1]
    got = _read(res.heatmap)
    expect = np.empty_like(got)
    expect[:] = lut[0]
    expect[512:768, 768:1024] = lut[-1]
    assert np.array_equal(got, expect)
    assert res.scores == tmp_path / "hm_scores.tif"
    raw = _read(res.scores)[..., 0]
    assert raw.sum() == 255 * 256 * 256 and raw[512:768, 768:1024].min() == 255
    with openslide.OpenSlide(str(res.heatmap)) as osr:
        assert osr.level_dimensions[0] == (w0, h0)
        assert float(osr.properties["openslide.mpp-x"]) == 0.5
    # the same pattern at vis_level 1 lands on the level-1 pixels, mpp scaled by 2
    with open_slide(slide_path) as slide:
        res1 = render_heatmap_tiff(slide, scores, coords, patch_size_level0=(256, 256),
                                   vis_level=1, contours=None,
                                   style=HeatmapStyle(alpha=1.0, blank_canvas=True),
                                   convert_to_percentiles=False, out_path=tmp_path / "hm1.tif",
                                   compression="deflate")
    got1 = _read(res1.heatmap)
    assert got1.shape[:2] == level1[::-1]
    hot1 = np.all(got1 == lut[-1], axis=-1)
    assert hot1.sum() == 128 * 128 and hot1[256:384, 384:512].all()
    with openslide.OpenSlide(str(res1.heatmap)) as osr:
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(1.0)


def test_custom_downsample_refused(tmp_path):
    slide = FakeSlide(_image(300, 300), [], slide_id="fake")
    with pytest.raises(ConfigError, match="fake: heatmap_arguments.custom_downsample 2 is not "
                                          "supported with save_ext: tiff"):
        render_heatmap_tiff(slide, [1.0], [[0, 0]], patch_size_level0=(256, 256), vis_level=0,
                            contours=None, style=HeatmapStyle(custom_downsample=2),
                            convert_to_percentiles=False, out_path=tmp_path / "x.tif")


@pytest.mark.shared
def test_real_slide_tiff_equals_render_heatmap(tmp_path, clam_reference_dir, slides_dir):
    """CMU-1-Small-Region at vis_level 0 with CLAM's 0.5-overlap scores and mask: the lossless
    TIFF decodes to render_heatmap's array exactly; the JPEG q90 one within JPEG noise."""
    raw = (clam_reference_dir / "real_sb/heatmap_raw_results/REAL_SB/class_a/CMU-1-Small-Region")
    with h5py.File(raw / "CMU-1-Small-Region_0.5_roi_False.h5", "r") as f:
        scores, coords = f["attention_scores"][:], f["coords"][:]
    kw = dict(patch_size_level0=(256, 256), vis_level=0,
              contours=load_clam_mask_pkl(raw / "CMU-1-Small-Region_mask.pkl"),
              style=HeatmapStyle(cmap="jet", alpha=0.4, overlap=0.5), convert_to_percentiles=False)
    with open_slide(slides_dir / "CMU-1-Small-Region.svs") as slide:
        ref = render_heatmap(slide, scores, coords, **kw)
        lossless = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "l.tif",
                                       compression="deflate", band_rows=700)
        lossy = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "j.tiff")
        mpp = slide.mpp
    assert np.array_equal(_read(lossless.heatmap), ref)
    d = np.abs(_read(lossy.heatmap).astype(int) - ref)
    assert d.mean() < 1.5, d.mean()              # JPEG q90 4:4:4 noise on tissue texture
    with openslide.OpenSlide(str(lossy.heatmap)) as osr:
        assert osr.level_dimensions[0] == ref.shape[1::-1] and osr.level_count == 3
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(mpp[0], rel=1e-6)
        assert "CMU-1-Small-Region" in osr.properties["openslide.comment"]


def test_blur_banded_equals_render_heatmap_at_level0(tmp_path):
    slide = FakeSlide(_image(900, 1000), [], slide_id="fake")
    coords, scores = _grid(900, 1000, 128, 64, 3)
    style = dataclasses.replace(HeatmapStyle(alpha=0.6, overlap=0.5, blur=True), segment=False)
    kw = dict(patch_size_level0=(128, 128), vis_level=0, contours=None, style=style,
              convert_to_percentiles=True, roi=(50, 30, 870, 990))
    ref = render_heatmap(slide, scores, coords, **kw)
    res = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / "b.tif",
                              compression="deflate", band_rows=128)
    assert np.array_equal(_read(res.heatmap)[30:990, 50:870], ref)      # the ROI in its place


# ------------------------------------------------------------- sparse TIFFs: an ROI in the slide's geometry

def _roi_case():
    slide = FakeSlide(_image(1300, 1100), [(650, 550)], slide_id="fake")
    coords, scores = _grid(1300, 1100, 256, 128, 7)
    contours = TissueContours(
        tissue=[cv2.ellipse2Poly((650, 550), (600, 500), 0, 0, 360, 3).reshape(-1, 1, 2).astype(np.int32)],
        holes=[[]])
    return slide, coords, scores, contours


def _rgba(path, level=0) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as osr:
        return np.asarray(osr.read_region((0, 0), level, osr.level_dimensions[level]))


def test_empty_tiles_are_transparent_in_openslide(tmp_path, picture):
    """content_box: tiles of every level wholly outside it have byte count 0 (never encoded) and
    OpenSlide >= 4 reads them with alpha 0; a band given as None stands for fill rows."""
    box = (300, 260, 520, 400)
    masked = np.full_like(picture, 255)
    masked[260:400, 300:520] = picture[260:400, 300:520]
    calls = []

    def band(y0, y1):
        calls.append((y0, y1))
        return None if y1 <= 260 else masked[y0:y1]

    out = write_pyramidal_tiff(tmp_path / "s.tif", band, size=(700, 530), mpp=None, compression="deflate",
                               min_size=100, band_rows=128, content_box=box)
    assert calls[0] == (0, 128)
    with tifffile.TiffFile(out) as tf:
        level0 = tf.pages[0]
        counts = np.array(level0.databytecounts).reshape(3, 3)      # 256-px tiles of 700 x 530
        offsets = np.array(level0.dataoffsets).reshape(3, 3)
    assert (counts[1:2, 1:3] > 0).all() and counts.sum() == counts[1, 1] + counts[1, 2]   # tiles (1,1), (1,2)
    assert (offsets[counts == 0] == 0).all()
    rgba = _rgba(out)
    assert (rgba[:256, :, 3] == 0).all() and (rgba[256:512, :256, 3] == 0).all()
    assert np.array_equal(rgba[260:400, 300:520, :3], picture[260:400, 300:520])
    assert (rgba[256:512, 256:700, 3] == 255).all()
    with pytest.raises(ValueError, match="overlap the content box"):
        write_pyramidal_tiff(tmp_path / "x.tif", lambda a, b: None, size=(700, 530), mpp=None, content_box=box)


def test_roi_tiff_keeps_the_slide_geometry(tmp_path):
    """The ROI's heatmap sits at its place of the vis_level level: the same pixels as render_heatmap's
    ROI image (lossless), transparent (alpha 0) where whole tiles lie outside the ROI, the ROI in
    the description; the raw score map likewise."""
    slide, coords, scores, contours = _roi_case()
    roi = (300, 420, 1000, 800)
    for level, scale in ((0, 1), (1, 2)):
        kw = dict(patch_size_level0=(256, 256), vis_level=level, contours=contours,
                  style=HeatmapStyle(alpha=0.5, overlap=0.5), convert_to_percentiles=True, roi=roi)
        ref = render_heatmap(slide, scores, coords, **kw)
        res = render_heatmap_tiff(slide, scores, coords, **kw, out_path=tmp_path / f"r{level}.tif",
                                  raw_scores=tmp_path / f"r{level}_scores.tif", compression="deflate", min_size=200)
        rgba = _rgba(res.heatmap)
        x0, y0 = roi[0] // scale, roi[1] // scale
        h, w = ref.shape[:2]
        assert rgba.shape[:2] == slide.level_dimensions[level][::-1]
        assert np.array_equal(rgba[y0:y0 + h, x0:x0 + w, :3], ref) and (rgba[y0:y0 + h, x0:x0 + w, 3] == 255).all()
        assert rgba[0, 0, 3] == (0 if level == 0 else 255)        # level 1: tile (0, 0) touches the ROI
        assert (rgba[:256, 1024:, 3] == 0).all() if level == 0 else True
        with openslide.OpenSlide(str(res.heatmap)) as osr:
            assert "roi 300,420,1000,800 (level-0 px x1,y1,x2,y2" in osr.properties["openslide.comment"]
        raw = _rgba(res.scores)
        assert raw.shape[:2] == rgba.shape[:2] and raw[y0:y0 + h, x0:x0 + w, 3].min() == 255


# sha256 of non-ROI TIFFs as written before empty-tile support (commit 7454a58, opencv-python-headless
# 5.0.0, zlib 1.2.13): the non-ROI output must not change by a byte. Another OpenCV/zlib build may encode
# the same pixels differently; the test then only checks that two writes are identical.
NON_ROI_SHA256 = {
    ("jpeg", 0): "da0520a1f920d6fe1479c782f82dcb5e40b2d06e5cff1aa679228ec871923742",
    ("jpeg", 1): "a6a886e145db8eaec45e3c82529e3adb1e7ef32936d833b6bef589fccf264b7e",
    ("deflate", 0): "b0e180a91bf59b739a52bcbae79db648af9c30e0c1654641b5b6ccbbd6f2c7be",
    ("deflate", 1): "9816184802ccdb02f444b204e1331b1ed44828d56d06b55e1394b1b766010c86",
}


@pytest.mark.parametrize("compression,level", sorted(NON_ROI_SHA256))
def test_non_roi_tiff_is_byte_identical_to_before(tmp_path, compression, level):
    import hashlib
    import zlib

    def image(w, h):       # the inputs the recorded hashes were computed with
        y, x = np.mgrid[:h, :w]
        img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 200)],
                       axis=-1).astype(np.uint8)
        img[40:140, 60:200] = (255, 0, 0)
        return img

    slide = FakeSlide(image(1300, 1100), [(650, 550)], slide_id="fake")
    xs, ys = np.meshgrid(np.arange(0, 1300 - 64, 128), np.arange(0, 1100 - 64, 128))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    scores = np.random.default_rng(7).random(len(coords)).astype(np.float32)
    contours = TissueContours(tissue=[cv2.ellipse2Poly((650, 550), (600, 500), 0, 0, 360, 3)
                                      .reshape(-1, 1, 2).astype(np.int32)], holes=[[]])
    digests = []
    for i in range(2):
        out = render_heatmap_tiff(slide, scores, coords, patch_size_level0=(256, 256), vis_level=level,
                                  contours=contours, style=HeatmapStyle(alpha=0.5, overlap=0.5),
                                  convert_to_percentiles=True, out_path=tmp_path / f"h{i}.tif",
                                  compression=compression, min_size=300).heatmap
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    if cv2.__version__ == "5.0.0" and zlib.ZLIB_RUNTIME_VERSION == "1.2.13":
        assert digests[0] == NON_ROI_SHA256[(compression, level)]


def test_level_step_writes_every_second_halving(tmp_path):
    """level_step 2: downsamples 1, 4, 16 (the demo slide's pyramid), each the chain of 2x2 means."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(768, 1024, 3), dtype=np.uint8)
    path = write_pyramidal_tiff(tmp_path / "s.tiff", img, size=(1024, 768), mpp=(0.5, 0.5), compression="deflate",
                                min_size=64, level_step=2)
    with openslide.OpenSlide(str(path)) as s:
        assert s.level_dimensions == ((1024, 768), (256, 192), (64, 48))
        assert [round(d) for d in s.level_downsamples] == [1, 4, 16]
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        lvl0 = np.asarray(s.read_region((0, 0), 0, (1024, 768)).convert("RGB"))
    assert np.array_equal(lvl0, img)                                     # lossless level 0
    with pytest.raises(ConfigError, match="level_step 0"):
        write_pyramidal_tiff(tmp_path / "t.tiff", img, size=(1024, 768), mpp=None, level_step=0)
