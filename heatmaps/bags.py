"""The bag a slide's model scores, and which of its features the fine pass may reuse.

A bag comes from (first found wins):

1. the user: ``features_path`` in the process list or ``data_arguments.features_dir`` (CLAM
   ``.h5``/``.pt`` or TRIDENT ``.h5``) - the training bag, so the heatmap bag is the bag the model
   was trained on (CLAM#154);
2. an earlier run of this config: the raw dir's ``{slide_id}.h5`` (used when its attributes say
   the same encoder, weights, size, precision and patch parameters made it);
3. extraction now, on the non-overlapping grid of the tissue.

Fine-pass patches whose level-0 ``(x, y)`` and footprint coincide with a bag patch take that
patch's features. New features mixed with the user's must come from the encoder that made the
user's: before such a fine pass, :func:`check_provided_features` re-encodes a deterministic sample
of the user's patches and compares (``encoder_arguments.features_check``: strict, warn or off).
No other heatmap tool checks this; without it, a different encoder's features give fine-pass
scores on another scale and a silently wrong map.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import reuse_map
from models.checkpoints import check_feature_dim
from wsi_core.errors import CheckpointError, FeatureFileError, NoTissueError
from wsi_core.formats import FeatureBag, validate_bag
from wsi_core.slide import Slide

from .context import RunContext, encode
from .features import load_feature_bag, save_feature_bag
from .layout import SlideOutputs

__all__ = ["Bag", "FeaturesMismatch", "CHECK_SAMPLE", "CHECK_MIN_COSINE", "CHECK_MAX_REL_DIFF",
           "own_bag", "extracted_bag", "check_bag_width", "check_provided_features", "fine_pass_features",
           "check_bag_coords", "provided_matches_encoder"]

log = logging.getLogger(__name__)

CHECK_SAMPLE = 16            # provided patches re-encoded to check the encoder
CHECK_MIN_COSINE = 0.99      # every sampled patch: cosine(new, provided) at least this
CHECK_MAX_REL_DIFF = 0.05    # every sampled patch: |new - provided| / |provided| at most this


@dataclass
class Bag:
    """A slide's bag and where it came from: ``origin`` is ``'provided'`` (the user's files),
    ``'own'`` (this tool's raw-dir features of an earlier run) or ``'extracted'`` (now);
    ``same_encoder``: the run's encoder made these features (so mixing them with new ones is safe)."""

    features: FeatureBag
    origin: str
    same_encoder: bool

    @property
    def coords(self) -> np.ndarray:
        return self.features.coords


class FeaturesMismatch(Exception):
    """The run's encoder does not reproduce the provided features (the one-line reason)."""


def check_bag_coords(bag: FeatureBag, slide: Slide) -> None:
    """A bag's coords must be distinct level-0 px inside the slide.

    Raises:
        FeatureFileError: naming the file, the first bad coordinate and the fix.
    """
    c = bag.coords
    w0, h0 = slide.level_dimensions[0]
    bad = np.flatnonzero((c[:, 0] < 0) | (c[:, 1] < 0) | (c[:, 0] >= w0) | (c[:, 1] >= h0))
    if len(bad):
        x, y = (int(v) for v in c[bad[0]])
        raise FeatureFileError(f"{bag.source}: {len(bad)} of {len(c)} coords lie outside the {w0}x{h0} slide "
                               f"{slide.slide_id} (first ({x}, {y})); coords must be level-0 px of this slide - "
                               "check that the features belong to it")
    if len(np.unique(c, axis=0)) != len(c):
        raise FeatureFileError(f"{bag.source}: {len(c) - len(np.unique(c, axis=0))} duplicated coords; a bag holds "
                               "each patch once - re-extract the features")


def own_bag(ctx: RunContext, out: SlideOutputs) -> Bag | None:
    """The raw dir's ``{slide_id}.h5`` of an earlier run, or None (absent, or ``--force``)."""
    if ctx.force or not out.features_h5.is_file():
        return None
    fb = load_feature_bag(out.features_h5)
    same = all(str(fb.attrs.get(k)) == str(v) for k, v in ctx.encoder_attrs().items())
    return Bag(fb, "own", same)


def extracted_bag(ctx: RunContext, slide: Slide, coords: np.ndarray, out: SlideOutputs, slide_id: str) -> Bag:
    """Encode the first-pass patches at ``coords`` now and save CLAM's ``{slide_id}.h5``/``.pt``.

    Raises:
        NoTissueError: no patch fits in the tissue.
    """
    if len(coords) == 0:
        raise NoTissueError(f"slide {slide_id}: no {ctx.cfg.patching_arguments.patch_size}-px patch fits in the tissue; "
                            f"lower patch_size or the preset's a_t, or check the segmentation in {out.mask_jpg.name}")
    fb = validate_bag(encode(ctx, slide, coords), coords, source=f"slide {slide_id} (extracted)")
    save_feature_bag(fb, out.features_h5, out.features_pt, attrs=ctx.encoder_attrs())
    return Bag(fb, "extracted", True)


def provided_matches_encoder(ctx: RunContext, fb: FeatureBag) -> bool:
    """Whether a provided file says it was made by this run's encoder (attributes this tool writes)."""
    try:
        mine = ctx.encoder_attrs()
    except (CheckpointError, FeatureFileError):
        return False
    keys = ("encoder", "weights_sha256", "target_img_size", "precision", "patch_size", "patch_level",
            "custom_downsample", "fully_convolutional")
    return all(k in fb.attrs and str(fb.attrs[k]) == str(mine[k]) for k in keys)


def check_bag_width(ctx: RunContext, bag: Bag) -> None:
    """The bag's width must be the checkpoint's input width.

    Raises:
        CheckpointError: naming the checkpoint, both widths and the file.
    """
    ckpt = ctx.cfg.model_arguments.ckpt_path
    dim = bag.features.features.shape[1]
    if bag.origin != "provided":
        check_feature_dim(ctx.model, dim, encoder_name=ctx.encoder().name, ckpt_path=ckpt)
    elif dim != ctx.model.in_dim:
        raise CheckpointError(f"checkpoint {Path(ckpt).name} expects {ctx.model.in_dim}-d features but "
                              f"{bag.features.source} holds {dim}-d features; use the features of the encoder the "
                              "model was trained on")


def check_provided_features(ctx: RunContext, slide: Slide, bag: Bag) -> tuple[float, float]:
    """Re-encode ``CHECK_SAMPLE`` provided patches (evenly spaced in the bag's order) with the run's
    encoder, weights, transform and precision, and compare with the provided features.

    Returns:
        ``(min cosine, max relative L2 difference)`` over the sample.

    Raises:
        FeaturesMismatch: cosine below ``CHECK_MIN_COSINE`` or relative difference above
            ``CHECK_MAX_REL_DIFF`` for some sampled patch (the message names the encoder and the keys to set).
    """
    fb = bag.features
    idx = np.unique(np.linspace(0, len(fb.coords) - 1, min(CHECK_SAMPLE, len(fb.coords))).round().astype(np.int64))
    new = encode(ctx, slide, fb.coords[idx], use_cache=False).astype(np.float64)
    old = fb.features[idx].astype(np.float64)
    norms = np.linalg.norm(old, axis=1) * np.linalg.norm(new, axis=1)
    cos = float(np.min(np.sum(old * new, axis=1) / np.maximum(norms, 1e-12)))
    rel = float(np.max(np.linalg.norm(new - old, axis=1) / np.maximum(np.linalg.norm(old, axis=1), 1e-12)))
    if cos < CHECK_MIN_COSINE or rel > CHECK_MAX_REL_DIFF:
        raise FeaturesMismatch(
            f"encoder {ctx.encoder_label()} does not reproduce {fb.source} on {len(idx)} sampled patches "
            f"(min cosine {cos:.3f} < {CHECK_MIN_COSINE} or max relative difference {rel:.3f} > {CHECK_MAX_REL_DIFF}); "
            "set encoder_arguments.model_name, weights_path, target_img_size and precision to what made the features, "
            "or calc_heatmap: false (or features_check: warn|off to proceed)")
    return cos, rel


def fine_pass_features(ctx: RunContext, slide: Slide, coords: np.ndarray, bag: Bag) -> np.ndarray:
    """Features (M, D) float32 of the fine-pass patches at ``coords`` (M, 2): those that coincide
    with a bag patch take its features; the others are encoded. Provided features are mixed with
    new ones only once :func:`check_provided_features` passed (per ``features_check``).

    Raises:
        FeaturesMismatch: ``features_check: strict`` and the encoder does not reproduce the bag.
    """
    fb = bag.features
    feats = np.empty((len(coords), fb.features.shape[1]), np.float32)
    todo = np.ones(len(coords), bool)
    if len(coords):
        idx_new, idx_old = reuse_map(coords, fb.coords)
        feats[idx_new] = fb.features[idx_old]
        todo[idx_new] = False
        log.debug("fine pass: %d of %d patches reuse bag features", len(idx_new), len(coords))
    if todo.any():
        if not bag.same_encoder:
            _check_before_mixing(ctx, slide, bag)
        feats[todo] = encode(ctx, slide, coords[todo])
    return feats


def _check_before_mixing(ctx: RunContext, slide: Slide, bag: Bag) -> None:
    mode = ctx.cfg.encoder_arguments.features_check
    if mode == "off":
        return
    try:
        cos, rel = check_provided_features(ctx, slide, bag)
        log.info("%s: encoder reproduces the provided features (min cosine %.4f, max relative difference %.4f)",
                 slide.slide_id, cos, rel)
    except FeaturesMismatch as exc:
        if mode == "strict":
            raise
        log.warning("%s: %s; features_check: warn - mixing them anyway", slide.slide_id, exc)
