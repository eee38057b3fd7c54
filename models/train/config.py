"""The trainer's config (``train.yaml``): sections ``data``, ``split``, ``model``, ``optim``,
``logging``, ``run``, validated with pydantic (``extra="forbid"``: an unknown key fails with the
closest valid one). CLAM's ``main.py`` flags map onto keys (:data:`CLAM_FLAGS`); a flag overrides
the YAML and ``--set section.key=value`` overrides both.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wsi_core.errors import ConfigError
from wsi_core.yaml_config import apply_dotted, closest, read_yaml_mapping, valid_keys

from ..mil import list_mil_models

__all__ = ["TrainConfig", "CLAM_FLAGS", "parse_train_config", "load_train_config", "apply_overrides",
           "config_to_dict"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    csv_path: str | None = Field(None, description="CLAM dataset CSV (case_id, slide_id, label)")
    data_root_dir: str | None = Field(None, description="features dir: CLAM pt_files/ + h5_files/, or TRIDENT/flat .h5 files")
    label_dict: dict[str, int] | None = Field(None, description="class name -> index; None: sorted labels")
    max_patches: int | None = Field(None, ge=1, description="random subset of a training bag (instances)")
    preload: bool = Field(False, description="hold every bag in memory")
    num_workers: int = Field(0, ge=0)


class SplitConfig(_Section):
    split_dir: str | None = Field(None, description="folder of CLAM splits_{k}.csv to read (written there when absent)")
    mode: Literal["holdout", "kfold", "monte_carlo"] = "holdout"
    k: int = Field(1, ge=1, description="folds (holdout: 1)")
    k_start: int = -1
    k_end: int = -1
    val_frac: float = Field(0.15, ge=0, lt=1)
    test_frac: float = Field(0.15, ge=0, lt=1)
    label_frac: float = Field(1.0, gt=0, le=1)


class ModelConfig(_Section):
    model_type: str = "clam_sb"
    model_size: Literal["small", "big"] = "small"
    drop_out: float = Field(0.25, ge=0, lt=1)
    gate: bool = True
    embed_dim: int | None = Field(None, description="feature width D (None: read from the features)")
    inst_loss: Literal["svm", "ce"] | None = Field("svm", description="CLAM instance loss; None: off")
    bag_weight: float = Field(0.7, ge=0, le=1, description="CLAM: bag_weight*bag + (1-bag_weight)*instance loss")
    B: int = Field(8, ge=1, description="CLAM: instances sampled per class for the instance loss")
    subtyping: bool = False
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra builder options of the model")

    @field_validator("model_type")
    @classmethod
    def _known(cls, v: str) -> str:
        names = list_mil_models()
        if v not in names:
            close = difflib.get_close_matches(v, names, n=1, cutoff=0.3)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown model_type; valid: {', '.join(names)}{hint}")
        return v


class OptimConfig(_Section):
    opt: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(2e-4, gt=0)
    reg: float = Field(1e-5, ge=0, description="weight decay")
    max_epochs: int = Field(200, ge=1)
    min_epochs: int = Field(50, ge=0, description="CLAM's stop_epoch: no early stop before it")
    early_stopping: bool = False
    patience: int = Field(20, ge=1)
    monitor: Literal["val_loss", "val_auc"] = "val_loss"
    scheduler: Literal["none", "cosine", "plateau", "warmup_cosine"] = "none"
    warmup_epochs: int = Field(0, ge=0)
    bag_loss: Literal["ce"] = "ce"
    class_weights: bool = Field(False, description="class-weighted CE, w_c = N / (C n_c)")
    weighted_sample: bool = Field(False, description="class-balanced sampling of training bags")
    accumulate_grad_batches: int = Field(1, ge=1)
    precision: str = Field("32-true", description="Lightning precision, e.g. 16-mixed on a GPU")


class LoggingConfig(_Section):
    log_data: bool = Field(True, description="TensorBoard event files")
    heatmap_panel: int = Field(2, ge=0, description="validation slides whose attention is drawn every epoch")
    heatmap_downsample: int = Field(32, ge=1, description="level-0 px per canvas px")
    heatmap_max_size: int = Field(1024, ge=64, description="canvas side limit; the downsample grows to fit")
    heatmap_cmap: str = "jet"


class RunConfig(_Section):
    results_dir: str = "./results"
    exp_code: str = "exp"
    seed: int = 1
    devices: int | str = 1
    accelerator: str = "auto"
    eval_only: bool = False
    models_dir: str | None = Field(None, description="--eval_only: folder of s_{k}_checkpoint.pt")


class TrainConfig(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    run: RunConfig = Field(default_factory=RunConfig)


_SECTIONS = tuple(TrainConfig.model_fields)

#: CLAM main.py flag -> config key
CLAM_FLAGS: dict[str, str] = {
    "data_root_dir": "data.data_root_dir", "csv_path": "data.csv_path", "label_dict": "data.label_dict",
    "max_patches": "data.max_patches",
    "results_dir": "run.results_dir", "exp_code": "run.exp_code", "seed": "run.seed", "devices": "run.devices",
    "eval_only": "run.eval_only", "models_dir": "run.models_dir",
    "split_dir": "split.split_dir", "k": "split.k", "k_start": "split.k_start", "k_end": "split.k_end",
    "label_frac": "split.label_frac", "val_frac": "split.val_frac", "test_frac": "split.test_frac",
    "split_mode": "split.mode",
    "max_epochs": "optim.max_epochs", "lr": "optim.lr", "reg": "optim.reg", "opt": "optim.opt",
    "bag_loss": "optim.bag_loss", "weighted_sample": "optim.weighted_sample",
    "early_stopping": "optim.early_stopping",
    "drop_out": "model.drop_out", "model_type": "model.model_type", "model_size": "model.model_size",
    "inst_loss": "model.inst_loss", "bag_weight": "model.bag_weight", "B": "model.B",
    "embed_dim": "model.embed_dim", "subtyping": "model.subtyping",
    "log_data": "logging.log_data",
}


def _valid_keys(loc: tuple) -> list[str]:
    return valid_keys(TrainConfig, loc)


def _suggest(loc: tuple) -> str:
    prefix = ".".join(str(p) for p in loc[:-1]) + "." if len(loc) > 1 else ""
    name = str(loc[-1])
    near = closest(name, _valid_keys(loc))
    if near:
        return f"did you mean '{prefix}{near}'?"
    owners = [f"{s}.{name}" for s in _SECTIONS if name in _valid_keys((s, name))]
    if len(loc) == 2 and owners:
        return f"did you mean '{owners[0]}'?"
    flag = CLAM_FLAGS.get(name)
    if flag:
        return f"did you mean '{flag}'?"
    return f"valid keys: {', '.join(_valid_keys(loc))}"


def _describe(err: dict, source: str) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{dotted}'; {_suggest(loc)}"
    return f"{source}: {dotted} = {err.get('input')!r} is invalid: {err['msg']}"


def parse_train_config(data: dict, *, source: str = "<config>") -> TrainConfig:
    """Validate a config mapping.

    Raises:
        ConfigError: one line per problem naming ``source``, the key and the closest valid key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a train config is a mapping of sections ({', '.join(_SECTIONS)})")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(e, source) for e in exc.errors())) from None


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read and validate a ``train.yaml`` (ConfigError: missing file, bad YAML, bad keys)."""
    return parse_train_config(read_yaml_mapping(path), source=str(path))


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any] | list[str], *, source: str = "--set") -> TrainConfig:
    """Apply ``{'section.key': value}`` or ``['section.key=value']`` (values read as YAML) and
    re-validate.

    Raises:
        ConfigError: malformed item, unknown section or key (with the closest), invalid value.
    """
    data = apply_dotted(config_to_dict(cfg), overrides, source=source, example="optim.lr=1e-4")
    return parse_train_config(data, source=source)


def config_to_dict(cfg: TrainConfig) -> dict:
    """The effective config as plain YAML-able data."""
    return cfg.model_dump(mode="json")
