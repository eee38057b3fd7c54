"""heatmaps.writers: the registry and its writers, on a real slide."""
from __future__ import annotations

import gzip
import json

import h5py
import numpy as np
import pytest

from heatmaps.layout import slide_outputs
from heatmaps.run import run_config
from heatmaps.writers import STAGES, WRITERS, Writer, register_writer, writers_for


def test_registry_stages_and_enabling(make_fast_config, tmp_path):
    assert {w.stage for w in WRITERS.values()} <= set(STAGES)
    assert [w.name for w in WRITERS.values()][:2] == ["mask", "blockmap_preview"]
    with pytest.raises(ValueError, match="stage must be one of"):
        register_writer(Writer("x", "later", lambda cfg: True, lambda a: []))
    with pytest.raises(ValueError, match="registered twice"):
        register_writer(Writer("mask", "tissue", lambda cfg: True, lambda a: []))
    cfg = make_fast_config(tmp_path, [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}])
    assert "qupath_geojson" not in [w.name for w in writers_for("heatmap", cfg)]


@pytest.mark.slow
@pytest.mark.parametrize(("gz", "threshold"), [(False, None), (True, 90.0)])
def test_qupath_geojson_of_a_real_run(make_fast_config, tmp_path, gz, threshold):
    cfg = make_fast_config(tmp_path, [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}],
                           patching_arguments={"overlap": 0.5},
                           heatmap_arguments={"vis_level": -1, "save_orig": False, "save_geojson": True, "geojson_gzip": gz,
                                              "geojson_threshold": threshold})
    assert not run_config(cfg, progress=False).failed
    out = slide_outputs(cfg, "CMU-1-Small-Region", "class_a")
    raw = out.qupath_tiles(gzipped=gz).read_bytes()
    doc = json.loads(gzip.decompress(raw) if gz else raw)
    with h5py.File(out.overlap_h5()) as f:
        coords, pct = f["coords"][:], f["attention_scores"][:, 0]
    assert len(doc["features"]) == len(coords) == 121                      # one tile per fine-pass patch
    first = doc["features"][0]
    assert first["geometry"]["coordinates"][0][0] == coords[0].tolist()
    m = first["properties"]["measurements"]
    assert set(m) == {"attention_percentile", "attention_raw", "p_class_a", "p_class_b"}
    assert m["attention_percentile"] == pytest.approx(float(pct[0]))
    assert m["p_class_a"] + m["p_class_b"] == pytest.approx(1.0, abs=1e-5)
    classes = [f["properties"].get("classification", {}).get("name") for f in doc["features"]]
    if threshold is None:
        assert set(classes) == {None}
    else:                                                        # the tiles at or above the 90th percentile
        assert classes == ["High attention" if p >= threshold else "Low attention" for p in pct]
        assert 0 < classes.count("High attention") < len(classes)
    tissue = out.qupath_tissue(gzipped=gz).read_bytes()
    ann = json.loads(gzip.decompress(tissue) if gz else tissue)
    assert ann["features"] and all(f["properties"]["objectType"] == "annotation" for f in ann["features"])


@pytest.mark.slow
def test_dsa_annotation_of_a_real_run(make_fast_config, tmp_path):
    from tests.wsi_core.test_dsa import heat_points

    cfg = make_fast_config(tmp_path, [{"slide_id": "CMU-1-Small-Region", "label": "class_a"}],
                           patching_arguments={"overlap": 0.5},
                           heatmap_arguments={"vis_level": -1, "save_orig": False, "save_dsa": True, "alpha": 0.5})
    assert not run_config(cfg, progress=False).failed
    out = slide_outputs(cfg, "CMU-1-Small-Region", "class_a")
    doc = json.loads(out.dsa_annotation().read_text())
    with h5py.File(out.overlap_h5()) as f:
        coords, pct = f["coords"][:], f["attention_scores"][:, 0]
    (el,) = doc["elements"]
    assert el["radius"] == 128 and el["colorRange"][0] == "rgba(0, 0, 127, 0.500)"        # jet's first colour
    got = heat_points(el)                                     # every fine-pass patch at its centre, nothing else
    want = {(x + 128, y + 128): v for (x, y), v in zip(coords.tolist(), pct.tolist()) if v}
    assert got.keys() == want.keys() and np.allclose([got[k] for k in want], list(want.values()), atol=1e-4)
    assert "0.499 x 0.499 µm/px" in doc["description"]
    ann = pytest.importorskip("girder_large_image_annotation.models.annotation",
                              reason="large_image's annotation schema comes with girder-large-image-annotation")
    ann.Annotation.validatorAnnotation.validate(doc)
