"""models.encoders.vit (the foundation-model entries): architectures, transforms, weight sources, errors, precision (no downloads).

The big ViTs (UNI 303 M, UNI2-h 681 M, Virchow2 631 M parameters) are built at full depth on the
meta device only (parameter counts and token layout checked against the published figures);
their forward pass, weight loading and pooling run on depth-1 copies of the same timm
configuration. CTransPath (27.5 M) is built and run at full size.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from models.encoders import Encoder, build_transform, create_encoder, encoder_info
from models.encoders.vit import (CONCH_INSTALL, VIT_ARCHS, build_ctranspath, build_vit,
                                 convert_transpath_state_dict)
from wsi_core.errors import CheckpointError, ConfigError

VITS = ("uni_v1", "uni_v2", "virchow2")
ALL_ENV = ("UNI_V1_CKPT_PATH", "UNI_CKPT_PATH", "UNI_V2_CKPT_PATH", "UNI2_CKPT_PATH", "VIRCHOW2_CKPT_PATH",
           "CTRANSPATH_CKPT_PATH", "CONCH_V1_CKPT_PATH", "CONCH_CKPT_PATH", "RESNET50_TRUNC_CKPT_PATH")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ALL_ENV:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def shallow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ViT entries build with depth 1 (same widths, heads, tokens, MLP)."""
    for name in VITS:
        arch, kw = VIT_ARCHS[name]
        monkeypatch.setitem(VIT_ARCHS, name, (arch, {**kw, "depth": 1}))


@pytest.fixture(scope="module")
def vit_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seeded depth-1 state dicts of each ViT entry, saved as .safetensors."""
    d = tmp_path_factory.mktemp("vits")
    files = {}
    for i, name in enumerate(VITS):
        torch.manual_seed(i)
        sd = {k: v.contiguous() for k, v in build_vit(name, depth=1).state_dict().items()}
        files[name] = d / f"{name}.safetensors"
        save_file(sd, str(files[name]))
    return files


def _patches(n: int = 2, size: int = 256) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _batch(enc: Encoder, n: int = 2) -> torch.Tensor:
    return torch.stack([enc.transform(im) for im in _patches(n)])


@pytest.mark.parametrize("name, params_m, width, depth, prefix, patch", [
    ("uni_v1", 303.35, 1024, 24, 1, 16),     # UNI card: ViT-L/16, 303 M
    ("uni_v2", 681.39, 1536, 24, 9, 14),     # UNI2-h card: ViT-H/14 variant, 681 M, 8 registers
    ("virchow2", 631.24, 1280, 32, 5, 14),   # Virchow2 card: ViT-H/14, 632 M, 4 registers
])
def test_full_vits_on_meta(name: str, params_m: float, width: int, depth: int, prefix: int, patch: int) -> None:
    net = build_vit(name, device="meta")
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(params_m, abs=0.01)
    assert (net.embed_dim, len(net.blocks), net.num_prefix_tokens) == (width, depth, prefix)
    assert net.patch_embed.patch_size == (patch, patch) and list(net.buffers()) == []
    out = net(torch.empty(2, 3, 224, 224, device="meta"))
    assert tuple(out.shape) == ((2, width) if name != "virchow2" else (2, prefix + 256, width))


@pytest.mark.parametrize("name", VITS)
def test_vit_entries_from_local_file(name: str, vit_files: dict[str, Path], shallow: None) -> None:
    enc = create_encoder(name, weights_path=vit_files[name])
    info = encoder_info(name)
    assert (enc.name, enc.dim, enc.hub_id, enc.input_size, enc.is_cnn, enc.precision) == \
        (name, info.dim, info.hub_id, 224, False, "fp32")
    assert enc.weights_source == str(vit_files[name]) and not enc.model.training
    x = _batch(enc)
    with torch.inference_mode():
        feats = enc.model(x)
    assert feats.shape == (2, info.dim) and torch.isfinite(feats).all()
    if name == "virchow2":  # concat(class token, mean of the 256 patch tokens; 4 registers skipped)
        with torch.inference_mode():
            tokens = enc.model.vit.forward_features(x)
        assert tokens.shape == (2, 1 + 4 + 256, 1280)
        torch.testing.assert_close(feats, torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], -1))


def test_vit_other_size_and_folder(vit_files: dict[str, Path], shallow: None, tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").symlink_to(vit_files["uni_v2"])
    enc = create_encoder("uni_v2", weights_path=tmp_path, target_img_size=252)  # a HF snapshot folder
    assert enc.input_size == 252 and enc.transform(_patches(1)[0]).shape == (3, 252, 252)
    with torch.inference_mode():
        assert enc.model(_batch(enc, 1)).shape == (1, 1536)  # position grid interpolated
    with pytest.raises(ConfigError) as info:
        create_encoder("uni_v2", target_img_size=250)
    assert str(info.value) == ("encoder_arguments.target_img_size 250 does not fit uni_v2 (14-px patches); "
                               "use a multiple of 14 such as 238 or 252, or leave it unset for the published 224")
    with pytest.raises(ConfigError, match="target_img_size 256 does not fit ctranspath"):
        create_encoder("ctranspath", target_img_size=256)


def test_ctranspath_transpath_checkpoint(tmp_path: Path) -> None:
    """A TransPath-layout checkpoint ({'model': ...}, merging at the end of a stage, attn_mask
    buffers) loads into the timm Swin-T with ConvStem and gives the source model's features."""
    torch.manual_seed(3)
    src = build_ctranspath().eval()
    old = {}
    for k, v in src.state_dict().items():
        if ".downsample." in k:  # timm: start of stage i; TransPath: end of stage i - 1
            i = int(k.split(".")[1])
            k = k.replace(f"layers.{i}.downsample", f"layers.{i - 1}.downsample")
        old[k] = v
    old["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    old["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    assert "layers.0.downsample.reduction.weight" in old and "patch_embed.proj.6.bias" in old
    torch.save({"model": old}, tmp_path / "ctranspath.pth")
    assert convert_transpath_state_dict(old).keys() == src.state_dict().keys()

    enc = create_encoder("ctranspath", weights_path=tmp_path / "ctranspath.pth")
    assert (enc.dim, enc.input_size, enc.is_cnn) == (768, 224, False)
    got, want = enc.model.state_dict(), src.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    x = _batch(enc)
    assert x.shape == (2, 3, 224, 224)
    with torch.inference_mode():
        feats = enc.model(x)
    assert feats.shape == (2, 768) and torch.isfinite(feats).all()


def test_local_file_mismatch(vit_files: dict[str, Path], shallow: None, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(vit_files["uni_v1"]))
    bad = {f"module.{k}": v for k, v in sd.items() if k != "blocks.0.ls1.gamma"}
    bad["module.extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        create_encoder("uni_v1", weights_path=tmp_path / "bad.pth")
    assert str(info.value) == (
        f"encoder weights {tmp_path / 'bad.pth'} do not fit UNI: 1 missing keys (e.g. blocks.0.ls1.gamma); "
        "1 unexpected keys (e.g. extra.weight); give the UNI state dict published with the model")
    # a UNI2-h file is not a UNI file: widths differ
    with pytest.raises(CheckpointError, match=r"do not fit UNI: 1 unexpected keys \(e.g. reg_token\)"):
        create_encoder("uni_v1", weights_path=vit_files["uni_v2"])
    shaped = dict(sd, pos_embed=torch.zeros(1, 50, 1024))
    save_file(shaped, str(tmp_path / "shape.safetensors"))
    with pytest.raises(CheckpointError) as info:
        create_encoder("uni_v1", weights_path=tmp_path / "shape.safetensors")
    assert str(info.value).endswith("do not fit UNI: pos_embed has shape (1, 50, 1024), "
                                    "the model needs (1, 197, 1024)")


def test_env_vars(vit_files: dict[str, Path], shallow: None, monkeypatch: pytest.MonkeyPatch,
                  tmp_path: Path) -> None:
    monkeypatch.setenv("UNI_CKPT_PATH", str(vit_files["uni_v1"]))  # CLAM's variable
    assert create_encoder("uni_v1").weights_source == str(vit_files["uni_v1"])
    monkeypatch.setenv("UNI_V1_CKPT_PATH", str(tmp_path / "nope.bin"))  # {NAME}_CKPT_PATH first
    with pytest.raises(CheckpointError) as info:
        create_encoder("uni_v1")
    assert str(info.value) == (f"encoder weights not found: {tmp_path / 'nope.bin'}; set "
                               "encoder_arguments.weights_path or $UNI_V1_CKPT_PATH to an existing file")
    # the argument wins over both
    assert create_encoder("uni_v1", weights_path=vit_files["uni_v1"]).weights_source == str(vit_files["uni_v1"])


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model

    def create(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kw)

    def download(*a, **kw):
        raise OSError("offline")

    import huggingface_hub
    monkeypatch.setattr(timm, "create_model", create)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


@pytest.mark.parametrize("name, message", [
    ("uni_v1", "cannot fetch encoder weights hf-hub:MahmoodLab/UNI from the Hugging Face hub (OSError); "
               "set encoder_arguments.weights_path or $UNI_V1_CKPT_PATH or $UNI_CKPT_PATH to a local UNI "
               ".safetensors/.bin/.pth file"),
    ("uni_v2", "cannot fetch encoder weights hf-hub:MahmoodLab/UNI2-h from the Hugging Face hub (OSError); "
               "set encoder_arguments.weights_path or $UNI_V2_CKPT_PATH or $UNI2_CKPT_PATH to a local UNI2-h "
               ".safetensors/.bin/.pth file"),
    ("virchow2", "cannot fetch encoder weights hf-hub:paige-ai/Virchow2 from the Hugging Face hub (OSError); "
                 "set encoder_arguments.weights_path or $VIRCHOW2_CKPT_PATH to a local Virchow2 "
                 ".safetensors/.bin/.pth file"),
    ("ctranspath", "cannot fetch encoder weights MahmoodLab/hest-bench (dataset) "
                   "fm_v1/ctranspath/CHIEF_CTransPath.pth from the Hugging Face hub (OSError); set "
                   "encoder_arguments.weights_path or $CTRANSPATH_CKPT_PATH to a local CTransPath "
                   ".safetensors/.bin/.pth file"),
])
def test_hub_unreachable(name: str, message: str, offline: None) -> None:
    with pytest.raises(CheckpointError) as info:
        create_encoder(name)
    assert str(info.value) == message


def test_conch_needs_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "conch", None)  # absent even where installed
    expected = (f"conch_v1 needs the 'conch' package ({CONCH_INSTALL}); install it, or give "
                "pre-extracted 512-d CONCH features (features_path)")
    for kw in ({}, {"weights_path": tmp_path / "conch.bin"}):
        with pytest.raises(CheckpointError) as info:
            create_encoder("conch_v1", **kw)
        assert str(info.value) == expected
    assert "pip install git+https://github.com/Mahmoodlab/CONCH.git" in expected


class _FakeCoCa(torch.nn.Module):
    """Stands in for the CONCH package's CoCa model: a 512-d image tower over channel means."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = torch.nn.Linear(3, 512)

    def encode_image(self, x: torch.Tensor, proj_contrast: bool = True, normalize: bool = True) -> torch.Tensor:
        assert proj_contrast is False and normalize is False  # CLAM/TRIDENT's unprojected features
        return self.visual(x.mean(dim=(2, 3)))


def _fake_conch(monkeypatch: pytest.MonkeyPatch, calls: list) -> None:
    """A ``conch.open_clip_custom`` module whose loader records its arguments, loads a local file
    non-strictly (as CONCH does) and cannot reach the hub."""
    import types

    def create_model_from_pretrained(name, checkpoint_path, force_image_size=None, return_transform=True):
        calls.append((name, str(checkpoint_path), force_image_size, return_transform))
        if str(checkpoint_path).startswith("hf_hub:"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        model = _FakeCoCa()
        model.load_state_dict(torch.load(checkpoint_path, weights_only=True), strict=False)
        return model

    pkg, sub = types.ModuleType("conch"), types.ModuleType("conch.open_clip_custom")
    sub.create_model_from_pretrained = create_model_from_pretrained
    pkg.open_clip_custom = sub
    monkeypatch.setitem(sys.modules, "conch", pkg)
    monkeypatch.setitem(sys.modules, "conch.open_clip_custom", sub)


def test_conch_build_path_with_the_package_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The conch_v1 entry through the CONCH package's documented loader (faked: the package is not
    a dependency): local weights, the unprojected 512-d image features, force_image_size for a
    non-native size, a strict check of the file, and the hub error naming the hub id and the key."""
    calls: list = []
    _fake_conch(monkeypatch, calls)
    torch.manual_seed(0)
    ref = _FakeCoCa()
    torch.save(ref.state_dict(), tmp_path / "conch.bin")
    enc = create_encoder("conch_v1", weights_path=tmp_path / "conch.bin")
    assert (enc.dim, enc.input_size, enc.weights_source) == (512, 448, str(tmp_path / "conch.bin"))
    assert calls[-1] == ("conch_ViT-B-16", str(tmp_path / "conch.bin"), None, False)
    x = enc.transform(Image.new("RGB", (512, 512), (200, 120, 180)))[None]
    assert x.shape == (1, 3, 448, 448)
    with torch.inference_mode():
        np.testing.assert_array_equal(enc.model(x).numpy(), ref.encode_image(x, False, False).numpy())
    create_encoder("conch_v1", weights_path=tmp_path / "conch.bin", target_img_size=224)
    assert calls[-1][2] == 224                                   # position embeddings resized by CONCH
    torch.save({"visual.weight": torch.zeros(512, 3)}, tmp_path / "partial.bin")  # CONCH would load it
    with pytest.raises(CheckpointError, match="partial.bin"):
        create_encoder("conch_v1", weights_path=tmp_path / "partial.bin")
    with pytest.raises(CheckpointError) as info:
        create_encoder("conch_v1")
    assert "hf_hub:MahmoodLab/conch" in str(info.value) and "encoder_arguments.weights_path" in str(info.value)


@pytest.mark.parametrize("name, size, mean, std, interp", [
    ("uni_v1", 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear"),
    ("virchow2", 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic"),
    ("conch_v1", 448, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), "bicubic"),
])
def test_vit_transforms(name: str, size: int, mean, std, interp: str, vit_files: dict[str, Path],
                        shallow: None) -> None:
    t = build_transform(encoder_info(name).transform, 448) if name == "conch_v1" else \
        create_encoder(name, weights_path=vit_files[name]).transform
    white = Image.fromarray(np.full((256, 300, 3), 255, np.uint8))  # non-square: centre-cropped
    x = t(white)
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0, 0].numpy(), (1 - np.array(mean)) / np.array(std), rtol=1e-6)
    assert t.transforms[0].interpolation.value == interp and t.transforms[0].size == size


def test_ctranspath_transform_is_transpaths() -> None:
    t = build_transform(encoder_info("ctranspath").transform, 224)
    assert [type(s).__name__ for s in t.transforms] == ["Resize", "ToTensor", "Normalize"]
    assert t(_patches(1)[0]).shape == (3, 224, 224)


def test_resnet50_trunc_bf16_autocast(tmp_path: Path) -> None:
    torch.manual_seed(7)
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet50").state_dict().items()},
              str(tmp_path / "r50.safetensors"))
    enc = create_encoder("resnet50_trunc", weights_path=tmp_path / "r50.safetensors", precision="bf16",
                         target_img_size=96)  # small patches keep the test fast
    assert (enc.precision, enc.is_cnn, enc.input_size, enc.memory_format) == \
        ("bf16", True, 96, torch.channels_last)
    x = _batch(enc)
    with torch.inference_mode():
        ref = enc.model(x)
        with enc.autocast("cpu"):
            low = enc.model(x.contiguous(memory_format=enc.memory_format))
    assert low.dtype == torch.bfloat16 and low.shape == (2, 1024)
    assert torch.nn.functional.cosine_similarity(ref, low.float()).min() > 0.99
