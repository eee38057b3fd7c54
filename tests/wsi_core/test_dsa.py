"""wsi_core.dsa: patch scores as a large_image heatmap annotation, read back as HistomicsUI draws it,
and validated against large_image's own schema (girder-large-image-annotation) where installed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wsi_core.dsa import dsa_annotation, lattice_of, rgba_strings, write_dsa_annotation
from wsi_core.errors import FeatureFileError

COLORS = rgba_strings(np.array([[0, 0, 128], [128, 0, 0]], np.uint8), 0.4)
STYLE = dict(colors=COLORS, range_values=[0.0, 100.0])


def heat_points(element: dict) -> dict[tuple[float, float], float]:
    """(x, y) -> value of every point HistomicsUI heats, by large_image's convertFeatures.js rules
    (griddata: ``origin + (i % gridWidth * dx, i // gridWidth * dy)``; heatmap: ``points``); 0 draws nothing."""
    if element["type"] == "heatmap":
        return {(x, y): v for x, y, _, v in element["points"] if v}
    x0, y0, _ = element["origin"]
    w = element["gridWidth"]
    return {(x0 + element["dx"] * (i % w), y0 + element["dy"] * (i // w)): v
            for i, v in enumerate(element["values"]) if v}


def validator():
    """The validator girder's ``Annotation`` model runs on every upload (Draft 6, ``annotationSchema``)."""
    mod = pytest.importorskip("girder_large_image_annotation.models.annotation",
                              reason="large_image's annotation schema comes with girder-large-image-annotation "
                                     "(the test extra); not installed here")
    return mod.Annotation.validatorAnnotation


def test_lattice_patches_become_griddata_at_their_centres(tmp_path):
    coords = np.array([[1000, 2000], [1128, 2000], [1000, 2128], [1384, 2256]], np.int64)   # step 128, gaps
    vals = np.array([10.0, 50.0, 90.0, 100.0])
    doc = json.loads(write_dsa_annotation(tmp_path / "a.json", coords, (256, 256), vals, name="s",
                                          mpp=(0.5, 0.5), **STYLE).read_text())
    (el,) = doc["elements"]
    assert el["type"] == "griddata" and el["interpretation"] == "heatmap"
    assert (el["dx"], el["dy"], el["gridWidth"]) == (128, 128, 4) and len(el["values"]) == 4 * 3
    assert heat_points(el) == {(x + 128, y + 128): v for (x, y), v in zip(coords.tolist(), vals)}
    assert el["colorRange"] == ["rgba(0, 0, 128, 0.400)", "rgba(128, 0, 0, 0.400)"] and el["normalizeRange"] is False
    assert doc["attributes"]["wsi_heatmaps"]["units"] == "level-0 px" and "0.5 x 0.5 µm/px" in doc["description"]


@pytest.mark.parametrize("coords", [[[0, 0], [100, 0], [37, 300]],          # per-contour grid origins: gcd 1
                                    [[0, 0], [0, 0], [256, 0]],             # a duplicate position
                                    [[0, 0], [256, 0], [25600, 25600]]])   # a lattice of 202 cells for 3 patches
def test_patches_off_one_lattice_become_points_never_misplaced(coords):
    c = np.array(coords, np.int64)
    vals = np.arange(1.0, len(c) + 1)
    (el,) = dsa_annotation(c, (256, 256), vals, name="s", mpp=None, **STYLE)["elements"]
    assert el["type"] == "heatmap"
    assert [p[:2] for p in el["points"]] == (c + 128).tolist() and [p[3] for p in el["points"]] == vals.tolist()


def test_lattice_step_is_the_gcd_of_the_gaps():
    assert lattice_of(np.array([[0, 0], [512, 0], [768, 256]])) == (256, 256)
    assert lattice_of(np.array([[5, 7]])) == (0, 0)
    assert lattice_of(np.array([[5, 7], [5, 7]])) is None


def test_missing_mpp_is_stated_as_level0_px_and_no_patches_is_one_clear_error():
    doc = dsa_annotation(np.array([[0, 0]]), (256, 256), np.array([50.0]), name="s", mpp=None, **STYLE)
    assert "no mpp" in doc["description"] and "level-0 px" in doc["description"]
    assert doc["attributes"]["wsi_heatmaps"]["mpp"] is None
    with pytest.raises(FeatureFileError, match=r"DSA annotation 'slide_7': no patches to export"):
        dsa_annotation(np.zeros((0, 2)), (256, 256), np.zeros(0), name="slide_7", mpp=None, **STYLE)
    with pytest.raises(FeatureFileError, match="needs 2 finite values"):
        dsa_annotation(np.zeros((2, 2)), (256, 256), np.array([1.0, np.nan]), name="s", mpp=None, **STYLE)


@pytest.mark.parametrize("coords", [[[0, 0], [256, 0], [0, 256]], [[0, 0], [100, 0], [37, 300]]])
def test_validates_against_large_images_annotation_schema(coords):
    import jsonschema

    doc = dsa_annotation(np.array(coords), (256, 256), np.array([1.0, 2.0, 3.0]), name="s", mpp=(0.25, 0.25),
                         colors=rgba_strings(np.zeros((11, 3), np.uint8), 1.0), range_values=np.linspace(0, 100, 11))
    validator().validate(doc)
    doc["elements"][0]["colorRange"][0] = "jet"                 # the same schema refuses a bad colour
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(doc)
