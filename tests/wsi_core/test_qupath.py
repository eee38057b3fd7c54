"""wsi_core.qupath: patches as QuPath tiles, tissue as annotations, read back as QuPath reads them."""
from __future__ import annotations

import gzip
import json
import uuid

import numpy as np
import pytest

from wsi_core.errors import FeatureFileError
from wsi_core.qupath import uuid4_strings, write_qupath_annotations, write_qupath_tiles
from wsi_core.tissue import TissueContours


def _read(path):
    data = gzip.open(path).read() if path.name.endswith(".gz") else path.read_bytes()
    return json.loads(data)


@pytest.mark.parametrize("name", ["s_tiles.geojson", "s_tiles.geojson.gz"])
def test_tiles_follow_qupaths_rules(tmp_path, name):
    coords = np.array([[0, 0], [256, 0], [512, 768]], np.int64)
    m = {"attention_percentile": np.array([10.0, 50.0, 90.0]), "p_LUAD": np.array([0.1, 0.2, 0.9])}
    doc = _read(write_qupath_tiles(tmp_path / name, coords, (256, 256), m, classification=[None, None, "hot"]))
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 3
    ids = set()
    for f, (x, y), pct in zip(doc["features"], coords.tolist(), [10.0, 50.0, 90.0]):
        assert f["type"] == "Feature" and uuid.UUID(f["id"]).version == 4
        ids.add(f["id"])
        ring = f["geometry"]["coordinates"][0]
        assert f["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 5
        assert ring[:4] == [[x, y], [x + 256, y], [x + 256, y + 256], [x, y + 256]]
        p = f["properties"]
        assert p["objectType"] == "tile" and p["isLocked"] is True
        assert isinstance(p["measurements"], dict) and p["measurements"]["attention_percentile"] == pct
    assert len(ids) == 3
    assert doc["features"][2]["properties"]["classification"] == {"name": "hot"}
    assert "classification" not in doc["features"][0]["properties"]


def test_annotations_keep_holes_and_no_patches_is_one_clear_error(tmp_path):
    sq = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], np.int32).reshape(-1, 1, 2)
    hole = np.array([[40, 40], [60, 40], [60, 60], [40, 60]], np.int32).reshape(-1, 1, 2)
    doc = _read(write_qupath_annotations(tmp_path / "t.geojson", TissueContours([sq], [[hole]])))
    (f,) = doc["features"]
    assert f["properties"]["objectType"] == "annotation" and f["properties"]["classification"] == {"name": "Tissue"}
    outer, inner = f["geometry"]["coordinates"]
    assert outer[0] == outer[-1] == [0, 0] and inner[0] == [40, 40] and len(inner) == 5
    with pytest.raises(FeatureFileError, match="QuPath GeoJSON: no patches to export"):
        write_qupath_tiles(tmp_path / "e.geojson", np.zeros((0, 2)), (256, 256), {})


def test_uuids_are_rfc4122_version_4_and_seedable():
    a, b = uuid4_strings(1000, seed=1), uuid4_strings(1000, seed=1)
    assert a == b and len(set(a)) == 1000
    assert all(uuid.UUID(u).version == 4 and uuid.UUID(u).variant == uuid.RFC_4122 for u in a[:50])


def test_non_finite_measurements_are_refused(tmp_path):
    with pytest.raises(FeatureFileError, match="measurement 'attention_raw' needs 2 finite values"):
        write_qupath_tiles(tmp_path / "n.geojson", np.zeros((2, 2)), (256, 256), {"attention_raw": np.array([1.0, np.nan])})
