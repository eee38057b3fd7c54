"""models.encoders.resnet50_trunc: weights sources, state-dict variants, errors, and parity with CLAM's features."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from models import create_encoder, extract_features
from models.encoders import eval_transform
from models.encoders.resnet50_trunc import RESNET50_TRUNC_ENV
from wsi_core.errors import CheckpointError


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A seeded timm ResNet-50 saved as full .pth / .safetensors / 'module.'-prefixed, and truncated."""
    d = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(123)
    sd = {k: v.contiguous() for k, v in timm.create_model("resnet50", pretrained=False).state_dict().items()}
    trunc = {k: v for k, v in sd.items() if not k.startswith(("layer4.", "fc."))}
    files = {"full_pth": d / "full.pth", "full_st": d / "full.safetensors",
             "wrapped": d / "wrapped.pt", "trunc": d / "trunc.safetensors"}
    torch.save(sd, files["full_pth"])
    save_file(sd, str(files["full_st"]))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, files["wrapped"])
    save_file(trunc, str(files["trunc"]))
    broken = dict(trunc)
    del broken["layer3.5.conv3.weight"], broken["conv1.weight"]
    files["broken"] = d / "broken.safetensors"
    save_file(broken, str(files["broken"]))
    return files


def test_full_and_truncated_state_dicts_agree(resnet_files: dict[str, Path]) -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outs = {}
    for key in ("trunc", "full_pth", "full_st", "wrapped"):
        enc = create_encoder("resnet50_trunc", weights_path=resnet_files[key])
        assert enc.dim == 1024 and enc.weights_source == str(resnet_files[key])
        assert not enc.model.training
        with torch.inference_mode():
            outs[key] = enc.model(x)
    assert outs["trunc"].shape == (2, 1024)
    for key in ("full_pth", "full_st", "wrapped"):
        torch.testing.assert_close(outs[key], outs["trunc"], rtol=0, atol=0)


def test_env_var_is_second_source(resnet_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RESNET50_TRUNC_ENV, str(resnet_files["trunc"]))
    assert create_encoder().weights_source == str(resnet_files["trunc"])
    # the argument wins over the environment
    assert create_encoder(weights_path=resnet_files["full_st"]).weights_source == str(resnet_files["full_st"])


def test_missing_trunk_keys(resnet_files: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError) as info:
        create_encoder(weights_path=resnet_files["broken"])
    assert str(info.value) == (
        f"encoder weights {resnet_files['broken']} lack 2 ResNet-50 trunk keys (e.g. conv1.weight, "
        "layer3.5.conv3.weight); give a torchvision/timm ResNet-50 state dict")


def test_bad_weight_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"encoder weights not found: {tmp_path / 'x.pth'}; set "
                                              "encoder_arguments.weights_path or \\$RESNET50_TRUNC_CKPT_PATH"):
        create_encoder(weights_path=tmp_path / "x.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported file type '.npz'"):
        create_encoder(weights_path=tmp_path / "w.npz")
    (tmp_path / "w.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=f"cannot read encoder weights {tmp_path / 'w.safetensors'}"):
        create_encoder(weights_path=tmp_path / "w.safetensors")


def test_unknown_encoder() -> None:
    with pytest.raises(CheckpointError, match="unknown encoder_arguments.model_name 'uni_v9'; "
                                              "available: resnet50_trunc"):
        create_encoder("uni_v9")


def test_hub_unreachable_without_local_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESNET50_TRUNC_ENV, raising=False)
    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(CheckpointError) as info:
        create_encoder("resnet50_trunc")
    assert str(info.value) == (
        "cannot fetch encoder weights timm/resnet50.tv_in1k from the Hugging Face hub (OSError); "
        "set encoder_arguments.weights_path or $RESNET50_TRUNC_CKPT_PATH to a local ResNet-50 "
        ".safetensors/.pth file")


def test_transform_matches_clam() -> None:
    from PIL import Image

    enc = eval_transform(224)
    img = Image.fromarray(np.full((256, 256, 3), 255, np.uint8))
    t = enc(img)
    assert t.shape == (3, 224, 224) and t.dtype == torch.float32
    np.testing.assert_allclose(t[:, 0, 0].numpy(), (1 - np.array([0.485, 0.456, 0.406])) /
                               np.array([0.229, 0.224, 0.225]), rtol=1e-6)
    assert eval_transform(0)(img).shape == (3, 256, 256)


@pytest.mark.shared
def test_features_match_clam_reference_run(slides_dir: Path, ref_ckpts: Path, cmu_sb_dir: Path) -> None:
    """The 30 pass-1 patches of CMU-1-Small-Region give CLAM's stored features (measured: 0.0)."""
    enc = create_encoder("resnet50_trunc", target_img_size=224,
                         weights_path=ref_ckpts / "resnet50_trunc_seed0.safetensors")
    with h5py.File(cmu_sb_dir / "CMU-1-Small-Region.h5", "r") as f:
        coords, ref = f["coords"][:], f["features"][:]
    assert coords.shape == (30, 2)
    feats = extract_features(slides_dir / "CMU-1-Small-Region.svs", coords, patch_level=0,
                             patch_size=256, encoder=enc, batch_size=16, num_workers=1,
                             progress=False)
    assert feats.shape == (30, 1024) and feats.dtype == np.float32
    assert np.abs(feats - ref).max() <= 1e-4
    # channels-last memory format (faster on CPU) stays within the same tolerance
    fast = extract_features(slides_dir / "CMU-1-Small-Region.svs", coords[:6], patch_level=0,
                            patch_size=256, encoder=enc, batch_size=6, num_workers=0,
                            progress=False, channels_last=True)
    assert np.abs(fast - ref[:6]).max() <= 1e-4
