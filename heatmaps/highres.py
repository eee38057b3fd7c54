"""The high-resolution command line on the same entry point.

``create_heatmaps.py --checkpoint CKPT --slide SLIDE --output OUT.tiff [--overlap 0.90] ...``
builds a config in memory and runs the same pipeline as a YAML run, then puts the heatmap at
``OUT`` and the patches behind it in ``{OUT stem}_coords.h5``. ``--scores SCORES.h5 --slide SLIDE
--output OUT`` re-renders an existing result (a blockmap, an overlap H5 or a ``_coords.h5``) at any
``--vis_level``, ``--cmap``, ``--alpha`` without running a model.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from vis_utils import HeatmapStyle, render_heatmap, save_image
from vis_utils.tiff import check_raster_size
from vis_utils.tiled import coords_h5_path, render_heatmap_tiff, scores_tiff_path, write_coords_h5
from wsi_core.errors import ConfigError
from wsi_core.slide import open_slide
from wsi_core.tissue import SegmentationParams, TissueContours, load_clam_mask_pkl, load_contours_geojson, segment_tissue

from .config import HeatmapConfig, parse_config
from .outputs import read_scores
from .process_list import slide_stem, write_csv

log = logging.getLogger("wsi_heatmaps")
OUTPUT_EXTS = {".tiff": "tiff", ".tif": "tiff", ".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The high-resolution flags (``--checkpoint``/``--scores`` with ``--slide`` and ``--output``)."""
    g = p.add_argument_group("high-resolution heatmap of one slide (no YAML needed)")
    g.add_argument("--checkpoint", help="MIL checkpoint: run the model on --slide and write --output")
    g.add_argument("--scores", help="re-render an existing blockmap / overlap / _coords.h5 on --slide (no model)")
    g.add_argument("--slide", help="the slide file (or DICOM folder)")
    g.add_argument("--output", help="output heatmap: .tiff/.tif (pyramidal, OpenSlide-readable), .png or .jpg")
    g.add_argument("--model_type", default="clam_sb", help="MIL architecture of --checkpoint (default clam_sb)")
    g.add_argument("--feature_extractor", default="auto",
                   help="encoder: auto (from the checkpoint's input width) or a registered name (resnet50_trunc, uni_v1, uni_v2, conch_v1, ctranspath, virchow2)")
    g.add_argument("--encoder_weights", help="local encoder weights (else $<NAME>_CKPT_PATH, else the hub)")
    g.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="encoder precision (default fp32 on CPU, bf16 on CUDA)")
    g.add_argument("--fully_convolutional", action="store_true", help="CNN encoders: one pass over large regions (fast, approximate)")
    g.add_argument("--vis_level", type=int, default=0, help="level of the output (0 = full resolution)")
    g.add_argument("--patch_size", type=int, default=256, help="patch side at level 0 (px)")
    g.add_argument("--cmap", default="jet", help="matplotlib colormap")
    g.add_argument("--alpha", type=float, default=0.5, help="colour opacity over the slide")
    g.add_argument("--batch_size_extract", type=int, default=32, help="patches per encoder batch")
    g.add_argument("--batch_size_infer", type=int, default=512, help="patches per attention batch")
    g.add_argument("--roi", help="x1,y1,x2,y2 in level-0 px")
    g.add_argument("--raw_scores", action="store_true", help="TIFF output: also write the raw score map")


def _output_ext(output: str) -> str:
    ext = OUTPUT_EXTS.get(Path(output).suffix.lower())
    if ext is None:
        raise ConfigError(f"--output {output}: unsupported extension '{Path(output).suffix}'; use .tiff, .tif, .png or .jpg")
    return ext


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``'x1,y1,x2,y2'`` (level-0 px) -> a tuple; ConfigError on anything else."""
    if not text:
        return None
    parts = text.replace(" ", "").split(",")
    if len(parts) != 4 or not all(re.fullmatch(r"-?\d+", p) for p in parts):
        raise ConfigError(f"--roi {text!r}: expected four integers x1,y1,x2,y2 in level-0 px")
    x1, y1, x2, y2 = (int(p) for p in parts)
    return x1, y1, x2, y2


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} required with --{'checkpoint' if args.checkpoint else 'scores'}")


def build_config(args: argparse.Namespace) -> HeatmapConfig:
    """The in-memory config of ``--checkpoint --slide --output`` (work files beside the output)."""
    _require(args, "slide", "output")
    slide, out = Path(args.slide), Path(args.output)
    ext = _output_ext(args.output)
    if not slide.exists():
        raise ConfigError(f"--slide {slide}: file not found")
    roi = parse_roi(args.roi)
    work = out.parent / f"{out.stem}_work"
    row = {"slide_id": slide.name, "label": "Unspecified"}
    if roi:
        row.update(dict(zip(("x1", "y1", "x2", "y2"), roi)))
    pl = write_csv(pd.DataFrame([row]), work / "process_list.csv")
    from models.checkpoints import load_mil_checkpoint
    from models.encoders import encoder_for_dim

    model = load_mil_checkpoint(args.checkpoint, model_type=args.model_type, n_classes=None, model_size=None, embed_dim=None)
    info = {"n_classes": int(model.n_classes), "in_dim": int(model.in_dim)}
    encoder = encoder_for_dim(info["in_dim"]) if args.feature_extractor == "auto" else args.feature_extractor
    data = {
        "exp_arguments": {"n_classes": info["n_classes"], "save_exp_code": slide_stem(slide.name, ""),
                          "raw_save_dir": str(work / "raw"), "production_save_dir": str(work / "production"),
                          "results_dir": str(work), "batch_size": args.batch_size_extract,
                          "batch_size_infer": args.batch_size_infer},
        "data_arguments": {"data_dir": str(slide.parent), "process_list": str(pl), "slide_ext": "",
                           "preset": "presets/bwh_biopsy.csv"},
        "patching_arguments": {"patch_size": args.patch_size, "overlap": args.overlap if args.overlap is not None else 0.9},
        "encoder_arguments": {"model_name": encoder, "weights_path": args.encoder_weights, "precision": args.precision,
                              "fully_convolutional": bool(args.fully_convolutional)},
        "model_arguments": {"ckpt_path": args.checkpoint, "model_type": args.model_type, "model_size": None,
                            "embed_dim": info["in_dim"]},
        "heatmap_arguments": {"vis_level": args.vis_level, "alpha": args.alpha, "cmap": args.cmap, "save_ext": ext,
                              "save_orig": False, "use_roi": roi is not None, "raw_scores": bool(args.raw_scores)},
        "sample_arguments": {"samples": []},
    }
    return parse_config(data, source="command line")


def finish_highres(cfg: HeatmapConfig, output: str) -> Path:
    """Move the run's heatmap to ``output`` and write ``{output stem}_coords.h5`` beside it."""
    from .outputs import slide_outputs

    out = Path(output)
    df = pd.read_csv(Path(cfg.exp_arguments.results_dir) / "process_list.csv")
    sid = slide_stem(str(df.loc[0, "slide_id"]), "")
    so = slide_outputs(cfg, sid, "Unspecified")
    os.replace(so.heatmap(cfg), out)
    if cfg.heatmap_arguments.raw_scores and scores_tiff_path(so.heatmap(cfg)).is_file():
        os.replace(scores_tiff_path(so.heatmap(cfg)), scores_tiff_path(out))
    with h5py.File(so.overlap_h5(), "r") as f:
        coords, scores = f["coords"][:], f["attention_scores"][:].ravel()
    p = cfg.patching_arguments
    write_coords_h5(coords_h5_path(out), coords, scores, patch_size=p.patch_size, step=cfg.step_size,
                    patch_level=p.patch_level, encoder=cfg.encoder_arguments.model_name,
                    score_kind="percentile" if cfg.heatmap_arguments.use_ref_scores else "raw",
                    precision=str(cfg.encoder_arguments.precision or "auto"))
    return out


def _is_percentile(path: Path, scores: np.ndarray, attrs: dict) -> bool:
    """Blockmaps hold raw attention; overlap H5s with reference scores and our ``_coords.h5``
    (``score_kind`` attribute) hold 0-100 percentiles."""
    kind = attrs.get("score_kind")
    if kind is not None:
        return str(kind) == "percentile"
    if path.name.endswith("_blockmap.h5"):
        return False
    return bool(re.search(r"_roi_(True|False)\.h5$", path.name)) and scores.min() >= 0 and scores.max() <= 100


def _contours_for(slide, scores_path: Path) -> TissueContours:
    """Tissue contours saved beside the scores (ours or CLAM's), else a fresh segmentation."""
    sid = slide.slide_id
    for cand in (scores_path.parent / f"{sid}_tissue.geojson", scores_path.parent / f"{sid}_mask.pkl"):
        if cand.is_file():
            return load_contours_geojson(cand)[0] if cand.suffix == ".geojson" else load_clam_mask_pkl(cand)
    return segment_tissue(slide, SegmentationParams(a_t=1.0, a_h=1.0, max_n_holes=2))


def rerender(args: argparse.Namespace) -> Path:
    """``--scores`` mode: draw an existing score file on the slide at ``--vis_level``."""
    _require(args, "slide", "output")
    ext = _output_ext(args.output)
    scores_path = Path(args.scores)
    scores, coords, attrs = read_scores(scores_path)
    percentile = _is_percentile(scores_path, scores, attrs)
    with open_slide(args.slide) as slide:
        if not 0 <= args.vis_level < slide.level_count:
            raise ConfigError(f"--vis_level {args.vis_level} is beyond {slide.slide_id}'s {slide.level_count} levels (0-{slide.level_count - 1})")
        level = int(attrs.get("patch_level", 0))
        size = int(attrs.get("patch_size", args.patch_size))
        dx, dy = slide.level_downsamples[min(level, slide.level_count - 1)]
        style = HeatmapStyle(cmap=args.cmap, alpha=args.alpha)
        kw = dict(patch_size_level0=(int(size * dx), int(size * dy)), vis_level=args.vis_level,
                  contours=_contours_for(slide, scores_path), style=style, convert_to_percentiles=not percentile,
                  roi=parse_roi(args.roi))
        if ext == "tiff":
            render_heatmap_tiff(slide, scores, coords, out_path=args.output, raw_scores=bool(args.raw_scores), **kw)
        else:
            w, h = slide.level_dimensions[args.vis_level]
            check_raster_size(w, h, ext)
            save_image(render_heatmap(slide, scores, coords, **kw), args.output, quality=100)
    log.info("%s: %d patches re-rendered at level %d -> %s", scores_path.name, len(coords), args.vis_level, args.output)
    return Path(args.output)
