"""wsi_core.tissue: CLAM segmentTissue parity, contour files, restricted unpickling, preview."""
from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from wsi_core import (
    ConfigError,
    FeatureFileError,
    NoTissueError,
    SegmentationParams,
    TissueContours,
    draw_segmentation,
    load_clam_mask_pkl,
    load_contours_geojson,
    open_slide,
    save_contours_geojson,
    segment_tissue,
)

# CLAM preset bwh_biopsy, as used by the reference runs in ../shared/clam_reference
BWH_BIOPSY = SegmentationParams(
    seg_level=-1, sthresh=15, mthresh=11, close=2, use_otsu=False, a_t=1, a_h=1, max_n_holes=2
)
REF_CASES = [
    ("CMU-1-Small-Region", "class_a", 14837),
    ("tcga-cr-7395-01a-01-ts1", "class_b", 7158),
]


def _ref_mask(clam_reference_dir: Path, slide_id: str, label: str) -> Path:
    return (clam_reference_dir / "real_sb/heatmap_raw_results/REAL_SB" / label / slide_id
            / f"{slide_id}_mask.pkl")


class FakeSlide:
    """Duck-typed Slide over in-memory RGB levels (for synthetic segmentation tests)."""

    def __init__(self, levels: list[np.ndarray], slide_id: str = "fake") -> None:
        self.slide_id = slide_id
        self.levels = levels
        self.level_count = len(levels)
        self.level_dimensions = [(im.shape[1], im.shape[0]) for im in levels]
        w0, h0 = self.level_dimensions[0]
        self.level_downsamples = [(w0 / w, h0 / h) for w, h in self.level_dimensions]

    def best_level_for_downsample(self, downsample: float) -> int:
        ok = [i for i, (d, _) in enumerate(self.level_downsamples) if d <= downsample]
        return max(ok) if ok else 0

    def read_region(self, location, level, size):  # noqa: ANN001
        assert tuple(location) == (0, 0)
        w, h = size
        return self.levels[level][:h, :w].copy()


PINK = (200, 120, 180)


def _synthetic(holes: list[tuple[int, int, int]], blobs: int = 1) -> FakeSlide:
    """Level 1 (ds 4): white 300x300 with pink squares; holes (x, y, side) punched in blob 0."""
    lvl1 = np.full((300, 300, 3), 255, np.uint8)
    lvl1[20:170, 20:170] = PINK
    for x, y, side in holes:
        lvl1[y : y + side, x : x + side] = 255
    if blobs > 1:
        lvl1[200:280, 30:110] = PINK
    if blobs > 2:
        lvl1[200:280, 190:270] = PINK
    lvl0 = cv2.resize(lvl1, (1200, 1200), interpolation=cv2.INTER_NEAREST)
    return FakeSlide([lvl0, lvl1])


@pytest.mark.parametrize(("slide_id", "label", "n_points"), REF_CASES)
def test_segment_tissue_reproduces_clam_mask(
    slides_dir: Path, clam_reference_dir: Path, slide_id: str, label: str, n_points: int
) -> None:
    ref = load_clam_mask_pkl(_ref_mask(clam_reference_dir, slide_id, label))
    with open_slide(slides_dir / f"{slide_id}.svs") as s:
        got = segment_tissue(s, BWH_BIOPSY)
    assert len(got) == len(ref) == 1
    assert got.tissue[0].shape == (n_points, 1, 2)
    for a, b in zip(got.tissue, ref.tissue):
        assert a.dtype == b.dtype == np.int32
        np.testing.assert_array_equal(a, b)
    assert got.holes == ref.holes == [[]]


def test_synthetic_holes_filters_and_scaling() -> None:
    slide = _synthetic([(40, 40, 40), (100, 40, 30), (40, 110, 20)])
    # ref area: int(512**2 / 16) = 16384 seg px^2; a_h 0.03 -> 491 px^2 drops the 20x20 hole
    p = SegmentationParams(a_t=1, a_h=0.03, max_n_holes=10, mthresh=5)
    got = segment_tissue(slide, p)
    assert len(got) == 1
    t = got.tissue[0]
    assert t.dtype == np.int32 and t.shape[1:] == (1, 2)
    # (21..170) * 4: closing with CLAM's even 2x2 kernel shifts the mask by 1 px (OpenCV anchor)
    assert cv2.boundingRect(t) == (84, 84, 597, 597)
    no_close = segment_tissue(slide, SegmentationParams(a_t=1, a_h=0.03, mthresh=5, close=0))
    assert cv2.boundingRect(no_close.tissue[0]) == (80, 80, 597, 597)  # (20..169) * 4
    assert np.all(t % 4 == 0)
    areas = [cv2.contourArea(h) for h in got.holes[0]]
    assert len(areas) == 2 and areas == sorted(areas, reverse=True)
    assert all(h.dtype == np.int32 and np.all(h % 4 == 0) for h in got.holes[0])
    one = segment_tissue(slide, SegmentationParams(a_t=1, a_h=0.0, max_n_holes=1, mthresh=5))
    np.testing.assert_array_equal(one.holes[0][0], got.holes[0][0])
    assert len(one.holes[0]) == 1
    # tissue area must exceed a_t: 150^2 - holes < 2 * 16384
    with pytest.raises(NoTissueError):
        segment_tissue(slide, SegmentationParams(a_t=2, mthresh=5))


def test_keep_and_exclude_ids() -> None:
    slide = _synthetic([], blobs=3)
    p = SegmentationParams(a_t=0.1, mthresh=5)
    full = segment_tissue(slide, p)
    assert len(full) == 3

    def ids(**kw):  # noqa: ANN003
        got = segment_tissue(slide, SegmentationParams(a_t=0.1, mthresh=5, **kw))
        return [next(i for i, f in enumerate(full.tissue) if np.array_equal(f, g))
                for g in got.tissue]

    assert ids(keep_ids=(2, 0)) == [0, 2]
    assert ids(exclude_ids=(1,)) == [0, 2]
    assert ids(keep_ids=(0, 1), exclude_ids=(1,)) == [0]
    with pytest.raises(ConfigError, match=r"fake: keep_ids \[7\] do not exist \(3 tissue"):
        segment_tissue(slide, SegmentationParams(a_t=0.1, mthresh=5, keep_ids=(7,)))
    with pytest.raises(NoTissueError, match="exclude_ids"):
        segment_tissue(slide, SegmentationParams(a_t=0.1, mthresh=5, exclude_ids=(0, 1, 2)))


def test_otsu_and_seg_level_zero() -> None:
    slide = _synthetic([(40, 40, 40)])
    got = segment_tissue(slide, SegmentationParams(use_otsu=True, seg_level=1, a_t=1, a_h=0))
    assert len(got) == 1 and len(got.holes[0]) == 1
    lvl0 = segment_tissue(slide, SegmentationParams(seg_level=0, a_t=1, a_h=0))
    assert cv2.boundingRect(lvl0.tissue[0]) == pytest.approx(cv2.boundingRect(got.tissue[0]), abs=8)


def test_no_tissue_message(slides_dir: Path) -> None:
    with open_slide(slides_dir / "CMU-1-Small-Region.svs") as s:
        with pytest.raises(NoTissueError) as ei:
            segment_tissue(s, SegmentationParams(sthresh=255))
    msg = str(ei.value)
    assert msg.startswith("CMU-1-Small-Region: no tissue found at seg_level 0")
    assert "lower sthresh or a_t" in msg


def test_no_tissue_names_the_largest_rejected_piece_and_the_a_t_that_keeps_it() -> None:
    """a_t rejected every piece: the message gives the largest one's area in a_t units (512^2
    level-0 px) and names the caller's offered a_t values that would keep it, and only those."""
    slide = _synthetic([], blobs=2)          # 150^2 + 80^2 px at ds 4: areas 1.35 and 0.38 a_t units
    hints = (("preset small", 1.0), ("preset big", 50.0))
    with pytest.raises(NoTissueError) as ei:
        segment_tissue(slide, SegmentationParams(a_t=2, mthresh=5, a_t_hints=hints))
    msg = str(ei.value)
    assert ("the largest piece had area 1.35 (a_t units: 512² level-0 px) and a_t=2 rejected it: "
            "an a_t below 1.35 keeps it, e.g. preset small (a_t 1);") in msg
    assert "preset big" not in msg and "\n" not in msg
    assert SegmentationParams(a_t=2, a_t_hints=hints) == SegmentationParams(a_t=2)   # not a parameter
    with pytest.raises(NoTissueError, match=r"; no piece passed sthresh at all; lower sthresh"):
        segment_tissue(slide, SegmentationParams(sthresh=255, mthresh=5))


def test_bad_params() -> None:
    with pytest.raises(ConfigError, match="mthresh=10"):
        SegmentationParams(mthresh=10)
    with pytest.raises(ConfigError, match="seg_level 5 does not exist"):
        segment_tissue(_synthetic([]), SegmentationParams(seg_level=5))


def test_geojson_round_trip(tmp_path: Path) -> None:
    slide = _synthetic([(40, 40, 40), (100, 40, 30)], blobs=2)
    c = segment_tissue(slide, SegmentationParams(a_t=0.1, a_h=0, mthresh=5))
    assert sum(len(h) for h in c.holes) == 2
    props = {"seg_level": 1, "sthresh": 15, "keep_ids": []}
    path = save_contours_geojson(c, tmp_path / "s_contours.geojson", properties=props)
    assert [p.name for p in tmp_path.iterdir()] == ["s_contours.geojson"]
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and doc["properties"] == props
    assert len(doc["features"]) == len(c)
    for feat, t, hs in zip(doc["features"], c.tissue, c.holes):
        rings = feat["geometry"]["coordinates"]
        assert feat["geometry"]["type"] == "Polygon" and len(rings) == 1 + len(hs)
        assert rings[0][0] == rings[0][-1] and len(rings[0]) == len(t) + 1
        assert all(isinstance(v, int) for v in rings[0][0])
    back, bprops = load_contours_geojson(path)
    assert bprops == props and len(back) == len(c)
    for a, b in zip(back.tissue, c.tissue):
        assert a.dtype == np.int32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    for ha, hb in zip(back.holes, c.holes):
        assert len(ha) == len(hb)
        for a, b in zip(ha, hb):
            np.testing.assert_array_equal(a, b)


def test_geojson_real_contours(tmp_path: Path, clam_reference_dir: Path) -> None:
    ref = load_clam_mask_pkl(_ref_mask(clam_reference_dir, "CMU-1-Small-Region", "class_a"))
    back, _ = load_contours_geojson(save_contours_geojson(ref, tmp_path / "c.geojson",
                                                          properties={}))
    np.testing.assert_array_equal(back.tissue[0], ref.tissue[0])


def test_geojson_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FeatureFileError, match="contour file not found: .*nope.geojson"):
        load_contours_geojson(tmp_path / "nope.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}]}))
    with pytest.raises(FeatureFileError, match=r"bad.geojson is not a tissue-contour GeoJSON"):
        load_contours_geojson(bad)
    bad.write_text("{not json")
    with pytest.raises(FeatureFileError, match="bad.geojson"):
        load_contours_geojson(bad)


def test_load_clam_mask_pkl_protocol3_numpy_core(mil_dir: Path) -> None:
    """clam_demo_parisa masks are protocol 3 pickles with numpy.core.multiarray globals."""
    c = load_clam_mask_pkl(mil_dir / "clam_demo_parisa" / "C3L-03262-22_mask.pkl")
    assert len(c) == 2 and c.holes == [[], []]
    assert all(t.dtype == np.int32 and t.ndim == 3 and t.shape[1:] == (1, 2) for t in c.tissue)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_load_clam_mask_pkl_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_mask.pkl"
    evil.write_bytes(pickle.dumps({"tissue": [_Evil(marker)], "holes": [[]]}))
    with pytest.raises(FeatureFileError) as ei:
        load_clam_mask_pkl(evil)
    msg = str(ei.value)
    assert str(evil) in msg and "refusing to unpickle" in msg
    assert ("posix.system" in msg) or ("os.system" in msg)
    assert not marker.exists()


def test_load_clam_mask_pkl_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FeatureFileError, match="CLAM mask file not found"):
        load_clam_mask_pkl(tmp_path / "x_mask.pkl")
    p = tmp_path / "list_mask.pkl"
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(FeatureFileError, match="list_mask.pkl is not a CLAM mask pickle"):
        load_clam_mask_pkl(p)


def test_tissue_contours_len_and_validation() -> None:
    assert len(TissueContours()) == 0
    with pytest.raises(ValueError):
        TissueContours([np.zeros((3, 1, 2), np.int32)], [])


@pytest.mark.parametrize(("slide_id", "label", "_n"), REF_CASES)
def test_draw_segmentation_matches_clam_mask_jpg(
    slides_dir: Path, clam_reference_dir: Path, slide_id: str, label: str, _n: int
) -> None:
    """CLAM saved `<id>_mask.jpg` with PIL's default JPEG settings; encoding our preview the same
    way reproduces it (byte-identical pixels with pillow 13; tolerance 0.5 mean abs for other
    libjpeg builds)."""
    ref_pkl = _ref_mask(clam_reference_dir, slide_id, label)
    c = load_clam_mask_pkl(ref_pkl)
    with open_slide(slides_dir / f"{slide_id}.svs") as s:
        img = draw_segmentation(s, c, vis_level=-1, line_thickness=50)
        assert img.shape == (*s.level_dimensions[s.best_level_for_downsample(32)][::-1], 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG")
    ours = np.asarray(Image.open(buf).convert("RGB")).astype(np.int16)
    ref = np.asarray(Image.open(ref_pkl.with_name(f"{slide_id}_mask.jpg")).convert("RGB"))
    assert np.abs(ours - ref).mean() < 0.5


def test_draw_segmentation_holes_and_numbers() -> None:
    slide = _synthetic([(40, 40, 40)], blobs=2)
    c = segment_tissue(slide, SegmentationParams(a_t=0.1, a_h=0, mthresh=5))
    img = draw_segmentation(slide, c, vis_level=1, line_thickness=8)
    assert img.shape == (300, 300, 3) and img.dtype == np.uint8
    assert (img == (0, 255, 0)).all(-1).any()
    assert (img == (0, 0, 255)).all(-1).any()
    assert (img == (255, 0, 0)).all(-1).any()
    plain = draw_segmentation(slide, c, vis_level=1, line_thickness=8, number_contours=False)
    assert not (plain == (255, 0, 0)).all(-1).any()
