"""wsi_core.yaml_config: the mechanics both YAML configs share."""
from __future__ import annotations

import pytest
from pydantic import BaseModel

from wsi_core.errors import ConfigError
from wsi_core.yaml_config import apply_dotted, closest, coerce_value, read_yaml_mapping, valid_keys


class Inner(BaseModel):
    alpha: float = 0.4
    vis_level: int = -1


class Outer(BaseModel):
    heatmap: Inner = Inner()
    maybe: Inner | None = None


def test_read_yaml_mapping(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("heatmap:\n  alpha: 0.5\n")
    assert read_yaml_mapping(p) == {"heatmap": {"alpha": 0.5}}
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml_mapping(tmp_path / "empty.yaml") == {}
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml; look in configs/"):
        read_yaml_mapping(tmp_path / "nope.yaml", missing_hint="look in configs/")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        read_yaml_mapping(tmp_path / "bad.yaml")


def test_valid_keys_follow_optional_models_and_stop_outside():
    assert valid_keys(Outer, ("heatmap", "alpah")) == ["alpha", "vis_level"]
    assert valid_keys(Outer, ("maybe", "x")) == ["alpha", "vis_level"]
    assert valid_keys(Outer, ("nowhere", "x")) == []
    assert valid_keys(Outer, ("x",)) == ["heatmap", "maybe"]


def test_closest_and_coerce():
    assert closest("alpah", ["alpha", "vis_level"]) == "alpha"
    assert closest("zzz", ["alpha"]) is None
    assert coerce_value("0.5") == 0.5 and coerce_value("true") is True and coerce_value("[1, 2]") == [1, 2]
    assert coerce_value("a: [") == "a: ["


def test_apply_dotted_sets_and_refuses_with_one_line():
    data = {"heatmap": {"alpha": 0.4}}
    assert apply_dotted(data, ["heatmap.alpha=0.7"], source="--set", example="heatmap.alpha=0.5") == {"heatmap": {"alpha": 0.7}}
    assert apply_dotted(data, {"heatmap.vis_level": 2}, source="cli", example="x")["heatmap"]["vis_level"] == 2
    with pytest.raises(ConfigError, match=r"--set 'alpha': expected section.key=value, e.g. heatmap.alpha=0.5"):
        apply_dotted(data, ["alpha"], source="--set", example="heatmap.alpha=0.5")
    with pytest.raises(ConfigError, match=r"unknown section 'heatmp'; did you mean 'heatmap'\?"):
        apply_dotted(data, ["heatmp.alpha=1"], source="--set", example="x")
    with pytest.raises(ConfigError, match=r"expected section.key=value"):
        apply_dotted(data, ["a.b.c=1"], source="--set", example="x")
