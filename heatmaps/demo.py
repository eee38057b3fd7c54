"""Offline demo inputs, generated from seeds so ``create-heatmaps --demo`` needs no network.

:func:`make_demo_slide`: a synthetic H&E-like slide with one planted lesion, written as an
OpenSlide generic-tiff pyramid. :func:`make_demo_encoder_weights`: a seeded, untrained ResNet-50
trunk for ``resnet50_trunc``. :func:`make_demo_checkpoint`: a CLAM-SB (small) trained in seconds
on a *separate* synthetic slide to attend to lesion patches. :func:`ensure_demo_assets`: creates
what is missing under ``heatmaps/demo`` plus a manifest (seeds, sizes, sha256).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsi_core.io import atomic_path

__all__ = [
    "DemoSlide", "render_demo_slide", "make_demo_slide", "grid_coords", "encode_patches",
    "make_demo_encoder_weights", "make_demo_checkpoint", "ensure_demo_assets", "rank_auc",
    "DEMO_DIR", "TARGET_IMG_SIZE",
]

DEMO_VERSION = 1
DEMO_DIR = Path("heatmaps/demo")
DEMO_SLIDE_SEED = 1          # the slide the demo runs on
TRAIN_SLIDE_SEED = 2         # the slide the demo checkpoint is trained on (never shown)
ENCODER_SEED = 0
CKPT_SEED = 0
MPP = 0.5                    # µm/px at level 0
DOWNSAMPLES = (1, 4, 16)     # one tiled TIFF page per level
MASK_DS = 16                 # downsample of the masks kept in DemoSlide
TILE = 256
_TISSUE_SHARE = 0.45        # share of the slide that is tissue (before small fragments drop)
_LESION_RADIUS = 0.16       # planted lesion radius / short side
TARGET_IMG_SIZE = 224        # must match encoder_arguments.target_img_size in configs/demo.yaml

_BACKGROUND = np.array([240.0, 239.0, 241.0], np.float32)
_STROMA = np.array([232.0, 166.0, 202.0], np.float32)        # eosin pink
_LESION_STROMA = np.array([200.0, 140.0, 198.0], np.float32)  # basophilic, more purple
_NUCLEUS = np.array([110.0, 72.0, 160.0], np.float32)        # hematoxylin
_LESION_NUCLEUS = np.array([62.0, 34.0, 112.0], np.float32)  # dark, dense


@dataclass(frozen=True)
class DemoSlide:
    """A synthetic slide and its ground truth.

    path: the TIFF (None for an in-memory rendering); size: level-0 (width, height) px;
    lesion_mask / tissue_mask: (h // 16, w // 16) bool at downsample ``mask_downsample`` (16), a
    cell is True when more than half of its level-0 pixels are lesion / tissue;
    lesion: (x, y, radius) level-0 px of the planted lesion's centre and mean radius.
    """

    path: Path | None
    seed: int
    size: tuple[int, int]
    mpp: float
    level_dimensions: tuple[tuple[int, int], ...]
    lesion: tuple[int, int, int]
    lesion_mask: np.ndarray = field(repr=False)
    tissue_mask: np.ndarray = field(repr=False)
    mask_downsample: int = MASK_DS

    def lesion_fraction(self, coords: np.ndarray, *, patch_size: int) -> np.ndarray:
        """(N,) float64 share (0–1) of each level-0 patch ``(x, y)`` top-left covered by lesion."""
        return _box_fraction(self.lesion_mask, coords, patch_size, self.mask_downsample)

    def tissue_fraction(self, coords: np.ndarray, *, patch_size: int) -> np.ndarray:
        """(N,) float64 share (0–1) of each level-0 patch covered by tissue."""
        return _box_fraction(self.tissue_mask, coords, patch_size, self.mask_downsample)


def _box_fraction(mask: np.ndarray, coords: np.ndarray, patch_size: int, ds: int) -> np.ndarray:
    """Mean of a downsampled bool mask over level-0 boxes (integral image, no loop)."""
    c = np.asarray(coords, np.int64).reshape(-1, 2)
    ii = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape
    x0, y0 = np.clip(c[:, 0] // ds, 0, w), np.clip(c[:, 1] // ds, 0, h)
    x1 = np.clip((c[:, 0] + patch_size) // ds, 0, w)
    y1 = np.clip((c[:, 1] + patch_size) // ds, 0, h)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return (ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / area


# --------------------------------------------------------------------------------- rendering
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """(h, w) float32 Gaussian-blurred white noise with unit standard deviation."""
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma,
                         borderType=cv2.BORDER_REFLECT)
    return n / max(float(n.std()), 1e-6)


def _tissue_field(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Coarse field (h, w) float32 and threshold: tissue where field > thr (~45 % of the slide)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = np.zeros(shape, np.float32)
    short = float(min(h, w))
    for _ in range(int(rng.integers(3, 5))):  # a handful of blobs, not a loop over pixels
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
        sy, sx = rng.uniform(0.12, 0.22, size=2) * short
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        f += np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)).astype(np.float32)
    f += 0.18 * _smooth_noise(rng, shape, 0.05 * short) + 0.06 * _smooth_noise(rng, shape, 1.5)
    ramp = np.minimum(np.minimum(yy, h - 1 - yy) / (0.08 * short),
                      np.minimum(xx, w - 1 - xx) / (0.08 * short))
    f -= 2.0 * (1.0 - np.clip(ramp, 0, 1))  # keep tissue off the slide border
    return f, float(np.quantile(f, 1.0 - _TISSUE_SHARE))


def _lesion_field(rng: np.random.Generator, tissue_coarse: np.ndarray, ds: int,
                  lesion: tuple[int, int, int] | None, size: tuple[int, int]
                  ) -> tuple[tuple[int, int, int], np.ndarray]:
    """Pick the lesion (x, y, r) level-0 px and return a signed field at downsample ``ds``."""
    w0, h0 = size
    if lesion is None:
        r = int(_LESION_RADIUS * min(w0, h0))
        dist = cv2.distanceTransform(tissue_coarse.astype(np.uint8), cv2.DIST_L2, 5)
        ok = np.flatnonzero(dist.ravel() >= 0.8 * r / ds)
        k = int(rng.choice(ok)) if ok.size else int(np.argmax(dist))
        cy, cx = divmod(k, tissue_coarse.shape[1])
        lesion = (int((cx + 0.5) * ds), int((cy + 0.5) * ds), r)
    x, y, r = lesion
    h4, w4 = math.ceil(h0 / 4), math.ceil(w0 / 4)
    yy, xx = np.mgrid[0:h4, 0:w4].astype(np.float32) * 4 + 2
    theta = np.arctan2(yy - y, xx - x)
    wobble = sum(a * np.cos(k * theta + p) for k, a, p in
                 zip((2, 3, 5), rng.uniform(0.04, 0.12, 3), rng.uniform(0, 2 * np.pi, 3)))
    return (x, y, r), (r * (1 + wobble) - np.hypot(xx - x, yy - y)).astype(np.float32)


def _nuclei(rng: np.random.Generator, region: np.ndarray, *, px_per_nucleus: float,
            radii: tuple[int, ...]) -> np.ndarray:
    """(h, w) bool: round nuclei (radii in level-0 px) of a Poisson process restricted to region.

    Points are rasterised into an image and dilated by a disc per radius class (vectorised).
    """
    h, w = region.shape
    out = np.zeros((h, w), np.uint8)
    for r in radii:
        n = rng.poisson(h * w / px_per_nucleus / len(radii))
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        keep = region[ys, xs]
        pts = np.zeros((h, w), np.uint8)
        pts[ys[keep], xs[keep]] = 255
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        out |= cv2.dilate(pts, disc)
    return out.astype(bool)


def render_demo_slide(*, seed: int, size: tuple[int, int] = (4096, 3072),
                      lesion: tuple[int, int, int] | None = None
                      ) -> tuple[np.ndarray, DemoSlide]:
    """Render a synthetic H&E-like level 0 in memory, deterministically from ``seed``.

    Args:
        seed: numpy Generator seed; same seed and arguments -> identical pixels.
        size: level-0 (width, height) px, each a multiple of 16.
        lesion: (x, y, radius) level-0 px of the planted lesion, or None to place it (seeded)
            well inside the tissue, radius 16 % of the short side.
    Returns:
        ((h, w, 3) uint8 RGB, DemoSlide with path None).
    Raises:
        ValueError: size not a multiple of 16 or smaller than 512 px.
    """
    w0, h0 = size
    if w0 % MASK_DS or h0 % MASK_DS or min(w0, h0) < 512:
        raise ValueError(f"demo slide size {size}: width and height must be multiples of 16, >= 512")
    rng = np.random.default_rng(seed)
    coarse, thr = _tissue_field(rng, (h0 // MASK_DS, w0 // MASK_DS))
    tissue = cv2.resize(coarse, (w0, h0), interpolation=cv2.INTER_LINEAR) > thr
    lesion, lfield = _lesion_field(rng, coarse > thr, MASK_DS, lesion, size)
    les = (cv2.resize(lfield, (w0, h0), interpolation=cv2.INTER_LINEAR) > 0) & tissue
    normal = tissue & ~les
    nuc = _nuclei(rng, normal, px_per_nucleus=1400.0, radii=(4, 5, 6))
    les_nuc = _nuclei(rng, les, px_per_nucleus=260.0, radii=(7, 9, 11))

    img = np.broadcast_to(_BACKGROUND, (h0, w0, 3)).copy()
    img[normal] = _STROMA
    img[les] = _LESION_STROMA
    shade = cv2.resize(_smooth_noise(rng, (h0 // 8, w0 // 8), 6.0), (w0, h0),
                       interpolation=cv2.INTER_LINEAR)
    img[tissue] += (9.0 * shade[tissue])[:, None]
    img[nuc] = _NUCLEUS
    img[les_nuc] = _LESION_NUCLEUS
    grain = rng.standard_normal((h0, w0), dtype=np.float32)  # luminance grain, 7 in tissue, 1.5 on glass
    img += (np.where(tissue, np.float32(7.0), np.float32(1.5)) * grain)[:, :, None]
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def small(m: np.ndarray) -> np.ndarray:
        return cv2.resize(m.astype(np.float32), (w0 // MASK_DS, h0 // MASK_DS),
                          interpolation=cv2.INTER_AREA) > 0.5

    dims = tuple((w0 // d, h0 // d) for d in DOWNSAMPLES)
    return rgb, DemoSlide(path=None, seed=seed, size=(w0, h0), mpp=MPP, level_dimensions=dims,
                          lesion=lesion, lesion_mask=small(les), tissue_mask=small(tissue))


def _write_pyramid_tiff(path: Path, rgb: np.ndarray, description: str) -> None:
    """Atomic OpenSlide generic-tiff pyramid: one 256-tiled zlib RGB page per downsample."""
    import tifffile

    h0, w0 = rgb.shape[:2]
    px_per_cm = 1e4 / MPP
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tw:
        for i, d in enumerate(DOWNSAMPLES):
            lvl = rgb if d == 1 else cv2.resize(rgb, (w0 // d, h0 // d), interpolation=cv2.INTER_AREA)
            tw.write(lvl, tile=(TILE, TILE), photometric="rgb", compression="zlib",
                     compressionargs={"level": 6}, metadata=None, software="wsi-heatmaps demo",
                     resolution=(px_per_cm / d, px_per_cm / d), resolutionunit="CENTIMETER",
                     subfiletype=0 if i == 0 else 1, description=description if i == 0 else None)


def make_demo_slide(path: str | Path, *, seed: int, size: tuple[int, int] = (4096, 3072),
                    lesion: tuple[int, int, int] | None = None) -> DemoSlide:
    """Write the synthetic slide (see :func:`render_demo_slide`) as a pyramidal tiled TIFF.

    Levels: downsamples 1, 4, 16 (one tiled 256x256 zlib RGB page each), X/YResolution
    ``1e4 / 0.5`` px/cm so OpenSlide reports ``openslide.mpp-x/y`` = 0.5 µm/px. Atomic write.
    Returns the DemoSlide (path set). Raises ValueError for a bad size.
    """
    rgb, demo = render_demo_slide(seed=seed, size=size, lesion=lesion)
    desc = (f"wsi-heatmaps synthetic demo slide; seed {seed}; {size[0]}x{size[1]} px; mpp {MPP}; "
            f"downsamples {list(DOWNSAMPLES)}; planted lesion (x, y, radius px) {demo.lesion}")
    _write_pyramid_tiff(Path(path), rgb, desc)
    return replace(demo, path=Path(path))


def grid_coords(demo: DemoSlide, *, patch_size: int = 256, step: int = 256,
                min_tissue: float = 0.5) -> np.ndarray:
    """(N, 2) int64 level-0 top-left (x, y) of a regular grid, kept where tissue share > min_tissue
    (x-major order like CLAM's grids)."""
    w0, h0 = demo.size
    xs = np.arange(0, w0 - patch_size + 1, step)
    ys = np.arange(0, h0 - patch_size + 1, step)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
    return coords[demo.tissue_fraction(coords, patch_size=patch_size) > min_tissue]


# ------------------------------------------------------------------------------- encoder / MIL
def encode_patches(encoder: Any, rgb: np.ndarray, coords: np.ndarray, *, patch_size: int,
                   batch_size: int = 16) -> np.ndarray:
    """(N, D) float32 features of the level-0 patches at ``coords`` cut from an in-memory
    (h, w, 3) uint8 image, through ``encoder.transform`` and ``encoder.model`` (CPU, eval)."""
    import torch
    from PIL import Image

    encoder.model.eval()
    out = []
    for s in range(0, len(coords), batch_size):  # batches, not patches: the transform is per image
        batch = torch.stack([encoder.transform(Image.fromarray(rgb[y:y + patch_size, x:x + patch_size]))
                             for x, y in coords[s:s + batch_size]])
        with torch.inference_mode():
            out.append(encoder.model(batch).reshape(len(batch), -1).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)


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


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` (N,) for bool ``labels`` (N,) by the rank-sum (Mann–Whitney) formula,
    ties counted half. Raises ValueError when one class is absent."""
    from scipy.stats import rankdata

    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = rankdata(np.asarray(scores, np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _make_bags(rng: np.random.Generator, lesion: np.ndarray, n_bags: int) -> list[tuple[np.ndarray, int]]:
    """Training bags (instance indices, label): the whole slide and random subsets with lesion
    patches (label 1), random subsets of normal patches only (label 0)."""
    pos, neg = np.flatnonzero(lesion), np.flatnonzero(~lesion)
    bags = [(np.arange(lesion.size), 1)]
    for _ in range(n_bags):
        k_pos = int(rng.integers(1, pos.size + 1))
        k_neg = int(rng.integers(max(1, neg.size // 4), neg.size + 1))
        with_lesion = np.concatenate([rng.choice(pos, k_pos, replace=False),
                                      rng.choice(neg, k_neg, replace=False)])
        bags += [(np.sort(with_lesion), 1), (np.sort(rng.choice(neg, k_neg, replace=False)), 0)]
    return bags


def _train_clam(feats: np.ndarray, frac: np.ndarray, *, seed: int, steps: int) -> Any:
    """CLAM-SB small (2 classes) trained so raw attention ~ logit(lesion share) and bags with
    lesion patches are class 1. Single-threaded and deterministic."""
    import torch
    import torch.nn.functional as F

    from models import create_mil_model

    torch.manual_seed(seed)
    model = create_mil_model("clam_sb", n_classes=2, in_dim=feats.shape[1], model_size="small",
                             gate=True, dropout=0.0)
    h = torch.from_numpy(feats)
    target = torch.from_numpy(frac.astype(np.float32))
    hard = torch.from_numpy((frac > 0.5).astype(np.int64))
    bags = _make_bags(np.random.default_rng(seed), frac > 0.5, n_bags=8)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-4)
    model.train()
    trunk, attention = model.attention_net[:3], model.attention_net[3]
    for _ in range(steps):
        opt.zero_grad()
        emb = trunk(h)                      # h' (N, 512), shared by every bag of this step
        att = attention(emb)[:, 0]          # raw attention (N,)
        loss = F.binary_cross_entropy_with_logits(att, target)
        loss = loss + F.cross_entropy(model.instance_classifiers[1](emb), hard)
        for idx, y in bags:                 # CLAM-SB pooling on each bag: softmax(A) @ h'
            pooled = torch.softmax(att[idx], dim=0) @ emb[idx]
            logits = model.classifiers(pooled[None])
            loss = loss + F.cross_entropy(logits, torch.tensor([y])) / len(bags)
        loss.backward()
        opt.step()
    return model.eval()


def make_demo_checkpoint(path: str | Path, *, encoder: Any, seed: int = CKPT_SEED,
                         train_slide_seed: int = TRAIN_SLIDE_SEED, patch_size: int = 256,
                         steps: int = 300) -> dict[str, Any]:
    """Train and save (``torch.save(state_dict)``, CLAM-SB layout) the demo CLAM-SB checkpoint.

    The training slide is rendered in memory from ``train_slide_seed`` (never the demo slide);
    its ``patch_size`` grid patches with > 50 % tissue are encoded with ``encoder`` and the model
    is trained for ``steps`` full-batch Adam steps: BCE of the raw attention against each patch's
    lesion share, cross-entropy of bag logits (bags with lesion patches = class 1 'lesion').
    Runs single-threaded with deterministic algorithms, so reruns give the same weights.
    Returns a summary dict (patch counts, training AUC of the attention, bag probabilities).
    """
    import torch

    rgb, demo = render_demo_slide(seed=train_slide_seed)
    coords = grid_coords(demo, patch_size=patch_size, min_tissue=0.5)
    feats = encode_patches(encoder, rgb, coords, patch_size=patch_size)
    frac = demo.lesion_fraction(coords, patch_size=patch_size)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        model = _train_clam(feats, frac, seed=seed, steps=steps)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    with torch.inference_mode():
        logits, probs, att = model(torch.from_numpy(feats))
    buf = io.BytesIO()  # a buffer, so the archive's inner name is fixed ('archive'): same bytes
    torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, buf)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return {"train_slide_seed": train_slide_seed, "seed": seed, "steps": steps,
            "n_patches": int(len(coords)), "n_lesion_patches": int((frac > 0.5).sum()),
            "train_attention_auc": round(rank_auc(att[0].numpy(), frac > 0.5), 4),
            "train_bag_probs": [round(float(p), 4) for p in probs[0]]}


# ----------------------------------------------------------------------------------- assets
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
