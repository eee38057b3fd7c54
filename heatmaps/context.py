"""What every slide of one config shares: the config, the model, the encoder (resolved once), the
feature cache, and the run's counters; plus :func:`encode`, the one way the pipeline encodes patches.

The encoder and its weights are resolved once per run (:meth:`RunContext.prepare`, before the
first slide): a hub that cannot be reached is tried once, and its error is given to every slide
that needs the encoder afterwards without another attempt.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models import Encoder, MILModel, create_encoder, encoder_for_dim, resolve_precision
from models.checkpoints import check_feature_dim
from models.extract import extract_features_dense
from models.fully_conv import extract_features_fully_conv
from models.encode import batch_for_memory, cuda_batch_size, patch_memory_bytes
from models.hub import offline_unless_reachable
from wsi_core.errors import CheckpointError, ConfigError, WsiHeatmapsError
from wsi_core.slide import Slide

from .cache import FeatureCache, array_sha256, weights_sha256
from .config import HeatmapConfig

__all__ = ["RunContext", "encode"]

log = logging.getLogger(__name__)
RESERVED_GB = 1.0   # of max_memory_gb, for Python, torch, the models and slide buffers (reference run: 0.87 GiB + 40 MB per patch in a batch)


@dataclass
class _Shared:
    """Resources of one run, shared by the per-slide copies of a :class:`RunContext`."""

    encoder: Encoder | None = None
    encoder_error: WsiHeatmapsError | None = None
    cache: FeatureCache | None = None
    weights_id: str | None = None
    model_sha256: str | None = None
    n_encoded: int = 0          # patches that went through the encoder in this run
    batch_note: bool = False


@dataclass
class RunContext:
    """One config's run: ``cfg``, the loaded ``model``, class names, device and flags."""

    cfg: HeatmapConfig
    model: MILModel
    class_names: dict[int, str]
    device: str = "cpu"
    force: bool = False
    progress: bool = True
    shared: _Shared = field(default_factory=_Shared, repr=False)

    @property
    def n_encoded(self) -> int:
        return self.shared.n_encoded

    def with_config(self, cfg: HeatmapConfig) -> "RunContext":
        """A copy for one slide with its own config (e.g. a bag's patch size); resources shared."""
        return dataclasses.replace(self, cfg=cfg)

    # ------------------------------------------------------------------------- checks and encoder

    def prepare(self, *, encoder_required: bool) -> None:
        """Fail fast, before the first slide: class count vs ``label_dict``; the encoder and its
        weights (one hub attempt at most); the checkpoint's input width vs the encoder's width.

        ``encoder_required``: every slide needs the encoder (no pre-extracted features given);
        an encoder that cannot be built is then a config-level error, else a warning and the
        slides that need it fail with the same one line.

        Raises:
            ConfigError: ``label_dict`` disagrees with the checkpoint's class count.
            CheckpointError: the encoder cannot be built (when required) or its width is not the
                checkpoint's input width.
        """
        labels = self.cfg.data_arguments.label_dict
        n = int(self.model.n_classes)
        if labels and (len(set(labels.values())) != n or not all(0 <= v < n for v in labels.values())):
            raise ConfigError(f"data_arguments.label_dict {labels} names {len(set(labels.values()))} classes but the "
                              f"checkpoint {Path(self.cfg.model_arguments.ckpt_path).name} has {n} (indices 0-{n - 1}); "
                              "fix label_dict or exp_arguments.n_classes")
        try:
            enc = self.encoder()
        except WsiHeatmapsError as exc:
            if encoder_required:
                raise
            log.warning("encoder unavailable (%s); slides whose features must be encoded will fail", exc)
            return
        check_feature_dim(self.model, enc.dim, encoder_name=enc.name, ckpt_path=self.cfg.model_arguments.ckpt_path)
        if self.cfg.encoder_arguments.fully_convolutional:
            log.warning("encoder_arguments.fully_convolutional: the fine pass pools one feature map over large regions, "
                        "so each patch sees its real neighbours instead of the zero padding of the patch-wise "
                        "features a MIL model is trained on; with real ResNet-50 weights and a CLAM model its "
                        "attention ranks agree with the exact map only to Spearman 0.69-0.77 (README). Use it for "
                        "a quick look; set it to false for a map to report")

    def encoder(self) -> Encoder:
        """The run's encoder, built once (a failure is remembered and raised again, not retried).

        Raises:
            CheckpointError, ConfigError: as :func:`models.create_encoder`.
        """
        s = self.shared
        if s.encoder_error is not None:
            raise s.encoder_error
        if s.encoder is None:
            e = self.cfg.encoder_arguments
            try:
                name = encoder_for_dim(self.model.in_dim) if e.model_name == "auto" else e.model_name
                if not e.weights_path:
                    offline_unless_reachable()   # one probe, not huggingface_hub's five retries
                s.encoder = create_encoder(name, target_img_size=e.target_img_size, weights_path=e.weights_path,
                                           precision=self.precision)
            except (CheckpointError, ConfigError) as exc:
                s.encoder_error = exc
                raise
            s.encoder.model.to(self.device)
        return s.encoder

    @property
    def precision(self) -> str:
        """The encoder's precision ('fp32' | 'bf16' | 'fp16'): the config's, or for 'auto' bf16
        on CUDA and on CPUs with native bf16, fp32 on other CPUs (``models.resolve_precision``)."""
        return resolve_precision(self.cfg.encoder_arguments.precision, self.device)

    @property
    def channels_last(self) -> bool:
        """Run a CNN encoder channels-last: with bf16 on CPU (oneDNN's bf16 convolutions want it);
        fp32 stays in the contiguous format CLAM uses."""
        return self.device == "cpu" and self.precision == "bf16" and self.encoder().is_cnn

    def weights_id(self) -> str:
        """sha256 of the local encoder weights, else where they came from (the hub id)."""
        if self.shared.weights_id is None:
            e = self.cfg.encoder_arguments
            self.shared.weights_id = weights_sha256(e.weights_path) if e.weights_path else str(self.encoder().weights_source)
        return self.shared.weights_id

    def model_sha256(self) -> str:
        """sha256 of the MIL checkpoint file (names the model that made a score file)."""
        if self.shared.model_sha256 is None:
            self.shared.model_sha256 = weights_sha256(self.cfg.model_arguments.ckpt_path)
        return self.shared.model_sha256

    def encoder_attrs(self) -> dict:
        """What made the features (written to the features and fine-pass H5s; features whose
        attributes are equal are used without re-encoding or checking)."""
        enc, p, e = self.encoder(), self.cfg.patching_arguments, self.cfg.encoder_arguments
        return {"encoder": enc.name, "weights_source": str(enc.weights_source), "weights_sha256": self.weights_id(),
                "target_img_size": int(enc.input_size), "patch_size": p.patch_size, "patch_level": p.patch_level,
                "custom_downsample": p.custom_downsample, "precision": self.precision,
                "fully_convolutional": int(e.fully_convolutional)}

    def encoder_label(self) -> str:
        """``resnet50_trunc (weights W, 224 px, fp32)`` for messages."""
        enc = self.encoder()
        return f"{enc.name} (weights {enc.weights_source}, {enc.input_size} px, {self.precision})"

    def encoder_batch_size(self) -> int:
        """Patches per encoder batch: ``batch_size``, cut on CPU to fit ``max_memory_gb`` (one
        info line says so the first time), on CUDA to fit half the GPU's free memory
        (:func:`models.encode.cuda_batch_size`: on a 12 GB card the default 256 stays 256 for
        the 224-px encoders in bf16)."""
        e = self.cfg.exp_arguments
        if self.device != "cpu":
            if str(self.device).startswith("cuda"):
                return min(e.batch_size, cuda_batch_size(self.encoder(), patch_px=self.cfg.patching_arguments.patch_size,
                                                         precision=self.precision, device=self.device,
                                                         cap=max(e.batch_size, 32)))
            return e.batch_size
        budget = int((e.max_memory_gb - RESERVED_GB) * 2**30)
        bs = batch_for_memory(self.encoder(), e.batch_size, max(budget, 0), patch_px=self.cfg.patching_arguments.patch_size)
        if bs < e.batch_size and not self.shared.batch_note:
            need = patch_memory_bytes(self.encoder(), self.cfg.patching_arguments.patch_size) * e.batch_size / 2**30
            log.info("encoder batches of %d patches to stay within exp_arguments.max_memory_gb %.1f "
                     "(batch_size %d would take about %.1f GiB more)", bs, e.max_memory_gb, e.batch_size, need)
            self.shared.batch_note = True
        return bs

    # ------------------------------------------------------------------------- cache

    @property
    def cache(self) -> FeatureCache | None:
        if self.shared.cache is None and self.cfg.exp_arguments.cache_dir:
            self.shared.cache = FeatureCache(self.cfg.exp_arguments.cache_dir)
        return self.shared.cache

    def cache_key(self, slide: Slide, coords: np.ndarray) -> str:
        """Cache key: slide content, encoder and its weights, patch parameters, the coords."""
        e, p, enc = self.cfg.encoder_arguments, self.cfg.patching_arguments, self.encoder()
        weights = weights_sha256(e.weights_path) if e.weights_path else str(enc.weights_source)
        return self.cache.key(slide.path, encoder_name=enc.name, weights_sha256=weights,
                              patch_params={"patch_level": p.patch_level, "patch_size": p.patch_size,
                                            "custom_downsample": p.custom_downsample, "target_img_size": int(enc.input_size),
                                            "precision": self.precision, "coords_sha256": array_sha256(coords)})


def encode(ctx: RunContext, slide: Slide, coords: np.ndarray, *, use_cache: bool = True) -> np.ndarray:
    """Features (N, D) float32 of the patches at ``coords`` (N, 2) level-0 px with the run's encoder.

    With ``custom_downsample`` c > 1 each patch is read ``patch_size * c`` px wide at
    ``patch_level`` and shrunk to ``patch_size`` (PIL's default filter) before the encoder's
    transform, as CLAM's ``Wsi_Region`` does at patch_level 0 (at higher levels CLAM also
    multiplies the read size by the level's downsample; here the footprint stays ``patch_size * c``
    level px, the one the grid and the renderer use).

    Raises:
        CheckpointError, ConfigError: the encoder cannot be built. SlideOpenError: unreadable slide.
    """
    p = ctx.cfg.patching_arguments
    if len(coords) == 0:
        return np.zeros((0, ctx.encoder().dim), np.float32)
    key = None
    if use_cache and ctx.cache is not None:
        key = ctx.cache_key(slide, coords)
        hit = ctx.cache.get(key, slide=slide.slide_id)
        if hit is not None:
            return hit[0]
    kw = dict(patch_level=p.patch_level, patch_size=p.patch_size * p.custom_downsample, encoder=ctx.encoder(),
              device=ctx.device, progress=ctx.progress, precision=ctx.precision, channels_last=ctx.channels_last)
    if ctx.cfg.encoder_arguments.fully_convolutional:
        feats = extract_features_fully_conv(slide.path, coords, **kw)
    else:   # each band of the grid is read once and the (overlapping) windows cut from memory
        feats = extract_features_dense(slide.path, coords, batch_size_extract=ctx.encoder_batch_size(),
                                       target_patch_size=p.patch_size if p.custom_downsample > 1 else None,
                                       num_workers=ctx.cfg.exp_arguments.num_workers, **kw)
    ctx.shared.n_encoded += len(coords)
    if key is not None:
        try:
            ctx.cache.put(key, feats, coords, {"slide_id": slide.slide_id, "encoder": ctx.encoder().name,
                                               "weights_source": str(ctx.encoder().weights_source)})
        except WsiHeatmapsError as exc:   # a full cache disk never fails the slide
            log.warning("%s: feature cache not written: %s", slide.slide_id, exc)
    return feats
