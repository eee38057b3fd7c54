"""models.train.config and the command line: YAML, CLAM flags, --set, closest keys."""
from __future__ import annotations

import pytest

from models.train.cli import build_parser, config_from_args
from models.train.config import load_train_config
from wsi_core.errors import ConfigError


def test_unknown_key_names_the_closest(tmp_path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("optim:\n  learning_rat: 0.1\nmodel:\n  bag_weigth: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(p)
    msg = str(e.value)
    assert "unknown key 'model.bag_weigth'; did you mean 'model.bag_weight'?" in msg
    p.write_text("data:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'data.lr'; did you mean 'optim.lr'\\?"):
        load_train_config(p)
    p.write_text("model:\n  model_type: clam_ssb\n")
    with pytest.raises(ConfigError, match="did you mean 'clam_sb'"):
        load_train_config(p)


def test_flags_override_yaml_and_set_overrides_flags(tmp_path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("optim:\n  lr: 0.1\n  max_epochs: 7\nmodel:\n  model_type: abmil\n")
    args = build_parser().parse_args(["--config", str(p), "--lr", "0.002", "--k", "3", "--label_dict",
                                      '{"n": 0, "t": 1}', "--B", "4", "--inst_loss", "ce", "--weighted_sample",
                                      "--set", "optim.max_epochs=9", "--exp_code", "x"])
    cfg = config_from_args(args)
    assert cfg.optim.lr == 0.002 and cfg.optim.max_epochs == 9 and cfg.model.model_type == "abmil"
    assert cfg.split.mode == "monte_carlo" and cfg.split.k == 3 and cfg.data.label_dict == {"n": 0, "t": 1}
    assert cfg.model.B == 4 and cfg.model.inst_loss == "ce" and cfg.optim.weighted_sample and cfg.run.exp_code == "x"
    with pytest.raises(ConfigError, match="unknown section 'optm'; did you mean 'optim'"):
        config_from_args(build_parser().parse_args(["--set", "optm.lr=1"]))
