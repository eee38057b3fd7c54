"""The heatmap YAML config: CLAM's sections and keys, CLAM's defaults, validated by pydantic.

Each section of a CLAM ``create_heatmaps.py`` config (``heatmaps/configs/config_template.yaml`` of
mahmoodlab/CLAM) maps 1:1 onto a pydantic model with ``extra="forbid"``: a misspelt key fails
with its ``section.key`` and the closest valid key, a wrong type with the value and the expected
type. Keys we add beyond CLAM's are marked "(wsi-heatmaps)" in their description.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.encoders import list_encoders  # torch-free: the registry's names, no model is built
from wsi_core.errors import ConfigError
from wsi_core.yaml_config import apply_dotted, closest, read_yaml_mapping, valid_keys

__all__ = [
    "HeatmapConfig", "ExpArguments", "DataArguments", "PatchingArguments", "EncoderArguments",
    "ModelArguments", "HeatmapArguments", "SampleSpec", "SampleArguments",
    "load_config", "parse_config", "apply_overrides", "config_to_dict",
]


def _registry_enum(names: Callable[[], list[str]]) -> Callable[[dict], None]:
    """``json_schema_extra`` adding ``enum``: the registry's names, read when the schema is made
    (the MIL registry imports torch, so it is not read at import)."""
    def extra(schema: dict) -> None:
        schema["enum"] = list(names())
    return extra


def _mil_model_names() -> list[str]:
    from models.mil import list_mil_models

    return list_mil_models()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ExpArguments(_Section):
    n_classes: int = Field(2, ge=1, description="number of classes of the MIL model")
    save_exp_code: str = Field("HEATMAP_OUTPUT", description="name tag of this experiment; outputs go to <save_dir>/<save_exp_code>/")
    raw_save_dir: str = Field("heatmaps/heatmap_raw_results", description="raw assets: features, blockmap and overlap H5, masks")
    production_save_dir: str = Field("heatmaps/heatmap_production_results", description="final heatmaps, orig images, sampled patches")
    batch_size: int = Field(256, ge=1, description="patches per encoder / model batch")
    results_dir: str = Field("heatmaps/results", description="(wsi-heatmaps) where the results CSV <process_list stem>.csv is written, as CLAM does")
    num_workers: int | None = Field(None, ge=0, description="(wsi-heatmaps) patch-reading worker processes feeding the encoder; null = automatic: 0 on CPU (read between encoder batches), up to 4 on CUDA")
    batch_size_infer: int = Field(512, ge=1, description="(wsi-heatmaps) patches per attention batch of the fine pass (batch_size is the encoder's)")
    cache_dir: str | None = Field(None, description="(wsi-heatmaps) feature cache: features keyed by slide content, encoder weights and patch parameters are reused across runs")
    max_memory_gb: float = Field(1.4, gt=0, description="(wsi-heatmaps) memory target of a CPU run, GiB: the encoder's batches are cut to fit it (1 GiB is kept for Python, torch, the models and slide buffers); GPU runs are bounded by batch_size")


class DataArguments(_Section):
    data_dir: Union[str, list[str], dict[str, str], None] = Field(
        None, description="slide directory: a path, a list of paths, or a dict cohort -> path selected by the data_dir_key column")
    data_dir_key: str = Field("source", description="process-list column naming the cohort when data_dir is a dict")
    process_list: str | None = Field(None, description="process-list CSV (bare names are also looked up in heatmaps/process_lists/); null = every slide in data_dir")
    preset: str | None = Field(None, description="one-row CSV of segmentation/patching parameters (CLAM presets/*.csv)")
    slide_ext: str = Field(".svs", description="slide file extension, appended to slide_id when missing")
    label_dict: dict[str, int] = Field(default_factory=dict, description="class name -> class index")
    features_dir: str | None = Field(None, description="(wsi-heatmaps) directory of pre-extracted {slide_id}.h5 / {slide_id}.pt (CLAM or TRIDENT) features to use instead of extracting")

    @field_validator("slide_ext")
    @classmethod
    def _dot(cls, v: str) -> str:
        return v if v.startswith(".") or v == "" else "." + v


class PatchingArguments(_Section):
    patch_size: int = Field(256, ge=16, description="patch side at patch_level, px")
    overlap: float = Field(0.5, ge=0.0, lt=1.0, description="overlap of the fine (second) pass, 0 <= overlap < 1; step = round(patch_size * (1 - overlap))")
    patch_level: int = Field(0, ge=0, description="pyramid level the patches are read at")
    custom_downsample: int = Field(1, ge=1, description="read patches of patch_size * custom_downsample and resize (CLAM)")


class EncoderArguments(_Section):
    model_name: str = Field("resnet50_trunc", description=f"patch encoder: {', '.join(list_encoders())}, or auto (from the checkpoint's input width)",
                            json_schema_extra=_registry_enum(lambda: [*list_encoders(), "auto"]))
    target_img_size: int | None = Field(None, description="patches are resized to this size before the encoder; null = the encoder's published input size (224 for resnet50_trunc, as CLAM)")
    weights_path: str | None = Field(None, description="(wsi-heatmaps) local encoder weights (.pth/.safetensors); else $<NAME>_CKPT_PATH, else the timm hub")
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = Field(
        "auto", description="(wsi-heatmaps) encoder precision; auto (or null) = bf16 on CUDA and on CPUs with native bf16 "
                            "(avx512_bf16 / amx_bf16), else fp32; fp32 reproduces CLAM's features exactly")
    fully_convolutional: bool = Field(False, description="(wsi-heatmaps) CNN encoders: run once over large regions and pool each patch window (fast, approximate: attention Spearman 0.69-0.77 against the exact pass with real ResNet-50 weights, see README)")
    features_check: Literal["strict", "warn", "off"] = Field(
        "strict", description="(wsi-heatmaps) before a fine pass mixes provided features with new ones, re-encode 16 provided patches and compare: strict skips the fine heatmap when the encoder does not reproduce them, warn only warns, off skips the check")


class ModelArguments(_Section):
    ckpt_path: str = Field(..., description="MIL checkpoint (CLAM state dict)")
    model_type: str = Field("clam_sb", description="MIL architecture: a name of models.list_mil_models() (the schema's enum)",
                            json_schema_extra=_registry_enum(_mil_model_names))
    initiate_fn: Literal["initiate_model"] = Field("initiate_model", description="CLAM's model factory; only initiate_model exists")
    model_size: Literal["small", "big"] | None = Field("small", description="CLAM size: small [D,512,256] or big [D,512,384]")
    drop_out: float = Field(0.0, ge=0.0, le=1.0, description="dropout of the model (inactive at inference; true = 0.25 as CLAM)")
    embed_dim: int | None = Field(1024, ge=1, description="feature dimension the checkpoint expects (null: read it from the checkpoint)")
    n_classes: int | None = Field(None, description="copied from exp_arguments when absent (CLAM)")
    combine: Literal["bag", "mean", "logit_mean"] | None = Field(
        None, description="(wsi-heatmaps, dsmil) bag prediction from the two streams: bag (bag stream), mean (mean of the two sigmoid probabilities, the authors' --average), logit_mean (MIL-Lab); null = the checkpoint layout's own")
    num_landmarks: int | None = Field(
        None, ge=1, description="(wsi-heatmaps, transmil) Nystrom landmarks, not stored in the weights; null = embed_dim // 2 as in both reference implementations")

    def model_kwargs(self) -> dict[str, Any]:
        """Builder options the weights cannot tell (``load_mil_checkpoint(model_kwargs=...)``)."""
        return {k: v for k in ("combine", "num_landmarks") if (v := getattr(self, k)) is not None}

    @field_validator("drop_out", mode="before")
    @classmethod
    def _bool_dropout(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return 0.25 if v else 0.0
        return v


class HeatmapArguments(_Section):
    vis_level: int = Field(1, ge=-1, description="pyramid level the heatmap is drawn at (-1: best level for downsample 32)")
    alpha: float = Field(0.4, ge=0.0, le=1.0, description="heatmap opacity over the slide (0: slide only, 1: heatmap only)")
    blank_canvas: bool = Field(False, description="draw on white instead of the slide")
    save_orig: bool = Field(True, description="also save the slide at vis_level as {slide_id}_orig_{vis_level}.{ext}")
    save_ext: Literal["jpg", "png", "tiff", "tif"] = Field("jpg", description="image format of the heatmap and orig image")
    use_ref_scores: bool = Field(True, description="fine-pass percentiles against the blockmap scores (else rank percentiles of the fine pass)")
    blur: bool = Field(False, description="Gaussian blur of the score map and of the coloured image")
    use_center_shift: bool = Field(True, description="CLAM's overlap-dependent centre shift of the four-point tissue test")
    use_roi: bool = Field(False, description="restrict the fine pass and the heatmap to the process list's x1,y1,x2,y2 (level-0 px)")
    calc_heatmap: bool = Field(True, description="run the fine pass; false renders an existing {slide_id}_{overlap}_roi_{use_roi}.h5")
    binarize: bool = Field(False, description="colour patches above binary_thresh uniformly")
    binary_thresh: float = Field(-1.0, description="binarisation threshold in [0, 1]; -1 = 1/N")
    custom_downsample: int = Field(1, ge=1, description="shrink the final image by this factor")
    cmap: str = Field("jet", description="any matplotlib colormap name")
    raw_scores: bool = Field(False, description="(wsi-heatmaps) save_ext tiff: also write the per-pixel score map as a grayscale pyramidal TIFF")
    tiff_background: Literal["empty", "slide"] = Field("empty", description="(wsi-heatmaps) save_ext tiff: 'empty' stores the tiles without heatmap colour as zero-byte tiles (transparent in OpenSlide >= 4; the slide is not read there, so large maps are written faster); 'slide' keeps the slide's pixels in every tile")
    save_geojson: bool = Field(False, description="(wsi-heatmaps) also write the fine-pass patches as QuPath tiles with their measurements ({slide_id}_tiles.geojson) and the tissue as QuPath annotations")
    geojson_gzip: bool = Field(False, description="(wsi-heatmaps) gzip the QuPath GeoJSON files (.geojson.gz, which QuPath reads)")
    geojson_threshold: float | None = Field(None, ge=0, le=100, description="(wsi-heatmaps) with save_geojson: attention percentile (0-100) at or above which a QuPath tile is classified 'High attention', below it 'Low attention'; null: tiles unclassified")
    save_dsa: bool = Field(False, description="(wsi-heatmaps) also write the fine-pass attention percentiles as a Digital Slide Archive / HistomicsUI heatmap annotation ({slide_id}_dsa_annotation.json, large_image's annotation JSON, level-0 px)")
    score_maps: bool = Field(False, description="(wsi-heatmaps) also draw the attention map and per-class evidence maps with colour bars (Marugoto-style)")
    true_class: Union[str, int, None] = Field(None, description="(wsi-heatmaps) class whose evidence map is drawn (a label_dict name); null = the predicted class")
    score_classes: Literal["true_class", "all"] = Field("true_class", description="(wsi-heatmaps) one score map for true_class, or one per class")
    att_cmap: str = Field("jet", description="(wsi-heatmaps) colormap of the attention map")
    score_cmap: str = Field("coolwarm", description="(wsi-heatmaps) colormap of the class score maps (chance at the middle)")
    shade_by_attention: bool = Field(True, description="(wsi-heatmaps) score maps: each patch's opacity is its normalised attention (else alpha)")
    normalize_across_slides: bool = Field(False, description="(wsi-heatmaps) one colour scale for every slide of the run, so colours compare across slides")
    att_lower_threshold: float = Field(0.01, description="(wsi-heatmaps) attention quantile drawn at the bottom of att_cmap (lower values squashed to it)")
    att_upper_threshold: float = Field(1.0, description="(wsi-heatmaps) attention quantile drawn at the top of att_cmap")
    score_threshold: float = Field(0.95, description="(wsi-heatmaps) quantile of |score - chance| at the ends of score_cmap (outliers clipped)")
    mask_threshold: int | None = Field(None, description="(wsi-heatmaps) score maps: slide pixels at least this bright (0-255 grey) stay uncoloured; null = tissue contours only")

    @field_validator("cmap", "att_cmap", "score_cmap")
    @classmethod
    def _known_cmap(cls, v: str) -> str:
        import matplotlib

        if v not in matplotlib.colormaps:
            close = difflib.get_close_matches(v, list(matplotlib.colormaps), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown matplotlib colormap '{v}'{hint}")
        return v


class SampleSpec(_Section):
    name: str = Field(..., description="sub-folder of sampled_patches/")
    sample: bool = Field(True, description="whether to run this sampler")
    seed: int = Field(1, description="random seed (range_sample)")
    k: int = Field(15, ge=1, description="number of patches")
    mode: Literal["topk", "reverse_topk", "range_sample"] = Field("topk", description="highest, lowest, or random within [score_start, score_end]")
    score_start: float = Field(0.0, description="range_sample lower bound, compared with the 0-100 percentiles (as CLAM)")
    score_end: float = Field(1.0, description="range_sample upper bound, compared with the 0-100 percentiles (as CLAM)")


class SampleArguments(_Section):
    samples: list[SampleSpec] = Field(default_factory=list)


class HeatmapConfig(BaseModel):
    """A whole config file. ``source`` is the file it came from (for messages)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    exp_arguments: ExpArguments = Field(default_factory=ExpArguments)
    data_arguments: DataArguments = Field(default_factory=DataArguments)
    patching_arguments: PatchingArguments = Field(default_factory=PatchingArguments)
    encoder_arguments: EncoderArguments = Field(default_factory=EncoderArguments)
    model_arguments: ModelArguments
    heatmap_arguments: HeatmapArguments = Field(default_factory=HeatmapArguments)
    sample_arguments: SampleArguments = Field(default_factory=SampleArguments)

    @model_validator(mode="after")
    def _n_classes(self) -> "HeatmapConfig":
        if self.model_arguments.n_classes is None:
            self.model_arguments.n_classes = self.exp_arguments.n_classes
        return self

    @property
    def step_size(self) -> int:
        """Fine-pass step at patch_level, px: ``round(patch_size * (1 - overlap))`` (see
        ``wsi_core.patching.dense_step``; CLAM's ``int`` for every whole-number step)."""
        from wsi_core.patching import dense_step

        p = self.patching_arguments
        return dense_step(p.patch_size, p.overlap)


_SECTIONS = {name: f.annotation for name, f in HeatmapConfig.model_fields.items()}


# Names users reach for that the schema spells otherwise (matplotlib, timm, MIL-Lab, CLAM's own CLI).
# Keys: ``unknown key -> valid key`` (also inside a longer key: ``score_colormap`` -> ``score_cmap``);
# values: ``wrong enum value -> valid value``. The one table of synonyms; "did you mean" reads it first.
KEY_SYNONYMS: dict[str, str] = {
    "colormap": "cmap", "colourmap": "cmap", "color_map": "cmap", "colour_map": "cmap",
    "in_dim": "embed_dim", "feature_dim": "embed_dim", "feat_dim": "embed_dim",
    "overlap_ratio": "overlap",
    "ckpt": "ckpt_path", "checkpoint": "ckpt_path", "checkpoint_path": "ckpt_path",
}
VALUE_SYNONYMS: dict[str, str] = {
    "bottomk": "reverse_topk", "bottom_k": "reverse_topk", "top_k": "topk", "range": "range_sample",
}


def _valid_keys(loc: tuple) -> list[str]:
    """Valid keys at a location inside the config (for 'did you mean')."""
    return valid_keys(HeatmapConfig, loc)


def _synonym(key: str) -> str | None:
    """The schema's name for ``key`` by :data:`KEY_SYNONYMS` (whole key, else one part of it)."""
    if key in KEY_SYNONYMS:
        return KEY_SYNONYMS[key]
    for alias in sorted(KEY_SYNONYMS, key=len, reverse=True):
        if alias in key:
            return key.replace(alias, KEY_SYNONYMS[alias])
    return None


def _suggest_key(loc: tuple) -> str:
    """``did you mean 'section.key'?`` for an unknown key: a synonym first (in this section, else
    in the section that has it), else the closest spelling, else the valid keys."""
    prefix = ".".join(str(p) for p in loc[:-1]) + "." if len(loc) > 1 else ""
    valid = _valid_keys(loc)
    name = str(loc[-1])
    alias = _synonym(name)
    if alias is not None:
        if alias in valid:
            return f"did you mean '{prefix}{alias}'?"
        if len(loc) == 2:
            owners = [s for s in _SECTIONS if alias in _valid_keys((s, alias))]
            if owners:
                return f"did you mean '{owners[0]}.{alias}'? ({alias} belongs to {owners[0]})"
    near = closest(name, valid)
    return f"did you mean '{prefix}{near}'?" if near else f"valid keys: {', '.join(valid)}"


def _describe(err: dict, source: str) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{dotted}'; {_suggest_key(loc)}"
    if err["type"] == "missing":
        return f"{source}: missing required key '{dotted}'; add it to the config"
    value = err.get("input")
    if err["type"] == "literal_error" and isinstance(value, str):
        allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        guess = VALUE_SYNONYMS.get(value.lower())
        guess = guess if guess in allowed else closest(value, allowed, cutoff=0.6)
        if guess is not None:
            return f"{source}: {dotted} = {value!r} is invalid: {err['msg']}; did you mean '{guess}'?"
    return f"{source}: {dotted} = {value!r} is invalid: {err['msg']}"


def parse_config(data: dict, *, source: str = "<config>") -> HeatmapConfig:
    """Validate a config mapping (as read from YAML).

    Raises:
        ConfigError: one line per problem, naming ``source``, the ``section.key``, the value and
        the expected type, or the closest valid key for an unknown one.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a mapping of sections ({', '.join(_SECTIONS)}), got {type(data).__name__}")
    try:
        cfg = HeatmapConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(e, source) for e in exc.errors())) from None
    _check_score_map_keys(cfg, source)
    _check_model_keys(cfg, source)
    _check_fully_convolutional(cfg, source)
    return cfg


def _check_fully_convolutional(cfg: HeatmapConfig, source: str) -> None:
    if cfg.encoder_arguments.fully_convolutional and cfg.patching_arguments.custom_downsample > 1:
        raise ConfigError(f"{source}: encoder_arguments.fully_convolutional pools the encoder's feature map "
                          "at the slide's own scale and cannot shrink patches; set "
                          "patching_arguments.custom_downsample to 1 or fully_convolutional to false")


def _check_model_keys(cfg: HeatmapConfig, source: str) -> None:
    """Model options that belong to one model_type only."""
    m = cfg.model_arguments
    for key, owner in (("combine", "dsmil"), ("num_landmarks", "transmil")):
        if getattr(m, key) is not None and m.model_type != owner:
            raise ConfigError(f"{source}: model_arguments.{key} applies to model_type {owner} only, "
                              f"but model_type is {m.model_type}; remove {key} or set it to null")


def _check_score_map_keys(cfg: HeatmapConfig, source: str) -> None:
    """Thresholds of the score maps (vis_utils' checks), reported with the config's name."""
    from vis_utils.normalize import check_mask_threshold, check_score_threshold, check_thresholds

    h = cfg.heatmap_arguments
    try:
        check_thresholds(h.att_lower_threshold, h.att_upper_threshold)
        check_score_threshold(h.score_threshold)
        check_mask_threshold(h.mask_threshold)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    names = cfg.data_arguments.label_dict
    if h.true_class is not None and names and str(h.true_class) not in names:
        raise ConfigError(f"{source}: heatmap_arguments.true_class '{h.true_class}' is not among the classes ({', '.join(names)}); use a data_arguments.label_dict name")


def load_config(path: str | Path) -> HeatmapConfig:
    """Read and validate a YAML config file.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or fails validation.
    """
    data = read_yaml_mapping(path, missing_hint="give a path relative to the working directory or a name in heatmaps/configs/")
    return parse_config(data, source=str(path))


def apply_overrides(cfg: HeatmapConfig, overrides: list[str], *, source: str = "--set") -> HeatmapConfig:
    """Apply ``section.key=value`` overrides and re-validate the whole config.

    Raises:
        ConfigError: malformed override, unknown section or key (with the closest), or invalid value.
    """
    data = apply_dotted(config_to_dict(cfg), overrides, source=source, example="heatmap_arguments.alpha=0.5")
    return parse_config(data, source=source)


def config_to_dict(cfg: HeatmapConfig) -> dict:
    """The effective config as plain YAML-able data (every key, defaults filled in)."""
    return cfg.model_dump(mode="json")
