"""Offline demo inputs, generated from seeds so ``create-heatmaps --demo`` needs no network.

The demo slide is a synthetic H&E-like slide with one planted lesion (:mod:`wsi_core.synthetic`,
seed 1) written as an OpenSlide generic-tiff pyramid (:func:`make_demo_slide`); the encoder is a
seeded, untrained ResNet-50 trunk for ``resnet50_trunc`` (:func:`make_demo_encoder_weights`);
the checkpoint is a CLAM-SB (small) trained in seconds (:mod:`models.train`) on a *separate*
synthetic slide (seed 2) to attend to lesion patches (:func:`make_demo_checkpoint`).
:func:`ensure_demo_assets` creates what is missing under ``heatmaps/demo`` plus a manifest
(seeds, sizes, sha256).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vis_utils.tiff import write_pyramidal_tiff
from wsi_core.io import atomic_path
from wsi_core.synthetic import DOWNSAMPLES, MPP, DemoSlide, grid_coords, rank_auc, render_demo_slide

if TYPE_CHECKING:
    from models import Encoder, MILModel

__all__ = ["make_demo_slide", "make_demo_encoder_weights", "train_demo_model", "make_demo_checkpoint",
           "ensure_demo_assets", "DEMO_DIR", "DEMO_SLIDE_SEED", "TRAIN_SLIDE_SEED", "TARGET_IMG_SIZE"]

DEMO_VERSION = 1
DEMO_DIR = Path("heatmaps/demo")
DEMO_SLIDE_SEED = 1          # the slide the demo runs on
TRAIN_SLIDE_SEED = 2         # the slide the demo checkpoint is trained on (never shown)
ENCODER_SEED = 0
CKPT_SEED = 0
TILE = 256
TARGET_IMG_SIZE = 224        # must match encoder_arguments.target_img_size in configs/demo.yaml


def _write_demo_tiff(path: Path, rgb: np.ndarray, description: str) -> None:
    """The demo slide through the project's one pyramid writer: lossless deflate tiles, level
    downsamples :data:`wsi_core.synthetic.DOWNSAMPLES` (1, 4, 16: every second halving),
    ``MPP`` µm/px at level 0. Atomic."""
    h0, w0 = rgb.shape[:2]
    step = int(round(np.log2(DOWNSAMPLES[1])))
    write_pyramidal_tiff(path, rgb, size=(w0, h0), mpp=(MPP, MPP), tile_size=TILE, compression="deflate",
                         description=description, min_size=max(w0, h0) // DOWNSAMPLES[-1], level_step=step)


def make_demo_slide(path: str | Path, *, seed: int, size: tuple[int, int] = (4096, 3072),
                    lesion: tuple[int, int, int] | None = None) -> DemoSlide:
    """Write the synthetic slide (:func:`wsi_core.synthetic.render_demo_slide`) as a pyramidal
    tiled TIFF.

    Levels: downsamples 1, 4, 16 (one tiled 256x256 zlib RGB page each), X/YResolution
    ``1e4 / 0.5`` px/cm so OpenSlide reports ``openslide.mpp-x/y`` = 0.5 µm/px. Atomic write.
    Returns the DemoSlide (path set).

    Raises:
        ValueError: a size that is not a multiple of 16 or under 512 px.
    """
    rgb, demo = render_demo_slide(seed=seed, size=size, lesion=lesion)
    desc = (f"wsi-heatmaps synthetic demo slide; seed {seed}; {size[0]}x{size[1]} px; mpp {MPP}; "
            f"downsamples {list(DOWNSAMPLES)}; planted lesion (x, y, radius px) {demo.lesion}")
    _write_demo_tiff(Path(path), rgb, desc)
    return replace(demo, path=Path(path))


def make_demo_encoder_weights(path: str | Path, *, seed: int = ENCODER_SEED) -> Path:
    """Write seeded, untrained timm ``resnet50`` weights without ``layer4``/``fc`` (safetensors).

    This is what CLAM's ``resnet50_trunc`` is built from when ImageNet weights cannot be
    downloaded (same recipe as ../shared/clam_reference's seed-0 encoder). Atomic write.
    """
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("resnet50", pretrained=False)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not k.startswith(("layer4.", "fc."))}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})  # one key: stable header bytes
    return path


def train_demo_model(feats: np.ndarray, share: np.ndarray, *, seed: int = CKPT_SEED, steps: int = 300) -> MILModel:
    """CLAM-SB small (2 classes) trained on one slide's patches so that the raw attention tracks
    the lesion share and bags with lesion patches are class 1.

    ``feats``: (N, D) float32 patch features; ``share``: (N,) lesion share of each patch (0-1).
    The model is seeded with ``seed``; bags: :func:`models.train.make_bags` (the whole slide and
    8 pairs of random bags with / without lesion patches); loss: bag cross-entropy plus
    :func:`models.train.attention_supervision_loss`; Adam (lr 5e-4, weight decay 1e-4),
    single-threaded and deterministic, so reruns give the same weights.
    """
    import torch

    from models import create_mil_model
    from models.train import attention_supervision_loss, make_bags, train_mil

    torch.manual_seed(seed)
    model = create_mil_model("clam_sb", n_classes=2, in_dim=feats.shape[1], model_size="small",
                             gate=True, dropout=0.0)
    h = torch.from_numpy(np.ascontiguousarray(feats, np.float32))
    target = torch.from_numpy(np.asarray(share, np.float32))
    bags = make_bags(share > 0.5, n_bags=8, rng=np.random.default_rng(seed))
    return train_mil(model, [h[idx] for idx, _ in bags], [y for _, y in bags], steps=steps, lr=5e-4,
                     weight_decay=1e-4, seed=seed, aux_loss=lambda m: attention_supervision_loss(m, h, target))


def make_demo_checkpoint(path: str | Path, *, encoder: Encoder, seed: int = CKPT_SEED,
                         train_slide_seed: int = TRAIN_SLIDE_SEED, patch_size: int = 256,
                         steps: int = 300) -> dict[str, Any]:
    """Train (:func:`train_demo_model`) and save (``torch.save(state_dict)``, CLAM-SB layout) the
    demo checkpoint.

    The training slide is rendered in memory from ``train_slide_seed`` (never the demo slide);
    its ``patch_size`` grid patches with > 50 % tissue are encoded with ``encoder``
    (:func:`models.encode_image_patches`). Returns a summary dict (patch counts, training AUC of
    the attention, bag probabilities).
    """
    import torch

    from models import encode_image_patches

    rgb, demo = render_demo_slide(seed=train_slide_seed)
    coords = grid_coords(demo, patch_size=patch_size, min_tissue=0.5)
    feats = encode_image_patches(encoder, rgb, coords, patch_size=patch_size)
    frac = demo.lesion_fraction(coords, patch_size=patch_size)
    model = train_demo_model(feats, frac, seed=seed, steps=steps)
    with torch.inference_mode():
        _, probs, att = model(torch.from_numpy(feats))
    buf = io.BytesIO()  # a buffer, so the archive's inner name is fixed ('archive'): same bytes
    torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, buf)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return {"train_slide_seed": train_slide_seed, "seed": seed, "steps": steps,
            "n_patches": int(len(coords)), "n_lesion_patches": int((frac > 0.5).sum()),
            "train_attention_auc": round(rank_auc(att[0].numpy(), frac > 0.5), 4),
            "train_bag_probs": [round(float(p), 4) for p in probs[0]]}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()  # the demo files are < 50 MB


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def ensure_demo_assets(demo_dir: str | Path = DEMO_DIR) -> dict[str, Path]:
    """Create the demo's inputs under ``demo_dir`` unless they are there already.

    Files: ``slides/demo_slide.tiff`` (seed 1), ``weights/resnet50_trunc_demo.safetensors``
    (seed 0), ``ckpts/demo_clam_sb.pt`` (trained on the seed-2 slide), ``process_list.csv``
    (``slide_id,label`` = ``demo_slide,lesion``) and ``demo_manifest.json`` (seeds, sizes, sha256).
    A file is rebuilt when it is missing or its sha256 differs from the manifest, or the
    manifest is of another demo version; the checkpoint is rebuilt with its encoder weights.
    Every write is atomic. Returns name -> path (``demo_dir``, ``slide``, ``weights``,
    ``checkpoint``, ``process_list``, ``manifest``, ``config``).
    """
    d = Path(demo_dir)
    paths = {"demo_dir": d, "slide": d / "slides" / "demo_slide.tiff",
             "weights": d / "weights" / "resnet50_trunc_demo.safetensors",
             "checkpoint": d / "ckpts" / "demo_clam_sb.pt", "process_list": d / "process_list.csv",
             "manifest": d / "demo_manifest.json",
             "config": Path(__file__).resolve().parent / "configs" / "demo.yaml"}
    try:
        old = json.loads(paths["manifest"].read_text())
    except (OSError, ValueError):
        old = {}
    files = old.get("files", {}) if old.get("demo_version") == DEMO_VERSION else {}

    def stale(key: str) -> bool:
        p = paths[key]
        return not p.is_file() or files.get(key, {}).get("sha256") != _sha256(p)

    info = {k: dict(files.get(k, {})) for k in ("slide", "weights", "checkpoint", "process_list")}
    if stale("slide"):
        demo = make_demo_slide(paths["slide"], seed=DEMO_SLIDE_SEED)
        info["slide"] = {"seed": DEMO_SLIDE_SEED, "size": list(demo.size), "mpp": MPP,
                         "level_downsamples": list(DOWNSAMPLES), "lesion_xyr": list(demo.lesion)}
    rebuilt_weights = stale("weights")
    if rebuilt_weights:
        make_demo_encoder_weights(paths["weights"], seed=ENCODER_SEED)
        info["weights"] = {"seed": ENCODER_SEED, "recipe": "timm resnet50 pretrained=False, no layer4/fc"}
    if rebuilt_weights or stale("checkpoint"):
        from models import create_encoder

        enc = create_encoder("resnet50_trunc", target_img_size=TARGET_IMG_SIZE,
                             weights_path=paths["weights"])
        info["checkpoint"] = {"model_type": "clam_sb", "model_size": "small", "n_classes": 2,
                              "target_img_size": TARGET_IMG_SIZE,
                              **make_demo_checkpoint(paths["checkpoint"], encoder=enc)}
    if stale("process_list"):
        _write_text(paths["process_list"], "slide_id,label\ndemo_slide,lesion\n")
    for key in info:
        info[key]["path"] = paths[key].relative_to(d).as_posix()
        info[key]["sha256"] = _sha256(paths[key])
    manifest = {"demo_version": DEMO_VERSION, "generator": "heatmaps.demo.ensure_demo_assets",
                "files": info}
    if manifest != old:
        _write_text(paths["manifest"], json.dumps(manifest, indent=1) + "\n")
    return paths
