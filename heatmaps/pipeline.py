"""The per-slide pipeline: tissue -> bag -> attention -> blockmap -> fine pass.

:func:`run_slide` strings the steps together for one slide, hands each step's numbers to the
output writers (:mod:`heatmaps.writers`) and returns the numbers for the results CSV. Errors are
raised as ``WsiHeatmapsError`` subclasses and caught at the slide boundary by the run loop
(:mod:`heatmaps.run`). A fine heatmap that cannot be drawn right is skipped with a reason in the
slide's status (``processed (<reason>)``), never drawn wrong: the blockmap, its image, the samples
and the results row are still written.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import attention_for_class, predict_bag
from models.mil import BagPrediction, instance_scores_for
from vis_utils import reference_percentiles
from wsi_core.errors import NoTissueError
from wsi_core.formats import has_raw_scores, read_scores, write_scores
from wsi_core.levels import check_roi, patch_footprint_level0, resolve_level
from wsi_core.patching import dense_step
from wsi_core.slide import Slide, open_slide

from .bags import (Bag, FeaturesMismatch, check_bag_coords, check_bag_width, extracted_bag, fine_pass_features, own_bag,
                   provided_matches_encoder)
from .cache import CODE_VERSION, array_sha256, weights_sha256
from .context import RunContext
from .features import find_features
from .layout import SlideOutputs, slide_outputs
from .process_list import SlideTask
from .scoremaps import fit_scales, map_classes, read_slide_scores
from .state import read_state
from .tissue import grid, segmentation_properties, slide_tissue
from .writers import SlideArtifacts, run_writers
from .writers.scoremaps import draw_score_maps

__all__ = ["RunContext", "SlideResult", "run_slide", "draw_run_score_maps", "outputs_complete", "fine_pass_chunks"]

#: most bytes of float32 features one fine-pass chunk holds (about 64k patches of 1024-d features):
#: an instance-independent model's fine pass keeps only the scores of earlier chunks, so its memory
#: is bounded by one chunk, not by the patch count (95 % overlap has 400x a plain grid's patches)
FINE_CHUNK_BYTES = 256 * 2**20

log = logging.getLogger(__name__)


@dataclass
class SlideResult:
    """One slide's numbers for the results CSV and the summary line; ``note``: why the fine
    heatmap was skipped (the status reads ``processed (<note>)``)."""

    slide_id: str
    bag_size: int
    probs: np.ndarray          # (C,) float32
    pred: int
    seconds: float = 0.0
    skipped: bool = False
    task: SlideTask | None = None          # for the run-level score maps
    fine_h5: Path | None = None
    note: str | None = None

    def ranked(self, names: dict[int, str]) -> list[tuple[str, float]]:
        """(class name, probability), most probable first (CLAM's Pred_c / p_c)."""
        order = np.argsort(-self.probs, kind="stable")
        return [(names.get(int(c), str(int(c))), float(self.probs[c])) for c in order]


class _FineSkipped(Exception):
    """The fine heatmap of this slide is skipped (the one-line reason)."""


# ---------------------------------------------------------------------------- the bag


def _slide_config(ctx: RunContext, slide: Slide, task: SlideTask, provided: Bag | None) -> RunContext:
    """A TRIDENT bag's ``patch_size_level0`` overrides ``patch_size`` for its slide (one note)."""
    if provided is None or "patch_size_level0" not in provided.features.attrs:
        return ctx
    p = ctx.cfg.patching_arguments
    theirs = int(provided.features.attrs["patch_size_level0"])
    ours = patch_footprint_level0(slide, patch_size=p.patch_size, patch_level=p.patch_level,
                                  custom_downsample=p.custom_downsample)[0]
    if theirs == ours:
        return ctx
    per_level = theirs / (float(slide.level_downsamples[p.patch_level][0]) * p.custom_downsample)
    log.info("%s: %s records patch_size_level0 %d; using patch_size %d at patch_level %d instead of %d",
             task.slide_id, provided.features.source, theirs, round(per_level), p.patch_level, p.patch_size)
    cfg = ctx.cfg.model_copy(deep=True)
    cfg.patching_arguments.patch_size = int(round(per_level))
    return ctx.with_config(cfg)


def _provided_bag(ctx: RunContext, task: SlideTask) -> Bag | None:
    fb = find_features(task.slide_id, ctx.cfg.data_arguments.features_dir, task.features_path, task.coords_path,
                       encoder=ctx.cfg.encoder_arguments.model_name)
    if fb is None:
        return None
    log.debug("%s: using pre-extracted features %s", task.slide_id, fb.source)
    return Bag(fb, "provided", provided_matches_encoder(ctx, fb))


def _first_pass(ctx: RunContext, art: SlideArtifacts, provided: Bag | None) -> tuple[Bag, BagPrediction]:
    """Score the bag and write the blockmap H5; returns the bag and the model's result."""
    cfg, task, out = ctx.cfg, art.task, art.out
    bag = provided or own_bag(ctx, out)
    if bag is None:
        coords = grid(cfg, art.slide, art.contours, step=cfg.patching_arguments.patch_size, roi=None)
        bag = extracted_bag(ctx, art.slide, coords, out, task.slide_id)
    check_bag_width(ctx, bag)
    result = predict_bag(ctx.model, bag.features.features, device=ctx.device)
    # the row a heatmap shows: CLAM-MB's predicted-class branch; several ABMIL heads: their mean
    block_scores = ctx.model.heatmap_row(torch.from_numpy(result.attention), result.pred).numpy().astype(np.float32)
    write_scores(out.blockmap_h5, block_scores, bag.coords,
                 attrs={"probs": result.probs, "pred": result.pred, "bag_size": len(bag.coords),
                        "model_type": cfg.model_arguments.model_type, "model_sha256": ctx.model_sha256()})
    art.block_scores, art.block_coords, art.pred, art.probs = block_scores, bag.coords, result.pred, result.probs
    return bag, result


# ---------------------------------------------------------------------------- the fine pass


def fine_pass_identity(ctx: RunContext, bag: Bag, task: SlideTask, contours_source: str) -> str:
    """What a fine-pass H5 depends on, as canonical JSON: the model, the bag, the grid (with the
    tissue it was laid on: ``contours_source`` 'segmentation' (its parameters), 'mask.pkl' or
    'bag') and the encoder settings - not the rendering style. An H5 with the same identity is
    reused, so a style-only change re-renders without encoding."""
    cfg = ctx.cfg
    p, e, h, m = cfg.patching_arguments, cfg.encoder_arguments, cfg.heatmap_arguments, cfg.model_arguments
    fb = bag.features
    ident = {
        "code": CODE_VERSION, "model_sha256": ctx.model_sha256(), "model_type": m.model_type,
        "model_options": m.model_kwargs(),
        "bag_sha256": array_sha256(np.concatenate([fb.coords.astype(np.float64).ravel(), fb.features.ravel()])),
        "patch_size": p.patch_size, "patch_level": p.patch_level, "custom_downsample": p.custom_downsample,
        "step_size": dense_step(p.patch_size, p.overlap), "use_center_shift": h.use_center_shift,
        "roi": list(task.roi) if task.roi else None, "use_ref_scores": h.use_ref_scores,
        "tissue": segmentation_properties(task)["segmentation"] if contours_source == "segmentation" else contours_source,
        "encoder": e.model_name, "weights": weights_sha256(e.weights_path) if e.weights_path else None,
        "target_img_size": e.target_img_size, "precision": ctx.precision,
        "fully_convolutional": e.fully_convolutional, "features_check": e.features_check,
    }
    return json.dumps(ident, sort_keys=True)


def fine_pass_chunks(coords: np.ndarray, *, dim: int, instance_independent: bool) -> list[np.ndarray]:
    """Row indices of ``coords`` (M, 2) level-0 px, in the chunks the fine pass encodes and scores
    one after the other: one chunk when the model scores whole bags only (``instance_independent``
    False) or all features fit :data:`FINE_CHUNK_BYTES` (``dim``-wide float32), else consecutive
    runs in row order (sorted by y, then x), each at most that many bytes of features, so a chunk
    covers a horizontal strip of the slide (a grid row at a chunk boundary is split between two
    chunks, whose band reads then overlap by that row)."""
    m = len(coords)
    per = max(1, FINE_CHUNK_BYTES // (4 * max(int(dim), 1)))
    if not instance_independent or m <= per:
        return [np.arange(m, dtype=np.int64)]
    order = np.lexsort((coords[:, 0], coords[:, 1]))
    return [order[i:i + per] for i in range(0, m, per)]


def _fine_scores(ctx: RunContext, art: SlideArtifacts, bag: Bag, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw attention (M,) float32 of the predicted class's heatmap row and per-class instance
    scores (M, C) float32 of the fine-pass patches, chunk by chunk (:func:`fine_pass_chunks`).

    Raises:
        FeaturesMismatch: as :func:`heatmaps.bags.fine_pass_features`.
    """
    bs = ctx.cfg.exp_arguments.batch_size_infer
    raw: np.ndarray | None = None
    class_scores: np.ndarray | None = None
    for idx in fine_pass_chunks(coords, dim=int(ctx.model.in_dim),
                                instance_independent=bool(ctx.model.instance_independent)):
        feats = fine_pass_features(ctx, art.slide, coords[idx], bag)
        att = attention_for_class(ctx.model, feats, cls=art.pred, device=ctx.device, batch_size=bs)
        cs = instance_scores_for(ctx.model, feats, device=ctx.device, batch_size=bs)
        del feats
        if raw is None or class_scores is None:
            raw = np.empty(len(coords), np.float32)
            class_scores = np.empty((len(coords), *cs.shape[1:]), np.float32)
        raw[idx], class_scores[idx] = att, cs
    assert raw is not None and class_scores is not None  # coords is never empty here
    return raw, class_scores


def _fine_pass(ctx: RunContext, art: SlideArtifacts, bag: Bag) -> Path:
    """The fine-pass H5: computed (``calc_heatmap``), reused when one of the same identity exists,
    or found (``calc_heatmap: false``).

    Raises:
        _FineSkipped: no fine-pass H5 with calc_heatmap false; the encoder does not reproduce the
            provided features (``features_check: strict``).
        NoTissueError: no fine-pass patch inside the tissue (and the ROI).
    """
    cfg, h, task, out = ctx.cfg, ctx.cfg.heatmap_arguments, art.task, art.out
    fine_path = out.overlap_h5()
    if not h.calc_heatmap:
        if fine_path.is_file():
            return fine_path
        fallback = out.overlap_h5(use_roi=False)
        if h.use_roi and fallback.is_file():
            return fallback
        raise _FineSkipped("no fine-pass H5: heatmap skipped")
    source = "bag" if art.contours is None else "mask.pkl" if out.mask_pkl.is_file() else "segmentation"
    identity = fine_pass_identity(ctx, bag, task, source)
    if not ctx.force and fine_path.is_file() and read_scores(fine_path).attrs.get("fine_pass_identity") == identity:
        log.info("%s: fine pass reused from %s (same model, bag, grid and encoder)", task.slide_id, fine_path.name)
        return fine_path
    p = cfg.patching_arguments
    coords = grid(cfg, art.slide, art.contours, step=dense_step(p.patch_size, p.overlap), roi=task.roi,
                  bag_coords=bag.coords if bag.origin == "provided" else None)
    if len(coords) == 0:
        raise NoTissueError(f"slide {task.slide_id}: no fine-pass patch inside the tissue{' and the ROI ' + str(task.roi) if task.roi else ''}; check the ROI (level-0 x1,y1,x2,y2) or the segmentation")
    n0 = ctx.n_encoded
    try:
        raw, class_scores = _fine_scores(ctx, art, bag, coords)
    except FeaturesMismatch as exc:
        raise _FineSkipped(f"fine pass skipped: {exc}") from None
    fine = reference_percentiles(raw, art.block_scores) if h.use_ref_scores else raw
    made_by = ctx.encoder_attrs() if (ctx.n_encoded > n0 or bag.origin != "provided") else \
        {"features_source": str(bag.features.source)}
    write_scores(fine_path, fine, coords, attrs={**made_by, "step_size": cfg.step_size,
                                                 "score_kind": "percentile" if h.use_ref_scores else "raw",
                                                 "fine_pass_identity": identity},
                 attention_raw=raw, class_scores=class_scores)
    return fine_path


# ---------------------------------------------------------------------------- the slide


def outputs_complete(ctx: RunContext, out: SlideOutputs, orig_level: int) -> bool:
    """Whether a slide's blockmap, heatmap and (with save_orig) orig image all exist."""
    h = ctx.cfg.heatmap_arguments
    need = [out.blockmap_h5, out.heatmap(ctx.cfg)]
    if h.save_orig:
        need.append(out.orig(orig_level, h.save_ext))
    return all(p.is_file() for p in need)


def _finished_result(ctx: RunContext, task: SlideTask, out: SlideOutputs, orig_level: int, t0: float) -> SlideResult | None:
    """The result of a slide whose outputs are complete, whose state says ``processed`` (it is
    written after every output, so a worker killed mid-slide leaves none) and made by this
    checkpoint (a rerun without --force), else None: outputs of another model are recomputed,
    never passed off."""
    if ctx.force or not outputs_complete(ctx, out, orig_level):
        return None
    state = read_state(out.state_json)
    if state is None or state.status != "processed" or state.model_sha256 != ctx.model_sha256():
        return None
    attrs = read_scores(out.blockmap_h5).attrs
    if "probs" not in attrs or str(attrs.get("model_sha256")) != ctx.model_sha256():
        return None
    fine = out.overlap_h5()
    return SlideResult(task.slide_id, int(attrs.get("bag_size", 0)), np.asarray(attrs["probs"], np.float32),
                       int(attrs["pred"]), time.perf_counter() - t0, skipped=True, task=task,
                       fine_h5=fine if fine.is_file() else None)


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
    h = ctx.cfg.heatmap_arguments
    out = slide_outputs(ctx.cfg, task.slide_id, task.grouping)
    seg_vis_level = resolve_level(slide, task.vis_level, key="the vis_level process-list column")
    orig_level = resolve_level(slide, h.vis_level) if h.vis_level >= 0 else seg_vis_level
    if task.roi is not None:
        check_roi(task.roi, slide.level_dimensions[0], slide_id=f"slide {task.slide_id}")
    done = _finished_result(ctx, task, out, orig_level, t0)
    if done is not None:
        return done

    provided = _provided_bag(ctx, task)
    if provided is not None:
        check_bag_width(ctx, provided)
        check_bag_coords(provided.features, slide)
    ctx = _slide_config(ctx, slide, task, provided)
    p = ctx.cfg.patching_arguments
    art = SlideArtifacts(cfg=ctx.cfg, slide=slide, task=task, out=out, seg_vis_level=seg_vis_level,
                         orig_level=orig_level,
                         contours=slide_tissue(slide, task, out, force=ctx.force, has_bag=provided is not None),
                         patch_size_level0=patch_footprint_level0(slide, patch_size=p.patch_size, patch_level=p.patch_level,
                                                                  custom_downsample=p.custom_downsample))
    run_writers("tissue", art)
    bag, result = _first_pass(ctx, art, provided)
    run_writers("blockmap", art)
    note = None
    try:
        art.fine_h5 = _fine_pass(ctx, art, bag)
    except _FineSkipped as exc:
        note = str(exc)
        log.warning("%s: %s", task.slide_id, note)
    if art.fine_h5 is not None:
        fine = read_scores(art.fine_h5)
        art.fine_scores, art.fine_coords = fine.scores, fine.coords
        run_writers("heatmap", art)
    return SlideResult(task.slide_id, len(bag.coords), result.probs, result.pred, time.perf_counter() - t0,
                       task=task, fine_h5=art.fine_h5, note=note)


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
            has_bag = find_features(r.task.slide_id, ctx.cfg.data_arguments.features_dir, r.task.features_path,
                                    r.task.coords_path, encoder=ctx.cfg.encoder_arguments.model_name) is not None
            art = SlideArtifacts(cfg=ctx.cfg, slide=slide, task=r.task, out=out, seg_vis_level=-1, orig_level=-1,
                                 contours=slide_tissue(slide, r.task, out, force=False, has_bag=has_bag), pred=r.pred,
                                 fine_h5=r.fine_h5,
                                 patch_size_level0=patch_footprint_level0(slide, patch_size=p.patch_size, patch_level=p.patch_level,
                                                                          custom_downsample=p.custom_downsample))
            draw_score_maps(art, scales)
