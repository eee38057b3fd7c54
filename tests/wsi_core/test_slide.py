"""wsi_core.slide on the real slides in ../shared/slides."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from wsi_core import Slide, SlideOpenError, open_slide
from wsi_core.slide import mpp_from_properties


def test_cmu_small_region(slides_dir: Path) -> None:
    with open_slide(slides_dir / "CMU-1-Small-Region.svs") as s:
        assert isinstance(s, Slide)
        assert s.slide_id == "CMU-1-Small-Region"
        assert s.level_count == 1
        assert s.level_dimensions == [(2220, 2967)]
        assert s.level_downsamples == [(1.0, 1.0)]
        assert s.mpp == (0.499, 0.499)
        assert s.best_level_for_downsample(32) == 0


def test_tcga_per_axis_downsamples_and_no_mpp(slides_dir: Path) -> None:
    with open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs") as s:
        assert s.level_dimensions == [(4443, 3567), (2221, 1783)]
        dsx, dsy = s.level_downsamples[1]
        assert dsx == 4443 / 2221 and dsy == 3567 / 1783 and dsx != dsy
        assert s.level_downsamples[0] == (1.0, 1.0)
        assert s.mpp is None
        assert s.best_level_for_downsample(32) == 1
        assert s.best_level_for_downsample(1.5) == 0


def test_uses_openslide_downsample_when_equal(slides_dir: Path) -> None:
    p = next(slides_dir.glob("slideio_test3-DAPI*.ndpi"))
    with open_slide(p) as s, openslide.OpenSlide(str(p)) as o:
        assert s.level_count == 7
        for (dsx, dsy), d in zip(s.level_downsamples, o.level_downsamples):
            assert dsx == dsy == d
        assert s.mpp is not None and s.mpp[0] == pytest.approx(0.2281750559, rel=1e-9)


def test_dicom_folder(slides_dir: Path) -> None:
    with open_slide(slides_dir / "dicom_cmu-1-small-region") as s:
        assert s.slide_id == "dicom_cmu-1-small-region"
        assert s.level_count == 12
        assert s.level_dimensions[0] == (2220, 2967)
        assert s.read_region((100, 100), 2, (16, 8)).shape == (8, 16, 3)


def test_read_region_is_rgb_of_openslide(slides_dir: Path) -> None:
    p = slides_dir / "tcga-cr-7395-01a-01-ts1.svs"
    with open_slide(p) as s, openslide.OpenSlide(str(p)) as o:
        # partly outside the slide: transparent pixels come out as PIL convert('RGB') gives them
        for loc, level, size in [((1000, 900), 1, (64, 48)), ((4400, 3500), 0, (80, 100))]:
            got = s.read_region(loc, level, size)
            want = np.asarray(o.read_region(loc, level, size).convert("RGB"))
            assert got.dtype == np.uint8 and got.shape == (size[1], size[0], 3)
            assert got.flags.c_contiguous
            np.testing.assert_array_equal(got, want)


def test_close_is_idempotent(slides_dir: Path) -> None:
    s = open_slide(slides_dir / "CMU-1-Small-Region.svs")
    s.close()
    s.close()
    assert "CMU-1-Small-Region" in repr(s)


def test_missing_file_message(tmp_path: Path) -> None:
    p = tmp_path / "slide_x.svs"
    with pytest.raises(SlideOpenError) as ei:
        open_slide(p)
    assert str(ei.value) == (
        f"slide file not found: {p}; check data_dir / slide_ext in data_arguments"
    )


def test_unsupported_format_message(slides_dir: Path) -> None:
    p = slides_dir / "unsupported" / "kidney-48-5.tif"
    with pytest.raises(SlideOpenError) as ei:
        open_slide(p)
    msg = str(ei.value)
    assert msg.startswith(f"unsupported slide format: {p}")
    assert "convert it" in msg and "\n" not in msg


def test_unreadable_message(slides_dir: Path) -> None:
    p = slides_dir / "unsupported" / "pathml_small_dicom.dcm"
    with pytest.raises(SlideOpenError) as ei:
        open_slide(p)
    msg = str(ei.value)
    assert msg.startswith(f"cannot read slide {p}")
    assert "re-export" in msg


def test_empty_folder_message(tmp_path: Path) -> None:
    with pytest.raises(SlideOpenError, match=r"contains no \.dcm file"):
        open_slide(tmp_path)


@pytest.mark.parametrize(
    ("props", "want"),
    [
        ({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.26"}, (0.25, 0.26)),
        ({"openslide.mpp-x": "0.25"}, (0.25, 0.25)),
        ({"tiff.XResolution": "40000", "tiff.YResolution": "20000",
          "tiff.ResolutionUnit": "centimeter"}, (0.25, 0.5)),
        ({"tiff.XResolution": "101600", "tiff.ResolutionUnit": "inch"}, (0.25, 0.25)),
        ({"tiff.ResolutionUnit": "inch"}, None),
        ({"tiff.XResolution": "72", "tiff.ResolutionUnit": "none"}, None),
        ({"openslide.mpp-x": "0", "tiff.XResolution": "x"}, None),
        ({}, None),
    ],
)
def test_mpp_from_properties(props: dict, want) -> None:  # noqa: ANN001
    got = mpp_from_properties(props)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want)
