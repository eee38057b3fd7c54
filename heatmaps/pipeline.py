"""The per-slide pipeline: tissue -> patches -> features -> attention -> blockmap -> fine pass.

Each step is a plain function on plain data; :func:`run_slide` strings them together for one
slide, hands each step's numbers to the output writers (:mod:`heatmaps.writers`) and returns the
numbers for the results CSV. Errors are raised as ``WsiHeatmapsError`` subclasses and caught at
the slide boundary by the run loop (:mod:`heatmaps.run`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models import Encoder, MILModel, attention_for_class, create_encoder, default_precision, encoder_for_dim, predict_bag, reuse_map
from models.checkpoints import check_feature_dim
from models.extract import extract_features_dense
from models.fully_conv import extract_features_fully_conv
from models.mil import BagPrediction, instance_scores_for
from vis_utils import reference_percentiles
from wsi_core.errors import CheckpointError, FeatureFileError, NoTissueError, WsiHeatmapsError
from wsi_core.formats import FeatureBag, has_raw_scores, read_scores, validate_bag, write_scores
from wsi_core.levels import check_roi, patch_footprint_level0, resolve_level
from wsi_core.patching import dense_step, patch_grid
from wsi_core.slide import Slide, open_slide
from wsi_core.tissue import TissueContours, load_clam_mask_pkl, load_contours_geojson, save_contours_geojson, segment_tissue

from .cache import FeatureCache, array_sha256, weights_sha256
from .config import HeatmapConfig
from .features import find_features, load_feature_bag, save_feature_bag
from .layout import SlideOutputs, slide_outputs
from .process_list import SlideTask
from .scoremaps import fit_scales, map_classes, read_slide_scores
from .writers import SlideArtifacts, run_writers
from .writers.scoremaps import draw_score_maps

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What every slide of one config shares: the config, the model, the (lazy) encoder."""

    cfg: HeatmapConfig
    model: MILModel
    class_names: dict[int, str]
    device: str = "cpu"
    force: bool = False
    progress: bool = True
    _encoder: Encoder | None = field(default=None, repr=False)
    _cache: FeatureCache | None = field(default=None, repr=False)
    n_encoded: int = 0          # patches that went through the encoder in this run

    def encoder(self) -> Encoder:
        if self._encoder is None:
            e = self.cfg.encoder_arguments
            name = encoder_for_dim(self.model.in_dim) if e.model_name == "auto" else e.model_name
            self._encoder = create_encoder(name, target_img_size=e.target_img_size, weights_path=e.weights_path,
                                           precision=self.precision)
            self._encoder.model.to(self.device)
        return self._encoder

    @property
    def cache(self) -> FeatureCache | None:
        if self._cache is None and self.cfg.exp_arguments.cache_dir:
            self._cache = FeatureCache(self.cfg.exp_arguments.cache_dir)
        return self._cache

    def cache_key(self, slide: Slide, coords: np.ndarray) -> str:
        """Cache key: slide content, encoder and its weights, patch parameters, the coords."""
        e, p, enc = self.cfg.encoder_arguments, self.cfg.patching_arguments, self.encoder()
        weights = weights_sha256(e.weights_path) if e.weights_path else str(enc.weights_source)
        return self.cache.key(slide.path, encoder_name=enc.name, weights_sha256=weights,
                              patch_params={"patch_level": p.patch_level, "patch_size": p.patch_size,
                                            "custom_downsample": p.custom_downsample, "target_img_size": int(enc.input_size),
                                            "precision": e.precision or "fp32", "coords_sha256": array_sha256(coords)})

    @property
    def precision(self) -> str:
        """The encoder's precision: the config's, else fp32 on CPU and bf16 on CUDA."""
        return self.cfg.encoder_arguments.precision or default_precision(self.device)

    def encoder_attrs(self) -> dict:
        """What made the features (written to the features H5; a rerun reuses them only if equal)."""
        enc, p, e = self.encoder(), self.cfg.patching_arguments, self.cfg.encoder_arguments
        return {"encoder": enc.name, "weights_source": str(enc.weights_source), "target_img_size": int(enc.input_size),
                "patch_size": p.patch_size, "patch_level": p.patch_level, "custom_downsample": p.custom_downsample,
                "precision": self.precision,
                "fully_convolutional": int(e.fully_convolutional)}


@dataclass
class SlideResult:
    """One slide's numbers for the results CSV and the summary line."""

    slide_id: str
    bag_size: int
    probs: np.ndarray          # (C,) float32
    pred: int
    seconds: float = 0.0
    skipped: bool = False
    task: SlideTask | None = None          # for the run-level score maps
    fine_h5: Path | None = None

    def ranked(self, names: dict[int, str]) -> list[tuple[str, float]]:
        """(class name, probability), most probable first (CLAM's Pred_c / p_c)."""
        order = np.argsort(-self.probs, kind="stable")
        return [(names.get(int(c), str(int(c))), float(self.probs[c])) for c in order]


# ---------------------------------------------------------------------------- tissue


def load_or_segment(slide: Slide, task: SlideTask, out: SlideOutputs, *, force: bool) -> TissueContours:
    """Tissue contours: CLAM's ``_mask.pkl`` when present in the raw dir, else our GeoJSON when it
    was made with the same parameters, else segment and save the GeoJSON."""
    if out.mask_pkl.is_file() and not force:
        log.debug("%s: using CLAM contours %s", task.slide_id, out.mask_pkl)
        return load_clam_mask_pkl(out.mask_pkl)
    params = _seg_properties(task)
    if out.contours_geojson.is_file() and not force:
        contours, props = load_contours_geojson(out.contours_geojson)
        if props.get("segmentation") == params["segmentation"]:
            return contours
    contours = segment_tissue(slide, task.seg_params)
    save_contours_geojson(contours, out.contours_geojson, properties=params)
    return contours


def _seg_properties(task: SlideTask) -> dict:
    s = task.seg_params
    return {"slide_id": task.slide_id, "segmentation": {
        "seg_level": s.seg_level, "sthresh": s.sthresh, "mthresh": s.mthresh, "close": s.close,
        "use_otsu": bool(s.use_otsu), "keep_ids": list(s.keep_ids), "exclude_ids": list(s.exclude_ids),
        "a_t": float(s.a_t), "a_h": float(s.a_h), "max_n_holes": s.max_n_holes}}


# ---------------------------------------------------------------------------- features


def grid(cfg: HeatmapConfig, slide: Slide, contours: TissueContours, *, step: int,
         roi: tuple[int, int, int, int] | None) -> np.ndarray:
    """Patch coords (N, 2) int64 level-0 of one pass (CLAM's tissue test, optional ROI)."""
    p = cfg.patching_arguments
    return patch_grid(contours, level_dimensions=slide.level_dimensions, level_downsamples=slide.level_downsamples,
                      patch_level=p.patch_level, patch_size=p.patch_size, step_size=step,
                      use_center_shift=cfg.heatmap_arguments.use_center_shift, roi=roi,
                      custom_downsample=p.custom_downsample)


def encode(ctx: RunContext, slide: Slide, coords: np.ndarray) -> np.ndarray:
    """Features (N, D) float32 of the patches at ``coords`` with the config's encoder.

    With ``custom_downsample`` c > 1 each patch is read ``patch_size * c`` px wide at
    ``patch_level`` and shrunk to ``patch_size`` (PIL's default filter) before the encoder's
    transform, as CLAM's ``Wsi_Region`` does at patch_level 0 (at higher levels CLAM also
    multiplies the read size by the level's downsample; here the footprint stays ``patch_size * c``
    level px, the one the grid and the renderer use)."""
    p = ctx.cfg.patching_arguments
    if len(coords) == 0:
        return np.zeros((0, ctx.encoder().dim), np.float32)
    key = None
    if ctx.cache is not None:
        key = ctx.cache_key(slide, coords)
        hit = ctx.cache.get(key, slide=slide.slide_id)
        if hit is not None:
            return hit[0]
    kw = dict(patch_level=p.patch_level, patch_size=p.patch_size * p.custom_downsample, encoder=ctx.encoder(),
              device=ctx.device, progress=ctx.progress, precision=ctx.precision)
    if ctx.cfg.encoder_arguments.fully_convolutional:
        feats = extract_features_fully_conv(slide.path, coords, **kw)
    else:   # each band of the grid is read once and the (overlapping) windows cut from memory
        feats = extract_features_dense(slide.path, coords, batch_size_extract=ctx.cfg.exp_arguments.batch_size,
                                       target_patch_size=p.patch_size if p.custom_downsample > 1 else None,
                                       num_workers=ctx.cfg.exp_arguments.num_workers, **kw)
    ctx.n_encoded += len(coords)
    if key is not None:
        try:
            ctx.cache.put(key, feats, coords, {"slide_id": slide.slide_id, "encoder": ctx.encoder().name,
                                               "weights_source": str(ctx.encoder().weights_source)})
        except WsiHeatmapsError as exc:   # a full cache disk never fails the slide
            log.warning("%s: feature cache not written: %s", slide.slide_id, exc)
    return feats


def first_pass_bag(ctx: RunContext, slide: Slide, task: SlideTask, contours: TissueContours,
                   out: SlideOutputs) -> tuple[FeatureBag, bool]:
    """The bag the model scores: pre-extracted features when provided (the training bag), else the
    raw dir's ``{slide_id}.h5`` from an earlier run, else extracted now on the non-overlapping grid.
    Returns the bag and whether it was made by this config's encoder (so the fine pass may reuse it)."""
    cfg = ctx.cfg
    provided = find_features(task.slide_id, cfg.data_arguments.features_dir, task.features_path, task.coords_path)
    if provided is not None:
        log.debug("%s: using pre-extracted features %s", task.slide_id, provided.source)
        return provided, False
    if out.features_h5.is_file() and not ctx.force:
        bag = load_feature_bag(out.features_h5)
        same = all(str(bag.attrs.get(k)) == str(v) for k, v in ctx.encoder_attrs().items())
        return bag, same
    coords = grid(cfg, slide, contours, step=cfg.patching_arguments.patch_size, roi=None)
    if len(coords) == 0:
        raise NoTissueError(f"slide {task.slide_id}: no {cfg.patching_arguments.patch_size}-px patch fits in the tissue; lower patch_size or the preset's a_t, or check the segmentation in {out.mask_jpg.name}")
    bag = validate_bag(encode(ctx, slide, coords), coords, source=f"slide {task.slide_id} (extracted)")
    save_feature_bag(bag, out.features_h5, out.features_pt, attrs=ctx.encoder_attrs())
    return bag, True


def fine_pass_features(ctx: RunContext, slide: Slide, coords: np.ndarray, bag: FeatureBag,
                       reusable: bool) -> np.ndarray:
    """Features of the fine-pass patches; those that coincide with first-pass patches reuse the
    first-pass features instead of being encoded again."""
    feats = np.empty((len(coords), bag.features.shape[1]), np.float32)
    todo = np.ones(len(coords), bool)
    if reusable and len(coords):
        idx_new, idx_old = reuse_map(coords, bag.coords)
        feats[idx_new] = bag.features[idx_old]
        todo[idx_new] = False
        log.debug("fine pass: %d of %d patches reuse first-pass features", len(idx_new), len(coords))
    if todo.any():
        feats[todo] = encode(ctx, slide, coords[todo])
    return feats


def _check_bag_dim(ctx: RunContext, bag: FeatureBag, made_here: bool) -> None:
    """The bag's width must be the checkpoint's input width (CheckpointError otherwise)."""
    ckpt = ctx.cfg.model_arguments.ckpt_path
    if made_here or bag.features.shape[1] == ctx.model.in_dim:
        check_feature_dim(ctx.model, bag.features.shape[1], encoder_name=ctx.cfg.encoder_arguments.model_name, ckpt_path=ckpt)
        return
    raise CheckpointError(f"checkpoint {Path(ckpt).name} expects {ctx.model.in_dim}-d features but {bag.source} holds "
                          f"{bag.features.shape[1]}-d features; use the features of the encoder the model was trained on")


# ---------------------------------------------------------------------------- the slide


def outputs_complete(cfg: HeatmapConfig, out: SlideOutputs, orig_level: int) -> bool:
    """Whether a slide's blockmap, heatmap and (with save_orig) orig image all exist."""
    h = cfg.heatmap_arguments
    need = [out.blockmap_h5, out.heatmap(cfg)]
    if h.save_orig:
        need.append(out.orig(orig_level, h.save_ext))
    return all(p.is_file() for p in need)


def _finished_result(ctx: RunContext, task: SlideTask, out: SlideOutputs, orig_level: int, t0: float) -> SlideResult | None:
    """The result of a slide whose outputs are complete (a rerun without --force), else None."""
    if ctx.force or not outputs_complete(ctx.cfg, out, orig_level):
        return None
    attrs = read_scores(out.blockmap_h5).attrs
    if "probs" not in attrs:
        return None
    fine = out.overlap_h5()
    return SlideResult(task.slide_id, int(attrs.get("bag_size", 0)), np.asarray(attrs["probs"], np.float32),
                       int(attrs["pred"]), time.perf_counter() - t0, skipped=True, task=task,
                       fine_h5=fine if fine.is_file() else None)


def _first_pass(ctx: RunContext, art: SlideArtifacts) -> tuple[FeatureBag, bool, BagPrediction]:
    """Score the bag and write the blockmap H5; returns the bag, whether the fine pass may reuse
    its features, and the model's result."""
    cfg, task, out = ctx.cfg, art.task, art.out
    bag, reusable = first_pass_bag(ctx, art.slide, task, art.contours, out)
    _check_bag_dim(ctx, bag, reusable)
    result = predict_bag(ctx.model, bag.features, device=ctx.device)
    # the row a heatmap shows: CLAM-MB's predicted-class branch; several ABMIL heads: their mean
    block_scores = ctx.model.heatmap_row(torch.from_numpy(result.attention), result.pred).numpy().astype(np.float32)
    write_scores(out.blockmap_h5, block_scores, bag.coords,
                 attrs={"probs": result.probs, "pred": result.pred, "bag_size": len(bag.coords),
                        "model_type": cfg.model_arguments.model_type})
    art.block_scores, art.block_coords, art.pred, art.probs = block_scores, bag.coords, result.pred, result.probs
    return bag, reusable, result


def _fine_pass(ctx: RunContext, art: SlideArtifacts, bag: FeatureBag, reusable: bool) -> Path:
    """Compute and write the fine-pass H5 (``calc_heatmap``), or find an existing one; returns its path.

    Raises:
        NoTissueError: no fine-pass patch inside the tissue (and the ROI).
        FeatureFileError: calc_heatmap is false and no fine-pass H5 exists.
    """
    cfg, h, task, out = ctx.cfg, ctx.cfg.heatmap_arguments, art.task, art.out
    fine_path = out.overlap_h5()
    if not h.calc_heatmap:
        if fine_path.is_file():
            return fine_path
        fallback = out.overlap_h5(use_roi=False)
        if not (h.use_roi and fallback.is_file()):
            raise FeatureFileError(f"slide {task.slide_id}: calc_heatmap is false but {fine_path} does not exist; run once with calc_heatmap: true")
        return fallback
    p = cfg.patching_arguments
    coords = grid(cfg, art.slide, art.contours, step=dense_step(p.patch_size, p.overlap), roi=task.roi)
    if len(coords) == 0:
        raise NoTissueError(f"slide {task.slide_id}: no fine-pass patch inside the tissue{' and the ROI ' + str(task.roi) if task.roi else ''}; check the ROI (level-0 x1,y1,x2,y2) or the segmentation")
    feats = fine_pass_features(ctx, art.slide, coords, bag, reusable)
    bs = cfg.exp_arguments.batch_size_infer
    raw = attention_for_class(ctx.model, feats, cls=art.pred, device=ctx.device, batch_size=bs)
    fine = reference_percentiles(raw, art.block_scores) if h.use_ref_scores else raw
    class_scores = instance_scores_for(ctx.model, feats, device=ctx.device, batch_size=bs)
    write_scores(fine_path, fine, coords, attrs={**ctx.encoder_attrs(), "step_size": cfg.step_size,
                                                 "score_kind": "percentile" if h.use_ref_scores else "raw"},
                 attention_raw=raw, class_scores=class_scores)
    return fine_path


def run_slide(ctx: RunContext, task: SlideTask, *, slide: Slide | None = None) -> SlideResult:
    """Compute one slide (tissue -> first pass -> fine pass) and hand each step's numbers to the
    enabled output writers (:mod:`heatmaps.writers`); every file is written atomically.

    ``slide``: the open slide when the caller has one (it is opened here otherwise, once).

    Raises:
        WsiHeatmapsError: any bad input of this slide (the run loop records it and goes on).
    """
    if slide is None:
        with open_slide(task.slide_path) as opened:
            return run_slide(ctx, task, slide=opened)
    t0 = time.perf_counter()
    cfg, h = ctx.cfg, ctx.cfg.heatmap_arguments
    out = slide_outputs(cfg, task.slide_id, task.grouping)
    seg_vis_level = resolve_level(slide, task.vis_level, key="the vis_level process-list column")
    orig_level = resolve_level(slide, h.vis_level) if h.vis_level >= 0 else seg_vis_level
    if task.roi is not None:
        check_roi(task.roi, slide.level_dimensions[0], slide_id=f"slide {task.slide_id}")
    done = _finished_result(ctx, task, out, orig_level, t0)
    if done is not None:
        return done

    art = SlideArtifacts(cfg=cfg, slide=slide, task=task, out=out, seg_vis_level=seg_vis_level, orig_level=orig_level,
                         contours=load_or_segment(slide, task, out, force=ctx.force))
    run_writers("tissue", art)
    bag, reusable, result = _first_pass(ctx, art)
    p = cfg.patching_arguments
    art.patch_size_level0 = patch_footprint_level0(slide, patch_size=p.patch_size, patch_level=p.patch_level,
                                                   custom_downsample=p.custom_downsample)
    run_writers("blockmap", art)
    art.fine_h5 = _fine_pass(ctx, art, bag, reusable)
    fine = read_scores(art.fine_h5)
    art.fine_scores, art.fine_coords = fine.scores, fine.coords
    run_writers("heatmap", art)
    return SlideResult(task.slide_id, len(bag.coords), result.probs, result.pred, time.perf_counter() - t0,
                       task=task, fine_h5=art.fine_h5)


def draw_run_score_maps(ctx: RunContext, results: list[SlideResult]) -> None:
    """``normalize_across_slides``: one scale fitted on every slide's scores, then each slide's maps."""
    done = [r for r in results if r.fine_h5 is not None and r.task is not None]
    if not done:
        return
    done = [r for r in done if has_raw_scores(r.fine_h5)]
    if not done:
        log.warning("score maps across slides: no slide has raw fine-pass scores (calc_heatmap: false?)")
        return
    classes = sorted({c for r in done for c in map_classes(ctx.cfg, r.pred)})
    scales = fit_scales(ctx.cfg, [read_slide_scores(r.fine_h5) for r in done], classes)
    p = ctx.cfg.patching_arguments
    for r in done:
        out = slide_outputs(ctx.cfg, r.task.slide_id, r.task.grouping)
        with open_slide(r.task.slide_path) as slide:
            art = SlideArtifacts(cfg=ctx.cfg, slide=slide, task=r.task, out=out, seg_vis_level=-1, orig_level=-1,
                                 contours=load_or_segment(slide, r.task, out, force=False), pred=r.pred,
                                 fine_h5=r.fine_h5,
                                 patch_size_level0=patch_footprint_level0(slide, patch_size=p.patch_size, patch_level=p.patch_level,
                                                                          custom_downsample=p.custom_downsample))
            draw_score_maps(art, scales)
