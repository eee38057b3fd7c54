"""Config schema: CLAM keys and defaults, clear one-line errors, overrides."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from heatmaps.config import apply_overrides, load_config, parse_config
from wsi_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"model_arguments": {"ckpt_path": "model.pt"}}


def test_template_documents_and_validates_every_key():
    cfg = load_config(REPO / "heatmaps/configs/config_template.yaml")
    text = (REPO / "heatmaps/configs/config_template.yaml").read_text()
    data = cfg.model_dump()
    for section, keys in data.items():
        if section == "sample_arguments":
            continue
        for key in keys:
            line = next((ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:")), None)
            assert line is not None and "#" in line, f"{section}.{key} is not documented in the template"


def test_clam_defaults():
    cfg = parse_config(MINIMAL)
    assert cfg.patching_arguments.patch_size == 256 and cfg.patching_arguments.overlap == 0.5
    assert cfg.heatmap_arguments.vis_level == 1 and cfg.heatmap_arguments.alpha == 0.4
    assert cfg.model_arguments.n_classes == cfg.exp_arguments.n_classes == 2
    assert cfg.step_size == 128


def test_clam_reference_configs_load_unchanged(clam_reference_dir):
    for name in ("real_sb/configs/real_sb.yaml", "real_mb_roi/configs/real_mb_roi.yaml"):
        cfg = load_config(clam_reference_dir / name)
        assert cfg.encoder_arguments.model_name == "resnet50_trunc"
    cfg = load_config(clam_reference_dir.parent / "mil/clam_demo_parisa/config.yaml")
    assert cfg.model_arguments.drop_out == 0.25   # CLAM's `drop_out: true`


def test_unknown_key_names_section_key_and_closest():
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "heatmap_arguments": {"alfa": 0.3}}, source="my.yaml")
    msg = str(err.value)
    assert "my.yaml" in msg and "heatmap_arguments.alfa" in msg and "did you mean 'heatmap_arguments.alpha'" in msg


def test_unknown_section_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'heatmap_argument'.*heatmap_arguments"):
        parse_config({**MINIMAL, "heatmap_argument": {}})


def test_wrong_type_names_value_and_expected_type():
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "patching_arguments": {"patch_size": "big"}}, source="c.yaml")
    msg = str(err.value)
    assert "patching_arguments.patch_size = 'big'" in msg and "integer" in msg


def test_overlap_out_of_range_and_bad_cmap():
    with pytest.raises(ConfigError, match=r"patching_arguments.overlap = 1.0"):
        parse_config({**MINIMAL, "patching_arguments": {"overlap": 1.0}})
    with pytest.raises(ConfigError, match=r"did you mean 'jet'"):
        parse_config({**MINIMAL, "heatmap_arguments": {"cmap": "jte"}})


def test_missing_ckpt_path():
    with pytest.raises(ConfigError, match=r"missing required key 'model_arguments.ckpt_path'"):
        parse_config({"model_arguments": {}})


def test_overrides_are_typed_and_validated():
    cfg = apply_overrides(parse_config(MINIMAL), ["heatmap_arguments.alpha=0.7", "heatmap_arguments.blur=true",
                                                 "data_arguments.data_dir={a: x, b: y}"])
    assert cfg.heatmap_arguments.alpha == 0.7 and cfg.heatmap_arguments.blur is True
    assert cfg.data_arguments.data_dir == {"a": "x", "b": "y"}
    with pytest.raises(ConfigError, match=r"did you mean 'heatmap_arguments.alpha'"):
        apply_overrides(cfg, ["heatmap_arguments.alpah=0.2"])
    with pytest.raises(ConfigError, match=r"expected section.key=value"):
        apply_overrides(cfg, ["alpha=0.2"])


def test_missing_and_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("exp_arguments: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(ok).model_arguments.ckpt_path == "model.pt"


@pytest.mark.parametrize("section,key,want", [
    ("heatmap_arguments", "colormap", "heatmap_arguments.cmap"),
    ("heatmap_arguments", "colourmap", "heatmap_arguments.cmap"),
    ("heatmap_arguments", "color_map", "heatmap_arguments.cmap"),
    ("heatmap_arguments", "score_colormap", "heatmap_arguments.score_cmap"),
    ("model_arguments", "in_dim", "model_arguments.embed_dim"),
    ("model_arguments", "feature_dim", "model_arguments.embed_dim"),
    ("patching_arguments", "overlap_ratio", "patching_arguments.overlap"),
    ("model_arguments", "ckpt", "model_arguments.ckpt_path"),
])
def test_common_synonyms_are_suggested(section, key, want):
    with pytest.raises(ConfigError) as err:
        parse_config({"model_arguments": {"ckpt_path": "m.pt"}, section: {key: 1}} if section != "model_arguments"
                     else {"model_arguments": {"ckpt_path": "m.pt", key: 1}}, source="c.yaml")
    assert str(err.value) == f"c.yaml: unknown key '{section}.{key}'; did you mean '{want}'?"


def test_synonyms_in_overrides_other_sections_and_enum_values():
    cfg = parse_config(MINIMAL)
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, ["heatmap_arguments.colormap=viridis"])
    assert str(err.value) == "--set: unknown key 'heatmap_arguments.colormap'; did you mean 'heatmap_arguments.cmap'?"
    with pytest.raises(ConfigError, match=r"unknown key 'heatmap_arguments.in_dim'; did you mean "
                                          r"'model_arguments.embed_dim'\? \(embed_dim belongs to model_arguments\)"):
        apply_overrides(cfg, ["heatmap_arguments.in_dim=1536"])
    with pytest.raises(ConfigError, match=r"unknown key 'model_arguments.checkpoint'; did you mean 'model_arguments.ckpt_path'"):
        parse_config({"model_arguments": {"ckpt_path": "m.pt", "checkpoint": "m.pt"}})
    for mode in ("bottomk", "bottom_k"):
        with pytest.raises(ConfigError) as err:
            parse_config({**MINIMAL, "sample_arguments": {"samples": [{"name": "low", "mode": mode}]}}, source="c.yaml")
        assert str(err.value) == (f"c.yaml: sample_arguments.samples.0.mode = '{mode}' is invalid: Input should be "
                                  "'topk', 'reverse_topk' or 'range_sample'; did you mean 'reverse_topk'?")


def test_geojson_threshold_is_a_percentile():
    assert parse_config({**MINIMAL, "heatmap_arguments": {"geojson_threshold": 90}}).heatmap_arguments.geojson_threshold == 90
    with pytest.raises(ConfigError, match=r"c.yaml: heatmap_arguments.geojson_threshold = 150 is invalid"):
        parse_config({**MINIMAL, "heatmap_arguments": {"geojson_threshold": 150}}, source="c.yaml")
