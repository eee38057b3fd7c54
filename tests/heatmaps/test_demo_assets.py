"""The offline demo's generated inputs: the written demo slide, seeded encoder weights, demo checkpoint.

The synthetic generator itself is tested in tests/wsi_core/test_synthetic.py, the training loop in
tests/models/train/test_loop.py."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import openslide
import pytest

from heatmaps import demo as D
from wsi_core import synthetic as S

SMALL = (1024, 768)


@pytest.fixture(scope="module")
def demo_slide(tmp_path_factory: pytest.TempPathFactory) -> S.DemoSlide:
    """The demo slide exactly as ensure_demo_assets writes it (seed 1, default size)."""
    return D.make_demo_slide(tmp_path_factory.mktemp("demo") / "demo_slide.tiff", seed=D.DEMO_SLIDE_SEED)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_slide_opens_with_openslide(demo_slide: S.DemoSlide) -> None:
    s = openslide.OpenSlide(str(demo_slide.path))
    try:
        assert s.properties["openslide.vendor"] == "generic-tiff"
        assert s.level_dimensions == ((4096, 3072), (1024, 768), (256, 192))
        assert s.level_downsamples == pytest.approx((1.0, 4.0, 16.0))
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.5)
        assert s.get_best_level_for_downsample(32) == 2
        x, y, _ = demo_slide.lesion
        lesion = np.asarray(s.read_region((x - 64, y - 64), 0, (128, 128)).convert("RGB"), np.float64)
        corner = np.asarray(s.read_region((0, 0), 0, (128, 128)).convert("RGB"), np.float64)
    finally:
        s.close()
    assert corner.mean() > 230 and corner.std() < 5          # white glass
    assert lesion.mean() < 150                                # dense dark-purple nuclei
    assert lesion[..., 2].mean() > lesion[..., 1].mean() + 30  # purple: blue well above green
    assert demo_slide.level_dimensions == ((4096, 3072), (1024, 768), (256, 192))


def test_slide_through_wsi_core(demo_slide: S.DemoSlide) -> None:
    from wsi_core.slide import open_slide

    with open_slide(demo_slide.path) as s:
        assert s.mpp == pytest.approx((0.5, 0.5))
        assert s.level_count == 3
        assert s.best_level_for_downsample(32) == 2


def test_masks_and_layout(demo_slide: S.DemoSlide) -> None:
    assert demo_slide.lesion_mask.shape == demo_slide.tissue_mask.shape == (3072 // 16, 4096 // 16)
    assert demo_slide.lesion_mask.dtype == bool and demo_slide.mask_downsample == 16
    tissue, lesion = demo_slide.tissue_mask.mean(), demo_slide.lesion_mask.mean()
    assert 0.3 < tissue < 0.6 and 0.03 < lesion < 0.12
    assert (demo_slide.lesion_mask & ~demo_slide.tissue_mask).sum() <= 0.02 * demo_slide.lesion_mask.sum()
    coords = S.grid_coords(demo_slide)
    labels = demo_slide.lesion_fraction(coords, patch_size=256) > 0.5
    assert 60 <= len(coords) <= 120 and labels.sum() >= 6   # sized for the 2-minute budget
    assert coords.dtype == np.int64 and coords.shape[1] == 2


def test_written_slide_is_deterministic(tmp_path: Path) -> None:
    a, _ = S.render_demo_slide(seed=5, size=SMALL)
    p1 = D.make_demo_slide(tmp_path / "a.tiff", seed=5, size=SMALL).path
    p2 = D.make_demo_slide(tmp_path / "b.tiff", seed=5, size=SMALL).path
    assert _sha(p1) == _sha(p2)
    assert not list(tmp_path.glob("*.tmp-*"))                 # atomic writes leave no temporaries
    with openslide.OpenSlide(str(p1)) as s:
        assert np.array_equal(np.asarray(s.read_region((0, 0), 0, SMALL).convert("RGB")), a)
    with pytest.raises(ValueError, match="multiples of 16"):
        D.make_demo_slide(tmp_path / "c.tiff", seed=0, size=(1000, 768))


def test_demo_training_is_deterministic() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    frac = (rng.random(40) > 0.8).astype(np.float64)
    feats = (rng.standard_normal((40, 64)) + 2.0 * frac[:, None]).astype(np.float32)
    a = D.train_demo_model(feats, frac, seed=0, steps=15).state_dict()
    b = D.train_demo_model(feats, frac, seed=0, steps=15).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "attention_net.3.attention_c.weight" in a and "instance_classifiers.1.weight" in a


def test_encoder_weights(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from safetensors.torch import load_file

    from models import create_encoder

    path = D.make_demo_encoder_weights(tmp_path / "w.safetensors", seed=0)
    sd = load_file(str(path))
    assert sd and not any(k.startswith(("layer4.", "fc.")) for k in sd)
    enc = create_encoder("resnet50_trunc", target_img_size=D.TARGET_IMG_SIZE, weights_path=path)
    assert enc.dim == 1024 and enc.weights_source == str(path)


def test_encoder_weights_equal_clam_reference(tmp_path: Path, clam_reference_dir: Path) -> None:
    """Seed 0 reproduces the seeded encoder CLAM's reference run loaded (same recipe)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    ref = load_file(str(clam_reference_dir / "checkpoints" / "resnet50_trunc_seed0.safetensors"))
    ours = load_file(str(D.make_demo_encoder_weights(tmp_path / "w.safetensors", seed=0)))
    assert sorted(ours) == sorted(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)


@pytest.mark.slow
def test_demo_assets_attend_to_the_lesion(tmp_path: Path) -> None:
    """ensure_demo_assets builds everything; the demo checkpoint's raw attention on the demo
    slide's 256-px grid separates lesion from normal patches and the bag is called 'lesion'."""
    pytest.importorskip("timm")
    from models import attention_for_class, create_encoder, encode_image_patches, load_mil_checkpoint, predict_bag
    from wsi_core.slide import open_slide

    paths = D.ensure_demo_assets(tmp_path / "demo")
    manifest = json.loads(paths["manifest"].read_text())
    for key in ("slide", "weights", "checkpoint", "process_list"):
        assert manifest["files"][key]["sha256"] == _sha(paths[key])
    assert paths["process_list"].read_text().splitlines() == ["slide_id,label", "demo_slide,lesion"]
    assert paths["config"].is_file()
    stamp = {k: paths[k].stat().st_mtime_ns for k in ("slide", "weights", "checkpoint")}
    D.ensure_demo_assets(tmp_path / "demo")                    # nothing missing: nothing rebuilt
    assert stamp == {k: paths[k].stat().st_mtime_ns for k in stamp}

    model = load_mil_checkpoint(paths["checkpoint"], model_type="clam_sb")
    enc = create_encoder("resnet50_trunc", target_img_size=D.TARGET_IMG_SIZE, weights_path=paths["weights"])
    _, truth = S.render_demo_slide(seed=manifest["files"]["slide"]["seed"])
    coords = S.grid_coords(truth)
    with open_slide(paths["slide"]) as s:
        rgb = s.read_region((0, 0), 0, truth.size)
    feats = encode_image_patches(enc, rgb, coords, patch_size=256)
    labels = truth.lesion_fraction(coords, patch_size=256) > 0.5
    attention = attention_for_class(model, feats, cls=1)
    assert S.rank_auc(attention, labels) >= 0.9   # measured: 1.0 (before and after models.train)
    assert predict_bag(model, feats).pred == 1
