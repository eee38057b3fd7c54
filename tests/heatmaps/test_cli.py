"""The command line: config lookup, overrides, --dry-run, reruns, usage errors. Never prompts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from heatmaps.cli import main as cli_main

pytestmark = [pytest.mark.shared, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
GOOD = {"slide_id": "CMU-1-Small-Region", "label": "class_a"}


def _write(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def test_dry_run_resolves_every_slide_and_runs_nothing(make_fast_config, tmp_path, capsys):
    cfg = make_fast_config(tmp_path, [GOOD, {"slide_id": "nope", "label": "class_a"}])
    path = _write(cfg, tmp_path / "c.yaml")
    code = cli_main(["--config", str(path), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 1                                     # a slide in error: the plan is not clean
    assert "run   CMU-1-Small-Region" in captured.out and "CMU-1-Small-Region.svs" in captured.out
    assert "ERROR nope: slide nope: file not found" in captured.out
    assert captured.err.splitlines() == [f"error: {path}: slide nope: file not found: {tmp_path / 'slides' / 'nope.svs'}; "
                                         "check data_arguments.data_dir and slide_ext"]
    assert not (tmp_path / "prod").exists() and not (tmp_path / "raw").exists()


def test_dry_run_exit_status_clean_plan_and_missing_checkpoint(make_fast_config, tmp_path, capsys):
    clean = _write(make_fast_config(tmp_path, [GOOD]), tmp_path / "clean.yaml")
    assert cli_main(["--config", str(clean), "--dry-run"]) == 0
    assert capsys.readouterr().err == ""
    nockpt = _write(make_fast_config(tmp_path, [GOOD], model_arguments={"ckpt_path": str(tmp_path / "gone.pt")}),
                    tmp_path / "nockpt.yaml")
    assert cli_main(["--config", str(clean), str(nockpt), "--dry-run"]) == 1      # each config listed
    captured = capsys.readouterr()
    assert f"checkpoint {tmp_path / 'gone.pt'} (MISSING)" in captured.out
    assert captured.err.splitlines() == [f"error: {nockpt}: checkpoint not found: {tmp_path / 'gone.pt'}; "
                                         "fix model_arguments.ckpt_path"]


def test_demo_config_before_its_assets_says_run_demo_first(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                          # no heatmaps/demo/ here
    for argv in (["--config", "demo.yaml"], ["--config", "demo.yaml", "--dry-run"]):
        assert cli_main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("error: ") and err.endswith(
            "the demo's generated inputs are missing (heatmaps/demo/process_list.csv); run create-heatmaps --demo "
            "first (it makes them offline and runs this config)")


def test_overrides_and_save_exp_code(make_fast_config, tmp_path):
    cfg = make_fast_config(tmp_path, [GOOD])
    path = _write(cfg, tmp_path / "c.yaml")
    code = cli_main(["--config", str(path), "--quiet", "--save_exp_code", "RUN2",
                     "--set", "heatmap_arguments.cmap=viridis", "--set", "heatmap_arguments.save_ext=png"])
    assert code == 0
    prod = tmp_path / "prod" / "RUN2" / "class_a"
    assert len(list(prod.glob("CMU-1-Small-Region_0.0_roi_0_*_l_-1_bi_0_-1.0_cmap_viridis.png"))) == 1   # non-default cmap named
    effective = yaml.safe_load((tmp_path / "raw" / "RUN2" / "config.yaml").read_text())
    assert effective["heatmap_arguments"]["cmap"] == "viridis"
    assert effective["exp_arguments"]["save_exp_code"] == "RUN2"


def test_bad_override_and_usage(tmp_path, capsys, make_fast_config):
    cfg = make_fast_config(tmp_path, [GOOD])
    path = _write(cfg, tmp_path / "c.yaml")
    assert cli_main(["--config", str(path), "--set", "heatmap_arguments.alfa=1"]) == 1
    assert "did you mean 'heatmap_arguments.alpha'" in capsys.readouterr().err
    assert cli_main(["--config", str(path), "--set", "heatmap_arguments.colormap=viridis"]) == 1
    assert capsys.readouterr().err.strip() == (f"error: {path} (command-line overrides): unknown key "
                                               "'heatmap_arguments.colormap'; did you mean 'heatmap_arguments.cmap'?")
    assert cli_main([]) == 2
    assert cli_main(["--config", "no_such_config.yaml"]) == 1
    assert "config 'no_such_config.yaml' not found" in capsys.readouterr().err


def test_template_config_is_found_by_bare_name(capsys):
    # The template names a demo dataset that is not shipped: a dry run reports it, in one line.
    code = cli_main(["--config", "config_template.yaml", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 1 and "heatmap_demo_dataset.csv" in err and "\n" not in err.strip()


def test_template_header_says_how_to_run_it_and_lists_the_presets():
    head = (REPO / "heatmaps/configs/config_template.yaml").read_text().split("exp_arguments:")[0]
    assert "It does not run as it is" in head and "heatmap_demo_dataset.csv" in head
    assert "cp heatmaps/configs/config_template.yaml my_config.yaml" in head
    for key in ("data_arguments.data_dir", "data_arguments.process_list", "model_arguments.ckpt_path"):
        assert key in head
    shipped = sorted(p.stem for p in (REPO / "heatmaps/configs/presets").glob("*.csv"))
    assert shipped == ["bwh_biopsy", "bwh_resection", "tcga"] and all(name in head for name in shipped)


def test_entry_point_script_never_prompts(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "create_heatmaps.py"), "--help"], capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and "--config" in res.stdout and "--dry-run" in res.stdout
